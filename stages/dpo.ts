/**
 * `dpo`: preference tuning after SFT with TRL's DPOTrainer semantics (trl 0.12): the
 * sigmoid, IPO and hinge losses, label smoothing, TRL's tokenization and truncation, its
 * metrics (rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
 * logps/chosen, logps/rejected, and their eval_ versions), fully or with a LoRA adapter.
 * The reference model's log-probabilities are computed once and kept as a cached part
 * (and as the stage's dataset output): a re-run with another beta or loss does not
 * recompute them. The rest is `train`'s: optimizer, schedule, clipping, accumulation,
 * checkpoints and resume, best model, the metrics table and the loss chart. This file is
 * the params and the wiring; the work is in src/dpo/.
 */
import { Effect, Schema } from "effect"
import { checkTrainingFit } from "../src/backend/memory.ts"
import { describeBackend } from "../src/backend/runtime.ts"
import { backendReady } from "../src/backend/service.ts"
import type { DatasetArtifact } from "../src/artifact.ts"
import { readReference, referenceRows, referenceTable } from "../src/dpo/reference.ts"
import { loadPairs } from "../src/dpo/data.ts"
import { DPO_LOSS_TYPES } from "../src/dpo/objective.ts"
import type { PairExample, Truncation } from "../src/dpo/pairs.ts"
import { preference } from "../src/dpo/training.ts"
import { inputDataset, writeDataset } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { padTokenId } from "../src/model/config.ts"
import { localModelFiles, modelRevision } from "../src/model/source.ts"
import { defineStage } from "../src/stage.ts"
import { loadTokenizer } from "../src/tokenizer.ts"
import { bestModelProblem, Count, Lora, Positive, toArgs, trainingFields, withDefault } from "../src/train/params.ts"
import { trainSession } from "../src/train/session.ts"
import { loadTrainee, resolveStart } from "../src/train/setup.ts"

const Params = Schema.Struct({
  model: Schema.optional(Schema.String).annotations({ description:
      "The starting policy when no stage in `needs` produces a model: a hub id (Qwen/Qwen2.5-0.5B) " +
      "or a local Hugging Face folder" }),
  lora: Schema.optional(Lora).annotations({ description:
      "Train a LoRA adapter (PEFT's LoraConfig) instead of every weight; the reference is then the " +
      "base with the adapter off, as TRL does with PEFT" }),
  adapter: Schema.optional(Schema.String).annotations({ description: "Go on training an existing PEFT adapter (a folder or hub id), as in train" }),
  merge: withDefault(Schema.Boolean, false, "With lora or adapter: write the merged full model instead of the adapter"),
  beta: withDefault(Positive, 0.1, "How far from the reference the policy may go (TRL's beta): smaller is further"),
  loss_type: withDefault(Schema.Literal(...DPO_LOSS_TYPES), "sigmoid",
      "sigmoid: −log σ(β·Δ) (DPO); ipo: (Δ − 1/(2β))² over length-averaged log-probabilities; hinge: relu(1 − β·Δ)"),
  label_smoothing: withDefault(Schema.Number.pipe(Schema.greaterThanOrEqualTo(0), Schema.lessThan(0.5)), 0,
      "With sigmoid: the chance that a pair's preference is flipped (conservative DPO)"),
  max_length: Schema.optional(Count).annotations({ description: "Cut each prompt + completion to its first N tokens (TRL's max_length; default: no cut)" }),
  max_prompt_length: Schema.optional(Count).annotations({ description: "Keep the last N tokens of each prompt (default: all)" }),
  max_completion_length: Schema.optional(Count).annotations({ description: "Keep the first N tokens of each completion (default: all)" }),
  chat_template: withDefault(Schema.Boolean, false,
      "With text columns: render the prompt as a user turn and each completion as the assistant's reply with the tokenizer's chat template"),
  ...trainingFields({ learning_rate: 1e-6 })
}).pipe(
  Schema.filter((p) => {
    if (p.lora !== undefined && p.adapter !== undefined) return "give `lora` (a new adapter) or `adapter` (an existing one), not both"
    if (p.merge && p.lora === undefined && p.adapter === undefined) return "`merge` applies to an adapter: give `lora` or `adapter`"
    if (p.label_smoothing > 0 && p.loss_type !== "sigmoid") return `label_smoothing applies to loss_type sigmoid only (TRL's conservative DPO), not ${p.loss_type}`
    return bestModelProblem(p) ?? true
  })
)

/** What the reference log-probabilities depend on besides the model, the data and the code. */
const REFERENCE_PARAMS = ["max_length", "max_prompt_length", "max_completion_length", "chat_template", "split", "eval_split"] as const

const modelParams = (p: typeof Params.Type) => [p.model, p.adapter].filter((m): m is string => m !== undefined)

export default defineStage({
  name: "dpo",
  version: "1",
  description: "Preference tuning (DPO, IPO, hinge) with TRL's semantics, fully or with LoRA; the reference log-probabilities are cached apart; resumable",
  params: Params,
  accepts: { kinds: ["dataset", "model"], min: 1, max: 2 },
  produces: ["model", "files", "dataset"],
  inputFiles: (params, baseDir) => Effect.map(Effect.forEach(modelParams(params), (m) => localModelFiles(m, baseDir)), (lists) => lists.flat()),
  externalInputs: (params, baseDir) =>
    Effect.map(Effect.forEach(modelParams(params), (m) => modelRevision(m, baseDir)), (records) => Object.assign({}, ...records) as Record<string, string>),
  run: Effect.fn("Dpo.run")(function* (ctx) {
    const p = ctx.params
    const backend = yield* backendReady
    yield* ctx.log(describeBackend(backend))
    const dataset = yield* inputDataset(ctx).pipe(
      Effect.mapError((e) => new StageError({ message: `dpo needs one dataset of preference pairs in \`needs\` (prompt, chosen, rejected): ${e.message}` }))
    )
    if (dataset.splits[p.split] === undefined) return yield* new StageError({ message: `the dataset has no split "${p.split}" (splits: ${Object.keys(dataset.splits).join(", ")})` })
    const start = yield* resolveStart({ ...ctx, params: { ...p, init: undefined, tokenizer: undefined } })
    const { config } = start.base
    const tokenizer = yield* loadTokenizer(start.base.copyFrom).pipe(Effect.mapError((e) => new StageError({ message: e.message })))
    const truncation: Truncation = { maxLength: p.max_length, maxPromptLength: p.max_prompt_length, maxCompletionLength: p.max_completion_length }
    const pairOptions = { tokenizer, chatTemplate: p.chat_template, truncation }
    const train = yield* loadPairs(dataset, p.split, pairOptions)
    if (train.length === 0) return yield* new StageError({ message: `split "${p.split}" has no pairs` })
    // Evaluating on the training split itself is allowed, as in train: its pairs and reference serve both.
    const sameSplit = p.eval_split === p.split
    const evalPairs = dataset.splits[p.eval_split] === undefined ? undefined : sameSplit ? train : yield* loadPairs(dataset, p.eval_split, pairOptions)
    if (evalPairs !== undefined && evalPairs.length === 0) {
      return yield* new StageError({ message: `eval split "${p.eval_split}" has no pairs: fill it, or set eval_split to a split that has some` })
    }
    const longest = (pairs: ReadonlyArray<PairExample>) =>
      pairs.reduce((most, pair) => Math.max(most, pair.prompt.length + Math.max(pair.chosen.length, pair.rejected.length)), 0)
    const seqLen = Math.min(p.max_length ?? Number.POSITIVE_INFINITY, longest(train))
    // A micro-batch is 2 × batch_size rows: each pair's chosen and rejected completions.
    yield* checkTrainingFit(config, backend.name, { adapter: start.adapter?.plan, batchSize: 2 * p.batch_size, seqLen }).pipe(
      Effect.mapError((e) => new StageError({ message: e.message }))
    )
    const padId = padTokenId(config)
    const splits = { [p.split]: train, ...(evalPairs !== undefined && !sameSplit && { [p.eval_split]: evalPairs }) }

    const part = yield* ctx.cachedPart("reference", REFERENCE_PARAMS, (dir) =>
      Effect.acquireUseRelease(
        loadTrainee(start, p.seed, undefined),
        (model) =>
          Effect.gen(function* () {
            yield* ctx.log(`the reference log-probabilities of ${Object.entries(splits).map(([s, pairs]) => `${pairs.length} ${s} pairs`).join(" and ")}${model.adapter === undefined ? "" : " (the base, adapter off)"}`)
            const tables: Record<string, ReturnType<typeof referenceTable>> = {}
            for (const [split, pairs] of Object.entries(splits)) {
              const rows = yield* referenceRows(model, pairs, { batchSize: p.eval_batch_size, padId, maxLength: p.max_length }, (done, total) => ctx.progress(done, total, `${split} pairs (reference)`))
              tables[split] = referenceTable(rows)
            }
            const written = yield* writeDataset(dir, tables)
            return { dataset: written }
          }),
        (model) => Effect.sync(() => model.dispose())
      ))
    const reference = part.outputs.dataset as DatasetArtifact
    if (part.reused) yield* ctx.log("the reference log-probabilities are cached: not computed again")
    const trainReference = yield* readReference(reference, p.split, train.length)
    const evalReference = evalPairs === undefined ? undefined : sameSplit ? trainReference : yield* readReference(reference, p.eval_split, evalPairs.length)
    const outputDataset = yield* writeDataset(ctx.outDir, Object.fromEntries(Object.keys(splits).map((split) => [split, reference.splits[split]!])))

    const args = toArgs(p)
    const settings = { beta: p.beta, lossType: p.loss_type, labelSmoothing: p.label_smoothing }
    const data = { train, trainReference, eval: evalPairs, evalReference, padId, maxLength: p.max_length }
    return yield* trainSession({
      start,
      args,
      objective: (model, optimizer) => preference(model, optimizer, settings, data, args),
      trainsOn: `${train.length} pairs${evalPairs === undefined ? "" : `, evaluating on ${evalPairs.length}`} (${p.loss_type}, beta ${p.beta})`,
      extraOutputs: { dataset: outputDataset },
      best: { loadAtEnd: p.load_best_model_at_end, metric: p.metric_for_best_model, greaterIsBetter: p.greater_is_better },
      saveTotalLimit: p.save_total_limit,
      merge: p.merge,
      workDir: ctx.workDir,
      checkpointed: ctx.checkpointed,
      outDir: ctx.outDir,
      log: ctx.log,
      progress: ctx.progress
    })
  }, (effect) => Effect.catchTag(effect, "SystemError", "BadArgument", (e) => Effect.fail(new StageError({ message: e.message }))))
})
