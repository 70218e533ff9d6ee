/**
 * `evaluate`: the tutorial's section 5 and 6 checks on a tokenized split. `eval_loss`
 * and perplexity as `trainer.evaluate()` reports them, and golden-set accuracy: greedy
 * answers to the first `limit` questions, scored GSM8K style on the number after `####`.
 * With `base_model` (or `compare_base`) the base model is scored the same way, for the
 * before/after comparison. Writes the per-example rows (`examples`) and one summary row
 * per model (`summary`).
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Either, Schema } from "effect"
import { describeBackend } from "../src/backend/runtime.ts"
import { backendReady } from "../src/backend/service.ts"
import type { BackendInfo } from "../src/backend/select.ts"
import { inputDataset, readHead, writeDataset } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { accuracyOf, type ScoredExample, scoreExamples } from "../src/eval/accuracy.ts"
import { completePrompts, preview } from "../src/eval/generation.ts"
import { loadInferenceModel, type ModelChoice, modelToRun } from "../src/eval/inference.ts"
import { Count, optional, Text, withDefault } from "../src/eval/params.ts"
import { evaluationLoss, type LossResult, requireIdsInVocabulary } from "../src/eval/loss.ts"
import { columnTexts, type PromptSource, promptTexts } from "../src/eval/prompts.ts"
import { examplesTable, type ModelSummary, summaryTable } from "../src/eval/tables.ts"
import { disposeModel } from "../src/model/qwen2.ts"
import { localModelFiles, modelRevision, resolveModelDir } from "../src/model/source.ts"
import { defineStage, type StageContext } from "../src/stage.ts"
import { examplesOf, openExamples } from "../src/train/data.ts"
import { parseTemplate } from "../src/template.ts"

const METRICS = ["loss", "perplexity", "accuracy"] as const
type Metric = (typeof METRICS)[number]

const Template = Schema.String.pipe(
  Schema.filter((source) => Either.match(parseTemplate(source), { onLeft: (why) => `invalid template: ${why}`, onRight: () => true }))
)

const Params = Schema.Struct({
  model: optional(Text, "The model to evaluate: a hub id or a local Hugging Face folder (or leave it out and put a stage that produces a model, such as train, in `needs`)"),
  split: withDefault(Text, "test", "The split to evaluate (default test)"),
  metrics: withDefault(
    Schema.Array(Schema.Literal(...METRICS)).pipe(Schema.minItems(1)),
    [...METRICS],
    "What to compute: loss, perplexity (exp of the loss), accuracy (generates answers; default all three)"
  ),
  eval_batch_size: withDefault(Count, 8, "per_device_eval_batch_size: examples per loss batch, and prompts in the generation batch at once (continuous batching) (default 8)"),
  limit: withDefault(Count, 50, "Accuracy is scored on the first N examples of the split, each one generated (default 50)"),
  loss_limit: optional(Count, "The loss over the first N examples only (default: the whole split)"),
  max_new_tokens: withDefault(Count, 256, "Longest answer generated for accuracy (default 256)"),
  prompt: optional(Text, "The column holding the question, fed to the model as is (default question)"),
  template: optional(Template, "The prompt built from columns instead of `prompt`, as the tokenize stage's template (\"Question: {question}\\nAnswer:\"): prompt the model as it was trained"),
  reference: withDefault(Text, "answer", "The column with the reference answer, whose number after #### is expected (default answer)"),
  stop: optional(Schema.Array(Text), "Stop an answer once it contains one of these (default: at EOS only)"),
  scoring: withDefault(Schema.Literal("number", "label"), "number", "How accuracy compares an answer with the reference: `number` (GSM8K: the final number) or `label` (classification: the first word)"),
  base_model: optional(Text, "A base model (hub id or folder) to evaluate the same way, for a before/after comparison"),
  compare_base: withDefault(Schema.Boolean, false, "Also evaluate the base model the upstream train stage started from (default false)")
}).pipe(Schema.filter((p) => {
  if (p.prompt !== undefined && p.template !== undefined) return "give prompt (a column) or template (columns in a pattern), not both"
  if (p.base_model !== undefined && p.compare_base) return "give base_model or compare_base, not both"
  return true
}))

type Params = typeof Params.Type

interface ModelResult {
  readonly loss: LossResult | undefined
  readonly scored: ReadonlyArray<ScoredExample> | undefined
}

const modelParams = (params: Params) => [params.model, params.base_model].filter((m): m is string => m !== undefined)

const inputFiles = (params: Params, baseDir: string) =>
  Effect.map(Effect.forEach(modelParams(params), (m) => localModelFiles(m, baseDir)), (lists) => lists.flat())

const externalInputs = (params: Params, baseDir: string) =>
  Effect.map(Effect.forEach(modelParams(params), (m) => modelRevision(m, baseDir)), (records) => Object.assign({}, ...records) as Record<string, string>)

/** What the upstream train stage recorded as its starting point (trainer_state.json's `base_model`). */
const recordedBaseModel = (ctx: StageContext<Params>) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const upstream = ctx.inputs.find((input) => input.outputs.model !== undefined)
    if (upstream === undefined) return yield* new StageError({ message: "compare_base needs a stage in `needs` that trained a model; otherwise give base_model" })
    const files = upstream.outputs.files
    const stateFile = files?.files.includes("trainer_state.json") ? path.join(files.dir, "trainer_state.json") : undefined
    const state: unknown = stateFile === undefined ? undefined : yield* fs.readFileString(stateFile).pipe(
      Effect.flatMap((json) => Effect.try(() => JSON.parse(json) as unknown)),
      Effect.orElseSucceed(() => undefined)
    )
    if (typeof state !== "object" || state === null || !("base_model" in state)) {
      return yield* new StageError({ message: `compare_base: "${upstream.id}" does not record the model it started from; give base_model instead` })
    }
    if (typeof state.base_model !== "string") {
      return yield* new StageError({ message: `compare_base: "${upstream.id}" does not record a base model it can be compared with; give base_model instead` })
    }
    // A from-scratch run keeps its initial weights beside its metrics.
    const kept = path.join(files!.dir, state.base_model)
    if (state.base_model === "initial_model" && (yield* fs.exists(kept).pipe(Effect.orElseSucceed(() => false)))) {
      return { label: "untrained (base)", dir: kept } satisfies ModelChoice
    }
    return { label: `${state.base_model} (base)`, dir: yield* resolveModelDir(state.base_model, ctx.baseDir) } satisfies ModelChoice
  })

const baseModelChoice = (ctx: StageContext<Params>) =>
  ctx.params.base_model !== undefined
    ? Effect.map(resolveModelDir(ctx.params.base_model, ctx.baseDir), (dir): ModelChoice => ({ label: `${ctx.params.base_model} (base)`, dir }))
    : ctx.params.compare_base
    ? recordedBaseModel(ctx)
    : Effect.succeed(undefined)

const promptSource = (params: Params): PromptSource =>
  params.template !== undefined
    ? { _tag: "Template", parts: Either.getOrThrow(parseTemplate(params.template)) }
    : { _tag: "Column", column: params.prompt ?? "question" }

/** The split's examples for the loss and its questions and references for accuracy, read once for every model. */
const evaluationData = (ctx: StageContext<Params>, wanted: ReadonlySet<Metric>) =>
  Effect.gen(function* () {
    const { params } = ctx
    const dataset = yield* inputDataset(ctx)
    const wantLoss = wanted.has("loss") || wanted.has("perplexity")
    const lossExamples = wantLoss
      ? (yield* openExamples(dataset, params.split)).take(params.loss_limit ?? Infinity)
      : examplesOf([])
    if (wantLoss && lossExamples.length === 0) return yield* new StageError({ message: `split "${params.split}" has no examples to compute the loss on` })
    if (!wanted.has("accuracy")) return { lossExamples, questions: undefined, references: [] }
    // Only the rows scored are read.
    const { table } = yield* readHead(dataset, params.split, params.limit)
    const questions = yield* promptTexts(table, params.split, promptSource(params), params.limit)
    const references = yield* columnTexts(table, params.split, params.reference, params.limit)
    return { lossExamples, questions, references }
  })

type EvaluationData = Effect.Effect.Success<ReturnType<typeof evaluationData>>

const evaluateModel = (
  ctx: StageContext<Params>,
  candidate: ModelChoice,
  backend: BackendInfo,
  data: EvaluationData,
  progress: (done: number) => Effect.Effect<void>
) =>
  Effect.acquireUseRelease(
    loadInferenceModel(candidate.dir, backend),
    (loaded) =>
      Effect.gen(function* () {
        const { params } = ctx
        let loss: LossResult | undefined
        if (data.lossExamples.length > 0) {
          yield* requireIdsInVocabulary(data.lossExamples, loaded.model.config.vocab_size, candidate.label)
          loss = yield* evaluationLoss(loaded.model, data.lossExamples, { batchSize: params.eval_batch_size, padTokenId: loaded.padTokenId }, progress)
          if (loss.examples === 0) return yield* new StageError({ message: `split "${params.split}" has no label tokens: nothing to compute the loss on` })
          yield* ctx.log(`${candidate.label}: eval_loss ${loss.evalLoss.toFixed(4)}, perplexity ${loss.perplexity.toFixed(2)} (${loss.examples} examples)`)
        }
        if (data.questions === undefined) return { loss, scored: undefined } satisfies ModelResult
        const generated = yield* completePrompts(
          loaded,
          data.questions,
          { maxNewTokens: params.max_new_tokens, doSample: false, stop: params.stop, batchSize: params.eval_batch_size },
          (done) => progress(data.lossExamples.length + done)
        )
        const scored = scoreExamples(data.questions, data.references, generated.completions.map((c) => c.text), params.scoring)
        const right = scored.filter((e) => e.correct).length
        yield* ctx.log(`${candidate.label}: accuracy ${right}/${scored.length} = ${(right / scored.length).toFixed(3)} (${generated.tokensPerSecond.toFixed(1)} tokens/s)`)
        for (const failure of scored.filter((e) => !e.correct).slice(0, 3)) {
          yield* ctx.log(`  wrong: ${preview(failure.question, 100)} | expected ${failure.expected ?? "?"}, got ${failure.predicted ?? "no number"}: ${preview(failure.prediction, 120)}`)
        }
        return { loss, scored } satisfies ModelResult
      }),
    (loaded) => Effect.sync(() => disposeModel(loaded.model))
  )

const summaryOf = (label: string, result: ModelResult, wanted: ReadonlySet<Metric>): ModelSummary => ({
  model: label,
  evalLoss: wanted.has("loss") ? result.loss?.evalLoss : undefined,
  perplexity: wanted.has("perplexity") ? result.loss?.perplexity : undefined,
  accuracy: result.scored === undefined ? undefined : accuracyOf(result.scored)
})

const metricsOf = (summary: ModelSummary, prefix: string): Record<string, number> => ({
  ...(summary.evalLoss !== undefined && { [`${prefix}eval_loss`]: summary.evalLoss }),
  ...(summary.perplexity !== undefined && { [`${prefix}perplexity`]: summary.perplexity }),
  ...(summary.accuracy !== undefined && { [`${prefix}accuracy`]: summary.accuracy })
})

export default defineStage({
  name: "evaluate",
  version: "1",
  description: "eval_loss and perplexity as trainer.evaluate() reports them, and GSM8K-style golden-set accuracy from greedy answers; optionally beside the base model",
  params: Params,
  accepts: { kinds: ["dataset", "model"], min: 1, max: 2 },
  produces: ["dataset"],
  inputFiles,
  externalInputs,
  run: Effect.fn("Evaluate.run")(function* (ctx) {
    const backend = yield* backendReady
    yield* ctx.log(describeBackend(backend))
    const wanted = new Set(ctx.params.metrics)
    const evaluated = yield* modelToRun(ctx.inputs, ctx.params.model, ctx.baseDir)
    const base = yield* baseModelChoice(ctx)
    const data = yield* evaluationData(ctx, wanted)
    const candidates = base === undefined ? [evaluated] : [evaluated, base]
    const perModel = data.lossExamples.length + (data.questions?.length ?? 0)
    const results: Array<ModelResult> = []
    for (const [i, candidate] of candidates.entries()) {
      yield* ctx.log(`evaluating ${candidate.label} on split "${ctx.params.split}"`)
      results.push(yield* evaluateModel(ctx, candidate, backend, data, (done) => ctx.progress(i * perModel + done, candidates.length * perModel, "examples")))
    }
    const summaries = candidates.map((candidate, i) => summaryOf(candidate.label, results[i]!, wanted))
    const [mine, theirs] = [results[0]!, results[1]]
    const dataset = yield* writeDataset(ctx.outDir, {
      ...(mine.scored !== undefined && { examples: examplesTable(mine.scored, theirs?.scored) }),
      summary: summaryTable(summaries)
    })
    return {
      outputs: { dataset },
      metrics: { ...metricsOf(summaries[0]!, ""), ...(summaries[1] === undefined ? {} : metricsOf(summaries[1], "base_")) }
    }
  }, Effect.scoped) // the split's files stay open for the loss until the stage ends
})
