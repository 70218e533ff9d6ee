/**
 * Text in, continuations out: the one generation path behind the `generate` stage,
 * `evaluate`'s accuracy and `pipeline generate`. Prompts are encoded as the tokenize
 * stage encodes them (no special tokens added), generated in continuous batches with
 * the KV cache, and decoded without special tokens and without the prompt, as
 * transformers' text-generation pipeline does with `return_full_text=False`.
 */
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import { type FinishReason, GenerationRun } from "../model/generate.ts"
import type { Tokenizer } from "../tokenizer.ts"
import { type InferenceModel, requireTokenizer } from "./inference.ts"

export interface TextGenerationOptions {
  readonly maxNewTokens: number
  /** Sample (seeded) instead of greedy decoding: transformers' `do_sample`. */
  readonly doSample: boolean
  readonly temperature?: number | undefined
  readonly topK?: number | undefined
  readonly topP?: number | undefined
  /**
   * Each prompt samples from a stream of its own, made from the seed and its index, so
   * that a run is reproducible for a seed whatever the batch size (transformers instead
   * draws every batch from one global stream).
   */
  readonly seed?: number | undefined
  /** A row stops once its continuation contains one of these (the stop string is kept). */
  readonly stop?: ReadonlyArray<string> | undefined
  /** Prompts in the batch at once: one that ends gives its place to the next (continuous batching). */
  readonly batchSize: number
  /** false recomputes the whole sequence each step: slower, the same tokens. */
  readonly useCache?: boolean | undefined
}

export interface Completion {
  readonly prompt: string
  /** The continuation only, special tokens skipped. */
  readonly text: string
  readonly tokenIds: ReadonlyArray<number>
  readonly finishReason: FinishReason
}

export interface CompletionRun {
  readonly completions: ReadonlyArray<Completion>
  /** Generated tokens, summed over rows (padding of finished rows not counted). */
  readonly newTokens: number
  readonly seconds: number
  readonly tokensPerSecond: number
}

const PLAIN = { addSpecialTokens: false } as const

const encodePrompts = (tokenizer: Tokenizer, prompts: ReadonlyArray<string>) =>
  Effect.forEach(prompts, (prompt, i) => {
    const ids = tokenizer.encode(prompt, PLAIN)
    return ids.length > 0
      ? Effect.succeed(Array.from(ids))
      : Effect.fail(new StageError({ message: `prompt ${i + 1} (${JSON.stringify(prompt)}) encodes to no tokens: generation needs at least one` }))
  })

/**
 * Generates a continuation for each prompt, `batchSize` in the batch at once; `onBatch`
 * hears how many prompts are done whenever some end. Interruptible between steps.
 */
export const completePrompts = Effect.fn("Generation.complete")(function* (
  loaded: InferenceModel,
  prompts: ReadonlyArray<string>,
  options: TextGenerationOptions,
  onBatch: (done: number, total: number) => Effect.Effect<void> = () => Effect.void
) {
  const tokenizer = yield* requireTokenizer(loaded)
  const encoded = yield* encodePrompts(tokenizer, prompts)
  const decode = (ids: ArrayLike<number>) => tokenizer.decode(ids, { skipSpecialTokens: true })
  const failed = (cause: unknown) => new StageError({ message: `generation failed: ${cause instanceof Error ? cause.message : String(cause)}`, cause })
  const began = performance.now()
  const generation = yield* Effect.acquireUseRelease(
    Effect.try({
      try: () =>
        new GenerationRun(loaded.model, encoded, {
          maxNewTokens: options.maxNewTokens,
          doSample: options.doSample,
          ...(options.temperature !== undefined && { temperature: options.temperature }),
          ...(options.topK !== undefined && { topK: options.topK }),
          ...(options.topP !== undefined && { topP: options.topP }),
          ...(options.seed !== undefined && { seed: options.seed }),
          eosTokenIds: loaded.eosTokenIds,
          padTokenId: loaded.padTokenId,
          batchSize: options.batchSize,
          ...(options.stop !== undefined && options.stop.length > 0 && { stopStrings: options.stop, decode }),
          ...(options.useCache !== undefined && { useCache: options.useCache })
        }),
      catch: failed
    }),
    (run) =>
      Effect.gen(function* () {
        while (!run.done) {
          const ended = yield* Effect.try({ try: () => run.step(), catch: failed })
          if (ended.length > 0) yield* onBatch(run.finished, prompts.length)
        }
        return run.result()
      }),
    (run) => Effect.sync(() => run.dispose())
  )
  const seconds = (performance.now() - began) / 1000
  const completions = generation.tokens.map((tokenIds, index): Completion => ({
    prompt: prompts[index]!,
    text: decode(tokenIds),
    tokenIds,
    finishReason: generation.finishReasons[index] ?? "length"
  }))
  const newTokens = completions.reduce((sum, completion) => sum + completion.tokenIds.length, 0)
  return { completions, newTokens, seconds, tokensPerSecond: seconds > 0 ? newTokens / seconds : 0 } satisfies CompletionRun
})

/** One line of a log: whitespace runs shown as one space (newlines as ⏎), long text cut in the middle. */
export const preview = (text: string, max = 160): string => {
  const flat = text.replace(/\r?\n/g, " ⏎ ").replace(/\s+/g, " ").trim()
  if (flat.length <= max) return flat
  const head = Math.ceil((max - 3) * 0.6)
  return `${flat.slice(0, head).trimEnd()} … ${flat.slice(flat.length - (max - 3 - head)).trimStart()}`
}
