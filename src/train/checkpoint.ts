/**
 * Trainer checkpoints, as the HF Trainer lays them out: `checkpoint-<step>/` holds a
 * loadable model folder (with LoRA, an adapter folder, as the Trainer saves a PEFT
 * model), the optimizer's moments and the trainer state. Each is written under a
 * temporary name and renamed when complete, so a crash never leaves a checkpoint that
 * looks whole; resuming picks the newest complete one.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Either, Schema } from "effect"
import { StageError } from "../errors.ts"
import { type AdapterBase, writeAdapterFolder } from "../model/adapter-folder.ts"
import { saveHostFolder } from "../model/hf-folder.ts"
import { openSafetensors, writeSafetensors } from "../model/safetensors.ts"
import type { AdamW } from "./adamw.ts"
import type { LayerwiseModel } from "./layerwise.ts"
import { loadTrainee, type TrainingStart } from "./setup.ts"

const OPTIMIZER_FILE = "optimizer.safetensors"
const STATE_FILE = "trainer_state.json"

/** One row of the log: what the Trainer's `log_history` holds. */
export interface LogRow {
  readonly step: number
  readonly epoch: number
  readonly loss?: number
  readonly learning_rate?: number
  readonly grad_norm?: number
  readonly eval_loss?: number
  readonly tokens_per_second?: number
  /** An objective's own metrics (DPO's `rewards/chosen`, …; `eval_`-prefixed at eval steps), means since the last log. */
  readonly metrics?: Readonly<Record<string, number>>
}

export interface TrainerState {
  readonly global_step: number
  readonly max_steps: number
  readonly adam_step: number
  readonly log_history: ReadonlyArray<LogRow>
  readonly best_metric: number | null
  readonly best_model_checkpoint: string | null
  /** Tokens trained on and seconds spent so far, across resumes. */
  readonly tokens_seen: number
  readonly train_seconds: number
}

const failure = (what: string) => (cause: { readonly message: string }) =>
  new StageError({ message: `${what}: ${cause.message}`, cause })

export const checkpointName = (step: number) => `checkpoint-${step}`

/** Where a trained model's folder takes its tokenizer files, and (LoRA) the base its adapter names. */
export interface ModelFolderOptions {
  readonly copyFrom: string | undefined
  readonly adapterBase: AdapterBase | undefined
}

/** The trained model as a folder: the whole model, or the adapter alone with LoRA. */
export const saveTrainedModel = (model: LayerwiseModel, dir: string, options: ModelFolderOptions) =>
  model.adapter === undefined
    ? saveHostFolder(model.config, model.weights, dir, options.copyFrom === undefined ? {} : { copyFrom: options.copyFrom })
    : writeAdapterFolder(dir, model.adapter, model.weights, { base: options.adapterBase, ...(options.copyFrom !== undefined && { copyFrom: options.copyFrom }) })

/** Writes `checkpoint-<step>` whole, or not at all. */
export const saveCheckpoint = (
  workDir: string,
  model: LayerwiseModel,
  optimizer: AdamW,
  state: TrainerState,
  folder: ModelFolderOptions
) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const final = path.join(workDir, checkpointName(state.global_step))
    const partial = `${final}.partial`
    yield* fs.remove(partial, { recursive: true }).pipe(Effect.ignore)
    yield* saveTrainedModel(model, partial, folder)
    const moments = [...optimizer.state].flatMap(([name, { m, v }]) => [
      { name: `exp_avg.${name}`, shape: [m.length], data: m },
      { name: `exp_avg_sq.${name}`, shape: [v.length], data: v }
    ])
    yield* writeSafetensors(path.join(partial, OPTIMIZER_FILE), moments, { format: "pt", adam_step: String(optimizer.step) })
    yield* fs.writeFileString(path.join(partial, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`)
    yield* fs.remove(final, { recursive: true }).pipe(Effect.ignore)
    yield* fs.rename(partial, final)
    return final
  }).pipe(Effect.mapError(failure("cannot save the checkpoint")))

/** The complete checkpoints in `workDir` (those with a trainer state), newest first. */
const checkpointsNewestFirst = (workDir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const names = yield* fs.readDirectory(workDir).pipe(Effect.orElseSucceed(() => [] as Array<string>))
    const steps = names.flatMap((name) => {
      const match = /^checkpoint-(\d+)$/.exec(name)
      return match ? [Number(match[1])] : []
    }).sort((a, b) => b - a)
    const found: Array<string> = []
    for (const step of steps) {
      const dir = path.join(workDir, checkpointName(step))
      if (yield* fs.exists(path.join(dir, STATE_FILE)).pipe(Effect.orElseSucceed(() => false))) found.push(dir)
    }
    return found
  })

const Num = Schema.Number
const TrainerStateSchema = Schema.Struct({
  global_step: Schema.NonNegativeInt,
  max_steps: Schema.NonNegativeInt,
  adam_step: Schema.NonNegativeInt,
  log_history: Schema.Array(Schema.Struct({
    step: Num,
    epoch: Num,
    loss: Schema.optionalWith(Num, { exact: true }),
    learning_rate: Schema.optionalWith(Num, { exact: true }),
    grad_norm: Schema.optionalWith(Num, { exact: true }),
    eval_loss: Schema.optionalWith(Num, { exact: true }),
    tokens_per_second: Schema.optionalWith(Num, { exact: true }),
    metrics: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Num }), { exact: true })
  })),
  best_metric: Schema.NullOr(Num),
  best_model_checkpoint: Schema.NullOr(Schema.String.pipe(Schema.pattern(/^checkpoint-\d+$/))),
  tokens_seen: Num,
  train_seconds: Num
})

const readState = (dir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(`${dir}/${STATE_FILE}`)
    const json = yield* Effect.try(() => JSON.parse(text) as unknown)
    return yield* Schema.decodeUnknown(TrainerStateSchema, { onExcessProperty: "ignore" })(json)
  }).pipe(Effect.mapError((e) => new StageError({ message: `cannot read ${STATE_FILE} in ${dir}: ${firstLine(e)}` })))

const firstLine = (e: unknown): string => String((e as { message?: string }).message ?? e).split("\n")[0]!

export interface Resumed {
  readonly model: LayerwiseModel
  /** The checkpoint training goes on from, and its state; none when starting over. */
  readonly from: { readonly dir: string; readonly state: TrainerState } | undefined
}

/**
 * The model to train: from the newest checkpoint that loads whole (its state, its
 * weights and the optimizer's moments), else from the start. A damaged checkpoint is
 * skipped, and said so, instead of failing every run until the work folder is deleted.
 */
export const resumeOrStart = (workDir: string, start: TrainingStart, seed: number, optimizer: AdamW, log: (message: string) => Effect.Effect<void>) =>
  Effect.gen(function* () {
    const path = yield* Path.Path
    const candidates = yield* checkpointsNewestFirst(workDir)
    for (const [i, dir] of candidates.entries()) {
      const attempt = yield* Effect.either(Effect.gen(function* () {
        const state = yield* readState(dir)
        const model = yield* loadTrainee(start, seed, dir)
        optimizer.step = 0
        optimizer.state.clear()
        yield* restoreOptimizer(dir, optimizer, model).pipe(Effect.tapError(() => Effect.sync(() => model.dispose())))
        return { model, from: { dir, state } } satisfies Resumed
      }))
      if (Either.isRight(attempt)) return attempt.right
      optimizer.step = 0
      optimizer.state.clear()
      const next = candidates[i + 1]
      yield* log(`${path.basename(dir)} is damaged (${attempt.left.message}): ${next === undefined ? "starting over" : `falling back to ${path.basename(next)}`}`)
    }
    return { model: yield* loadTrainee(start, seed, undefined), from: undefined } satisfies Resumed
  })

/** Restores the optimizer's moments and step count from a checkpoint; each moment must fit its parameter. */
const restoreOptimizer = (dir: string, optimizer: AdamW, model: LayerwiseModel) =>
  Effect.scoped(
    Effect.gen(function* () {
      const reader = yield* openSafetensors(`${dir}/${OPTIMIZER_FILE}`)
      const step = Number(reader.header.metadata.adam_step ?? Number.NaN)
      if (!Number.isSafeInteger(step) || step < 0) return yield* Effect.fail({ message: `its adam_step is ${reader.header.metadata.adam_step}` })
      optimizer.step = step
      for (const name of model.trainable) {
        if (!reader.header.tensors.has(`exp_avg.${name}`)) continue
        const size = model.weights.get(name)?.length
        const m = yield* reader.read(`exp_avg.${name}`)
        const v = yield* reader.read(`exp_avg_sq.${name}`)
        if (m.length !== size || v.length !== size) return yield* Effect.fail({ message: `the moments of ${name} hold ${m.length} values, the parameter ${size}` })
        optimizer.state.set(name, { m, v })
      }
    })
  ).pipe(Effect.mapError(failure(`cannot restore the optimizer from ${dir}`)))

/**
 * Keeps the newest `limit` checkpoints, never deleting the best one (the Trainer's
 * rotation with `load_best_model_at_end`).
 */
export const rotateCheckpoints = (workDir: string, limit: number | undefined, best: string | null) =>
  Effect.gen(function* () {
    if (limit === undefined) return
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const names = yield* fs.readDirectory(workDir)
    const steps = names.flatMap((name) => {
      const match = /^checkpoint-(\d+)$/.exec(name)
      return match ? [Number(match[1])] : []
    }).sort((a, b) => a - b)
    const dirs = steps.map((step) => path.join(workDir, checkpointName(step)))
    const keep = new Set(dirs.slice(-limit))
    if (best !== null) keep.add(best)
    for (const dir of dirs) if (!keep.has(dir)) yield* fs.remove(dir, { recursive: true })
  }).pipe(Effect.mapError(failure("cannot rotate checkpoints")))
