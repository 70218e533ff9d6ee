/**
 * Parquet, read with hyparquet one row group at a time, through positional reads of the
 * file: memory holds a row group's rows, never the file. The file's schema gives each
 * column's starting type, which its values may only widen (see `infer.ts`):
 * - INT32 and INT64 are Int32 when every value fits, as JSON integers are: pandas
 *   writes INT64 by default, and a dataset should get one schema whether it arrives
 *   as parquet or JSON lines. An INT64 column holding a larger value is Int64, exact
 *   (Float64 would round past 2^53).
 * - FLOAT, DOUBLE and DECIMAL: Float64. BOOLEAN: Bool. Strings: Utf8.
 * - lists of those: List of the same, so INT64 token ids become List<Int32>.
 * - dates and timestamps: ISO 8601 text, to the millisecond. JSON columns keep their
 *   text; structs and maps become JSON text, as nested objects do in JSON files.
 * Compression: none, Snappy (pyarrow's default), gzip, Brotli, Zstandard (pandas' and
 * polars' default), LZ4 and LZ4_RAW. LZO is a FormatError naming it.
 *
 * Every batch must have the final schema, so the kinds are settled before the first
 * batch (`kinds.ts`). Most columns' declared type is final; the column chunks'
 * statistics settle integer columns (min and max within int32); what is left (INT64
 * without statistics, lists that may hold null elements, types only values tell) is
 * read in a first pass over the row groups, those columns only.
 */
import { Effect, Stream } from "effect"
import {
  type AsyncBuffer,
  type Compressors,
  type FileMetaData,
  parquetMetadata,
  parquetMetadataAsync,
  type ParquetParsers,
  parquetReadObjects,
  type ParquetRow
} from "hyparquet"
import { decompressLz4, decompressLz4Raw, decompressZstd } from "hyparquet-compressors"
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import { batchBuilder } from "./batch.ts"
import { formatError, type FormatError } from "./error.ts"
import { finalColumns, kindInference } from "./infer.ts"
import { completeProgress, type OpenedFile, type OpenOptions, progressFrom, rowBatches } from "./opened.ts"
import { settledColumns } from "./parquet-schema.ts"
import { pass, type Reader, type Source } from "./source.ts"

const decoder = new TextDecoder()
const iso = (millis: number): string => new Date(millis).toISOString()

const parsers: Partial<ParquetParsers> = {
  timestampFromMilliseconds: (millis) => iso(Number(millis)),
  timestampFromMicroseconds: (micros) => iso(Number(micros / 1000n)),
  timestampFromNanoseconds: (nanos) => iso(Number(nanos / 1_000_000n)),
  dateFromDays: (days) => iso(days * 86_400_000).slice(0, "yyyy-mm-dd".length),
  // hyparquet hands a null as undefined bytes.
  jsonFromBytes: (bytes) => bytes && decoder.decode(bytes)
}

/** Node's zlib is native, faster than the JavaScript gzip and Brotli of hyparquet-compressors. */
const compressors: Compressors = {
  GZIP: (input) => gunzipSync(input),
  BROTLI: (input) => brotliDecompressSync(input),
  ZSTD: (input) => decompressZstd(input),
  LZ4: decompressLz4,
  LZ4_RAW: decompressLz4Raw
}

const parquetError = (error: unknown, path: string): FormatError =>
  formatError(path, `cannot read parquet: ${error instanceof Error ? error.message : String(error)}`)

/** hyparquet's view of the file: its reads are counted for progress. */
const asyncBuffer = (reader: Reader, onRead: (bytes: number) => void): AsyncBuffer => {
  let read = 0
  return {
    byteLength: reader.size,
    slice: async (start, end = reader.size) => {
      const bytes = await reader.read(start, end - start)
      onRead(read += bytes.length)
      return bytes.buffer
    }
  }
}

/** The rows of each row group in turn; only `columns` when given. */
async function* rowGroups(
  file: AsyncBuffer,
  metadata: FileMetaData,
  path: string,
  columns?: ReadonlyArray<string>
): AsyncGenerator<Array<ParquetRow>> {
  let rowStart = 0
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows)
    if (rowEnd === rowStart) continue
    yield await parquetReadObjects({
      file,
      metadata,
      rowStart,
      rowEnd,
      parsers,
      compressors,
      ...(columns === undefined ? {} : { columns: [...columns] })
    }).catch((error: unknown) => {
      throw parquetError(error, path)
    })
    rowStart = rowEnd
  }
}

export const openParquet = (source: Source, options: OpenOptions): Effect.Effect<OpenedFile, FormatError> =>
  Effect.gen(function* () {
    const { path } = source
    const { metadata, reader } = yield* Effect.scoped(Effect.flatMap(source.open, (reader) =>
      Effect.tryPromise({
        // Under 8 bytes, the whole-buffer reader says why it is not parquet.
        try: async () => ({
          reader,
          metadata: reader.size < 8
            ? parquetMetadata(await reader.read(0, reader.size))
            : await parquetMetadataAsync(asyncBuffer(reader, () => {}))
        }),
        catch: (error) => parquetError(error, path)
      })))
    const { columns, unsettled } = settledColumns(metadata)
    const inference = yield* kindInference(path, columns)
    // Progress counts the column chunks each pass reads (the footer is not counted).
    const chunkBytes = (columns?: ReadonlyArray<string>) =>
      metadata.row_groups
        .flatMap((group) => group.columns)
        .filter((chunk) => columns === undefined || columns.includes(chunk.meta_data?.path_in_schema[0] ?? ""))
        .reduce((sum, chunk) => sum + Number(chunk.meta_data?.total_compressed_size ?? 0n), 0)
    const [prepassBytes, allBytes] = [chunkBytes(unsettled), chunkBytes()]
    const total = prepassBytes + allBytes
    const groups = (columns: ReadonlyArray<string> | undefined, before: number, share: number) =>
      pass(source, (reader) => rowGroups(asyncBuffer(reader, progressFrom(options, before, share, total)), metadata, path, columns), reader.version)
    if (unsettled.length > 0) {
      yield* Stream.runForEach(groups(unsettled, 0, prepassBytes), (rows) =>
        Effect.suspend(() => {
          for (const row of rows) {
            const error = inference.add(row)
            if (error !== undefined) return error
          }
          return Effect.void
        }))
    }
    const builder = batchBuilder(finalColumns(inference.columns()))
    const rows = groups(undefined, prepassBytes, allBytes).pipe(Stream.flattenIterables)
    return {
      schema: builder.schema,
      rows: Number(metadata.num_rows),
      batches: rowBatches(rows, builder, options.batchRows).pipe(completeProgress(options, total))
    }
  })
