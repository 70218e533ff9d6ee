/**
 * Apache Arrow conventions for the artifact store.
 *
 * Datasets are stored as Arrow IPC *file* format (readable by pyarrow, polars and
 * duckdb). Token ids are `List<Int32>` built from typed arrays: never
 * `vectorFromArray(number[][])`, which infers `List<Float64>`.
 */
import {
  DataType,
  Field,
  Int32,
  List,
  makeBuilder,
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
  return new Table(table.schema, [gatherBatch(table, indices)])
}

/** The rows at `indices` of `table`, in that order, as one record batch with fresh, contiguous buffers. */
export const gatherBatch = (table: Table, indices: ArrayLike<number>): RecordBatch => {
  const children = table.schema.fields.map((field) => gather(table.getChild(field.name)!, field, indices).data[0]!)
  return new RecordBatch(table.schema, makeData({ type: new Struct(table.schema.fields), length: indices.length, nullCount: 0, children }))
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

const gather = (vector: Vector, field: Field, indices: ArrayLike<number>): Vector => {
  // Token ids: one flat copy. A null list would become an empty one there, so lists with nulls take the builder.
  if (vector.nullCount === 0 && DataType.isList(field.type) && DataType.isInt(field.type.children[0]!.type) && field.type.children[0]!.type.bitWidth === 32) {
    const rows: Array<Int32Array> = new Array(indices.length)
    for (let i = 0; i < indices.length; i++) {
      const cell = vector.get(indices[i]!) as Vector | null
      rows[i] = cell === null ? new Int32Array(0) : (cell.toArray() as Int32Array)
    }
    return int32ListVector(rows)
  }
  const builder = makeBuilder({ type: field.type, nullValues: [null, undefined] })
  for (let i = 0; i < indices.length; i++) builder.append(vector.get(indices[i]!))
  return builder.finish().toVector()
}
