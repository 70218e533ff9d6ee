/**
 * The backward pass of one decoder layer, by hand, paired with `decoderLayer` in
 * qwen2.ts as llm.c pairs each forward with its backward.
 *
 * Why not tfjs's tape: the layer-wise loop (src/train/layerwise.ts) runs one layer at a
 * time inside the 4 GiB wasm heap, with the activations kept in JS memory in between.
 * A tape keeps every intermediate of every layer on the heap (gigabytes at 0.5B), and
 * gradient checkpointing would run each layer's matmuls twice. Here the forward pass
 * records what the backward pass needs (the names below), and nothing is recomputed
 * but a few elementwise products. `tests/layerwise.test.ts` holds this against the tape.
 *
 * Recorded by the forward pass (see `Step.record`), per layer:
 *   h [N, H] the layer's input        r1 [N, 1] its RMSNorm's rsqrt
 *   q [B, T, nH, hD], k, v [B, T, nKV, hD]: q and k after the rotary embedding
 *   probs [B·nKV, rep·T, T] attention  merged [N, nH·hD] the heads' outputs, o_proj's input
 *   h2 [N, H] after attention         r2 [N, 1] the second RMSNorm's rsqrt
 *   gate, up [N, I]                    `<module>.lora_u` [N, r] dropout(x) A, per adapted module
 * (N = B·T.) Shapes and layouts are the forward's own, so each step below undoes one of its.
 */
import * as tf from "@tensorflow/tfjs-core"
import { loraAName, loraBName } from "./lora.ts"
import { param, type ParamSource, type Step } from "./qwen2.ts"

export interface BackwardOptions {
  /** Gradients of the base weights too (full fine-tuning); else only the adapter's. */
  readonly weightGrads: boolean
  /** The LoRA dropout mask a module's input was multiplied by in the forward pass (already scaled by 1/(1−p)). */
  readonly dropoutMask?: (module: string) => tf.Tensor2D | undefined
}

export interface LayerGradients {
  /** d loss / d the layer's input [N, H]. */
  readonly dHidden: tf.Tensor2D
  /** By parameter name; the caller disposes them. */
  readonly grads: Map<string, tf.Tensor>
}

type Saved = ReadonlyMap<string, tf.Tensor>

const get = (saved: Saved, name: string): tf.Tensor => {
  const tensor = saved.get(name)
  if (tensor === undefined) throw new Error(`the forward pass recorded no ${name}`)
  return tensor
}

/** Gradients collected in a tidy: returned (so kept) with the input's gradient. */
type Collected = Record<string, tf.Tensor>

/**
 * Backward through `linear(source, name, x)`: x W + b + (dropout(x) A) B · s. Adds the
 * trained parameters' gradients to `out` and returns dx.
 */
const linearBackward = (source: ParamSource, name: string, x: tf.Tensor2D, dy: tf.Tensor2D, saved: Saved, options: BackwardOptions, out: Collected): tf.Tensor2D => {
  const dx = tf.matMul(dy, param(source, `${name}.weight`), false, true) as tf.Tensor2D // [N, in]
  if (options.weightGrads) {
    out[`${name}.weight`] = tf.matMul(x, dy, true, false) // [in, out]
    if (source.params.has(`${name}.bias`)) out[`${name}.bias`] = tf.sum(dy, 0)
  }
  const scaling = source.adapter?.scaling.get(name)
  if (scaling === undefined) return dx
  const u = get(saved, `${name}.lora_u`) // [N, r]
  // d (u B) is dy · s: the scaling goes on the small products, not on a copy of dy.
  out[loraBName(name)] = tf.mul(tf.matMul(u, dy, true, false), scaling) // [r, out]
  const du = tf.mul(tf.matMul(dy, param(source, loraBName(name)), false, true), scaling) // [N, r]
  const mask = options.dropoutMask?.(name)
  out[loraAName(name)] = tf.matMul(mask === undefined ? x : tf.mul(x, mask), du, true, false) // [in, r]
  const dDropped = tf.matMul(du, param(source, loraAName(name)), false, true) as tf.Tensor2D // [N, in]
  return tf.add(dx, mask === undefined ? dDropped : tf.mul(dDropped, mask))
}

/**
 * Backward through rmsNorm(x) = (x · r) · w with r = rsqrt(mean(x²) + eps):
 * dx = r · (dn − n · mean(dn · n)), with n = x · r and dn = dy · w.
 */
const rmsNormBackward = (x: tf.Tensor2D, r: tf.Tensor, weight: tf.Tensor, weightName: string, dy: tf.Tensor2D, options: BackwardOptions, out: Collected): tf.Tensor2D => {
  const normalized = tf.mul(x, r)
  if (options.weightGrads) out[weightName] = tf.sum(tf.mul(dy, normalized), 0)
  const dn = tf.mul(dy, weight)
  return tf.mul(r, tf.sub(dn, tf.mul(normalized, tf.mean(tf.mul(dn, normalized), -1, true)))) as tf.Tensor2D
}

/** The transpose of `rotateHalf` ([−x₂, x₁]): [z₂, −z₁]. */
const rotateHalfTransposed = (z: tf.Tensor4D): tf.Tensor4D => {
  const half = (z.shape[3] ?? 0) / 2
  const first = tf.slice(z, [0, 0, 0, 0], [-1, -1, -1, half])
  const second = tf.slice(z, [0, 0, 0, half], [-1, -1, -1, half])
  return tf.concat([second, tf.neg(first)], 3)
}

/** Backward through x·cos + rotateHalf(x)·sin. */
const rotaryBackward = (dy: tf.Tensor4D, step: Step): tf.Tensor4D =>
  tf.add(tf.mul(dy, step.cos), rotateHalfTransposed(tf.mul(dy, step.sin)))

/**
 * The MLP half: from d out [N, H] to d h2 [N, H] (through the residual and the second
 * norm). In three tidies, so that no more than a few [N, I] tensors live at once.
 */
const mlpBackward = (source: ParamSource, layer: number, saved: Saved, dOut: tf.Tensor2D, options: BackwardOptions): { dH2: tf.Tensor2D } & Collected => {
  const prefix = `model.layers.${layer}`
  const name = `${prefix}.mlp`
  const gate = get(saved, "gate")
  const up = get(saved, "up")
  const { dAct, ...downGrads } = tf.tidy(() => {
    const out: Collected = {}
    const act = tf.mul(tf.mul(gate, tf.sigmoid(gate)), up) as tf.Tensor2D // [N, I], down_proj's input
    const dAct = linearBackward(source, `${name}.down_proj`, act, dOut, saved, options, out)
    return { ...out, dAct }
  })
  const { dGate, dUp } = tf.tidy(() => {
    const sigmoid = tf.sigmoid(gate)
    // d silu(g) / dg = σ(g) (1 + g (1 − σ(g)))
    return {
      dUp: tf.mul(dAct, tf.mul(gate, sigmoid)) as tf.Tensor2D,
      dGate: tf.mul(tf.mul(dAct, up), tf.mul(sigmoid, tf.add(1, tf.mul(gate, tf.sub(1, sigmoid))))) as tf.Tensor2D
    }
  })
  dAct.dispose()
  const { dH2, ...inputGrads } = tf.tidy(() => {
    const out: Collected = {}
    const h2 = get(saved, "h2") as tf.Tensor2D
    const r2 = get(saved, "r2")
    const normWeight = param(source, `${prefix}.post_attention_layernorm.weight`)
    const x2 = tf.mul(tf.mul(h2, r2), normWeight) as tf.Tensor2D // the MLP's input, as the forward computed it
    const dX2 = tf.add(
      linearBackward(source, `${name}.gate_proj`, x2, dGate, saved, options, out),
      linearBackward(source, `${name}.up_proj`, x2, dUp, saved, options, out)
    ) as tf.Tensor2D
    const dH2 = tf.add(dOut, rmsNormBackward(h2, r2, normWeight, `${prefix}.post_attention_layernorm.weight`, dX2, options, out)) as tf.Tensor2D
    return { ...out, dH2 }
  })
  dGate.dispose()
  dUp.dispose()
  return { ...downGrads, ...inputGrads, dH2 }
}

/** The attention half: from d h2 [N, H] to d h [N, H] (through the residual and the first norm). */
const attentionBackward = (source: ParamSource, layer: number, saved: Saved, step: Step, dH2: tf.Tensor2D, options: BackwardOptions): { dH: tf.Tensor2D } & Collected =>
  tf.tidy(() => {
    const out: Collected = {}
    const { num_attention_heads: nH, num_key_value_heads: nKV, head_dim: hD } = source.config
    const { b, t } = step
    const rep = nH / nKV
    const prefix = `model.layers.${layer}`
    const name = `${prefix}.self_attn`
    const h = get(saved, "h") as tf.Tensor2D
    const r1 = get(saved, "r1")
    const normWeight = param(source, `${prefix}.input_layernorm.weight`)
    const x1 = tf.mul(tf.mul(h, r1), normWeight) as tf.Tensor2D // q/k/v's input
    const q = get(saved, "q") // [B, T, nH, hD], rotated
    const k = get(saved, "k") // [B, T, nKV, hD], rotated
    const v = get(saved, "v") // [B, T, nKV, hD]
    const probs = get(saved, "probs") as tf.Tensor3D // [B*nKV, rep*T, T]

    const dMerged = linearBackward(source, `${name}.o_proj`, get(saved, "merged") as tf.Tensor2D, dH2, saved, options, out) // [N, nH*hD]
    const dContext = tf.reshape(tf.transpose(tf.reshape(dMerged, [b, t, nKV, rep, hD]), [0, 2, 3, 1, 4]), [b * nKV, rep * t, hD]) // [B*nKV, rep*T, hD]
    const values = tf.reshape(tf.transpose(v, [0, 2, 1, 3]), [b * nKV, t, hD]) // [B*nKV, T, hD]
    const dValues = tf.matMul(probs, dContext, true, false) // [B*nKV, T, hD]
    // Softmax: dx = y (dy − Σ dy·y), per row; in a tidy of its own, as the maps are the big tensors here.
    const dScores = tf.tidy(() => {
      const dProbs = tf.matMul(dContext, values, false, true) // [B*nKV, rep*T, T]
      return tf.mul(probs, tf.sub(dProbs, tf.sum(tf.mul(dProbs, probs), -1, true))) // [B*nKV, rep*T, T]
    })
    const keysT = tf.reshape(tf.transpose(k, [0, 2, 3, 1]), [b * nKV, hD, t]) // [B*nKV, hD, T]
    const scale = 1 / Math.sqrt(hD)
    const grouped = tf.reshape(tf.transpose(tf.reshape(tf.mul(q, scale), [b, t, nKV, rep, hD]), [0, 2, 3, 1, 4]), [b * nKV, rep * t, hD])
    const dGrouped = tf.matMul(dScores, keysT, false, true) // [B*nKV, rep*T, hD]
    const dKeysT = tf.matMul(grouped, dScores, true, false) // [B*nKV, hD, T]
    const dQ = tf.mul(tf.reshape(tf.transpose(tf.reshape(dGrouped, [b, nKV, rep, t, hD]), [0, 3, 1, 2, 4]), [b, t, nH, hD]), scale) as tf.Tensor4D
    const dK = tf.transpose(tf.reshape(dKeysT, [b, nKV, hD, t]), [0, 3, 1, 2]) as tf.Tensor4D // [B, T, nKV, hD]
    const dV = tf.transpose(tf.reshape(dValues, [b, nKV, t, hD]), [0, 2, 1, 3]) // [B, T, nKV, hD]

    const rows = b * t
    const dX1 = tf.addN([
      linearBackward(source, `${name}.q_proj`, x1, tf.reshape(rotaryBackward(dQ, step), [rows, nH * hD]), saved, options, out),
      linearBackward(source, `${name}.k_proj`, x1, tf.reshape(rotaryBackward(dK, step), [rows, nKV * hD]), saved, options, out),
      linearBackward(source, `${name}.v_proj`, x1, tf.reshape(dV, [rows, nKV * hD]), saved, options, out)
    ]) as tf.Tensor2D
    const dH = tf.add(dH2, rmsNormBackward(h, r1, normWeight, `${prefix}.input_layernorm.weight`, dX1, options, out)) as tf.Tensor2D
    return { ...out, dH }
  })

/**
 * d loss / d (the layer's input and its parameters), from d loss / d (its output).
 * `source` holds the layer's weights; `saved`, what its forward pass recorded; `step`,
 * the same rotary tables and shapes. Training passes have no KV cache, so S = T.
 */
export const decoderLayerBackward = (source: ParamSource, layer: number, saved: Saved, step: Step, dOut: tf.Tensor2D, options: BackwardOptions): LayerGradients => {
  const { dH2, ...mlpGrads } = mlpBackward(source, layer, saved, dOut, options)
  const { dH, ...attentionGrads } = attentionBackward(source, layer, saved, step, dH2, options)
  dH2.dispose()
  return { dHidden: dH, grads: new Map(Object.entries({ ...mlpGrads, ...attentionGrads })) }
}
