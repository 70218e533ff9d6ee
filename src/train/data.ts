/**
 * Training examples from a tokenized split, and the order the trainer visits
 * them: a fresh seeded permutation each epoch (numpy-compatible, like the rest of
 * our shuffles), cut into micro-batches. The order is a pure function of the seed
 * and the epoch, so a resumed run sees exactly the batches an uninterrupted one would.
 */
import { Effect } from "effect"
import { IpcFileReader } from "../arrow-file.ts"
import type { DatasetArtifact } from "../artifact.ts"
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

/**
 * `input_ids` and `labels` of a split, opened for random access: an index of the rows
 * with tokens is built from the columns' offsets (4 bytes a row per file batch read),
 * and each example's ids are read from the file when it is asked for. Memory does not
 * grow with the split. The files stay open until the scope closes.
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
    // Each example's file, batch and row, and its length.
    const where = { file: [] as Array<number>, batch: [] as Array<number>, row: [] as Array<number>, length: [] as Array<number> }
    let splitRow = 0
    for (const [f, { reader, ids, labels }] of columns.entries()) {
      for (let b = 0; b < reader.numBatches; b++) {
        const idLengths = ids.lengths(b)
        const labelLengths = labels.lengths(b)
        for (let r = 0; r < idLengths.length; r++, splitRow++) {
          if (idLengths[r] !== labelLengths[r]) {
            return yield* new StageError({ message: `split "${split}" row ${splitRow}: input_ids has ${idLengths[r]} ids but labels has ${labelLengths[r]}` })
          }
          if (idLengths[r]! === 0) continue
          where.file.push(f)
          where.batch.push(b)
          where.row.push(r)
          where.length.push(idLengths[r]!)
        }
      }
    }
    const at = (index: number): Example | undefined => {
      if (index < 0 || index >= where.file.length) return undefined
      const { ids, labels } = columns[where.file[index]!]!
      return { inputIds: ids.cell(where.batch[index]!, where.row[index]!), labels: labels.cell(where.batch[index]!, where.row[index]!) }
    }
    const view = (count: number): Examples => ({
      length: count,
      at: (index) => (index < count ? at(index) : undefined),
      maxLength: where.length.slice(0, count).reduce((max, n) => Math.max(max, n), 0),
      take: (n) => view(Math.min(count, n))
    })
    return view(where.file.length)
  })

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
