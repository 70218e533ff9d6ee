/**
 * Qwen2 (and Llama, the same block) in TensorFlow.js, read top-down like nanoGPT:
 * RMSNorm → rotary embedding → grouped-query attention → SwiGLU MLP → decoder layer →
 * model. transformers' `modeling_qwen2.py` (v4.44) is the spec, and parameter names
 * are its own (see `params.ts`, which also explains the [in, out] weight layout).
 *
 * Activations are kept 2D ([B*T, H]) around every projection: tfjs's matMul gradient
 * is wrong for a 3D@2D product, and a 2D product is the one XNNPACK runs fast on wasm.
 * The forward functions create tensors freely; callers wrap them in `tf.tidy`.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { Qwen2Config } from "./config.ts"
import { initialValue, type ParamSpec, parameterSpecs } from "./params.ts"

export interface Qwen2 {
  readonly config: Qwen2Config
  readonly specs: ReadonlyArray<ParamSpec>
  /** Keyed by Hugging Face name; values in model layout. */
  readonly params: ReadonlyMap<string, tf.Variable>
}

/** Token ids and masks, row-major, as typed arrays (the rotary tables are built in JS). */
export interface TokenBatch {
  readonly batchSize: number
  readonly seqLen: number
  /** [B*T] token ids. */
  readonly inputIds: Int32Array
  /** [B*T] 1 for a real token, 0 for padding; all ones when absent. */
  readonly attentionMask?: Int32Array
  /** [B*T]; arange(T) on every row when absent, as in transformers. */
  readonly positionIds?: Int32Array
}

/** One layer's cached keys and values. Keys are kept transposed, ready for q @ kᵀ. */
export interface LayerCache {
  readonly keysT: tf.Tensor4D // [B, nKV, hD, S]
  readonly values: tf.Tensor4D // [B, nKV, S, hD]
}

export interface KVCache {
  readonly layers: ReadonlyArray<LayerCache>
  /** [B*S] attention mask over the cached positions. */
  readonly keyMask: Int32Array
  readonly length: number
}

let nextModelId = 0

/** Wraps tensors (in model layout, by HF name) as the model's variables; takes ownership. */
export const createModel = (config: Qwen2Config, weights: (spec: ParamSpec, index: number) => tf.Tensor): Qwen2 => {
  // tfjs variable names are global: prefix ours so that several models can coexist.
  const prefix = `qwen2_${nextModelId++}`
  const specs = parameterSpecs(config)
  const params = new Map<string, tf.Variable>()
  specs.forEach((spec, index) => {
    const value = weights(spec, index)
    if (value.shape.join() !== spec.shape.join()) {
      value.dispose()
      throw new Error(`${spec.name}: got shape [${value.shape.join(", ")}], expected [${spec.shape.join(", ")}]`)
    }
    params.set(spec.name, tf.variable(value, true, `${prefix}/${spec.name}`, "float32"))
    value.dispose()
  })
  return { config, specs, params }
}

/** A model initialised from its config alone, as transformers does; deterministic in `seed`. */
export const initModel = (config: Qwen2Config, seed = 0): Qwen2 =>
  createModel(config, (spec, index) => initialValue(spec, index, config, seed))

export const disposeModel = (model: Qwen2): void => model.params.forEach((variable) => variable.dispose())

export const param = (model: Qwen2, name: string): tf.Variable => {
  const variable = model.params.get(name)
  if (variable === undefined) throw new Error(`model has no parameter ${name}`)
  return variable
}

// ---------------------------------------------------------------------------------------
// RMSNorm, in float32 as Qwen2RMSNorm computes it (everything here is float32).

export const rmsNorm = (x: tf.Tensor2D, weight: tf.Tensor, eps: number): tf.Tensor2D =>
  tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))), weight)

// ---------------------------------------------------------------------------------------
// Rotary embedding, transformers' layout: the two halves of each head rotate together
// (`rotate_half`), not interleaved pairs. Angles are rounded to float32 at each step as
// torch computes them, so that cos/sin match bit for bit or within an ulp.

const rotaryTables = new WeakMap<Qwen2Config, { cos: Float32Array; sin: Float32Array; positions: number }>()

const rotaryTable = (config: Qwen2Config, positions: number) => {
  const cached = rotaryTables.get(config)
  if (cached !== undefined && cached.positions >= positions) return cached
  const size = Math.max(positions, 2 * (cached?.positions ?? 64))
  const hd = config.head_dim
  const half = hd / 2
  const inverse = Array.from({ length: half }, (_, i) =>
    Math.fround(1 / Math.fround(config.rope_theta ** Math.fround((2 * i) / hd))))
  const cos = new Float32Array(size * hd)
  const sin = new Float32Array(size * hd)
  for (let p = 0; p < size; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * (inverse[i] ?? 0))
      cos[p * hd + i] = cos[p * hd + i + half] = Math.cos(angle)
      sin[p * hd + i] = sin[p * hd + i + half] = Math.sin(angle)
    }
  }
  const table = { cos, sin, positions: size }
  rotaryTables.set(config, table)
  return table
}

const rotaryFor = (config: Qwen2Config, positionIds: Int32Array, b: number, t: number) => {
  const hd = config.head_dim
  const table = rotaryTable(config, positionIds.reduce((a, p) => Math.max(a, p + 1), 1))
  const cos = new Float32Array(b * t * hd)
  const sin = new Float32Array(b * t * hd)
  positionIds.forEach((p, row) => {
    cos.set(table.cos.subarray(p * hd, (p + 1) * hd), row * hd)
    sin.set(table.sin.subarray(p * hd, (p + 1) * hd), row * hd)
  })
  return { cos: tf.tensor4d(cos, [b, t, 1, hd]), sin: tf.tensor4d(sin, [b, t, 1, hd]) }
}

const rotateHalf = (x: tf.Tensor4D): tf.Tensor4D => {
  const half = (x.shape[3] ?? 0) / 2
  const first = tf.slice(x, [0, 0, 0, 0], [-1, -1, -1, half])
  const second = tf.slice(x, [0, 0, 0, half], [-1, -1, -1, half])
  return tf.concat([tf.neg(second), first], 3)
}

const applyRotary = (x: tf.Tensor4D, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor4D =>
  tf.add(tf.mul(x, cos), tf.mul(rotateHalf(x), sin))

// ---------------------------------------------------------------------------------------
// Grouped-query attention. transformers' `repeat_kv` copies each key/value head for
// the `rep` query heads sharing it; instead the rep query heads become extra rows of
// one product with their shared head (tfjs has no gradient for a rank-5 broadcast).

const linear = (model: Qwen2, name: string, x: tf.Tensor2D): tf.Tensor2D => {
  const y = tf.matMul(x, param(model, `${name}.weight`)) as tf.Tensor2D
  const bias = model.params.get(`${name}.bias`)
  return bias === undefined ? y : tf.add<tf.Tensor2D>(y, bias)
}

interface Step {
  readonly b: number
  readonly t: number
  /** Keys visible to this step: cached plus new. */
  readonly s: number
  readonly cos: tf.Tensor4D // [B, T, 1, hD]
  readonly sin: tf.Tensor4D // [B, T, 1, hD]
  readonly mask: tf.Tensor4D // [B, 1, T, S], 0 or -1e9
}

const attention = (model: Qwen2, layer: number, x: tf.Tensor2D, step: Step, cache?: LayerCache) => {
  const { num_attention_heads: nH, num_key_value_heads: nKV, head_dim: hD } = model.config
  const { b, t, s } = step
  const rep = nH / nKV
  const name = `model.layers.${layer}.self_attn`
  const q = applyRotary(tf.reshape(linear(model, `${name}.q_proj`, x), [b, t, nH, hD]), step.cos, step.sin) // [B, T, nH, hD]
  const k = applyRotary(tf.reshape(linear(model, `${name}.k_proj`, x), [b, t, nKV, hD]), step.cos, step.sin) // [B, T, nKV, hD]
  const v = tf.reshape(linear(model, `${name}.v_proj`, x), [b, t, nKV, hD]) // [B, T, nKV, hD]
  const newKeysT = tf.transpose(k, [0, 2, 3, 1]) // [B, nKV, hD, T]
  const newValues = tf.transpose(v, [0, 2, 1, 3]) as tf.Tensor4D // [B, nKV, T, hD]
  const keysT = cache === undefined ? newKeysT : tf.concat([cache.keysT, newKeysT], 3) // [B, nKV, hD, S]
  const values = cache === undefined ? newValues : tf.concat<tf.Tensor4D>([cache.values, newValues], 2) // [B, nKV, S, hD]
  // Scaling q rather than the scores: T·hD products instead of T·S.
  const grouped = tf.reshape(
    tf.transpose(tf.reshape(tf.mul(q, 1 / Math.sqrt(hD)), [b, t, nKV, rep, hD]), [0, 2, 3, 1, 4]), // [B, nKV, rep, T, hD]
    [b * nKV, rep * t, hD]
  ) // [B*nKV, rep*T, hD]
  const scores = tf.matMul(grouped, tf.reshape(keysT, [b * nKV, hD, s])) // [B*nKV, rep*T, S]
  const masked = tf.add(tf.reshape(scores, [b, nH, t, s]), step.mask) // [B, nH, T, S]
  const probs = tf.reshape(tf.softmax(masked), [b * nKV, rep * t, s]) // [B*nKV, rep*T, S]
  const context = tf.matMul(probs, tf.reshape(values, [b * nKV, s, hD])) // [B*nKV, rep*T, hD]
  const merged = tf.reshape<tf.Rank.R2>(
    tf.transpose(tf.reshape(context, [b, nKV, rep, t, hD]), [0, 3, 1, 2, 4]), // [B, T, nKV, rep, hD]
    [b * t, nH * hD]
  ) // [B*T, nH*hD]
  return { out: linear(model, `${name}.o_proj`, merged), cache: { keysT, values } }
}

// ---------------------------------------------------------------------------------------
// SwiGLU MLP: down(silu(gate(x)) * up(x)).

const mlp = (model: Qwen2, layer: number, x: tf.Tensor2D): tf.Tensor2D => {
  const name = `model.layers.${layer}.mlp`
  const gate = linear(model, `${name}.gate_proj`, x) // [B*T, I]
  const silu = tf.mul(gate, tf.sigmoid(gate))
  return linear(model, `${name}.down_proj`, tf.mul(silu, linear(model, `${name}.up_proj`, x))) // [B*T, H]
}

// ---------------------------------------------------------------------------------------
// Decoder layer: pre-norm attention and MLP, each added back to the residual stream.

const decoderLayer = (model: Qwen2, layer: number, hidden: tf.Tensor2D, step: Step, cache?: LayerCache) => {
  const eps = model.config.rms_norm_eps
  const prefix = `model.layers.${layer}`
  const attn = attention(model, layer, rmsNorm(hidden, param(model, `${prefix}.input_layernorm.weight`), eps), step, cache)
  const afterAttn = tf.add<tf.Tensor2D>(hidden, attn.out)
  const normed = rmsNorm(afterAttn, param(model, `${prefix}.post_attention_layernorm.weight`), eps)
  return { hidden: tf.add<tf.Tensor2D>(afterAttn, mlp(model, layer, normed)), cache: attn.cache }
}

// ---------------------------------------------------------------------------------------
// The model: embed → layers → final norm; the head is in `logits`.

/** Additive mask [B, 1, T, S]: causal by index (cached keys first) and no padding keys. */
const attentionMask = (keyMask: Int32Array, b: number, t: number, s: number): tf.Tensor4D => {
  const mask = new Float32Array(b * t * s)
  const past = s - t
  for (let row = 0; row < b; row++) {
    for (let i = 0; i < t; i++) {
      for (let j = 0; j < s; j++) {
        const visible = j <= past + i && keyMask[row * s + j] !== 0
        // Not -Infinity: a row with nothing visible (a left-padded position) stays finite.
        mask[(row * t + i) * s + j] = visible ? 0 : -1e9
      }
    }
  }
  return tf.tensor4d(mask, [b, 1, t, s])
}

const arangeRows = (b: number, t: number): Int32Array => Int32Array.from({ length: b * t }, (_, i) => i % t)

export interface DecoderOutput {
  /** [B*T, H] after the last layer, before the final norm. */
  readonly hidden: tf.Tensor2D
  readonly cache: KVCache
  /** [B*T, H] per stage: the embeddings, then each layer's output (for parity checks). */
  readonly layerOutputs: ReadonlyArray<tf.Tensor2D>
}

/**
 * Runs the decoder over `batch`, continuing from `cache` when given (its tensors are not
 * disposed). `embeddings` ([B*T, H], the embedding rows of `batch.inputIds`) replaces the
 * lookup: training passes them in, to take their gradient apart from the embedding's.
 */
export const decode = (model: Qwen2, batch: TokenBatch, cache?: KVCache, embeddings?: tf.Tensor2D): DecoderOutput => {
  const { batchSize: b, seqLen: t } = batch
  const past = cache?.length ?? 0
  const s = past + t
  const ones = new Int32Array(b * t).fill(1)
  const current = batch.attentionMask ?? ones
  const keyMask = new Int32Array(b * s)
  for (let row = 0; row < b; row++) {
    if (cache !== undefined) keyMask.set(cache.keyMask.subarray(row * past, (row + 1) * past), row * s)
    keyMask.set(current.subarray(row * t, (row + 1) * t), row * s + past)
  }
  const rotary = rotaryFor(model.config, batch.positionIds ?? arangeRows(b, t), b, t)
  const step: Step = { b, t, s, ...rotary, mask: attentionMask(keyMask, b, t, s) }
  let hidden = embeddings ?? tf.gather(param(model, "model.embed_tokens.weight"), tf.tensor1d(batch.inputIds, "int32")) as tf.Tensor2D // [B*T, H]
  const layerOutputs = [hidden]
  const layers: Array<LayerCache> = []
  for (let layer = 0; layer < model.config.num_hidden_layers; layer++) {
    const out = decoderLayer(model, layer, hidden, step, cache?.layers[layer])
    hidden = out.hidden
    layers.push(out.cache)
    layerOutputs.push(hidden)
  }
  return { hidden, cache: { layers, keyMask, length: s }, layerOutputs }
}

export const finalNorm = (model: Qwen2, hidden: tf.Tensor2D): tf.Tensor2D =>
  rmsNorm(hidden, param(model, "model.norm.weight"), model.config.rms_norm_eps)

/** The LM head's weight and whether it is [vocab, hidden] (tied to the embedding). */
export const headWeight = (model: Qwen2): { weight: tf.Variable; tied: boolean } =>
  model.config.tie_word_embeddings
    ? { weight: param(model, "model.embed_tokens.weight"), tied: true }
    : { weight: param(model, "lm_head.weight"), tied: false }

/**
 * Logits [N, V] of normed hidden states [N, H]. A tied head computes E @ hᵀ and transposes
 * the small result: on wasm, h @ Eᵀ would transpose and pack the whole embedding each call.
 */
export const lmHead = (model: Qwen2, normed: tf.Tensor2D): tf.Tensor2D => {
  const { weight, tied } = headWeight(model)
  const logits = tied ? tf.transpose(tf.matMul(weight, normed, false, true)) : tf.matMul(normed, weight)
  return logits as tf.Tensor2D // [N, V]
}

/** Full logits [B, T, V]: for parity checks and generation. Training uses `loss.ts`. */
export const forwardLogits = (model: Qwen2, batch: TokenBatch): tf.Tensor3D =>
  tf.tidy(() => {
    const { hidden } = decode(model, batch)
    return tf.reshape(lmHead(model, finalNorm(model, hidden)), [batch.batchSize, batch.seqLen, model.config.vocab_size])
  })
