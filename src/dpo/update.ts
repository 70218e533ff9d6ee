/**
 * One DPO optimizer update of a layer-wise model: for each micro-batch of pairs, the
 * policy's forward pass, the pairs' log-probabilities and DPO terms against the
 * reference's (precomputed), and the backward pass with each completion token weighted
 * by its share of the loss; then the gradient norm, clipping and AdamW, as the train
 * stage's update (src/train/layerwise.ts).
 */
import type { AdamW } from "../train/adamw.ts"
import { clipCoefficient, decays } from "../train/adamw.ts"
import type { Batch } from "../train/collate.ts"
import type { LayerwiseModel, TrainingNoise, UpdateOptions } from "../train/layerwise.ts"
import { asPairs, type DpoSettings, type MicroBatchTerms, microBatchTerms, type PairLogps, rowLogps, tokenWeights } from "./objective.ts"

export interface PairBatch {
  /** 2·pairs rows: the chosen completions, then the rejected ones (see pairs.ts). */
  readonly batch: Batch
  readonly pairs: number
  /** The reference model's log-probabilities of these pairs. */
  readonly reference: ReadonlyArray<PairLogps>
}

export interface DpoUpdateResult {
  /** The update's loss: the mean of its micro-batches' losses. */
  readonly loss: number
  /** The global gradient norm before clipping. */
  readonly norm: number
  /** Each micro-batch's loss and metrics (TRL stores them one by one, and logs their mean). */
  readonly microBatches: ReadonlyArray<MicroBatchTerms>
}

/** The micro-batch's rows of its scored tokens: position r of a [rows × length] batch is row ⌊r / length⌋. */
const rowsOf = (positions: Int32Array, length: number) => Int32Array.from(positions, (r) => Math.floor(r / length))

/** Forward and backward over one micro-batch of pairs; adds its gradients (its loss ÷ `microBatches`) into the model's. */
export const accumulatePairs = (model: LayerwiseModel, settings: DpoSettings, micro: PairBatch, microBatches: number, noise?: TrainingNoise): MicroBatchTerms => {
  let terms: MicroBatchTerms | undefined
  model.accumulateWeighted(micro.batch, (scored) => {
    const rows = rowsOf(scored.rows, micro.batch.length)
    const { logps, counts } = rowLogps(settings.lossType, rows, scored.losses, micro.batch.size)
    terms = microBatchTerms(settings, asPairs(logps, micro.pairs), micro.reference)
    return tokenWeights(settings.lossType, terms, rows, counts, microBatches)
  }, noise)
  return terms!
}

export const dpoUpdate = (model: LayerwiseModel, optimizer: AdamW, settings: DpoSettings, micros: ReadonlyArray<PairBatch>, options: Omit<UpdateOptions, "normalizer">): DpoUpdateResult => {
  const microBatches = micros.map((micro, index) => {
    const noise = options.noise === undefined ? undefined : { ...options.noise, key: { ...options.noise.key, micro: index } }
    return accumulatePairs(model, settings, micro, micros.length, noise)
  })
  const loss = microBatches.reduce((sum, terms) => sum + terms.loss, 0) / Math.max(1, micros.length)
  const norm = model.gradientNorm()
  if (!Number.isFinite(loss) || !Number.isFinite(norm)) {
    model.discardGradients()
    return { loss, norm, microBatches }
  }
  model.applyUpdate(optimizer, options.lr, clipCoefficient(norm, options.maxGradNorm), options.decay ?? decays)
  return { loss, norm, microBatches }
}

/** Each row's log-probability and scored tokens, forward only (no noise); `adapterOff` for LoRA's reference. */
export const batchRowLogps = (model: LayerwiseModel, lossType: DpoSettings["lossType"], batch: Batch, options: { readonly adapterOff?: boolean } = {}) => {
  const scored = model.tokenLosses(batch, options)
  return rowLogps(lossType, rowsOf(scored.rows, batch.length), scored.losses, batch.size)
}

/** A micro-batch's pairs' log-probabilities, forward only: evaluation. */
export const pairLogps = (model: LayerwiseModel, settings: Pick<DpoSettings, "lossType">, batch: Batch, pairs: number, options: { readonly adapterOff?: boolean } = {}): Array<PairLogps> =>
  asPairs(batchRowLogps(model, settings.lossType, batch, options).logps, pairs)
