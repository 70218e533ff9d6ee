/**
 * `pipeline compare`: a sweep's variants side by side, like `dvc exp show`. One row per
 * variant: the params its label sets, its own metrics, and the metrics of the stages
 * below it that carry the same label, prefixed with their stage (`evaluate.accuracy`).
 * Pure over the pipeline and a lookup of entries, so the rows may come from any store.
 */
import { Either } from "effect"
import type { Metrics } from "./artifact.ts"
import { ancestorsOf } from "./dag.ts"
import { suggestion, UsageError } from "./errors.ts"
import { formatValue, labelOf } from "./matrix.ts"
import type { Pipeline } from "./pipeline.ts"
import type { MatrixValue } from "./spec.ts"

interface CompareRow {
  readonly id: string
  readonly params: Readonly<Record<string, MatrixValue>>
  /** Every metric column; null where the stage that reports it has no entry. */
  readonly metrics: Readonly<Record<string, number | null>>
}

export interface Comparison {
  readonly paramColumns: ReadonlyArray<string>
  readonly metricColumns: ReadonlyArray<string>
  /** Sorted. */
  readonly rows: ReadonlyArray<CompareRow>
  /** The variants, and the stages below them, that have no entry: never run, or stale. */
  readonly missing: ReadonlyArray<string>
}

/** A stage's entry, or undefined when it has none for the pipeline as it is now. */
export type EntryOf = (stageId: string) => { readonly metrics: Metrics } | undefined

interface CompareOptions {
  /** The stage whose variants make the rows; default every swept stage. */
  readonly stage?: string | undefined
  /** A column, `-COLUMN` for descending; default `eval_loss`, else the first metric. */
  readonly sort?: string | undefined
}

const EXAMPLE_MATRIX = "matrix: { learning_rate: [1e-5, 2e-5] }"

export const compareRows = (pipeline: Pipeline, entryOf: EntryOf, options: CompareOptions = {}): Either.Either<Comparison, UsageError> => {
  const swept = pipeline.spec.stages.filter((s) => s.matrix.length > 0).map((s) => s.id)
  if (swept.length === 0) {
    return Either.left(new UsageError({
      message: `${pipeline.spec.file} sweeps nothing, so there are no variants to compare: give a stage a matrix: beside its with: (${EXAMPLE_MATRIX}), then run pipeline run on the file`
    }))
  }
  const bases = options.stage === undefined ? swept : [options.stage]
  if (options.stage !== undefined && !pipeline.stages.some((s) => s.variant?.base === options.stage)) {
    const known = pipeline.spec.stages.some((s) => s.id === options.stage)
    return Either.left(new UsageError({
      message: known
        ? `stage "${options.stage}" is not swept, so it has no variants to compare (swept: ${swept.join(", ")}); to sweep it, give it a matrix: beside its with: (${EXAMPLE_MATRIX})`
        : `there is no stage "${options.stage}" in ${pipeline.spec.file}${suggestion(options.stage, pipeline.spec.stages.map((s) => s.id))} (swept: ${swept.join(", ")})`
    }))
  }
  const missing = new Set<string>()
  const paramColumns = new Set<string>()
  const metricColumns = new Set<string>()
  const collected = pipeline.stages.filter((s) => s.variant !== undefined && bases.includes(s.variant.base)).map((variant) => {
    const label = labelOf(variant.variant!.params)
    const below = pipeline.stages.filter((s) =>
      s.variant !== undefined && s.variant.base !== variant.variant!.base && labelOf(s.variant.params) === label && ancestorsOf(pipeline.stages, s.id).has(variant.id)
    )
    const metrics = new Map<string, number | undefined>()
    for (const [stage, prefix] of [[variant, ""] as const, ...below.map((s) => [s, `${s.variant!.base}.`] as const)]) {
      const entry = entryOf(stage.id)
      if (entry === undefined) missing.add(stage.id)
      for (const [name, value] of Object.entries(entry?.metrics ?? {})) metrics.set(`${prefix}${name}`, value)
    }
    for (const key of Object.keys(variant.variant!.params)) paramColumns.add(key)
    for (const name of metrics.keys()) metricColumns.add(name)
    return { id: variant.id, params: variant.variant!.params, metrics }
  })
  const rows = collected.map((row): CompareRow => ({
    id: row.id,
    params: row.params,
    metrics: Object.fromEntries([...metricColumns].map((name) => [name, row.metrics.get(name) ?? null]))
  }))
  const sorted = sortRows(rows, [...paramColumns], [...metricColumns], options.sort)
  return Either.map(sorted, (rows) => ({ paramColumns: [...paramColumns], metricColumns: [...metricColumns], rows, missing: [...missing] }))
}

const sortRows = (rows: ReadonlyArray<CompareRow>, params: ReadonlyArray<string>, metrics: ReadonlyArray<string>, sort: string | undefined): Either.Either<ReadonlyArray<CompareRow>, UsageError> => {
  const descending = sort?.startsWith("-") ?? false
  const column = sort === undefined
    ? metrics.find((m) => m === "eval_loss") ?? metrics.find((m) => m.endsWith(".eval_loss")) ?? metrics[0]
    : descending ? sort.slice(1) : sort
  if (column === undefined) return Either.right(rows)
  if (!params.includes(column) && !metrics.includes(column)) {
    return Either.left(new UsageError({ message: `--sort ${sort}: no column "${column}" (columns: ${[...params, ...metrics].join(", ") || "none yet: run the pipeline first"}); -COLUMN sorts descending` }))
  }
  const valueOf = (row: CompareRow): MatrixValue | null => metrics.includes(column) ? row.metrics[column] ?? null : row.params[column] ?? null
  // Rows without the value go last either way.
  return Either.right([...rows].sort((a, b) => {
    const [x, y] = [valueOf(a), valueOf(b)]
    if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))
    return descending ? -order : order
  }))
}

/** A metric as a table shows it: five significant digits, in the shorter form. */
const shownMetric = (value: number | null): string => value === null ? "-" : formatValue(Number.isInteger(value) ? value : Number(value.toPrecision(5)))

/** Aligned columns, as `show` prints a table: params left, metrics right. */
export const renderCompareTable = (comparison: Comparison): string => {
  const header = ["id", ...comparison.paramColumns, ...comparison.metricColumns]
  const cells = comparison.rows.map((row) => [
    row.id,
    ...comparison.paramColumns.map((key) => key in row.params ? formatValue(row.params[key]!) : "-"),
    ...comparison.metricColumns.map((name) => shownMetric(row.metrics[name] ?? null))
  ])
  const widths = header.map((name, j) => Math.max(name.length, ...cells.map((r) => r[j]!.length)))
  const numeric = (j: number) => j > comparison.paramColumns.length
  const line = (values: ReadonlyArray<string>) => values.map((v, j) => numeric(j) ? v.padStart(widths[j]!) : v.padEnd(widths[j]!)).join(" │ ").trimEnd()
  return [line(header), widths.map((w) => "─".repeat(w)).join("─┼─"), ...cells.map(line)].join("\n")
}

/** RFC 4180: a field with a comma, a quote or a line break is quoted, its quotes doubled; lines end in CRLF. */
const csvField = (text: string): string => /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text

export const renderCompareCsv = (comparison: Comparison): string =>
  [
    ["id", ...comparison.paramColumns, ...comparison.metricColumns],
    ...comparison.rows.map((row) => [
      row.id,
      ...comparison.paramColumns.map((key) => key in row.params ? String(row.params[key]) : ""),
      ...comparison.metricColumns.map((name) => String(row.metrics[name] ?? ""))
    ])
  ].map((fields) => fields.map(csvField).join(",")).join("\r\n") + "\r\n"

export const compareJson = (comparison: Comparison) =>
  comparison.rows.map((row) => ({ id: row.id, params: row.params, metrics: row.metrics }))
