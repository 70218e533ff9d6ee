/**
 * Text in, continuations out: the one generation path behind the `generate` stage,
 * `evaluate`'s accuracy and `pipeline generate`. Prompts are encoded as the tokenize
 * stage encodes them (no special tokens added), generated in left-padded batches with
 * the KV cache, and decoded without special tokens and without the prompt, as
 * transformers' text-generation pipeline does with `return_full_text=False`.
 */
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import { type FinishReason, generate } from "../model/generate.ts"
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
   * Batch `i` samples with `seed + i`, so that a run is reproducible for a given seed and
   * batch size (transformers instead draws every batch from one global stream).
   */
  readonly seed?: number | undefined
  /** A row stops once its continuation contains one of these (the stop string is kept). */
  readonly stop?: ReadonlyArray<string> | undefined
  /** Prompts per forward pass. */
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
 * Generates a continuation for each prompt, `batchSize` at a time; `onBatch` hears
 * how many prompts are done after each batch.
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
  const completions: Array<Completion> = []
  let newTokens = 0
  let milliseconds = 0
  for (let start = 0, batch = 0; start < encoded.length; start += options.batchSize, batch++) {
    const rows = encoded.slice(start, start + options.batchSize)
    const began = performance.now()
    const generation = yield* Effect.try({
      try: () =>
        generate(loaded.model, rows, {
          maxNewTokens: options.maxNewTokens,
          doSample: options.doSample,
          ...(options.temperature !== undefined && { temperature: options.temperature }),
          ...(options.topK !== undefined && { topK: options.topK }),
          ...(options.topP !== undefined && { topP: options.topP }),
          ...(options.seed !== undefined && { seed: options.seed + batch }),
          eosTokenIds: loaded.eosTokenIds,
          padTokenId: loaded.padTokenId,
          ...(options.stop !== undefined && options.stop.length > 0 && { stopStrings: options.stop, decode }),
          ...(options.useCache !== undefined && { useCache: options.useCache })
        }),
      catch: (cause) => new StageError({ message: `generation failed: ${cause instanceof Error ? cause.message : String(cause)}`, cause })
    })
    milliseconds += performance.now() - began
    generation.tokens.forEach((tokenIds, row) => {
      newTokens += tokenIds.length
      completions.push({
        prompt: prompts[start + row]!,
        text: decode(tokenIds),
        tokenIds,
        finishReason: generation.finishReasons[row] ?? "length"
      })
    })
    yield* onBatch(completions.length, prompts.length)
  }
  const seconds = milliseconds / 1000
  return { completions, newTokens, seconds, tokensPerSecond: seconds > 0 ? newTokens / seconds : 0 } satisfies CompletionRun
})

/** One line of a log: whitespace runs shown as one space (newlines as ⏎), long text cut in the middle. */
export const preview = (text: string, max = 160): string => {
  const flat = text.replace(/\r?\n/g, " ⏎ ").replace(/\s+/g, " ").trim()
  if (flat.length <= max) return flat
  const head = Math.ceil((max - 3) * 0.6)
  return `${flat.slice(0, head).trimEnd()} … ${flat.slice(flat.length - (max - 3 - head)).trimStart()}`
}
