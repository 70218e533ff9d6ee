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
import { type RecordBatch, type Schema as ArrowSchema, Table } from "apache-arrow"
import { Effect, Either, Schema, Stream } from "effect"
import { toPlain } from "../src/arrow.ts"
import { streamSplits } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { compileExpression, type RowExpression } from "../src/expression.ts"
import { batchBuilder } from "../src/formats/batch.ts"
import { finalColumns, kindInference } from "../src/formats/infer.ts"
import { defineStage } from "../src/stage.ts"
import { batchSize, Splits } from "./common.ts"

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
  splits: Splits,
  batch_size: batchSize()
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
const checkNames = (schema: ArrowSchema, split: string, derived: ReadonlyArray<Derived>, drop: ReadonlyArray<string>) => {
  const present = schema.fields.map((f) => f.name)
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

/** The derived values of a batch, one plain object per row. Only the columns the expressions read are converted. */
const evaluate = (batch: RecordBatch, split: string, derived: ReadonlyArray<Derived>, firstRow: number) =>
  Effect.suspend(() => {
    const table = new Table(batch.schema, [batch])
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
          return Effect.fail(new StageError({ message: `columns.${name} failed on split "${split}", row ${firstRow + i + 1}: ${(error as Error).message}` }))
        }
      }
      rows[i] = row
    }
    return Effect.succeed(rows)
  })

/** Each batch with the first row's number in the split. */
const numbered = <E>(batches: Stream.Stream<RecordBatch, E>) =>
  Stream.mapAccum(batches, 0, (firstRow, batch) => [firstRow + batch.numRows, { batch, firstRow }] as const)

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
      // Two passes: the derived columns' types come from every row (as for any plain
      // rows), so the first pass infers them and the second builds the batches.
      const dataset = yield* streamSplits(ctx, { splits: ctx.params.splits, batchRows: ctx.params.batch_size, passes: () => 2 }, (input) =>
        Effect.gen(function* () {
          const split = input.name
          yield* checkNames(input.schema, split, derived, drop)
          const fail = (e: { readonly message: string }) => new StageError({ message: e.message })
          const inference = yield* Effect.mapError(kindInference(`split "${split}"`, derived.map((d) => ({ name: d.name, kind: undefined }))), fail)
          yield* Stream.runForEach(numbered(input.batches), ({ batch, firstRow }) =>
            Effect.flatMap(evaluate(batch, split, derived, firstRow), (rows) => {
              for (const row of rows) {
                const error = inference.add(row)
                if (error !== undefined) return Effect.fail(fail(error))
              }
              return Effect.void
            }))
          const builder = batchBuilder(finalColumns(inference.columns()))
          const kept = input.schema.fields.map((f) => f.name).filter((name) => !drop.includes(name))
          const withValues = (table: Table, values: RecordBatch) => table.select(kept).assign(new Table(builder.schema, [values]))
          const schema = withValues(new Table(input.schema, []), builder.build([])).schema
          const batches = numbered(input.batches).pipe(
            Stream.mapEffect(({ batch, firstRow }) =>
              Effect.map(evaluate(batch, split, derived, firstRow), (rows) => withValues(new Table(input.schema, [batch]), builder.build(rows)))),
            Stream.concat(Stream.execute(Effect.suspend(() => {
              metrics[`${split}.rows`] = input.rows
              return ctx.log(`${split}: ${input.rows} rows${derived.length > 0 ? `, derived ${derived.map((d) => d.name).join(", ")}` : ""}${drop.length > 0 ? `, dropped ${drop.join(", ")}` : ""}`)
            })))
          )
          return { schema, batches }
        }))
      return { outputs: { dataset }, metrics }
    })
})
