/**
 * Parquet, read with hyparquet. The file's schema gives each column's starting type,
 * which its values may only widen (see `infer.ts`):
 * - INT32 and INT64 are Int32 when every value fits, as JSON integers are: pandas
 *   writes INT64 by default, and a dataset should get one schema whether it arrives
 *   as parquet or JSON lines. An INT64 column holding a larger value is Int64, exact
 *   (Float64 would round past 2^53).
 * - FLOAT, DOUBLE and DECIMAL: Float64. BOOLEAN: Bool. Strings: Utf8.
 * - lists of those: List of the same, so INT64 token ids become List<Int32>.
 * - dates and timestamps: ISO 8601 text, to the millisecond. JSON columns keep their
 *   text; structs and maps become JSON text, as nested objects do in JSON files.
 * Compression: none, Snappy (pyarrow's default), gzip and Brotli. Zstandard and LZ4
 * need codecs that Node 20 lacks, and are a FormatError.
 */
import type { Table } from "apache-arrow"
import { Effect } from "effect"
import {
  type Compressors,
  type FileMetaData,
  parquetMetadata,
  type ParquetParsers,
  parquetReadObjects,
  parquetSchema,
  type SchemaElement,
  type SchemaTree
} from "hyparquet"
import { brotliDecompressSync, gunzipSync } from "node:zlib"
import { formatError, type FormatError } from "./error.ts"
import { type Column, rowsToTable } from "./infer.ts"
import type { Kind, Scalar } from "./kinds.ts"

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

const compressors: Compressors = {
  GZIP: (input) => gunzipSync(input),
  BROTLI: (input) => brotliDecompressSync(input)
}

export const readParquet = (bytes: Uint8Array, path: string): Effect.Effect<Table, FormatError> =>
  Effect.gen(function* () {
    // hyparquet wants an ArrayBuffer holding the file alone, and a Node Buffer is often a
    // view into a shared pool, whose `slice` is a view too: copy.
    const file = new Uint8Array(bytes).buffer
    const metadata = yield* Effect.try({ try: () => parquetMetadata(file), catch: (error) => parquetError(error, path) })
    const rows = yield* Effect.tryPromise({
      try: () => parquetReadObjects({ file, metadata, parsers, compressors }),
      catch: (error) => parquetError(error, path)
    })
    return yield* rowsToTable(rows, path, { columns: declaredColumns(metadata) })
  })

const parquetError = (error: unknown, path: string): FormatError =>
  formatError(path, `cannot read parquet: ${error instanceof Error ? error.message : String(error)}`)

const declaredColumns = (metadata: FileMetaData): Array<Column> =>
  parquetSchema(metadata).children.map((node) => ({ name: node.element.name, kind: declaredKind(node) }))

const declaredKind = (node: SchemaTree): Kind | undefined => {
  if (annotationOf(node.element) === "LIST") {
    const element = listElement(node)
    const kind = element === undefined ? undefined : primitiveKind(element.element)
    return kind === undefined ? undefined : `list<${kind}>`
  }
  return node.children.length > 0 ? "json" : primitiveKind(node.element)
}

/** The leaf under a LIST: `list.element` in the standard layout, the repeated field itself in the legacy one. */
const listElement = (list: SchemaTree): SchemaTree | undefined => {
  const repeated = list.children[0]
  const element = repeated?.children.length === 1 ? repeated.children[0] : repeated
  return element?.children.length === 0 ? element : undefined
}

const annotationOf = (element: SchemaElement): string | undefined =>
  element.logical_type?.type ?? element.converted_type

const TEXT_ANNOTATIONS = new Set([undefined, "STRING", "UTF8", "ENUM", "JSON"])

/** Undefined where the values should decide (INT96 timestamps, fixed-length byte arrays, geometry). */
const primitiveKind = (element: SchemaElement): Scalar | undefined => {
  const annotation = annotationOf(element)
  if (annotation === "DECIMAL" || annotation === "FLOAT16") return "float64"
  if (annotation === "DATE" || annotation?.startsWith("TIMESTAMP")) return "utf8"
  switch (element.type) {
    case "BOOLEAN":
      return "bool"
    case "INT32":
    case "INT64":
      return "int32"
    case "FLOAT":
    case "DOUBLE":
      return "float64"
    case "BYTE_ARRAY":
      return TEXT_ANNOTATIONS.has(annotation) ? "utf8" : undefined
    default:
      return undefined
  }
}
