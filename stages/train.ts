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
import { localModelFiles, modelRevision } from "../src/model/source.ts"
import { defineStage, type StageContext } from "../src/stage.ts"
import { inputDataset } from "../src/dataset.ts"
import { openExamples } from "../src/train/data.ts"
import { trainSession } from "../src/train/session.ts"
import { resolveStart } from "../src/train/setup.ts"
import { bestModelProblem, Count, Lora, Positive, toArgs, trainingFields, withDefault } from "../src/train/params.ts"
import { supervised } from "../src/train/trainer.ts"

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
  ...trainingFields()
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
    return bestModelProblem(p) ?? true
  })
)

type Params = typeof Params.Type

const splitOf = (ctx: StageContext<Params>, split: string) =>
  Effect.gen(function* () {
    const dataset = yield* inputDataset(ctx).pipe(
      Effect.mapError((e) => new StageError({ message: `train needs one tokenized dataset in \`needs\`: ${e.message}` }))
    )
    return dataset.splits[split] === undefined ? undefined : yield* openExamples(dataset, split)
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
    const fit = { adapter: start.adapter?.plan, batchSize: ctx.params.batch_size, seqLen: train.maxLength }
    yield* checkTrainingFit(config, backend.name, fit).pipe(Effect.mapError((e) => new StageError({ message: e.message })))
    const args = toArgs(ctx.params, ctx.params.neftune_noise_alpha)
    const data = { train, eval: yield* splitOf(ctx, ctx.params.eval_split), padId: padTokenId(config) }
    return yield* trainSession({
      start,
      args,
      objective: (model, optimizer) => supervised(model, optimizer, data, args),
      trainsOn: `${train.length} examples${data.eval === undefined ? "" : `, evaluating on ${data.eval.length}`}`,
      best: { loadAtEnd: ctx.params.load_best_model_at_end, metric: ctx.params.metric_for_best_model, greaterIsBetter: ctx.params.greater_is_better },
      saveTotalLimit: ctx.params.save_total_limit,
      merge: ctx.params.merge,
      workDir: ctx.workDir,
      checkpointed: ctx.checkpointed,
      outDir: ctx.outDir,
      log: ctx.log,
      progress: ctx.progress
    })
  }, Effect.scoped, (effect) => Effect.catchTag(effect, "SystemError", "BadArgument", (e) => Effect.fail(new StageError({ message: e.message }))))
})
