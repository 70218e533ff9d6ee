/**
 * The params `train` and `dpo` share: TrainingArguments' names and defaults (the
 * Trainer's, as the tutorial uses them), and PEFT's LoraConfig. Each stage composes
 * them with its own (src/train/ and src/dpo/ read the decoded values).
 */
import { Schema } from "effect"
import { ALL_LINEAR, DEFAULT_LORA } from "../model/lora.ts"
import type { TrainingArguments } from "./trainer.ts"

export const Positive = Schema.Number.pipe(Schema.positive())
export const Count = Schema.Int.pipe(Schema.positive())
export const NonNegative = Schema.Number.pipe(Schema.nonNegative())
export const withDefault = <A, I>(schema: Schema.Schema<A, I>, value: A, description: string) =>
  Schema.optionalWith(schema, { default: () => value }).annotations({ description })

const NonEmpty = Schema.String.pipe(Schema.minLength(1))
const TargetModules = Schema.Union(Schema.Array(NonEmpty).pipe(Schema.minItems(1)), NonEmpty)
const LayerIndices = Schema.Array(Schema.Int.pipe(Schema.nonNegative())).pipe(Schema.minItems(1))
const orNull = <A, I>(schema: Schema.Schema<A, I>, description: string) =>
  Schema.optionalWith(Schema.NullOr(schema), { default: () => null }).annotations({ description })

/** PEFT's LoraConfig, with its names and defaults. */
export const Lora = Schema.Struct({
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

/** TrainingArguments' keys, with the Trainer's defaults but for those given (DPO's learning rate is TRL's 1e-6). */
export const trainingFields = (defaults: { readonly learning_rate: number } = { learning_rate: 5e-5 }) => ({
  split: withDefault(Schema.String, "train", "The split to train on"),
  eval_split: withDefault(Schema.String, "test", "The split for eval_loss (skipped if the dataset has none)"),
  epochs: withDefault(Positive, 3, "num_train_epochs (fractions allowed)"),
  max_steps: withDefault(Schema.Int, -1, "Stop after this many optimizer steps (overrides epochs when > 0)"),
  batch_size: withDefault(Count, 8, "per_device_train_batch_size"),
  eval_batch_size: withDefault(Count, 8, "per_device_eval_batch_size"),
  gradient_accumulation_steps: withDefault(Count, 1, "Micro-batches per optimizer step"),
  learning_rate: withDefault(Positive, defaults.learning_rate, "Peak learning rate"),
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
})

/** The decoded training keys, as the loop takes them. */
export interface TrainingParams {
  readonly epochs: number
  readonly max_steps: number
  readonly batch_size: number
  readonly eval_batch_size: number
  readonly gradient_accumulation_steps: number
  readonly learning_rate: number
  readonly weight_decay: number
  readonly max_grad_norm: number
  readonly warmup_ratio: number
  readonly warmup_steps: number
  readonly lr_scheduler: TrainingArguments["scheduler"]
  readonly adam_beta1: number
  readonly adam_beta2: number
  readonly adam_epsilon: number
  readonly eval_steps?: number | undefined
  readonly save_steps: number
  readonly logging_steps: number
  readonly logging_first_step: boolean
  readonly seed: number
}

export const toArgs = (p: TrainingParams, neftuneNoiseAlpha?: number): TrainingArguments => ({
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
  neftuneNoiseAlpha
})

/** The Trainer's rule: load_best_model_at_end needs evaluations that land on checkpoints. */
export const bestModelProblem = (p: { readonly load_best_model_at_end: boolean; readonly eval_steps?: number | undefined; readonly save_steps: number; readonly metric_for_best_model: string }) =>
  p.load_best_model_at_end && (p.eval_steps === undefined ? p.metric_for_best_model === "eval_loss" : p.save_steps % p.eval_steps !== 0)
    ? "load_best_model_at_end needs eval_steps, and save_steps must be a multiple of it (as in the Trainer)"
    : undefined
