/**
 * A seeded shuffle of a split that need not fit in memory, in exactly the order of
 * Hugging Face datasets' `Dataset.shuffle(seed=S)`: numpy's `default_rng(S).permutation(n)`.
 *
 * The permutation itself is n × 4 bytes. The rows are gathered a window of output
 * positions at a time: a window holds as many rows as fit in `windowBytes`, and one
 * pass over the input file (read a record batch at a time) picks up every row the
 * window needs. A split that fits in one window is shuffled in a single pass, as
 * a whole table in memory would be; a larger one takes a pass per window.
 */
import { type RecordBatch, Table } from "apache-arrow"
import { Effect, Stream } from "effect"
import { gatherBatch } from "./arrow.ts"
import type { SplitInput } from "./dataset.ts"
import type { StageError } from "./errors.ts"
import { permutation } from "./random.ts"

/** Bytes of rows a window gathers at once: with the window's re-ordered copy, about twice this is held. */
export const WINDOW_BYTES = 128 * 1024 * 1024

/**
 * Output rows per window: as many as `windowBytes` holds at the split's mean row size, at
 * least one, and few enough that rows × window stays below 2^53 (the sort keys are exact).
 */
export const windowRows = (input: Pick<SplitInput, "rows" | "bytes">, windowBytes: number): number =>
  Math.max(1, Math.min(input.rows, Math.floor(windowBytes / Math.max(1, input.bytes / Math.max(1, input.rows))), Math.floor(2 ** 53 / Math.max(1, input.rows)) - 1))

/** How many passes over the input a shuffle takes. */
export const shufflePasses = (input: Pick<SplitInput, "rows" | "bytes">, windowBytes: number = WINDOW_BYTES): number =>
  input.rows === 0 ? 1 : Math.ceil(input.rows / windowRows(input, windowBytes))

/** The rows of `input` in the order of `permutation(rows, seed)`, a window at a time. */
export const shuffledBatches = (
  input: SplitInput,
  seed: number,
  windowBytes: number = WINDOW_BYTES
): Stream.Stream<RecordBatch, StageError> => {
  const order = permutation(input.rows, seed)
  const size = windowRows(input, windowBytes)
  const windows = shufflePasses(input, windowBytes)
  return Stream.range(0, windows - 1).pipe(
    Stream.filter(() => input.rows > 0),
    Stream.mapEffect((window) => gatherWindow(input, order.subarray(window * size, Math.min(input.rows, (window + 1) * size))))
  )
}

/**
 * The rows `sources` names, in that order, read in one pass. Each (source, position)
 * pair is packed into one float (source × window + position, exact below 2^53) so that a
 * native numeric sort puts them in file order.
 */
const gatherWindow = (input: SplitInput, sources: Uint32Array) =>
  Effect.gen(function* () {
    const width = sources.length
    const keys = new Float64Array(width)
    for (let position = 0; position < width; position++) keys[position] = sources[position]! * width + position
    keys.sort()
    const pieces: Array<RecordBatch> = []
    // Where each row of `pieces`, in order, goes in the window.
    const positions = new Int32Array(width)
    let next = 0
    let firstRow = 0
    yield* Stream.runForEach(
      input.batches,
      (batch) =>
        Effect.sync(() => {
          const end = firstRow + batch.numRows
          const local: Array<number> = []
          for (; next < width; next++) {
            const key = keys[next]!
            const source = Math.floor(key / width)
            if (source >= end) break
            local.push(source - firstRow)
            positions[next] = key - source * width
          }
          if (local.length > 0) pieces.push(gatherBatch(new Table(batch.schema, [batch]), local))
          firstRow = end
        })
    )
    // `positions` maps rows read to window places; its inverse reads them in window order.
    const inverse = new Int32Array(width)
    for (let row = 0; row < width; row++) inverse[positions[row]!] = row
    return gatherBatch(new Table(input.schema, pieces), inverse)
  })
