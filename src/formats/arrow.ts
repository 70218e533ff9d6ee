/**
 * Arrow IPC, file or stream, read batch by batch with apache-arrow's reader through
 * positional reads of the file; batches longer than `batchRows` are sliced (views, not
 * copies). Feather v2 is the IPC file format; Feather v1, and streams from before Arrow
 * 0.15 (without the continuation marker), are refused.
 *
 * The row count comes from the messages' metadata alone (their bodies are skipped): the
 * footer's blocks in a file, a walk from message to message in a stream.
 */
import { type FileHandle, type Message, MessageReader, type RecordBatch, RecordBatchReader } from "apache-arrow"
import { Effect, Stream } from "effect"
import { formatError, type FormatError } from "./error.ts"
import { completeProgress, type OpenedFile, type OpenOptions, progressFrom } from "./opened.ts"
import { pass, readError, type Reader, type Source } from "./source.ts"

const FILE_MAGIC = new TextEncoder().encode("ARROW1")
const STREAM_CONTINUATION = [0xff, 0xff, 0xff, 0xff]

const startsWith = (bytes: Uint8Array, prefix: ArrayLike<number>): boolean =>
  bytes.length >= prefix.length && Array.from(prefix).every((byte, i) => bytes[i] === byte)

const corrupt = (path: string) => (error: unknown): FormatError =>
  formatError(path, `corrupt Arrow IPC data: ${error instanceof Error ? error.message : String(error)}`)

/**
 * apache-arrow reads a file through any object with a numeric `fd`, `stat`, positional
 * `read` and `close`: this one reads through `reader`, counting the bytes for progress.
 * Closing is the pass's scope's job, so `close` does nothing.
 */
const arrowHandle = (reader: Reader, onRead: (bytes: number) => void): FileHandle => {
  let read = 0
  const handle = {
    fd: -1,
    stat: async () => ({ size: reader.size }),
    read: async (buffer: Uint8Array, offset: number, length: number, position: number) => {
      const bytes = await reader.read(position, length)
      buffer.set(bytes, offset)
      onRead(read += bytes.length)
      return { bytesRead: bytes.length, buffer }
    },
    close: async () => {}
  }
  // The cast: Node's FileHandle type has many more methods, which apache-arrow never calls.
  return handle as unknown as FileHandle
}

/**
 * The message at `position` (its metadata only) and the bytes it takes with its body;
 * none at the end-of-stream marker or the end of the file. Its length follows the
 * continuation marker, or comes first in files written before Arrow 0.15.
 */
const messageAt = async (reader: Reader, position: number): Promise<{ message: Message; bytes: number } | undefined> => {
  const prefix = await reader.read(position, 8)
  if (prefix.length < 8) return undefined
  const view = new DataView(prefix.buffer)
  const lengthAt = view.getInt32(0, true) === -1 ? 4 : 0
  const metadata = lengthAt + 4 + view.getInt32(lengthAt, true)
  const message = metadata > lengthAt + 4 ? new MessageReader(await reader.read(position, metadata)).readMessage() : null
  return message === null ? undefined : { message, bytes: metadata + message.bodyLength }
}

const countRows = async (reader: Reader, arrow: RecordBatchReader): Promise<number> => {
  let rows = 0
  const add = (message: Message) => {
    if (message.isRecordBatch()) rows += message.header().length
  }
  if (arrow.footer !== null) {
    for (const block of arrow.footer.recordBatches()) {
      const found = await messageAt(reader, block.offset)
      if (found !== undefined) add(found.message)
    }
    return rows
  }
  for (let position = 0, found = await messageAt(reader, 0); found !== undefined; found = await messageAt(reader, position)) {
    add(found.message)
    position += found.bytes
  }
  return rows
}

async function* fileBatches(reader: Reader, path: string, onRead: (bytes: number) => void): AsyncGenerator<RecordBatch> {
  try {
    for await (const batch of await RecordBatchReader.from(arrowHandle(reader, onRead))) yield batch
  } catch (error) {
    throw corrupt(path)(error)
  }
}

export const openArrow = (source: Source, options: OpenOptions): Effect.Effect<OpenedFile, FormatError> =>
  Effect.gen(function* () {
    const { path } = source
    const { reader, schema, rows } = yield* Effect.scoped(Effect.gen(function* () {
      const reader = yield* source.open
      const head = yield* Effect.tryPromise({ try: () => reader.read(0, FILE_MAGIC.length), catch: readError(path) })
      // apache-arrow reads bytes of any other kind as an empty table instead of failing.
      if (!startsWith(head, FILE_MAGIC) && !startsWith(head, STREAM_CONTINUATION)) {
        return yield* formatError(path, "not an Arrow IPC file or stream")
      }
      return yield* Effect.tryPromise({
        try: async () => {
          const arrow = await (await RecordBatchReader.from(arrowHandle(reader, () => {}))).open()
          return { reader, schema: arrow.schema, rows: await countRows(reader, arrow) }
        },
        catch: corrupt(path)
      })
    }))
    const batches = pass(source, (reader) => fileBatches(reader, path, progressFrom(options, 0, reader.size, reader.size)), reader.version).pipe(
      Stream.mapConcat((batch) =>
        batch.numRows <= options.batchRows ? [batch] : Array.from(
          { length: Math.ceil(batch.numRows / options.batchRows) },
          (_, i) => batch.slice(i * options.batchRows, (i + 1) * options.batchRows)
        )),
      completeProgress(options, reader.size)
    )
    return { schema, rows, batches }
  })
