/**
 * `eval_loss` and perplexity as the tutorial reads them off `trainer.evaluate()`.
 * The arithmetic is the trainer's own (`evalLoss` in src/train/evaluation.ts: each
 * batch's loss is the mean over its label tokens, and the batches are averaged
 * weighted by their size).
 */
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import type { Qwen2 } from "../model/qwen2.ts"
import type { Example } from "../train/collate.ts"
import type { Rows } from "../train/data.ts"
import { evalLoss, scoreWith } from "../train/evaluation.ts"

export interface LossResult {
  readonly evalLoss: number
  /** exp(eval_loss), as the tutorial prints it. */
  readonly perplexity: number
  /** Examples in batches that had label tokens (a batch with none has no loss, and is skipped as the trainer skips it). */
  readonly examples: number
}

/** Fails clearly when the data was tokenized with a bigger vocabulary than the model has. */
export const requireIdsInVocabulary = (examples: Rows<Example>, vocabSize: number, model: string) =>
  Effect.try({
    try: () => {
      let max = -1
      for (let i = 0; i < examples.length; i++) for (const id of examples.at(i)!.inputIds) if (id > max) max = id
      return max
    },
    catch: (cause) => new StageError({ message: `cannot read the examples: ${(cause as Error).message}`, cause })
  }).pipe(Effect.filterOrFail(
    (max) => max < vocabSize,
    (max) => new StageError({ message: `the dataset holds token id ${max}, but ${model} has a vocabulary of ${vocabSize}: tokenize with the model's own tokenizer` })
  ))

export const evaluationLoss = Effect.fn("Evaluate.loss")(function* (
  model: Qwen2,
  examples: Rows<Example>,
  options: { readonly batchSize: number; readonly padTokenId: number },
  onBatch?: (done: number, total: number) => Effect.Effect<void>
) {
  const { loss, examples: counted } = yield* evalLoss(scoreWith(model), examples, options, onBatch)
  return { evalLoss: loss, perplexity: Math.exp(loss), examples: counted } satisfies LossResult
})
