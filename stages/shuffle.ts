/**
 * `shuffle`: a seeded permutation of each chosen split, identical to Hugging Face
 * datasets' `Dataset.shuffle(seed=S)` (numpy's `default_rng(S).permutation(n)`),
 * so the same seed gives the same order here, in Python, on any machine. A split
 * larger than memory is shuffled through bucket files (src/shuffle.ts), in the same order.
 */
import { Effect, Schema } from "effect"
import { type SplitInput, streamSplits } from "../src/dataset.ts"
import { join } from "node:path"
import { shuffledBatches, shuffleWindows } from "../src/shuffle.ts"
import { defineStage } from "../src/stage.ts"
import { batchSize, Splits } from "./common.ts"

export default defineStage({
  name: "shuffle",
  version: "1",
  description: "Shuffles rows with a seeded permutation, the same order as Hugging Face datasets' shuffle(seed)",
  params: Schema.Struct({
    seed: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => 42 }).annotations({
      description: "The permutation seed (numpy default_rng semantics, as Hugging Face datasets)"
    }),
    splits: Splits,
    batch_size: batchSize()
  }),
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["dataset"],
  run: (ctx) =>
    Effect.gen(function* () {
      const { seed, splits, batch_size } = ctx.params
      // A split larger than a window keeps its buckets in the work folder while it is shuffled.
      // Past one window, the rows are read twice: once from the split, once from the buckets.
      const passes = (input: SplitInput) => (shuffleWindows(input) > 1 ? 2 : 1)
      const dataset = yield* streamSplits(ctx, { splits, batchRows: batch_size, passes }, (input) =>
        Effect.succeed({ schema: input.schema, batches: shuffledBatches(input, seed, join(ctx.workDir, `shuffle-${input.name}`)) }))
      return { outputs: { dataset } }
    })
})
