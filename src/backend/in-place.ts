/**
 * Changing tensor data in place, so that no backend can serve stale values.
 *
 * The hazard: on wasm, XNNPACK packs a matmul's right-hand side (our weights) and caches
 * the packed copy under the tensor's id. Writing new bytes under the same id would leave
 * every later matmul using the old weights, silently. So there are two ways to update:
 * - `assignWeight`: a new tensor, so a new id (`Variable.assign` swaps the data, it does
 *   not copy into it). Always safe, costs a second buffer while it runs.
 * - `updateWeightInPlace`: an optimizer writes straight into the weight's memory (on the
 *   wasm heap, no copy), then the data is re-registered under a fresh id, which drops
 *   XNNPACK's cached packing. On other backends it falls back to a copy and an assign.
 *
 * These are the model code's only wasm fast paths. Each has the generic path beside it,
 * which tensorflow and cpu always take; `PIPELINE_WASM_FAST_PATHS=0` makes wasm take it
 * too (tests/generic-paths.test.ts trains that way), and `fastPathUses` counts the fast
 * ones taken.
 */
import * as tf from "@tensorflow/tfjs-core"
import { heapFloat32, rekey, type WasmBackend, wasmInternals } from "./wasm-internals.ts"

let uses = 0

/** How many times a wasm fast path was taken in this process. */
export const fastPathUses = (): number => uses

/** The wasm backend's internals when a fast path applies (the backend is wasm, and they are not switched off); else undefined. */
const wasmFastPath = (): WasmBackend | undefined => {
  if (tf.getBackend() !== "wasm" || process.env.PIPELINE_WASM_FAST_PATHS === "0") return undefined
  uses += 1
  return wasmInternals(tf.backend())
}

/** Replaces a variable's value with `values` (same shape). A tensor passed stays the caller's to dispose. */
export const assignWeight = (variable: tf.Variable, values: Float32Array | tf.Tensor): void => {
  const next = values instanceof Float32Array ? tf.tensor(values, variable.shape, "float32") : values
  variable.assign(next)
  if (next !== values) next.dispose()
}

/**
 * Lets `write` change a float32 variable's values in place. `write` must not create or
 * dispose tensors: an allocation can grow the wasm heap and detach the view it holds.
 */
export const updateWeightInPlace = (variable: tf.Variable, write: (values: Float32Array) => void): void => {
  const backend = wasmFastPath()
  if (backend === undefined) {
    const values = (variable.dataSync() as Float32Array).slice()
    write(values)
    assignWeight(variable, values)
    return
  }
  // Shared data (a tensor the variable was assigned from, still alive) must not change
  // under its other owner: give the variable its own copy first.
  if (backend.refCount(variable.dataId) > 1) {
    const copy = tf.tidy(() => tf.add(variable, 0))
    variable.assign(copy)
    copy.dispose()
  }
  write(heapFloat32(backend, variable))
  rekey(backend, variable)
}

/**
 * Rewrites a float32 tensor's values with `write` and returns the tensor that holds them:
 * on wasm the same tensor, rewritten on the heap (no copy) and re-keyed; elsewhere a new
 * tensor, the input being disposed. For a fresh intermediate nothing else refers to.
 */
export const rewriteTensor = <T extends tf.Tensor>(tensor: T, write: (values: Float32Array) => void): T => {
  const backend = wasmFastPath()
  if (backend === undefined) {
    const values = (tensor.dataSync() as Float32Array).slice()
    write(values)
    const next = tf.tensor(values, tensor.shape, "float32") as T
    tensor.dispose()
    return next
  }
  if (backend.refCount(tensor.dataId) > 1) throw new Error("rewriteTensor: the tensor's data is shared")
  write(heapFloat32(backend, tensor))
  rekey(backend, tensor)
  return tensor
}

/**
 * A float32 tensor's values without a copy where the backend allows it: on wasm a view
 * of the heap, valid only until the next tensor is allocated (the heap may grow and
 * detach it), so take it right before use and never keep it. Do not write to it.
 * Elsewhere `dataSync()`. At 0.5B parameters, copying every gradient out costs seconds
 * a step, most of it the page faults of fresh memory.
 */
export const readView = (tensor: tf.Tensor): Float32Array => {
  if (tensor.dtype !== "float32") throw new Error(`readView: expected float32, got ${tensor.dtype}`)
  const backend = wasmFastPath()
  return backend === undefined ? (tensor.dataSync() as Float32Array) : heapFloat32(backend, tensor)
}
