/**
 * Apache Arrow conventions for the artifact store.
 *
 * Datasets are stored as Arrow IPC *file* format (readable by pyarrow, polars and
 * duckdb). Token ids are `List<Int32>` built from typed arrays: never
 * `vectorFromArray(number[][])`, which infers `List<Float64>`.
 */
import { concatData, plainSchema } from "./arrow-concat.ts"
import {
  Field,
  Int32,
  List,
  makeData,
  makeVector,
  RecordBatch,
  Struct,
  Table,
  tableFromIPC,
  type Vector
} from "apache-arrow"

/** Decodes an Arrow IPC file (or stream). The vectors are views into `bytes`. */
export const decodeIpc = (bytes: Uint8Array): Table => tableFromIPC(bytes)

/** A `List<Int32>` vector from per-row id sequences, sharing one flat Int32 buffer. */
export const int32ListVector = (rows: ReadonlyArray<ArrayLike<number>>): Vector<List<Int32>> => {
  const offsets = new Int32Array(rows.length + 1)
  let total = 0
  for (let i = 0; i < rows.length; i++) {
    total += rows[i]!.length
    offsets[i + 1] = total
  }
  const values = new Int32Array(total)
  for (let i = 0; i < rows.length; i++) values.set(rows[i]!, offsets[i]!)
  const child = makeData({ type: new Int32(), length: total, data: values })
  const type = new List(new Field("item", new Int32(), false))
  return makeVector(makeData({ type, length: rows.length, nullCount: 0, valueOffsets: offsets, child }))
}

/** Converts one Arrow cell to a plain JS value (lists become arrays, structs objects). */
export const toPlain = (value: unknown): unknown => {
  if (value === null || value === undefined) return null
  if (typeof value === "bigint") {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)
      ? Number(value)
      : value.toString()
  }
  if (ArrayBuffer.isView(value)) return Array.from(value as unknown as ArrayLike<number>)
  if (typeof value === "object") {
    const v = value as { toArray?: () => unknown; toJSON?: () => unknown }
    if (typeof (v as { [Symbol.iterator]?: unknown })[Symbol.iterator] === "function" && typeof v.toArray === "function") {
      return Array.from(v as unknown as Iterable<unknown>, toPlain)
    }
    if (typeof v.toJSON === "function") {
      const json = v.toJSON() as Record<string, unknown>
      return Object.fromEntries(Object.entries(json).map(([k, x]) => [k, toPlain(x)]))
    }
  }
  return value
}

/** Row `index` of `table` as a plain object (a copy: safe to keep after the file buffer goes). */
export const rowAt = (table: Table, index: number): Record<string, unknown> => {
  // Null prototype: a column named like an Object.prototype key is data, never a setter.
  const row: Record<string, unknown> = Object.create(null) as Record<string, unknown>
  for (const field of table.schema.fields) {
    row[field.name] = toPlain(table.getChild(field.name)!.get(index))
  }
  return row
}

/** Takes the rows at `indices`, in that order, into a new table with the same schema. */
export const takeRows = (table: Table, indices: ArrayLike<number>): Table => {
  if (indices.length === 0) return table.slice(0, 0)
  const runs = countRuns(indices)
  // Few runs (select, most filters): slices share buffers and cost nothing.
  if (runs * 64 <= indices.length) return sliceRuns(table, indices)
  // Many runs (a shuffle): gather each column into fresh, contiguous batches.
  const batch = gatherBatch(table, indices)
  return new Table(batch.schema, [batch])
}

/**
 * The rows at `indices` of `table`, in that order, as one record batch in the canonical
 * layout (`concatData`): consecutive rows are taken as one slice, and every type keeps
 * its values, nulls included.
 */
export const gatherBatch = (table: Table, indices: ArrayLike<number>): RecordBatch => {
  const starts: Array<number> = []
  let rows = 0
  for (const batch of table.batches) {
    starts.push(rows)
    rows += batch.numRows
  }
  const runs: Array<{ readonly batch: number; readonly start: number; readonly length: number }> = []
  for (let i = 0; i < indices.length;) {
    const row = indices[i]!
    if (!(row >= 0 && row < rows)) throw new RangeError(`row ${row} is outside the table's ${rows} rows`)
    const batch = batchOf(starts, row)
    const start = row - starts[batch]!
    const room = table.batches[batch]!.numRows - start
    let length = 1
    while (length < room && i + length < indices.length && indices[i + length] === row + length) length++
    runs.push({ batch, start, length })
    i += length
  }
  const schema = plainSchema(table.schema)
  const children = schema.fields.map((field, k) =>
    concatData(field.type, runs.map((run) => table.batches[run.batch]!.data.children[k]!.slice(run.start, run.length))))
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: indices.length, nullCount: 0, children }))
}

/** The batch holding `row`, by each batch's first row (`starts` ascending, `starts[0]` ≤ `row`). */
export const batchOf = (starts: ArrayLike<number>, row: number): number => {
  let low = 0
  let high = starts.length - 1
  while (low < high) {
    const mid = (low + high + 1) >> 1
    if (starts[mid]! <= row) low = mid
    else high = mid - 1
  }
  return low
}

const countRuns = (indices: ArrayLike<number>): number => {
  let runs = 1
  for (let i = 1; i < indices.length; i++) if (indices[i] !== indices[i - 1]! + 1) runs++
  return runs
}

const sliceRuns = (table: Table, indices: ArrayLike<number>): Table => {
  const batches: Array<RecordBatch> = []
  let runStart = indices[0]!
  let prev = runStart
  for (let i = 1; i <= indices.length; i++) {
    const next = i < indices.length ? indices[i]! : -1
    if (next === prev + 1) {
      prev = next
      continue
    }
    batches.push(...table.slice(runStart, prev + 1).batches)
    runStart = next
    prev = next
  }
  return new Table(table.schema, batches)
}
