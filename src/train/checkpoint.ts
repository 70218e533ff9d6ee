/**
 * Trainer checkpoints, as the HF Trainer lays them out: `checkpoint-<step>/` holds a
 * loadable model folder (with LoRA, an adapter folder, as the Trainer saves a PEFT
 * model), the optimizer's moments and the trainer state. Each is written under a
 * temporary name and renamed when complete, so a crash never leaves a checkpoint that
 * looks whole; resuming picks the newest complete one.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import { type AdapterBase, writeAdapterFolder } from "../model/adapter-folder.ts"
import { saveHostFolder } from "../model/hf-folder.ts"
import { openSafetensors, writeSafetensors } from "../model/safetensors.ts"
import type { AdamW } from "./adamw.ts"
import type { LayerwiseModel } from "./layerwise.ts"

export const OPTIMIZER_FILE = "optimizer.safetensors"
export const STATE_FILE = "trainer_state.json"

/** One row of the log: what the Trainer's `log_history` holds. */
export interface LogRow {
  readonly step: number
  readonly epoch: number
  readonly loss?: number
  readonly learning_rate?: number
  readonly grad_norm?: number
  readonly eval_loss?: number
  readonly tokens_per_second?: number
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

/** The newest complete checkpoint in `workDir`, if any. */
export const latestCheckpoint = (workDir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const names = yield* fs.readDirectory(workDir).pipe(Effect.orElseSucceed(() => [] as Array<string>))
    const steps = names.flatMap((name) => {
      const match = /^checkpoint-(\d+)$/.exec(name)
      return match ? [Number(match[1])] : []
    }).sort((a, b) => b - a)
    for (const step of steps) {
      const dir = path.join(workDir, checkpointName(step))
      if (yield* fs.exists(path.join(dir, STATE_FILE)).pipe(Effect.orElseSucceed(() => false))) return dir
    }
    return undefined
  })

export const readState = (dir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(`${dir}/${STATE_FILE}`)
    return JSON.parse(text) as TrainerState
  }).pipe(Effect.mapError((e) => new StageError({ message: `cannot read the checkpoint ${dir}: ${String((e as { message?: string }).message ?? e)}` })))

/** Restores the optimizer's moments and step count from a checkpoint. */
export const restoreOptimizer = (dir: string, optimizer: AdamW, names: ReadonlyArray<string>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const reader = yield* openSafetensors(`${dir}/${OPTIMIZER_FILE}`)
      optimizer.step = Number(reader.header.metadata.adam_step ?? 0)
      for (const name of names) {
        if (!reader.header.tensors.has(`exp_avg.${name}`)) continue
        optimizer.state.set(name, { m: yield* reader.read(`exp_avg.${name}`), v: yield* reader.read(`exp_avg_sq.${name}`) })
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
