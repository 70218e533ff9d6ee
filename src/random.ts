/**
 * Seeded permutations that match NumPy bit for bit.
 *
 * Why: Hugging Face `datasets`' `Dataset.shuffle(seed=S)` orders rows by
 * `np.random.default_rng(S).permutation(n)`. For our `shuffle` stage to give
 * exactly the row order the HF tutorials show, we reproduce that call rather
 * than use any "equivalent" shuffle.
 *
 * What it mirrors (NumPy 2.x):
 * - `SeedSequence(S).generate_state` (numpy/random/bit_generator.pyx), which
 *   `PCG64(S)` uses to derive its 128-bit state and increment
 * - PCG64: 128-bit LCG with the XSL-RR 128/64 output (numpy/random/src/pcg64),
 *   including how a 32-bit draw buffers the unused half of a 64-bit output
 * - `Generator.shuffle` on a 1-D array (`_shuffle_raw`): Fisher–Yates from the
 *   end, each index drawn by `random_interval`, i.e. masked rejection sampling.
 *   NOT Lemire's method, which `Generator.integers` uses: the two consume the
 *   stream differently, so swapping one for the other silently changes orders.
 */

const MASK32 = 0xffffffffn
const MASK64 = 0xffffffffffffffffn
const PCG_MULTIPLIER = 0x2360ed051fc65da44385df649fccf645n

// SeedSequence's hash constants; all its arithmetic is on uint32.
const POOL_SIZE = 4
const INIT_A = 0x43b0d7e5
const MULT_A = 0x931e8875
const INIT_B = 0x8b51f9dd
const MULT_B = 0x58f38ded
const MIX_MULT_L = 0xca01f9dd
const MIX_MULT_R = 0x4973f715

const toSeedBigInt = (seed: number | bigint): bigint => {
  if (typeof seed === "number" && !Number.isInteger(seed)) {
    throw new RangeError(`seed must be an integer, got ${seed}`)
  }
  const value = BigInt(seed)
  if (value < 0n) throw new RangeError(`seed must be non-negative, got ${value}`)
  return value
}

// NumPy's `_int_to_uint32_array`: little-endian 32-bit words, and `[0]` for 0.
const entropyWords = (entropy: bigint): Array<number> => {
  const words: Array<number> = []
  let rest = entropy
  do {
    words.push(Number(rest & MASK32))
    rest >>= 32n
  } while (rest > 0n)
  return words
}

const mixEntropy = (entropy: ReadonlyArray<number>): Uint32Array => {
  // One running hash constant is shared by every hashmix call, so call order matters.
  let hashConst = INIT_A
  const hashmix = (input: number): number => {
    let value = (input ^ hashConst) >>> 0
    hashConst = Math.imul(hashConst, MULT_A) >>> 0
    value = Math.imul(value, hashConst) >>> 0
    return (value ^ (value >>> 16)) >>> 0
  }
  const mix = (x: number, y: number): number => {
    const result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0
    return (result ^ (result >>> 16)) >>> 0
  }

  const pool = new Uint32Array(POOL_SIZE)
  for (let i = 0; i < POOL_SIZE; i++) pool[i] = hashmix(entropy[i] ?? 0)
  for (let src = 0; src < POOL_SIZE; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) {
      if (src !== dst) pool[dst] = mix(pool[dst]!, hashmix(pool[src]!))
    }
  }
  for (let src = POOL_SIZE; src < entropy.length; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst]!, hashmix(entropy[src]!))
  }
  return pool
}

/** `np.random.SeedSequence(entropy).generate_state(nWords)` (uint32 words). */
export const seedSequenceState = (entropy: number | bigint, nWords: number): Uint32Array => {
  const pool = mixEntropy(entropyWords(toSeedBigInt(entropy)))
  const state = new Uint32Array(nWords)
  let hashConst = INIT_B
  for (let i = 0; i < nWords; i++) {
    let value = (pool[i % POOL_SIZE]! ^ hashConst) >>> 0
    hashConst = Math.imul(hashConst, MULT_B) >>> 0
    value = Math.imul(value, hashConst) >>> 0
    state[i] = (value ^ (value >>> 16)) >>> 0
  }
  return state
}

/** NumPy's PCG64 bit generator (`np.random.PCG64`). */
export class Pcg64 {
  #state = 0n
  readonly #inc: bigint
  // NumPy keeps the high half of a 64-bit draw for the next 32-bit request.
  #bufferedUint32: number | undefined = undefined

  /** `pcg64_set_seed(initState, initSeq)`: the raw PCG seeding, before any SeedSequence. */
  constructor(initState: bigint, initSeq: bigint) {
    this.#inc = BigInt.asUintN(128, (initSeq << 1n) | 1n)
    this.#step()
    this.#state = BigInt.asUintN(128, this.#state + initState)
    this.#step()
  }

  /** Same state as `np.random.PCG64(seed)`. */
  static fromSeed(seed: number | bigint): Pcg64 {
    // generate_state(4, uint64) is 8 uint32 words read pairwise as little-endian uint64s,
    // and pcg64_set_seed treats each pair of uint64s as (high, low) of a 128-bit value.
    const w = Array.from(seedSequenceState(seed, 8), BigInt)
    const u64 = (i: number): bigint => (w[2 * i + 1]! << 32n) | w[2 * i]!
    return new Pcg64((u64(0) << 64n) | u64(1), (u64(2) << 64n) | u64(3))
  }

  /** Matches `np.random.PCG64(...).state["state"]` (state and increment). */
  get state(): { readonly state: bigint; readonly inc: bigint } {
    return { state: this.#state, inc: this.#inc }
  }

  #step(): void {
    this.#state = BigInt.asUintN(128, this.#state * PCG_MULTIPLIER + this.#inc)
  }

  /** Next raw 64-bit output, as `PCG64.random_raw()`. Does not touch the 32-bit buffer, as in NumPy. */
  nextUint64(): bigint {
    this.#step()
    const high = this.#state >> 64n
    const xored = (high ^ this.#state) & MASK64
    const rot = high >> 58n
    return ((xored >> rot) | (xored << ((64n - rot) & 63n))) & MASK64
  }

  /** Next 32-bit output: low half of a fresh 64-bit draw, then its high half. */
  nextUint32(): number {
    const buffered = this.#bufferedUint32
    if (buffered !== undefined) {
      this.#bufferedUint32 = undefined
      return buffered
    }
    const next = this.nextUint64()
    this.#bufferedUint32 = Number(next >> 32n)
    return Number(next & MASK32)
  }
}

// The 32-bit branch of `random_interval`, on plain numbers because it is the shuffle's hot loop.
const intervalUint32 = (rng: Pcg64, max: number): number => {
  if (max === 0) return 0
  const mask = 0xffffffff >>> Math.clz32(max)
  let value: number
  do {
    value = (rng.nextUint32() & mask) >>> 0
  } while (value > max)
  return value
}

/**
 * NumPy's `random_interval(bitgen, max)`: uniform in [0, max] by masked rejection,
 * drawing 32-bit words when max fits in 32 bits and 64-bit words otherwise.
 */
export const randomInterval = (rng: Pcg64, max: bigint): bigint => {
  if (max < 0n || max > MASK64) throw new RangeError(`max must be a uint64, got ${max}`)
  if (max <= MASK32) return BigInt(intervalUint32(rng, Number(max)))
  const mask = (1n << BigInt(max.toString(2).length)) - 1n
  let value: bigint
  do {
    value = rng.nextUint64() & mask
  } while (value > max)
  return value
}

/** `np.random.default_rng(seed).permutation(n)`, hence HF `datasets`' `shuffle(seed=seed)` order. */
export const permutation = (n: number, seed: number | bigint): Uint32Array => {
  if (!Number.isSafeInteger(n) || n < 0 || n > 2 ** 32) {
    throw new RangeError(`permutation size must be an integer in [0, 2^32], got ${n}`)
  }
  const rng = Pcg64.fromSeed(seed)
  const out = new Uint32Array(n)
  for (let i = 0; i < n; i++) out[i] = i
  for (let i = n - 1; i >= 1; i--) {
    const j = intervalUint32(rng, i)
    const tmp = out[i]!
    out[i] = out[j]!
    out[j] = tmp
  }
  return out
}

/**
 * A stream of uniform draws named by a list of integers (a seed, then a step, a layer, …):
 * the same key gives the same numbers on every run and backend, and keys that differ in
 * any place give unrelated streams. LoRA's initial weights, dropout masks and NEFTune's
 * noise come from here, so a resumed run redraws exactly what an uninterrupted one drew.
 *
 * xoshiro128** (Blackman and Vigna), its 128-bit state from NumPy's SeedSequence over
 * the key's 32-bit words: fast enough for a mask per activation, in plain 32-bit
 * arithmetic. Not NumPy's or torch's stream: nothing here is meant to match them.
 */
export class KeyedStream {
  #s0: number
  #s1: number
  #s2: number
  #s3: number

  constructor(key: ReadonlyArray<number>) {
    let entropy = 0n
    key.forEach((word, i) => {
      if (!Number.isInteger(word) || word < 0 || word > 0xffffffff) throw new RangeError(`key words must be uint32, got ${word}`)
      entropy |= BigInt(word) << BigInt(32 * i)
    })
    // A leading 1 keeps [0, 0] and [0] apart.
    const state = seedSequenceState(entropy | (1n << BigInt(32 * key.length)), 4)
    this.#s0 = state[0]!
    this.#s1 = state[1]!
    this.#s2 = state[2]!
    this.#s3 = state[3]!
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0
    const t = this.#s1 << 9
    this.#s2 ^= this.#s0
    this.#s3 ^= this.#s1
    this.#s1 ^= this.#s2
    this.#s0 ^= this.#s3
    this.#s2 ^= t
    this.#s3 = rotl(this.#s3, 11)
    return result
  }

  /** Uniform in [0, 1) on a 2^-24 grid: every value is exact in float32. */
  nextFloat(): number {
    return (this.nextUint32() >>> 8) * 2 ** -24
  }

  /** `count` draws uniform in [low, high), as float32. */
  uniform(count: number, low: number, high: number): Float32Array {
    const out = new Float32Array(count)
    const width = high - low
    for (let i = 0; i < count; i++) out[i] = low + width * ((this.nextUint32() >>> 8) * 2 ** -24)
    return out
  }
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k))
