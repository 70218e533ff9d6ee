/**
 * `train`: fine-tunes (or trains from scratch) a Qwen2/Llama model on a tokenized
 * dataset with the Hugging Face Trainer's semantics. Every TrainingArguments
 * setting the tutorial uses has a key of the same name and default. Checkpoints go
 * to the stage's work folder, so an interrupted run resumes where it stopped; the
 * finished model is a Hugging Face folder that transformers loads as it is.
 */
import { FileSystem, Path } from "@effect/platform"
import { Field, Float64, Int32, Schema as ArrowSchema, Table, vectorFromArray } from "apache-arrow"
import { Effect, Schema } from "effect"
import { encodeIpcFile } from "../src/arrow.ts"
import { checkMemoryFit } from "../src/backend/memory.ts"
import { describeBackend, ensureBackend } from "../src/backend/runtime.ts"
import { StageError } from "../src/errors.ts"
import { decodeConfig } from "../src/model/config.ts"
import { loadHfFolder, readHfConfig, saveHfFolder } from "../src/model/hf-folder.ts"
import { disposeModel, initModel, type Qwen2 } from "../src/model/qwen2.ts"
import { localModelFiles, modelRevision, resolveModelDir, upstreamModelDir } from "../src/model/source.ts"
import { lineChart } from "../src/plot.ts"
import { defineStage, type StageContext } from "../src/stage.ts"
import { loadTokenizer, resolveTokenizerDir } from "../src/tokenizer.ts"
import { latestCheckpoint, type LogRow, readState, restoreOptimizer, rotateCheckpoints, saveCheckpoint, type TrainerState } from "../src/train/checkpoint.ts"
import { loadExamples } from "../src/train/data.ts"
import { newOptimizer, planSteps, train, type TrainingArguments } from "../src/train/trainer.ts"

const Positive = Schema.Number.pipe(Schema.positive())
const Count = Schema.Int.pipe(Schema.positive())
const NonNegative = Schema.Number.pipe(Schema.nonNegative())
const withDefault = <A, I>(schema: Schema.Schema<A, I>, value: A, description: string) =>
  Schema.optionalWith(schema, { default: () => value }).annotations({ description })

const Init = Schema.Struct({
  vocab_size: Schema.optional(Count).annotations({
    description: "Rows of the embedding; defaults to the tokenizer's vocabulary. Qwen2 checkpoints pad it (151936 for 151665 tokens) to a multiple of 128"
  }),
  hidden_size: Count,
  intermediate_size: Count,
  num_hidden_layers: Count,
  num_attention_heads: Count,
  num_key_value_heads: Count,
  max_position_embeddings: withDefault(Count, 1024, "Longest sequence the rotary tables cover"),
  rope_theta: withDefault(Positive, 10000, "Rotary base"),
  rms_norm_eps: withDefault(Positive, 1e-6, "RMSNorm epsilon"),
  initializer_range: withDefault(Positive, 0.02, "Std of the normal initialisation"),
  tie_word_embeddings: withDefault(Schema.Boolean, true, "Share the embedding with the LM head")
})

const Params = Schema.Struct({
  model: Schema.optional(Schema.String).annotations({ description: "The base model: a hub id (Qwen/Qwen2.5-0.5B) or a local Hugging Face folder. Or take it from an upstream stage, or use `init`." }),
  init: Schema.optional(Init).annotations({ description: "Train from scratch: a Qwen2 config (the vocabulary comes from `tokenizer`)" }),
  tokenizer: Schema.optional(Schema.String).annotations({ description: "With `init`: the tokenizer folder or hub id (its vocabulary sizes the model; its files are saved with it)" }),
  split: withDefault(Schema.String, "train", "The split to train on"),
  eval_split: withDefault(Schema.String, "test", "The split for eval_loss (skipped if the dataset has none)"),
  epochs: withDefault(Positive, 3, "num_train_epochs (fractions allowed)"),
  max_steps: withDefault(Schema.Int, -1, "Stop after this many optimizer steps (overrides epochs when > 0)"),
  batch_size: withDefault(Count, 8, "per_device_train_batch_size"),
  eval_batch_size: withDefault(Count, 8, "per_device_eval_batch_size"),
  gradient_accumulation_steps: withDefault(Count, 1, "Micro-batches per optimizer step"),
  learning_rate: withDefault(Positive, 5e-5, "Peak learning rate"),
  weight_decay: withDefault(NonNegative, 0, "AdamW decoupled weight decay (biases and norms get none)"),
  max_grad_norm: withDefault(Positive, 1, "Clip gradients to this global norm"),
  warmup_ratio: withDefault(Schema.Number.pipe(Schema.between(0, 1)), 0, "Fraction of steps to warm up over"),
  warmup_steps: withDefault(Schema.Int.pipe(Schema.nonNegative()), 0, "Warm-up steps (overrides warmup_ratio when > 0)"),
  lr_scheduler: withDefault(Schema.Literal("linear", "cosine", "constant", "constant_with_warmup"), "linear", "lr_scheduler_type"),
  adam_beta1: withDefault(Schema.Number.pipe(Schema.between(0, 1)), 0.9, "AdamW beta1"),
  adam_beta2: withDefault(Schema.Number.pipe(Schema.between(0, 1)), 0.999, "AdamW beta2"),
  adam_epsilon: withDefault(Positive, 1e-8, "AdamW epsilon"),
  eval_steps: Schema.optional(Count).annotations({ description: "Compute eval_loss every N steps (and at the end)" }),
  save_steps: withDefault(Count, 500, "Checkpoint every N steps (and at the end)"),
  save_total_limit: Schema.optional(Count).annotations({ description: "Keep at most N checkpoints (never deleting the best)" }),
  load_best_model_at_end: withDefault(Schema.Boolean, false, "Finish with the best checkpoint's weights"),
  metric_for_best_model: withDefault(Schema.Literal("eval_loss", "loss"), "eval_loss", "What `best` means"),
  greater_is_better: withDefault(Schema.Boolean, false, "Whether a larger metric is better"),
  logging_steps: withDefault(Count, 500, "Log the mean loss every N steps"),
  logging_first_step: withDefault(Schema.Boolean, false, "Also log the first step"),
  seed: withDefault(Schema.Int.pipe(Schema.nonNegative()), 42, "Seeds initialisation and the data order")
}).pipe(
  Schema.filter((p) => {
    const sources = [p.model !== undefined, p.init !== undefined].filter(Boolean).length
    if (sources > 1) return "give `model` (a base model) or `init` (from scratch), not both"
    if (p.init !== undefined && p.tokenizer === undefined) return "`init` needs `tokenizer`: its vocabulary sizes the model"
    if (p.init !== undefined && p.init.num_attention_heads % p.init.num_key_value_heads !== 0) return "init.num_attention_heads must be a multiple of init.num_key_value_heads"
    if (p.init !== undefined && p.init.hidden_size % p.init.num_attention_heads !== 0) return "init.hidden_size must be a multiple of init.num_attention_heads"
    if (p.load_best_model_at_end && (p.eval_steps === undefined ? p.metric_for_best_model === "eval_loss" : p.save_steps % p.eval_steps !== 0)) {
      return "load_best_model_at_end needs eval_steps, and save_steps must be a multiple of it (as in the Trainer)"
    }
    return true
  })
)

type Params = typeof Params.Type

const toArgs = (p: Params): TrainingArguments => ({
  epochs: p.epochs,
  maxSteps: Math.max(0, p.max_steps),
  batchSize: p.batch_size,
  evalBatchSize: p.eval_batch_size,
  gradientAccumulationSteps: p.gradient_accumulation_steps,
  learningRate: p.learning_rate,
  weightDecay: p.weight_decay,
  maxGradNorm: p.max_grad_norm,
  warmupRatio: p.warmup_ratio,
  warmupSteps: p.warmup_steps,
  scheduler: p.lr_scheduler,
  adamBeta1: p.adam_beta1,
  adamBeta2: p.adam_beta2,
  adamEpsilon: p.adam_epsilon,
  evalSteps: p.eval_steps,
  saveSteps: p.save_steps,
  loggingSteps: p.logging_steps,
  loggingFirstStep: p.logging_first_step,
  seed: p.seed
})

const modelError = (e: { readonly message: string }) => new StageError({ message: e.message })

/** The base model: a folder to load, or a config to initialise. `copyFrom` supplies tokenizer files. */
const baseModel = (ctx: StageContext<Params>) =>
  Effect.gen(function* () {
    const { params } = ctx
    const upstream = upstreamModelDir(ctx.inputs)
    if (params.init !== undefined) {
      const tokenizerDir = yield* resolveTokenizerDir(params.tokenizer!, ctx.baseDir).pipe(Effect.mapError(modelError))
      const tokenizer = yield* loadTokenizer(tokenizerDir).pipe(Effect.mapError(modelError))
      if (params.init.vocab_size !== undefined && params.init.vocab_size < tokenizer.vocabSize) {
        return yield* new StageError({
          message: `${ctx.id}.init.vocab_size is ${params.init.vocab_size}, but the tokenizer has ${tokenizer.vocabSize} tokens: give at least ${tokenizer.vocabSize}, or leave it out`
        })
      }
      const config = yield* decodeConfig({
        architectures: ["Qwen2ForCausalLM"],
        model_type: "qwen2",
        hidden_act: "silu",
        bos_token_id: tokenizer.bosTokenId ?? null,
        eos_token_id: tokenizer.eosTokenId ?? null,
        pad_token_id: tokenizer.padTokenId ?? null,
        ...params.init,
        vocab_size: params.init.vocab_size ?? tokenizer.vocabSize
      }, `${ctx.id}.init`).pipe(Effect.mapError(modelError))
      return { kind: "init" as const, config, copyFrom: tokenizerDir, description: `a new model (${params.init.num_hidden_layers} layers, hidden ${params.init.hidden_size}, vocab ${config.vocab_size})` }
    }
    const dir = upstream ?? (params.model === undefined ? undefined : yield* resolveModelDir(params.model, ctx.baseDir))
    if (dir === undefined) {
      return yield* new StageError({ message: "no model to train: give `model` (a hub id or folder), `init` (from scratch), or a stage in `needs` that produces a model" })
    }
    const { config } = yield* readHfConfig(dir).pipe(Effect.mapError(modelError))
    return { kind: "folder" as const, config, copyFrom: dir, dir, description: params.model ?? dir }
  })

const splitOf = (ctx: StageContext<Params>, split: string) =>
  Effect.gen(function* () {
    const dataset = ctx.inputs.find((input) => input.outputs.dataset !== undefined)?.outputs.dataset
    if (dataset === undefined) return yield* new StageError({ message: "train needs a tokenized dataset in `needs`" })
    return dataset.splits[split] === undefined ? undefined : yield* loadExamples(dataset, split)
  })

const formatRow = (row: LogRow): string =>
  row.eval_loss !== undefined
    ? `step ${row.step} (epoch ${row.epoch}): eval_loss ${row.eval_loss.toFixed(4)}`
    : `step ${row.step} (epoch ${row.epoch}): loss ${row.loss?.toFixed(4)}, lr ${row.learning_rate?.toExponential(2)}, grad_norm ${row.grad_norm?.toFixed(3)}, ${row.tokens_per_second} tok/s`

const metricsTable = (history: ReadonlyArray<LogRow>): Table => {
  const columns = ["step", "epoch", "loss", "learning_rate", "grad_norm", "eval_loss", "tokens_per_second"] as const
  const schema = new ArrowSchema(columns.map((name) => new Field(name, name === "step" ? new Int32() : new Float64(), name !== "step")))
  return new Table(schema, Object.fromEntries(columns.map((name, i) =>
    [name, vectorFromArray(history.map((row) => row[name] ?? null), schema.fields[i]!.type)]
  )))
}

const lossChart = (history: ReadonlyArray<LogRow>) =>
  lineChart("Loss", "step", "loss", [
    { name: "train loss", color: "#1f77b4", points: history.flatMap((r) => (r.loss === undefined ? [] : [[r.step, r.loss] as const])) },
    { name: "eval loss", color: "#d62728", points: history.flatMap((r) => (r.eval_loss === undefined ? [] : [[r.step, r.eval_loss] as const])) }
  ])

export default defineStage({
  name: "train",
  version: "1",
  description: "Fine-tunes or trains a Qwen2/Llama model with the Hugging Face Trainer's semantics; resumable",
  params: Params,
  accepts: { kinds: ["dataset", "model"], min: 1, max: 2 },
  produces: ["model", "files"],
  inputFiles: (params, baseDir) => (params.model === undefined ? Effect.succeed([]) : localModelFiles(params.model, baseDir)),
  externalInputs: (params, baseDir) => (params.model === undefined ? Effect.succeed({}) : modelRevision(params.model, baseDir)),
  run: Effect.fn("Train.run")(function* (ctx) {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const backend = yield* ensureBackend
    yield* ctx.log(describeBackend(backend))
    const args = toArgs(ctx.params)
    const trainExamples = yield* splitOf(ctx, ctx.params.split)
    if (trainExamples === undefined || trainExamples.length === 0) {
      return yield* new StageError({ message: `the dataset has no rows in split "${ctx.params.split}"` })
    }
    const evalExamples = yield* splitOf(ctx, ctx.params.eval_split)
    const base = yield* baseModel(ctx)
    const maxLength = Math.max(...trainExamples.map((e) => e.inputIds.length))
    yield* checkMemoryFit(base.config, backend.name, { training: true, tokensPerStep: ctx.params.batch_size * maxLength, seqLen: maxLength }).pipe(Effect.mapError(modelError))
    const padId = base.config.pad_token_id ?? (Array.isArray(base.config.eos_token_id) ? base.config.eos_token_id[0] : base.config.eos_token_id) ?? 0
    const plan = planSteps(args, trainExamples.length)
    const optimizer = newOptimizer(args)
    const resumeFrom = yield* latestCheckpoint(ctx.workDir)
    let model: Qwen2
    let start: TrainerState = { global_step: 0, max_steps: plan.total, adam_step: 0, log_history: [], best_metric: null, best_model_checkpoint: null, tokens_seen: 0, train_seconds: 0 }
    if (resumeFrom !== undefined) {
      model = (yield* loadHfFolder(resumeFrom).pipe(Effect.mapError(modelError))).model
      start = yield* readState(resumeFrom)
      yield* restoreOptimizer(resumeFrom, optimizer, model.specs.map((s) => s.name))
      yield* ctx.log(`resuming from ${path.basename(resumeFrom)} (step ${start.global_step} of ${plan.total})`)
    } else {
      model = base.kind === "init" ? initModel(base.config, ctx.params.seed) : (yield* loadHfFolder(base.dir).pipe(Effect.mapError(modelError))).model
      yield* ctx.log(`training ${base.description} on ${trainExamples.length} examples${evalExamples ? `, evaluating on ${evalExamples.length}` : ""}: ${plan.total} steps (${plan.perEpoch} per epoch), warmup ${plan.warmup}`)
    }
    let lastLoss: number | undefined
    const better = (value: number, best: number | null) => best === null || (ctx.params.greater_is_better ? value > best : value < best)
    const final = yield* train(model, optimizer, { train: trainExamples, eval: evalExamples, padId }, args, start, {
      save: (state) =>
        Effect.gen(function* () {
          const latest = [...state.log_history].reverse().find((row) => row.step === state.global_step && (ctx.params.metric_for_best_model === "eval_loss" ? row.eval_loss : row.loss) !== undefined)
          const value = latest === undefined ? undefined : ctx.params.metric_for_best_model === "eval_loss" ? latest.eval_loss! : latest.loss!
          const name = `checkpoint-${state.global_step}`
          const withBest = value !== undefined && better(value, state.best_metric) ? { ...state, best_metric: value, best_model_checkpoint: name } : state
          yield* saveCheckpoint(ctx.workDir, model, optimizer, withBest, base.copyFrom)
          yield* rotateCheckpoints(ctx.workDir, ctx.params.save_total_limit, withBest.best_model_checkpoint === null ? null : path.join(ctx.workDir, withBest.best_model_checkpoint))
          start = withBest
        }).pipe(Effect.provideService(FileSystem.FileSystem, fs), Effect.provideService(Path.Path, path)),
      log: (row) => {
        if (row.loss !== undefined) lastLoss = row.loss
        return ctx.log(formatRow(row))
      },
      progress: (step, total) => ctx.progress(step, total, lastLoss === undefined ? "steps" : `steps, loss ${lastLoss.toFixed(4)}`)
    })
    const state: TrainerState = { ...final, best_metric: start.best_metric, best_model_checkpoint: start.best_model_checkpoint }
    if (ctx.params.load_best_model_at_end && state.best_model_checkpoint !== null) {
      disposeModel(model)
      model = (yield* loadHfFolder(path.join(ctx.workDir, state.best_model_checkpoint)).pipe(Effect.mapError(modelError))).model
      yield* ctx.log(`loaded the best model: ${state.best_model_checkpoint} (${ctx.params.metric_for_best_model} ${state.best_metric})`)
    }
    const modelDir = path.join(ctx.outDir, "model")
    yield* saveHfFolder(model, modelDir, { copyFrom: base.copyFrom }).pipe(Effect.mapError(modelError))
    disposeModel(model)
    const filesDir = path.join(ctx.outDir, "files")
    yield* fs.makeDirectory(filesDir, { recursive: true })
    yield* fs.writeFile(path.join(filesDir, "metrics.arrow"), encodeIpcFile(metricsTable(state.log_history)))
    yield* fs.writeFileString(path.join(filesDir, "loss.svg"), lossChart(state.log_history))
    // The model training started from, for evaluate's `compare_base`: a from-scratch run
    // keeps its (seeded, so re-creatable) initial weights beside the metrics.
    if (base.kind === "init") {
      const initial = initModel(base.config, ctx.params.seed)
      yield* saveHfFolder(initial, path.join(filesDir, "initial_model"), { copyFrom: base.copyFrom }).pipe(Effect.mapError(modelError))
      disposeModel(initial)
    }
    const baseModelRecord = base.kind === "init" ? "initial_model" : ctx.params.model ?? base.dir
    yield* fs.writeFileString(path.join(filesDir, "trainer_state.json"), `${JSON.stringify({ ...state, base_model: baseModelRecord }, null, 2)}\n`)
    const finalLoss = [...state.log_history].reverse().find((row) => row.loss !== undefined)?.loss
    const lastEval = [...state.log_history].reverse().find((row) => row.eval_loss !== undefined)?.eval_loss
    return {
      outputs: {
        model: { kind: "model" as const, dir: modelDir },
        files: { kind: "files" as const, dir: filesDir, files: ["metrics.arrow", "loss.svg", "trainer_state.json", ...(base.kind === "init" ? ["initial_model"] : [])] }
      },
      metrics: {
        steps: state.global_step,
        ...(finalLoss !== undefined && { loss: finalLoss }),
        ...(lastEval !== undefined && { eval_loss: lastEval }),
        ...(state.best_metric !== null && { best_metric: state.best_metric }),
        tokens_per_second: Math.round(state.tokens_seen / Math.max(state.train_seconds, 1e-9)),
        tokens: state.tokens_seen,
        train_seconds: Math.round(state.train_seconds * 1000) / 1000
      }
    }
  }, (effect) => Effect.catchTag(effect, "SystemError", "BadArgument", (e) => Effect.fail(new StageError({ message: e.message }))))
})
