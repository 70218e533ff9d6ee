/**
 * Parquet and Arrow IPC read batch by batch: the same table as the whole-file reader
 * across row groups and batches, parquet's codecs (Zstandard and LZ4 written here with
 * npm's compressors), a sharded split through the hub's layout.
 */
import { Dictionary, Int32, RecordBatch, Table, tableToIPC, Utf8, vectorFromArray } from "apache-arrow"
import { compress as zstdCompress, init as zstdInit } from "@bokuweb/zstd-wasm"
import { Effect, Stream } from "effect"
import { parquetWriteBuffer } from "hyparquet-writer"
import { compressBlock, compressBound } from "lz4js"
import fs from "node:fs"
import { brotliCompressSync, gzipSync } from "node:zlib"
import { beforeAll, describe, expect, it } from "vitest"
import { detectFormat, type Format, openFile, rowsToTable } from "../src/formats/index.ts"
import { inferSplits } from "../src/hub/layout.ts"
import { describeSchema, expectSameAsWhole, readStreamed, rowsOf, streamFailure, tempDir, writeIn } from "./support/formats-stream.ts"

// hyparquet-writer has a hyparquet of its own: its types, from its signature.
type WriteOptions = Parameters<typeof parquetWriteBuffer>[0]
type ColumnSource = WriteOptions["columnData"][number]
type CompressionCodec = NonNullable<WriteOptions["codec"]>

const dir = tempDir("formats-columnar-")
const write = writeIn(dir)

/** An LZ4 block; lz4js gives up (0) on input with no match, which is then all literals. */
const lz4Block = (input: Uint8Array): Uint8Array => {
  const out = new Uint8Array(compressBound(input.length) + 16)
  const written = compressBlock(input, out, 0, input.length, new Uint32Array(1 << 16))
  if (written > 0) return out.subarray(0, written)
  const length: Array<number> = []
  for (let n = input.length - 15; input.length >= 15 && n >= 0; n -= 255) length.push(Math.min(n, 255))
  if (input.length >= 15 && length.at(-1) === 255) length.push(0)
  return Uint8Array.from([Math.min(input.length, 15) << 4, ...length, ...input])
}

/** Hadoop's framing of LZ4, which parquet's deprecated LZ4 codec meant: big-endian sizes, then the block. */
const hadoopLz4 = (input: Uint8Array): Uint8Array => {
  const block = lz4Block(input)
  const out = new Uint8Array(8 + block.length)
  const view = new DataView(out.buffer)
  view.setUint32(0, input.length)
  view.setUint32(4, block.length)
  out.set(block, 8)
  return out
}

const compressors: NonNullable<WriteOptions["compressors"]> = {
  GZIP: (input) => gzipSync(input),
  BROTLI: (input) => brotliCompressSync(input),
  ZSTD: (input) => zstdCompress(input, 3),
  LZ4: hadoopLz4,
  LZ4_RAW: lz4Block,
  // Stored as is: a codec no reader here has.
  LZO: (input) => input
}

beforeAll(() => zstdInit())

const ROWS = 10

/** Columns of every kind: a list of INT64 with null elements, INT64 that leaves int32 in the last row group only. */
const columnData = (): Array<ColumnSource> => [
  { name: "id", data: Array.from({ length: ROWS }, (_, i) => i) },
  { name: "big", data: Array.from({ length: ROWS }, (_, i) => (i === ROWS - 1 ? 2n ** 40n : i % 3 === 0 ? null : BigInt(i))) },
  { name: "small", data: Array.from({ length: ROWS }, (_, i) => BigInt(-i)) },
  { name: "text", data: Array.from({ length: ROWS }, (_, i) => (i % 4 === 1 ? null : `row ${i}: é 日本 ${"x".repeat(i * 50)}`)) },
  { name: "score", data: Array.from({ length: ROWS }, (_, i) => i / 4) },
  { name: "flag", data: Array.from({ length: ROWS }, (_, i) => (i % 5 === 0 ? null : i % 2 === 0)) },
  { name: "ids", data: Array.from({ length: ROWS }, (_, i) => (i === 2 ? null : Array.from({ length: i % 4 }, (_, k) => BigInt(k * i)))) },
  { name: "scores", data: Array.from({ length: ROWS }, (_, i) => (i === 4 ? [] : [i, i / 2])) },
  { name: "meta", data: Array.from({ length: ROWS }, (_, i) => (i % 2 === 0 ? { source: "web", n: i } : null)) }
]

const schema: NonNullable<WriteOptions["schema"]> = [
  { name: "root", num_children: 9 },
  { name: "id", type: "INT32", repetition_type: "REQUIRED" },
  { name: "big", type: "INT64", repetition_type: "OPTIONAL" },
  { name: "small", type: "INT64", repetition_type: "REQUIRED" },
  { name: "text", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" },
  { name: "score", type: "DOUBLE", repetition_type: "REQUIRED" },
  { name: "flag", type: "BOOLEAN", repetition_type: "OPTIONAL" },
  { name: "ids", repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
  { name: "list", repetition_type: "REPEATED", num_children: 1 },
  { name: "element", type: "INT64", repetition_type: "OPTIONAL" },
  { name: "scores", repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
  { name: "list", repetition_type: "REPEATED", num_children: 1 },
  { name: "element", type: "DOUBLE", repetition_type: "REQUIRED" },
  { name: "meta", type: "BYTE_ARRAY", converted_type: "JSON", repetition_type: "OPTIONAL" }
]

const EXPECTED_SCHEMA = [
  "id: Int32",
  "big: Int64",
  "small: Int32",
  "text: Utf8",
  "score: Float64",
  "flag: Bool",
  "ids: List<Int32> [item: Int32 not null]",
  "scores: List<Float64> [item: Float64 not null]",
  "meta: Utf8"
]

const expectedRows = () => {
  const columns = columnData()
  return Array.from({ length: ROWS }, (_, i) =>
    Object.fromEntries(columns.map(({ name, data }) => {
      const value = (data as ArrayLike<unknown>)[i]
      if (typeof value === "bigint") return [name, Number(value)]
      if (Array.isArray(value)) return [name, value.map(Number)]
      return [name, value !== null && typeof value === "object" ? JSON.stringify(value) : value]
    })))
}

const writeParquet = (name: string, options: { codec?: CompressionCodec; statistics?: boolean; rowGroupSize?: number } = {}) =>
  write(name, new Uint8Array(parquetWriteBuffer({ columnData: columnData(), schema, compressors, rowGroupSize: 4, ...options })))

/** The progress reported while opening and reading `file`. */
const progressOf = async (file: string, format: Format): Promise<Array<[number, number]>> => {
  const calls: Array<[number, number]> = []
  await Effect.runPromise(Effect.flatMap(
    openFile(file, format, { batchRows: 4, onProgress: (done, total) => calls.push([done, total]) }),
    (opened) => Stream.runDrain(opened.batches)
  ))
  return calls
}

describe("parquet, batch by batch", () => {
  it("widens a kind across row groups before the first batch, with or without statistics", async () => {
    for (const statistics of [true, false]) {
      const file = writeParquet(`groups-${statistics}.parquet`, { statistics })
      const table = await expectSameAsWhole(file, "parquet")
      expect(describeSchema(table.schema)).toEqual(EXPECTED_SCHEMA)
      expect(rowsOf(table)).toEqual(expectedRows())
    }
  })

  it("reads every codec pandas, polars and pyarrow write, and names one it cannot read", async () => {
    const codecs: Array<CompressionCodec> = ["UNCOMPRESSED", "SNAPPY", "GZIP", "BROTLI", "ZSTD", "LZ4", "LZ4_RAW"]
    for (const codec of codecs) {
      const file = writeParquet(`${codec}.parquet`, { codec })
      const { opened, batches } = await readStreamed(file, "parquet", 3)
      expect(describeSchema(opened.schema)).toEqual(EXPECTED_SCHEMA)
      expect(rowsOf(new Table(opened.schema, batches))).toEqual(expectedRows())
    }
    const lzo = writeParquet("lzo.parquet", { codec: "LZO" })
    expect((await streamFailure(lzo, "parquet")).message).toBe(`${lzo}: cannot read parquet: parquet unsupported compression codec: LZO`)
  })

  it("reports progress up to its total, with a first pass over the columns that need it", async () => {
    for (const statistics of [true, false]) {
      const calls = await progressOf(writeParquet(`progress-${statistics}.parquet`, { statistics }), "parquet")
      expect(calls.every(([done, total], i) => done <= total && (i === 0 || done >= calls[i - 1]![0]))).toBe(true)
      expect(calls.at(-1)![0]).toBe(calls.at(-1)![1])
    }
  })

  it("reads a split sharded over files named as the hub names them", async () => {
    const shards = [0, 1, 2].map((i) =>
      write(`shards/data/train-0000${i}-of-00003.parquet`, new Uint8Array(parquetWriteBuffer({
        columnData: [{ name: "n", data: [3 * i, 3 * i + 1, 3 * i + 2], type: "INT32" }, { name: "shard", data: [i, i, i].map(BigInt), type: "INT64" }],
        codec: "ZSTD",
        compressors
      }))))
    const files = [...shards.map((file) => file.slice(`${dir}/shards/`.length)), "data/test-00000-of-00001.parquet", "README.md"]
    const splits = inferSplits(files, "data/")
    expect(splits.train).toEqual(["data/train-00000-of-00003.parquet", "data/train-00001-of-00003.parquet", "data/train-00002-of-00003.parquet"])
    const values: Array<unknown> = []
    for (const file of splits.train!) {
      expect(detectFormat(file)).toBe("parquet")
      const { opened, batches } = await readStreamed(`${dir}/shards/${file}`, "parquet", 2)
      expect(describeSchema(opened.schema)).toEqual(["n: Int32", "shard: Int32"])
      values.push(...rowsOf(new Table(opened.schema, batches)))
    }
    expect(values).toEqual(Array.from({ length: 9 }, (_, n) => ({ n, shard: Math.floor(n / 3) })))
  })

  it("refuses a list holding a null element before the first batch, as the whole-file reader does", async () => {
    const file = write("null-element.parquet", new Uint8Array(parquetWriteBuffer({
      columnData: [{ name: "ids", data: [[1n, 2n], [3n, null]] }],
      schema: [{ name: "root", num_children: 1 }, ...schema.slice(7, 10)],
      statistics: false
    })))
    expect((await streamFailure(file, "parquet")).message).toBe(`${file}: row 2: column "ids" mixes types: list of integers in earlier rows, object or nested array here`)
  })
})

describe("Arrow IPC, batch by batch", () => {
  const rows = Array.from({ length: 15 }, (_, i) => ({
    id: i,
    ids: i % 4 === 0 ? null : Array.from({ length: i % 3 }, (_, k) => i + k),
    text: i % 5 === 0 ? null : `row ${i}`
  }))

  /** The rows in batches of 5, 7, 0 and 3 rows, with a dictionary-encoded column. */
  const table = async (): Promise<Table> => {
    const plain = await Effect.runPromise(rowsToTable(rows, "rows"))
    const whole = plain.assign(new Table({
      kind: vectorFromArray(rows.map((_, i) => (i % 2 === 0 ? "even" : "odd")), new Dictionary(new Utf8(), new Int32()))
    }))
    const batch = whole.batches[0]!
    const cuts: Array<RecordBatch> = [batch.slice(0, 5), batch.slice(5, 12), batch.slice(12, 12), batch.slice(12, 15)]
    return new Table(whole.schema, cuts)
  }

  it("gives the file's batches, sliced to batchRows, and counts rows from the metadata, file or stream", async () => {
    const source = await table()
    for (const [name, kind] of [["rows.arrow", "file"], ["rows.ipc", "stream"]] as const) {
      const file = write(name, tableToIPC(source, kind))
      const whole = await expectSameAsWhole(file, "arrow", { exactSizes: false })
      expect([whole.numRows, describeSchema(whole.schema)]).toEqual([
        15,
        ["id: Int32", "ids: List<Int32> [item: Int32 not null]", "text: Utf8", "kind: Dictionary<Int32, Utf8>"]
      ])
      const { opened, batches } = await readStreamed(file, "arrow", 6)
      expect([opened.rows, batches.map((b) => b.numRows)]).toEqual([15, [5, 6, 1, 0, 3]])
    }
  })

  it("reports progress up to the file's size", async () => {
    const file = write("progress.arrow", tableToIPC(await table(), "file"))
    const calls = await progressOf(file, "arrow")
    expect(calls.every(([done, total]) => done <= total && total === fs.statSync(file).size)).toBe(true)
    expect(calls.at(-1)![0]).toBe(fs.statSync(file).size)
  })

  it("refuses a file that is not Arrow IPC, and a truncated one", async () => {
    const bad = write("bad.arrow", new Uint8Array(64))
    expect((await streamFailure(bad, "arrow")).message).toBe(`${bad}: not an Arrow IPC file or stream`)
    const ipc = tableToIPC(await table(), "stream")
    const cut = write("cut.ipc", ipc.subarray(0, ipc.length - 100))
    expect((await streamFailure(cut, "arrow")).message).toMatch(/cut\.ipc: corrupt Arrow IPC data: /)
  })
})
