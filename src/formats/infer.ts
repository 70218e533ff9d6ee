/**
 * Schema inference: plain rows (from JSON lines, JSON, CSV, parquet, the hub or a
 * scraper) become Arrow record batches of one schema. `KindInference` takes the rows one
 * at a time, so that a file too large to hold can be read twice: once to infer, once to
 * build its batches (`batch.ts`) with the final kinds.
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
import { Table } from "apache-arrow"
import { Effect, Either } from "effect"
import { batchBuilder } from "./batch.ts"
import { formatError, type FormatError } from "./error.ts"
import { describeKind, finalKind, join, type Kind, valueKind } from "./kinds.ts"

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

/**
 * The kinds of a file's columns, joined over its rows in order. A row is placed in
 * errors by its source line when it has one, else by its number (rows are counted here).
 */
export interface KindInference {
  /** Joins one row in; the error of a value that does not fit. */
  readonly add: (row: Record<string, unknown>, line?: number) => FormatError | undefined
  /** The columns so far, in first-seen order (declared ones first). */
  readonly columns: () => ReadonlyArray<Column>
}

export const kindInference = (path: string, declared: ReadonlyArray<Column> = []): Either.Either<KindInference, FormatError> => {
  const kinds = new Map<string, Kind | undefined>(declared.map((c) => [c.name, c.kind]))
  if (kinds.has(RESERVED_COLUMN)) return Either.left(formatError(path, reservedColumnReason))
  let rows = 0
  const add = (row: Record<string, unknown>, line?: number): FormatError | undefined => {
    rows++
    const fail = (reason: string) =>
      line === undefined ? formatError(path, `row ${rows}: ${reason}`) : formatError(path, reason, { line })
    for (const [name, value] of Object.entries(row)) {
      if (name === RESERVED_COLUMN) return fail(reservedColumnReason)
      const seen = kinds.get(name)
      // A null tells no type, but still places its column in first-seen order.
      if (value === null || value === undefined) {
        kinds.set(name, seen)
        continue
      }
      const kind = valueKind(value)
      const joined = kind === undefined || seen === undefined ? kind : join(seen, kind)
      if (joined === undefined) {
        return fail(kind === undefined
          ? `column "${name}" holds a value of an unsupported type (${typeName(value)})`
          : `column "${name}" mixes types: ${describeKind(seen!)} in earlier rows, ${describeKind(kind)} here`)
      }
      if (kind === "json" && nestingDepth(value, MAX_NESTING) > MAX_NESTING) {
        return fail(`column "${name}" is nested more than ${MAX_NESTING} levels deep (arrays or objects inside each other); this reader supports up to ${MAX_NESTING}`)
      }
      kinds.set(name, joined)
    }
    return undefined
  }
  return Either.right({ add, columns: () => Array.from(kinds, ([name, kind]) => ({ name, kind })) })
}

/** The columns with their final kinds, ready for `batchBuilder`. */
export const finalColumns = (columns: ReadonlyArray<Column>) =>
  columns.map(({ name, kind }) => ({ name, kind: finalKind(kind) }))

/** Builds one table from `rows`, inferring the schema from all of them. */
export const rowsToTable = (
  rows: ReadonlyArray<Record<string, unknown>>,
  path: string,
  options: InferOptions = {}
): Effect.Effect<Table, FormatError> =>
  Effect.gen(function* () {
    const inference = yield* kindInference(path, options.columns)
    for (let r = 0; r < rows.length; r++) {
      const error = inference.add(rows[r]!, options.lines?.[r])
      if (error !== undefined) return yield* error
    }
    const builder = batchBuilder(finalColumns(inference.columns()))
    return new Table(builder.schema, [builder.build(rows)])
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
