/**
 * Datasets larger than memory: the Arrow files are written and read a record batch at
 * a time, and every streaming stage gives, byte for byte, what the whole split read
 * into memory at once gives (one batch of every row, the in-memory path), for the same
 * input, shuffle order included.
 */
import { Bool, DataType, Dictionary, Field, FixedSizeList, Int32, List, type RecordBatch, Struct, Table, tableFromArrays, tableToIPC, Utf8, vectorFromArray } from "apache-arrow"
import { Effect, Stream } from "effect"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { decodeIpc, gatherBatch, int32ListVector, takeRows } from "../src/arrow.ts"
import { encodeIpcFile, IpcFileReader, IpcFileWriter } from "../src/arrow-file.ts"
import type { DatasetArtifact } from "../src/artifact.ts"
import { openSplit, readHead } from "../src/dataset.ts"
import { permutation } from "../src/random.ts"
import { shuffledBatches, shuffleWindows } from "../src/shuffle.ts"
import { openExamples } from "../src/train/data.ts"
import { qwenTokenizerDir } from "./fixtures/tokenizers/folders.ts"
import { cliInProcess, tempDir, writeFile } from "./helpers.ts"

/** A table of `n` rows with text, nullable numbers, token-id lists (some empty) and nullable text lists. */
const sampleTable = (n: number): Table => {
  const ids = Array.from({ length: n }, (_, i) => Int32Array.from({ length: i % 5 === 0 ? 0 : (i * 7) % 13 + 1 }, (_, j) => i * 100 + j))
  return new Table({
    text: vectorFromArray(Array.from({ length: n }, (_, i) => `row ${i} ${"x".repeat(i % 11)}`), new Utf8()),
    n: vectorFromArray(Array.from({ length: n }, (_, i) => (i % 4 === 0 ? null : i * 3)), new Int32()),
    input_ids: int32ListVector(ids),
    labels: int32ListVector(ids.map((row) => row.map((id) => id + 1))),
    tags: vectorFromArray(
      Array.from({ length: n }, (_, i) => (i % 6 === 0 ? null : Array.from({ length: i % 3 }, (_, j) => `t${j}`))),
      new List(new Field("item", new Utf8(), true))
    )
  })
}

/** `table` cut into batches at the given sizes, cycling through them. */
const chunked = (table: Table, sizes: ReadonlyArray<number>): Array<RecordBatch> => {
  const batches: Array<RecordBatch> = []
  for (let start = 0, k = 0; start < table.numRows; k++) {
    const end = Math.min(table.numRows, start + sizes[k % sizes.length]!)
    batches.push(...table.slice(start, end).batches)
    start = end
  }
  return batches
}

const writeFileOf = (path: string, table: Table, batchRows: number, sizes: ReadonlyArray<number>): Uint8Array => {
  const writer = IpcFileWriter.create(path, table.schema, batchRows)
  for (const batch of chunked(table, sizes)) writer.write(batch)
  writer.finish()
  return readFileSync(path)
}

describe("Arrow files, a record batch at a time", () => {
  it("the writer lays out the same bytes however the rows are cut on the way in", () => {
    const dir = tempDir()
    const table = sampleTable(103)
    const whole = encodeIpcFile(table, 10)
    for (const sizes of [[1], [3, 17], [10], [50, 1, 2], [103], [7, 11, 13]]) {
      expect(Buffer.compare(writeFileOf(join(dir, "t.arrow"), table, 10, sizes), whole), `cut at ${sizes}`).toBe(0)
    }
    // And the layout is what it says: batches of exactly 10 rows, the last shorter.
    expect(decodeIpc(whole).batches.map((b) => b.numRows)).toEqual([10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 3])
    expect(decodeIpc(whole).toArray().map((r) => JSON.stringify(r))).toEqual(table.toArray().map((r) => JSON.stringify(r)))
  })

  it("stores a dictionary-encoded column as its plain values, whichever dictionary each batch brings", () => {
    const dir = tempDir()
    const first = tableFromArrays({ word: ["a", "b", "a"] })
    const second = tableFromArrays({ word: ["c", "a"] })
    expect(DataType.isDictionary(first.schema.fields[0]!.type)).toBe(true)
    const writer = IpcFileWriter.create(join(dir, "t.arrow"), first.schema, 2)
    writer.write(first)
    writer.write(second)
    writer.finish()
    const read = decodeIpc(readFileSync(join(dir, "t.arrow")))
    expect(String(read.schema.fields[0]!.type)).toBe("Utf8")
    expect(read.getChild("word")!.toArray()).toEqual(["a", "b", "a", "c", "a"])
    // The same bytes as the plain column written directly.
    expect(Buffer.compare(readFileSync(join(dir, "t.arrow")), encodeIpcFile(new Table({ word: vectorFromArray(["a", "b", "a", "c", "a"], new Utf8()) }), 2))).toBe(0)
  })

  it("takes a column without nulls in its first batch and with nulls later, and dictionaries inside fixed-size lists", () => {
    const path = join(tempDir(), "t.arrow")
    const writer = IpcFileWriter.create(path, new Table({ x: vectorFromArray([1, 2], new Int32()) }).schema, 3)
    writer.write(new Table({ x: vectorFromArray([1, 2], new Int32()) }))
    writer.write(new Table({ x: vectorFromArray([3, null], new Int32()) }))
    writer.finish()
    expect(decodeIpc(readFileSync(path)).getChild("x")!.toArray()).toEqual(Int32Array.from([1, 2, 3, 0]))
    expect(decodeIpc(readFileSync(path)).getChild("x")!.get(3)).toBeNull()
    const pairs = new FixedSizeList(2, new Field("item", new Dictionary(new Utf8(), new Int32()), true))
    const table = new Table({ pair: vectorFromArray([["a", "b"], ["b", "c"]], pairs) })
    const taken = new Table([gatherBatch(table, [1, 0])])
    expect(String(taken.schema.fields[0]!.type)).toBe("FixedSizeList[2]<Utf8>")
    expect(JSON.stringify(taken.toArray().map((row) => row.toJSON().pair.toArray()))).toBe('[["b","c"],["a","b"]]')
  })

  it("refuses a batch of another schema instead of ending the file silently", () => {
    const writer = IpcFileWriter.create(join(tempDir(), "t.arrow"), sampleTable(3).schema, 10)
    const other = new Table({ text: vectorFromArray(["a"], new Utf8()) })
    expect(() => writer.write(other)).toThrow(/a record batch with columns \(text: Utf8\) was written to a file of \(text: Utf8, n: Int32/)
    writer.abort()
  })

  it("the reader reads each batch, and single token-id cells, without the rest of the file", () => {
    const path = join(tempDir(), "t.arrow")
    const table = sampleTable(45)
    writeFileSync(path, encodeIpcFile(table, 8))
    const reader = IpcFileReader.open(path)
    expect(reader.numBatches).toBe(6)
    expect(Array.from({ length: 6 }, (_, b) => reader.batchRows(b))).toEqual([8, 8, 8, 8, 8, 5])
    expect(reader.readBatch(5).get(4)!.toJSON().text).toBe("row 44 ")
    const ids = reader.int32Lists("input_ids")
    for (const row of [0, 1, 9, 23, 44]) {
      expect(Array.from(ids.cell(Math.floor(row / 8), row % 8))).toEqual(Array.from(table.getChild("input_ids")!.get(row)!.toArray() as Int32Array))
    }
    expect(Array.from(ids.lengths(1))).toEqual(Array.from({ length: 8 }, (_, i) => (table.getChild("input_ids")!.get(8 + i)!.length as number)))
    expect(() => reader.int32Lists("text")).toThrow(/column "text" is Utf8, not a list of 32-bit integers/)
    reader.close()
  })

  it("takes rows of every column type with their values and nulls, laid out the same however they were cut", () => {
    const n = 40
    const lists = Array.from({ length: n }, (_, i) => (i % 7 === 3 ? null : Array.from({ length: i % 4 }, (_, j) => i * 10 + j)))
    const table = new Table({
      ids: vectorFromArray(lists, new List(new Field("item", new Int32(), true))),
      words: vectorFromArray(lists.map((l) => l && l.map((x) => `w${x}`)), new List(new Field("item", new Utf8(), true))),
      pair: vectorFromArray(
        Array.from({ length: n }, (_, i) => (i % 5 === 1 ? null : { a: i, b: `b${i}` })),
        new Struct([new Field("a", new Int32(), true), new Field("b", new Utf8(), true)])
      ),
      fixed: vectorFromArray(Array.from({ length: n }, (_, i) => (i % 6 === 2 ? null : [i, -i])), new FixedSizeList(2, new Field("item", new Int32(), true))),
      flag: vectorFromArray(Array.from({ length: n }, (_, i) => (i % 9 === 0 ? null : i % 2 === 0)), new Bool())
    })
    const plain = (t: Table) => t.toArray().map((row) => JSON.stringify(row))
    const order = permutation(n, 3)
    const shuffled = takeRows(table, order)
    expect(plain(shuffled)).toEqual(Array.from(order, (i) => plain(table)[i]))
    // Some runs (a filter): the same rows as picking them one by one.
    const kept = Array.from({ length: n }, (_, i) => i).filter((i) => i % 3 !== 0)
    expect(plain(takeRows(table, kept))).toEqual(kept.map((i) => plain(table)[i]))
    // Struct and fixed-size-list rows that are null carry nothing below them: a slice of
    // the original and a gathered copy write the same bytes.
    const dir = tempDir()
    const whole = encodeIpcFile(takeRows(table, kept), 8)
    expect(Buffer.compare(writeFileOf(join(dir, "k.arrow"), takeRows(table, kept), 8, [1, 5, 3]), whole)).toBe(0)
    const gathered = new Table([gatherBatch(table, kept)])
    expect(Buffer.compare(encodeIpcFile(gathered, 8), whole)).toBe(0)
  })

  it("a file that is not an Arrow file is a clean error", () => {
    const path = writeFile(tempDir(), "t.arrow", "not arrow at all, just text that is long enough")
    expect(() => IpcFileReader.open(path)).toThrow(/does not end as an Arrow IPC file does/)
    // Files this program writes never hold dictionaries; one that does is not read as if it did not.
    const dictionary = join(tempDir(), "d.arrow")
    writeFileSync(dictionary, tableToIPC(tableFromArrays({ word: ["a", "b"] }), "file"))
    expect(() => IpcFileReader.open(dictionary)).toThrow(/holds dictionary batches/)
  })
})

const datasetOf = (path: string, rows: number): DatasetArtifact => ({ kind: "dataset", splits: { train: [{ path, rows }] } })

describe("the first rows of a split", () => {
  it("are read without the rest: show, evaluate's and generate's prompts", async () => {
    const path = join(tempDir(), "t.arrow")
    writeFileSync(path, encodeIpcFile(sampleTable(50), 7))
    const plain = (t: Table) => t.toArray().map((row) => JSON.stringify(row))
    const whole = plain(decodeIpc(readFileSync(path)))
    for (const count of [0, 3, 7, 10, 50, Infinity]) {
      const head = await Effect.runPromise(readHead(datasetOf(path, 50), "train", count))
      expect(head.rows).toBe(50)
      expect(plain(head.table), `first ${count}`).toEqual(whole.slice(0, Math.min(count, 50)))
    }
  })
})

describe("shuffle of a split larger than its window", () => {
  it("goes through bucket files to numpy's permutation, identical to the whole table shuffled in memory", async () => {
    const path = join(tempDir(), "t.arrow")
    writeFileSync(path, encodeIpcFile(sampleTable(211), 16))
    const table = decodeIpc(readFileSync(path))
    const input = await Effect.runPromise(openSplit(datasetOf(path, 211), "train", 16))
    const expected = encodeIpcFile(takeRows(table, permutation(211, 5)), 16)
    // A window of about a sixth of the split: six buckets.
    const windowBytes = Math.ceil(input.bytes / 6)
    expect(shuffleWindows(input, windowBytes)).toBeGreaterThanOrEqual(6)
    const buckets = join(tempDir(), "buckets")
    for (const bytes of [windowBytes, 1, input.bytes * 2]) {
      const batches = await Effect.runPromise(Stream.runCollect(shuffledBatches(input, 5, buckets, bytes)))
      const out = encodeIpcFile(new Table(table.schema, [...batches]), 16)
      expect(Buffer.compare(out, expected), `window of ${bytes} bytes`).toBe(0)
      expect(existsSync(buckets), "the buckets are removed").toBe(false)
    }
    // A file holding more rows than its entry recorded is damage, said so, before any row is misplaced.
    const short = await Effect.runPromise(openSplit(datasetOf(path, 190), "train", 16))
    const failure = await Effect.runPromise(Effect.flip(Stream.runDrain(shuffledBatches(short, 5, buckets, windowBytes))))
    expect(failure.message).toMatch(/split "train" holds more than the 190 rows its files recorded: the cache entry is damaged/)
    expect(existsSync(buckets)).toBe(false)
  })
})

describe("training examples read from disk", () => {
  it("are the split's non-empty rows, in order, read cell by cell across files and batches", async () => {
    const dir = tempDir()
    const table = sampleTable(60)
    writeFileSync(join(dir, "a.arrow"), encodeIpcFile(table.slice(0, 25), 7))
    writeFileSync(join(dir, "b.arrow"), encodeIpcFile(table.slice(25), 9))
    const dataset: DatasetArtifact = { kind: "dataset", splits: { train: [{ path: join(dir, "a.arrow"), rows: 25 }, { path: join(dir, "b.arrow"), rows: 35 }] } }
    const examples = await Effect.runPromise(Effect.scoped(Effect.map(openExamples(dataset, "train"), (source) => ({
      length: source.length,
      maxLength: source.maxLength,
      rows: Array.from({ length: source.length }, (_, i) => source.at(i)!),
      firstTen: source.take(10).length
    }))))
    const nonEmpty = Array.from({ length: 60 }, (_, i) => i).filter((i) => i % 5 !== 0)
    expect(examples.length).toBe(nonEmpty.length)
    expect(examples.firstTen).toBe(10)
    expect(examples.maxLength).toBe(13)
    examples.rows.forEach((example, k) => {
      const row = nonEmpty[k]!
      expect(Array.from(example.inputIds)).toEqual(Array.from(table.getChild("input_ids")!.get(row)!.toArray() as Int32Array))
      expect(Array.from(example.labels)).toEqual(Array.from(table.getChild("labels")!.get(row)!.toArray() as Int32Array))
    })
  })

  it("name the row whose labels do not match its ids, a split that was not tokenized, and a file whose rows differ from its record", async () => {
    const dir = tempDir()
    const bad = new Table({ input_ids: int32ListVector([[1, 2], [3]]), labels: int32ListVector([[1, 2], [3, 4]]) })
    writeFileSync(join(dir, "bad.arrow"), encodeIpcFile(bad))
    const failure = (dataset: DatasetArtifact) =>
      Effect.runPromise(Effect.flip(Effect.scoped(openExamples(dataset, "train")))).then((e) => e.message)
    expect(await failure(datasetOf(join(dir, "bad.arrow"), 2))).toBe('split "train" row 1: input_ids has 1 ids but labels has 2')
    writeFileSync(join(dir, "text.arrow"), encodeIpcFile(new Table({ text: vectorFromArray(["a"], new Utf8()) })))
    expect(await failure(datasetOf(join(dir, "text.arrow"), 1))).toMatch(/split "train": no column "input_ids" \(columns: text\): train on the output of a tokenize stage/)
    writeFileSync(join(dir, "good.arrow"), encodeIpcFile(new Table({ input_ids: int32ListVector([[1]]), labels: int32ListVector([[1]]) })))
    expect(await failure(datasetOf(join(dir, "good.arrow"), 40))).toMatch(/good\.arrow holds 1 rows where 40 were written: the cache entry is damaged/)
  })
})

interface StageJson {
  readonly id: string
  readonly outputs: { readonly dataset?: DatasetArtifact } | null
}

describe("every streaming stage, batch by batch, against the whole split in one batch", () => {
  it("gives the same bytes: fetch, tokenize (plain and packed), filter, shuffle, select and map", { timeout: 120_000 }, async () => {
    const dir = tempDir()
    const lines = Array.from({ length: 157 }, (_, i) =>
      JSON.stringify({
        question: `What is ${i} plus ${i % 7}?${" Think.".repeat(i % 4)}`,
        answer: `${i} + ${i % 7} = ${i + (i % 7)}`,
        n: i % 9 === 0 ? null : i % 23 === 22 ? i + 0.5 : i,
        tags: i % 10 === 0 ? null : Array.from({ length: i % 3 }, (_, j) => `tag${j}`),
        meta: { source: "generated", index: i }
      }))
    writeFile(dir, "data.jsonl", `${lines.join("\n")}\n`)
    const chain = (suffix: string, batch: number) => `
  data${suffix}:
    uses: fetch
    with: { path: data.jsonl, batch_size: ${batch} }
  tok${suffix}:
    uses: tokenize
    needs: [data${suffix}]
    with: { tokenizer: ${JSON.stringify(qwenTokenizerDir("qwen2.5"))}, prompt: question, completion: answer, keep: [n, tags, meta], batch_size: ${batch}, workers: 2 }
  short${suffix}:
    uses: filter
    needs: [tok${suffix}]
    with: { max_length: { column: input_ids, max: 40 }, where: "n == null || n % 3 != 0", batch_size: ${batch} }
  mixed${suffix}:
    uses: shuffle
    needs: [short${suffix}]
    with: { seed: 11, batch_size: ${batch} }
  some${suffix}:
    uses: select
    needs: [mixed${suffix}]
    with: { rows: 60, offset: 9, batch_size: ${batch} }
  mapped${suffix}:
    uses: map
    needs: [some${suffix}]
    with: { columns: { twice: "length * 2", label: "n > 50 ? 'big' : 'small'" }, drop: [meta], batch_size: ${batch} }
  packed${suffix}:
    uses: tokenize
    needs: [data${suffix}]
    with: { tokenizer: ${JSON.stringify(qwenTokenizerDir("qwen2.5"))}, text: answer, pack: { block_size: 8 }, batch_size: ${batch}, workers: 2 }
`
    const file = writeFile(dir, "p.yaml", `name: s\nstages:${chain("_small", 5)}${chain("_whole", 100_000)}`)
    const result = await cliInProcess(["run", file, "--cache-dir", tempDir(), "--json"])
    expect(result.code, result.stderr).toBe(0)
    const stages = (JSON.parse(result.stdout) as { stages: Array<StageJson> }).stages
    const fileOf = (id: string) => {
      const files = stages.find((s) => s.id === id)!.outputs!.dataset!.splits["train"]!
      expect(files).toHaveLength(1)
      return readFileSync(files[0]!.path)
    }
    // The shuffle's rows are its input's in numpy's order, value for value.
    const before = decodeIpc(fileOf("short_small")).toArray().map((row) => JSON.stringify(row))
    const after = decodeIpc(fileOf("mixed_small")).toArray().map((row) => JSON.stringify(row))
    expect(after).toEqual(Array.from(permutation(before.length, 11), (i) => before[i]))
    for (const stage of ["data", "tok", "short", "mixed", "some", "mapped", "packed"]) {
      const small = fileOf(`${stage}_small`)
      const whole = decodeIpc(fileOf(`${stage}_whole`))
      expect(whole.numRows, stage).toBeGreaterThan(stage === "some" || stage === "mapped" ? 50 : 80)
      // The same rows laid out as the small run lays them out: 5-row record batches (packed blocks: 16,384).
      const relaid = encodeIpcFile(whole, stage === "packed" ? 16_384 : 5)
      expect(Buffer.compare(small, relaid), stage).toBe(0)
    }
  })
})
