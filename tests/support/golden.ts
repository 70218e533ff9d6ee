/**
 * The qwen2-tiny fixture's golden batch (../shared/fixtures/qwen2-tiny/golden.json, from
 * transformers), in the forms the tests feed it: as the model takes it (padded rows and
 * their mask, labels), and as the trainer collates it (the same rows, right-padded).
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { type Batch, collate } from "../../src/train/collate.ts"
import { SHARED } from "../helpers.ts"

export const QWEN2_TINY = join(SHARED, "fixtures/qwen2-tiny")

export interface GoldenBatch {
  readonly input_ids: Array<Array<number>>
  readonly attention_mask: Array<Array<number>>
  readonly labels: Array<Array<number>>
  readonly lengths: Array<number>
}

/** golden.json, typed as far as the tests read it (each test names what else it reads). */
export const goldenJson = <T>(): T & { readonly batch: GoldenBatch } => JSON.parse(readFileSync(join(QWEN2_TINY, "golden.json"), "utf8")) as T & { readonly batch: GoldenBatch }

const { batch } = goldenJson<object>()

/** The batch as the model takes it. */
export const goldenTokens = {
  batchSize: batch.input_ids.length,
  seqLen: batch.input_ids[0]!.length,
  inputIds: Int32Array.from(batch.input_ids.flat()),
  attentionMask: Int32Array.from(batch.attention_mask.flat())
}
export const goldenLabels = Int32Array.from(batch.labels.flat())

/** The batch as the trainer collates it. */
export const goldenCollated: Batch = collate(batch.input_ids.map((ids, i) => ({
  inputIds: Int32Array.from(ids.slice(0, batch.lengths[i])),
  labels: Int32Array.from(batch.labels[i]!.slice(0, batch.lengths[i]))
})), 0)
