/**
 * What a training run reports: a log line per logging or eval step, the metrics table
 * (`files/metrics.arrow`, one row per log row), and the loss curves (`files/loss.svg`).
 */
import { Field, Float64, Int32, Schema as ArrowSchema, Table, vectorFromArray } from "apache-arrow"
import { lineChart } from "../plot.ts"
import type { LogRow } from "./checkpoint.ts"

const formatMetrics = (row: LogRow) =>
  Object.entries(row.metrics ?? {}).map(([name, value]) => `, ${name} ${value.toFixed(4)}`).join("")

export const formatRow = (row: LogRow): string =>
  row.eval_loss !== undefined
    ? `step ${row.step} (epoch ${row.epoch}): eval_loss ${row.eval_loss.toFixed(4)}${formatMetrics(row)}`
    : `step ${row.step} (epoch ${row.epoch}): loss ${row.loss?.toFixed(4)}, lr ${row.learning_rate?.toExponential(2)}, grad_norm ${row.grad_norm?.toFixed(3)}, ${row.tokens_per_second} tok/s${formatMetrics(row)}`

const CORE_COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm", "eval_loss", "tokens_per_second"] as const

/** One row per log row: the Trainer's columns, then each objective metric logged (`rewards/chosen`, `eval_rewards/chosen`, …) in the order first seen. */
export const metricsTable = (history: ReadonlyArray<LogRow>): Table => {
  const extra = [...new Set(history.flatMap((row) => Object.keys(row.metrics ?? {})))]
  const columns = [...CORE_COLUMNS, ...extra]
  const schema = new ArrowSchema(columns.map((name) => new Field(name, name === "step" ? new Int32() : new Float64(), name !== "step")))
  const valueOf = (row: LogRow, name: string) =>
    (CORE_COLUMNS as ReadonlyArray<string>).includes(name) ? row[name as (typeof CORE_COLUMNS)[number]] : row.metrics?.[name]
  return new Table(schema, Object.fromEntries(columns.map((name, i) =>
    [name, vectorFromArray(history.map((row) => valueOf(row, name) ?? null), schema.fields[i]!.type)]
  )))
}

export const lossChart = (history: ReadonlyArray<LogRow>) =>
  lineChart("Loss", "step", "loss", [
    { name: "train loss", color: "#1f77b4", points: history.flatMap((r) => (r.loss === undefined ? [] : [[r.step, r.loss] as const])) },
    { name: "eval loss", color: "#d62728", points: history.flatMap((r) => (r.eval_loss === undefined ? [] : [[r.step, r.eval_loss] as const])) }
  ])

/** The last value of a metric in the log, if it was ever logged. */
export const lastLogged = (history: ReadonlyArray<LogRow>, key: "loss" | "eval_loss"): number | undefined =>
  [...history].reverse().find((row) => row[key] !== undefined)?.[key]
