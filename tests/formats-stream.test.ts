/**
 * The text formats (JSON lines, JSON, CSV, TSV) read batch by batch give the table the
 * whole-file reader gives, gzipped or not; errors keep their file:line; the hub's
 * layout counts gzipped data files.
 */
import { Chunk, Effect, Stream } from "effect"
import fs from "node:fs"
import { gzipSync } from "node:zlib"
import { describe, expect, it } from "vitest"
import { detectDataFile, detectFormat, type Format, openFile } from "../src/formats/index.ts"
import { dataFormat, filesLayout, isReadable } from "../src/hub/layout.ts"
import {
  describeSchema,
  expectSameAsWhole,
  readStreamed,
  readWhole,
  rowsOf,
  streamFailure,
  tempDir,
  wholeFailure,
  writeIn
} from "./support/formats-stream.ts"

const dir = tempDir("formats-stream-")
const write = writeIn(dir)

/** The file, and the same content gzipped next to it. */
const writeBoth = (name: string, content: string): [string, string] => [write(name, content), write(`${name}.gz`, gzipSync(content))]

/** About 3 MiB of rows with multi-byte text, so that 1 MiB chunks cut lines and characters. */
const manyRows = (count: number) =>
  Array.from({ length: count }, (_, i) => ({ id: i, text: `ligne ${i}: é – 日本語 ${"ü".repeat(i % 700)}`, ids: [i, i + 1] }))

const jsonl = (rows: ReadonlyArray<unknown>) => rows.map((row) => JSON.stringify(row)).join("\n")

describe("detectDataFile", () => {
  it("knows gzipped text formats by their double extension, in any case", () => {
    expect(detectDataFile("data/train.jsonl.gz")).toEqual({ format: "jsonl", compression: "gzip" })
    expect(detectDataFile("x.NDJSON.GZ")).toEqual({ format: "jsonl", compression: "gzip" })
    expect(detectDataFile("x.json.gz")).toEqual({ format: "json", compression: "gzip" })
    expect(detectDataFile("x.csv.gz")).toEqual({ format: "csv", compression: "gzip" })
    expect(detectDataFile("x.tsv.gz")).toEqual({ format: "tsv", compression: "gzip" })
    expect(detectDataFile("x.parquet")).toEqual({ format: "parquet", compression: undefined })
    expect(detectFormat("x.jsonl.gz")).toBe("jsonl")
  })

  it("knows no gzipped parquet or Arrow, and no bare .gz", () => {
    expect(detectDataFile("x.parquet.gz")).toBeUndefined()
    expect(detectDataFile("x.arrow.gz")).toBeUndefined()
    expect(detectDataFile("x.gz")).toBeUndefined()
    expect(detectDataFile("x.txt.gz")).toBeUndefined()
  })

  it("makes gzipped files data files of the hub's layout, as `datasets` does", () => {
    expect(dataFormat("data/train.jsonl.gz")).toBe("jsonl")
    expect(dataFormat(".hidden/train.jsonl.gz")).toBeUndefined()
    const layout = filesLayout([
      "README.md",
      "data/train-00000-of-00002.jsonl.gz",
      "data/train-00001-of-00002.jsonl.gz",
      "data/test-00000-of-00001.jsonl.gz",
      "data/extra.csv"
    ])
    expect(Object.fromEntries(layout!.configs)).toEqual({
      default: {
        train: ["data/train-00000-of-00002.jsonl.gz", "data/train-00001-of-00002.jsonl.gz"],
        test: ["data/test-00000-of-00001.jsonl.gz"]
      }
    })
    expect(isReadable({ train: ["train.csv.gz", "more.tsv.gz"] })).toBe(true)
  })
})

describe("JSON lines, batch by batch", () => {
  it("gives the whole-file table: late widening, nulls, lists, objects, CRLF, BOM, blank lines", async () => {
    const content = [
      "\uFEFF{\"id\": 1, \"score\": 2, \"ids\": [1, 2], \"tags\": [\"a\"], \"meta\": {\"k\": [1]}, \"none\": null}\r",
      "\r",
      "{\"id\": 2, \"score\": 3, \"ids\": [], \"tags\": [], \"meta\": null, \"late\": \"x\", \"empty\": []}",
      "   ",
      "{\"id\": 3, \"score\": null, \"ids\": [2147483647], \"text\": \"é – 日本\", \"empty\": []}",
      "",
      "{\"id\": 4, \"score\": 4.5, \"ids\": [1.5], \"meta\": [1, {\"deep\": true}]}"
    ].join("\n")
    for (const file of writeBoth("mixed.jsonl", content)) {
      const table = await expectSameAsWhole(file, "jsonl")
      expect(describeSchema(table.schema)).toEqual([
        "id: Int32",
        "score: Float64",
        "ids: List<Float64> [item: Float64 not null]",
        "tags: List<Utf8> [item: Utf8 not null]",
        "meta: Utf8",
        "none: Utf8",
        "late: Utf8",
        "empty: List<Int32> [item: Int32 not null]",
        "text: Utf8"
      ])
      expect(rowsOf(table)[3]).toEqual({
        id: 4, score: 4.5, ids: [1.5], tags: null, meta: "[1,{\"deep\":true}]", none: null, late: null, empty: null, text: null
      })
    }
  })

  it("reads lines and characters cut by chunk boundaries, and a line longer than a chunk", async () => {
    const rows = [...manyRows(3000), { id: 3000, text: "x".repeat(2_500_000), ids: [] }, { id: 3001.5, text: null, ids: [0.5] }]
    for (const file of writeBoth("chunks.jsonl", jsonl(rows))) {
      const table = await readWhole(file, "jsonl")
      expect(table.numRows).toBe(3002)
      expect(describeSchema(table.schema).slice(0, 1)).toEqual(["id: Float64"])
      const { batches } = await readStreamed(file, "jsonl", 1000)
      expect(batches.map((b) => b.numRows)).toEqual([1000, 1000, 1000, 2])
      await expectSameAsWhole(file, "jsonl", { batchRows: [7, 1000, 1_000_000] })
    }
  })

  it("places errors at their line across the whole file, gzipped or not", async () => {
    const before = jsonl(manyRows(3000))
    const cases: Array<[string, string, RegExp]> = [
      ["mix.jsonl", `${before}\n\n{"id": "three"}\n`, /mix\.jsonl(\.gz)?:3002: column "id" mixes types: integer in earlier rows, string here$/],
      ["bad.jsonl", `${before}\n{"id": 1,}\n`, /bad\.jsonl(\.gz)?:3001:10: invalid JSON: unexpected "}"$/],
      ["array.jsonl", `${before}\r\n[1]\r\n`, /array\.jsonl(\.gz)?:3001: expected a JSON object, found an array$/]
    ]
    for (const [name, content, message] of cases) {
      for (const file of writeBoth(name, content)) {
        expect((await streamFailure(file, "jsonl")).message).toMatch(message)
        expect((await wholeFailure(file, "jsonl")).message).toMatch(message)
      }
    }
  })

  it("refuses bytes that are not UTF-8 past the first chunk", async () => {
    const bytes = Buffer.concat([Buffer.from(`${jsonl(manyRows(3000))}\n{"a": "`), Buffer.from([0xe9]), Buffer.from("\"}\n")])
    const file = write("latin1.jsonl", bytes)
    expect((await streamFailure(file, "jsonl")).message).toBe(`${file}: not valid UTF-8 text`)
  })
})

describe("JSON documents, batch by batch", () => {
  it("gives the whole-file table, gzipped or not", async () => {
    const rows = [{ q: "a", n: 1, ids: [1] }, { q: null, n: 2, meta: { a: 1 } }, { q: "c", n: 2.5, ids: [] }]
    for (const file of writeBoth("data.json", JSON.stringify({ version: "1.0", data: rows }, null, 2))) {
      const table = await expectSameAsWhole(file, "json")
      expect(describeSchema(table.schema)).toEqual(["q: Utf8", "n: Float64", "ids: List<Int32> [item: Int32 not null]", "meta: Utf8"])
    }
  })

  it("keeps errors' line and column", async () => {
    for (const file of writeBoth("bad.json", "[\n  {\"a\": 1},\n  {\"a\": 2,}\n]\n")) {
      expect((await streamFailure(file, "json")).message).toMatch(/bad\.json(\.gz)?:3:11: invalid JSON: unexpected "}"$/)
    }
  })
})

/** RFC 4180: every field quoted, quotes doubled. */
const csvLine = (fields: ReadonlyArray<string>, delimiter = ","): string =>
  fields.map((f) => `"${f.replaceAll("\"", "\"\"")}"`).join(delimiter)

describe("CSV and TSV, batch by batch", () => {
  it("gives the whole-file table: quoting, CRLF, BOM, blank lines, types that change in the last row", async () => {
    const content = [
      "\uFEFFid,score,flag,text,zip,turns",
      "1,2,true,\"a, \"\"quoted\"\"\r\nline\",007,1",
      "",
      "2,,FALSE,plain,123,2",
      "3,1e3,true,,,x",
      "4,4.5,,\"\",,3"
    ].join("\r\n")
    for (const file of writeBoth("typed.csv", content)) {
      const table = await expectSameAsWhole(file, "csv")
      expect(describeSchema(table.schema)).toEqual(["id: Int32", "score: Float64", "flag: Bool", "text: Utf8", "zip: Utf8", "turns: Utf8"])
      expect(rowsOf(table)[0]).toEqual({ id: 1, score: 2, flag: true, text: "a, \"quoted\"\r\nline", zip: "007", turns: "1" })
    }
  })

  it("reads quoted fields that span chunk boundaries, and TSV", async () => {
    const rows = manyRows(3000).map((row) => [String(row.id), `${row.text}\n"second line"`, String(row.id % 2 === 0)])
    for (const delimiter of [",", "\t"] as const) {
      const name = delimiter === "," ? "chunks.csv" : "chunks.tsv"
      const format: Format = delimiter === "," ? "csv" : "tsv"
      const content = [csvLine(["id", "text", "even"], delimiter), ...rows.map((row) => csvLine(row, delimiter)), "3000.5\tlast\tfalse".replaceAll("\t", delimiter)].join("\n")
      for (const file of writeBoth(name, content)) {
        const table = await readWhole(file, format)
        expect([table.numRows, describeSchema(table.schema)]).toEqual([3001, ["id: Float64", "text: Utf8", "even: Bool"]])
        const { batches } = await readStreamed(file, format, 1024)
        expect(batches.map((b) => b.numRows)).toEqual([1024, 1024, 953])
        await expectSameAsWhole(file, format, { batchRows: [7, 1_000_000] })
      }
    }
  })

  it("reports a short record at its line past the first chunk, and a header alone as no rows", async () => {
    const body = manyRows(3000).map((row) => csvLine([String(row.id), row.text]))
    for (const file of writeBoth("short.csv", ["id,text", ...body, "", "7"].join("\n"))) {
      const error = await streamFailure(file, "csv")
      expect(error.line).toBe(3003)
      expect(error.message).toMatch(/short\.csv(\.gz)?:3003: Invalid Record Length: expect 2, got 1 on line 3003$/)
    }
    for (const file of writeBoth("header.csv", "a,b\n")) {
      const { opened, batches } = await readStreamed(file, "csv", 3)
      expect([opened.rows, describeSchema(opened.schema), batches.length]).toEqual([0, ["a: Utf8", "b: Utf8"], 0])
    }
  })
})

describe("gzip", () => {
  it("is recognised by its magic bytes whatever the file's name", async () => {
    const file = write("rows.data", gzipSync("{\"a\": 1}\n{\"a\": 2}\n"))
    const { opened, batches } = await readStreamed(file, "jsonl", 10)
    expect([opened.rows, batches[0]!.toArray().map((row) => row.toJSON())]).toEqual([2, [{ a: 1 }, { a: 2 }]])
  })

  it("refuses a corrupt or truncated gzip file, naming it", async () => {
    const whole = gzipSync(jsonl(manyRows(2000)))
    const cases: Array<[string, Uint8Array, Format]> = [
      ["garbage.jsonl.gz", Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.from("not gzip at all")]), "jsonl"],
      ["cut.jsonl.gz", whole.subarray(0, whole.length / 2), "jsonl"],
      ["cut.csv.gz", whole.subarray(0, 100), "csv"],
      ["cut.json.gz", whole.subarray(0, 100), "json"]
    ]
    for (const [name, bytes, format] of cases) {
      const file = write(name, bytes)
      expect((await streamFailure(file, format)).message).toMatch(new RegExp(`^${file.replaceAll(".", "\\.")}: not valid gzip data \\(.+\\)$`))
    }
  })
})

describe("openFile", () => {
  it("reports progress through both passes, up to twice the stored size", async () => {
    const [file, gz] = writeBoth("progress.jsonl", jsonl(manyRows(3000)))
    for (const path of [file, gz]) {
      const calls: Array<[number, number]> = []
      await Effect.runPromise(Effect.flatMap(
        openFile(path, "jsonl", { batchRows: 500, onProgress: (done, total) => calls.push([done, total]) }),
        (opened) => Stream.runDrain(opened.batches)
      ))
      const size = fs.statSync(path).size
      expect(calls.every(([, total]) => total === 2 * size)).toBe(true)
      expect(calls.every(([done], i) => i === 0 || done >= calls[i - 1]![0])).toBe(true)
      expect(calls.at(-1)).toEqual([2 * size, 2 * size])
    }
  })

  it("stops reading when no more batches are wanted", async () => {
    const rows = manyRows(3000)
    const files: Array<[string, Format]> = [
      ...writeBoth("stop.jsonl", jsonl(rows)).map((file): [string, Format] => [file, "jsonl"]),
      ...writeBoth("stop.csv", ["id,text", ...rows.map((row) => csvLine([String(row.id), row.text]))].join("\n")).map((file): [string, Format] => [file, "csv"])
    ]
    for (const [file, format] of files) {
      const batches = await Effect.runPromise(Effect.flatMap(
        openFile(file, format, { batchRows: 10 }),
        (opened) => Stream.runCollect(Stream.take(opened.batches, 2))
      ))
      expect(Chunk.toArray(batches).map((batch) => batch.get(0)?.toJSON().id)).toEqual([0, 10])
    }
  })

  it("fails when the file changes between its two passes", async () => {
    const file = write("changing.jsonl", "{\"a\": 1}\n")
    const opened = await Effect.runPromise(openFile(file, "jsonl", { batchRows: 10 }))
    fs.writeFileSync(file, "{\"a\": \"now text\"}\n{\"a\": 2}\n")
    const error = await Effect.runPromise(Effect.flip(Stream.runDrain(opened.batches)))
    expect(error.message).toBe(`${file}: the file changed while it was being read`)
  })

  it("names a missing file", async () => {
    const error = await streamFailure(`${dir}/missing.jsonl`, "jsonl")
    expect(error.message).toMatch(/missing\.jsonl: cannot read: ENOENT/)
  })
})
