/**
 * Local data files read as Arrow record batches: JSON lines, JSON, CSV and TSV (each
 * gzipped or not), parquet and Arrow IPC. `openFile` streams a file batch by batch,
 * with memory bounded by a batch (or a parquet row group), not the file; `readTable`
 * reads bytes already in memory into one table, through the same readers.
 *
 * Each format has its module; `source.ts` gives them the file's bytes, `infer.ts` holds
 * the schema inference they share with the stages that build rows themselves (the hub,
 * the scraper), and `batch.ts` builds the batches.
 */
import { RecordBatch, type Schema, Struct, Table, makeBuilder, makeData } from "apache-arrow"
import { Chunk, Effect, Stream } from "effect"
import { basename, extname } from "node:path"
import { openArrow } from "./arrow.ts"
import { openCsv } from "./csv.ts"
import type { FormatError } from "./error.ts"
import { openJson } from "./json.ts"
import { openJsonl } from "./jsonl.ts"
import type { OpenedFile, OpenOptions } from "./opened.ts"
import { openParquet } from "./parquet.ts"
import { bytesSource, fileSource, type Source } from "./source.ts"

export { FormatError } from "./error.ts"
export { type Column, type InferOptions, rowsToTable } from "./infer.ts"
export type { Kind } from "./kinds.ts"
export type { OpenedFile, OpenOptions } from "./opened.ts"

/** A file format. TSV is CSV with tabs, kept apart because the extension decides the delimiter. */
export type Format = "jsonl" | "json" | "csv" | "tsv" | "parquet" | "arrow"

/** How a data file is compressed as a whole; the readers recognise it by its magic bytes. */
export type Compression = "gzip"

export interface DataFile {
  readonly format: Format
  readonly compression: Compression | undefined
}

const BY_EXTENSION: ReadonlyMap<string, Format> = new Map([
  [".jsonl", "jsonl"],
  [".ndjson", "jsonl"],
  [".json", "json"],
  [".csv", "csv"],
  [".tsv", "tsv"],
  [".parquet", "parquet"],
  [".arrow", "arrow"],
  [".feather", "arrow"],
  [".ipc", "arrow"]
])

/** Parquet and Arrow are read at positions, which a gzip stream does not allow (they compress inside). */
const GZIPPED: ReadonlySet<Format> = new Set(["jsonl", "json", "csv", "tsv"])

/** The format and compression its name says (any case): `train.jsonl`, `train.jsonl.gz`; undefined for other files. */
export const detectDataFile = (path: string): DataFile | undefined => {
  const name = basename(path).toLowerCase()
  const gzip = name.endsWith(".gz")
  const format = BY_EXTENSION.get(extname(gzip ? name.slice(0, -".gz".length) : name))
  if (format === undefined || (gzip && !GZIPPED.has(format))) return undefined
  return { format, compression: gzip ? "gzip" : undefined }
}

/** The format its name says, compressed or not (see `detectDataFile`). */
export const detectFormat = (path: string): Format | undefined => detectDataFile(path)?.format

const openers: Record<Format, (source: Source, options: OpenOptions) => Effect.Effect<OpenedFile, FormatError>> = {
  jsonl: openJsonl,
  json: openJson,
  csv: (source, options) => openCsv(source, options, ","),
  tsv: (source, options) => openCsv(source, options, "\t"),
  parquet: openParquet,
  arrow: openArrow
}

/**
 * Opens a data file for reading batch by batch: its schema and row count come first
 * (the text formats read the whole file once for them), then `batches` reads it.
 * A gzipped file is gunzipped whatever `format` says.
 */
export const openFile = (path: string, format: Format, options: OpenOptions): Effect.Effect<OpenedFile, FormatError> =>
  (Number.isSafeInteger(options.batchRows) && options.batchRows > 0
    ? openers[format](fileSource(path), options)
    : Effect.dieMessage(`openFile: batchRows must be a positive integer, not ${options.batchRows}`))
    .pipe(Effect.withSpan("formats.openFile", { attributes: { format, path } }))

/** A batch of no rows; builders make each column, list children included. */
const emptyBatch = (schema: Schema): RecordBatch =>
  new RecordBatch(schema, makeData({
    type: new Struct(schema.fields),
    length: 0,
    nullCount: 0,
    children: schema.fields.map((field) => makeBuilder({ type: field.type }).finish().flush())
  }))

/** Reads a whole file's bytes as one table. `path` is only for error messages. */
export const readTable = (bytes: Uint8Array, format: Format, path: string): Effect.Effect<Table, FormatError> =>
  Effect.gen(function* () {
    const opened = yield* openers[format](bytesSource(bytes, path), { batchRows: Number.MAX_SAFE_INTEGER })
    const batches = Chunk.toArray(yield* Stream.runCollect(opened.batches))
    return new Table(opened.schema, batches.length > 0 ? batches : [emptyBatch(opened.schema)])
  }).pipe(Effect.withSpan("formats.readTable", { attributes: { format, path } }))
