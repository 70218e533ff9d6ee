/**
 * CSV and TSV. The first row names the columns. Types are inferred as pandas does: a
 * column is Int32 or Float64 when every non-empty cell is a number, Bool when every one
 * is `true` or `false` (any case), and Utf8 otherwise; an empty cell is a null. Numbers
 * are JSON's syntax, so `007` or `+1` keep a column as text, and so does an integer
 * beyond 2^53, which Float64 would round. A `cast` stage changes what this guessed.
 *
 * Quotes work as in CSV for both delimiters (pandas writes quoted TSV); a stray quote
 * inside a field is kept as text. Blank lines are skipped.
 *
 * Since a column's type depends on all its cells, the file is read twice, as a stream:
 * once to learn each column's type, once to convert the cells and build the batches.
 */
import { parse } from "csv-parse"
import { Effect, Stream } from "effect"
import { pipeline, Readable } from "node:stream"
import { batchBuilder, type FinalColumn } from "./batch.ts"
import { formatError, FormatError } from "./error.ts"
import { RESERVED_COLUMN, reservedColumnReason } from "./infer.ts"
import { type FinalKind, scalarKind } from "./kinds.ts"
import { type OpenedFile, type OpenOptions, progressFrom, rowBatches } from "./opened.ts"
import { contentChunks, pass, readError, type Reader, type Source, textChunks } from "./source.ts"

export const openCsv = (source: Source, options: OpenOptions, delimiter: "," | "\t"): Effect.Effect<OpenedFile, FormatError> =>
  Effect.gen(function* () {
    const { path } = source
    const { size, version } = yield* Effect.scoped(source.open)
    const records = (before: number) =>
      pass(source, (reader) => recordChunks(reader, path, delimiter, progressFrom(options, before, size, 2 * size)), version)
    let header: ReadonlyArray<string> | undefined
    const cells: Array<CellTypes> = []
    let rows = 0
    yield* Stream.runForEach(records(0), (chunk) =>
      Effect.suspend(() => {
        for (const record of chunk) {
          if (header === undefined) {
            header = record
            const duplicate = header.find((name, i) => header!.indexOf(name) !== i)
            if (duplicate !== undefined) return formatError(path, `duplicate column name "${duplicate}" in the header`)
            if (header.includes(RESERVED_COLUMN)) return formatError(path, reservedColumnReason, { line: 1 })
            cells.push(...header.map(() => new CellTypes()))
            continue
          }
          rows++
          for (let c = 0; c < cells.length; c++) cells[c]!.add(record[c]!)
        }
        return Effect.void
      }))
    const columns: Array<FinalColumn> = (header ?? []).map((name, c) => ({ name, kind: cells[c]!.kind() }))
    const converters = columns.map(({ kind }) => converter(kind))
    const builder = batchBuilder(columns)
    const objects = records(size).pipe(
      Stream.flattenIterables,
      Stream.drop(1),
      Stream.map((record) => Object.fromEntries(columns.map(({ name }, c) => [name, converters[c]!(record[c]!)])))
    )
    return { schema: builder.schema, rows, batches: rowBatches(objects, builder, options.batchRows) }
  })

const RECORDS_PER_CHUNK = 1024

/** The file's records (arrays of cells), a run of them at a time. */
async function* recordChunks(
  reader: Reader,
  path: string,
  delimiter: "," | "\t",
  onRead: (bytes: number) => void
): AsyncGenerator<Array<Array<string>>> {
  const text = Readable.from(textChunks(contentChunks(reader, onRead), path), { highWaterMark: 1 })
  const parser = pipeline(text, parse({ delimiter, relax_quotes: true, skip_empty_lines: true }), () => {})
  let chunk: Array<Array<string>> = []
  try {
    for await (const record of parser) {
      chunk.push(record as Array<string>)
      if (chunk.length === RECORDS_PER_CHUNK) {
        yield chunk
        chunk = []
      }
    }
  } catch (error) {
    throw csvError(error, path)
  }
  if (chunk.length > 0) yield chunk
}

/** csv-parse's messages already say "on line N"; its `lines` carries N for us. */
const csvError = (error: unknown, path: string): FormatError => {
  const lines = (error as { readonly lines?: unknown } | undefined)?.lines
  if (error instanceof FormatError || typeof lines !== "number") return readError(path)(error)
  return formatError(path, error instanceof Error ? error.message : String(error), { line: lines })
}

const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/
const INTEGER = /^-?\d+$/
const BOOLEAN = /^(?:true|false)$/i

const isNumber = (cell: string): boolean =>
  NUMBER.test(cell) && (!INTEGER.test(cell) || Number.isSafeInteger(Number(cell)))

/** What one column's non-empty cells have been so far: all numbers (and which kind), all booleans. */
class CellTypes {
  private present = false
  private numbers = true
  private booleans = true
  private integers = true

  add(cell: string): void {
    if (cell === "") return
    this.present = true
    if (this.numbers && isNumber(cell)) {
      if (this.integers && scalarKind(Number(cell)) !== "int32") this.integers = false
    } else {
      this.numbers = false
    }
    if (this.booleans && !BOOLEAN.test(cell)) this.booleans = false
  }

  kind(): FinalKind {
    if (!this.present) return "utf8"
    if (this.numbers) return this.integers ? "int32" : "float64"
    return this.booleans ? "bool" : "utf8"
  }
}

const converter = (kind: FinalKind): ((cell: string) => unknown) => {
  const convert = kind === "int32" || kind === "float64"
    ? Number
    : kind === "bool"
    ? (cell: string) => cell.toLowerCase() === "true"
    : (cell: string) => cell
  return (cell) => (cell === "" ? null : convert(cell))
}
