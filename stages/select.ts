/**
 * `select`: the first N rows of each chosen split, like the tutorial's optional
 * `train_dataset.select(range(2000))`. A quick way to try a pipeline end to end. It
 * reads only as far as the rows it keeps.
 */
import { Effect, Schema } from "effect"
import { rowRange, streamSplits } from "../src/dataset.ts"
import { defineStage } from "../src/stage.ts"
import { batchSize, Splits } from "./common.ts"

const Count = Schema.Int.pipe(Schema.nonNegative())

export default defineStage({
  name: "select",
  version: "1",
  description: "Keeps the first N rows of each split (after an optional offset)",
  params: Schema.Struct({
    rows: Schema.Union(Count, Schema.Record({ key: Schema.String, value: Count })).annotations({
      description: "Rows to keep: one number for every split, or a map such as { train: 2000, test: 1000 }"
    }),
    offset: Schema.optionalWith(Count, { default: () => 0 }).annotations({ description: "Rows to skip first" }),
    splits: Splits,
    batch_size: batchSize()
  }),
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["dataset"],
  run: (ctx) =>
    Effect.gen(function* () {
      const { rows, offset } = ctx.params
      const chosen = ctx.params.splits ?? (typeof rows === "number" ? undefined : Object.keys(rows))
      const dataset = yield* streamSplits(ctx, { splits: chosen, batchRows: ctx.params.batch_size }, (input) => {
        const count = typeof rows === "number" ? rows : rows[input.name] ?? input.rows
        return Effect.succeed({ schema: input.schema, batches: rowRange(input.batches, offset, offset + count) })
      })
      return { outputs: { dataset } }
    })
})
