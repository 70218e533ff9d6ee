/**
 * DPO as an objective of the training loop (src/train/trainer.ts): the micro-batches
 * are pairs, drawn in train's seeded order (a fresh permutation of the pairs each
 * epoch); an update is `dpoUpdate` over them; evaluation gives TRL's eval_loss (the mean
 * over pairs) and its eval_ metrics (the mean over eval batches, as TRL logs them).
 * Dropout is off, as TRL's `disable_dropout` (its default) leaves it.
 */
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import type { AdamW } from "../train/adamw.ts"
import { microBatch, microBatchesPerEpoch } from "../train/data.ts"
import type { LayerwiseModel } from "../train/layerwise.ts"
import type { Objective, TrainingArguments } from "../train/trainer.ts"
import { type DpoSettings, METRIC_NAMES, microBatchTerms } from "./objective.ts"
import { collatePairs, type PairExample } from "./pairs.ts"
import { referenceLogps, type ReferenceRow } from "./reference.ts"
import { dpoUpdate, pairLogps } from "./update.ts"

export interface PreferenceData {
  readonly train: ReadonlyArray<PairExample>
  readonly trainReference: ReadonlyArray<ReferenceRow>
  readonly eval: ReadonlyArray<PairExample> | undefined
  readonly evalReference: ReadonlyArray<ReferenceRow> | undefined
  readonly padId: number
  readonly maxLength: number | undefined
}

interface Indexed {
  readonly pair: PairExample
  readonly reference: ReferenceRow
}

export const preference = (model: LayerwiseModel, optimizer: AdamW, settings: DpoSettings, data: PreferenceData, args: TrainingArguments): Objective => {
  const orders = new Map<number, Uint32Array>()
  const train: ReadonlyArray<Indexed> = data.train.map((pair, i) => ({ pair, reference: data.trainReference[i]! }))
  const micro = (items: ReadonlyArray<Indexed>) => ({
    batch: collatePairs(items.map((item) => item.pair), data.padId, data.maxLength),
    pairs: items.length,
    reference: items.map((item) => referenceLogps(settings.lossType, item.reference))
  })
  return {
    microBatchesPerEpoch: microBatchesPerEpoch(train.length, args.batchSize),
    update: ({ epoch, firstMicroBatch, microBatches, lr }) => {
      const micros = Array.from({ length: microBatches }, (_, i) =>
        micro(microBatch(train, { seed: args.seed, epoch, batchSize: args.batchSize, shuffle: true }, firstMicroBatch + i, orders)))
      const result = dpoUpdate(model, optimizer, settings, micros, { lr, maxGradNorm: args.maxGradNorm })
      return {
        loss: result.loss,
        norm: result.norm,
        tokens: micros.reduce((sum, m) => sum + m.batch.tokens, 0),
        metrics: result.microBatches.map((terms) => ({ ...terms.metrics }))
      }
    },
    evaluate: data.eval === undefined || data.evalReference === undefined
      ? undefined
      : evaluatePairs(model, settings, data.eval.map((pair, i) => ({ pair, reference: data.evalReference![i]! })), args.evalBatchSize, micro)
  }
}

const evaluatePairs = (
  model: LayerwiseModel,
  settings: DpoSettings,
  pairs: ReadonlyArray<Indexed>,
  batchSize: number,
  micro: (items: ReadonlyArray<Indexed>) => { readonly batch: ReturnType<typeof collatePairs>; readonly pairs: number; readonly reference: ReturnType<typeof referenceLogps>[] }
) =>
  Effect.gen(function* () {
    let lossSum = 0
    const sums: Record<string, number> = {}
    let batches = 0
    for (let start = 0; start < pairs.length; start += batchSize) {
      const { batch, pairs: count, reference } = micro(pairs.slice(start, start + batchSize))
      const terms = yield* Effect.try({
        try: () => microBatchTerms(settings, pairLogps(model, settings, batch, count), reference),
        catch: (error) => new StageError({ message: (error as Error).message, cause: error })
      })
      lossSum += terms.loss * count
      for (const name of METRIC_NAMES) sums[`eval_${name}`] = (sums[`eval_${name}`] ?? 0) + terms.metrics[name]
      batches++
      yield* Effect.yieldNow()
    }
    return {
      eval_loss: lossSum / Math.max(1, pairs.length),
      ...Object.fromEntries(Object.entries(sums).map(([name, total]) => [name, total / Math.max(1, batches)]))
    }
  })
