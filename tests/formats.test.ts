import { type Table, tableToIPC } from "apache-arrow"
import { Effect } from "effect"
import { ByteWriter, parquetWrite, parquetWriteBuffer } from "hyparquet-writer"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { gzipSync } from "node:zlib"
import { describe, expect, it } from "vitest"
import { decodeIpc, rowAt } from "../src/arrow.ts"
import { encodeIpcFile } from "../src/arrow-file.ts"
import { detectFormat, type FormatError, readTable, rowsToTable } from "../src/formats/index.ts"

const GSM8K_TEST = path.resolve(__dirname, "../../shared/data/gsm8k/test.jsonl")
const gsm8kRows = (): Array<{ question: string; answer: string }> =>
  fs.readFileSync(GSM8K_TEST, "utf8").trim().split("\n").map((line) => JSON.parse(line) as { question: string; answer: string })

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "formats-test-"))

const write = (name: string, content: string | Uint8Array): string => {
  const file = path.join(dir, name)
  fs.writeFileSync(file, content)
  return file
}

const read = (file: string): Effect.Effect<Table, FormatError> =>
  readTable(fs.readFileSync(file), detectFormat(file)!, file)

const load = (name: string, content: string | Uint8Array): Promise<Table> => Effect.runPromise(read(write(name, content)))

const failure = (name: string, content: string | Uint8Array): Promise<FormatError> =>
  Effect.runPromise(Effect.flip(read(write(name, content))))

/** `name: Type` for every field, the way Arrow prints types. */
const schemaOf = (table: Table): Array<string> => table.schema.fields.map((f) => `${f.name}: ${f.type}`)

const rowsOf = (table: Table): Array<Record<string, unknown>> =>
  Array.from({ length: table.numRows }, (_, i) => rowAt(table, i))

describe("detectFormat", () => {
  it("goes by the extension, in any case", () => {
    expect(detectFormat("data/train.jsonl")).toBe("jsonl")
    expect(detectFormat("x.NDJSON")).toBe("jsonl")
    expect(detectFormat("x.json")).toBe("json")
    expect(detectFormat("x.csv")).toBe("csv")
    expect(detectFormat("x.tsv")).toBe("tsv")
    expect(detectFormat("x.Parquet")).toBe("parquet")
    expect(detectFormat("x.arrow")).toBe("arrow")
    expect(detectFormat("x.feather")).toBe("arrow")
    expect(detectFormat("x.ipc")).toBe("arrow")
  })

  it("knows nothing of other files", () => {
    expect(detectFormat("x.txt")).toBeUndefined()
    expect(detectFormat("jsonl")).toBeUndefined()
    expect(detectFormat("x.txt.gz")).toBeUndefined()
  })
})

describe("jsonl", () => {
  it("reads GSM8K test: 1,319 rows of question and answer", async () => {
    const table = await Effect.runPromise(read(GSM8K_TEST))
    expect(table.numRows).toBe(1319)
    expect(schemaOf(table)).toEqual(["question: Utf8", "answer: Utf8"])
    expect(table.schema.fields.every((f) => f.nullable)).toBe(true)
    const expected = gsm8kRows()
    expect(rowAt(table, 0)).toEqual(expected[0])
    expect(rowAt(table, 1318)).toEqual(expected[1318])
    expect(String(rowAt(table, 0).question)).toMatch(/^Janet’s ducks lay 16 eggs/)
  })

  it("infers each type from all rows, in first-seen column order", async () => {
    const lines = [
      { id: 1, score: 2, ok: true, text: "a", ids: [1, 2], weights: [1, 2], tags: ["x"], meta: { k: [1] } },
      { id: 2, score: 2.5, ok: false, text: "b", ids: [], weights: [0.5], tags: [], meta: null, late: "new" },
      { id: -3, score: 1e10, text: null, ids: [2147483647], weights: [], tags: ["y", "z"] }
    ]
    const table = await load("types.jsonl", lines.map((l) => JSON.stringify(l)).join("\n"))
    expect(schemaOf(table)).toEqual([
      "id: Int32",
      "score: Float64",
      "ok: Bool",
      "text: Utf8",
      "ids: List<Int32>",
      "weights: List<Float64>",
      "tags: List<Utf8>",
      "meta: Utf8",
      "late: Utf8"
    ])
    expect(rowsOf(table)).toEqual([
      { id: 1, score: 2, ok: true, text: "a", ids: [1, 2], weights: [1, 2], tags: ["x"], meta: "{\"k\":[1]}", late: null },
      { id: 2, score: 2.5, ok: false, text: "b", ids: [], weights: [0.5], tags: [], meta: null, late: "new" },
      { id: -3, score: 1e10, ok: null, text: null, ids: [2147483647], weights: [], tags: ["y", "z"], meta: null, late: null }
    ])
  })

  it("keeps integers in Int32 only within its range", async () => {
    const table = await load("range.jsonl", "{\"a\": -2147483648, \"b\": 2147483647, \"c\": 1}\n{\"c\": 2147483648}\n")
    expect(schemaOf(table)).toEqual(["a: Int32", "b: Int32", "c: Float64"])
    expect(rowsOf(table)).toEqual([{ a: -2147483648, b: 2147483647, c: 1 }, { a: null, b: null, c: 2147483648 }])
  })

  it("makes all-null columns Utf8, empty-list columns List<Int32>, and odd arrays JSON text", async () => {
    const table = await load("odd.jsonl", "{\"n\": null, \"e\": [], \"m\": [{\"role\": \"user\"}], \"x\": [1, null]}\n{\"e\": [], \"m\": []}\n")
    expect(schemaOf(table)).toEqual(["n: Utf8", "e: List<Int32>", "m: Utf8", "x: Utf8"])
    expect(rowsOf(table)).toEqual([
      { n: null, e: [], m: "[{\"role\":\"user\"}]", x: "[1,null]" },
      { n: null, e: [], m: "[]", x: null }
    ])
  })

  it("handles CRLF, blank lines, a BOM and a last line without newline", async () => {
    const table = await load("crlf.jsonl", "\uFEFF{\"a\": 1}\r\n\r\n   \r\n{\"a\": 2}\r\n{\"a\": 3}")
    expect(schemaOf(table)).toEqual(["a: Int32"])
    expect(rowsOf(table)).toEqual([{ a: 1 }, { a: 2 }, { a: 3 }])
  })

  it("reads an empty file as no rows and no columns", async () => {
    for (const content of ["", "\n\n", "\uFEFF"]) {
      const table = await load("empty.jsonl", content)
      expect([table.numRows, table.numCols]).toEqual([0, 0])
    }
  })

  it("places invalid JSON at its line and column", async () => {
    const error = await failure("bad.jsonl", "{\"a\": 1}\n\n{\"a\": 2,}\n{\"a\": 3}\n")
    expect(error._tag).toBe("FormatError")
    expect([error.line, error.column]).toEqual([3, 9])
    expect(error.message).toBe(`${path.join(dir, "bad.jsonl")}:3:9: invalid JSON: unexpected "}"`)
  })

  it("places an unterminated string at the control character that ends it", async () => {
    const error = await failure("cut.jsonl", "{\"a\": 1}\r\n{\"a\": \"unterminated\r\n")
    expect(error.message).toMatch(/cut\.jsonl:2:20: invalid JSON: unexpected "\\r"$/)
  })

  it("refuses a line that is not an object", async () => {
    const error = await failure("array.jsonl", "{\"a\": 1}\n[1, 2]\n")
    expect(error.line).toBe(2)
    expect(error.message).toMatch(/array\.jsonl:2: expected a JSON object, found an array$/)
  })

  it("refuses a column mixing types, naming the column, the line and both types", async () => {
    const error = await failure("mixed.jsonl", "{\"a\": 1, \"b\": \"x\"}\n\n{\"a\": 2.5}\n{\"a\": \"three\"}\n")
    expect(error.line).toBe(4)
    expect(error.message).toMatch(/mixed\.jsonl:4: column "a" mixes types: number in earlier rows, string here$/)
  })

  it("refuses a list column mixing element types", async () => {
    const error = await failure("lists.jsonl", "{\"ids\": [1, 2]}\n{\"ids\": [\"a\"]}\n")
    expect(error.message).toMatch(/lists\.jsonl:2: column "ids" mixes types: list of integers in earlier rows, list of strings here$/)
  })

  it("refuses bytes that are not UTF-8", async () => {
    const error = await failure("latin1.jsonl", new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe9, 0x22, 0x7d]))
    expect(error.message).toMatch(/latin1\.jsonl: not valid UTF-8 text$/)
  })
})

describe("json", () => {
  const rows = [{ q: "a", n: 1 }, { q: "b", n: 2 }]

  it("reads a top-level array of objects", async () => {
    const table = await load("array.json", JSON.stringify(rows, null, 2))
    expect(schemaOf(table)).toEqual(["q: Utf8", "n: Int32"])
    expect(rowsOf(table)).toEqual(rows)
  })

  it("reads the one array of an object such as {\"version\": ..., \"data\": [...]}", async () => {
    expect(rowsOf(await load("data.json", JSON.stringify({ data: rows })))).toEqual(rows)
    expect(rowsOf(await load("squad.json", JSON.stringify({ version: "1.1", data: rows })))).toEqual(rows)
  })

  it("refuses an object whose rows would be a guess", async () => {
    const two = await failure("two.json", JSON.stringify({ train: rows, test: rows }))
    expect(two.message).toMatch(/two\.json: expected an object with exactly one array of rows; array-valued keys: "train", "test"$/)
    const none = await failure("none.json", JSON.stringify({ a: 1 }))
    expect(none.message).toMatch(/array-valued keys: none$/)
    const scalar = await failure("scalar.json", "42")
    expect(scalar.message).toMatch(/scalar\.json: expected an array of objects, found a number$/)
  })

  it("refuses a row that is not an object", async () => {
    const error = await failure("rows.json", "[{\"a\": 1}, \"b\"]")
    expect(error.message).toMatch(/rows\.json: row 2: expected a JSON object, found a string$/)
  })

  it("places invalid JSON at its line and column", async () => {
    const error = await failure("bad.json", "[\n  {\"a\": 1},\n  {\"a\": 2,}\n]\n")
    expect([error.line, error.column]).toEqual([3, 11])
    expect(error.message).toMatch(/bad\.json:3:11: invalid JSON: unexpected "}"$/)
    const cut = await failure("cut.json", "\uFEFF[\n  {\"a\": 1}")
    expect(cut.message).toMatch(/cut\.json:2:11: invalid JSON: unexpected end of JSON$/)
    const escape = await failure("escape.json", "[{\"a\": \"x\\q\"}]")
    expect(escape.message).toMatch(/escape\.json:1:10: invalid JSON: unexpected "\\\\"$/)
  })

  it("names the row of a type mix", async () => {
    const error = await failure("mixed.json", "[{\"a\": true}, {\"a\": 0}]")
    expect(error.line).toBeUndefined()
    expect(error.message).toMatch(/mixed\.json: row 2: column "a" mixes types: boolean in earlier rows, integer here$/)
  })

  it("reads an empty array as no rows", async () => {
    const table = await load("empty.json", "[]")
    expect([table.numRows, table.numCols]).toEqual([0, 0])
  })
})

/** RFC 4180: every field quoted, quotes doubled. */
const toCsv = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string =>
  [header, ...rows].map((fields) => fields.map((f) => `"${f.replaceAll("\"", "\"\"")}"`).join(",")).join("\r\n")

describe("csv", () => {
  it("reads GSM8K written as CSV, multi-line quoted answers included", async () => {
    const rows = gsm8kRows()
    const table = await load("gsm8k.csv", toCsv(["question", "answer"], rows.map((r) => [r.question, r.answer])))
    expect(table.numRows).toBe(1319)
    expect(schemaOf(table)).toEqual(["question: Utf8", "answer: Utf8"])
    expect(rowsOf(table)).toEqual(rows)
  })

  it("infers numbers and booleans for whole columns, as pandas does; empty cells are nulls", async () => {
    const table = await load("typed.csv", [
      "id,score,ok,text,zip,big,mixed",
      "1,0.5,true,hello,007,9007199254740993,1",
      "2,,FALSE,\"a, \"\"quoted\"\"\nline\",123,1,x",
      ",3,,,,2,2"
    ].join("\n"))
    expect(schemaOf(table)).toEqual([
      "id: Int32",
      "score: Float64",
      "ok: Bool",
      "text: Utf8",
      "zip: Utf8",
      "big: Utf8",
      "mixed: Utf8"
    ])
    expect(rowsOf(table)).toEqual([
      { id: 1, score: 0.5, ok: true, text: "hello", zip: "007", big: "9007199254740993", mixed: "1" },
      { id: 2, score: null, ok: false, text: "a, \"quoted\"\nline", zip: "123", big: "1", mixed: "x" },
      { id: null, score: 3, ok: null, text: null, zip: null, big: "2", mixed: "2" }
    ])
  })

  it("reads TSV with tabs, CRLF and a BOM", async () => {
    const table = await load("data.tsv", "\uFEFFname\tcount\r\nsay \"hi\", ok\t2\r\n\r\nb\t-1\r\n")
    expect(schemaOf(table)).toEqual(["name: Utf8", "count: Int32"])
    expect(rowsOf(table)).toEqual([{ name: "say \"hi\", ok", count: 2 }, { name: "b", count: -1 }])
  })

  it("reads a header alone as typed-as-text columns without rows, and an empty file as nothing", async () => {
    const header = await load("header.csv", "a,b\n")
    expect([header.numRows, schemaOf(header)]).toEqual([0, ["a: Utf8", "b: Utf8"]])
    const empty = await load("empty.csv", "")
    expect([empty.numRows, empty.numCols]).toEqual([0, 0])
  })

  it("reports a short record at its line", async () => {
    const error = await failure("short.csv", "a,b\r\n1,2\r\n\r\n3\r\n")
    expect(error.line).toBe(4)
    expect(error.message).toMatch(/short\.csv:4: Invalid Record Length: expect 2, got 1 on line 4$/)
  })

  it("reports an unclosed quote", async () => {
    const error = await failure("quote.csv", "a,b\n1,\"open\n2,3\n")
    expect(error.line).toBe(3)
    expect(error.message).toMatch(/quote\.csv:3: Quote Not Closed/)
  })

  it("refuses a duplicate column name", async () => {
    const error = await failure("dup.csv", "a,b,a\n1,2,3\n")
    expect(error.message).toMatch(/dup\.csv: duplicate column name "a" in the header$/)
  })
})

describe("parquet", () => {
  it("reads GSM8K written with hyparquet-writer", async () => {
    const rows = gsm8kRows()
    const bytes = parquetWriteBuffer({
      columnData: [
        { name: "question", data: rows.map((r) => r.question), type: "STRING" },
        { name: "answer", data: rows.map((r) => r.answer), type: "STRING" }
      ]
    })
    const table = await load("gsm8k.parquet", new Uint8Array(bytes))
    expect(table.numRows).toBe(1319)
    expect(schemaOf(table)).toEqual(["question: Utf8", "answer: Utf8"])
    expect(rowsOf(table)).toEqual(rows)
  })

  it("maps parquet types: INT64 ids fitting int32 to List<Int32>, DOUBLE stays Float64, large INT64 stays Int64", async () => {
    const writer = new ByteWriter()
    parquetWrite({
      writer,
      columnData: [
        { name: "input_ids", data: [[1n, 2n, 3n], [], null, [151643n]] },
        { name: "labels", data: [[1, 2], [3], [4], null] },
        { name: "weight", data: [1, 2, null, 3] },
        { name: "step", data: [1n, 2n, 3n, null] },
        { name: "hash", data: [1n, 2n ** 40n, null, -5n] },
        { name: "flag", data: [true, false, null, true] },
        { name: "text", data: ["a", null, "c", "d"] },
        { name: "empty", data: [null, null, null, null] }
      ],
      schema: [
        { name: "root", num_children: 8 },
        { name: "input_ids", repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        { name: "element", type: "INT64", repetition_type: "REQUIRED" },
        { name: "labels", repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        { name: "element", type: "INT32", repetition_type: "REQUIRED" },
        { name: "weight", type: "DOUBLE", repetition_type: "OPTIONAL" },
        { name: "step", type: "INT64", repetition_type: "OPTIONAL" },
        { name: "hash", type: "INT64", repetition_type: "OPTIONAL" },
        { name: "flag", type: "BOOLEAN", repetition_type: "OPTIONAL" },
        { name: "text", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" },
        { name: "empty", type: "DOUBLE", repetition_type: "OPTIONAL" }
      ]
    })
    const table = await load("types.parquet", new Uint8Array(writer.getBuffer()))
    expect(schemaOf(table)).toEqual([
      "input_ids: List<Int32>",
      "labels: List<Int32>",
      "weight: Float64",
      "step: Int32",
      "hash: Int64",
      "flag: Bool",
      "text: Utf8",
      "empty: Float64"
    ])
    expect(rowsOf(table)).toEqual([
      { input_ids: [1, 2, 3], labels: [1, 2], weight: 1, step: 1, hash: 1, flag: true, text: "a", empty: null },
      { input_ids: [], labels: [3], weight: 2, step: 2, hash: 2 ** 40, flag: false, text: null, empty: null },
      { input_ids: null, labels: [4], weight: null, step: 3, hash: null, flag: null, text: "c", empty: null },
      { input_ids: [151643], labels: null, weight: 3, step: null, hash: -5, flag: true, text: "d", empty: null }
    ])
  })

  it("keeps JSON and struct columns as JSON text, timestamps as ISO text, and reads gzip", async () => {
    const bytes = parquetWriteBuffer({
      codec: "GZIP",
      compressors: { GZIP: (input) => gzipSync(input) },
      columnData: [
        { name: "meta", data: [{ source: "web", n: 1 }, null] },
        { name: "at", data: [new Date("2024-05-01T12:34:56.789Z"), null], type: "TIMESTAMP" }
      ]
    })
    const table = await load("gzip.parquet", new Uint8Array(bytes))
    expect(schemaOf(table)).toEqual(["meta: Utf8", "at: Utf8"])
    expect(rowsOf(table)).toEqual([
      { meta: "{\"source\":\"web\",\"n\":1}", at: "2024-05-01T12:34:56.789Z" },
      { meta: null, at: null }
    ])
  })

  it("refuses bytes that are not parquet", async () => {
    const error = await failure("bad.parquet", "definitely not parquet")
    expect(error.message).toMatch(/bad\.parquet: cannot read parquet: parquet file invalid \(footer != PAR1\)$/)
  })
})

describe("rowsToTable and Arrow IPC", () => {
  const rows = [
    { prompt: "2+2?", input_ids: [17, 10, 17], labels: [-100, 4], score: 0.5, ok: true },
    { prompt: "π", input_ids: [], labels: null, score: 1, ok: false, extra: { a: 1 } },
    { prompt: null, input_ids: [2147483647, -2147483648], labels: [1], score: null }
  ]

  it("keeps values and types through an IPC file, List<Int32> included", async () => {
    const table = await Effect.runPromise(rowsToTable(rows, "rows"))
    const types = [
      "prompt: Utf8",
      "input_ids: List<Int32>",
      "labels: List<Int32>",
      "score: Float64",
      "ok: Bool",
      "extra: Utf8"
    ]
    expect(schemaOf(table)).toEqual(types)
    const back = decodeIpc(encodeIpcFile(table))
    expect(schemaOf(back)).toEqual(types)
    expect(back.schema.fields.map((f) => f.nullable)).toEqual(types.map(() => true))
    expect(rowsOf(back)).toEqual([
      { ...rows[0], extra: null },
      { ...rows[1], extra: "{\"a\":1}" },
      { ...rows[2], ok: null, extra: null }
    ])
  })

  it("reads an IPC file or stream back as is", async () => {
    const table = await Effect.runPromise(rowsToTable(rows, "rows"))
    for (const [name, bytes] of [["rows.arrow", encodeIpcFile(table)], ["rows.ipc", tableToIPC(table, "stream")]] as const) {
      const back = await load(name, bytes)
      expect(schemaOf(back)).toEqual(schemaOf(table))
      expect(rowsOf(back)).toEqual(rowsOf(table))
    }
  })

  it("refuses bytes that are not Arrow IPC", async () => {
    const error = await failure("bad.arrow", new Uint8Array(64))
    expect(error.message).toMatch(/bad\.arrow: not an Arrow IPC file or stream$/)
  })

  it("types bigints (from parquet INT64) as Int32 when they fit, else Int64", async () => {
    const table = await Effect.runPromise(rowsToTable([{ a: 1n, b: 1n }, { a: 2n, b: 2n ** 53n + 1n }], "bigints"))
    expect(schemaOf(table)).toEqual(["a: Int32", "b: Int64"])
    expect(rowsOf(table)).toEqual([{ a: 1, b: 1 }, { a: 2, b: "9007199254740993" }])
  })

  it("names the row when rows come without lines", async () => {
    const error = await Effect.runPromise(Effect.flip(rowsToTable([{ a: [1] }, { a: { b: 1 } }], "hub:gsm8k")))
    expect(error.message).toBe("hub:gsm8k: row 2: column \"a\" mixes types: list of integers in earlier rows, object or nested array here")
  })

  it("refuses values no column type holds", async () => {
    const error = await Effect.runPromise(Effect.flip(rowsToTable([{ blob: new Uint8Array(2) }], "scraper")))
    expect(error.message).toBe("scraper: row 1: column \"blob\" holds a value of an unsupported type (Uint8Array)")
  })

  it("builds no columns from no rows", async () => {
    const table = await Effect.runPromise(rowsToTable([], "none"))
    expect([table.numRows, table.numCols]).toEqual([0, 0])
  })
})

describe("hostile input", () => {
  const deepArray = (levels: number) => `${"[".repeat(levels)}${"]".repeat(levels)}`
  const deepObject = (levels: number) => `${"{\"a\":".repeat(levels)}1${"}".repeat(levels)}`

  it("reports a value nested 100,000 levels deep at its line, like any malformed line", async () => {
    const limit = "is nested more than 1000 levels deep (arrays or objects inside each other); this reader supports up to 1000"
    expect((await failure("deep.jsonl", `{"a":1}\n{"x":${deepArray(100_000)}}\n`)).message).toBe(`${dir}/deep.jsonl:2: column "x" ${limit}`)
    expect((await failure("deep-object.jsonl", `{"a":1}\n\n{"x":${deepObject(100_000)}}\n`)).message).toBe(`${dir}/deep-object.jsonl:3: column "x" ${limit}`)
    expect((await failure("deep.json", `[{"a":1}, {"x":${deepArray(100_000)}}]`)).message).toBe(`${dir}/deep.json: row 2: column "x" ${limit}`)
    // Malformed as well as deep: the syntax error's place, found without recursion.
    const unclosed = await failure("unclosed.jsonl", `{"a":1}\n{"x":${"[".repeat(100_000)}\n`)
    expect(unclosed.message).toBe(`${dir}/unclosed.jsonl:2:100006: invalid JSON: unexpected end of JSON`)
    const stray = await failure("stray.jsonl", `{"x":${"[".repeat(50_000)}1,}${"]".repeat(50_000)}}\n`)
    expect(stray.message).toBe(`${dir}/stray.jsonl:1:50008: invalid JSON: unexpected "}"`)
  })

  it("reads nesting up to the limit as JSON text", async () => {
    const table = await load("nested.jsonl", `{"x":${deepArray(999)}}\n`)
    expect(schemaOf(table)).toEqual(["x: Utf8"])
    expect(rowsOf(table)[0]!.x).toBe(deepArray(999))
  })

  it("refuses a column named __proto__ at its line, which plain objects would drop", async () => {
    const reason = "column name \"__proto__\" is reserved in JavaScript (its values would be lost): rename the column"
    expect((await failure("proto.jsonl", `{"a":1}\n{"a":2,"__proto__":3}\n`)).message).toBe(`${dir}/proto.jsonl:2: ${reason}`)
    expect((await failure("proto.json", `[{"a":1,"__proto__":{"b":2}}]`)).message).toBe(`${dir}/proto.json: row 1: ${reason}`)
    expect((await failure("proto.csv", "a,__proto__\n1,2\n")).message).toBe(`${dir}/proto.csv:1: ${reason}`)
    const parquet = parquetWriteBuffer({ columnData: [{ name: "a", data: [1], type: "INT32" }, { name: "__proto__", data: [2], type: "INT32" }] })
    expect((await failure("proto.parquet", new Uint8Array(parquet))).message).toBe(`${dir}/proto.parquet: ${reason}`)
    // Other names that Object.prototype has are ordinary columns.
    const table = await load("names.jsonl", `{"constructor":"c","toString":1,"hasOwnProperty":true}\n`)
    expect(schemaOf(table)).toEqual(["constructor: Utf8", "toString: Int32", "hasOwnProperty: Bool"])
  })
})
