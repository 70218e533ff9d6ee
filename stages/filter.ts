/**
 * `filter`: keeps the rows that pass every predicate given. The declarative
 * predicates cover the tutorial (`max_length: { column: input_ids, max: 512 }`);
 * `where` takes a Jexl expression over the row's columns for anything else.
 */
import type { Table } from "apache-arrow"
import { Effect, Either, Schema } from "effect"
import { takeRows } from "../src/arrow.ts"
import { transformSplits } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { compilePredicate, type RowPredicate } from "../src/expression.ts"
import { defineStage } from "../src/stage.ts"
import { Splits } from "./common.ts"

const Expression = Schema.String.pipe(
  Schema.filter((source) => Either.match(compilePredicate(source), { onLeft: (why) => `invalid expression: ${why}`, onRight: () => true }))
).annotations({ description: "A Jexl expression over the row's columns, such as `question.length < 400`" })

const Length = Schema.Int.pipe(Schema.nonNegative())

const Params = Schema.Struct({
  where: Schema.optional(Expression).annotations({ description: "A Jexl expression over the row's columns, such as `question.length < 400`" }),
  max_length: Schema.optional(Schema.Struct({ column: Schema.String, max: Length })).annotations({ description: "Keep rows whose column (string or list) has at most `max` items" }),
  min_length: Schema.optional(Schema.Struct({ column: Schema.String, min: Length })).annotations({ description: "Keep rows whose column has at least `min` items" }),
  non_empty: Schema.optional(Schema.Array(Schema.String)).annotations({ description: "Columns that must be non-null and non-empty" }),
  splits: Splits
}).pipe(
  Schema.filter((p) =>
    p.where !== undefined || p.max_length !== undefined || p.min_length !== undefined || p.non_empty !== undefined ||
    "give at least one predicate: where, max_length, min_length or non_empty"
  )
)

type Params = typeof Params.Type

const lengthAt = (table: Table, column: string, row: number): number => {
  const value = table.getChild(column)!.get(row) as { length?: number } | string | null
  return value === null || value === undefined ? 0 : typeof value === "string" ? value.length : value.length ?? 0
}

const requireColumns = (table: Table, split: string, columns: ReadonlyArray<string>) => {
  const present = table.schema.fields.map((f) => f.name)
  const missing = columns.filter((c) => !present.includes(c))
  return missing.length === 0
    ? Effect.void
    : Effect.fail(new StageError({ message: `split "${split}" has no column ${missing.map((c) => `"${c}"`).join(", ")} (columns: ${present.join(", ")})` }))
}

const keepIndices = (table: Table, params: Params, where: RowPredicate | undefined): Int32Array => {
  const keep = new Int32Array(table.numRows)
  let kept = 0
  for (let i = 0; i < table.numRows; i++) {
    if (params.max_length && lengthAt(table, params.max_length.column, i) > params.max_length.max) continue
    if (params.min_length && lengthAt(table, params.min_length.column, i) < params.min_length.min) continue
    if (params.non_empty && params.non_empty.some((c) => lengthAt(table, c, i) === 0)) continue
    if (where && !where(table.get(i) as unknown as Record<string, unknown>)) continue
    keep[kept++] = i
  }
  return keep.subarray(0, kept)
}

export default defineStage({
  name: "filter",
  version: "1",
  description: "Keeps the rows that pass every predicate (max_length, min_length, non_empty, where)",
  params: Params,
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["dataset"],
  run: (ctx) =>
    Effect.gen(function* () {
      const params = ctx.params
      const where = params.where === undefined ? undefined : Either.getOrThrow(compilePredicate(params.where))
      const metrics: Record<string, number> = {}
      const dataset = yield* transformSplits(ctx, params.splits, (table, split) =>
        Effect.gen(function* () {
          yield* requireColumns(table, split, [
            ...(params.max_length ? [params.max_length.column] : []),
            ...(params.min_length ? [params.min_length.column] : []),
            ...(params.non_empty ?? [])
          ])
          const kept = yield* Effect.try({
            try: () => keepIndices(table, params, where),
            catch: (e) => new StageError({ message: `the where expression failed on split "${split}": ${(e as Error).message}` })
          })
          metrics[`${split}.rows_in`] = table.numRows
          metrics[`${split}.rows_out`] = kept.length
          yield* ctx.log(`${split}: ${table.numRows} → ${kept.length} rows`)
          return takeRows(table, kept)
        }))
      return { outputs: { dataset }, metrics }
    })
})
