/**
 * `filter`: keeps the rows that pass every predicate given. The declarative
 * predicates cover the tutorial (`max_length: { column: input_ids, max: 512 }`);
 * `where` takes a Jexl expression over the row's columns for anything else.
 */
import { DataType, type RecordBatch, type Schema as ArrowSchema, Table } from "apache-arrow"
import { Effect, Either, Schema, Stream } from "effect"
import { takeRows } from "../src/arrow.ts"
import { streamSplits } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { compilePredicate, type RowPredicate } from "../src/expression.ts"
import { defineStage } from "../src/stage.ts"
import { batchSize, Splits } from "./common.ts"

const Expression = Schema.String.pipe(
  Schema.filter((source) => Either.match(compilePredicate(source), { onLeft: (why) => `invalid expression: ${why}`, onRight: () => true }))
).annotations({ description: "A Jexl expression over the row's columns, such as `question.length < 400`" })

const Length = Schema.Int.pipe(Schema.nonNegative())

const Params = Schema.Struct({
  where: Schema.optional(Expression).annotations({ description: "A Jexl expression over the row's columns, such as `question.length < 400`" }),
  max_length: Schema.optional(Schema.Struct({ column: Schema.String, max: Length })).annotations({ description: "Keep rows whose column (string or list) has at most `max` items" }),
  min_length: Schema.optional(Schema.Struct({ column: Schema.String, min: Length })).annotations({ description: "Keep rows whose column has at least `min` items" }),
  non_empty: Schema.optional(Schema.Array(Schema.String)).annotations({ description: "Columns that must be non-null and non-empty" }),
  splits: Splits,
  batch_size: batchSize()
}).pipe(
  Schema.filter((p) =>
    p.where !== undefined || p.max_length !== undefined || p.min_length !== undefined || p.non_empty !== undefined ||
    "give at least one predicate: where, max_length, min_length or non_empty"
  )
)

type Params = typeof Params.Type

/**
 * Each row's length in `column` of a one-batch table: a list's from its offsets (no
 * vector made per row), a string's in UTF-16 units as JavaScript counts it; null is 0.
 */
const lengthsOf = (table: Table, column: string): (row: number) => number => {
  const vector = table.getChild(column)!
  const data = vector.data[0]
  if (data !== undefined && DataType.isList(data.type)) {
    const offsets = data.valueOffsets
    return (row) => (vector.isValid(row) ? offsets[row + 1]! - offsets[row]! : 0)
  }
  return (row) => {
    const value = vector.get(row) as { length?: number } | string | null
    return value === null || value === undefined ? 0 : typeof value === "string" ? value.length : value.length ?? 0
  }
}

const requireColumns = (schema: ArrowSchema, split: string, columns: ReadonlyArray<string>) => {
  const present = schema.fields.map((f) => f.name)
  const missing = columns.filter((c) => !present.includes(c))
  return missing.length === 0
    ? Effect.void
    : Effect.fail(new StageError({ message: `split "${split}" has no column ${missing.map((c) => `"${c}"`).join(", ")} (columns: ${present.join(", ")})` }))
}

/** The rows of `batch` that pass; `firstRow` is its first row's number in the split, for errors. */
const keepIndices = (batch: RecordBatch, params: Params, where: RowPredicate | undefined, firstRow: number): Int32Array => {
  const table = new Table(batch.schema, [batch])
  const maxLength = params.max_length && lengthsOf(table, params.max_length.column)
  const minLength = params.min_length && lengthsOf(table, params.min_length.column)
  const nonEmpty = (params.non_empty ?? []).map((c) => lengthsOf(table, c))
  const keep = new Int32Array(table.numRows)
  let kept = 0
  for (let i = 0; i < table.numRows; i++) {
    if (maxLength && maxLength(i) > params.max_length!.max) continue
    if (minLength && minLength(i) < params.min_length!.min) continue
    if (nonEmpty.some((length) => length(i) === 0)) continue
    if (where) {
      let pass: boolean
      try {
        pass = where(table.get(i) as unknown as Record<string, unknown>)
      } catch (error) {
        throw new Error(`row ${firstRow + i + 1}: ${(error as Error).message}`)
      }
      if (!pass) continue
    }
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
      const dataset = yield* streamSplits(ctx, { splits: params.splits, batchRows: params.batch_size }, (input) =>
        Effect.gen(function* () {
          const split = input.name
          yield* requireColumns(input.schema, split, [
            ...(params.max_length ? [params.max_length.column] : []),
            ...(params.min_length ? [params.min_length.column] : []),
            ...(params.non_empty ?? [])
          ])
          let rowsIn = 0
          let rowsOut = 0
          const batches = input.batches.pipe(
            Stream.mapEffect((batch) =>
              Effect.try({
                try: () => {
                  const kept = keepIndices(batch, params, where, rowsIn)
                  rowsIn += batch.numRows
                  rowsOut += kept.length
                  return takeRows(new Table(batch.schema, [batch]), kept)
                },
                catch: (e) => new StageError({ message: `the where expression failed on split "${split}", ${(e as Error).message}` })
              })),
            Stream.concat(Stream.execute(Effect.suspend(() => {
              metrics[`${split}.rows_in`] = rowsIn
              metrics[`${split}.rows_out`] = rowsOut
              return ctx.log(`${split}: ${rowsIn} → ${rowsOut} rows`)
            })))
          )
          return { schema: input.schema, batches }
        }))
      return { outputs: { dataset }, metrics }
    })
})
