/**
 * Memory is bounded by a batch, not the file: a JSON-lines file twice the size of the
 * V8 heap goes through `openFile` in a child process whose heap is capped (the
 * whole-file reader would hold the file's text, and its rows, at once).
 */
import { execFile } from "node:child_process"
import fs from "node:fs"
import path from "node:path"
import { promisify } from "node:util"
import { expect, it } from "vitest"
import { tempDir } from "./support/formats-stream.ts"

const dir = tempDir("formats-memory-")
const HEAP_MIB = 64
const FILE_MIB = 2 * HEAP_MIB

/** Rows of about 500 bytes, GSM8K-like; the last one widens `score` to Float64. */
const writeRows = (file: string): number => {
  const text = "Janet’s ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with four. ".repeat(4)
  const fd = fs.openSync(file, "w")
  let rows = 0
  for (let written = 0; written < FILE_MIB * 2 ** 20;) {
    const lines = Array.from({ length: 1000 }, () => JSON.stringify({ id: rows++, question: text, ids: [rows, 2, 3], score: rows % 7 }))
    written += fs.writeSync(fd, `${lines.join("\n")}\n`)
  }
  fs.writeSync(fd, `${JSON.stringify({ id: rows++, question: "last", ids: [], score: 0.5 })}\n`)
  fs.closeSync(fd)
  return rows
}

const STREAM_FILE = `
  import { Effect, Stream } from "effect"
  import { openFile } from ${JSON.stringify(path.resolve(__dirname, "../src/formats/index.ts"))}
  const opened = await Effect.runPromise(openFile(process.argv[1], "jsonl", { batchRows: 1000 }))
  let rows = 0
  await Effect.runPromise(Stream.runForEach(opened.batches, (batch) => Effect.sync(() => { rows += batch.numRows })))
  console.log(JSON.stringify({ rows: opened.rows, streamed: rows, schema: opened.schema.fields.map((f) => String(f.type)) }))
`

it(`streams a ${FILE_MIB} MiB JSON-lines file under a ${HEAP_MIB} MiB heap`, async () => {
  const file = path.join(dir, "big.jsonl")
  const rows = writeRows(file)
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [`--max-old-space-size=${HEAP_MIB}`, "--import", "tsx", "--input-type=module", "-e", STREAM_FILE, file],
    { cwd: path.resolve(__dirname, "..") }
  )
  expect(JSON.parse(stdout)).toEqual({ rows, streamed: rows, schema: ["Int32", "Utf8", "List<Int32>", "Float64"] })
})
