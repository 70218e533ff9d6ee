/**
 * Preference pairs from a dataset split, as TRL's DPOTrainer reads them (trl 0.12):
 *
 * - text columns `prompt`, `chosen` and `rejected`, tokenized with the model's tokenizer
 *   without special tokens, an EOS appended to each completion (`tokenize_row`); with
 *   `chatTemplate`, the prompt is rendered as a user turn with the generation prompt and
 *   each completion as the rest of the rendered conversation (the assistant's turn);
 * - or the columns TRL's own tokenization writes, `prompt_input_ids`,
 *   `chosen_input_ids` and `rejected_input_ids`, used as they are (their completions
 *   already end with EOS).
 *
 * Then TRL's truncation (pairs.ts). A pair whose completion is cut to nothing cannot be
 * scored, and is an error naming its row.
 */
import type { Table, Vector } from "apache-arrow"
import { Effect } from "effect"
import type { DatasetArtifact } from "../artifact.ts"
import { readSplit } from "../dataset.ts"
import { StageError } from "../errors.ts"
import { chatTurns, type Tokenizer } from "../tokenizer.ts"
import { type PairExample, type Truncation, truncatePair } from "./pairs.ts"

const TEXT_COLUMNS = ["prompt", "chosen", "rejected"] as const
const ID_COLUMNS = ["prompt_input_ids", "chosen_input_ids", "rejected_input_ids"] as const

const stageError = (e: { readonly message: string }) => new StageError({ message: e.message })

const has = (table: Table, names: ReadonlyArray<string>) => names.every((name) => table.getChild(name) !== null)

/** The user turn and the rest of the conversation, as tokenize's `chat_template` splits them. */
const chatParts = (tokenizer: Tokenizer, prompt: string, completion: string) =>
  Effect.gen(function* () {
    const turns = yield* chatTurns(tokenizer, prompt, completion).pipe(Effect.mapError(stageError))
    if (turns === undefined) {
      return yield* new StageError({
        message: "the chat template does not render the conversation as the prompt (with the generation prompt) followed by the reply: leave chat_template off"
      })
    }
    return turns
  })

const PLAIN = { addSpecialTokens: false } as const

interface PairOptions {
  readonly tokenizer: Tokenizer
  readonly chatTemplate: boolean
  readonly truncation: Truncation
}

/** A split's pairs, truncated; checked so that every pair has a completion token to score. */
export const loadPairs = (dataset: DatasetArtifact, split: string, options: PairOptions) =>
  Effect.gen(function* () {
    const table = yield* readSplit(dataset, split)
    const columns = table.schema.fields.map((f) => f.name).join(", ")
    let pairs: Array<PairExample>
    if (has(table, ID_COLUMNS)) {
      const [prompt, chosen, rejected] = ID_COLUMNS.map((name) => table.getChild(name)!) as [Vector, Vector, Vector]
      pairs = Array.from({ length: table.numRows }, (_, i) => ({
        prompt: ids(prompt, i),
        chosen: ids(chosen, i),
        rejected: ids(rejected, i)
      }))
    } else if (has(table, TEXT_COLUMNS)) {
      const eos = options.tokenizer.eosTokenId
      if (eos === undefined) return yield* new StageError({ message: "the tokenizer has no EOS token, which ends each completion: give pre-tokenized columns (prompt_input_ids, …)" })
      const textColumns = TEXT_COLUMNS.map((name) => table.getChild(name)!)
      pairs = []
      for (let i = 0; i < table.numRows; i++) {
        const texts = textColumns.map((column) => {
          const value = column.get(i) as unknown
          return typeof value === "string" ? value : undefined
        })
        const missing = texts.findIndex((t) => t === undefined)
        if (missing >= 0) return yield* new StageError({ message: `split "${split}" row ${i}: ${TEXT_COLUMNS[missing]} is not text` })
        const [p, c, r] = texts as [string, string, string]
        const encodeWithEos = (text: string) => Int32Array.from([...options.tokenizer.encode(text, PLAIN), eos])
        if (options.chatTemplate) {
          const [head, chosenTurn] = yield* chatParts(options.tokenizer, p, c)
          const [, rejectedTurn] = yield* chatParts(options.tokenizer, p, r)
          pairs.push({ prompt: options.tokenizer.encode(head, PLAIN), chosen: encodeWithEos(chosenTurn), rejected: encodeWithEos(rejectedTurn) })
        } else {
          pairs.push({ prompt: options.tokenizer.encode(p, PLAIN), chosen: encodeWithEos(c), rejected: encodeWithEos(r) })
        }
        if (i % 256 === 255) yield* Effect.yieldNow()
      }
    } else {
      return yield* new StageError({
        message: `split "${split}" has neither text columns ${TEXT_COLUMNS.join(", ")} nor token columns ${ID_COLUMNS.join(", ")} (columns: ${columns})`
      })
    }
    const truncated = pairs.map((pair) => truncatePair(pair, options.truncation))
    const maxLength = options.truncation.maxLength
    for (const [i, pair] of truncated.entries()) {
      for (const side of ["chosen", "rejected"] as const) {
        // Scored tokens: position 0 has nothing before it, so with an empty prompt the first completion token is not scored.
        const kept = maxLength === undefined ? pair[side].length : Math.min(pair[side].length, maxLength - pair.prompt.length)
        const room = pair.prompt.length === 0 ? kept - 1 : kept
        if (room <= 0) {
          return yield* new StageError({
            message: `split "${split}" row ${i}: the ${side} completion ${
              pair[side].length === 0
                ? "is empty"
                : kept <= 0
                ? `starts after max_length (${maxLength}; the prompt has ${pair.prompt.length} tokens)`
                : "has one token and the prompt none (the first token is never scored)"
            }: nothing of it can be scored. Raise max_length, lower max_prompt_length, or give the pair a prompt`
          })
        }
      }
    }
    return truncated
  })

const ids = (column: Vector, row: number): Int32Array => {
  const cell = column.get(row) as Vector | null
  // Int64 lists (Arrow files written elsewhere) hold bigints.
  return cell === null ? new Int32Array(0) : Int32Array.from(cell.toArray() as ArrayLike<number | bigint>, (id) => Number(id))
}
