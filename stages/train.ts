/**
 * `train`: fine-tunes a Qwen2/Llama model on a tokenized dataset (every weight, or a
 * LoRA adapter), or trains one from scratch, with the Hugging Face Trainer's semantics.
 * Every TrainingArguments setting the tutorial uses has a key of the same name and
 * default, and LoRA's are PEFT's. Checkpoints go to the stage's work folder, so an
 * interrupted run resumes where it stopped; the finished model is a Hugging Face folder
 * that transformers loads as it is, or a PEFT adapter folder that `PeftModel` loads.
 * This file is the params and the wiring; the work is in src/train/ (setup.ts: the
 * starting model; session.ts: resume, the loop, the outputs; trainer.ts: the loop).
 */
import { Effect, Schema } from "effect"
import { checkTrainingFit } from "../src/backend/memory.ts"
import { describeBackend } from "../src/backend/runtime.ts"
import { backendReady } from "../src/backend/service.ts"
import { StageError } from "../src/errors.ts"
import { padTokenId } from "../src/model/config.ts"
import { ALL_LINEAR, DEFAULT_LORA } from "../src/model/lora.ts"
import { localModelFiles, modelRevision } from "../src/model/source.ts"
import { defineStage, type StageContext } from "../src/stage.ts"
import { loadExamples } from "../src/train/data.ts"
import { trainSession } from "../src/train/session.ts"
import { resolveStart } from "../src/train/setup.ts"
import type { TrainingArguments } from "../src/train/trainer.ts"

const Positive = Schema.Number.pipe(Schema.positive())
const Count = Schema.Int.pipe(Schema.positive())
const NonNegative = Schema.Number.pipe(Schema.nonNegative())
const withDefault = <A, I>(schema: Schema.Schema<A, I>, value: A, description: string) =>
  Schema.optionalWith(schema, { default: () => value }).annotations({ description })

const Init = Schema.Struct({
  vocab_size: Schema.optional(Count).annotations({
    description:
        "Rows of the embedding; defaults to the tokenizer's vocabulary. Qwen2 checkpoints pad it " +
        "(151936 for 151665 tokens) to a multiple of 128"
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

const NonEmpty = Schema.String.pipe(Schema.minLength(1))
const TargetModules = Schema.Union(Schema.Array(NonEmpty).pipe(Schema.minItems(1)), NonEmpty)
const LayerIndices = Schema.Array(Schema.Int.pipe(Schema.nonNegative())).pipe(Schema.minItems(1))
const orNull = <A, I>(schema: Schema.Schema<A, I>, description: string) =>
  Schema.optionalWith(Schema.NullOr(schema), { default: () => null }).annotations({ description })

/** PEFT's LoraConfig, with its names and defaults. */
const Lora = Schema.Struct({
  r: withDefault(Count, DEFAULT_LORA.r, "Rank of the update matrices (8)"),
  lora_alpha: withDefault(Positive, DEFAULT_LORA.lora_alpha, "The update is scaled by lora_alpha / r (8)"),
  lora_dropout: withDefault(Schema.Number.pipe(Schema.greaterThanOrEqualTo(0), Schema.lessThan(1)), DEFAULT_LORA.lora_dropout,
      "Dropout on each adapted layer's input, in training only (0)"),
  target_modules: withDefault(TargetModules, ["q_proj", "v_proj"],
      `Layers to adapt: names (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj), a ` +
      `regular expression over full names (model.layers.0.self_attn.q_proj), or ${ALL_LINEAR}: ` +
      `every linear layer but the head. PEFT's default for Qwen2 and Llama is [q_proj, v_proj]`),
  exclude_modules: orNull(TargetModules, "Layers not to adapt, matched as target_modules"),
  layers_to_transform: orNull(LayerIndices, "Adapt only these layer indices"),
  use_rslora: withDefault(Schema.Boolean, false, "rsLoRA: scale by lora_alpha / √r"),
  rank_pattern: withDefault(Schema.Record({ key: Schema.String, value: Count }), {},
      "Per-layer ranks, keyed by a pattern for the end of the layer's name (q_proj: 16)"),
  alpha_pattern: withDefault(Schema.Record({ key: Schema.String, value: Positive }), {}, "Per-layer lora_alpha, keyed the same way")
})

const Params = Schema.Struct({
  model: Schema.optional(Schema.String).annotations({ description:
      "The base model: a hub id (Qwen/Qwen2.5-0.5B) or a local Hugging Face folder. Or take it " +
      "from an upstream stage, or use `init`." }),
  init: Schema.optional(Init).annotations({ description: "Train from scratch: a Qwen2 config (the vocabulary comes from `tokenizer`)" }),
  tokenizer: Schema.optional(Schema.String).annotations({ description:
      "With `init`: the tokenizer folder or hub id (its vocabulary sizes the model; its files " +
      "are saved with it)" }),
  lora: Schema.optional(Lora).annotations({ description:
      "Train a LoRA adapter (PEFT's LoraConfig names and defaults) instead of every weight: the " +
      "base stays frozen and the output is a PEFT adapter folder" }),
  adapter: Schema.optional(Schema.String).annotations({ description:
      "Go on training an existing PEFT LoRA adapter: a folder or hub id (adapter_config.json + " +
      "adapter_model.safetensors). Its base is `model`, else the one its config names" }),
  merge: withDefault(Schema.Boolean, false,
      "With lora or adapter: write the merged full model (a Hugging Face folder) instead of the " +
      "adapter"),
  neftune_noise_alpha: Schema.optional(Positive).annotations({ description:
      "NEFTune: add uniform noise of scale alpha / sqrt(length × hidden) to the input embeddings " +
      "while training (5 is common)" }),
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
  seed: withDefault(Schema.Int.pipe(Schema.nonNegative()), 42,
      "Seeds initialisation, LoRA's A matrices, dropout, NEFTune and the data order")
}).pipe(
  Schema.filter((p) => {
    const sources = [p.model !== undefined, p.init !== undefined].filter(Boolean).length
    if (sources > 1) return "give `model` (a base model) or `init` (from scratch), not both"
    if (p.init !== undefined && p.tokenizer === undefined) return "`init` needs `tokenizer`: its vocabulary sizes the model"
    if (p.init !== undefined && (p.lora !== undefined || p.adapter !== undefined)) {
      return "LoRA adapts a trained model: give `model` (or a stage in `needs` that trains one) instead of `init`"
    }
    if (p.lora !== undefined && p.adapter !== undefined) {
      return "give `lora` (a new adapter) or `adapter` (an existing one to train further; its settings come from its folder), not both"
    }
    if (p.merge && p.lora === undefined && p.adapter === undefined) return "`merge` applies to an adapter: give `lora` or `adapter`"
    if (p.init !== undefined && p.init.num_attention_heads % p.init.num_key_value_heads !== 0) {
      return "init.num_attention_heads must be a multiple of init.num_key_value_heads"
    }
    if (p.init !== undefined && p.init.hidden_size % p.init.num_attention_heads !== 0) {
      return "init.hidden_size must be a multiple of init.num_attention_heads"
    }
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
  seed: p.seed,
  neftuneNoiseAlpha: p.neftune_noise_alpha
})

const splitOf = (ctx: StageContext<Params>, split: string) =>
  Effect.gen(function* () {
    const dataset = ctx.inputs.find((input) => input.outputs.dataset !== undefined)?.outputs.dataset
    if (dataset === undefined) return yield* new StageError({ message: "train needs a tokenized dataset in `needs`" })
    return dataset.splits[split] === undefined ? undefined : yield* loadExamples(dataset, split)
  })

const modelParams = (p: Params) => [p.model, p.adapter].filter((m): m is string => m !== undefined)

export default defineStage({
  name: "train",
  version: "2",
  description:
      "Fine-tunes (fully or with a LoRA adapter) or trains from scratch a Qwen2/Llama model with " +
      "the Hugging Face Trainer's semantics, layer by layer; resumable",
  params: Params,
  accepts: { kinds: ["dataset", "model"], min: 1, max: 2 },
  produces: ["model", "files"],
  inputFiles: (params, baseDir) => Effect.map(Effect.forEach(modelParams(params), (m) => localModelFiles(m, baseDir)), (lists) => lists.flat()),
  externalInputs: (params, baseDir) =>
    Effect.map(Effect.forEach(modelParams(params), (m) => modelRevision(m, baseDir)), (records) => Object.assign({}, ...records) as Record<string, string>),
  run: Effect.fn("Train.run")(function* (ctx) {
    const backend = yield* backendReady
    yield* ctx.log(describeBackend(backend))
    const train = yield* splitOf(ctx, ctx.params.split)
    if (train === undefined || train.length === 0) {
      return yield* new StageError({ message: `the dataset has no rows in split "${ctx.params.split}"` })
    }
    const start = yield* resolveStart(ctx)
    const { config } = start.base
    const fit = { adapter: start.adapter?.plan, batchSize: ctx.params.batch_size, seqLen: Math.max(...train.map((e) => e.inputIds.length)) }
    yield* checkTrainingFit(config, backend.name, fit).pipe(Effect.mapError((e) => new StageError({ message: e.message })))
    return yield* trainSession({
      start,
      args: toArgs(ctx.params),
      data: { train, eval: yield* splitOf(ctx, ctx.params.eval_split), padId: padTokenId(config) },
      best: { loadAtEnd: ctx.params.load_best_model_at_end, metric: ctx.params.metric_for_best_model, greaterIsBetter: ctx.params.greater_is_better },
      saveTotalLimit: ctx.params.save_total_limit,
      merge: ctx.params.merge,
      workDir: ctx.workDir,
      outDir: ctx.outDir,
      log: ctx.log,
      progress: ctx.progress
    })
  }, (effect) => Effect.catchTag(effect, "SystemError", "BadArgument", (e) => Effect.fail(new StageError({ message: e.message }))))
})
