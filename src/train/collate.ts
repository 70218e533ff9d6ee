/**
 * Collation as `DataCollatorForSeq2Seq` does it: right-pad each batch to its
 * longest row, `input_ids` with the pad id, `labels` with -100, and build the
 * attention mask. Also counts the label tokens the loss will average over (after
 * the shift inside the loss), which gradient accumulation needs across micro-batches.
 */
import { IGNORE_INDEX } from "../constants.ts"

export interface Example {
  readonly inputIds: Int32Array
  readonly labels: Int32Array
}

export interface Batch {
  readonly size: number
  readonly length: number
  /** [size × length], row-major */
  readonly inputIds: Int32Array
  readonly labels: Int32Array
  readonly attentionMask: Int32Array
  /** Labels other than -100 at positions 1..T-1: what the shifted loss counts. */
  readonly labelTokens: number
  /** Non-padding tokens: what throughput counts. */
  readonly tokens: number
}


export const collate = (examples: ReadonlyArray<Example>, padId: number): Batch => {
  const length = Math.max(1, ...examples.map((e) => e.inputIds.length))
  const size = examples.length
  const inputIds = new Int32Array(size * length).fill(padId)
  const labels = new Int32Array(size * length).fill(IGNORE_INDEX)
  const attentionMask = new Int32Array(size * length)
  let labelTokens = 0
  let tokens = 0
  examples.forEach((example, row) => {
    const offset = row * length
    inputIds.set(example.inputIds, offset)
    labels.set(example.labels, offset)
    attentionMask.fill(1, offset, offset + example.inputIds.length)
    tokens += example.inputIds.length
    for (let t = 1; t < example.labels.length; t++) if (example.labels[t] !== IGNORE_INDEX) labelTokens++
  })
  return { size, length, inputIds, labels, attentionMask, labelTokens, tokens }
}
