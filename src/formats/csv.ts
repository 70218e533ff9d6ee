/**
 * CSV and TSV. The first row names the columns. Types are inferred as pandas does: a
 * column is Int32 or Float64 when every non-empty cell is a number, Bool when every one
 * is `true` or `false` (any case), and Utf8 otherwise; an empty cell is a null. Numbers
 * are JSON's syntax, so `007` or `+1` keep a column as text, and so does an integer
 * beyond 2^53, which Float64 would round. A `cast` stage changes what this guessed.
 *
 * Quotes work as in CSV for both delimiters (pandas writes quoted TSV); a stray quote
 * inside a field is kept as text. Blank lines are skipped.
 */
import type { Table } from "apache-arrow"
import { parse } from "csv-parse/sync"
import { Effect } from "effect"
import { formatError, type FormatError } from "./error.ts"
import { RESERVED_COLUMN, reservedColumnReason, rowsToTable } from "./infer.ts"
import { decodeUtf8 } from "./text.ts"

export const readCsv = (bytes: Uint8Array, path: string, delimiter: "," | "\t"): Effect.Effect<Table, FormatError> =>
  Effect.gen(function* () {
    const text = yield* decodeUtf8(bytes, path)
    const records = yield* Effect.try({
      try: (): Array<Array<string>> => parse(text, { delimiter, relax_quotes: true, skip_empty_lines: true }),
      catch: (error) => csvError(error, path)
    })
    const [header = [], ...body] = records
    const duplicate = header.find((name, i) => header.indexOf(name) !== i)
    if (duplicate !== undefined) return yield* formatError(path, `duplicate column name "${duplicate}" in the header`)
    if (header.includes(RESERVED_COLUMN)) return yield* formatError(path, reservedColumnReason, { line: 1 })
    const columns = header.map((_, c) => typedCells(body.map((record) => record[c]!)))
    const rows = body.map((_, r) => Object.fromEntries(header.map((name, c) => [name, columns[c]![r]])))
    return yield* rowsToTable(rows, path, { columns: header.map((name) => ({ name, kind: undefined })) })
  })

/** csv-parse's messages already say "on line N"; its `lines` carries N for us. */
const csvError = (error: unknown, path: string): FormatError => {
  const message = error instanceof Error ? error.message : String(error)
  const lines = (error as { readonly lines?: unknown }).lines
  return typeof lines === "number" ? formatError(path, message, { line: lines }) : formatError(path, message)
}

const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/
const INTEGER = /^-?\d+$/
const BOOLEAN = /^(?:true|false)$/i

const isNumber = (cell: string): boolean =>
  NUMBER.test(cell) && (!INTEGER.test(cell) || Number.isSafeInteger(Number(cell)))

const typedCells = (cells: ReadonlyArray<string>): Array<unknown> => {
  const present = cells.filter((cell) => cell !== "")
  const convert = present.length > 0 && present.every(isNumber)
    ? Number
    : present.length > 0 && present.every((cell) => BOOLEAN.test(cell))
    ? (cell: string) => cell.toLowerCase() === "true"
    : (cell: string) => cell
  return cells.map((cell) => (cell === "" ? null : convert(cell)))
}
