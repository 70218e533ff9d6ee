/**
 * The bytes of a data file, read one pass at a time: from the file itself (`openFile`)
 * or from bytes already in memory (`readTable`), through one interface, so that each
 * format has one reader for both. A pass opens the file and its scope closes it, so a
 * stream of batches that is never run holds no file open.
 *
 * Text formats read the content from the start in chunks, gunzipped when the file starts
 * with gzip's magic bytes (whatever its name says); parquet and Arrow read at positions.
 */
import { Effect, type Scope, Stream } from "effect"
import { open } from "node:fs/promises"
import { pipeline, Readable } from "node:stream"
import { createGunzip } from "node:zlib"
import { formatError, FormatError } from "./error.ts"

export interface Reader {
  /** Bytes in the file as stored (compressed, for a gzip file). */
  readonly size: number
  /** Changes when the file does: a file rewritten between two passes is an error, not a mix of two files. */
  readonly version: string
  /** `length` stored bytes at `position` (fewer at the end of the file), in a new array whose buffer holds them alone. */
  readonly read: (position: number, length: number) => Promise<Uint8Array<ArrayBuffer>>
}

export interface Source {
  /** For messages. */
  readonly path: string
  readonly open: Effect.Effect<Reader, FormatError, Scope.Scope>
}

/** A failed read, as the FormatError naming the file that every reader fails with. */
export const readError = (path: string) => (error: unknown): FormatError => {
  if (error instanceof FormatError) return error
  const message = error instanceof Error ? error.message : String(error)
  const code = (error as { readonly code?: unknown } | undefined)?.code
  return typeof code === "string" && code.startsWith("Z_")
    ? formatError(path, `not valid gzip data (${message})`)
    : formatError(path, `cannot read: ${message}`)
}

export const fileSource = (path: string): Source => ({
  path,
  open: Effect.gen(function* () {
    const handle = yield* Effect.acquireRelease(
      Effect.tryPromise({ try: () => open(path, "r"), catch: readError(path) }),
      (handle) => Effect.tryPromise(() => handle.close()).pipe(Effect.ignore)
    )
    const stat = yield* Effect.tryPromise({ try: () => handle.stat(), catch: readError(path) })
    const read = async (position: number, length: number): Promise<Uint8Array<ArrayBuffer>> => {
      const buffer = new Uint8Array(Math.max(0, Math.min(length, stat.size - position)))
      let filled = 0
      while (filled < buffer.length) {
        const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, position + filled)
        if (bytesRead === 0) break
        filled += bytesRead
      }
      return filled === buffer.length ? buffer : buffer.slice(0, filled)
    }
    return { size: stat.size, version: `${stat.size}:${stat.mtimeMs}`, read }
  })
})

export const bytesSource = (bytes: Uint8Array, path: string): Source => ({
  path,
  open: Effect.succeed({
    size: bytes.length,
    version: "",
    // A copy: a Node Buffer's `slice` is a view into a shared pool.
    read: async (position, length) => new Uint8Array(bytes.subarray(position, position + length))
  })
})

/**
 * A stream that opens the source anew each time it runs and reads it with `read`,
 * failing if the file changed since `version` was taken (the first pass's).
 */
export const pass = <A>(
  source: Source,
  read: (reader: Reader) => AsyncIterable<A>,
  version?: string
): Stream.Stream<A, FormatError> =>
  Stream.unwrapScoped(Effect.gen(function* () {
    const reader = yield* source.open
    if (version !== undefined && reader.version !== version) {
      return yield* formatError(source.path, "the file changed while it was being read")
    }
    return Stream.fromAsyncIterable(read(reader), readError(source.path))
  }))

/** Whether the file is gzip, by its magic bytes. */
const isGzip = async (reader: Reader): Promise<boolean> => {
  const head = await reader.read(0, 2)
  return head[0] === 0x1f && head[1] === 0x8b
}

const CHUNK_BYTES = 1 << 20

async function* storedChunks(reader: Reader, onRead: (bytes: number) => void): AsyncGenerator<Uint8Array> {
  for (let position = 0; position < reader.size;) {
    const chunk = await reader.read(position, CHUNK_BYTES)
    if (chunk.length === 0) return
    position += chunk.length
    onRead(position)
    yield chunk
  }
}

/**
 * The file's content from its start, gunzipped when it is gzip (a truncated or corrupt
 * one fails with zlib's error). `onRead` is told the stored bytes read so far.
 */
export async function* contentChunks(reader: Reader, onRead: (bytes: number) => void): AsyncGenerator<Uint8Array> {
  const stored = storedChunks(reader, onRead)
  if (!(await isGzip(reader))) return yield* stored
  // pipeline destroys both streams when either fails or the reader stops early.
  yield* pipeline(Readable.from(stored, { highWaterMark: 1 }), createGunzip({ chunkSize: CHUNK_BYTES }), () => {})
}

/** UTF-8 text in chunks. A leading BOM is dropped, as Excel and Notepad write one. */
export async function* textChunks(bytes: AsyncIterable<Uint8Array>, path: string): AsyncGenerator<string> {
  const decoder = new TextDecoder("utf-8", { fatal: true })
  const decode = (chunk?: Uint8Array): string => {
    try {
      return chunk === undefined ? decoder.decode() : decoder.decode(chunk, { stream: true })
    } catch {
      throw formatError(path, "not valid UTF-8 text")
    }
  }
  for await (const chunk of bytes) {
    const text = decode(chunk)
    if (text !== "") yield text
  }
  const rest = decode()
  if (rest !== "") yield rest
}

/** Lines of text, numbered from 1, a run of whole lines per chunk of text. */
export interface Lines {
  /** The number of `texts[0]`. */
  readonly first: number
  /** Without their "\n" (a CRLF line keeps its "\r"). */
  readonly texts: ReadonlyArray<string>
}

/** Splits text at "\n" as `String.split` would; a line spanning many chunks is joined once. */
export async function* lineChunks(texts: AsyncIterable<string>): AsyncGenerator<Lines> {
  let partial: Array<string> = []
  let next = 1
  for await (const text of texts) {
    const lines: Array<string> = []
    let start = 0
    for (let newline = text.indexOf("\n"); newline !== -1; newline = text.indexOf("\n", start)) {
      partial.push(text.slice(start, newline))
      lines.push(partial.join(""))
      partial = []
      start = newline + 1
    }
    if (start < text.length) partial.push(text.slice(start))
    if (lines.length > 0) {
      yield { first: next, texts: lines }
      next += lines.length
    }
  }
  yield { first: next, texts: [partial.join("")] }
}
