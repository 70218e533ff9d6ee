/**
 * Qwen2 (and Llama, the same block) in TensorFlow.js, read top-down like nanoGPT:
 * RMSNorm → rotary embedding → grouped-query attention → SwiGLU MLP → decoder layer →
 * model. transformers' `modeling_qwen2.py` (v4.44) is the spec, and parameter names
 * are its own (see `params.ts`, which also explains the [in, out] weight layout).
 *
 * Activations are kept 2D ([B*T, H]) around every projection: tfjs's matMul gradient
 * is wrong for a 3D@2D product, and a 2D product is the one XNNPACK runs fast on wasm.
 * The forward functions create tensors freely; callers wrap them in `tf.tidy`.
 *
 * They read parameters from a `ParamSource`: a whole model's variables, or the one
 * layer's tensors the layer-wise trainer has uploaded (src/train/layerwise.ts). A step
 * can `record` the intermediates the backward pass needs (src/model/backward.ts).
 */
import * as tf from "@tensorflow/tfjs-core"
import type { Qwen2Config } from "./config.ts"
import { loraAName, loraBName, type LoraPlan } from "./lora.ts"
import { initialValue, type ParamSpec, parameterSpecs, type TensorSpec } from "./params.ts"

/** Where the forward pass finds its parameters (keyed by Hugging Face name, in model layout). */
export interface ParamSource {
  readonly config: Qwen2Config
  readonly params: ReadonlyMap<string, tf.Tensor>
  /** LoRA adapters among `params` (`….lora_A.weight`, `….lora_B.weight`): their scaling by module. */
  readonly adapter?: Pick<LoraPlan, "scaling">
}

export interface Qwen2 extends ParamSource {
  readonly specs: ReadonlyArray<ParamSpec>
  /** Keyed by Hugging Face name; values in model layout. Adapter weights too, when `adapter` is set. */
  readonly params: ReadonlyMap<string, tf.Variable>
  readonly adapter?: LoraPlan
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

/**
 * One layer's cached keys and values, laid out for decoding (see `attention`): keys as
 * rows, values transposed, so that each head's product packs the few new queries, not
 * the S cached positions.
 */
export interface LayerCache {
  readonly keys: tf.Tensor4D // [B, nKV, S, hD]
  readonly valuesT: tf.Tensor4D // [B, nKV, hD, S]
}

export interface KVCache {
  readonly layers: ReadonlyArray<LayerCache>
  /** [B*S] attention mask over the cached positions. */
  readonly keyMask: Int32Array
  readonly length: number
}

let nextModelId = 0

/**
 * Wraps tensors (in model layout, by HF name) as the model's variables; takes ownership.
 * With `adapter`, its tensors (`weights` is asked for them too) join the model's.
 */
export const createModel = (config: Qwen2Config, weights: (spec: TensorSpec, index: number) => tf.Tensor, adapter?: LoraPlan): Qwen2 => {
  // tfjs variable names are global: prefix ours so that several models can coexist.
  const prefix = `qwen2_${nextModelId++}`
  const specs = parameterSpecs(config)
  const params = new Map<string, tf.Variable>()
  ;[...specs, ...(adapter?.specs ?? [])].forEach((spec, index) => {
    const value = weights(spec, index)
    if (value.shape.join() !== spec.shape.join()) {
      value.dispose()
      throw new Error(`${spec.name}: got shape [${value.shape.join(", ")}], expected [${spec.shape.join(", ")}]`)
    }
    params.set(spec.name, tf.variable(value, true, `${prefix}/${spec.name}`, "float32"))
    value.dispose()
  })
  return { config, specs, params, ...(adapter !== undefined && { adapter }) }
}

/** A model from weights in JS memory (model layout, by HF name): copied onto the backend. */
export const modelFromHost = (config: Qwen2Config, weights: ReadonlyMap<string, Float32Array>, adapter?: LoraPlan): Qwen2 =>
  createModel(config, (spec) => {
    const values = weights.get(spec.name)
    if (values === undefined) throw new Error(`no weights for ${spec.name}`)
    return tf.tensor(values, [...spec.shape], "float32")
  }, adapter)

/** A model initialised from its config alone, as transformers does; deterministic in `seed`. */
export const initModel = (config: Qwen2Config, seed = 0): Qwen2 =>
  createModel(config, (spec, index) => initialValue(spec as ParamSpec, index, config, seed))

export const disposeModel = (model: Qwen2): void => model.params.forEach((variable) => variable.dispose())

export const param = (source: ParamSource, name: string): tf.Tensor => {
  const tensor = source.params.get(name)
  if (tensor === undefined) throw new Error(`model has no parameter ${name}`)
  return tensor
}

// ---------------------------------------------------------------------------------------
// RMSNorm, in float32 as Qwen2RMSNorm computes it (everything here is float32).

const rmsNorm = (x: tf.Tensor2D, weight: tf.Tensor, eps: number, record?: (rsqrt: tf.Tensor2D) => void): tf.Tensor2D => {
  const r = tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps)) as tf.Tensor2D // [N, 1]
  record?.(r)
  return tf.mul(tf.mul(x, r), weight)
}

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

/**
 * x W + b, plus a LoRA adapter's (dropout(x) A) B · scaling when the source has one for
 * this module: PEFT's `lora.Linear.forward`, in its order of operations.
 */
const linear = (source: ParamSource, name: string, x: tf.Tensor2D, step: Step): tf.Tensor2D => {
  const scaling = source.adapter?.scaling.get(name)
  // In a tidy of its own: the [N × out] intermediates (x W, (u B), its scaled copy) go at
  // once, not at the end of the block (the tape keeps copies of what its gradients need).
  const { y, u } = tf.tidy(() => {
    const base = tf.matMul(x, param(source, `${name}.weight`)) as tf.Tensor2D
    const bias = source.params.get(`${name}.bias`)
    const plain = bias === undefined ? base : tf.add<tf.Tensor2D>(base, bias)
    if (scaling === undefined) return { y: plain, u: undefined }
    const u = tf.matMul(step.dropout?.(name, x) ?? x, param(source, loraAName(name))) as tf.Tensor2D // [N, r]
    return { y: tf.add<tf.Tensor2D>(plain, tf.mul(tf.matMul(u, param(source, loraBName(name))), scaling)), u }
  })
  if (u !== undefined) step.record?.(`${name}.lora_u`, u)
  return y
}

/** What one forward pass shares across layers: shapes, rotary tables, the mask, and the training hooks. */
export interface Step {
  readonly b: number
  readonly t: number
  /** Keys visible to this step: cached plus new. */
  readonly s: number
  readonly cos: tf.Tensor4D // [B, T, 1, hD]
  readonly sin: tf.Tensor4D // [B, T, 1, hD]
  readonly mask: tf.Tensor4D // [B, 1, T, S], 0 or -1e9
  /** Training only: LoRA dropout of a module's input (the mask is the caller's). */
  readonly dropout?: (module: string, x: tf.Tensor2D) => tf.Tensor2D
  /** Keeps an intermediate the backward pass needs (see backward.ts for the names). */
  readonly record?: (name: string, tensor: tf.Tensor) => void
}

const attention = (source: ParamSource, layer: number, x: tf.Tensor2D, step: Step, cache?: LayerCache) => {
  const { num_attention_heads: nH, num_key_value_heads: nKV, head_dim: hD } = source.config
  const { b, t, s } = step
  const rep = nH / nKV
  const name = `model.layers.${layer}.self_attn`
  const q = applyRotary(tf.reshape(linear(source, `${name}.q_proj`, x, step), [b, t, nH, hD]), step.cos, step.sin) // [B, T, nH, hD]
  const k = applyRotary(tf.reshape(linear(source, `${name}.k_proj`, x, step), [b, t, nKV, hD]), step.cos, step.sin) // [B, T, nKV, hD]
  const v = tf.reshape(linear(source, `${name}.v_proj`, x, step), [b, t, nKV, hD]) // [B, T, nKV, hD]
  step.record?.("q", q)
  step.record?.("k", k)
  step.record?.("v", v)
  const newKeys = tf.transpose(k, [0, 2, 1, 3]) as tf.Tensor4D // [B, nKV, T, hD]
  const newValuesT = tf.transpose(v, [0, 2, 3, 1]) as tf.Tensor4D // [B, nKV, hD, T]
  const keys = cache === undefined ? newKeys : tf.concat<tf.Tensor4D>([cache.keys, newKeys], 2) // [B, nKV, S, hD]
  const valuesT = cache === undefined ? newValuesT : tf.concat<tf.Tensor4D>([cache.valuesT, newValuesT], 3) // [B, nKV, hD, S]
  // Scaling q rather than the scores: T·hD products instead of T·S.
  const grouped = tf.reshape(
    tf.transpose(tf.reshape(tf.mul(q, 1 / Math.sqrt(hD)), [b, t, nKV, rep, hD]), [0, 2, 3, 1, 4]), // [B, nKV, rep, T, hD]
    [b * nKV, rep * t, hD]
  ) // [B*nKV, rep*T, hD]
  const keys3 = tf.reshape(keys, [b * nKV, s, hD])
  const valuesT3 = tf.reshape(valuesT, [b * nKV, hD, s])
  // Each head's product packs its right-hand operand (XNNPACK's weights). While decoding,
  // the rep·T new queries are far fewer than the S keys: then the products are turned
  // around (scoresᵀ = K qᵀ, contextᵀ = Vᵀ pᵀ) so that the small side is packed, and the
  // small results transposed back; packing every cached key and value each step cost
  // more than the products (5.4 ms a layer at B 8, S 400, against 0.2).
  const fewQueries = rep * t < s
  // The scores and their masked copy are as large as the probabilities: gone once those exist.
  const probs = tf.tidy(() => {
    const scores = fewQueries
      ? tf.transpose(tf.matMul(keys3, grouped, false, true), [0, 2, 1]) // [B*nKV, rep*T, S]
      : tf.matMul(grouped, keys3, false, true) // [B*nKV, rep*T, S]
    const masked = tf.add(tf.reshape(scores, [b, nH, t, s]), step.mask) // [B, nH, T, S]
    return tf.reshape(tf.softmax(masked), [b * nKV, rep * t, s]) // [B*nKV, rep*T, S]
  })
  const context = fewQueries
    ? tf.transpose(tf.matMul(valuesT3, probs, false, true), [0, 2, 1]) // [B*nKV, rep*T, hD]
    : tf.matMul(probs, valuesT3, false, true) // [B*nKV, rep*T, hD]
  const merged = tf.reshape<tf.Rank.R2>(
    tf.transpose(tf.reshape(context, [b, nKV, rep, t, hD]), [0, 3, 1, 2, 4]), // [B, T, nKV, rep, hD]
    [b * t, nH * hD]
  ) // [B*T, nH*hD]
  step.record?.("probs", probs)
  step.record?.("merged", merged)
  return { out: linear(source, `${name}.o_proj`, merged, step), cache: { keys, valuesT } }
}

// ---------------------------------------------------------------------------------------
// SwiGLU MLP: down(silu(gate(x)) * up(x)).

const mlp = (source: ParamSource, layer: number, x: tf.Tensor2D, step: Step): tf.Tensor2D => {
  const name = `model.layers.${layer}.mlp`
  const gate = linear(source, `${name}.gate_proj`, x, step) // [B*T, I]
  const up = linear(source, `${name}.up_proj`, x, step) // [B*T, I]
  step.record?.("gate", gate)
  step.record?.("up", up)
  const act = tf.tidy(() => tf.mul(tf.mul(gate, tf.sigmoid(gate)), up)) as tf.Tensor2D // [B*T, I]; its temporaries go at once
  return linear(source, `${name}.down_proj`, act, step) // [B*T, H]
}

// ---------------------------------------------------------------------------------------
// Decoder layer: pre-norm attention and MLP, each added back to the residual stream.

/** The first residual block: h + attention(input_layernorm(h)). */
export const attentionBlock = (source: ParamSource, layer: number, hidden: tf.Tensor2D, step: Step, cache?: LayerCache) => {
  step.record?.("h", hidden)
  const weight = param(source, `model.layers.${layer}.input_layernorm.weight`)
  const attn = attention(source, layer, rmsNorm(hidden, weight, source.config.rms_norm_eps, (r) => step.record?.("r1", r)), step, cache)
  return { hidden: tf.add<tf.Tensor2D>(hidden, attn.out), cache: attn.cache }
}

/** The second residual block: h + mlp(post_attention_layernorm(h)). */
export const mlpBlock = (source: ParamSource, layer: number, hidden: tf.Tensor2D, step: Step): tf.Tensor2D => {
  step.record?.("h2", hidden)
  const weight = param(source, `model.layers.${layer}.post_attention_layernorm.weight`)
  return tf.add<tf.Tensor2D>(hidden, mlp(source, layer, rmsNorm(hidden, weight, source.config.rms_norm_eps, (r) => step.record?.("r2", r)), step))
}

export const decoderLayer = (source: ParamSource, layer: number, hidden: tf.Tensor2D, step: Step, cache?: LayerCache) => {
  const attn = attentionBlock(source, layer, hidden, step, cache)
  return { hidden: mlpBlock(source, layer, attn.hidden, step), cache: attn.cache }
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
  /** With `layerOutputs`: [B*T, H] per stage, the embeddings and then each layer's output (for parity checks). */
  readonly layerOutputs: ReadonlyArray<tf.Tensor2D>
}

export interface DecodeOptions {
  /** Continue from these cached keys and values (their tensors are not disposed). */
  readonly cache?: KVCache
  /**
   * [B*T, H], the embedding rows of `batch.inputIds`, replacing the lookup: training
   * passes them in, to take their gradient apart from the embedding's.
   */
  readonly embeddings?: tf.Tensor2D
  /** Training only: LoRA dropout (see `Step`). */
  readonly dropout?: Step["dropout"]
  /** Keep every layer's output (parity checks); otherwise each is freed once the next layer has it. */
  readonly layerOutputs?: boolean
}

/**
 * The step shared by every layer of one pass over `batch`: rotary tables for its
 * positions and the attention mask over the cached keys plus its own. The caller
 * disposes `cos`, `sin` and `mask` (inside a tidy they go with it).
 */
export const prepareStep = (config: Qwen2Config, batch: TokenBatch, cache?: KVCache): { step: Step; keyMask: Int32Array } => {
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
  const rotary = rotaryFor(config, batch.positionIds ?? arangeRows(b, t), b, t)
  return { step: { b, t, s, ...rotary, mask: attentionMask(keyMask, b, t, s) }, keyMask }
}

/** The embedding rows of `ids`: [N, H]. */
export const embed = (source: ParamSource, ids: Int32Array): tf.Tensor2D =>
  tf.gather(param(source, "model.embed_tokens.weight"), tf.tensor1d(ids, "int32")) as tf.Tensor2D

/** Runs the decoder over `batch` (see `DecodeOptions`). */
export const decode = (model: ParamSource, batch: TokenBatch, options: DecodeOptions = {}): DecoderOutput => {
  const { cache } = options
  const prepared = prepareStep(model.config, batch, cache)
  const step: Step = options.dropout === undefined ? prepared.step : { ...prepared.step, dropout: options.dropout }
  let hidden = options.embeddings ?? embed(model, batch.inputIds) // [B*T, H]
  const layerOutputs = [hidden]
  const layers: Array<LayerCache> = []
  for (let layer = 0; layer < model.config.num_hidden_layers; layer++) {
    // A layer's intermediates go when it is done, and its input once the next layer has
    // it (a gradient tape keeps its own copies of what it needs): at 0.5B and 5×512, 24
    // layers' activations, or even their 25 outputs, would not fit the wasm heap beside
    // the weights.
    const input = hidden
    const out = tf.tidy(() => decoderLayer(model, layer, input, step, cache?.layers[layer]))
    hidden = out.hidden
    layers.push(out.cache)
    if (options.layerOutputs === true) layerOutputs.push(hidden)
    else if (input !== options.embeddings) input.dispose()
  }
  return { hidden, cache: { layers, keyMask: prepared.keyMask, length: step.s }, layerOutputs: options.layerOutputs === true ? layerOutputs : [] }
}

export const finalNorm = (model: ParamSource, hidden: tf.Tensor2D): tf.Tensor2D =>
  rmsNorm(hidden, param(model, "model.norm.weight"), model.config.rms_norm_eps)

/** The LM head's weight and whether it is [vocab, hidden] (tied to the embedding). */
export const headWeight = (model: ParamSource): { weight: tf.Tensor; tied: boolean } =>
  model.config.tie_word_embeddings
    ? { weight: param(model, "model.embed_tokens.weight"), tied: true }
    : { weight: param(model, "lm_head.weight"), tied: false }

/**
 * Logits [N, V] of normed hidden states [N, H]. A tied head computes E @ hᵀ and transposes
 * the small result: on wasm, h @ Eᵀ would transpose and pack the whole embedding each call.
 */
export const lmHead = (model: ParamSource, normed: tf.Tensor2D): tf.Tensor2D => {
  const { weight, tied } = headWeight(model)
  const logits = tied ? tf.transpose(tf.matMul(weight, normed, false, true)) : tf.matMul(normed, weight)
  return logits as tf.Tensor2D // [N, V]
}

/** Full logits [B, T, V]: for parity checks and generation. Training uses `loss.ts`. */
export const forwardLogits = (model: ParamSource, batch: TokenBatch): tf.Tensor3D =>
  tf.tidy(() => {
    const { hidden } = decode(model, batch)
    return tf.reshape(lmHead(model, finalNorm(model, hidden)), [batch.batchSize, batch.seqLen, model.config.vocab_size])
  })
