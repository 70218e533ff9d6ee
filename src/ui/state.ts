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
import { ArtifactStore, type LiveRun } from "../store.ts"
import { LIVE_LOG } from "../train/session.ts"

/** JSON-safe: bigints as numbers, typed arrays as lists, long text cut. */
const plain = (value: unknown): unknown => {
  if (typeof value === "bigint") return Number(value)
  if (ArrayBuffer.isView(value)) return Array.from(value as unknown as ArrayLike<number>, (v) => (typeof v === "bigint" ? Number(v) : v)).slice(0, 64)
  if (Array.isArray(value)) return value.slice(0, 64).map(plain)
  if (typeof value === "string") return value.length > 2000 ? `${value.slice(0, 2000)}…` : value
  if (value !== null && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
  return value
}

/** The run in progress, if its process is alive (a run killed with kill -9 leaves its file behind). */
const liveRun = (file: string) =>
  Effect.gen(function* () {
    const live = yield* (yield* ArtifactStore).readLive(file)
    if (live === undefined) return undefined
    try {
      process.kill(live.pid, 0)
      return live
    } catch {
      return undefined
    }
  })

const summary = (pipeline: Pipeline, status: StageStatus, live: LiveRun | undefined) => {
  const stage = pipeline.stages.find((s) => s.id === status.id)!
  const running = live?.stages[status.id]?.state === "running" ? live.stages[status.id] : undefined
  return {
    id: status.id,
    uses: status.uses,
    needs: stage.needs,
    state: running !== undefined ? "running" : status.state,
    progress: running === undefined || running.total === undefined ? null : { done: running.done ?? 0, total: running.total, unit: running.unit ?? "" },
    reasons: status.reasons,
    remote: status.remote === true,
    fingerprint: status.fingerprint ?? null,
    createdAt: status.entry?.manifest.createdAt ?? null,
    durationMs: status.entry?.manifest.durationMs ?? null,
    metrics: status.entry?.manifest.metrics ?? {},
    params: stage.recordedParams,
    // What it made, by kind (the files are served by no route: only their names are shown).
    outputs: status.entry === undefined ? null : {
      entry: status.entry.dir,
      ...(status.entry.outputs.dataset && { dataset: Object.keys(status.entry.outputs.dataset.splits) }),
      ...(status.entry.outputs.model && { model: status.entry.outputs.model.dir }),
      ...(status.entry.outputs.files && { files: status.entry.outputs.files.files })
    }
  }
}

export const pipelineState = (pipeline: Pipeline) =>
  Effect.gen(function* () {
    const statuses = yield* pipelineStatus(pipeline)
    const live = yield* liveRun(pipeline.spec.file)
    const history = yield* (yield* ArtifactStore).readHistory(pipeline.spec.file)
    return {
      name: pipeline.spec.name,
      file: pipeline.spec.file,
      running: live === undefined ? null : { pid: live.pid, startedAt: live.startedAt },
      stages: statuses.map((status) => summary(pipeline, status, live)),
      // The latest runs first.
      history: history.slice(-50).reverse()
    }
  })

/** One stage: its summary, the first rows of each split (or of its metrics log), and the metrics log whole for curves. */
export const stageDetail = (pipeline: Pipeline, id: string, rows = 20) =>
  Effect.gen(function* () {
    const statuses = yield* pipelineStatus(pipeline)
    const live = yield* liveRun(pipeline.spec.file)
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
    // A training that runs now: its log so far, from its work folder.
    if (log.length === 0 && live?.stages[id]?.state === "running" && status.fingerprint !== undefined) {
      const fs = yield* FileSystem.FileSystem
      const store = yield* ArtifactStore
      const text = yield* fs.readFileString(`${store.root}/work/${status.fingerprint}/${LIVE_LOG}`).pipe(Effect.orElseSucceed(() => ""))
      // A resumed run logs again from its checkpoint: the last row of a step wins.
      const bySteps = new Map<number, Record<string, unknown>>()
      for (const line of text.split("\n")) {
        try {
          const row = JSON.parse(line) as Record<string, unknown>
          if (typeof row.step === "number") bySteps.set(row.step, { ...bySteps.get(row.step), ...row })
        } catch {
          // a line cut off mid-write
        }
      }
      log = [...bySteps.values()].sort((a, b) => (a.step as number) - (b.step as number))
    }
    return { ...summary(pipeline, status, live), splits, log }
  })
