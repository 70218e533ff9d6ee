/**
 * Schema inference: plain rows (from JSON lines, JSON, CSV, parquet, the hub or a
 * scraper) become one Arrow table.
 *
 * Every row is read, not a sample: a column that turns from numbers to text at row
 * 90,000 is an error here, not a corrupt dataset later. Columns come in first-seen key
 * order and are all nullable; a missing key or a null is a null.
 *
 * Values and the column types they give:
 * - numbers: Int32 while every value is an integer within int32, else Float64. A bigint
 *   (parquet INT64) beyond int32 gives Int64, which stays exact; mixed with
 *   non-integers it widens to Float64.
 * - booleans: Bool. Strings: Utf8.
 * - arrays of numbers, booleans or strings: List of the widened element type.
 *   List<Int32> is built with `int32ListVector`, so integer arrays never become
 *   List<Float64>. An empty array fits any list column; a column of only empty arrays
 *   is List<Int32>.
 * - objects, and arrays holding objects, arrays, nulls or mixed types: Utf8 holding
 *   their JSON text. Arrow structs would need one shape across all rows, which free-form
 *   JSON (chat messages, metadata) rarely has; the text loses nothing, and a later
 *   stage can parse it.
 * - a column of only nulls: Utf8.
 * Any other mix (text in one row, a number in another) is a FormatError naming the
 * column, the row and both types.
 */
import {
  Bool,
  type Data,
  type DataType,
  Field,
  Float64,
  Int32,
  Int64,
  List,
  makeBuilder,
  makeData,
  makeVector,
  RecordBatch,
  Schema,
  Struct,
  Table,
  Utf8,
  type Vector
} from "apache-arrow"
import { Effect } from "effect"
import { int32ListVector } from "../arrow.ts"
import { formatError, type FormatError } from "./error.ts"

export type Scalar = "int32" | "int64" | "float64" | "bool" | "utf8"
type ListKind = `list<${Scalar}>`

/** A column's type as far as the rows read so far tell. */
export type Kind =
  | Scalar
  | ListKind
  /** Only empty arrays so far. */
  | "list<>"
  /** Utf8 holding JSON text. */
  | "json"

export interface Column {
  readonly name: string
  /** The declared type (a parquet schema's); values may widen it. Unknown: undefined. */
  readonly kind: Kind | undefined
}

export interface InferOptions {
  /** Columns known before any row (a CSV header, a parquet schema), kept even when no row has them. */
  readonly columns?: ReadonlyArray<Column>
  /** The 1-based source line of each row, for errors. */
  readonly lines?: ReadonlyArray<number>
}

export const isPlainObject = (value: unknown): value is Record<string, unknown> => {
  if (typeof value !== "object" || value === null) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/**
 * Deeper values than this are refused: their JSON text is written by recursive code
 * (JSON.stringify), which would overflow the call stack a few thousand levels down.
 * Real data (chat messages, metadata) nests a handful of levels.
 */
export const MAX_NESTING = 1000

/**
 * A column name that plain JavaScript objects cannot hold: `row["__proto__"] = v` sets
 * the row's prototype, so the rows that stages build would lose the column silently.
 */
export const RESERVED_COLUMN = "__proto__"

export const reservedColumnReason = `column name "${RESERVED_COLUMN}" is reserved in JavaScript (its values would be lost): rename the column`

/** Builds one table from `rows`, inferring the schema from all of them. */
export const rowsToTable = (
  rows: ReadonlyArray<Record<string, unknown>>,
  path: string,
  options: InferOptions = {}
): Effect.Effect<Table, FormatError> =>
  Effect.gen(function* () {
    const kinds = new Map<string, Kind | undefined>(options.columns?.map((c) => [c.name, c.kind]))
    if (kinds.has(RESERVED_COLUMN)) return yield* formatError(path, reservedColumnReason)
    for (let r = 0; r < rows.length; r++) {
      const fail = (reason: string) => {
        const line = options.lines?.[r]
        return line === undefined ? formatError(path, `row ${r + 1}: ${reason}`) : formatError(path, reason, { line })
      }
      for (const [name, value] of Object.entries(rows[r]!)) {
        if (name === RESERVED_COLUMN) return yield* fail(reservedColumnReason)
        const seen = kinds.get(name)
        // A null tells no type, but still places its column in first-seen order.
        if (value === null || value === undefined) {
          kinds.set(name, seen)
          continue
        }
        const kind = valueKind(value)
        const joined = kind === undefined || seen === undefined ? kind : join(seen, kind)
        if (joined === undefined) {
          return yield* fail(kind === undefined
            ? `column "${name}" holds a value of an unsupported type (${typeName(value)})`
            : `column "${name}" mixes types: ${describe(seen!)} in earlier rows, ${describe(kind)} here`)
        }
        if (kind === "json" && nestingDepth(value, MAX_NESTING) > MAX_NESTING) {
          return yield* fail(`column "${name}" is nested more than ${MAX_NESTING} levels deep (arrays or objects inside each other); this reader supports up to ${MAX_NESTING}`)
        }
        kinds.set(name, joined)
      }
    }
    return buildTable(rows, kinds)
  })

/** How many arrays and objects deep `value` goes (1 for a flat one), counted without recursion; stops once past `limit`. */
const nestingDepth = (value: unknown, limit: number): number => {
  let deepest = 0
  const pending: Array<readonly [unknown, number]> = [[value, 1]]
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [node, depth] = next
    deepest = Math.max(deepest, depth)
    if (deepest > limit) break
    for (const child of Array.isArray(node) ? node : Object.values(node as object)) {
      if (typeof child === "object" && child !== null) pending.push([child, depth + 1])
    }
  }
  return deepest
}

const typeName = (value: unknown): string =>
  typeof value === "object" ? Object.prototype.toString.call(value).slice("[object ".length, -1) : typeof value

const INT32_MIN = -(2 ** 31)
const INT32_MAX = 2 ** 31 - 1
const INT32_MIN_BIG = BigInt(INT32_MIN)
const INT32_MAX_BIG = BigInt(INT32_MAX)

const scalarKind = (value: unknown): Scalar | undefined => {
  switch (typeof value) {
    case "number":
      return Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX ? "int32" : "float64"
    case "bigint":
      return value >= INT32_MIN_BIG && value <= INT32_MAX_BIG ? "int32" : "int64"
    case "boolean":
      return "bool"
    case "string":
      return "utf8"
    default:
      return undefined
  }
}

/** The kind of one non-null value; undefined when no column type can hold it. */
const valueKind = (value: unknown): Kind | undefined => {
  const scalar = scalarKind(value)
  if (scalar !== undefined) return scalar
  if (Array.isArray(value)) return value.length === 0 ? "list<>" : arrayKind(value)
  return isPlainObject(value) ? "json" : undefined
}

const arrayKind = (items: ReadonlyArray<unknown>): Kind => {
  let element = scalarKind(items[0])
  for (let i = 1; i < items.length && element !== undefined; i++) {
    const kind = scalarKind(items[i])
    element = kind === undefined ? undefined : joinScalar(element, kind)
  }
  return element === undefined ? "json" : `list<${element}>`
}

const isNumeric = (kind: Scalar): boolean => kind === "int32" || kind === "int64" || kind === "float64"

const joinScalar = (a: Scalar, b: Scalar): Scalar | undefined => {
  if (a === b) return a
  if (!isNumeric(a) || !isNumeric(b)) return undefined
  return a === "float64" || b === "float64" ? "float64" : "int64"
}

const isList = (kind: Kind): kind is ListKind => kind.startsWith("list<") && kind !== "list<>"

const elementOf = (kind: ListKind): Scalar => kind.slice("list<".length, -1) as Scalar

/** The narrowest kind holding both, or undefined when they don't mix. */
const join = (a: Kind, b: Kind): Kind | undefined => {
  if (a === b) return a
  if (a === "list<>") return isList(b) || b === "json" ? b : undefined
  if (b === "list<>") return join(b, a)
  if (isList(a) && isList(b)) {
    const element = joinScalar(elementOf(a), elementOf(b))
    return element === undefined ? undefined : `list<${element}>`
  }
  if (isList(a) || isList(b) || a === "json" || b === "json") return undefined
  return joinScalar(a, b)
}

const NAMES: Record<Scalar, string> = {
  int32: "integer",
  int64: "64-bit integer",
  float64: "number",
  bool: "boolean",
  utf8: "string"
}

const describe = (kind: Kind): string => {
  if (kind === "json") return "object or nested array"
  if (kind === "list<>") return "empty list"
  return isList(kind) ? `list of ${NAMES[elementOf(kind)]}s` : NAMES[kind]
}

const buildTable = (rows: ReadonlyArray<Record<string, unknown>>, kinds: ReadonlyMap<string, Kind | undefined>): Table => {
  const fields: Array<Field> = []
  const columns: Array<Vector> = []
  for (const [name, kind] of kinds) {
    const values = rows.map((row) => (Object.hasOwn(row, name) ? row[name] : null))
    const column = buildColumn(values, kind === undefined ? "utf8" : kind === "list<>" ? "list<int32>" : kind)
    fields.push(new Field(name, column.type, true))
    columns.push(column)
  }
  const schema = new Schema(fields)
  const data = makeData({ type: new Struct(fields), length: rows.length, nullCount: 0, children: columns.map((c) => c.data[0]!) })
  return new Table(schema, [new RecordBatch(schema, data)])
}

const scalarType = (kind: Scalar): DataType => {
  switch (kind) {
    case "int32":
      return new Int32()
    case "int64":
      return new Int64()
    case "float64":
      return new Float64()
    case "bool":
      return new Bool()
    case "utf8":
      return new Utf8()
  }
}

// bigints only come from parquet, whose INT64 fields inside structs reach here as JSON.
const jsonText = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "bigint" ? (Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()) : v)

const converter = (kind: Exclude<Kind, "list<>">): ((value: unknown) => unknown) => {
  if (kind === "json") return jsonText
  if (isList(kind)) {
    const element = converter(elementOf(kind))
    return (value) => (value as ReadonlyArray<unknown>).map(element)
  }
  switch (kind) {
    case "int32":
    case "float64":
      return Number
    case "int64":
      return (value) => BigInt(value as number | bigint)
    case "bool":
    case "utf8":
      return (value) => value
  }
}

const buildColumn = (values: ReadonlyArray<unknown>, kind: Exclude<Kind, "list<>">): Vector => {
  if (kind === "list<int32>") return int32Lists(values)
  const type = isList(kind)
    ? new List(new Field("item", scalarType(elementOf(kind)), false))
    : scalarType(kind === "json" ? "utf8" : kind)
  const convert = converter(kind)
  const builder = makeBuilder({ type, nullValues: [null, undefined] })
  for (const value of values) builder.append(value === null || value === undefined ? null : convert(value))
  return builder.finish().toVector()
}

/** `int32ListVector` knows no nulls: a null row is built as an empty list, then masked as null. */
const int32Lists = (values: ReadonlyArray<unknown>): Vector => {
  const empty = new Int32Array(0)
  const vector = int32ListVector(values.map((v) => (v === null || v === undefined ? empty : asNumbers(v))))
  const validity = new Uint8Array(Math.ceil(values.length / 8))
  let nullCount = 0
  values.forEach((v, i) => {
    if (v === null || v === undefined) nullCount++
    else validity[i >> 3]! |= 1 << (i & 7)
  })
  if (nullCount === 0) return vector
  const data = vector.data[0]!
  return makeVector(makeData({
    type: data.type,
    length: data.length,
    nullCount,
    nullBitmap: validity,
    valueOffsets: data.valueOffsets,
    child: data.children[0] as Data<Int32>
  }))
}

// Number arrays go in as they are (copying them first costs more than the copy into the
// vector); bigints (parquet INT64) must become numbers.
const asNumbers = (value: unknown): ArrayLike<number> => {
  const items = value as ReadonlyArray<number | bigint>
  return items.some((item) => typeof item === "bigint") ? items.map(Number) : (items as ReadonlyArray<number>)
}
