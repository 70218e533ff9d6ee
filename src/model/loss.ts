/**
 * The causal-LM loss of transformers' `Qwen2ForCausalLM`, and its gradients.
 *
 * transformers shifts inside: logits at position t are scored against labels[t + 1],
 * labels of -100 are ignored, and the loss is the mean over every scored token of the
 * batch (not a mean of per-sequence means). Here the head runs only at scored positions:
 * at a vocabulary of 151,936 the [tokens × vocab] logits are most of a training step.
 *
 * The head and cross-entropy are one custom-gradient op: the forward pass leaves
 * `softmax − onehot` in the logits' own memory, and the backward pass is two matmuls,
 * instead of tfjs's generic gradients through max/exp/log/gather, each of which would
 * materialise another [tokens × vocab] tensor.
 */
import * as tf from "@tensorflow/tfjs-core"
import { readView, rewriteTensor } from "../backend/in-place.ts"
import { decode, embed, finalNorm, headWeight, param, type ParamSource, type Qwen2, type Step, type TokenBatch } from "./qwen2.ts"
import { IGNORE_INDEX } from "../constants.ts"


export interface LossOptions {
  /**
   * What the summed token losses are divided by. Defaults to the number of scored tokens
   * in this batch; under gradient accumulation pass the count over all micro-batches.
   */
  readonly normalizer?: number
  /**
   * A weight per scored token, in `scoredPositions` order: the loss is then Σ wᵢ·CEᵢ
   * (`normalizer` is ignored). Preference losses (src/dpo/) give each token its
   * sequence's share of the gradient this way.
   */
  readonly tokenWeights?: Float64Array
  /** The embedding rows of the batch's ids, looked up by the caller (see `lossAndGrads`). */
  readonly embeddings?: tf.Tensor2D
  /** Make the loss differentiable (the head computes its gradients as it goes). */
  readonly gradients?: boolean
  /** Scored positions per pass through the head (default: about 64 M logits a pass). */
  readonly headRows?: number
  /** NEFTune: noise [B*T*H] added to the input embeddings (training only; see src/train/neftune.ts). */
  readonly embeddingNoise?: Float32Array
  /** LoRA dropout of each adapted module's input (training only; see `Step`). */
  readonly dropout?: Step["dropout"]
}

export interface ScoredPositions {
  /** Flat [B*T] indices of the positions whose next label is scored. */
  readonly rows: Int32Array
  /** The label each of those positions is scored against. */
  readonly targets: Int32Array
}

/** The shift: position t of row b is scored against labels[b, t + 1] unless that is -100. */
export const scoredPositions = (labels: Int32Array, batchSize: number, seqLen: number): ScoredPositions => {
  const rows: Array<number> = []
  const targets: Array<number> = []
  for (let b = 0; b < batchSize; b++) {
    for (let t = 0; t + 1 < seqLen; t++) {
      const label = labels[b * seqLen + t + 1] ?? IGNORE_INDEX
      if (label === IGNORE_INDEX) continue
      rows.push(b * seqLen + t)
      targets.push(label)
    }
  }
  return { rows: Int32Array.from(rows), targets: Int32Array.from(targets) }
}

/** 2^-k for k = 0..1075, the exponent part of `expNonPositive`. */
const NEGATIVE_POWERS_OF_TWO = Float64Array.from({ length: 1076 }, (_, k) => 2 ** -k)
// ln 2 split so that k·LN2_HIGH is exact for the k that occur (Cody and Waite's reduction).
const LN2_HIGH = 0.6931471803691238
const LN2_LOW = 1.9082149292705877e-10

/**
 * e^x for x ≤ 0, to within 1.1e-7 relative down to −708 (below float32's rounding, which
 * is where the result goes; float32 itself is 0 below −104), about twice as fast as
 * `Math.exp` in these loops. x = k·ln2 + r with |r| ≤ ln2/2; e^r by its Taylor series
 * to r⁷ (error under 5e-9); 2^k from a table. Below −745 the result is 0, as in
 * float64; NaN stays NaN.
 */
export const expNonPositive = (x: number): number => {
  if (x < -745) return 0
  const k = (x * Math.LOG2E - 0.5) | 0 // rounds toward zero, so ⌈x·log2e − ½⌉ ≈ round(x·log2e)
  const r = x - k * LN2_HIGH - k * LN2_LOW
  const poly = 1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040)))))))
  return poly * NEGATIVE_POWERS_OF_TWO[-k]!
}

/**
 * In place: logits → softmax − onehot(target), along rows ([N, V]) or along columns
 * ([V, N], one token per column). Returns −log softmax at each target.
 *
 * Why JS: on wasm each elementwise op over [N × V] costs 25–40 ns an element (exp,
 * broadcast sub and div, cast); these three passes cost about 13 together. Sums are in
 * float64; exp is `expNonPositive` (every argument is a logit minus its column's max).
 */
const softmaxMinusOneHot = (values: Float32Array, targets: Int32Array, vocab: number, layout: "rows" | "columns"): Float64Array => {
  const n = targets.length
  const at = layout === "rows" ? (token: number, i: number) => i * vocab + token : (token: number, i: number) => token * n + i
  const max = new Float64Array(n).fill(-Infinity)
  const sum = new Float64Array(n)
  const picked = Float64Array.from(targets, (target, i) => {
    if (target < 0 || target >= vocab) throw new RangeError(`label ${target} is outside the vocabulary of ${vocab}`)
    return values[at(target, i)]!
  })
  if (layout === "rows") {
    for (let i = 0; i < n; i++) {
      const row = values.subarray(i * vocab, (i + 1) * vocab)
      let m = -Infinity
      for (let v = 0; v < vocab; v++) if (row[v]! > m) m = row[v]!
      let total = 0
      for (let v = 0; v < vocab; v++) total += row[v] = expNonPositive(row[v]! - m)
      const scale = 1 / total
      for (let v = 0; v < vocab; v++) row[v] = row[v]! * scale
      max[i] = m
      sum[i] = total
    }
  } else {
    for (let v = 0; v < vocab; v++) {
      const offset = v * n
      for (let i = 0; i < n; i++) if (values[offset + i]! > max[i]!) max[i] = values[offset + i]!
    }
    for (let v = 0; v < vocab; v++) {
      const offset = v * n
      for (let i = 0; i < n; i++) {
        const e = expNonPositive(values[offset + i]! - max[i]!)
        values[offset + i] = e
        sum[i] = sum[i]! + e
      }
    }
    const scale = sum.map((total) => 1 / total)
    for (let v = 0; v < vocab; v++) {
      const offset = v * n
      for (let i = 0; i < n; i++) values[offset + i] = values[offset + i]! * scale[i]!
    }
  }
  targets.forEach((target, i) => (values[at(target, i)] = values[at(target, i)]! - 1))
  return picked.map((logit, i) => Math.log(sum[i]!) + max[i]! - logit)
}

/**
 * Scored positions per pass through the head. One pass holds [rows × vocab] logits (then
 * the gradient direction in the same memory) and, on wasm, a transposed copy of them for
 * dh: 441 rows at Qwen2.5's vocabulary, about 256 MB each. A batch of 5 GSM8K examples
 * can score 2,000 positions: 1.2 GB of logits at once would not fit beside the rest.
 */
const HEAD_CHUNK_ELEMENTS = 64 * 2 ** 20
const headRows = (vocab: number, options: LossOptions): number =>
  Math.max(1, options.headRows ?? Math.floor(HEAD_CHUNK_ELEMENTS / vocab))

/**
 * One pass of the head: logits of normed hidden states h [n, H], turned in place into the
 * gradient direction softmax − onehot; returns it and Σ −log softmax at the targets.
 * Tied to the embedding E [V, H], the logits are computed transposed, E @ hᵀ = [V, n]:
 * E is then the product's left operand, which wasm neither transposes nor packs (a 0.5B
 * model's embedding is 545 MB). Untied, W is [H, V] and h @ W is direct.
 */
const headPass = (h: tf.Tensor2D, weight: tf.Tensor2D, targets: Int32Array, vocab: number, tied: boolean) => {
  const logits = tied ? tf.matMul(weight, h, false, true) : tf.matMul(h, weight) // [V, n] or [n, V]
  let losses: Float64Array = new Float64Array(0)
  const direction = rewriteTensor(logits, (values) => {
    losses = softmaxMinusOneHot(values, targets, vocab, tied ? "columns" : "rows")
  })
  return { direction, losses }
}

const sum = (values: ArrayLike<number>) => {
  let total = 0
  for (let i = 0; i < values.length; i++) total += values[i]!
  return total
}

/** Forward only: −log softmax at each scored row's target, pass by pass. */
const headTokenLosses = (h: tf.Tensor2D, weight: tf.Tensor2D, targets: Int32Array, vocab: number, tied: boolean, rows: number): Float64Array => {
  const out = new Float64Array(targets.length)
  for (let start = 0; start < targets.length; start += rows) {
    const end = Math.min(targets.length, start + rows)
    tf.tidy(() => {
      const { direction, losses } = headPass(tf.slice(h, [start, 0], [end - start, -1]), weight, targets.subarray(start, end), vocab, tied)
      direction.dispose()
      out.set(losses, start)
    })
  }
  return out
}

/**
 * What becomes of the head weight's gradient: nothing (frozen), summed over the passes on
 * the backend (`dW` in the result), or handed to a function slice by slice as soon as a
 * slice exists (the function owns it). The layer-wise loop adds the slices into JS
 * memory: on the wasm heap a [V × H] buffer per pass does not fit the holes the freed
 * logits leave, which small allocations have split, so the heap would grow every pass.
 * A slice covers vocabulary entries `start`, `start + 1`, …: rows of a tied head's
 * [V, H] gradient, columns of an untied one's [H, V]. No slice is larger than a pass's logits.
 */
export type WeightGradient = "none" | "sum" | ((slice: tf.Tensor, start: number) => void)

/**
 * The head weight's gradient for this pass, `direction` times `scaledH`, in slices of at
 * most a quarter of a pass's logits: together with their share of `direction`, they fit
 * in the hole its transposed copy (for dh) leaves, so the heap does not grow for them.
 */
const gradientSlices = (direction: tf.Tensor2D, scaledH: tf.Tensor2D, tied: boolean, vocab: number, take: (slice: tf.Tensor, start: number) => void) => {
  const width = scaledH.shape[1]!
  const step = Math.max(1, Math.floor(HEAD_CHUNK_ELEMENTS / 4 / width))
  for (let start = 0; start < vocab; start += step) {
    const size = Math.min(step, vocab - start)
    take(tf.tidy(() =>
      tied
        ? tf.matMul(tf.slice(direction, [start, 0], [size, -1]), scaledH) // [size, H] rows of [V, H]
        : tf.matMul(scaledH, tf.slice(direction, [0, start], [-1, size]), true, false) // [H, size] columns of [H, V]
    ), start)
  }
}

/**
 * Every pass of the head over h [N, H]: the weighted sum of the token losses, dh [N, H]
 * and the weight's gradient as `weightGradient` asks, each token's share times its
 * weight (`scale`: one for all, or one per token). Only dh and dW outlive a pass, never
 * all the logits.
 */
const headPasses = (h: tf.Tensor2D, weight: tf.Tensor2D, targets: Int32Array, vocab: number, tied: boolean, scale: number | Float64Array, rows: number, weightGradient: WeightGradient) => {
  let total = 0
  const dhParts: Array<tf.Tensor> = []
  let dW: tf.Tensor | undefined
  for (let start = 0; start < targets.length; start += rows) {
    const end = Math.min(targets.length, start + rows)
    const pass = tf.tidy(() => {
      const hc = tf.slice(h, [start, 0], [end - start, -1])
      const { direction, losses } = headPass(hc, weight, targets.subarray(start, end), vocab, tied)
      const weights = typeof scale === "number" ? undefined : scale.subarray(start, end)
      const loss = weights === undefined ? sum(losses) * (scale as number) : sum(losses.map((l, i) => l * weights[i]!))
      // A scalar, or a column [n, 1] that scales each token's row.
      const factor = weights === undefined ? scale as number : tf.tensor2d(Float32Array.from(weights), [weights.length, 1])
      const dh = tf.mul(tied ? tf.matMul(direction, weight, true, false) : tf.matMul(direction, weight, false, true), factor) // [n, H]
      if (weightGradient === "none") return { dh, dW: undefined, loss }
      const scaledH = tf.mul(hc, factor) as tf.Tensor2D // scale the small operand, not the [n × V] one
      if (typeof weightGradient === "function") {
        gradientSlices(direction as tf.Tensor2D, scaledH, tied, vocab, weightGradient)
        return { dh, dW: undefined, loss }
      }
      const dWPass = tied ? tf.matMul(direction, scaledH) : tf.matMul(scaledH, direction, true, false) // [V, H] or [H, V]
      return { dh, dW: dWPass, loss }
    })
    total += pass.loss
    dhParts.push(pass.dh)
    if (pass.dW === undefined) continue
    if (dW === undefined) dW = pass.dW
    else {
      dW = addInPlace(dW, pass.dW)
      pass.dW.dispose()
    }
  }
  const dh = dhParts.length === 1 ? dhParts[0]! : tf.concat(dhParts, 0)
  if (dhParts.length > 1) dhParts.forEach((part) => part.dispose())
  return { total, dh, dW }
}

/**
 * Training: the loss Σ/normalizer (or Σ wᵢ·CEᵢ) as one custom-gradient op whose gradients are computed
 * during the forward pass (`headPasses`); the backward pass hands them out. Given
 * `outside`, the op takes h alone and the weight's gradient goes there instead: "none"
 * for a frozen head (LoRA), or a function that takes each pass's share.
 */
const headCrossEntropy = (targets: Int32Array, vocab: number, tied: boolean, scale: number | Float64Array, rows: number, outside?: { weight: tf.Tensor2D; gradient: WeightGradient }) =>
  tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const h = args[0] as tf.Tensor2D
    const weight = outside?.weight ?? (args[1] as tf.Tensor2D)
    const { total, dh, dW } = headPasses(h, weight, targets, vocab, tied, scale, rows, outside?.gradient ?? "sum")
    // Outside `save`: kept past the caller's tidy, and handed to the tape as they are.
    tf.keep(dh)
    if (dW !== undefined) tf.keep(dW)
    return {
      value: tf.scalar(total),
      gradFunc: (dy: tf.Tensor) => {
        // dh flows on into the layers' gradients, which the tape tidies: hand it a new
        // tensor (kept ones are never tidied). dW is the weight's gradient itself, and
        // dy is 1 when this loss is what is differentiated (lossAndGrads).
        const scaledDh = tf.mul(dh, dy)
        dh.dispose()
        if (dW === undefined) return [scaledDh]
        if (dy.dataSync()[0] === 1) return [scaledDh, dW]
        const scaledDw = tf.mul(dW, dy)
        dW.dispose()
        return [scaledDh, scaledDw]
      }
    }
  })

/** target += addend, in place where the backend allows (`target` is a fresh tensor). */
const addInPlace = (target: tf.Tensor, addend: tf.Tensor): tf.Tensor =>
  rewriteTensor(target, (values) => {
    const source = readView(addend)
    for (let i = 0; i < values.length; i++) values[i] = values[i]! + source[i]!
  })

/** What the head's gradient pass needs to know beyond the loss options. */
interface HeadOptions extends LossOptions {
  /**
   * The head weight's gradient: on the tape ("sum", the default), never computed
   * ("none": frozen), or handed out pass by pass (see `WeightGradient`).
   */
  readonly headGradient?: WeightGradient
}

/**
 * The loss from the last layer's output [B*T, H]: final norm and head at the scored
 * positions. Differentiable with `gradients`; otherwise a number only.
 */
const lossFromHidden = (source: ParamSource, hidden: tf.Tensor2D, batch: Pick<TokenBatch, "batchSize" | "seqLen">, labels: Int32Array, options: HeadOptions): tf.Scalar => {
  const { rows, targets } = scoredPositions(labels, batch.batchSize, batch.seqLen)
  const normalizer = options.normalizer ?? rows.length
  if (options.tokenWeights !== undefined && options.tokenWeights.length !== rows.length) {
    throw new RangeError(`${options.tokenWeights.length} token weights for ${rows.length} scored tokens`)
  }
  const scale = options.tokenWeights ?? 1 / normalizer
  // Nothing scored: a zero still connected to the weights (so gradients exist, all zero);
  // the + 0 turns the -0 of a negative sum times zero into 0.
  if (rows.length === 0) return tf.add(tf.mul(tf.sum(hidden), 0), 0) as tf.Scalar
  const selected = tf.gather(hidden, tf.tensor1d(rows, "int32")) as tf.Tensor2D // [N, H]
  const { weight, tied } = headWeight(source)
  const normed = finalNorm(source, selected)
  const vocab = source.config.vocab_size
  const passRows = headRows(vocab, options)
  if (options.gradients === true) {
    const gradient = options.headGradient ?? "sum"
    if (gradient === "sum") return headCrossEntropy(targets, vocab, tied, scale, passRows)(normed, weight) as tf.Scalar
    return headCrossEntropy(targets, vocab, tied, scale, passRows, { weight: weight as tf.Tensor2D, gradient })(normed) as tf.Scalar
  }
  const losses = headTokenLosses(normed, weight as tf.Tensor2D, targets, vocab, tied, passRows)
  return tf.scalar(typeof scale === "number" ? sum(losses) * scale : sum(losses.map((l, i) => l * scale[i]!)))
}

/** Each scored token's −log softmax at its target, forward only, in `scoredPositions` order (with the positions). */
export const tokenLossesFromHidden = (source: ParamSource, hidden: tf.Tensor2D, batch: Pick<TokenBatch, "batchSize" | "seqLen">, labels: Int32Array, options: Pick<LossOptions, "headRows"> = {}): ScoredPositions & { readonly losses: Float64Array } => {
  const scored = scoredPositions(labels, batch.batchSize, batch.seqLen)
  let losses: Float64Array = new Float64Array(0)
  if (scored.rows.length > 0) {
    tf.tidy(() => {
      const selected = tf.gather(hidden, tf.tensor1d(scored.rows, "int32")) as tf.Tensor2D
      const { weight, tied } = headWeight(source)
      const vocab = source.config.vocab_size
      losses = headTokenLosses(finalNorm(source, selected), weight as tf.Tensor2D, scored.targets, vocab, tied, headRows(vocab, options))
    })
  }
  return { ...scored, losses }
}

/**
 * The loss as a scalar tensor. With `gradients` (what `lossAndGrads` asks for) it is
 * differentiable with respect to the model's variables; otherwise it is a number only.
 */
export const causalLmLoss = (model: ParamSource, batch: TokenBatch, labels: Int32Array, options: HeadOptions = {}): tf.Scalar =>
  tf.tidy(() => {
    const { hidden } = decode(model, batch, {
      ...(options.embeddings !== undefined && { embeddings: options.embeddings }),
      ...(options.dropout !== undefined && { dropout: options.dropout })
    })
    return lossFromHidden(model, hidden, batch, labels, options)
  })

export interface LossAndGrads {
  readonly loss: number
  /** Scored tokens in this batch (the default normalizer). */
  readonly tokens: number
  /** d loss / d parameter, by Hugging Face name, in model layout. The caller disposes them. */
  readonly grads: Map<string, tf.Tensor>
}

let nextEmbeddingsId = 0

export const EMBEDDING = "model.embed_tokens.weight"
export const FINAL_NORM = "model.norm.weight"

/** The parameters that train: an adapter's alone when the model has one (the base is frozen), else all. */
export const trainableNames = (model: Qwen2): ReadonlySet<string> =>
  new Set(model.adapter === undefined ? model.specs.map((spec) => spec.name) : model.adapter.specs.map((spec) => spec.name))

/** The model's input embeddings for `batch`, plus NEFTune's noise when given ([B*T*H]). */
const inputEmbeddings = (model: ParamSource, ids: Int32Array, noise: Float32Array | undefined): tf.Tensor2D =>
  tf.tidy(() => {
    const looked = embed(model, ids)
    return noise === undefined ? looked : tf.add(looked, tf.tensor2d(noise, looked.shape))
  })

/**
 * One forward and backward pass over the whole model, on the tape: the reference the
 * layer-wise loop (src/train/layerwise.ts) is tested against.
 *
 * The embedding lookup happens before the tape, and its rows enter as a variable of their
 * own: their gradient ([B*T, H]) is then added into the embedding's gradient row by row,
 * in place. tfjs's own gradient of `gather` is a dense [vocab × hidden] tensor, added to
 * the (tied) head's dense gradient: two more vocab-sized buffers (545 MB each at 0.5B)
 * and a pass over them, for a few hundred rows of change. With an adapter only its
 * weights get gradients, and the frozen head computes none.
 */
export const lossAndGrads = (model: Qwen2, batch: TokenBatch, labels: Int32Array, options: LossOptions = {}): LossAndGrads => {
  const byVariable = new Map<string, string>()
  model.params.forEach((variable, name) => byVariable.set(variable.name, name))
  const trainable = trainableNames(model)
  const looked = inputEmbeddings(model, batch.inputIds, options.embeddingNoise)
  const embeddings = trainable.has(EMBEDDING) ? tf.variable(looked, true, `embeddings_${nextEmbeddingsId++}`) : looked
  if (embeddings !== looked) looked.dispose()
  const { weight } = headWeight(model)
  const headName = [...model.params].find(([, variable]) => variable === weight)?.[0] ?? EMBEDDING
  try {
    const variables = [...model.params].filter(([name]) => trainable.has(name)).map(([, variable]) => variable)
    const { value, grads } = tf.variableGrads(
      () => causalLmLoss(model, batch, labels, { ...options, embeddings, gradients: true, headGradient: trainable.has(headName) ? "sum" : "none" }),
      embeddings instanceof tf.Variable ? [...variables, embeddings] : variables
    )
    const loss = value.dataSync()[0] ?? Number.NaN
    value.dispose()
    const rows = embeddings instanceof tf.Variable ? grads[embeddings.name] : undefined
    const named = new Map<string, tf.Tensor>()
    for (const [variableName, grad] of Object.entries(grads)) {
      const name = byVariable.get(variableName)
      if (name === undefined) {
        if (grad !== rows) grad.dispose()
      } else named.set(name, grad)
    }
    // A parameter off every path (no scored token) still gets its zero gradient.
    model.params.forEach((variable, name) => {
      if (trainable.has(name) && !named.has(name)) named.set(name, tf.zerosLike(variable))
    })
    if (rows !== undefined) {
      named.set(EMBEDDING, addRowsInPlace(named.get(EMBEDDING)!, batch.inputIds, rows))
      rows.dispose()
    }
    return { loss, tokens: scoredPositions(labels, batch.batchSize, batch.seqLen).rows.length, grads: named }
  } finally {
    embeddings.dispose()
  }
}

/** The head's part of a layer-wise step: what `headLossAndGrads` returns. */
export interface HeadGradients {
  readonly loss: number
  /** d loss / d hidden [B*T, H]: zero at the positions that are not scored. */
  readonly dHidden: tf.Tensor2D
  /** The final norm's gradient, when it trains. The caller disposes it. */
  readonly norm: tf.Tensor | undefined
}

/**
 * The loss from the last layer's output, and its gradients: with respect to `hidden`, to
 * the final norm when it trains, and to the head weight when `headGradient` takes it
 * (pass by pass, see `WeightGradient`). The layer-wise loop's last step before its
 * backward pass through the layers.
 */
export const headLossAndGrads = (
  source: ParamSource,
  hidden: tf.Tensor2D,
  batch: Pick<TokenBatch, "batchSize" | "seqLen">,
  labels: Int32Array,
  options: LossOptions & { readonly trainNorm: boolean; readonly headGradient: Exclude<WeightGradient, "none" | "sum"> | undefined }
): HeadGradients => {
  // Nothing scored: no loss, and nothing reaches the norm or the head.
  if (scoredPositions(labels, batch.batchSize, batch.seqLen).rows.length === 0) {
    return { loss: 0, dHidden: tf.zerosLike(hidden), norm: undefined }
  }
  const xs = [hidden, ...(options.trainNorm ? [param(source, FINAL_NORM)] : [])]
  const { value, grads } = tf.valueAndGrads((...args: Array<tf.Tensor>) => {
    // The tape follows the tensors it is given: the trained norm stands in for the source's own.
    const params = new Map(source.params)
    if (options.trainNorm) params.set(FINAL_NORM, args[1]!)
    return lossFromHidden({ config: source.config, params }, args[0] as tf.Tensor2D, batch, labels, { ...options, gradients: true, headGradient: options.headGradient ?? "none" })
  })(xs)
  const loss = value.dataSync()[0] ?? Number.NaN
  value.dispose()
  return { loss, dHidden: grads[0] as tf.Tensor2D, norm: options.trainNorm ? grads[1] : undefined }
}

/** The loss from the last layer's output, forward only: evaluation in the layer-wise loop. */
export const lossFromLastHidden = (source: ParamSource, hidden: tf.Tensor2D, batch: Pick<TokenBatch, "batchSize" | "seqLen">, labels: Int32Array, normalizer?: number): number =>
  tf.tidy(() => lossFromHidden(source, hidden, batch, labels, normalizer === undefined ? {} : { normalizer }).dataSync()[0] ?? Number.NaN)

/** target[ids[r]] += rows[r] for each row r, in place where the backend allows (`target` is a fresh gradient). */
const addRowsInPlace = (target: tf.Tensor, ids: Int32Array, rows: tf.Tensor): tf.Tensor => {
  const width = target.shape[1] ?? 0
  const vocab = target.shape[0] ?? 0
  return rewriteTensor(target, (values) => {
    const source = readView(rows) // taken here: no allocation happens after it
    ids.forEach((id, r) => {
      if (id < 0 || id >= vocab) throw new RangeError(`token id ${id} is outside the vocabulary of ${vocab}`)
      const to = id * width
      const from = r * width
      for (let j = 0; j < width; j++) values[to + j] = values[to + j]! + source[from + j]!
    })
  })
}
