/**
 * `map`: derives columns from expressions over each row, and drops columns. Labels
 * from star ratings, prompt templates, normalised text:
 *
 *   columns:
 *     label: "rating <= 2 ? 'negative' : rating == 3 ? 'neutral' : 'positive'"
 *     review: "'Review: ' + content + '\nSentiment:'"
 *
 * The expressions are `filter`'s Jexl, checked when the pipeline loads. They are
 * evaluated in the order given, so a later one may read an earlier one's result;
 * a derived column replaces an input column of the same name in place. Types are
 * inferred from the values, as for any plain rows.
 */
import type { Table } from "apache-arrow"
import { Effect, Either, Schema } from "effect"
import { toPlain } from "../src/arrow.ts"
import { transformSplits } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { compileExpression, type RowExpression } from "../src/expression.ts"
import { rowsToTable } from "../src/formats/index.ts"
import { defineStage } from "../src/stage.ts"
import { Splits } from "./common.ts"

const Expression = Schema.String.pipe(
  Schema.filter((source) => Either.match(compileExpression(source), { onLeft: (why) => `invalid expression: ${why}`, onRight: () => true }))
).annotations({ description: "A Jexl expression over the row's columns, such as `rating <= 2 ? 'negative' : 'positive'`" })

const Params = Schema.Struct({
  columns: Schema.optional(Schema.Record({ key: Schema.String.pipe(Schema.minLength(1)), value: Expression })).annotations({
    description: "New (or replaced) column → expression, evaluated in order: later expressions may read earlier columns"
  }),
  drop: Schema.optional(Schema.Array(Schema.String).pipe(Schema.minItems(1))).annotations({
    description: "Columns to leave out of the output (expressions may still read them)"
  }),
  splits: Splits
}).pipe(
  Schema.filter((p) => p.columns !== undefined || p.drop !== undefined || "give `columns` to derive, `drop`, or both"),
  Schema.filter((p) => {
    const both = (p.drop ?? []).filter((name) => p.columns !== undefined && Object.hasOwn(p.columns, name))
    return both.length === 0 || `${both.map((n) => `"${n}"`).join(", ")} is both derived and dropped`
  })
)

type Params = typeof Params.Type

interface Derived {
  readonly name: string
  readonly expression: RowExpression
}

const compile = (columns: Params["columns"]): ReadonlyArray<Derived> =>
  Object.entries(columns ?? {}).map(([name, source]) => ({ name, expression: Either.getOrThrow(compileExpression(source)) }))

/** Every name an expression reads is an input column or an earlier derived one: a typo is an error, not a column of nulls. */
const checkNames = (table: Table, split: string, derived: ReadonlyArray<Derived>, drop: ReadonlyArray<string>) => {
  const present = table.schema.fields.map((f) => f.name)
  const missingDrop = drop.filter((name) => !present.includes(name))
  if (missingDrop.length > 0) {
    return Effect.fail(new StageError({ message: `drop: split "${split}" has no column ${missingDrop.map((c) => `"${c}"`).join(", ")} (columns: ${present.join(", ")})` }))
  }
  const known = new Set(present)
  for (const { name, expression } of derived) {
    const unknown = expression.names.filter((n) => !known.has(n))
    if (unknown.length > 0) {
      return Effect.fail(new StageError({
        message: `columns.${name} reads ${unknown.map((c) => `"${c}"`).join(", ")}, which split "${split}" does not have (columns: ${[...known].join(", ")})`
      }))
    }
    known.add(name)
  }
  return Effect.void
}

/** The derived values, one plain object per row. Only the columns the expressions read are converted. */
const evaluate = (table: Table, split: string, derived: ReadonlyArray<Derived>) =>
  Effect.suspend(() => {
    const inputs = [...new Set(derived.flatMap((d) => d.expression.names))].flatMap((name) => {
      const column = table.getChild(name)
      return column === null ? [] : [[name, column] as const]
    })
    const rows: Array<Record<string, unknown>> = new Array(table.numRows)
    for (let i = 0; i < table.numRows; i++) {
      const scope: Record<string, unknown> = {}
      for (const [name, column] of inputs) scope[name] = toPlain(column.get(i))
      const row: Record<string, unknown> = {}
      for (const { name, expression } of derived) {
        try {
          row[name] = scope[name] = expression.evaluate(scope) ?? null
        } catch (error) {
          return Effect.fail(new StageError({ message: `columns.${name} failed on split "${split}", row ${i + 1}: ${(error as Error).message}` }))
        }
      }
      rows[i] = row
    }
    return Effect.succeed(rows)
  })

export default defineStage({
  name: "map",
  version: "1",
  description: "Derives columns from expressions over each row (labels, prompt templates) and drops columns",
  params: Params,
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["dataset"],
  run: (ctx) =>
    Effect.gen(function* () {
      const derived = compile(ctx.params.columns)
      const drop = ctx.params.drop ?? []
      const metrics: Record<string, number> = {}
      const dataset = yield* transformSplits(ctx, ctx.params.splits, (table, split) =>
        Effect.gen(function* () {
          yield* checkNames(table, split, derived, drop)
          const rows = yield* evaluate(table, split, derived)
          const values = yield* rowsToTable(rows, `split "${split}"`, { columns: derived.map((d) => ({ name: d.name, kind: undefined })) }).pipe(
            Effect.mapError((e) => new StageError({ message: e.message }))
          )
          const kept = table.schema.fields.map((f) => f.name).filter((name) => !drop.includes(name))
          metrics[`${split}.rows`] = table.numRows
          yield* ctx.log(`${split}: ${table.numRows} rows${derived.length > 0 ? `, derived ${derived.map((d) => d.name).join(", ")}` : ""}${drop.length > 0 ? `, dropped ${drop.join(", ")}` : ""}`)
          return table.select(kept).assign(values)
        }))
      return { outputs: { dataset }, metrics }
    })
})
