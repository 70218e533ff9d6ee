/**
 * `eval_loss` exactly as `Trainer.evaluate()` computes it: each eval batch's loss
 * is the mean over that batch's label tokens, and the reported loss is the mean of
 * those per-example (the batch loss counted once per example in the batch).
 */
import * as tf from "@tensorflow/tfjs-core"
import { causalLmLoss } from "../model/loss.ts"
import type { Qwen2 } from "../model/qwen2.ts"
import { collate, type Example } from "./collate.ts"

export const evalLoss = (model: Qwen2, examples: ReadonlyArray<Example>, batchSize: number, padId: number): number => {
  let weighted = 0
  let counted = 0
  for (let start = 0; start < examples.length; start += batchSize) {
    const batch = collate(examples.slice(start, start + batchSize), padId)
    if (batch.labelTokens === 0) continue
    const loss = tf.tidy(() =>
      causalLmLoss(model, { batchSize: batch.size, seqLen: batch.length, inputIds: batch.inputIds, attentionMask: batch.attentionMask }, batch.labels)
    )
    weighted += (loss.dataSync()[0] ?? Number.NaN) * batch.size
    counted += batch.size
    loss.dispose()
  }
  return counted === 0 ? Number.NaN : weighted / counted
}
