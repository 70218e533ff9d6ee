/**
 * Local data files read into Arrow tables: JSON lines, JSON, CSV and TSV, parquet and
 * Arrow IPC. Each format has its module; `infer.ts` holds the schema inference they
 * share with the stages that build rows themselves (the hub, the scraper).
 */
import type { Table } from "apache-arrow"
import { Effect } from "effect"
import { extname } from "node:path"
import { readArrow } from "./arrow.ts"
import { readCsv } from "./csv.ts"
import type { FormatError } from "./error.ts"
import { readJson } from "./json.ts"
import { readJsonl } from "./jsonl.ts"
import { readParquet } from "./parquet.ts"

export { FormatError } from "./error.ts"
export { type Column, type InferOptions, rowsToTable } from "./infer.ts"
export type { Kind } from "./kinds.ts"

/** A file format. TSV is CSV with tabs, kept apart because the extension decides the delimiter. */
export type Format = "jsonl" | "json" | "csv" | "tsv" | "parquet" | "arrow"

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

/** The format its extension names (any case), or undefined. */
export const detectFormat = (path: string): Format | undefined => BY_EXTENSION.get(extname(path).toLowerCase())

const readers: Record<Format, (bytes: Uint8Array, path: string) => Effect.Effect<Table, FormatError>> = {
  jsonl: readJsonl,
  json: readJson,
  csv: (bytes, path) => readCsv(bytes, path, ","),
  tsv: (bytes, path) => readCsv(bytes, path, "\t"),
  parquet: readParquet,
  arrow: readArrow
}

/** Reads a whole file's bytes as a table. `path` is only for error messages. */
export const readTable = (bytes: Uint8Array, format: Format, path: string): Effect.Effect<Table, FormatError> =>
  readers[format](bytes, path).pipe(Effect.withSpan("formats.readTable", { attributes: { format, path } }))
