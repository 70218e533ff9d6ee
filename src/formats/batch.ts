/**
 * Record batches from plain rows, once every column's kind is final: the schema is made
 * once, and every batch is built against it, so that the batches of a file read in
 * pieces concatenate into the table its whole rows would give.
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
  Utf8,
  type Vector
} from "apache-arrow"
import { int32ListVector } from "../arrow.ts"
import { elementOf, type FinalKind, isList, type Scalar } from "./kinds.ts"

export interface FinalColumn {
  readonly name: string
  readonly kind: FinalKind
}

export interface BatchBuilder {
  /** Every column nullable, in the order given. */
  readonly schema: Schema
  /** One batch of `rows`; a key a row lacks is a null. */
  readonly build: (rows: ReadonlyArray<Record<string, unknown>>) => RecordBatch
}

export const batchBuilder = (columns: ReadonlyArray<FinalColumn>): BatchBuilder => {
  const fields = columns.map(({ name, kind }) => new Field(name, columnType(kind), true))
  const schema = new Schema(fields)
  const type = new Struct(fields)
  return {
    schema,
    build: (rows) => {
      const children = columns.map(({ name, kind }) =>
        buildColumn(rows.map((row) => (Object.hasOwn(row, name) ? row[name] : null)), kind).data[0]!)
      return new RecordBatch(schema, makeData({ type, length: rows.length, nullCount: 0, children }))
    }
  }
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

/** The list child is "item", not nullable, as `int32ListVector` makes it. */
const columnType = (kind: FinalKind): DataType =>
  isList(kind)
    ? new List(new Field("item", scalarType(elementOf(kind)), false))
    : scalarType(kind === "json" ? "utf8" : kind)

// bigints only come from parquet, whose INT64 fields inside structs reach here as JSON.
const jsonText = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "bigint" ? (Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()) : v)

const converter = (kind: FinalKind): ((value: unknown) => unknown) => {
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

const buildColumn = (values: ReadonlyArray<unknown>, kind: FinalKind): Vector => {
  if (kind === "list<int32>") return int32Lists(values)
  const convert = converter(kind)
  const builder = makeBuilder({ type: columnType(kind), nullValues: [null, undefined] })
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
