/**
 * The reference model's log-probabilities of every pair, computed once before training
 * (TRL's `precompute_ref_log_probs`) and kept as a dataset: one row per pair, in the
 * split's order, with each completion's summed log-probability and its scored token
 * count (IPO's mean is the one divided by the other). The reference is the starting
 * policy: with an adapter, the base with the adapter off, as TRL does with PEFT.
 */
import { Field, Float64, Int32, Schema as ArrowSchema, Table, vectorFromArray } from "apache-arrow"
import { Effect } from "effect"
import type { DatasetArtifact } from "../artifact.ts"
import { readSplit } from "../dataset.ts"
import { StageError } from "../errors.ts"
import type { LayerwiseModel } from "../train/layerwise.ts"
import type { DpoLossType, PairLogps } from "./objective.ts"
import { collatePairs, type PairExample } from "./pairs.ts"
import { batchRowLogps } from "./update.ts"

const REFERENCE_COLUMNS = ["ref_chosen_logps", "ref_rejected_logps", "chosen_tokens", "rejected_tokens"] as const

export interface ReferenceRow {
  readonly chosen: number
  readonly rejected: number
  readonly chosenTokens: number
  readonly rejectedTokens: number
}

/** Every pair's reference log-probabilities, `batchSize` pairs at a time. */
export const referenceRows = (
  model: LayerwiseModel,
  pairs: ReadonlyArray<PairExample>,
  options: { readonly batchSize: number; readonly padId: number; readonly maxLength: number | undefined },
  onBatch: (done: number, total: number) => Effect.Effect<void>
) =>
  Effect.gen(function* () {
    const rows: Array<ReferenceRow> = []
    for (let start = 0; start < pairs.length; start += options.batchSize) {
      const chunk = pairs.slice(start, start + options.batchSize)
      const batch = collatePairs(chunk, options.padId, options.maxLength)
      const computed = yield* Effect.try({
        try: () => {
          // Sums (the sigmoid loss's), with the counts that make IPO's means.
          const { logps, counts } = batchRowLogps(model, "sigmoid", batch, { adapterOff: model.adapter !== undefined })
          return chunk.map((_, i) => ({ chosen: logps[i]!, rejected: logps[chunk.length + i]!, chosenTokens: counts[i]!, rejectedTokens: counts[chunk.length + i]! }))
        },
        catch: (error) => new StageError({ message: `the reference model's log-probabilities failed: ${(error as Error).message}`, cause: error })
      })
      rows.push(...computed)
      yield* onBatch(rows.length, pairs.length)
    }
    return rows
  })

export const referenceTable = (rows: ReadonlyArray<ReferenceRow>): Table => {
  const fields = REFERENCE_COLUMNS.map((name) => new Field(name, name.endsWith("_tokens") ? new Int32() : new Float64(), false))
  const values = [rows.map((r) => r.chosen), rows.map((r) => r.rejected), rows.map((r) => r.chosenTokens), rows.map((r) => r.rejectedTokens)]
  return new Table(new ArrowSchema(fields), Object.fromEntries(fields.map((field, i) => [field.name, vectorFromArray(values[i]!, field.type)])))
}

/** A split of the reference dataset, read back. */
export const readReference = (dataset: DatasetArtifact, split: string, expectedRows: number) =>
  Effect.gen(function* () {
    const table = yield* readSplit(dataset, split)
    if (table.numRows !== expectedRows) {
      return yield* new StageError({ message: `the reference log-probabilities of split "${split}" have ${table.numRows} rows for ${expectedRows} pairs` })
    }
    const [chosen, rejected, chosenTokens, rejectedTokens] = REFERENCE_COLUMNS.map((name) => table.getChild(name)!.toArray() as ArrayLike<number>)
    return Array.from({ length: table.numRows }, (_, i): ReferenceRow => ({
      chosen: chosen![i]!,
      rejected: rejected![i]!,
      chosenTokens: chosenTokens![i]!,
      rejectedTokens: rejectedTokens![i]!
    }))
  })

/** A pair's reference log-probabilities for a loss type: sums, or (IPO) means over the completion's tokens. */
export const referenceLogps = (lossType: DpoLossType, row: ReferenceRow): PairLogps =>
  lossType === "ipo"
    ? { chosen: row.chosen / Math.max(1, row.chosenTokens), rejected: row.rejected / Math.max(1, row.rejectedTokens) }
    : { chosen: row.chosen, rejected: row.rejected }

