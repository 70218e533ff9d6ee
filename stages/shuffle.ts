/**
 * `shuffle`: a seeded permutation of each chosen split, identical to Hugging Face
 * datasets' `Dataset.shuffle(seed=S)` (numpy's `default_rng(S).permutation(n)`),
 * so the same seed gives the same order here, in Python, on any machine.
 */
import { Effect, Schema } from "effect"
import { takeRows } from "../src/arrow.ts"
import { transformSplits } from "../src/dataset.ts"
import { permutation } from "../src/random.ts"
import { defineStage } from "../src/stage.ts"
import { Splits } from "./common.ts"

export default defineStage({
  name: "shuffle",
  version: "1",
  description: "Shuffles rows with a seeded permutation, the same order as Hugging Face datasets' shuffle(seed)",
  params: Schema.Struct({
    seed: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => 42 }).annotations({
      description: "The permutation seed (numpy default_rng semantics, as Hugging Face datasets)"
    }),
    splits: Splits
  }),
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["dataset"],
  run: (ctx) =>
    Effect.gen(function* () {
      const dataset = yield* transformSplits(ctx, ctx.params.splits, (table) =>
        Effect.sync(() => takeRows(table, permutation(table.numRows, ctx.params.seed))))
      return { outputs: { dataset } }
    })
})
