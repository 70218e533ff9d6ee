/**
 * Kernels the wasm backend lacks, or has slow or wrong, for training a transformer.
 *
 * - `BatchMatMul`: the C++ kernel takes XNNPACK's fast path only for an untransposed
 *   product with a batch of one; otherwise a naive loop runs at 1–2 GFLOP/s, and every
 *   backward matmul lands there. We transpose explicitly, fold a shared right-hand side's
 *   batch into rows, and run other batches one by one on zero-copy views of the operands.
 * - `UnsortedSegmentSum` (the gradient of `gather`, so of the embedding) is missing: a JS
 *   kernel on the heap.
 * - `OneHot` with float32 writes the integer bit pattern of 1 (a denormal, 1.4e-45):
 *   build it as int32 and cast.
 * - `Transpose` of the last two axes (what the matmul fixes above need) runs about 25 ns
 *   an element in C++; a blocked JS loop on the heap takes about 3.
 */
import {
  BatchMatMul,
  type BatchMatMulAttrs,
  Cast,
  getKernel,
  type KernelConfig,
  type KernelFunc,
  OneHot,
  type OneHotAttrs,
  registerKernel,
  type TensorInfo,
  Transpose,
  unregisterKernel,
  UnsortedSegmentSum,
  type UnsortedSegmentSumAttrs
} from "@tensorflow/tfjs-core"
import {
  heapFloat32,
  heapInt32,
  registerAlias,
  releaseAlias,
  tensorData,
  type WasmBackend,
  wasmInternals
} from "./wasm-internals.ts"

const BACKEND = "wasm"

const kernel = (name: string): KernelConfig => {
  const config = getKernel(name, BACKEND)
  if (config === undefined) throw new Error(`wasm kernel ${name} is not registered`)
  return config
}

const replaceKernel = (name: string, kernelFunc: KernelFunc, setupFunc?: KernelConfig["setupFunc"]): void => {
  if (getKernel(name, BACKEND) !== undefined) unregisterKernel(name, BACKEND)
  registerKernel({ kernelName: name, backendName: BACKEND, kernelFunc, ...(setupFunc ? { setupFunc } : {}) })
}

const product = (shape: ReadonlyArray<number>): number => shape.reduce((a, b) => a * b, 1)

type RawMatMul = (
  aId: number,
  aShape: Uint8Array,
  aRank: number,
  bId: number,
  bShape: Uint8Array,
  bRank: number,
  transposeA: boolean,
  transposeB: boolean,
  outId: number
) => void

// Set by `installWasmKernels`: the C++ matmul, and the package's own kernels that the
// replacements fall back to for the cases they leave alone.
let rawMatMul: RawMatMul | undefined
let originalBatchMatMul: KernelFunc | undefined
let originalTranspose: KernelFunc | undefined
let originalOneHot: KernelFunc | undefined

const shapeBytes = (shape: ReadonlyArray<number>): Uint8Array => new Uint8Array(new Int32Array(shape).buffer)

/** out[1, m, n] = a[1, m, k] @ b[1, k, n] on C++ ids: XNNPACK's path, which packs `b` and caches it by id. */
const fastMatMul = (aId: number, bId: number, outId: number, m: number, k: number, n: number): void => {
  if (rawMatMul === undefined) throw new Error("BatchMatMul kernel was not set up")
  rawMatMul(aId, shapeBytes([1, m, k]), 3, bId, shapeBytes([1, k, n]), 3, false, false, outId)
}

/** Swaps the last two axes, in JS on the heap, 32×32 blocks at a time (cache-friendly). */
const transposeLast = (info: TensorInfo, backend: WasmBackend): TensorInfo => {
  const rank = info.shape.length
  const rows = info.shape[rank - 2] ?? 1
  const cols = info.shape[rank - 1] ?? 1
  const out = backend.makeOutput([...info.shape.slice(0, -2), cols, rows], "float32")
  // Views only now: the allocation above may have grown (and so detached) the heap.
  const source = heapFloat32(backend, info)
  const target = heapFloat32(backend, out)
  const block = 32
  for (let base = 0; base < source.length; base += rows * cols) {
    for (let r0 = 0; r0 < rows; r0 += block) {
      const r1 = Math.min(r0 + block, rows)
      for (let c0 = 0; c0 < cols; c0 += block) {
        const c1 = Math.min(c0 + block, cols)
        for (let r = r0; r < r1; r++) {
          for (let c = c0; c < c1; c++) target[base + c * rows + r] = source[base + r * cols + c] ?? 0
        }
      }
    }
  }
  return out
}

const swapsLastTwo = (perm: ReadonlyArray<number>): boolean =>
  perm.length >= 2 &&
  perm.every((axis, i) => (i < perm.length - 2 ? axis === i : axis === (i === perm.length - 1 ? perm.length - 2 : perm.length - 1)))

const transpose: KernelFunc = (args) => {
  const original = originalTranspose
  if (original === undefined) throw new Error("Transpose kernel was not set up")
  const { x } = args.inputs as { x: TensorInfo }
  const perm = (args.attrs as { perm: Array<number> }).perm
  if (x.dtype !== "float32" || !swapsLastTwo(perm)) return original(args)
  return transposeLast(x, wasmInternals(args.backend))
}

const batchMatMul: KernelFunc = (args) => {
  const original = originalBatchMatMul
  if (original === undefined) throw new Error("BatchMatMul kernel was not set up")
  const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo }
  const { transposeA, transposeB } = args.attrs as unknown as BatchMatMulAttrs
  const batchA = product(a.shape.slice(0, -2))
  const batchB = product(b.shape.slice(0, -2))
  const sameBatch = batchA === batchB && a.shape.slice(0, -2).join() === b.shape.slice(0, -2).join()
  const simple = !transposeA && !transposeB && batchA === 1 && batchB === 1
  // Broadcasting batch shapes other than a plain shared right-hand side: not on our paths.
  if (simple || a.dtype !== "float32" || b.dtype !== "float32" || !(batchB === 1 || sameBatch)) {
    return original(args)
  }
  const backend = wasmInternals(args.backend)
  const temporaries: Array<TensorInfo> = []
  const aMk = transposeA ? transposeLast(a, backend) : a
  const bKn = transposeB ? transposeLast(b, backend) : b
  if (transposeA) temporaries.push(aMk)
  if (transposeB) temporaries.push(bKn)
  const m = aMk.shape[aMk.shape.length - 2] ?? 1
  const k = aMk.shape[aMk.shape.length - 1] ?? 1
  const n = bKn.shape[bKn.shape.length - 1] ?? 1
  const outShape = [...(batchB === 1 ? a.shape.slice(0, -2) : b.shape.slice(0, -2)), m, n]
  const out = backend.makeOutput(outShape, "float32")
  try {
    if (batchB === 1) {
      // A shared right-hand side (a weight): one product with the batch folded into rows.
      fastMatMul(
        tensorData(backend, aMk).id,
        tensorData(backend, bKn).id,
        tensorData(backend, out).id,
        batchA * m,
        k,
        n
      )
    } else {
      for (let i = 0; i < batchB; i++) {
        const aId = registerAlias(backend, aMk, i * m * k, m * k)
        const bId = registerAlias(backend, bKn, i * k * n, k * n)
        const outId = registerAlias(backend, out, i * m * n, m * n)
        fastMatMul(aId, bId, outId, m, k, n)
        releaseAlias(backend, aId)
        releaseAlias(backend, bId)
        releaseAlias(backend, outId)
      }
    }
  } finally {
    for (const temporary of temporaries) backend.disposeData(temporary.dataId)
  }
  return out
}

const unsortedSegmentSum: KernelFunc = (args) => {
  const { x, segmentIds } = args.inputs as { x: TensorInfo; segmentIds: TensorInfo }
  const { numSegments } = args.attrs as unknown as UnsortedSegmentSumAttrs
  if (x.dtype !== "float32" || segmentIds.dtype !== "int32") {
    throw new Error(`UnsortedSegmentSum on wasm supports float32 data and int32 ids, got ${x.dtype} and ${segmentIds.dtype}`)
  }
  const backend = wasmInternals(args.backend)
  const rows = product(segmentIds.shape)
  const inner = product(x.shape) / Math.max(rows, 1)
  const out = backend.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], "float32")
  // Views only now: the allocation above may have grown (and so detached) the heap.
  const source = heapFloat32(backend, x)
  const ids = heapInt32(backend, segmentIds)
  const target = heapFloat32(backend, out)
  target.fill(0)
  for (let row = 0; row < rows; row++) {
    const segment = ids[row] ?? -1
    if (segment < 0 || segment >= numSegments) continue
    const from = row * inner
    const to = segment * inner
    for (let j = 0; j < inner; j++) target[to + j] = (target[to + j] ?? 0) + (source[from + j] ?? 0)
  }
  return out
}

const oneHot: KernelFunc = (args) => {
  const original = originalOneHot
  if (original === undefined) throw new Error("OneHot kernel was not set up")
  const attrs = args.attrs as unknown as OneHotAttrs
  if (attrs.dtype !== "float32") return original(args)
  const backend = wasmInternals(args.backend)
  const integers = original({ ...args, attrs: { ...args.attrs, dtype: "int32" } }) as TensorInfo
  try {
    return kernel(Cast).kernelFunc({ inputs: { x: integers }, backend: args.backend, attrs: { dtype: "float32" } })
  } finally {
    backend.disposeData(integers.dataId)
  }
}

let installed = false

/** Registers the replacements. Idempotent; call before the wasm backend initialises. */
export const installWasmKernels = (): void => {
  if (installed) return
  const matMul = kernel(BatchMatMul)
  originalBatchMatMul = matMul.kernelFunc
  const setupMatMul = matMul.setupFunc
  replaceKernel(BatchMatMul, batchMatMul, (backend) => {
    setupMatMul?.(backend)
    rawMatMul = wasmInternals(backend).wasm.cwrap(BatchMatMul, null, [
      "number",
      "array",
      "number",
      "number",
      "array",
      "number",
      "number",
      "number",
      "number"
    ]) as RawMatMul
  })
  const transposeConfig = kernel(Transpose)
  originalTranspose = transposeConfig.kernelFunc
  replaceKernel(Transpose, transpose, transposeConfig.setupFunc)
  const hot = kernel(OneHot)
  originalOneHot = hot.kernelFunc
  replaceKernel(OneHot, oneHot, hot.setupFunc)
  replaceKernel(UnsortedSegmentSum, unsortedSegmentSum)
  installed = true
}
