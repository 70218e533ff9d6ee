/**
 * What `pipeline ui` shows, as JSON: each stage's state (from `status`, the cache as
 * its only database), and one stage's details (params, metrics, the first rows of its
 * output, a training's metrics log for the curves).
 */
import { FileSystem } from "@effect/platform"
import { Effect } from "effect"
import { rowAt } from "../arrow.ts"
import { decodeIpc } from "../arrow.ts"
import { readHead } from "../dataset.ts"
import type { Pipeline } from "../pipeline.ts"
import { pipelineStatus, type StageStatus } from "../status.ts"

/** JSON-safe: bigints as numbers, typed arrays as lists, long text cut. */
const plain = (value: unknown): unknown => {
  if (typeof value === "bigint") return Number(value)
  if (ArrayBuffer.isView(value)) return Array.from(value as unknown as ArrayLike<number>, (v) => (typeof v === "bigint" ? Number(v) : v)).slice(0, 64)
  if (Array.isArray(value)) return value.slice(0, 64).map(plain)
  if (typeof value === "string") return value.length > 2000 ? `${value.slice(0, 2000)}…` : value
  if (value !== null && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
  return value
}

const summary = (pipeline: Pipeline, status: StageStatus) => {
  const stage = pipeline.stages.find((s) => s.id === status.id)!
  return {
    id: status.id,
    uses: status.uses,
    needs: stage.needs,
    state: status.state,
    reasons: status.reasons,
    remote: status.remote === true,
    fingerprint: status.fingerprint ?? null,
    createdAt: status.entry?.manifest.createdAt ?? null,
    durationMs: status.entry?.manifest.durationMs ?? null,
    metrics: status.entry?.manifest.metrics ?? {},
    params: stage.recordedParams
  }
}

export const pipelineState = (pipeline: Pipeline) =>
  Effect.map(pipelineStatus(pipeline), (statuses) => ({
    name: pipeline.spec.name,
    file: pipeline.spec.file,
    stages: statuses.map((status) => summary(pipeline, status))
  }))

/** One stage: its summary, the first rows of each split (or of its metrics log), and the metrics log whole for curves. */
export const stageDetail = (pipeline: Pipeline, id: string, rows = 20) =>
  Effect.gen(function* () {
    const statuses = yield* pipelineStatus(pipeline)
    const status = statuses.find((s) => s.id === id)
    if (status === undefined) return undefined
    const entry = status.remote === true ? undefined : status.entry
    const splits: Record<string, { rows: number; columns: ReadonlyArray<string>; head: ReadonlyArray<unknown> }> = {}
    for (const split of Object.keys(entry?.outputs.dataset?.splits ?? {})) {
      const { table, rows: total } = yield* readHead(entry!.outputs.dataset!, split, rows).pipe(Effect.orElseSucceed(() => undefined), Effect.map((r) => r ?? { table: undefined, rows: 0 }))
      if (table === undefined) continue
      splits[split] = { rows: total, columns: table.schema.fields.map((f) => f.name), head: Array.from({ length: table.numRows }, (_, i) => plain(rowAt(table, i))) }
    }
    let log: ReadonlyArray<unknown> = []
    const files = entry?.outputs.files
    const metricsFile = files?.files.find((name) => name.endsWith(".arrow"))
    if (files !== undefined && metricsFile !== undefined) {
      const fs = yield* FileSystem.FileSystem
      const bytes = yield* fs.readFile(`${files.dir}/${metricsFile}`).pipe(Effect.orElseSucceed(() => undefined))
      if (bytes !== undefined) {
        const table = decodeIpc(bytes)
        log = Array.from({ length: table.numRows }, (_, i) => plain(rowAt(table, i)))
      }
    }
    return { ...summary(pipeline, status), splits, log }
  })
