/**
 * `generate`: the tutorial's section 6, "test the fine-tuned model". Continuations of
 * prompts written in the pipeline file, or of a dataset column, with the model from an
 * upstream stage or `model:`. Greedy by default (`do_sample: false`, the tutorial's
 * reading of a model's "true confidence"); only the continuation is kept, as with
 * `return_full_text=False`.
 */
import { Effect, Either, Schema } from "effect"
import { describeBackend } from "../src/backend/runtime.ts"
import { backendReady } from "../src/backend/service.ts"
import { inputDataset, readHead, writeDataset } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { completePrompts, preview } from "../src/eval/generation.ts"
import { loadInferenceModel, modelToRun } from "../src/eval/inference.ts"
import { Count, optional, Text, withDefault } from "../src/eval/params.ts"
import { type PromptSource, promptTexts } from "../src/eval/prompts.ts"
import { generationsTable } from "../src/eval/tables.ts"
import { disposeModel } from "../src/model/qwen2.ts"
import { localModelFiles, modelRevision } from "../src/model/source.ts"
import { defineStage, type StageContext } from "../src/stage.ts"
import { parseTemplate } from "../src/template.ts"

const Template = Schema.String.pipe(
  Schema.filter((source) => Either.match(parseTemplate(source), { onLeft: (why) => `invalid template: ${why}`, onRight: () => true }))
)

const Params = Schema.Struct({
  model: optional(Text, "The model: a hub id or a local Hugging Face folder (or leave it out and put a stage that produces a model, such as train, in `needs`)"),
  prompts: optional(Schema.Array(Text).pipe(Schema.minItems(1)), "The prompts, written here"),
  column: optional(Text, "Or: the column (of the dataset in `needs`) whose texts are the prompts"),
  template: optional(Template, "Or: prompts built from the dataset's columns, as the tokenize stage's template (\"Question: {question}\\nAnswer:\")"),
  split: optional(Text, "With column or template: the split to read (default test, or the dataset's only split)"),
  limit: optional(Count, "With column or template: the first N rows only"),
  do_sample: withDefault(Schema.Boolean, false, "Sample instead of greedy decoding (default false)"),
  max_new_tokens: withDefault(Count, 128, "Most tokens generated per prompt (default 128)"),
  temperature: optional(Schema.Number.pipe(Schema.positive()), "With do_sample: divides the logits (default 1)"),
  top_k: optional(Schema.Int.pipe(Schema.nonNegative()), "With do_sample: keep the k most likely tokens, 0 for all (default 50)"),
  top_p: optional(Schema.Number.pipe(Schema.greaterThan(0), Schema.lessThanOrEqualTo(1)), "With do_sample: keep the smallest set of tokens whose probability reaches this (default 1)"),
  seed: withDefault(Schema.Int.pipe(Schema.nonNegative()), 0, "With do_sample: the sampler's seed; each prompt samples from a stream of its own, made from the seed and its index, whatever batch_size is (default 0)"),
  stop: optional(Schema.Array(Text), "Stop a continuation once it contains one of these (the stop string is kept)"),
  batch_size: withDefault(Count, 8, "Prompts in the batch at once; one that ends gives its place to the next (continuous batching) (default 8)")
}).pipe(Schema.filter((p) => {
  const sources = [p.prompts, p.column, p.template].filter((s) => s !== undefined).length
  if (sources !== 1) return "give exactly one of prompts (a list), column (a dataset column) or template (columns in a pattern)"
  if (p.prompts !== undefined && (p.split !== undefined || p.limit !== undefined)) return "split and limit apply to column or template prompts, not to prompts"
  return true
}))

type Params = typeof Params.Type

/** Generations shown in the log; all of them are in the output. */
const LOGGED = 20

/** The prompts: from the file, or from a split of the upstream dataset. */
const promptsOf = (ctx: StageContext<Params>) =>
  Effect.gen(function* () {
    const { params } = ctx
    if (params.prompts !== undefined) return params.prompts
    const dataset = yield* inputDataset(ctx)
    const splits = Object.keys(dataset.splits)
    const split = params.split ?? (splits.includes("test") ? "test" : splits.length === 1 ? splits[0]! : undefined)
    if (split === undefined) return yield* new StageError({ message: `the dataset has splits ${splits.join(", ")}: say which with \`split\`` })
    const source: PromptSource = params.column !== undefined
      ? { _tag: "Column", column: params.column }
      : { _tag: "Template", parts: Either.getOrThrow(parseTemplate(params.template!)) }
    const { table } = yield* readHead(dataset, split, params.limit ?? Infinity)
    return yield* promptTexts(table, split, source, params.limit ?? Infinity)
  })

export default defineStage({
  name: "generate",
  version: "1",
  description: "Generates continuations of prompts (from the file or a dataset column), greedy or sampled, with the KV cache",
  params: Params,
  accepts: { kinds: ["dataset", "model"], min: 0, max: 2 },
  produces: ["dataset"],
  inputFiles: (params, baseDir) => (params.model === undefined ? Effect.succeed([]) : localModelFiles(params.model, baseDir)),
  externalInputs: (params, baseDir) => (params.model === undefined ? Effect.succeed({}) : modelRevision(params.model, baseDir)),
  run: Effect.fn("Generate.run")(function* (ctx) {
    const { params } = ctx
    const backend = yield* backendReady
    yield* ctx.log(describeBackend(backend))
    const prompts = yield* promptsOf(ctx)
    if (prompts.length === 0) return yield* new StageError({ message: "no prompts: the split has no rows" })
    const ignored = (["temperature", "top_k", "top_p"] as const).filter((key) => params[key] !== undefined)
    if (!params.do_sample && ignored.length > 0) yield* ctx.log(`do_sample is false: ${ignored.join(", ")} ignored (greedy decoding)`)
    const { dir } = yield* modelToRun(ctx.inputs, params.model, ctx.baseDir)
    const run = yield* Effect.acquireUseRelease(
      loadInferenceModel(dir, backend),
      (loaded) =>
        completePrompts(loaded, prompts, {
          maxNewTokens: params.max_new_tokens,
          doSample: params.do_sample,
          temperature: params.temperature,
          topK: params.top_k,
          topP: params.top_p,
          seed: params.seed,
          stop: params.stop,
          batchSize: params.batch_size
        }, (done, total) => ctx.progress(done, total, "prompts")),
      (loaded) => Effect.sync(() => disposeModel(loaded.model))
    )
    for (const completion of run.completions.slice(0, LOGGED)) {
      yield* ctx.log(`prompt: ${preview(completion.prompt, 120)}`)
      yield* ctx.log(`  → ${preview(completion.text, 240)} [${completion.finishReason}, ${completion.tokenIds.length} tokens]`)
    }
    if (run.completions.length > LOGGED) {
      yield* ctx.log(`… and ${run.completions.length - LOGGED} more: pipeline show <file> ${ctx.id} --split generations`)
    }
    yield* ctx.log(`${run.newTokens} tokens in ${run.seconds.toFixed(1)}s (${run.tokensPerSecond.toFixed(1)} tokens/s)`)
    const dataset = yield* writeDataset(ctx.outDir, { generations: generationsTable(run.completions) })
    return { outputs: { dataset }, metrics: { prompts: prompts.length, new_tokens: run.newTokens, tokens_per_second: run.tokensPerSecond } }
  })
})
