/**
 * Prompt and reference texts read from a dataset split: one column, or a template
 * filled from several (`src/template.ts`, the tokenize stage's `{column}` syntax),
 * so that a model is prompted exactly as it was trained.
 */
import { DataType, type Table } from "apache-arrow"
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import type { TemplatePart } from "../template.ts"

/** Where each row's prompt comes from. */
export type PromptSource =
  | { readonly _tag: "Column"; readonly column: string }
  | { readonly _tag: "Template"; readonly parts: ReadonlyArray<TemplatePart> }

const sourceColumns = (source: PromptSource): ReadonlyArray<string> =>
  source._tag === "Column" ? [source.column] : source.parts.flatMap((part) => ("column" in part ? [part.column] : []))

/** Fails naming the split's columns when one of `columns` is missing or not text. */
const requireTextColumns = (table: Table, split: string, columns: ReadonlyArray<string>) => {
  const fields = new Map(table.schema.fields.map((f) => [f.name, f]))
  const missing = [...new Set(columns)].filter((c) => !fields.has(c))
  if (missing.length > 0) {
    return Effect.fail(new StageError({
      message: `split "${split}" has no column ${missing.map((c) => `"${c}"`).join(", ")} (columns: ${[...fields.keys()].join(", ")})${
        fields.has("input_ids") ? ": keep the text columns when tokenizing (tokenize's `keep: [question, answer]`)" : ""
      }`
    }))
  }
  const notText = columns.find((c) => !DataType.isUtf8(fields.get(c)!.type) && !DataType.isLargeUtf8(fields.get(c)!.type))
  return notText === undefined
    ? Effect.void
    : Effect.fail(new StageError({ message: `column "${notText}" of split "${split}" is ${fields.get(notText)!.type}, not text` }))
}

/** The first `limit` cells of a text column. */
export const columnTexts = (table: Table, split: string, column: string, limit: number) =>
  Effect.gen(function* () {
    yield* requireTextColumns(table, split, [column])
    const vector = table.getChild(column)!
    const texts: Array<string> = []
    for (let i = 0; i < Math.min(limit, table.numRows); i++) {
      const value: unknown = vector.get(i)
      if (typeof value !== "string") return yield* new StageError({ message: `split "${split}" row ${i}: "${column}" is null` })
      texts.push(value)
    }
    return texts
  })

/** The first `limit` prompts of a split. */
export const promptTexts = (table: Table, split: string, source: PromptSource, limit: number) =>
  Effect.gen(function* () {
    if (source._tag === "Column") return yield* columnTexts(table, split, source.column, limit)
    yield* requireTextColumns(table, split, sourceColumns(source))
    const cells = new Map<string, ReadonlyArray<string>>()
    for (const column of sourceColumns(source)) cells.set(column, yield* columnTexts(table, split, column, limit))
    return Array.from({ length: Math.min(limit, table.numRows) }, (_, row) =>
      source.parts.map((part) => ("literal" in part ? part.literal : cells.get(part.column)![row]!)).join(""))
  })
