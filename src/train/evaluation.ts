/**
 * `eval_loss` exactly as `Trainer.evaluate()` computes it: each eval batch's loss
 * is the mean over that batch's label tokens, and the reported loss is the mean of
 * those per-example (the batch loss counted once per example in the batch). A batch
 * with no label tokens has no loss and is skipped. Used by the trainer's eval steps
 * and by the evaluate stage.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import { causalLmLoss } from "../model/loss.ts"
import type { Qwen2 } from "../model/qwen2.ts"
import { type Batch, collate, type Example } from "./collate.ts"
import type { Rows } from "./data.ts"

/** How a model scores one collated batch: the mean loss over its label tokens. */
export type BatchScorer = (batch: Batch) => number

/**
 * Logits a pass through the head holds when scoring: a quarter of training's passes. A
 * whole 0.5B model's weights and XNNPACK's packed copies of them take 3.2 GiB of the
 * 4 GiB heap, so eval_loss at 5×512 ran out of heap on training's 256 MiB passes.
 */
const SCORING_HEAD_ELEMENTS = 16 * 2 ** 20

/** A whole model on the backend (inference): the tape-free loss of `causalLmLoss`. */
export const scoreWith = (model: Qwen2): BatchScorer => (batch) => {
  const headRows = Math.max(1, Math.floor(SCORING_HEAD_ELEMENTS / model.config.vocab_size))
  const loss = tf.tidy(() =>
    causalLmLoss(model, { batchSize: batch.size, seqLen: batch.length, inputIds: batch.inputIds, attentionMask: batch.attentionMask }, batch.labels, { headRows })
  )
  const value = loss.dataSync()[0] ?? Number.NaN
  loss.dispose()
  return value
}

/** One batch's mean loss over its label tokens; NaN when it has none. */
const batchLoss = (score: BatchScorer, examples: ReadonlyArray<Example>, padId: number): number => {
  const batch = collate(examples, padId)
  return batch.labelTokens === 0 ? Number.NaN : score(batch)
}

export interface EvalLoss {
  readonly loss: number
  /** Examples in batches that had label tokens. */
  readonly examples: number
}

export const evalLoss = (
  score: BatchScorer,
  examples: Rows<Example>,
  options: { readonly batchSize: number; readonly padTokenId: number },
  onBatch: (done: number, total: number) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<EvalLoss, StageError> =>
  Effect.gen(function* () {
    let weighted = 0
    let counted = 0
    for (let start = 0; start < examples.length; start += options.batchSize) {
      const size = Math.min(options.batchSize, examples.length - start)
      const loss = yield* Effect.try({
        // Examples read from disk are read here: a damaged file fails as the loss does.
        try: () => batchLoss(score, Array.from({ length: size }, (_, i) => examples.at(start + i)!), options.padTokenId),
        catch: (cause) => new StageError({ message: `the loss failed: ${cause instanceof Error ? cause.message : String(cause)}`, cause })
      })
      if (!Number.isNaN(loss)) {
        weighted += loss * size
        counted += size
      }
      yield* onBatch(Math.min(examples.length, start + options.batchSize), examples.length)
    }
    return { loss: counted === 0 ? Number.NaN : weighted / counted, examples: counted }
  })
