/**
 * The wasm backend's fixes, each against the cpu backend as reference: the matmul
 * wrapper on every transposed and batched path, the missing segment sum, the oneHot
 * denormals, the threaded binary, and XNNPACK's stale packed weights.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Either } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend, parseBackendChoice } from "../src/backend/select.ts"
import { backendReady, ComputeBackend, layer } from "../src/backend/service.ts"
import { heapFloat32, wasmInternals } from "../src/backend/wasm-internals.ts"
import { assignWeight, updateWeightInPlace } from "../src/backend/in-place.ts"

// One wasm thread: test files run two at a time on two cores, where a thread pool is
// oversubscribed and slower, not faster. backend-threads.test.ts tests the pool.
const THREADS = 1

/** Runs `f` on plain arrays under both backends and returns both results. */
const onBoth = async (f: () => tf.Tensor): Promise<{ wasm: Float32Array; cpu: Float32Array; shape: Array<number> }> => {
  await initBackend({ backend: "wasm", threads: THREADS })
  const w = tf.tidy(f)
  const wasm = w.dataSync() as Float32Array
  const shape = w.shape
  w.dispose()
  await initBackend({ backend: "cpu" })
  const c = tf.tidy(f)
  const cpu = c.dataSync() as Float32Array
  expect(c.shape).toEqual(shape)
  c.dispose()
  await initBackend({ backend: "wasm", threads: THREADS })
  return { wasm, cpu, shape }
}

const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, x, i) => Math.max(m, Math.abs(x - (b[i] ?? NaN))), 0)

/** Deterministic values, created under whichever backend is current. */
const values = (shape: Array<number>, seed: number): tf.Tensor => tf.randomNormal(shape, 0, 1, "float32", seed)

describe("backend selection", () => {
  it("falls back from tensorflow when tfjs-node does not load, and says why", async () => {
    const info = await initBackend({ threads: THREADS })
    expect(["tensorflow", "wasm"]).toContain(info.name)
    if (info.name === "wasm") expect(info.notes.join(" ")).toMatch(/tensorflow/)
    expect(tf.getBackend()).toBe(info.name)
  })

  it("honours an explicit choice", async () => {
    expect((await initBackend({ backend: "cpu" })).name).toBe("cpu")
    expect(tf.getBackend()).toBe("cpu")
  })

  it("is an Effect service that starts the backend on first use, once", async () => {
    const info = await Effect.runPromise(Effect.provide(backendReady, layer({ backend: "cpu" })))
    expect(info).toEqual({ name: "cpu", threads: 1, notes: [] })
    // Building the layer starts nothing; asking for the backend does, and a failure is the stage's.
    let attempts = 0
    const counted = Effect.flatMap(ComputeBackend, (backend) => Effect.zipRight(Effect.sync(() => attempts++), Effect.either(backend.ready)))
    const [first, second] = await Effect.runPromise(Effect.provide(Effect.all([counted, counted]), layer({ backend: "tensorflow" })))
    expect(attempts).toBe(2)
    for (const result of [first!, second!]) {
      if (Either.isLeft(result)) {
        expect(result.left._tag).toBe("StageError")
        expect(result.left.message).toMatch(/^backend tensorflow is unavailable: @tensorflow\/tfjs-node does not load/)
      }
    }
    expect(second).toEqual(first)
  })

  it("parses --backend values", () => {
    expect(parseBackendChoice(" WASM ")).toBe("wasm")
    expect(parseBackendChoice("auto")).toBe("auto")
    expect(parseBackendChoice("gpu")).toBeUndefined()
  })
})

describe("wasm kernels", () => {
  beforeAll(async () => {
    await initBackend({ backend: "wasm", threads: THREADS })
  })

  const cases: Array<[string, Array<number>, Array<number>, boolean, boolean]> = [
    ["2D", [5, 7], [7, 3], false, false],
    ["2D, b transposed", [5, 7], [3, 7], false, true],
    ["2D, a transposed", [7, 5], [7, 3], true, false],
    ["2D, both transposed", [7, 5], [3, 7], true, true],
    ["batched, shared b folded into rows", [2, 4, 5, 7], [7, 3], false, false],
    ["batched", [6, 5, 7], [6, 7, 3], false, false],
    ["batched, b transposed", [2, 3, 5, 7], [2, 3, 3, 7], false, true],
    ["batched, a transposed", [6, 7, 5], [6, 7, 3], true, false],
    ["batched, both transposed", [6, 7, 5], [6, 3, 7], true, true]
  ]
  it.each(cases)("matMul %s matches cpu", async (_, aShape, bShape, transposeA, transposeB) => {
    const { wasm, cpu } = await onBoth(() => tf.matMul(values(aShape, 1), values(bShape, 2), transposeA, transposeB))
    expect(maxDiff(wasm, cpu)).toBeLessThan(1e-5)
  })

  it("matMul gradients match cpu", async () => {
    const { wasm, cpu } = await onBoth(() => {
      const [da, db] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.sigmoid(tf.matMul(a, b, false, true))))([
        values([3, 4, 6], 3),
        values([3, 5, 6], 4)
      ])
      return tf.concat([tf.reshape(da ?? tf.zeros([0]), [-1]), tf.reshape(db ?? tf.zeros([0]), [-1])])
    })
    expect(maxDiff(wasm, cpu)).toBeLessThan(1e-5)
  })

  it("has a segment sum, so gather (the embedding) has a gradient", async () => {
    const ids = [3, 0, 3, 9, 3]
    const { wasm, cpu } = await onBoth(() => {
      const table = values([10, 4], 5)
      return tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, tf.tensor1d(ids, "int32")), values([5, 4], 6))))(table)
    })
    expect(maxDiff(wasm, cpu)).toBeLessThan(1e-6)
    expect(Array.from(wasm.subarray(4, 8))).toEqual(Array.from(cpu.subarray(4, 8)))
    expect(Array.from(wasm.subarray(4 * 1, 4 * 2)).every((x) => x === 0)).toBe(true)
  })

  it("builds float32 oneHot with ones, not denormals", async () => {
    const { wasm } = await onBoth(() => tf.oneHot(tf.tensor1d([2, 0], "int32"), 3, 1, 0, "float32"))
    expect(Array.from(wasm)).toEqual([0, 0, 1, 1, 0, 0])
  })
})

describe("XNNPACK's packed weights after an update", () => {
  beforeAll(async () => {
    await initBackend({ backend: "wasm", threads: THREADS })
  })

  const x = () => tf.tensor2d([[1, 2, 3]])
  const product = (w: tf.Tensor) => {
    const y = tf.tidy(() => tf.matMul(x(), w))
    const values = Array.from(y.dataSync())
    y.dispose()
    return values
  }
  /** A variable that owns its data alone, as a model's weights do. */
  const ownedVariable = (values: Array<Array<number>>) => {
    const initial = tf.tensor2d(values)
    const variable = tf.variable(initial)
    initial.dispose()
    return variable
  }

  it("are served stale when the bytes change under the same id (the hazard the guard exists for)", () => {
    const weight = ownedVariable([[1, 0], [0, 1], [1, 1]])
    expect(product(weight)).toEqual([4, 5])
    heapFloat32(wasmInternals(tf.backend()), weight).fill(2)
    // A fresh tensor with the same values gives the true product; the cached packing does not.
    const fresh = tf.tensor2d([[2, 2], [2, 2], [2, 2]])
    expect(product(fresh)).toEqual([12, 12])
    fresh.dispose()
    expect(product(weight)).toEqual([4, 5])
    weight.dispose()
  })

  it("are repacked after updateWeightInPlace, matching cpu", async () => {
    const weight = ownedVariable([[1, 0], [0, 1], [1, 1]])
    expect(product(weight)).toEqual([4, 5])
    updateWeightInPlace(weight, (data) => data.forEach((v, i) => (data[i] = v * 10 + i)))
    const wasm = product(weight)
    const values = Array.from(weight.dataSync())
    await initBackend({ backend: "cpu" })
    const reference = tf.tensor2d(values, [3, 2])
    const cpu = product(reference)
    reference.dispose()
    await initBackend({ backend: "wasm", threads: THREADS })
    expect(wasm).toEqual(cpu)
    expect(values).toEqual([10, 1, 2, 13, 14, 15])
    weight.dispose()
  })

  it("are repacked after assignWeight, and a shared source is never written through", () => {
    const source = tf.tensor2d([[1, 0], [0, 1], [1, 1]])
    const weight = tf.variable(source)
    expect(product(weight)).toEqual([4, 5])
    updateWeightInPlace(weight, (data) => data.fill(1))
    expect(Array.from(source.dataSync())).toEqual([1, 0, 0, 1, 1, 1])
    expect(product(weight)).toEqual([6, 6])
    assignWeight(weight, Float32Array.from([0, 1, 1, 0, 0, 0]))
    expect(product(weight)).toEqual([2, 1])
    source.dispose()
    weight.dispose()
  })
})
