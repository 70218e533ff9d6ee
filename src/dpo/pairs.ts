/**
 * Preference pairs as token ids, and their micro-batches as TRL's DPOTrainer builds
 * them (trl 0.12, `tokenize_row` and `concatenated_forward`):
 *
 * - the prompt keeps its last `max_prompt_length` tokens, each completion its first
 *   `max_completion_length` (a completion's EOS is part of it, added when it was tokenized);
 * - a pair gives two rows, prompt + chosen and prompt + rejected, each cut to its first
 *   `max_length` tokens; the prompt is masked from the loss (labels -100);
 * - a micro-batch of P pairs is 2P rows, the chosen ones first, right-padded.
 */
import { IGNORE_INDEX } from "../constants.ts"
import { type Batch, collate, type Example } from "../train/collate.ts"

export interface PairExample {
  readonly prompt: Int32Array
  /** The completions, each with its EOS. */
  readonly chosen: Int32Array
  readonly rejected: Int32Array
}

export interface Truncation {
  readonly maxLength: number | undefined
  readonly maxPromptLength: number | undefined
  readonly maxCompletionLength: number | undefined
}

/** TRL's cuts: the end of the prompt, the start of each completion. */
export const truncatePair = (pair: PairExample, cut: Truncation): PairExample => ({
  prompt: cut.maxPromptLength === undefined || pair.prompt.length <= cut.maxPromptLength ? pair.prompt : pair.prompt.slice(pair.prompt.length - cut.maxPromptLength),
  chosen: cut.maxCompletionLength === undefined ? pair.chosen : pair.chosen.slice(0, cut.maxCompletionLength),
  rejected: cut.maxCompletionLength === undefined ? pair.rejected : pair.rejected.slice(0, cut.maxCompletionLength)
})

/** One row: prompt + completion, the prompt masked, cut to `maxLength` (keeping the start). */
const row = (prompt: Int32Array, completion: Int32Array, maxLength: number | undefined): Example => {
  const full = prompt.length + completion.length
  const length = maxLength === undefined ? full : Math.min(full, maxLength)
  const inputIds = new Int32Array(length)
  const labels = new Int32Array(length).fill(IGNORE_INDEX)
  for (let t = 0; t < length; t++) {
    const completionAt = t - prompt.length
    inputIds[t] = completionAt < 0 ? prompt[t]! : completion[completionAt]!
    if (completionAt >= 0) labels[t] = inputIds[t]!
  }
  return { inputIds, labels }
}

/** The rows of a micro-batch: every chosen row, then every rejected row (pairs are already truncated but for `maxLength`). */
const pairRows = (pairs: ReadonlyArray<PairExample>, maxLength: number | undefined): Array<Example> => [
  ...pairs.map((p) => row(p.prompt, p.chosen, maxLength)),
  ...pairs.map((p) => row(p.prompt, p.rejected, maxLength))
]

export const collatePairs = (pairs: ReadonlyArray<PairExample>, padId: number, maxLength: number | undefined): Batch =>
  collate(pairRows(pairs, maxLength), padId)
