/**
 * What we reach inside `@tensorflow/tfjs-backend-wasm` for, typed in one place.
 *
 * Why: the fixes in this folder (a guarded `malloc`, zero-copy views for matmul,
 * re-keying weights after an in-place write) need the backend's tensor bookkeeping,
 * which its public types mark private. These shapes are those of version 4.22.0,
 * which package.json pins exactly; `tests/backend-wasm.test.ts` fails if they drift.
 */
import { Data } from "effect"
import type { DataType, TensorInfo } from "@tensorflow/tfjs-core"

/** The wasm heap is 32-bit: emscripten's `getHeapMax()` in this build. */
export const WASM_HEAP_MAX_BYTES = 4_294_901_760

interface EmscriptenModule {
  HEAPU8: Uint8Array
  HEAP8: Int8Array
  HEAP16: Int16Array
  HEAPU16: Uint16Array
  HEAP32: Int32Array
  HEAPU32: Uint32Array
  HEAPF32: Float32Array
  HEAPF64: Float64Array
  /** Typed by hand: this project's libs (no DOM) leave WebAssembly untyped. */
  wasmMemory?: { readonly buffer: ArrayBufferLike }
  _malloc(bytes: number): number
  _free(pointer: number): void
  cwrap(name: string, returnType: string | null, argTypes: ReadonlyArray<string>): (...args: Array<unknown>) => unknown
  tfjs: {
    registerTensor(id: number, size: number, memoryOffset: number): void
    disposeData(id: number): void
    getThreadsCount(): number
  }
  PThread?: { terminateAllThreads(): void; runningWorkers: Array<{ unref(): void }> }
}

interface TensorData {
  id: number
  memoryOffset: number
  shape: Array<number>
  dtype: DataType
  refCount: number
}

export interface WasmBackend {
  wasm: EmscriptenModule
  dataIdMap: { get(dataId: object): TensorData | undefined }
  /** Private in the .d.ts: the next id handed to the C++ side. Ids are never reused. */
  dataIdNextNumber: number
  makeOutput(shape: Array<number>, dtype: DataType): TensorInfo
  disposeData(dataId: object, force?: boolean): boolean
  refCount(dataId: object): number
}

/** The wasm backend's internals; throws when `backend` is not one (or its shape changed). */
export const wasmInternals = (backend: unknown): WasmBackend => {
  const candidate = (backend ?? {}) as Partial<WasmBackend>
  if (
    candidate.wasm === undefined ||
    typeof candidate.wasm._malloc !== "function" ||
    typeof candidate.dataIdNextNumber !== "number" ||
    candidate.dataIdMap === undefined
  ) {
    throw new Error("not a @tensorflow/tfjs-backend-wasm 4.22.0 backend: its internals are not where expected")
  }
  return candidate as WasmBackend
}

/**
 * The wasm heap's size now, which is its high-water mark (it never shrinks): what the
 * 4 GiB cap limits. Undefined when the current backend is not wasm.
 */
export const wasmHeapSize = (backend: unknown): number | undefined => {
  const memory = (backend as Partial<WasmBackend> | undefined)?.wasm?.wasmMemory
  return memory === undefined ? undefined : memory.buffer.byteLength
}

export const tensorData = (backend: WasmBackend, info: TensorInfo): TensorData => {
  const data = backend.dataIdMap.get(info.dataId)
  if (data === undefined) throw new Error("tensor data is not on the wasm backend (disposed, or on another backend)")
  return data
}

/**
 * Registers `size` float32 elements at `offsetElements` into `info`'s memory under a
 * fresh C++ id, for a kernel to read or write in place. Release it with `releaseAlias`,
 * which frees nothing: the memory stays owned by `info`.
 */
export const registerAlias = (backend: WasmBackend, info: TensorInfo, offsetElements: number, size: number): number => {
  const id = backend.dataIdNextNumber++
  backend.wasm.tfjs.registerTensor(id, size, tensorData(backend, info).memoryOffset + offsetElements * 4)
  return id
}

/** Drops a C++ id, which also runs its disposal callbacks (XNNPACK's cached operators). */
export const releaseAlias = (backend: WasmBackend, id: number): void => backend.wasm.tfjs.disposeData(id)

/**
 * Gives a tensor's memory a fresh C++ id after its bytes were changed in place.
 *
 * Why: XNNPACK packs a matmul's weights once and caches the packed copy under the
 * weight tensor's id, dropping it only when that id is disposed. Bytes rewritten
 * under the same id would be served stale, silently. A fresh id forces a repack.
 */
export const rekey = (backend: WasmBackend, info: TensorInfo): void => {
  const data = tensorData(backend, info)
  backend.wasm.tfjs.disposeData(data.id)
  data.id = backend.dataIdNextNumber++
  const size = data.shape.reduce((a, b) => a * b, 1)
  backend.wasm.tfjs.registerTensor(data.id, size, data.memoryOffset)
}

/** A float32 view of a tensor's bytes on the heap. Take it after the last allocation: growth detaches it. */
export const heapFloat32 = (backend: WasmBackend, info: TensorInfo): Float32Array => {
  const data = tensorData(backend, info)
  const size = data.shape.reduce((a, b) => a * b, 1)
  return new Float32Array(heapBuffer(backend), data.memoryOffset, size)
}

export const heapInt32 = (backend: WasmBackend, info: TensorInfo): Int32Array => {
  const data = tensorData(backend, info)
  const size = data.shape.reduce((a, b) => a * b, 1)
  return new Int32Array(heapBuffer(backend), data.memoryOffset, size)
}

const heapBuffer = (backend: WasmBackend): ArrayBufferLike => {
  refreshViews(backend.wasm)
  return backend.wasm.HEAPU8.buffer
}

const VIEWS = {
  HEAP8: Int8Array,
  HEAPU8: Uint8Array,
  HEAP16: Int16Array,
  HEAPU16: Uint16Array,
  HEAP32: Int32Array,
  HEAPU32: Uint32Array,
  HEAPF32: Float32Array,
  HEAPF64: Float64Array
} as const

/**
 * A shared (threaded) heap can grow from another thread (a kernel's scratch memory,
 * allocated by the thread pool), leaving the module's views short: emscripten only
 * refreshes them inside its own helpers, and tfjs reads `HEAPU8` directly, so a tensor
 * past the old end gets "Invalid typed array length". The views become accessors that
 * check the memory's size on every read.
 */
const refreshViews = (wasm: EmscriptenModule): void => {
  const memory = wasm.wasmMemory
  if (memory === undefined || (wasm as { viewsGuarded?: true }).viewsGuarded) return
  const views = wasm as unknown as Record<string, ArrayBufferView | undefined>
  for (const [name, View] of Object.entries(VIEWS)) {
    let view = views[name]
    Object.defineProperty(wasm, name, {
      configurable: true,
      get: () => {
        const buffer = memory.buffer
        if (view === undefined || view.buffer !== buffer) view = new View(buffer as ArrayBuffer)
        return view
      },
      set: (next: ArrayBufferView) => {
        view = next
      }
    })
  }
  ;(wasm as { viewsGuarded?: true }).viewsGuarded = true
}

const GIB = 1024 ** 3

/** The wasm heap could not grow enough for an allocation. */
export class WasmHeapExhausted extends Data.TaggedError("WasmHeapExhausted")<{
  readonly requestedBytes: number
  readonly heapBytes: number
}> {
  override get message(): string {
    return (
      `wasm heap exhausted: cannot allocate ${(this.requestedBytes / GIB).toFixed(2)} GiB ` +
      `(the heap holds ${(this.heapBytes / GIB).toFixed(2)} GiB and is capped at ` +
      `${WASM_HEAP_MAX_BYTES.toLocaleString("en-US")} bytes). Dispose tensors, use a smaller ` +
      `model, batch or sequence length, or the cpu or tensorflow backend.`
    )
  }
}

/**
 * Makes `malloc` throw instead of returning 0.
 *
 * Why: the backend does not check the pointer, so a failed allocation lands the tensor
 * at offset 0, on top of the allocator's own data: wrong numbers, then aborts or hangs.
 */
export const guardHeap = (backend: WasmBackend): void => {
  const wasm = backend.wasm
  if ((wasm._malloc as { guarded?: true }).guarded) return
  let malloc = wasm._malloc.bind(wasm)
  const guarded = Object.assign(
    (bytes: number): number => {
      const pointer = malloc(bytes) >>> 0
      const heapBytes = wasm.wasmMemory?.buffer.byteLength ?? wasm.HEAPU8.byteLength
      // Near the 4 GiB cap the allocator's 32-bit arithmetic wraps: it hands out a block
      // that runs past the end of the heap (seen: 1.2 GiB at 3.2 GiB of a 3.8 GiB heap).
      // That block is unusable and is not freed: its bookkeeping cannot be trusted.
      if ((pointer === 0 && bytes > 0) || pointer + bytes > heapBytes) {
        throw new WasmHeapExhausted({ requestedBytes: bytes, heapBytes })
      }
      refreshViews(wasm)
      return pointer
    },
    { guarded: true as const }
  )
  // Emscripten binds its exports lazily: the first internal call replaces `Module._malloc`
  // with the raw export. An accessor keeps our guard in front of whatever it installs.
  Object.defineProperty(wasm, "_malloc", {
    configurable: true,
    get: () => guarded,
    set: (raw: (bytes: number) => number) => {
      malloc = raw
    }
  })
}
