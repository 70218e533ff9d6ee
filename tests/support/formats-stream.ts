/**
 * For the streaming readers' tests: files written to a temporary folder, read whole
 * (`readTable`) and batch by batch (`openFile`), and the check that both give the same
 * table whatever the batch size.
 */
import { type Field, type RecordBatch, type Schema, Table } from "apache-arrow"
import { Chunk, Effect, Stream } from "effect"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { afterAll, expect } from "vitest"
import { rowAt } from "../../src/arrow.ts"
import { type Format, type FormatError, type OpenedFile, openFile, readTable } from "../../src/formats/index.ts"

/** A temporary folder, removed once the calling test file's tests are done (call it at the top of the file). */
export const tempDir = (prefix: string): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

export const writeIn = (dir: string) => (name: string, content: string | Uint8Array): string => {
  const file = path.join(dir, name)
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, content)
  return file
}

export const readWhole = (file: string, format: Format): Promise<Table> =>
  Effect.runPromise(readTable(fs.readFileSync(file), format, file))

export const readStreamed = (file: string, format: Format, batchRows: number): Promise<{ opened: OpenedFile; batches: Array<RecordBatch> }> =>
  Effect.runPromise(Effect.gen(function* () {
    const opened = yield* openFile(file, format, { batchRows })
    return { opened, batches: Chunk.toArray(yield* Stream.runCollect(opened.batches)) }
  }))

/** The error of opening the file or of reading its batches. */
export const streamFailure = (file: string, format: Format, batchRows = 2): Promise<FormatError> =>
  Effect.runPromise(Effect.flip(Effect.flatMap(openFile(file, format, { batchRows }), (opened) => Stream.runDrain(opened.batches))))

export const wholeFailure = (file: string, format: Format): Promise<FormatError> =>
  Effect.runPromise(Effect.flip(readTable(fs.readFileSync(file), format, file)))

/** Every field with its type and nullability, list children included. */
export const describeSchema = (schema: Schema): Array<string> => {
  const describe = (field: Field): string =>
    `${field.name}: ${field.type}${field.nullable ? "" : " not null"}${
      (field.type.children ?? []).map((child: Field) => ` [${describe(child)}]`).join("")
    }`
  return schema.fields.map(describe)
}

export const rowsOf = (table: Table): Array<Record<string, unknown>> =>
  Array.from({ length: table.numRows }, (_, i) => rowAt(table, i))

/** Batch sizes as the row formats cut them: all `batchRows` but the last. */
const expectedSizes = (rows: number, batchRows: number): Array<number> =>
  Array.from({ length: Math.ceil(rows / batchRows) }, (_, i) => Math.min(batchRows, rows - i * batchRows))

/**
 * `file` read batch by batch, with 1, 3 and many rows a batch (or `batchRows`), gives
 * `expected` (by default the whole-file reader's table): the schema (names, types,
 * nullability), the row count, and every value. `exactSizes`: every batch but the last
 * has `batchRows` rows (the row formats); otherwise at most that (Arrow keeps the
 * file's batches).
 */
export const expectSameAsWhole = async (
  file: string,
  format: Format,
  options: { readonly expected?: Table; readonly exactSizes?: boolean; readonly batchRows?: ReadonlyArray<number> } = {}
): Promise<Table> => {
  const whole = options.expected ?? await readWhole(file, format)
  for (const batchRows of options.batchRows ?? [1, 3, 1_000_000]) {
    const { opened, batches } = await readStreamed(file, format, batchRows)
    expect(describeSchema(opened.schema)).toEqual(describeSchema(whole.schema))
    expect(opened.rows).toBe(whole.numRows)
    const sizes = batches.map((batch) => batch.numRows)
    if (options.exactSizes ?? true) expect(sizes).toEqual(expectedSizes(whole.numRows, batchRows))
    else expect(sizes.every((size) => size <= batchRows)).toBe(true)
    // Table's constructor refuses a batch whose schema differs from the one given.
    const table = new Table(whole.schema, batches)
    expect(table.numRows).toBe(whole.numRows)
    expect(rowsOf(table)).toEqual(rowsOf(whole))
  }
  return whole
}
