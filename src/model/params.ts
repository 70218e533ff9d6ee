/**
 * The model's parameters: their Hugging Face names, shapes and initial values, and the
 * one place where checkpoint layout and model layout meet.
 *
 * PyTorch's `Linear` keeps its weight as [out, in]. We keep every linear weight as
 * [in, out], so that `x @ W` is the untransposed product XNNPACK runs fast (and no
 * per-step transpose of a weight is needed). `modelLayoutValues` / `checkpointLayoutValues`
 * (and `toCheckpointLayout`, for a tensor) are the only functions that know it. The embedding stays [vocab, hidden] both ways.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { Qwen2Config } from "./config.ts"

/** A named tensor in both layouts: a model parameter, or an adapter's (see lora.ts). */
export interface TensorSpec {
  /** The Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  readonly name: string
  /** Shape in the checkpoint (PyTorch's layout). */
  readonly checkpointShape: ReadonlyArray<number>
  /** Shape of the variable in the model. */
  readonly shape: ReadonlyArray<number>
  /** True for linear weights: [out, in] in the checkpoint, [in, out] in the model. */
  readonly transposed: boolean
}

export interface ParamSpec extends TensorSpec {
  readonly init: "normal" | "zeros" | "ones"
}

const linear = (name: string, inFeatures: number, outFeatures: number): ParamSpec => ({
  name: `${name}.weight`,
  checkpointShape: [outFeatures, inFeatures],
  shape: [inFeatures, outFeatures],
  transposed: true,
  init: "normal"
})

const bias = (name: string, size: number): ParamSpec => ({
  name: `${name}.bias`,
  checkpointShape: [size],
  shape: [size],
  transposed: false,
  init: "zeros"
})

const norm = (name: string, size: number): ParamSpec => ({
  name: `${name}.weight`,
  checkpointShape: [size],
  shape: [size],
  transposed: false,
  init: "ones"
})

/** Every parameter, in the order of PyTorch's `named_parameters()`. */
export const parameterSpecs = (config: Qwen2Config): ReadonlyArray<ParamSpec> => {
  const { hidden_size: h, intermediate_size: ffn, head_dim: hd } = config
  const qDim = config.num_attention_heads * hd
  const kvDim = config.num_key_value_heads * hd
  const qkvBias = config.architecture === "Qwen2ForCausalLM" || config.attention_bias
  const oBias = config.architecture === "LlamaForCausalLM" && config.attention_bias
  const specs: Array<ParamSpec> = [
    {
      name: "model.embed_tokens.weight",
      checkpointShape: [config.vocab_size, h],
      shape: [config.vocab_size, h],
      transposed: false,
      init: "normal"
    }
  ]
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const attn = `model.layers.${i}.self_attn`
    const mlp = `model.layers.${i}.mlp`
    specs.push(linear(`${attn}.q_proj`, h, qDim), ...(qkvBias ? [bias(`${attn}.q_proj`, qDim)] : []))
    specs.push(linear(`${attn}.k_proj`, h, kvDim), ...(qkvBias ? [bias(`${attn}.k_proj`, kvDim)] : []))
    specs.push(linear(`${attn}.v_proj`, h, kvDim), ...(qkvBias ? [bias(`${attn}.v_proj`, kvDim)] : []))
    specs.push(linear(`${attn}.o_proj`, qDim, h), ...(oBias ? [bias(`${attn}.o_proj`, h)] : []))
    specs.push(linear(`${mlp}.gate_proj`, h, ffn), linear(`${mlp}.up_proj`, h, ffn), linear(`${mlp}.down_proj`, ffn, h))
    specs.push(norm(`model.layers.${i}.input_layernorm`, h), norm(`model.layers.${i}.post_attention_layernorm`, h))
  }
  specs.push(norm("model.norm", h))
  if (!config.tie_word_embeddings) specs.push(linear("lm_head", h, config.vocab_size))
  return specs
}

const transpose2d = (data: Float32Array, rows: number, cols: number): Float32Array => {
  const out = new Float32Array(data.length)
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c] ?? 0
  }
  return out
}

/** Checkpoint values (PyTorch layout) → values in model layout (the same array when not transposed). */
export const modelLayoutValues = (spec: TensorSpec, data: Float32Array): Float32Array => {
  const [rows = 1, cols = 1] = spec.checkpointShape
  return spec.transposed ? transpose2d(data, rows, cols) : data
}

/** Values in model layout → checkpoint values (PyTorch layout; the same array when not transposed). */
export const checkpointLayoutValues = (spec: TensorSpec, data: Float32Array): Float32Array => {
  const [rows = 1, cols = 1] = spec.shape
  return spec.transposed ? transpose2d(data, rows, cols) : data
}

/** A parameter in model layout → checkpoint values (PyTorch layout). */
export const toCheckpointLayout = (spec: TensorSpec, tensor: tf.Tensor): Float32Array => {
  const data = tensor.dataSync() as Float32Array
  return spec.transposed ? checkpointLayoutValues(spec, data) : data.slice()
}

/**
 * transformers' `_init_weights`: normal(0, initializer_range) for linear and embedding
 * weights (the padding row zeroed), zero biases, unit norms. Seeded per parameter, on
 * the JS side, so the values do not depend on the backend.
 */
export const initialValue = (spec: ParamSpec, index: number, config: Qwen2Config, seed: number): tf.Tensor =>
  tf.tidy(() => {
    if (spec.init === "zeros") return tf.zeros([...spec.shape])
    if (spec.init === "ones") return tf.ones([...spec.shape])
    // +1: tfjs treats a seed of 0 as "no seed" and draws from Math.random.
    const values = tf.randomNormal([...spec.shape], 0, config.initializer_range, "float32", seed * 100_003 + index + 1)
    const pad = config.pad_token_id
    if (spec.name !== "model.embed_tokens.weight" || pad === null || pad >= config.vocab_size) return values
    const keep = tf.oneHot(tf.tensor1d([pad], "int32"), config.vocab_size, 0, 1, "float32")
    return tf.mul(values, tf.reshape(keep, [config.vocab_size, 1]))
  })
