/**
 * The training loop, with the Hugging Face Trainer's semantics:
 *
 * - each optimizer update takes `gradient_accumulation_steps` micro-batches (the
 *   last update of an epoch takes what is left), and the loss of every micro-batch
 *   is divided by the label tokens of the whole update (`num_items_in_batch`, the
 *   late-2024 fix), so accumulation does not change the loss;
 * - gradients are clipped by their global norm, then AdamW steps with the
 *   scheduler's rate for this update (0 on the first update when warming up);
 * - `logging_steps` logs the mean loss since the last log; `eval_steps` computes
 *   eval_loss (at its multiples only, as the Trainer); `save_steps` writes a checkpoint
 *   (and the last step does), keeping `save_total_limit` and the best.
 *
 * Between updates the loop yields, so Ctrl-C stops it cleanly; a resumed run picks
 * up at the last checkpoint and ends with the same weights an uninterrupted run would.
 *
 * The loop trains a `LayerwiseModel` (layerwise.ts): weights and optimizer state in JS
 * memory, one layer at a time on the backend, fully or with LoRA. `updateStep` below is
 * the same update on the tape over a whole `Qwen2`: the reference the tests hold it to.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect } from "effect"
import { readView, updateWeightInPlace } from "../backend/in-place.ts"
import { StageError } from "../errors.ts"
import { lossAndGrads, trainableNames } from "../model/loss.ts"
import type { Qwen2 } from "../model/qwen2.ts"
import { AdamW, clipCoefficient, decays, squaredNorm } from "./adamw.ts"
import { type Batch, collate, type Example } from "./collate.ts"
import { microBatch, microBatchesPerEpoch, type Rows } from "./data.ts"
import { evalLoss } from "./evaluation.ts"
import type { LayerwiseModel, UpdateOptions, UpdateResult } from "./layerwise.ts"
import { lrMultiplier, type SchedulerKind, totalSteps, updatesPerEpoch, warmupStepsFor } from "./schedule.ts"
import type { LogRow, TrainerState } from "./checkpoint.ts"

export interface TrainingArguments {
  readonly epochs: number
  readonly maxSteps: number
  readonly batchSize: number
  readonly evalBatchSize: number
  readonly gradientAccumulationSteps: number
  readonly learningRate: number
  readonly weightDecay: number
  readonly maxGradNorm: number
  readonly warmupRatio: number
  readonly warmupSteps: number
  readonly scheduler: SchedulerKind
  readonly adamBeta1: number
  readonly adamBeta2: number
  readonly adamEpsilon: number
  readonly evalSteps: number | undefined
  readonly saveSteps: number | undefined
  readonly loggingSteps: number
  readonly loggingFirstStep: boolean
  readonly seed: number
  /** NEFTune's alpha (`neftune_noise_alpha`); undefined: no noise. */
  readonly neftuneNoiseAlpha: number | undefined
}

/** What the loop asks of its caller: persistence and reporting. */
export interface TrainerHooks {
  readonly save: (state: TrainerState) => Effect.Effect<void, StageError>
  readonly log: (row: LogRow) => Effect.Effect<void>
  readonly progress: (step: number, total: number) => Effect.Effect<void>
}

export const toBatch = (batch: Batch) => ({
  tokens: { batchSize: batch.size, seqLen: batch.length, inputIds: batch.inputIds, attentionMask: batch.attentionMask },
  labels: batch.labels
})

const round = (value: number, digits = 6) => Number(value.toPrecision(digits))

export const planSteps = (args: TrainingArguments, trainExamples: number) => planStepsFor(args, microBatchesPerEpoch(trainExamples, args.batchSize))

export const planStepsFor = (args: TrainingArguments, microBatches: number) => {
  const perEpoch = updatesPerEpoch(microBatches, args.gradientAccumulationSteps)
  const total = totalSteps({ maxSteps: args.maxSteps, epochs: args.epochs, updatesPerEpoch: perEpoch })
  return { microBatches, perEpoch, total, warmup: warmupStepsFor(total, args.warmupSteps, args.warmupRatio) }
}

/** One optimizer update's place in the run: what an objective needs to make it. */
export interface UpdateWork {
  /** 0-based. */
  readonly step: number
  readonly epoch: number
  /** The update's first micro-batch in the epoch, and how many it takes (the last update of an epoch takes what is left). */
  readonly firstMicroBatch: number
  readonly microBatches: number
  readonly lr: number
}

export interface UpdateOutcome {
  readonly loss: number
  /** The global gradient norm before clipping. */
  readonly norm: number
  /** Non-padding tokens, for throughput. */
  readonly tokens: number
  /** Metrics of each micro-batch (DPO's rewards): logged as their mean since the last log, as TRL does. */
  readonly metrics?: ReadonlyArray<Readonly<Record<string, number>>>
}

/**
 * What the loop trains for: the micro-batches of an epoch, one optimizer update, and an
 * evaluation (`eval_loss`, and any `eval_`-prefixed metric). The causal-LM objective is
 * `supervised` below; DPO's is in src/dpo/.
 */
export interface Objective {
  readonly microBatchesPerEpoch: number
  readonly update: (work: UpdateWork) => UpdateOutcome
  readonly evaluate: Effect.Effect<Readonly<Record<string, number>> & { readonly eval_loss: number }, StageError> | undefined
}

/** Supervised fine-tuning: the causal-LM loss over the label tokens, normalised by the update's label tokens. */
export const supervised = (
  model: LayerwiseModel,
  optimizer: AdamW,
  data: { readonly train: Rows<Example>; readonly eval: Rows<Example> | undefined; readonly padId: number },
  args: TrainingArguments
): Objective => {
  const orders = new Map<number, Uint32Array>()
  return {
    microBatchesPerEpoch: microBatchesPerEpoch(data.train.length, args.batchSize),
    update: ({ step, epoch, firstMicroBatch, microBatches, lr }) => {
      const batches = Array.from({ length: microBatches }, (_, i) =>
        collate(microBatch(data.train, { seed: args.seed, epoch, batchSize: args.batchSize, shuffle: true }, firstMicroBatch + i, orders), data.padId))
      const labelTokens = batches.reduce((sum, b) => sum + b.labelTokens, 0)
      const { loss, norm } = model.update(optimizer, batches, {
        normalizer: Math.max(1, labelTokens),
        lr,
        maxGradNorm: args.maxGradNorm,
        noise: { key: { seed: args.seed, step }, ...(args.neftuneNoiseAlpha !== undefined && { neftuneAlpha: args.neftuneNoiseAlpha }) }
      })
      return { loss, norm, tokens: batches.reduce((sum, b) => sum + b.tokens, 0) }
    },
    evaluate: data.eval === undefined
      ? undefined
      : Effect.map(evalLoss((batch) => model.evalLoss(batch), data.eval, { batchSize: args.evalBatchSize, padTokenId: data.padId }), ({ loss }) => ({ eval_loss: loss }))
  }
}

const mean = (rows: ReadonlyArray<Readonly<Record<string, number>>>): Record<string, number> => {
  const sums: Record<string, number> = {}
  for (const row of rows) for (const [key, value] of Object.entries(row)) sums[key] = (sums[key] ?? 0) + value
  return Object.fromEntries(Object.entries(sums).map(([key, total]) => [key, round(total / rows.length)]))
}

export const train = (objective: Objective, args: TrainingArguments, start: TrainerState, hooks: TrainerHooks) =>
  Effect.gen(function* () {
    const plan = planStepsFor(args, objective.microBatchesPerEpoch)
    const history: Array<LogRow> = [...start.log_history]
    let state: TrainerState = { ...start, max_steps: plan.total }
    let lossSinceLog = 0
    let stepsSinceLog = 0
    let tokensSinceLog = 0
    let secondsSinceLog = 0
    const metricsSinceLog: Array<Readonly<Record<string, number>>> = []

    for (let step = start.global_step; step < plan.total; step++) {
      const epoch = Math.floor(step / plan.perEpoch)
      const update = step % plan.perEpoch
      const first = update * args.gradientAccumulationSteps
      const count = Math.min(args.gradientAccumulationSteps, plan.microBatches - first)
      const started = performance.now()
      const lr = args.learningRate * lrMultiplier(args.scheduler, step, plan.warmup, plan.total)
      const outcome = yield* Effect.try({
        try: () => objective.update({ step, epoch, firstMicroBatch: first, microBatches: count, lr }),
        catch: (error) => new StageError({ message: `training step ${step + 1} failed: ${(error as Error).message}`, cause: error })
      })
      const { loss, norm, tokens } = outcome
      if (!Number.isFinite(loss) || !Number.isFinite(norm)) {
        return yield* new StageError({
          message: `training diverged at step ${step + 1}: loss ${loss}, gradient norm ${norm}. The weights were not updated; the last checkpoint is kept. Lower learning_rate or max_grad_norm.`
        })
      }
      const seconds = (performance.now() - started) / 1000
      const done = step + 1
      const epochFloat = round(epoch + (update + 1) / plan.perEpoch, 4)
      lossSinceLog += loss
      stepsSinceLog += 1
      tokensSinceLog += tokens
      secondsSinceLog += seconds
      for (const row of outcome.metrics ?? []) metricsSinceLog.push(row)
      state = { ...state, global_step: done, adam_step: state.adam_step + 1, tokens_seen: state.tokens_seen + tokens, train_seconds: state.train_seconds + seconds }

      if ((args.loggingFirstStep && done === 1) || done % args.loggingSteps === 0 || done === plan.total) {
        const row: LogRow = {
          step: done,
          epoch: epochFloat,
          loss: round(lossSinceLog / stepsSinceLog),
          // As the Trainer logs it: the scheduler's rate after this update's step.
          learning_rate: args.learningRate * lrMultiplier(args.scheduler, done, plan.warmup, plan.total),
          grad_norm: round(norm),
          tokens_per_second: Math.round(tokensSinceLog / Math.max(secondsSinceLog, 1e-9)),
          ...(metricsSinceLog.length > 0 && { metrics: mean(metricsSinceLog) })
        }
        history.push(row)
        yield* hooks.log(row)
        lossSinceLog = stepsSinceLog = tokensSinceLog = secondsSinceLog = 0
        metricsSinceLog.length = 0
      }
      // As the Trainer's DefaultFlowCallback: evaluation at multiples of eval_steps only
      // (none forced at the end, so a `max_steps: 2` smoke run does not score the whole
      // eval split); a checkpoint at multiples of save_steps and at the end.
      if (objective.evaluate !== undefined && args.evalSteps !== undefined && done % args.evalSteps === 0) {
        const { eval_loss, ...metrics } = yield* objective.evaluate.pipe(
          Effect.mapError((error) => new StageError({ message: `evaluation at step ${done} failed: ${error.message}` }))
        )
        const row: LogRow = { step: done, epoch: epochFloat, eval_loss: round(eval_loss), ...(Object.keys(metrics).length > 0 && { metrics: mean([metrics]) }) }
        history.push(row)
        yield* hooks.log(row)
      }
      state = { ...state, log_history: [...history] }
      if (args.saveSteps !== undefined && (done % args.saveSteps === 0 || done === plan.total)) yield* hooks.save(state)
      yield* hooks.progress(done, plan.total)
      yield* Effect.yieldNow()
    }
    return state
  })

/**
 * One optimizer update on the tape over a whole model on the backend: forward/backward
 * over the micro-batches, clip, AdamW, weights updated where they lie. Returns the
 * update's loss and pre-clip norm. The reference for `LayerwiseModel.update`; takes no
 * noise (NEFTune and dropout are `lossAndGrads` options there).
 */
export const updateStep = (model: Qwen2, optimizer: AdamW, batches: ReadonlyArray<Batch>, options: Omit<UpdateOptions, "noise">): UpdateResult => {
  const { normalizer, lr } = options
  const decay = options.decay ?? decays
  const trainable = trainableNames(model)
  const sums = new Map<string, tf.Tensor>()
  let loss = 0
  const started = performance.now()
  try {
    for (const batch of batches) {
      const { tokens, labels } = toBatch(batch)
      const result = lossAndGrads(model, tokens, labels, { normalizer })
      loss += result.loss
      for (const [name, grad] of result.grads) {
        const previous = sums.get(name)
        if (previous === undefined) sums.set(name, grad)
        else {
          sums.set(name, tf.add(previous, grad))
          previous.dispose()
          grad.dispose()
        }
      }
    }
    const gradDone = performance.now()
    const gradSeconds = (gradDone - started) / 1000
    // The gradients are read where they lie (no copies), and clipping is a coefficient
    // AdamW applies as it reads them.
    let squares = 0
    for (const grad of sums.values()) squares += squaredNorm(readView(grad))
    const norm = Math.sqrt(squares)
    if (!Number.isFinite(loss) || !Number.isFinite(norm)) return { loss, norm, gradSeconds, optimizerSeconds: 0 }
    const scale = clipCoefficient(norm, options.maxGradNorm)
    optimizer.beginStep()
    for (const [name, variable] of model.params) {
      const grad = sums.get(name)
      if (grad === undefined || !trainable.has(name)) continue
      // The view is taken inside: making the weight writable may allocate.
      updateWeightInPlace(variable, (values) => optimizer.update(name, values, readView(grad), lr, decay(name), scale))
    }
    return { loss, norm, gradSeconds, optimizerSeconds: (performance.now() - gradDone) / 1000 }
  } finally {
    sums.forEach((grad) => grad.dispose())
  }
}

export const newOptimizer = (args: TrainingArguments) =>
  new AdamW({ beta1: args.adamBeta1, beta2: args.adamBeta2, eps: args.adamEpsilon, weightDecay: args.weightDecay })
