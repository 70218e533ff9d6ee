/**
 * Text generation with a KV cache: greedy decoding or seeded sampling (temperature,
 * top-k, top-p, applied in transformers' order), stopping on EOS ids, stop strings or
 * `maxNewTokens`. Prompts of different lengths are batched with left padding; as in
 * transformers' `generate`, a padded row's position ids count its real tokens only, and
 * a finished row keeps receiving the pad token until every row is done.
 *
 * `useCache: false` re-runs the whole sequence at every step: slower, but it must give
 * exactly the same tokens, which is what the tests check.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Pcg64 } from "../random.ts"
import { eosTokenIds } from "./config.ts"
import { decode, finalNorm, type KVCache, lmHead, type Qwen2, type TokenBatch } from "./qwen2.ts"

export interface GenerateOptions {
  readonly maxNewTokens: number
  /** Sample instead of taking the most likely token. */
  readonly doSample?: boolean
  /** transformers' defaults: 1, 50 and 1. `topK: 0` and `topP: 1` turn those filters off. */
  readonly temperature?: number
  readonly topK?: number
  readonly topP?: number
  /** Seeds the sampler: the same seed and logits give the same tokens on every run. */
  readonly seed?: number
  /** Defaults to the config's `eos_token_id`. */
  readonly eosTokenIds?: ReadonlyArray<number>
  /** Generation stops once a row's new text contains one of these. Needs `decode`. */
  readonly stopStrings?: ReadonlyArray<string>
  readonly decode?: (ids: ReadonlyArray<number>) => string
  /** Fills left padding and finished rows; defaults to pad, then EOS, then 0. */
  readonly padTokenId?: number
  readonly useCache?: boolean
}

export type FinishReason = "eos" | "stop_string" | "length"

export interface Generation {
  /** The new tokens of each row, up to and including what stopped it. */
  readonly tokens: ReadonlyArray<ReadonlyArray<number>>
  readonly finishReasons: ReadonlyArray<FinishReason>
}

/** Picks the next token from one row of logits. */
export type TokenChooser = (logits: Float32Array) => number

const argmax = (logits: Float32Array): number => {
  let best = 0
  for (let i = 1; i < logits.length; i++) if ((logits[i] ?? -Infinity) > (logits[best] ?? -Infinity)) best = i
  return best
}

/** A uniform draw in [0, 1) from 53 random bits, as NumPy's `random()`. */
const uniform = (rng: Pcg64): number => Number(rng.nextUint64() >> 11n) / 2 ** 53

/**
 * Token ids in decreasing order of logit (ties by id), limited to the top `k` and the
 * ids tied with the k-th, as transformers' `logits < kth_value` keeps them. A k-sized
 * heap first, so that a 150k vocabulary is not sorted whole at every step.
 */
const ranked = (logits: Float32Array, k: number): Array<number> => {
  const before = (a: number, b: number) => (logits[b] ?? 0) - (logits[a] ?? 0) || a - b
  if (k <= 0 || k >= logits.length) return Array.from(logits.keys()).sort(before)
  // A min-heap (by `before`) of the best k seen so far; its root is the k-th best.
  const heap: Array<number> = []
  const worse = (i: number, j: number) => before(heap[i] ?? 0, heap[j] ?? 0) > 0
  const swap = (i: number, j: number) => ([heap[i], heap[j]] = [heap[j] ?? 0, heap[i] ?? 0])
  const siftDown = (start: number) => {
    let i = start
    for (;;) {
      const left = 2 * i + 1
      const right = left + 1
      let top = i
      if (left < heap.length && worse(left, top)) top = left
      if (right < heap.length && worse(right, top)) top = right
      if (top === i) return
      swap(i, top)
      i = top
    }
  }
  for (let id = 0; id < logits.length; id++) {
    if (heap.length < k) {
      heap.push(id)
      for (let i = heap.length - 1; i > 0 && worse(i, (i - 1) >> 1); i = (i - 1) >> 1) swap(i, (i - 1) >> 1)
    } else if (before(id, heap[0] ?? 0) < 0) {
      heap[0] = id
      siftDown(0)
    }
  }
  const kth = logits[heap[0] ?? 0] ?? -Infinity
  const tied = Array.from(logits.keys()).filter((id) => logits[id] === kth && !heap.includes(id))
  return [...heap, ...tied].sort(before)
}

/** Temperature → top-k → top-p → softmax → draw, as transformers' logits warpers. */
export const sampler = (options: { temperature?: number; topK?: number; topP?: number; seed?: number }): TokenChooser => {
  const temperature = options.temperature ?? 1
  const topK = options.topK ?? 50
  const topP = options.topP ?? 1
  if (!(temperature > 0)) throw new RangeError(`temperature must be positive, got ${temperature}`)
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`topP must be in (0, 1], got ${topP}`)
  const rng = Pcg64.fromSeed(options.seed ?? 0)
  return (logits) => {
    const order = ranked(logits, topK)
    const max = (logits[order[0] ?? 0] ?? 0) / temperature
    const weights = order.map((id) => Math.exp((logits[id] ?? 0) / temperature - max))
    const total = weights.reduce((a, b) => a + b, 0)
    // top-p keeps the smallest head whose probability reaches topP (at least one token).
    if (topP < 1) {
      let cumulative = 0
      let head = 0
      while (head < weights.length && cumulative < topP * total) cumulative += weights[head++] ?? 0
      weights.length = Math.max(head, 1)
    }
    const mass = weights.reduce((a, b) => a + b, 0)
    let draw = uniform(rng) * mass
    for (let i = 0; i < weights.length; i++) {
      draw -= weights[i] ?? 0
      if (draw < 0) return order[i] ?? 0
    }
    return order[weights.length - 1] ?? 0
  }
}

interface Rows {
  /** Every row's tokens so far, left-padded: [B][P + steps]. */
  readonly tokens: Array<Array<number>>
  readonly masks: Array<Array<number>>
}

/** transformers' position ids for a left-padded row: cumsum(mask) - 1, padding at 1. */
const positionsOf = (mask: ReadonlyArray<number>): Array<number> => {
  let seen = 0
  return mask.map((m) => (m === 0 ? 1 : seen++))
}

const batchOf = (rows: Rows, from: number): TokenBatch => {
  const b = rows.tokens.length
  const t = (rows.tokens[0]?.length ?? 0) - from
  const flat = (perRow: ReadonlyArray<ReadonlyArray<number>>) =>
    Int32Array.from({ length: b * t }, (_, i) => perRow[Math.floor(i / t)]?.[from + (i % t)] ?? 0)
  return {
    batchSize: b,
    seqLen: t,
    inputIds: flat(rows.tokens),
    attentionMask: flat(rows.masks),
    positionIds: flat(rows.masks.map(positionsOf))
  }
}

/** Logits of each row's last position, [B][V], and the grown cache. */
const nextLogits = (model: Qwen2, batch: TokenBatch, cache: KVCache | undefined) => {
  let next: KVCache | undefined
  const logits = tf.tidy(() => {
    const out = decode(model, batch, cache === undefined ? {} : { cache })
    for (const layer of out.cache.layers) {
      tf.keep(layer.keys)
      tf.keep(layer.valuesT)
    }
    next = out.cache
    const last = Int32Array.from({ length: batch.batchSize }, (_, row) => row * batch.seqLen + batch.seqLen - 1)
    const hidden = tf.gather(out.hidden, tf.tensor1d(last, "int32")) as tf.Tensor2D // [B, H]
    return lmHead(model, finalNorm(model, hidden))
  })
  const values = logits.dataSync() as Float32Array
  logits.dispose()
  const vocab = model.config.vocab_size
  const rows = Array.from({ length: batch.batchSize }, (_, row) => values.subarray(row * vocab, (row + 1) * vocab))
  if (next === undefined) throw new Error("decode returned no cache")
  return { rows, cache: next }
}

const disposeCache = (cache: KVCache | undefined): void =>
  cache?.layers.forEach((layer) => {
    layer.keys.dispose()
    layer.valuesT.dispose()
  })

/** Generates from token-id prompts. */
export const generate = (model: Qwen2, prompts: ReadonlyArray<ReadonlyArray<number>>, options: GenerateOptions): Generation => {
  if (prompts.length === 0) return { tokens: [], finishReasons: [] }
  if (prompts.some((prompt) => prompt.length === 0)) throw new RangeError("every prompt needs at least one token")
  const stopStrings = options.stopStrings ?? []
  const decodeText = options.decode
  if (stopStrings.length > 0 && decodeText === undefined) throw new TypeError("stopStrings needs a decode function")
  const eos = new Set(options.eosTokenIds ?? eosTokenIds(model.config))
  const pad = options.padTokenId ?? model.config.pad_token_id ?? [...eos][0] ?? 0
  const choose = options.doSample === true ? sampler(options) : argmax
  const useCache = options.useCache ?? true
  const longest = Math.max(...prompts.map((prompt) => prompt.length))
  const rows: Rows = {
    tokens: prompts.map((prompt) => [...Array<number>(longest - prompt.length).fill(pad), ...prompt]),
    masks: prompts.map((prompt) => [...Array<number>(longest - prompt.length).fill(0), ...prompt.map(() => 1)])
  }
  const generated = prompts.map((): Array<number> => [])
  const reasons: Array<FinishReason | undefined> = prompts.map(() => undefined)
  let cache: KVCache | undefined
  try {
    for (let step = 0; step < options.maxNewTokens && reasons.includes(undefined); step++) {
      const from = useCache && cache !== undefined ? longest + step - 1 : 0
      const next = nextLogits(model, batchOf(rows, from), useCache ? cache : undefined)
      disposeCache(cache)
      cache = useCache ? next.cache : undefined
      if (!useCache) disposeCache(next.cache)
      next.rows.forEach((logits, row) => {
        const done = reasons[row] !== undefined
        const token = done ? pad : choose(logits)
        rows.tokens[row]?.push(token)
        rows.masks[row]?.push(1)
        if (done) return
        const mine = generated[row] ?? []
        mine.push(token)
        if (eos.has(token)) reasons[row] = "eos"
        else if (decodeText !== undefined && stopStrings.length > 0) {
          const text = decodeText(mine)
          if (stopStrings.some((stop) => text.includes(stop))) reasons[row] = "stop_string"
        }
      })
    }
  } finally {
    disposeCache(cache)
  }
  return { tokens: generated, finishReasons: reasons.map((reason) => reason ?? "length") }
}
