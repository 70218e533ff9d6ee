/**
 * The safetensors format, read and written by hand: an 8-byte little-endian header
 * length, a JSON header (`name → {dtype, shape, data_offsets}` plus `__metadata__`),
 * then the raw little-endian data. F32, F16 and BF16 are read into float32; we write F32.
 *
 * Why our own: no maintained npm reader fits Node and tfjs without pulling in a
 * framework, and the format is 50 lines. Tensors are read one at a time, so that
 * loading never holds a whole checkpoint in host memory next to the model.
 */
import { FileSystem } from "@effect/platform"
import { Data, Effect, type Scope } from "effect"

const DTYPES = { F32: 4, F16: 2, BF16: 2 } as const
export type Dtype = keyof typeof DTYPES

export interface TensorEntry {
  readonly name: string
  readonly dtype: Dtype
  readonly shape: ReadonlyArray<number>
  /** Byte offsets into the data section (after the header). */
  readonly begin: number
  readonly end: number
}

export interface SafetensorsHeader {
  readonly tensors: ReadonlyMap<string, TensorEntry>
  readonly metadata: Readonly<Record<string, string>>
  /** Where the data section starts in the file: 8 + the header's length. */
  readonly dataOffset: number
}

/** A safetensors file that cannot be read, or a tensor that does not fit. */
export class SafetensorsError extends Data.TaggedError("SafetensorsError")<{
  readonly path: string
  readonly message: string
}> {}

const fail = (path: string, reason: string) => new SafetensorsError({ path, message: `${path}: ${reason}` })

const HEADER_LENGTH_BYTES = 8
// The reference implementation refuses headers above 100 MB; so do we.
const MAX_HEADER_BYTES = 100_000_000

const isDtype = (value: unknown): value is Dtype => typeof value === "string" && Object.hasOwn(DTYPES, value)

const isShape = (value: unknown): value is Array<number> =>
  Array.isArray(value) && value.every((dim) => Number.isSafeInteger(dim) && dim >= 0)

const elementCount = (shape: ReadonlyArray<number>): number => shape.reduce((a, b) => a * b, 1)

/** The length of the JSON header, from the file's first 8 bytes. */
const headerLength = (prefix: Uint8Array, fileSize: number, path: string): Effect.Effect<number, SafetensorsError> => {
  if (prefix.byteLength < HEADER_LENGTH_BYTES || fileSize < HEADER_LENGTH_BYTES) {
    return Effect.fail(fail(path, `truncated: ${fileSize} bytes, too short for the 8-byte header length`))
  }
  const length = new DataView(prefix.buffer, prefix.byteOffset, HEADER_LENGTH_BYTES).getBigUint64(0, true)
  if (length > BigInt(MAX_HEADER_BYTES)) return Effect.fail(fail(path, `header length ${length} is implausible (not safetensors?)`))
  const n = Number(length)
  if (HEADER_LENGTH_BYTES + n > fileSize) {
    return Effect.fail(fail(path, `truncated: the header says it is ${n} bytes long, but the file has ${fileSize - HEADER_LENGTH_BYTES} after its length`))
  }
  return Effect.succeed(n)
}

/** Parses and checks the JSON header; `fileSize` lets it tell a truncated file. */
const parseHeader = (json: Uint8Array, fileSize: number, path: string): Effect.Effect<SafetensorsHeader, SafetensorsError> =>
  Effect.gen(function* () {
    const parsed = yield* Effect.try({
      try: () => JSON.parse(new TextDecoder().decode(json)) as unknown,
      catch: (error) => fail(path, `header is not JSON (${error instanceof Error ? error.message : String(error)})`)
    })
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      return yield* fail(path, "header is not a JSON object")
    }
    const dataOffset = HEADER_LENGTH_BYTES + json.byteLength
    const dataBytes = fileSize - dataOffset
    const tensors = new Map<string, TensorEntry>()
    let metadata: Record<string, string> = {}
    for (const [name, value] of Object.entries(parsed)) {
      if (name === "__metadata__") {
        metadata = value as Record<string, string>
        continue
      }
      const { dtype, shape, data_offsets: offsets } = (value ?? {}) as Record<string, unknown>
      if (!isDtype(dtype)) {
        return yield* fail(path, `tensor ${name} has dtype ${JSON.stringify(dtype)}; supported: ${Object.keys(DTYPES).join(", ")}`)
      }
      if (!isShape(shape)) return yield* fail(path, `tensor ${name} has an invalid shape ${JSON.stringify(shape)}`)
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(Number.isSafeInteger)) {
        return yield* fail(path, `tensor ${name} has invalid data_offsets ${JSON.stringify(offsets)}`)
      }
      const [begin, end] = offsets as [number, number]
      const expected = elementCount(shape) * DTYPES[dtype]
      if (begin < 0 || end - begin !== expected) {
        return yield* fail(path, `tensor ${name} (${dtype} [${shape.join(", ")}]) should span ${expected} bytes, its data_offsets span ${end - begin}`)
      }
      if (end > dataBytes) {
        return yield* fail(path, `truncated: tensor ${name} ends at byte ${end} of the data, but the file holds only ${dataBytes} bytes of data`)
      }
      tensors.set(name, { name, dtype, shape, begin, end })
    }
    return { tensors, metadata, dataOffset }
  })

const halfToFloat = (bits: number): number => {
  const sign = bits & 0x8000 ? -1 : 1
  const exponent = (bits >> 10) & 0x1f
  const fraction = bits & 0x3ff
  if (exponent === 0) return sign * fraction * 2 ** -24
  if (exponent === 0x1f) return fraction === 0 ? sign * Infinity : NaN
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15)
}

/** Little-endian bytes of `dtype` as float32 values. `bytes` need not be aligned. */
export const toFloat32 = (dtype: Dtype, bytes: Uint8Array): Float32Array => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out = new Float32Array(bytes.byteLength / DTYPES[dtype])
  switch (dtype) {
    case "F32":
      if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, out.length).slice()
      for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true)
      return out
    case "F16":
      for (let i = 0; i < out.length; i++) out[i] = halfToFloat(view.getUint16(2 * i, true))
      return out
    case "BF16": {
      // bfloat16 is the top half of a float32.
      const widened = new Uint32Array(out.buffer)
      for (let i = 0; i < out.length; i++) widened[i] = view.getUint16(2 * i, true) << 16
      return out
    }
  }
}

export interface SafetensorsReader {
  readonly path: string
  readonly header: SafetensorsHeader
  /** One tensor as float32, checked against `expectedShape` when given. */
  readonly read: (name: string, expectedShape?: ReadonlyArray<number>) => Effect.Effect<Float32Array, SafetensorsError>
}

const describeCause = (cause: { message: string }) => cause.message

/** Opens a safetensors file for reading tensor by tensor; the handle closes with the scope. */
export const openSafetensors = (
  path: string
): Effect.Effect<SafetensorsReader, SafetensorsError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const io = (what: string) => (cause: { message: string }) => fail(path, `cannot ${what} (${describeCause(cause)})`)
    const file = yield* fs.open(path, { flag: "r" }).pipe(Effect.mapError(io("open")))
    const fileSize = Number((yield* file.stat.pipe(Effect.mapError(io("stat")))).size)
    const readAt = (offset: number, length: number) =>
      Effect.gen(function* () {
        const buffer = new Uint8Array(length)
        yield* file.seek(FileSystem.Size(offset), "start")
        let filled = 0
        while (filled < length) {
          const got = Number(yield* file.read(buffer.subarray(filled)).pipe(Effect.mapError(io("read"))))
          if (got === 0) return yield* fail(path, `truncated: wanted ${length} bytes at offset ${offset}, the file ended ${length - filled} short`)
          filled += got
        }
        return buffer
      })
    const length = yield* headerLength(yield* readAt(0, Math.min(HEADER_LENGTH_BYTES, fileSize)), fileSize, path)
    const header = yield* parseHeader(yield* readAt(HEADER_LENGTH_BYTES, length), fileSize, path)
    const read = (name: string, expectedShape?: ReadonlyArray<number>) =>
      Effect.gen(function* () {
        const entry = header.tensors.get(name)
        if (entry === undefined) return yield* fail(path, `has no tensor ${name}`)
        if (expectedShape !== undefined && expectedShape.join() !== entry.shape.join()) {
          return yield* fail(path, `tensor ${name} has shape [${entry.shape.join(", ")}], the model expects [${expectedShape.join(", ")}]`)
        }
        return toFloat32(entry.dtype, yield* readAt(header.dataOffset + entry.begin, entry.end - entry.begin))
      })
    return { path, header, read }
  })

export interface NamedTensor {
  readonly name: string
  readonly shape: ReadonlyArray<number>
  /** The values, or a function that makes them when their turn to be written comes (one tensor in memory at a time). */
  readonly data: Float32Array | (() => Float32Array)
}

/** The F32 header for `tensors`, padded with spaces to 8 bytes as the reference writer does. */
export const encodeHeader = (
  tensors: ReadonlyArray<Omit<NamedTensor, "data">>,
  metadata: Readonly<Record<string, string>>
): Uint8Array => {
  const header: Record<string, unknown> = { __metadata__: metadata }
  let offset = 0
  for (const { name, shape } of tensors) {
    const bytes = elementCount(shape) * DTYPES.F32
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] }
    offset += bytes
  }
  const json = new TextEncoder().encode(JSON.stringify(header))
  const padded = Math.ceil(json.byteLength / 8) * 8
  const out = new Uint8Array(HEADER_LENGTH_BYTES + padded).fill(0x20, HEADER_LENGTH_BYTES)
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true)
  out.set(json, HEADER_LENGTH_BYTES)
  return out
}

/** Writes `tensors` as F32, in the order given, streaming them to `path`. */
export const writeSafetensors = (
  path: string,
  tensors: ReadonlyArray<NamedTensor>,
  metadata: Readonly<Record<string, string>> = { format: "pt" }
): Effect.Effect<void, SafetensorsError, FileSystem.FileSystem> =>
  Effect.scoped(
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const io = (cause: { message: string }) => fail(path, `cannot write (${describeCause(cause)})`)
      const file = yield* fs.open(path, { flag: "w" }).pipe(Effect.mapError(io))
      yield* file.writeAll(encodeHeader(tensors, metadata)).pipe(Effect.mapError(io))
      for (const tensor of tensors) {
        const data = typeof tensor.data === "function" ? tensor.data() : tensor.data
        if (data.length !== elementCount(tensor.shape)) {
          return yield* fail(path, `tensor ${tensor.name} has ${data.length} values for shape [${tensor.shape.join(", ")}]`)
        }
        // Float32Array is little-endian on every platform Node runs on.
        yield* file.writeAll(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).pipe(Effect.mapError(io))
      }
    })
  )
