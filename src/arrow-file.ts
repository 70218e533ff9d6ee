/**
 * Arrow IPC files on disk, read and written a record batch at a time, so that a split
 * larger than memory passes through a stage with memory bounded by its batch size.
 *
 * The writer gives every file one layout whatever the batches it is handed: record
 * batches of exactly `batchRows` rows, the last one shorter. A stage's output is then a
 * function of its rows alone, not of how they were cut on the way (the same bytes from
 * a split read in one batch or in a thousand).
 *
 * The reader uses the file footer's index of record batches: a batch is read on its
 * own, and a cell of a `List<Int32>` column (token ids) can be read without the rest of
 * its batch, which is what lets training sample rows at random from a file on disk.
 *
 * Both use synchronous file descriptors: apache-arrow's writer and reader are
 * synchronous, and the stages around them are CPU-bound.
 */
import { DataType, Message, Type, type RecordBatch, RecordBatchFileWriter, RecordBatchStreamWriter, type Schema, Table, tableFromIPC } from "apache-arrow"
import { AsyncByteQueue } from "apache-arrow/io/stream"
import { Footer } from "apache-arrow/ipc/metadata/file"
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs"
import { concatBatches, plainSchema } from "./arrow-concat.ts"

/** Writes what apache-arrow's writer produces straight to a file descriptor. */
class FileSink extends AsyncByteQueue {
  constructor(private readonly fd: number) {
    super()
  }
  override write(value: Uint8Array): void {
    for (let at = 0; at < value.byteLength;) at += writeSync(this.fd, value, at)
  }
  override close(): void {}
}

/** Rows per record batch of the files stages write, unless a stage's `batch_size` says otherwise. */
export const DEFAULT_BATCH_ROWS = 16_384

/** An Arrow IPC file being written: hand it batches of any size; it writes `batchRows`-row batches. */
export class IpcFileWriter {
  private readonly writer = new RecordBatchFileWriter()
  private pending: Array<RecordBatch> = []
  private pendingRows = 0
  private written = 0
  private closed = false

  /** What is written: `schema` with dictionary-encoded columns as plain ones. */
  private readonly stored: Schema

  /** `fd` undefined: the file is built in memory (`toUint8Array`). */
  private constructor(private readonly fd: number | undefined, readonly schema: Schema, private readonly batchRows: number) {
    if (!Number.isSafeInteger(batchRows) || batchRows < 1) throw new Error(`batch rows must be a positive integer, got ${batchRows}`)
    this.stored = plainSchema(schema)
    this.writer.reset(fd === undefined ? undefined : new FileSink(fd), this.stored)
  }

  /** Creates (or truncates) `path`. The caller must `finish` or `abort` it. */
  static create(path: string, schema: Schema, batchRows: number = DEFAULT_BATCH_ROWS): IpcFileWriter {
    const fd = openSync(path, "w")
    try {
      return new IpcFileWriter(fd, schema, batchRows)
    } catch (error) {
      closeSync(fd)
      throw error
    }
  }

  /** A file built in memory, for small tables (a training run's metrics). */
  static inMemory(schema: Schema, batchRows: number = DEFAULT_BATCH_ROWS): IpcFileWriter {
    return new IpcFileWriter(undefined, schema, batchRows)
  }

  /** The bytes of a finished in-memory file. */
  toUint8Array(): Uint8Array {
    return this.writer.toUint8Array(true)
  }

  write(batch: RecordBatch | Table): void {
    if (batch instanceof Table) {
      for (const b of batch.batches) this.write(b)
      return
    }
    // apache-arrow's writer would end the file silently at a batch of another schema.
    // Nullability may differ (a batch without nulls says its columns have none).
    if (!sameColumns(this.stored, plainSchema(batch.schema))) {
      throw new Error(`a record batch with columns (${describe(batch.schema)}) was written to a file of (${describe(this.schema)})`)
    }
    if (batch.numRows === 0) return
    this.pending.push(batch)
    this.pendingRows += batch.numRows
    while (this.pendingRows >= this.batchRows) this.emit(this.batchRows)
  }

  /** Writes what is pending and the footer, and closes the file. Returns the rows written. */
  finish(): number {
    if (this.pendingRows > 0) this.emit(this.pendingRows)
    this.writer.finish()
    this.close()
    return this.written
  }

  /** Closes the file without finishing it (the staging folder it is in is thrown away). */
  abort(): void {
    this.close()
  }

  private close(): void {
    if (this.closed) return
    this.closed = true
    if (this.fd !== undefined) closeSync(this.fd)
  }

  /** Writes the first `rows` pending rows as one record batch. */
  private emit(rows: number): void {
    const pieces: Array<RecordBatch> = []
    let taken = 0
    while (taken < rows) {
      const head = this.pending[0]!
      const need = rows - taken
      if (head.numRows <= need) {
        pieces.push(head)
        this.pending.shift()
        taken += head.numRows
      } else {
        pieces.push(head.slice(0, need))
        this.pending[0] = head.slice(need)
        taken = rows
      }
    }
    this.pendingRows -= rows
    // Even one piece is laid out anew: a slice, a builder's output and a batch read from
    // a file would otherwise give different bytes for the same values.
    this.writer.write(concatBatches(this.stored, pieces))
    this.written += rows
  }
}

/** `table` as an Arrow IPC file in memory, in record batches of `batchRows` rows. */
export const encodeIpcFile = (table: Table, batchRows: number = DEFAULT_BATCH_ROWS): Uint8Array => {
  const writer = IpcFileWriter.inMemory(table.schema, batchRows)
  writer.write(table)
  writer.finish()
  return writer.toUint8Array()
}

const sameColumns = (a: Schema, b: Schema): boolean =>
  a.fields.length === b.fields.length && a.fields.every((f, i) => f.name === b.fields[i]!.name && String(f.type) === String(b.fields[i]!.type))

const describe = (schema: Schema): string => schema.fields.map((f) => `${f.name}: ${f.type}`).join(", ")

const readAt = (fd: number, position: number, length: number): Uint8Array => readInto(fd, new Uint8Array(length), position)

/** Fills `bytes` from `position` on. */
const readInto = (fd: number, bytes: Uint8Array, position: number): Uint8Array => {
  for (let at = 0; at < bytes.length;) {
    const n = readSync(fd, bytes, at, bytes.length - at, position + at)
    if (n === 0) throw new Error(`the file ends at byte ${position + at}, before the ${bytes.length} bytes at ${position} that its footer points to`)
    at += n
  }
  return bytes
}

/** A `List<Int32>` column read in place. */
export interface Int32ListColumn {
  /** Every row's list length in batch `batch`. */
  readonly lengths: (batch: number) => Int32Array
  /** Row `row` of batch `batch`. */
  readonly cell: (batch: number, row: number) => Int32Array
}

/** Where a record batch's buffers lie in the file, from its message header. */
interface BatchLayout {
  readonly rows: number
  readonly bodyStart: number
  readonly buffers: ReadonlyArray<{ readonly offset: number; readonly length: number }>
}

const MAGIC = "ARROW1"

/** An Arrow IPC file open for reading by record batch or, for token id columns, by cell. */
export class IpcFileReader {
  private readonly footer: Footer
  /** The schema as an IPC stream's first message: a batch's bytes after it decode on their own. */
  private readonly streamHead: Uint8Array
  private readonly layouts: Array<BatchLayout | undefined>
  private closed = false

  private constructor(private readonly fd: number, readonly path: string) {
    const size = fstatSync(fd).size
    const tail = size >= 2 * MAGIC.length + 4 ? readAt(fd, size - MAGIC.length - 4, MAGIC.length + 4) : new Uint8Array(0)
    if (new TextDecoder().decode(tail.subarray(4)) !== MAGIC) throw new Error("it does not end as an Arrow IPC file does")
    const footerLength = new DataView(tail.buffer).getInt32(0, true)
    if (footerLength <= 0 || footerLength > size - MAGIC.length - 4) throw new Error(`its footer length ${footerLength} does not fit the file`)
    this.footer = Footer.decode(readAt(fd, size - MAGIC.length - 4 - footerLength, footerLength))
    // Files this program writes store dictionary-encoded columns as plain ones (see IpcFileWriter).
    if (this.footer.numDictionaries > 0) throw new Error("it holds dictionary batches, which this program never writes")
    this.streamHead = schemaMessage(this.footer.schema)
    this.layouts = new Array(this.footer.numRecordBatches)
  }

  static open(path: string): IpcFileReader {
    const fd = openSync(path, "r")
    try {
      return new IpcFileReader(fd, path)
    } catch (error) {
      closeSync(fd)
      throw error
    }
  }

  get schema(): Schema {
    return this.footer.schema
  }

  get numBatches(): number {
    return this.layouts.length
  }

  /** Rows of batch `index`, from its header alone. */
  batchRows(index: number): number {
    return this.layout(index).rows
  }

  /** Batch `index`, its vectors views into a buffer of its own. */
  readBatch(index: number): RecordBatch {
    if (this.closed) throw new Error(`${this.path} was read after it was closed`)
    const block = this.block(index)
    const bytes = new Uint8Array(this.streamHead.length + block.metaDataLength + Number(block.bodyLength))
    bytes.set(this.streamHead)
    readInto(this.fd, bytes.subarray(this.streamHead.length), Number(block.offset))
    const batch = tableFromIPC(bytes).batches[0]
    if (batch === undefined) throw new Error(`record batch ${index} cannot be read`)
    return batch
  }

  private block(index: number) {
    const block = this.footer.getRecordBatch(index)
    if (block === null) throw new Error(`record batch ${index} is not in the footer`)
    return block
  }

  /**
   * Random access to one top-level `List<Int32>` column (token ids): `lengths` reads a
   * batch's offsets alone, `cell` one row's ids alone.
   */
  int32Lists(column: string): Int32ListColumn {
    const fieldIndex = this.schema.fields.findIndex((f) => f.name === column)
    const field = this.schema.fields[fieldIndex]
    if (field === undefined) throw new Error(`no column "${column}"`)
    const element = DataType.isList(field.type) ? field.type.children[0]!.type : undefined
    if (element === undefined || !DataType.isInt(element) || element.bitWidth !== 32) {
      throw new Error(`column "${column}" is ${field.type}, not a list of 32-bit integers`)
    }
    // A List's buffers are its validity and offsets; its Int32 child's, validity and values.
    const first = this.schema.fields.slice(0, fieldIndex).reduce((n, f) => n + bufferCount(f.type), 0)
    const offsetsAt = (batch: number, row: number, count: number) => {
      const layout = this.layout(batch)
      return new Int32Array(readAt(this.fd, layout.bodyStart + layout.buffers[first + 1]!.offset + 4 * row, 4 * count).buffer)
    }
    return {
      lengths: (batch) => {
        const offsets = offsetsAt(batch, 0, this.batchRows(batch) + 1)
        const lengths = new Int32Array(offsets.length - 1)
        for (let i = 0; i < lengths.length; i++) lengths[i] = offsets[i + 1]! - offsets[i]!
        return lengths
      },
      cell: (batch, row) => {
        const [start = 0, end = 0] = offsetsAt(batch, row, 2)
        const values = this.layout(batch).buffers[first + 3]!
        if (start < 0 || end < start || 4 * end > values.length) throw new Error(`column "${column}" row ${row} of batch ${batch} points outside its values`)
        return new Int32Array(readAt(this.fd, this.layout(batch).bodyStart + values.offset + 4 * start, 4 * (end - start)).buffer)
      }
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    closeSync(this.fd)
  }

  private layout(index: number): BatchLayout {
    if (this.closed) throw new Error(`${this.path} was read after it was closed`)
    const known = this.layouts[index]
    if (known !== undefined) return known
    const block = this.block(index)
    const offset = Number(block.offset)
    const meta = readAt(this.fd, offset, block.metaDataLength)
    const view = new DataView(meta.buffer)
    // A message is [0xFFFFFFFF] int32 length, then the flatbuffer (older files lack the marker).
    const start = view.getInt32(0, true) === -1 ? 8 : 4
    const length = view.getInt32(start - 4, true)
    const message = Message.decode(meta.subarray(start, start + length))
    if (!message.isRecordBatch()) throw new Error(`block ${index} is not a record batch`)
    const header = message.header()
    if (header.compression !== null) throw new Error(`record batch ${index} is compressed, which cell reads do not support`)
    const layout: BatchLayout = {
      rows: Number(header.length),
      bodyStart: offset + block.metaDataLength,
      buffers: header.buffers.map((b) => ({ offset: Number(b.offset), length: Number(b.length) }))
    }
    this.layouts[index] = layout
    return layout
  }
}

/** `schema` as the first message of an IPC stream (the stream's end-of-stream marker cut off). */
const schemaMessage = (schema: Schema): Uint8Array => {
  const writer = new RecordBatchStreamWriter()
  writer.reset(undefined, schema)
  writer.finish()
  const stream = writer.toUint8Array(true)
  return stream.subarray(0, stream.length - 8)
}

/** How many buffers a field of `type` has in a record batch's body, children included. */
const bufferCount = (type: DataType): number => {
  if (DataType.isNull(type)) return 0
  if (DataType.isUtf8(type) || DataType.isLargeUtf8(type) || DataType.isBinary(type) || DataType.isLargeBinary(type)) return 3
  if (DataType.isList(type) || DataType.isMap(type) || type.typeId === Type.LargeList) return 2 + bufferCount(type.children[0]!.type)
  if (DataType.isFixedSizeList(type)) return 1 + bufferCount(type.children[0]!.type)
  if (DataType.isStruct(type)) return 1 + type.children.reduce((n, c) => n + bufferCount(c.type), 0)
  if (DataType.isUnion(type) || DataType.isBinaryView(type) || DataType.isUtf8View(type)) {
    // Their buffer counts vary (type ids, variadic buffers): not worth reading cells past them.
    throw new Error(`a ${type} column stands before the column read, which cell reads do not support`)
  }
  return 2
}
