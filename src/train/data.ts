/**
 * Training examples from a tokenized split, and the order the trainer visits
 * them: a fresh seeded permutation each epoch (numpy-compatible, like the rest of
 * our shuffles), cut into micro-batches. The order is a pure function of the seed
 * and the epoch, so a resumed run sees exactly the batches an uninterrupted one would.
 */
import type { Table, Vector } from "apache-arrow"
import { Effect } from "effect"
import type { DatasetArtifact } from "../artifact.ts"
import { readSplit } from "../dataset.ts"
import { StageError } from "../errors.ts"
import { permutation } from "../random.ts"
import type { Example } from "./collate.ts"

const column = (table: Table, name: string, split: string): Effect.Effect<Vector, StageError> => {
  const vector = table.getChild(name)
  return vector === null
    ? Effect.fail(new StageError({
      message: `split "${split}" has no column "${name}" (columns: ${table.schema.fields.map((f) => f.name).join(", ")}): train on the output of a tokenize stage`
    }))
    : Effect.succeed(vector)
}

/** `input_ids` and `labels` of a split, as typed arrays (copied out of the Arrow buffers). */
export const loadExamples = (dataset: DatasetArtifact, split: string) =>
  Effect.gen(function* () {
    const table = yield* readSplit(dataset, split)
    const ids = yield* column(table, "input_ids", split)
    const labels = yield* column(table, "labels", split)
    const examples: Array<Example> = []
    for (let i = 0; i < table.numRows; i++) {
      const inputIds = Int32Array.from((ids.get(i) as Vector).toArray() as Int32Array)
      const rowLabels = Int32Array.from((labels.get(i) as Vector).toArray() as Int32Array)
      if (inputIds.length !== rowLabels.length) {
        return yield* new StageError({ message: `split "${split}" row ${i}: input_ids has ${inputIds.length} ids but labels has ${rowLabels.length}` })
      }
      if (inputIds.length > 0) examples.push({ inputIds, labels: rowLabels })
    }
    return examples
  })

/** The examples of micro-batch `index` in `epoch`. */
export const microBatch = <T = Example>(
  examples: ReadonlyArray<T>,
  options: { readonly seed: number; readonly epoch: number; readonly batchSize: number; readonly shuffle: boolean },
  index: number,
  orderCache: Map<number, Uint32Array>
): ReadonlyArray<T> => {
  let order = orderCache.get(options.epoch)
  if (order === undefined) {
    order = options.shuffle ? permutation(examples.length, options.seed + options.epoch) : Uint32Array.from(examples.keys())
    orderCache.clear()
    orderCache.set(options.epoch, order)
  }
  const start = index * options.batchSize
  return Array.from(order.subarray(start, Math.min(order.length, start + options.batchSize)), (i) => examples[i]!)
}

export const microBatchesPerEpoch = (examples: number, batchSize: number): number => Math.ceil(examples / batchSize)
