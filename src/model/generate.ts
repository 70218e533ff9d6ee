/**
 * Text generation with a KV cache: greedy decoding or seeded sampling (temperature,
 * top-k, top-p, applied in transformers' order), stopping on EOS ids, stop strings or
 * `maxNewTokens`. Prompts of different lengths are batched with left padding; as in
 * transformers' `generate`, a padded row's position ids count its real tokens only. A
 * row that ends leaves the batch, and the next prompt waiting takes its place
 * (continuous batching), so short answers never wait for long ones.
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
  /**
   * Seeds the sampler: the same seed and logits give the same tokens on every run. Each
   * prompt draws from a stream of its own (the seed and its index), whatever the batch.
   */
  readonly seed?: number
  /** Defaults to the config's `eos_token_id`. */
  readonly eosTokenIds?: ReadonlyArray<number>
  /** Generation stops once a row's new text contains one of these. Needs `decode`. */
  readonly stopStrings?: ReadonlyArray<string>
  readonly decode?: (ids: ReadonlyArray<number>) => string
  /** Fills left padding and finished rows; defaults to pad, then EOS, then 0. */
  readonly padTokenId?: number
  readonly useCache?: boolean
  /** Prompts in the batch at once (continuous batching); all of them when absent. */
  readonly batchSize?: number
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
export const sampler = (options: { temperature?: number; topK?: number; topP?: number; seed?: number | bigint }): TokenChooser => {
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

/** Sequences left-padded to the longest, as one batch. */
const leftPadded = (sequences: ReadonlyArray<ReadonlyArray<number>>, pad: number): TokenBatch => {
  const b = sequences.length
  const t = Math.max(...sequences.map((sequence) => sequence.length))
  const inputIds = new Int32Array(b * t).fill(pad)
  const attentionMask = new Int32Array(b * t)
  const positionIds = new Int32Array(b * t).fill(1)
  sequences.forEach((sequence, row) => {
    const offset = row * t + t - sequence.length
    inputIds.set(sequence, offset)
    attentionMask.fill(1, offset, (row + 1) * t)
    // transformers' rule, cumsum(mask) - 1: a row's positions count its real tokens; padding stays at 1.
    positionIds.set(Int32Array.from(sequence, (_, i) => i), offset)
  })
  return { batchSize: b, seqLen: t, inputIds, attentionMask, positionIds }
}

/** Logits of each row's last position, [B][V], and the grown cache (kept; the caller disposes it). */
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

/** The cache with `columns` masked positions put before every row's (so that two caches line up). */
const padLeft = (cache: KVCache, rows: number, columns: number): KVCache => {
  if (columns === 0) return cache
  const keyMask = new Int32Array(rows * (cache.length + columns))
  for (let row = 0; row < rows; row++) {
    keyMask.set(cache.keyMask.subarray(row * cache.length, (row + 1) * cache.length), row * (cache.length + columns) + columns)
  }
  const layers = cache.layers.map((layer) => tf.tidy(() => ({
    keys: tf.pad(layer.keys, [[0, 0], [0, 0], [columns, 0], [0, 0]]),
    valuesT: tf.pad(layer.valuesT, [[0, 0], [0, 0], [0, 0], [columns, 0]])
  })))
  return { layers, keyMask, length: cache.length + columns }
}

/** Two caches' rows, one after the other (the inputs are left as they are). */
const joinCaches = (first: KVCache, firstRows: number, second: KVCache, secondRows: number): KVCache => {
  const length = Math.max(first.length, second.length)
  const a = padLeft(first, firstRows, length - first.length)
  const b = padLeft(second, secondRows, length - second.length)
  const keyMask = new Int32Array((firstRows + secondRows) * length)
  keyMask.set(a.keyMask.subarray(0, firstRows * length))
  keyMask.set(b.keyMask.subarray(0, secondRows * length), firstRows * length)
  const layers = a.layers.map((layer, i) => ({
    keys: tf.concat([layer.keys, b.layers[i]!.keys], 0),
    valuesT: tf.concat([layer.valuesT, b.layers[i]!.valuesT], 0)
  }))
  if (a !== first) disposeCache(a)
  if (b !== second) disposeCache(b)
  return { layers, keyMask, length }
}

/**
 * The cache of the rows `keep` (indices into `rows` rows), without the leading positions
 * that none of them can see (those of rows that have left).
 */
const keepRows = (cache: KVCache, keep: ReadonlyArray<number>): KVCache => {
  const s = cache.length
  let dead = s
  for (const row of keep) {
    const first = cache.keyMask.subarray(row * s, (row + 1) * s).indexOf(1)
    dead = Math.min(dead, first < 0 ? s : first)
  }
  const length = s - dead
  const keyMask = new Int32Array(keep.length * length)
  keep.forEach((row, i) => keyMask.set(cache.keyMask.subarray(row * s + dead, (row + 1) * s), i * length))
  const layers = cache.layers.map((layer) => tf.tidy(() => {
    const index = tf.tensor1d(Int32Array.from(keep), "int32")
    const keys = tf.gather(layer.keys, index, 0)
    const valuesT = tf.gather(layer.valuesT, index, 0)
    return {
      keys: dead === 0 ? keys : tf.slice(keys, [0, 0, dead, 0], [-1, -1, length, -1]),
      valuesT: dead === 0 ? valuesT : tf.slice(valuesT, [0, 0, 0, dead], [-1, -1, -1, length])
    }
  }))
  return { layers, keyMask, length }
}

/** One prompt on its way through the batch. */
interface Row {
  readonly index: number
  /** Its prompt and what it has generated so far. */
  readonly sequence: Array<number>
  readonly generated: Array<number>
  readonly choose: TokenChooser
}

/** A seeded sampler of its own for each prompt: what a prompt draws does not depend on its batch. */
const chooserFor = (options: GenerateOptions, index: number): TokenChooser =>
  options.doSample === true
    ? sampler({ ...options, seed: (BigInt(index) << 64n) | BigInt.asUintN(64, BigInt(options.seed ?? 0)) })
    : argmax

/**
 * A generation in progress, a step at a time (so that a caller can report progress and
 * be interrupted between steps). Dispose it when done or abandoned.
 *
 * Continuous batching: at most `batchSize` prompts are in the batch at once. A row leaves
 * as soon as it stops (EOS, a stop string or its token limit), and the next prompt
 * waiting takes its place: its prompt runs through the model on its own, and its cache
 * joins the batch's, both aligned on the right with masked positions on the left. A
 * row's tokens are those it would get alone: padding never changes what a row sees.
 */
export class GenerationRun {
  readonly #model: Qwen2
  readonly #prompts: ReadonlyArray<ReadonlyArray<number>>
  readonly #options: GenerateOptions
  readonly #eos: ReadonlySet<number>
  readonly #pad: number
  readonly #batchSize: number
  readonly #useCache: boolean
  readonly #tokens: Array<ReadonlyArray<number> | undefined>
  readonly #reasons: Array<FinishReason | undefined>
  #live: Array<Row> = []
  #cache: KVCache | undefined
  #next = 0
  #finished = 0

  constructor(model: Qwen2, prompts: ReadonlyArray<ReadonlyArray<number>>, options: GenerateOptions) {
    if (prompts.some((prompt) => prompt.length === 0)) throw new RangeError("every prompt needs at least one token")
    if ((options.stopStrings ?? []).length > 0 && options.decode === undefined) throw new TypeError("stopStrings needs a decode function")
    if (options.doSample === true) sampler(options) // checks the parameters now, not at the first draw
    const batchSize = options.batchSize ?? prompts.length
    if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`)
    this.#model = model
    this.#prompts = prompts
    this.#options = options
    this.#eos = new Set(options.eosTokenIds ?? eosTokenIds(model.config))
    this.#pad = options.padTokenId ?? model.config.pad_token_id ?? [...this.#eos][0] ?? 0
    this.#batchSize = batchSize
    this.#useCache = options.useCache ?? true
    this.#tokens = prompts.map(() => undefined)
    this.#reasons = prompts.map(() => undefined)
  }

  /** Prompts whose generation has ended. */
  get finished(): number {
    return this.#finished
  }

  get done(): boolean {
    return this.#finished === this.#prompts.length
  }

  /** Runs one forward pass: new prompts' first tokens, or every row's next. Returns the prompts that ended in it. */
  step(): ReadonlyArray<number> {
    if (this.done) return []
    if (this.#options.maxNewTokens <= 0) {
      const ended = this.#prompts.map((_, index) => index)
      ended.forEach((index) => this.#end({ index, sequence: [], generated: [], choose: argmax }, "length"))
      this.#next = this.#prompts.length
      return ended
    }
    const free = this.#batchSize - this.#live.length
    if (free > 0 && this.#next < this.#prompts.length) return this.#admit(Math.min(free, this.#prompts.length - this.#next))
    return this.#advance()
  }

  /** The result, once `done`. */
  result(): Generation {
    if (!this.done) throw new Error("the generation has not ended")
    return { tokens: this.#tokens.map((tokens) => tokens ?? []), finishReasons: this.#reasons.map((reason) => reason ?? "length") }
  }

  dispose(): void {
    disposeCache(this.#cache)
    this.#cache = undefined
  }

  /** The next `count` prompts join the batch: their prompts through the model, their first tokens chosen. */
  #admit(count: number): ReadonlyArray<number> {
    const rows = Array.from({ length: count }, (_, i): Row => {
      const index = this.#next + i
      return { index, sequence: [...this.#prompts[index]!], generated: [], choose: chooserFor(this.#options, index) }
    })
    this.#next += count
    const next = nextLogits(this.#model, leftPadded(rows.map((row) => row.sequence), this.#pad), undefined)
    if (this.#useCache) {
      const joined = this.#cache === undefined ? next.cache : joinCaches(this.#cache, this.#live.length, next.cache, count)
      if (joined !== next.cache) {
        disposeCache(this.#cache)
        disposeCache(next.cache)
      }
      this.#cache = joined
    } else disposeCache(next.cache)
    this.#live = [...this.#live, ...rows]
    return this.#choose(rows, next.rows, this.#live.length - count)
  }

  /** Every row's next token. */
  #advance(): ReadonlyArray<number> {
    const rows = this.#live
    let batch: TokenBatch
    if (this.#useCache) {
      batch = {
        batchSize: rows.length,
        seqLen: 1,
        inputIds: Int32Array.from(rows, (row) => row.sequence.at(-1)!),
        attentionMask: new Int32Array(rows.length).fill(1),
        positionIds: Int32Array.from(rows, (row) => row.sequence.length - 1)
      }
    } else batch = leftPadded(rows.map((row) => row.sequence), this.#pad)
    const next = nextLogits(this.#model, batch, this.#useCache ? this.#cache : undefined)
    if (this.#useCache) disposeCache(this.#cache)
    this.#cache = this.#useCache ? next.cache : undefined
    if (!this.#useCache) disposeCache(next.cache)
    return this.#choose(rows, next.rows, 0)
  }

  /** Chooses `rows`' tokens from their logits (rows start at `offset` in the batch), and lets the ended ones go. */
  #choose(rows: ReadonlyArray<Row>, logits: ReadonlyArray<Float32Array>, offset: number): ReadonlyArray<number> {
    const ended: Array<number> = []
    const keep: Array<number> = []
    const stopStrings = this.#options.stopStrings ?? []
    this.#live.forEach((row, position) => {
      const mine = position - offset
      if (mine < 0 || mine >= rows.length) return keep.push(position)
      const token = row.choose(logits[mine]!)
      row.sequence.push(token)
      row.generated.push(token)
      let reason: FinishReason | undefined
      if (this.#eos.has(token)) reason = "eos"
      else if (stopStrings.length > 0 && stopStrings.some((stop) => this.#options.decode!(row.generated).includes(stop))) reason = "stop_string"
      else if (row.generated.length >= this.#options.maxNewTokens) reason = "length"
      if (reason === undefined) return keep.push(position)
      this.#end(row, reason)
      ended.push(row.index)
    })
    if (ended.length > 0) {
      const survivors = keep.map((position) => this.#live[position]!)
      if (this.#cache !== undefined) {
        const kept = survivors.length > 0 ? keepRows(this.#cache, keep) : undefined
        disposeCache(this.#cache)
        this.#cache = kept
      }
      this.#live = survivors
    }
    return ended
  }

  #end(row: Row, reason: FinishReason): void {
    this.#tokens[row.index] = row.generated
    this.#reasons[row.index] = reason
    this.#finished += 1
  }
}

/** Generates from token-id prompts (see `GenerationRun` for how they are batched). */
export const generate = (model: Qwen2, prompts: ReadonlyArray<ReadonlyArray<number>>, options: GenerateOptions): Generation => {
  const run = new GenerationRun(model, prompts, options)
  try {
    while (!run.done) run.step()
    return run.result()
  } finally {
    run.dispose()
  }
}
