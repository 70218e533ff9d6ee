/**
 * Training examples from a tokenized split, and the order the trainer visits
 * them: a fresh seeded permutation each epoch (numpy-compatible, like the rest of
 * our shuffles), cut into micro-batches. The order is a pure function of the seed
 * and the epoch, so a resumed run sees exactly the batches an uninterrupted one would.
 */
import { Effect } from "effect"
import { batchOf } from "../arrow.ts"
import { IpcFileReader } from "../arrow-file.ts"
import type { DatasetArtifact } from "../artifact.ts"
import { damagedEntry } from "../dataset.ts"
import { StageError } from "../errors.ts"
import { permutation } from "../random.ts"
import type { Example } from "./collate.ts"

/** Rows by index: an array, or examples read from disk as they are needed. */
export interface Rows<T> {
  readonly length: number
  readonly at: (index: number) => T | undefined
}

/** A split's training examples (rows with at least one token), read from its Arrow files on demand. */
export interface Examples extends Rows<Example> {
  /** The longest example, in tokens. */
  readonly maxLength: number
  /** The first `count` examples. */
  readonly take: (count: number) => Examples
}

/** Examples held in memory (DPO's pairs, tests). */
export const examplesOf = (rows: ReadonlyArray<Example>): Examples => ({
  length: rows.length,
  at: (index) => rows[index],
  maxLength: rows.reduce((max, e) => Math.max(max, e.inputIds.length), 0),
  take: (count) => examplesOf(rows.slice(0, count))
})

/** One record batch's examples: its non-empty rows and their lengths. */
interface BatchIndex {
  readonly file: number
  readonly batch: number
  readonly rows: Int32Array
  readonly lengths: Int32Array
}

/**
 * `input_ids` and `labels` of a split, opened for random access: an index of the rows
 * with tokens is built from the columns' offsets (8 bytes an example, in typed arrays),
 * and each example's ids are read from the file when it is asked for. The files stay
 * open until the scope closes.
 */
export const openExamples = (dataset: DatasetArtifact, split: string) =>
  Effect.gen(function* () {
    const files = dataset.splits[split] ?? []
    const columns = yield* Effect.forEach(files, (file) =>
      Effect.acquireRelease(
        Effect.try({
          try: () => IpcFileReader.open(file.path),
          catch: (cause) => new StageError({ message: `cannot read ${file.path}: ${(cause as Error).message}`, cause })
        }),
        (reader) => Effect.sync(() => reader.close())
      ).pipe(Effect.flatMap((reader) => exampleColumns(reader, split))))
    const index = yield* Effect.try({ try: () => buildIndex(files, columns, split), catch: (cause) => damaged(cause) })
    // Examples before each batch of the index, for a binary search.
    const before = new Float64Array(index.length + 1)
    index.forEach((b, i) => (before[i + 1] = before[i]! + b.rows.length))
    const at = (example: number): Example | undefined => {
      if (!(example >= 0 && example < before[index.length]!)) return undefined
      const found = batchOf(before.subarray(0, index.length), example)
      const b = index[found]!
      const row = b.rows[example - before[found]!]!
      const { ids, labels } = columns[b.file]!
      return { inputIds: ids.cell(b.batch, row), labels: labels.cell(b.batch, row) }
    }
    const maxLength = (count: number) => {
      let max = 0
      for (let i = 0; i < index.length && before[i]! < count; i++) {
        const lengths = index[i]!.lengths
        for (let k = 0; k < lengths.length && before[i]! + k < count; k++) max = Math.max(max, lengths[k]!)
      }
      return max
    }
    const view = (count: number): Examples => ({
      length: count,
      at: (example) => (example < count ? at(example) : undefined),
      maxLength: maxLength(count),
      take: (n) => view(Math.min(count, n))
    })
    return view(before[index.length]!)
  })

/** The index: a `StageError` for rows whose labels and ids differ; a thrown error for a damaged file. */
const buildIndex = (files: ReadonlyArray<{ readonly path: string; readonly rows: number }>, columns: ReadonlyArray<ExampleColumns>, split: string) => {
  const index: Array<BatchIndex> = []
  let splitRow = 0
  for (const [f, { reader, ids, labels }] of columns.entries()) {
    let fileRows = 0
    for (let b = 0; b < reader.numBatches; b++) {
      const idLengths = ids.lengths(b)
      const labelLengths = labels.lengths(b)
      const rows: Array<number> = []
      for (let r = 0; r < idLengths.length; r++, splitRow++) {
        if (idLengths[r] !== labelLengths[r]) {
          throw new StageError({ message: `split "${split}" row ${splitRow}: input_ids has ${idLengths[r]} ids but labels has ${labelLengths[r]}` })
        }
        if (idLengths[r]! > 0) rows.push(r)
      }
      fileRows += idLengths.length
      const kept = Int32Array.from(rows)
      index.push({ file: f, batch: b, rows: kept, lengths: kept.map((r) => idLengths[r]!) })
    }
    if (fileRows !== files[f]!.rows) throw new Error(`${files[f]!.path} holds ${fileRows} rows where ${files[f]!.rows} were written`)
  }
  return index
}

const damaged = (cause: unknown) =>
  cause instanceof StageError
    ? cause
    : new StageError({ message: damagedEntry((cause as Error).message), cause })

type ExampleColumns = Effect.Effect.Success<ReturnType<typeof exampleColumns>>

const exampleColumns = (reader: IpcFileReader, split: string) =>
  Effect.try({
    try: () => ({ reader, ids: reader.int32Lists("input_ids"), labels: reader.int32Lists("labels") }),
    catch: (cause) =>
      new StageError({
        message: `split "${split}": ${(cause as Error).message} (columns: ${reader.schema.fields.map((f) => f.name).join(", ")}): train on the output of a tokenize stage`,
        cause
      })
  })

/** The examples of micro-batch `index` in `epoch`. */
export const microBatch = <T = Example>(
  examples: Rows<T>,
  options: { readonly seed: number; readonly epoch: number; readonly batchSize: number; readonly shuffle: boolean },
  index: number,
  orderCache: Map<number, Uint32Array>
): ReadonlyArray<T> => {
  let order = orderCache.get(options.epoch)
  if (order === undefined) {
    order = options.shuffle ? permutation(examples.length, options.seed + options.epoch) : Uint32Array.from({ length: examples.length }, (_, i) => i)
    orderCache.clear()
    orderCache.set(options.epoch, order)
  }
  const start = index * options.batchSize
  return Array.from(order.subarray(start, Math.min(order.length, start + options.batchSize)), (i) => examples.at(i)!)
}

export const microBatchesPerEpoch = (examples: number, batchSize: number): number => Math.ceil(examples / batchSize)
