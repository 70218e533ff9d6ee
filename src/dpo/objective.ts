/**
 * Direct Preference Optimization's loss, as TRL's DPOTrainer defines it (trl 0.12,
 * `DPOTrainer.dpo_loss` and `concatenated_forward`), and its gradient with respect to
 * each completion token's loss.
 *
 * A pair's log-probabilities are sums over its completion tokens (the prompt is masked);
 * for IPO, means (TRL divides by the completion's length). With h = (π_c − π_r) − (ρ_c − ρ_r),
 * the policy's log-ratio minus the frozen reference's:
 *
 * - sigmoid: −(1 − ε)·log σ(βh) − ε·log σ(−βh)   (ε: label_smoothing)
 * - ipo:     (h − 1/(2β))²
 * - hinge:   relu(1 − βh)
 *
 * A micro-batch's loss is the mean over its pairs, and an update's the mean over its
 * micro-batches (the Trainer divides by the micro-batches it accumulates). Since
 * π = −Σ CEₜ over the completion's tokens, d loss / d CEₜ = −(d loss / d π) (÷ length for
 * IPO): a weight per token, with which the model's head computes the exact gradient in
 * one pass (src/model/loss.ts, `tokenWeights`).
 */

export const DPO_LOSS_TYPES = ["sigmoid", "ipo", "hinge"] as const
export type DpoLossType = (typeof DPO_LOSS_TYPES)[number]

export interface DpoSettings {
  readonly beta: number
  readonly lossType: DpoLossType
  /** ε of the conservative sigmoid loss (cDPO); 0 otherwise. */
  readonly labelSmoothing: number
}

/** A pair's log-probabilities under one model: summed over the completion's tokens (averaged for IPO). */
export interface PairLogps {
  readonly chosen: number
  readonly rejected: number
}

export interface PairTerms {
  readonly loss: number
  /** d loss / d π_chosen; d loss / d π_rejected is its negative. */
  readonly dChosen: number
  /** β·(π − ρ), TRL's implicit rewards. */
  readonly chosenReward: number
  readonly rejectedReward: number
}

/** log σ(x) without overflow: −softplus(−x). */
const logSigmoid = (x: number): number => (x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x)))
const sigmoid = (x: number): number => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)))

/** One pair's loss, its derivative, and its rewards. */
export const pairTerms = (settings: DpoSettings, policy: PairLogps, reference: PairLogps): PairTerms => {
  const { beta, labelSmoothing: eps } = settings
  const h = (policy.chosen - policy.rejected) - (reference.chosen - reference.rejected)
  const rewards = { chosenReward: beta * (policy.chosen - reference.chosen), rejectedReward: beta * (policy.rejected - reference.rejected) }
  switch (settings.lossType) {
    case "sigmoid":
      return {
        loss: -(1 - eps) * logSigmoid(beta * h) - eps * logSigmoid(-beta * h),
        // d/dh −log σ(βh) = −β·σ(−βh); d/dh −log σ(−βh) = β·σ(βh).
        dChosen: -(1 - eps) * beta * sigmoid(-beta * h) + eps * beta * sigmoid(beta * h),
        ...rewards
      }
    case "ipo": {
      const gap = h - 1 / (2 * beta)
      return { loss: gap * gap, dChosen: 2 * gap, ...rewards }
    }
    case "hinge": {
      const margin = 1 - beta * h
      // relu's derivative at 0 is 0, as torch's.
      return { loss: Math.max(0, margin), dChosen: margin > 0 ? -beta : 0, ...rewards }
    }
  }
}

/** What one micro-batch of pairs gives: its loss (the mean over pairs), TRL's metrics, and its pairs' terms. */
export interface MicroBatchTerms {
  readonly loss: number
  readonly pairs: ReadonlyArray<PairTerms>
  readonly metrics: DpoMetrics
}

/** TRL's logged metrics of a batch, each a mean over its pairs. */
interface DpoMetrics {
  readonly "rewards/chosen": number
  readonly "rewards/rejected": number
  readonly "rewards/accuracies": number
  readonly "rewards/margins": number
  readonly "logps/chosen": number
  readonly "logps/rejected": number
}

export const METRIC_NAMES = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"] as const

const mean = (values: ReadonlyArray<number>) => values.reduce((a, b) => a + b, 0) / Math.max(1, values.length)

export const microBatchTerms = (settings: DpoSettings, policy: ReadonlyArray<PairLogps>, reference: ReadonlyArray<PairLogps>): MicroBatchTerms => {
  if (policy.length !== reference.length) throw new RangeError(`${policy.length} policy pairs for ${reference.length} reference pairs`)
  const pairs = policy.map((p, i) => pairTerms(settings, p, reference[i]!))
  return {
    loss: mean(pairs.map((t) => t.loss)),
    pairs,
    metrics: {
      "rewards/chosen": mean(pairs.map((t) => t.chosenReward)),
      "rewards/rejected": mean(pairs.map((t) => t.rejectedReward)),
      // TRL: (chosen_rewards > rejected_rewards).float().mean()
      "rewards/accuracies": mean(pairs.map((t) => (t.chosenReward > t.rejectedReward ? 1 : 0))),
      "rewards/margins": mean(pairs.map((t) => t.chosenReward - t.rejectedReward)),
      "logps/chosen": mean(policy.map((p) => p.chosen)),
      "logps/rejected": mean(policy.map((p) => p.rejected))
    }
  }
}

/**
 * A batch of `pairs` pairs is 2·pairs rows: the chosen completions, then the rejected
 * ones (TRL's concatenated batch). Given each scored token's row and loss, in order,
 * the rows' log-probabilities: −Σ of their tokens' losses (÷ their count for IPO).
 */
export const rowLogps = (lossType: DpoLossType, rowsOfTokens: ArrayLike<number>, tokenLosses: ArrayLike<number>, rowCount: number) => {
  const sums = new Float64Array(rowCount)
  const counts = new Float64Array(rowCount)
  for (let i = 0; i < tokenLosses.length; i++) {
    const row = rowsOfTokens[i]!
    sums[row] = sums[row]! - tokenLosses[i]!
    counts[row] = counts[row]! + 1
  }
  return { logps: lossType === "ipo" ? sums.map((s, r) => s / Math.max(1, counts[r]!)) : sums, counts }
}

export const asPairs = (rowValues: ArrayLike<number>, pairs: number): Array<PairLogps> =>
  Array.from({ length: pairs }, (_, i) => ({ chosen: rowValues[i]!, rejected: rowValues[pairs + i]! }))

/**
 * Each scored token's weight in the head's gradient pass: d (update loss) / d CEₜ, where
 * the update loss is this micro-batch's loss divided by `microBatches`.
 */
export const tokenWeights = (
  lossType: DpoLossType,
  terms: MicroBatchTerms,
  rowsOfTokens: ArrayLike<number>,
  counts: ArrayLike<number>,
  microBatches: number
): Float64Array => {
  const pairs = terms.pairs.length
  const scale = 1 / (pairs * microBatches)
  return Float64Array.from({ length: rowsOfTokens.length }, (_, i) => {
    const row = rowsOfTokens[i]!
    const pair = terms.pairs[row % pairs]!
    const dLogp = row < pairs ? pair.dChosen : -pair.dChosen
    const perToken = lossType === "ipo" ? 1 / Math.max(1, counts[row]!) : 1
    // π = −Σ CEₜ: d loss / d CEₜ = −d loss / d π.
    return -dLogp * perToken * scale
  })
}
