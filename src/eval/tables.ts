/**
 * The Arrow tables evaluation and generation write: per-example rows, a summary row
 * per model, and generations. Each schema is fixed here, with its nullability.
 */
import { Bool, Field, Float64, Int32, Schema, Table, Utf8, vectorFromArray } from "apache-arrow"
import type { Completion } from "./generation.ts"
import type { ScoredExample } from "./accuracy.ts"

const text = (name: string, nullable = false) => new Field(name, new Utf8(), nullable)

/** A table from whole columns, in the schema's field order. */
const tableOf = (schema: Schema, columns: ReadonlyArray<ReadonlyArray<unknown>>): Table => {
  if ((columns[0]?.length ?? 0) === 0) return new Table(schema)
  return new Table(schema, Object.fromEntries(schema.fields.map((field, i) => [field.name, vectorFromArray([...columns[i]!], field.type)])))
}

const EXAMPLE_FIELDS = [
  text("question"),
  text("reference"),
  text("prediction"),
  text("predicted", true),
  text("expected", true),
  new Field("correct", new Bool(), false)
]

const BASE_FIELDS = [text("base_prediction"), text("base_predicted", true), new Field("base_correct", new Bool(), false)]

/**
 * The `examples` split: one row per scored example; with a base model, its prediction
 * beside the evaluated model's (the tutorial's before/after comparison).
 */
export const examplesTable = (scored: ReadonlyArray<ScoredExample>, base?: ReadonlyArray<ScoredExample>): Table => {
  const schema = new Schema(base === undefined ? EXAMPLE_FIELDS : [...EXAMPLE_FIELDS, ...BASE_FIELDS])
  const columns = [
    scored.map((e) => e.question),
    scored.map((e) => e.reference),
    scored.map((e) => e.prediction),
    scored.map((e) => e.predicted ?? null),
    scored.map((e) => e.expected ?? null),
    scored.map((e) => e.correct),
    ...(base === undefined ? [] : [base.map((e) => e.prediction), base.map((e) => e.predicted ?? null), base.map((e) => e.correct)])
  ]
  return tableOf(schema, columns)
}

export interface ModelSummary {
  readonly model: string
  readonly evalLoss?: number | undefined
  readonly perplexity?: number | undefined
  readonly accuracy?: number | undefined
}

const SUMMARY_SCHEMA = new Schema([
  text("model"),
  new Field("eval_loss", new Float64(), true),
  new Field("perplexity", new Float64(), true),
  new Field("accuracy", new Float64(), true)
])

/** The `summary` split: one row per model; a metric not asked for is null. */
export const summaryTable = (rows: ReadonlyArray<ModelSummary>): Table =>
  tableOf(SUMMARY_SCHEMA, [
    rows.map((r) => r.model),
    rows.map((r) => r.evalLoss ?? null),
    rows.map((r) => r.perplexity ?? null),
    rows.map((r) => r.accuracy ?? null)
  ])

const GENERATIONS_SCHEMA = new Schema([
  text("prompt"),
  text("generated"),
  text("finish_reason"),
  new Field("new_tokens", new Int32(), false)
])

/** The `generate` stage's `generations` split. */
export const generationsTable = (completions: ReadonlyArray<Completion>): Table =>
  tableOf(GENERATIONS_SCHEMA, [
    completions.map((c) => c.prompt),
    completions.map((c) => c.text),
    completions.map((c) => c.finishReason),
    completions.map((c) => c.tokenIds.length)
  ])
