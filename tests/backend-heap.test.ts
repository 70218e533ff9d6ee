/**
 * Filling the 32-bit wasm heap: the allocation that does not fit throws a clear error,
 * and nothing already on the heap is overwritten (unguarded, the tensor would land at
 * offset 0, on top of the allocator's own data). A file of its own: the process keeps
 * its 4 GiB heap until it ends. The gibibytes are allocated, not written (which would
 * take seconds each); markers at both ends of each show whether anything moved.
 */
import * as tf from "@tensorflow/tfjs-core"
import { expect, it } from "vitest"
import { initBackend } from "../src/backend/select.ts"
import { heapFloat32, WasmHeapExhausted, wasmInternals } from "../src/backend/wasm-internals.ts"

// One wasm thread: test files run two at a time on two cores, where a thread pool is
// oversubscribed and slower, not faster. backend-threads.test.ts tests the pool.
const THREADS = 1

const GIB_OF_FLOATS = 2 ** 28

const allocate = (): tf.Tensor => {
  const backend = wasmInternals(tf.backend())
  return tf.engine().makeTensorFromTensorInfo(backend.makeOutput([GIB_OF_FLOATS], "float32"))
}

const ends = (t: tf.Tensor): Array<number> => {
  const view = heapFloat32(wasmInternals(tf.backend()), t)
  return [view[0] ?? NaN, view[view.length - 1] ?? NaN]
}

const mark = (t: tf.Tensor, value: number): void => {
  const view = heapFloat32(wasmInternals(tf.backend()), t)
  view[0] = value
  view[view.length - 1] = value
}

it("throws WasmHeapExhausted past the heap cap and keeps earlier tensors intact", async () => {
  await initBackend({ backend: "wasm", threads: THREADS })
  const small = tf.tensor1d([1, 2, 3])
  const held: Array<tf.Tensor> = []
  let error: unknown
  try {
    for (let i = 1; i <= 5; i++) {
      const tensor = allocate()
      held.push(tensor)
      mark(tensor, i)
    }
  } catch (caught) {
    error = caught
  }
  expect(error).toBeInstanceOf(WasmHeapExhausted)
  expect((error as Error).message).toMatch(/wasm heap exhausted: cannot allocate 1\.00 GiB .* capped at 4,294,901,760 bytes/)
  expect(held.length).toBe(3)
  expect(tf.memory().numTensors).toBe(4)
  held.forEach((t, i) => expect(ends(t)).toEqual([i + 1, i + 1]))
  expect(Array.from(small.dataSync())).toEqual([1, 2, 3])
  held.forEach((t) => t.dispose())
  const again = allocate()
  mark(again, 7)
  expect(ends(again)).toEqual([7, 7])
  const sum = tf.add(small, 1)
  expect(Array.from(sum.dataSync())).toEqual([2, 3, 4])
  sum.dispose()
  again.dispose()
  small.dispose()
  expect(tf.memory().numTensors).toBe(0)
})
