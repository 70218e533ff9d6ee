/**
 * Learning-rate schedules as transformers' `get_scheduler` defines them: a
 * multiplier of the base rate at each optimizer step. The step counts as HF's do:
 * update k (0-based) uses `lambda(k)`, so with warmup the very first update runs
 * at rate 0, exactly as the Trainer's does.
 */
export type SchedulerKind = "linear" | "cosine" | "constant" | "constant_with_warmup"

export const lrMultiplier = (kind: SchedulerKind, step: number, warmupSteps: number, totalSteps: number): number => {
  if (kind === "constant") return 1
  if (step < warmupSteps) return step / Math.max(1, warmupSteps)
  if (kind === "constant_with_warmup") return 1
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps)
  if (kind === "linear") return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps))
  // cosine with half a cycle: from 1 down to 0 over the steps after warmup
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 2 * 0.5 * progress)))
}

/** TrainingArguments.get_warmup_steps: explicit steps win over the ratio, which rounds up. */
export const warmupStepsFor = (totalSteps: number, warmupSteps: number, warmupRatio: number): number =>
  warmupSteps > 0 ? warmupSteps : Math.ceil(totalSteps * warmupRatio)

/**
 * Optimizer updates per epoch with gradient accumulation, as the Trainer counts
 * them since late 2024: the last update of an epoch takes the leftover micro-batches.
 */
export const updatesPerEpoch = (microBatches: number, accumulation: number): number =>
  Math.max(1, Math.ceil(microBatches / accumulation))

/** `max_steps` when given, else epochs × updates per epoch, rounded up (fractional epochs allowed). */
export const totalSteps = (options: { readonly maxSteps: number; readonly epochs: number; readonly updatesPerEpoch: number }): number =>
  options.maxSteps > 0 ? options.maxSteps : Math.ceil(options.epochs * options.updatesPerEpoch)
