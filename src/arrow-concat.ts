/**
 * Columns concatenated into one canonical layout: exact-size buffers from offset 0, a
 * validity bitmap only where there are nulls, and nothing under a null (zeros in a
 * fixed-width column, no bytes or items in a variable-width one). The bytes an Arrow
 * writer produces from such data depend on the values alone, not on whether they came
 * from a slice, a builder or a file, which is what makes a stage's output the same
 * whether it streamed its split in a thousand batches or read it whole.
 *
 * apache-arrow's slices keep the parent's buffers: a validity bit and a boolean are at
 * `offset + i`; fixed-width values, value offsets and struct children are already
 * sliced; list children are not (the offsets index them).
 */
import {
  type Data,
  DataType,
  Field,
  FixedSizeList,
  LargeList,
  List,
  makeBuilder,
  makeData,
  Map_,
  RecordBatch,
  Schema,
  Struct,
  Type,
  Vector
} from "apache-arrow"

const bitAt = (bits: Uint8Array, index: number): boolean => (bits[index >> 3]! & (1 << (index & 7))) !== 0

const isValidAt = (data: Data, i: number): boolean =>
  data.nullCount === 0 || data.nullBitmap === undefined || data.nullBitmap.length === 0 || bitAt(data.nullBitmap, data.offset + i)

/** Row → whether its parent (a struct's row, a fixed-size list's) is valid: a child is null under a null parent. */
type Mask = (row: number) => boolean

/** The validity of every row of `pieces` in order (under `mask`), and how many are null. */
const validity = (pieces: ReadonlyArray<Data>, length: number, mask: Mask | undefined) => {
  if (mask === undefined && pieces.every((piece) => piece.nullCount === 0)) return { valid: () => true, nullCount: 0, nullBitmap: undefined }
  const bitmap = new Uint8Array((length + 7) >> 3)
  let nulls = 0
  let row = 0
  for (const piece of pieces) {
    for (let i = 0; i < piece.length; i++, row++) {
      if (isValidAt(piece, i) && (mask === undefined || mask(row))) bitmap[row >> 3]! |= 1 << (row & 7)
      else nulls++
    }
  }
  return { valid: (row: number) => nulls === 0 || bitAt(bitmap, row), nullCount: nulls, nullBitmap: nulls === 0 ? undefined : bitmap }
}

type TypedArray = Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array | Float32Array | Float64Array | BigInt64Array | BigUint64Array

/**
 * The rows of `pieces`, in order, as one column of type `type` in the canonical layout.
 * Dictionary-encoded pieces are decoded: `type` is then the dictionary's value type
 * (see `plainSchema`).
 */
export const concatData = (type: DataType, pieces: ReadonlyArray<Data>, mask?: Mask): Data => {
  if (DataType.isDictionary(type)) return concatData(plainType(type), pieces, mask)
  if (pieces.some((piece) => DataType.isDictionary(piece.type))) return concatData(type, pieces.map((piece) => decoded(type, piece)), mask)
  const length = pieces.reduce((n, p) => n + p.length, 0)
  const { valid, nullCount, nullBitmap } = validity(pieces, length, mask)
  // A piece copied whole: no nulls in it and none imposed from above.
  const whole = (piece: Data) => mask === undefined && piece.nullCount === 0
  const base = { type, length, nullCount, ...(nullBitmap !== undefined && { nullBitmap }) }
  if (DataType.isNull(type)) return makeData({ type, length, nullCount: length })
  if (DataType.isBool(type)) {
    const bits = new Uint8Array((length + 7) >> 3)
    let row = 0
    for (const piece of pieces) {
      for (let i = 0; i < piece.length; i++, row++) if (valid(row) && bitAt(piece.values as Uint8Array, piece.offset + i)) bits[row >> 3]! |= 1 << (row & 7)
    }
    return makeData({ ...base, data: bits } as Parameters<typeof makeData>[0])
  }
  if (DataType.isUtf8(type) || DataType.isBinary(type) || DataType.isLargeUtf8(type) || DataType.isLargeBinary(type)) {
    return variableWidth(type, pieces, length, valid, base, whole)
  }
  if (DataType.isList(type) || DataType.isMap(type) || type.typeId === 21 /* LargeList */) return listOf(type, pieces, length, valid, base)
  if (DataType.isStruct(type)) {
    const children = type.children.map((field, k) => concatData(field.type, pieces.map((p) => p.children[k]!), nullCount > 0 ? valid : undefined))
    return makeData({ ...base, children } as Parameters<typeof makeData>[0])
  }
  if (DataType.isFixedSizeList(type)) {
    const size = type.listSize
    const child = concatData(type.children[0]!.type, pieces.map((p) => p.children[0]!.slice(0, p.length * size)), nullCount > 0 ? (row) => valid(Math.floor(row / size)) : undefined)
    return makeData({ ...base, child } as Parameters<typeof makeData>[0])
  }
  if (isFixedWidth(type)) {
    const first = pieces[0]
    const stride = first?.stride ?? 1
    const Values = (first?.values.constructor ?? Uint8Array) as new (n: number) => TypedArray
    const values = new Values(length * stride)
    let row = 0
    for (const piece of pieces) {
      const from = piece.values as TypedArray
      if (whole(piece)) {
        values.set(from.subarray(0, piece.length * stride) as never, row * stride)
        row += piece.length
        continue
      }
      for (let i = 0; i < piece.length; i++, row++) {
        if (valid(row)) values.set(from.subarray(i * stride, (i + 1) * stride) as never, row * stride)
      }
    }
    return makeData({ ...base, data: values } as Parameters<typeof makeData>[0])
  }
  // Unions, views: rebuilt value by value, canonical as far as apache-arrow's builder is.
  const builder = makeBuilder({ type, nullValues: [null, undefined] })
  for (const piece of pieces) for (const value of new Vector([piece])) builder.append(value)
  return builder.finish().flush()
}

/** A dictionary-encoded piece as plain values of `type`, built value by value. */
const decoded = (type: DataType, piece: Data): Data => {
  if (!DataType.isDictionary(piece.type)) return piece
  const builder = makeBuilder({ type: plainType(type), nullValues: [null, undefined] })
  for (const value of new Vector([piece])) builder.append(value)
  return builder.finish().flush()
}

/** A dictionary-encoded type as its values' type (within nested types too); others as they are. */
export const plainType = (type: DataType): DataType => {
  if (DataType.isDictionary(type)) return plainType(type.dictionary)
  const children = type.children ?? []
  const plain = children.map(plainField)
  if (plain.every((field, i) => field === children[i])) return type
  if (DataType.isList(type)) return new List(plain[0]!)
  if (type.typeId === Type.LargeList) return new LargeList(plain[0]!)
  if (DataType.isFixedSizeList(type)) return new FixedSizeList(type.listSize, plain[0]!)
  if (DataType.isMap(type)) return new Map_(plain[0]! as Field<Struct>, type.keysSorted)
  if (DataType.isStruct(type)) return new Struct(plain)
  throw new Error(`dictionary-encoded values inside a ${type} column are not supported`)
}

const plainField = (field: Field): Field => {
  const type = plainType(field.type)
  return type === field.type ? field : new Field(field.name, type, field.nullable, field.metadata)
}

/**
 * The schema files are written with: dictionary-encoded columns (apache-arrow's
 * `tableFromArrays` makes strings so) stored as their plain values, since a file's
 * batches cannot each bring a dictionary of their own.
 */
export const plainSchema = (schema: Schema): Schema =>
  schema.fields.some((f) => plainField(f) !== f) ? new Schema(schema.fields.map(plainField), schema.metadata) : schema

const isFixedWidth = (type: DataType): boolean =>
  DataType.isInt(type) || DataType.isFloat(type) || DataType.isDate(type) || DataType.isTime(type) || DataType.isTimestamp(type) ||
  DataType.isDecimal(type) || DataType.isInterval(type) || DataType.isDuration(type) || DataType.isFixedSizeBinary(type)

type Base = { readonly type: DataType; readonly length: number; readonly nullCount: number; readonly nullBitmap?: Uint8Array }

/** Offsets of `length` rows (64-bit for the Large types), with a null row empty. */
const offsetsFor = (large: boolean, length: number) => {
  const offsets = large ? new BigInt64Array(length + 1) : new Int32Array(length + 1)
  const at = (pieceOffsets: Int32Array | BigInt64Array, i: number): number => Number(pieceOffsets[i]!)
  const set = (row: number, value: number) => {
    if (offsets instanceof BigInt64Array) offsets[row] = BigInt(value)
    else offsets[row] = value
  }
  return { offsets, at, set }
}

const variableWidth = (
  type: DataType,
  pieces: ReadonlyArray<Data>,
  length: number,
  valid: (row: number) => boolean,
  base: Base,
  whole: (piece: Data) => boolean
): Data => {
  const { offsets, at, set } = offsetsFor(DataType.isLargeUtf8(type) || DataType.isLargeBinary(type), length)
  let bytes = 0
  let row = 0
  for (const piece of pieces) {
    for (let i = 0; i < piece.length; i++, row++) {
      if (valid(row)) bytes += at(piece.valueOffsets, i + 1) - at(piece.valueOffsets, i)
    }
  }
  const data = new Uint8Array(bytes)
  let end = 0
  row = 0
  for (const piece of pieces) {
    if (whole(piece)) {
      // One copy of the piece's bytes; its offsets shifted to where they land.
      const first = at(piece.valueOffsets, 0)
      data.set((piece.values as Uint8Array).subarray(first, at(piece.valueOffsets, piece.length)), end)
      for (let i = 0; i < piece.length; i++, row++) set(row + 1, end + at(piece.valueOffsets, i + 1) - first)
      end += at(piece.valueOffsets, piece.length) - first
      continue
    }
    for (let i = 0; i < piece.length; i++, row++) {
      if (valid(row)) {
        const start = at(piece.valueOffsets, i)
        const stop = at(piece.valueOffsets, i + 1)
        data.set((piece.values as Uint8Array).subarray(start, stop), end)
        end += stop - start
      }
      set(row + 1, end)
    }
  }
  return makeData({ ...base, valueOffsets: offsets, data } as Parameters<typeof makeData>[0])
}

const listOf = (type: DataType, pieces: ReadonlyArray<Data>, length: number, valid: (row: number) => boolean, base: Base): Data => {
  const { offsets, at, set } = offsetsFor(type.typeId === 21, length)
  const childPieces: Array<Data> = []
  let end = 0
  let row = 0
  for (const piece of pieces) {
    const child = piece.children[0]!
    // Runs of valid rows are contiguous in the child: one slice each.
    let runStart = -1
    let runEnd = -1
    const flush = () => {
      if (runEnd > runStart) childPieces.push(child.slice(runStart, runEnd - runStart))
      runStart = runEnd = -1
    }
    for (let i = 0; i < piece.length; i++, row++) {
      if (valid(row)) {
        const start = at(piece.valueOffsets, i)
        const stop = at(piece.valueOffsets, i + 1)
        if (runStart === -1 || start !== runEnd) {
          flush()
          runStart = start
        }
        runEnd = stop
        end += stop - start
      }
      set(row + 1, end)
    }
    flush()
  }
  const child = concatData(type.children[0]!.type, childPieces)
  return makeData({ ...base, valueOffsets: offsets, child } as Parameters<typeof makeData>[0])
}

/** The rows of `batches`, in order, as one record batch in the canonical layout. */
export const concatBatches = (schema: Schema, batches: ReadonlyArray<RecordBatch>): RecordBatch => {
  const length = batches.reduce((n, b) => n + b.numRows, 0)
  const children = schema.fields.map((field, k) => concatData(field.type, batches.map((b) => b.data.children[k]!)))
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }))
}
