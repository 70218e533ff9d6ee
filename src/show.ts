/** `pipeline show`: a dataset split's rows, as an aligned table or as JSON lines. */
import type { Table } from "apache-arrow"
import { rowAt } from "./arrow.ts"

const cell = (value: unknown, width: number): string => {
  const text = Array.isArray(value)
    ? value.length > 8 ? `[${value.slice(0, 8).join(", ")}, … (${value.length})]` : JSON.stringify(value)
    : value === null ? "null" : typeof value === "string" ? value : JSON.stringify(value)
  const flat = text.replace(/\s+/g, " ")
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat
}

/** `table` holds the split's first rows (at least `limit` of them, or all); `totalRows` counts the whole split. */
export const renderTable = (table: Table, limit: number, totalRows = table.numRows, maxWidth = 48): string => {
  const columns = table.schema.fields.map((f) => f.name)
  const count = Math.min(limit, table.numRows)
  const rows = Array.from({ length: count }, (_, i) => rowAt(table, i))
  const cells = rows.map((row) => columns.map((c) => cell(row[c], maxWidth)))
  const widths = columns.map((c, j) => Math.max(c.length, ...cells.map((r) => r[j]!.length)))
  const line = (values: ReadonlyArray<string>) => values.map((v, j) => v.padEnd(widths[j]!)).join(" │ ").trimEnd()
  return [
    line(columns),
    widths.map((w) => "─".repeat(w)).join("─┼─"),
    ...cells.map(line),
    `(${count} of ${totalRows} rows; ${table.schema.fields.map((f) => `${f.name}: ${f.type}`).join(", ")})`
  ].join("\n")
}

export const renderJsonl = (table: Table, limit: number): string =>
  Array.from({ length: Math.min(limit, table.numRows) }, (_, i) => JSON.stringify(rowAt(table, i))).join("\n")
