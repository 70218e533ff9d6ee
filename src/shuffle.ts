/**
 * A seeded shuffle of a split that need not fit in memory, in exactly the order of
 * Hugging Face datasets' `Dataset.shuffle(seed=S)`: numpy's `default_rng(S).permutation(n)`.
 *
 * The permutation itself is n × 4 bytes. The output is cut into windows of rows that fit
 * in `windowBytes`. A split that fits in one window is gathered in one pass over its
 * file, as a whole table in memory would be. A larger one is shuffled in two passes,
 * as an external sort would: the first sends each row to its window's bucket file (rows
 * keep their input order there), the second reads one bucket at a time and puts its
 * rows in their places. Each row is read twice and written twice, whatever the size.
 */
import { type RecordBatch, Table } from "apache-arrow"
import { Effect, Stream } from "effect"
import { mkdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { gatherBatch } from "./arrow.ts"
import { IpcFileReader, IpcFileWriter } from "./arrow-file.ts"
import { damagedEntry, type SplitInput } from "./dataset.ts"
import { StageError } from "./errors.ts"
import { permutation } from "./random.ts"

/** Bytes of rows a window gathers at once: with the window's re-ordered copy, about twice this is held. */
export const WINDOW_BYTES = 128 * 1024 * 1024

/** Open bucket files at most: past that, windows grow instead (beyond 64 GiB of rows at the default). */
const MAX_BUCKETS = 512

/**
 * Output rows per window: as many as `windowBytes` holds at the split's mean row size, at
 * least one; few enough that rows × window stays below 2^53 (the sort keys are exact);
 * many enough for at most `MAX_BUCKETS` windows.
 */
export const windowRows = (input: Pick<SplitInput, "rows" | "bytes">, windowBytes: number): number => {
  const byBytes = Math.floor(windowBytes / Math.max(1, input.bytes / Math.max(1, input.rows)))
  const exact = Math.floor(2 ** 53 / Math.max(1, input.rows)) - 1
  return Math.max(1, Math.min(input.rows, exact, Math.max(byBytes, Math.ceil(input.rows / MAX_BUCKETS))))
}

/** How many windows a shuffle cuts its output into. */
export const shuffleWindows = (input: Pick<SplitInput, "rows" | "bytes">, windowBytes: number = WINDOW_BYTES): number =>
  input.rows === 0 ? 1 : Math.ceil(input.rows / windowRows(input, windowBytes))

/**
 * The rows of `input` in the order of `permutation(rows, seed)`. A split larger than
 * one window puts its buckets in `tempDir` (made, and removed as they are read).
 */
export const shuffledBatches = (
  input: SplitInput,
  seed: number,
  tempDir: string,
  windowBytes: number = WINDOW_BYTES
): Stream.Stream<RecordBatch, StageError> => {
  if (input.rows === 0) return Stream.empty
  const order = permutation(input.rows, seed)
  const size = windowRows(input, windowBytes)
  const windows = Math.ceil(input.rows / size)
  const sources = (window: number) => order.subarray(window * size, Math.min(input.rows, (window + 1) * size))
  if (windows === 1) return Stream.fromEffect(gatherWindow(input, order))
  return Stream.unwrapScoped(Effect.gen(function* () {
    yield* Effect.acquireRelease(
      Effect.try({ try: () => mkdirSync(tempDir, { recursive: true }), catch: (cause) => tempError(tempDir, cause) }),
      () => Effect.sync(() => rmSync(tempDir, { recursive: true, force: true }))
    )
    yield* scatter(input, order, size, windows, tempDir, windowBytes)
    return Stream.range(0, windows - 1).pipe(
      Stream.mapEffect((window) => gatherBucket(join(tempDir, bucketName(window)), sources(window))),
      Stream.tap((batch) => input.advance(batch.numRows))
    )
  }))
}

const bucketName = (window: number) => `bucket-${String(window).padStart(5, "0")}.arrow`

const tempError = (path: string, cause: unknown) =>
  new StageError({ message: `cannot use ${path} for the shuffle: ${cause instanceof Error ? cause.message : String(cause)}`, cause })

/** The first pass: every row to its window's bucket, in input order. */
const scatter = (input: SplitInput, order: Uint32Array, size: number, windows: number, dir: string, windowBytes: number) =>
  Effect.gen(function* () {
    // The window each input row goes to: another 4 bytes a row.
    const windowOf = new Uint32Array(input.rows)
    for (let position = 0; position < order.length; position++) windowOf[order[position]!] = Math.floor(position / size)
    // Rows a bucket holds before it writes them: all buckets together about a quarter window.
    const rowBytes = Math.max(1, input.bytes / input.rows)
    const bucketRows = Math.max(1, Math.floor(windowBytes / (4 * windows * rowBytes)))
    const writers: Array<IpcFileWriter> = []
    yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          for (let window = 0; window < windows; window++) writers.push(IpcFileWriter.create(join(dir, bucketName(window)), input.schema, bucketRows))
        },
        catch: (cause) => tempError(dir, cause)
      }),
      () => Effect.sync(() => writers.forEach((writer) => writer.abort()))
    )
    let firstRow = 0
    yield* Stream.runForEach(input.batches, (batch) =>
      firstRow + batch.numRows > input.rows
        ? Effect.fail(new StageError({ message: damagedEntry(`split "${input.name}" holds more than the ${input.rows} rows its files recorded`) }))
        : Effect.try({
        try: () => {
          const local: Array<Array<number>> = Array.from({ length: windows }, () => [])
          for (let row = 0; row < batch.numRows; row++) local[windowOf[firstRow + row]!]!.push(row)
          const table = new Table(batch.schema, [batch])
          local.forEach((rows, window) => {
            if (rows.length > 0) writers[window]!.write(gatherBatch(table, rows))
          })
          firstRow += batch.numRows
        },
        catch: (cause) => tempError(dir, cause)
      }))
    yield* Effect.try({ try: () => writers.forEach((writer) => writer.finish()), catch: (cause) => tempError(dir, cause) })
  }).pipe(Effect.scoped)

/** The second pass: a bucket read whole, its rows put in the window's order, the file removed. */
const gatherBucket = (path: string, sources: Uint32Array) =>
  Effect.try({
    try: () => {
      const reader = IpcFileReader.open(path)
      let batches: Array<RecordBatch>
      try {
        batches = Array.from({ length: reader.numBatches }, (_, b) => reader.readBatch(b))
      } finally {
        reader.close()
      }
      const schema = reader.schema
      rmSync(path)
      // The bucket holds the window's rows in input order, which is its sources sorted.
      return gatherBatch(new Table(schema, batches), arrivalToWindow(sources))
    },
    catch: (cause) => tempError(path, cause)
  })

/**
 * For sources listed in window order, the index in input order (the order they were
 * read) of each window position's row. Each (source, position) pair is packed into one
 * float (source × window + position, exact below 2^53) so that a native sort orders them.
 */
const arrivalToWindow = (sources: Uint32Array): Int32Array => {
  const width = sources.length
  const keys = new Float64Array(width)
  for (let position = 0; position < width; position++) keys[position] = sources[position]! * width + position
  keys.sort()
  const rowFor = new Int32Array(width)
  for (let arrival = 0; arrival < width; arrival++) {
    const key = keys[arrival]!
    rowFor[key - Math.floor(key / width) * width] = arrival
  }
  return rowFor
}

/** A split that fits in one window: read whole, then gathered in the permutation's order. */
const gatherWindow = (input: SplitInput, order: Uint32Array) =>
  Effect.map(Stream.runCollect(input.batches), (batches) => gatherBatch(new Table(input.schema, [...batches]), order))
