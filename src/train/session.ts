/**
 * One training run of the `train` stage, as the HF Trainer's `train()` goes: resume from
 * the newest checkpoint that loads (or start), run the loop with its checkpoints and
 * best-model bookkeeping, go back to the best checkpoint if asked, and write what the
 * stage outputs: the model folder (whole, merged, or a PEFT adapter), the metrics
 * table, the loss chart and trainer_state.json.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect } from "effect"
import { encodeIpcFile } from "../arrow-file.ts"
import type { FilesArtifact, ModelArtifact, Outputs } from "../artifact.ts"
import { StageError } from "../errors.ts"
import { saveHostFolder } from "../model/hf-folder.ts"
import { mergeAdapter, targetNames } from "../model/lora.ts"
import type { AdamW } from "./adamw.ts"
import { checkpointName, type LogRow, type ModelFolderOptions, resumeOrStart, rotateCheckpoints, saveCheckpoint, saveTrainedModel, type TrainerState } from "./checkpoint.ts"
import type { LayerwiseModel } from "./layerwise.ts"
import { formatRow, lastLogged, lossChart, metricsTable } from "./report.ts"
import { initialWeights, restoreTrained, type TrainingStart } from "./setup.ts"
import { newOptimizer, type Objective, planStepsFor, train, type TrainingArguments } from "./trainer.ts"

/** What "the best model" means (TrainingArguments' names). */
export interface BestModel {
  readonly loadAtEnd: boolean
  readonly metric: "eval_loss" | "loss"
  readonly greaterIsBetter: boolean
}

export interface SessionOptions {
  readonly start: TrainingStart
  readonly args: TrainingArguments
  /** What the loop trains for, on the model as loaded (or resumed): `supervised`, or DPO's `preference`. */
  readonly objective: (model: LayerwiseModel, optimizer: AdamW) => Objective
  /** What it trains on, for the log: "100 examples, evaluating on 20". */
  readonly trainsOn: string
  /** Outputs the stage adds to the model and the report (DPO's reference log-probabilities). */
  readonly extraOutputs?: Pick<Outputs, "dataset">
  readonly best: BestModel
  readonly saveTotalLimit: number | undefined
  /** Write the merged model instead of the adapter. */
  readonly merge: boolean
  readonly workDir: string
  /** Called once a checkpoint is written whole (and old ones rotated out). */
  readonly checkpointed: Effect.Effect<void>
  readonly outDir: string
  readonly log: (message: string) => Effect.Effect<void>
  readonly progress: (step: number, total: number, unit: string) => Effect.Effect<void>
}

const stageError = (e: { readonly message: string }) => new StageError({ message: e.message })

/** The training log, a JSON line a row, in the work folder while the stage runs. */
export const LIVE_LOG = "live-log.jsonl"

/** Trains, and writes the stage's outputs into `outDir`; the model is disposed however it ends. */
export const trainSession = (options: SessionOptions) =>
  Effect.gen(function* () {
    const { start, args, best, log } = options
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const optimizer = newOptimizer(args)
    const folder: ModelFolderOptions = { copyFrom: start.base.copyFrom, adapterBase: start.base.kind === "folder" ? start.base.record : undefined }
    return yield* Effect.acquireUseRelease(
      resumeOrStart(options.workDir, start, args.seed, optimizer, log),
      ({ model, from }) =>
        Effect.gen(function* () {
          const objective = options.objective(model, optimizer)
          const plan = planStepsFor(args, objective.microBatchesPerEpoch)
          const fresh: TrainerState = {
            global_step: 0,
            max_steps: plan.total,
            adam_step: 0,
            log_history: [],
            best_metric: null,
            best_model_checkpoint: null,
            tokens_seen: 0,
            train_seconds: 0
          }
          let begin = from?.state ?? fresh
          if (from !== undefined) {
            yield* log(`resuming from ${path.basename(from.dir)} (step ${begin.global_step} of ${plan.total})`)
          } else {
            yield* log(`training ${start.description} on ${options.trainsOn}: ${plan.total} steps (${plan.perEpoch} per epoch), warmup ${plan.warmup}`)
          }
          if (model.adapter !== undefined) yield* log(describeAdapter(model))
          let lastLoss: number | undefined
          const metric = (row: LogRow) => (best.metric === "eval_loss" ? row.eval_loss : row.loss)
          const better = (value: number, current: number | null) => current === null || (best.greaterIsBetter ? value > current : value < current)
          const save = (state: TrainerState) =>
            Effect.gen(function* () {
              const latest = [...state.log_history].reverse().find((row) => row.step === state.global_step && metric(row) !== undefined)
              const value = latest === undefined ? undefined : metric(latest)!
              const withBest = value !== undefined && better(value, state.best_metric)
                ? { ...state, best_metric: value, best_model_checkpoint: checkpointName(state.global_step) }
                : state
              yield* saveCheckpoint(options.workDir, model, optimizer, withBest, folder)
              const keep = withBest.best_model_checkpoint === null ? null : path.join(options.workDir, withBest.best_model_checkpoint)
              yield* rotateCheckpoints(options.workDir, options.saveTotalLimit, keep)
              yield* options.checkpointed
              begin = withBest
            })
          const final = yield* train(objective, args, begin, {
            save: (state) => save(state).pipe(Effect.provideService(FileSystem.FileSystem, fs), Effect.provideService(Path.Path, path)),
            log: (row) => {
              if (row.loss !== undefined) lastLoss = row.loss
              // The log as it grows, for `pipeline ui`'s live curves (the report is written at the end).
              const live = fs.writeFileString(path.join(options.workDir, LIVE_LOG), `${JSON.stringify(row)}\n`, { flag: "a" }).pipe(Effect.ignore)
              return Effect.zipRight(live, log(formatRow(row)))
            },
            progress: (step, total) => options.progress(step, total, lastLoss === undefined ? "steps" : `steps, loss ${lastLoss.toFixed(4)}`)
          })
          const state: TrainerState = { ...final, best_metric: begin.best_metric, best_model_checkpoint: begin.best_model_checkpoint }
          if (best.loadAtEnd && state.best_model_checkpoint !== null) {
            yield* restoreTrained(model, path.join(options.workDir, state.best_model_checkpoint))
            yield* log(`loaded the best model: ${state.best_model_checkpoint} (${best.metric} ${state.best_metric})`)
          }
          return yield* writeOutputs(model, state, options, folder)
        }),
      ({ model }) => Effect.sync(() => model.dispose())
    )
  })

/** The stage's outputs: the model folder, and the report beside it. */
const writeOutputs = (model: LayerwiseModel, state: TrainerState, options: SessionOptions, folder: ModelFolderOptions) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const { start } = options
    const modelDir = path.join(options.outDir, "model")
    if (options.merge && model.adapter !== undefined) {
      mergeAdapter(model.weights, model.adapter, model.weights)
      yield* saveHostFolder(start.base.config, model.weights, modelDir, { copyFrom: start.base.copyFrom }).pipe(Effect.mapError(stageError))
    } else {
      yield* saveTrainedModel(model, modelDir, folder).pipe(Effect.mapError(stageError))
    }
    const filesDir = path.join(options.outDir, "files")
    yield* fs.makeDirectory(filesDir, { recursive: true })
    yield* fs.writeFile(path.join(filesDir, "metrics.arrow"), encodeIpcFile(metricsTable(state.log_history)))
    yield* fs.writeFileString(path.join(filesDir, "loss.svg"), lossChart(state.log_history))
    // The model training started from, for evaluate's `compare_base`: a from-scratch run
    // keeps its (seeded, so re-creatable) initial weights beside the metrics.
    if (start.base.kind === "init") {
      const initial = initialWeights(start.base.config, options.args.seed)
      yield* saveHostFolder(start.base.config, initial, path.join(filesDir, "initial_model"), { copyFrom: start.base.copyFrom }).pipe(Effect.mapError(stageError))
    }
    const record = { ...state, base_model: start.baseModelRecord }
    yield* fs.writeFileString(path.join(filesDir, "trainer_state.json"), `${JSON.stringify(record, null, 2)}\n`)
    const finalLoss = lastLogged(state.log_history, "loss")
    const lastEval = lastLogged(state.log_history, "eval_loss")
    const files = ["metrics.arrow", "loss.svg", "trainer_state.json", ...(start.base.kind === "init" ? ["initial_model"] : [])]
    return {
      outputs: {
        model: { kind: "model", dir: modelDir } satisfies ModelArtifact,
        files: { kind: "files", dir: filesDir, files } satisfies FilesArtifact,
        ...options.extraOutputs
      },
      metrics: {
        steps: state.global_step,
        ...(finalLoss !== undefined && { loss: finalLoss }),
        ...(lastEval !== undefined && { eval_loss: lastEval }),
        ...(state.best_metric !== null && { best_metric: state.best_metric }),
        // An objective's own metrics, as last logged (DPO's rewards/margins, eval_rewards/margins, …).
        ...state.log_history.reduce<Record<string, number>>((last, row) => Object.assign(last, row.metrics), {}),
        tokens_per_second: Math.round(state.tokens_seen / Math.max(state.train_seconds, 1e-9)),
        tokens: state.tokens_seen,
        train_seconds: Math.round(state.train_seconds * 1000) / 1000,
        trainable_parameters: model.trainableCount
      }
    }
  })

/** "LoRA r 16 on 168 layers (q_proj, …), scaling 2: 8,798,208 trainable parameters, 1.75% of 502,830,976". */
const describeAdapter = (model: LayerwiseModel): string => {
  const plan = model.adapter!
  const total = [...model.weights.values()].reduce((sum, values) => sum + values.length, 0)
  const ranks = [...new Set(plan.modules.map((m) => m.r))].join("/")
  const scalings = [...new Set(plan.modules.map((m) => m.scaling))].join("/")
  const share = `${(100 * model.trainableCount / total).toFixed(2)}% of ${total.toLocaleString("en-US")}`
  return `LoRA r ${ranks} on ${plan.modules.length} layers (${targetNames(plan).join(", ")}), scaling ${scalings}: ${model.trainableCount.toLocaleString("en-US")} trainable parameters, ${share}`
}
