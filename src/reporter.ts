/**
 * Human output, on stderr: a progress bar per running stage on a TTY, plain
 * lines otherwise. Machine output (`--json`) goes to stdout elsewhere.
 */
import { MultiBar, Presets, type SingleBar } from "cli-progress"
import { Context, Effect, Layer } from "effect"
import { rowCount } from "./artifact.ts"
import type { StageOutcome } from "./events.ts"
import type { ByteProgress } from "./stage.ts"

/** Where a running stage stands. */
export interface Progress {
  readonly done: number
  readonly total: number
  readonly unit: string
  readonly bytes?: ByteProgress
}

export interface ReporterService {
  readonly started: (id: string, reason: string) => Effect.Effect<void>
  readonly progress: (id: string, progress: Progress) => Effect.Effect<void>
  readonly log: (id: string, message: string) => Effect.Effect<void>
  readonly finished: (outcome: StageOutcome) => Effect.Effect<void>
  readonly close: Effect.Effect<void>
}

export class Reporter extends Context.Tag("Reporter")<Reporter, ReporterService>() {}

const seconds = (ms: number) => (ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`)

const describeOutcome = (outcome: StageOutcome): string => {
  switch (outcome._tag) {
    case "Ran":
      return `✔ ${outcome.id}: ran${outcome.where?.worker === undefined ? "" : ` on ${outcome.where.worker}`} in ${seconds(outcome.durationMs)} (${outcome.reason})${outcome.where?.remote === "pushed" ? ", pushed" : ""}${summarize(outcome.outputs)}`
    case "Cached":
      return `• ${outcome.id}: cached${outcome.where?.remote === "pulled" ? " (pulled from the remote)" : outcome.where?.remote === "remote" ? " (in the remote)" : ""}${outcome.where?.remote === "pushed" ? ", pushed" : ""}${summarize(outcome.outputs)}`
    case "WouldRun":
      return `○ ${outcome.id}: would run (${outcome.reason})`
    case "Failed":
      return `✖ ${outcome.id}: failed: ${outcome.reason}`
    case "Skipped":
      return `- ${outcome.id}: skipped (${outcome.reason})`
  }
}

const summarize = (outputs: Extract<StageOutcome, { outputs: unknown }>["outputs"]): string => {
  const parts: Array<string> = []
  if (outputs.dataset) {
    parts.push(Object.keys(outputs.dataset.splits).map((s) => `${s}: ${rowCount(outputs.dataset!, s)} rows`).join(", "))
  }
  if (outputs.model) parts.push(`model ${outputs.model.dir}`)
  if (outputs.files) parts.push(`${outputs.files.files.length} file(s) in ${outputs.files.dir}`)
  return parts.length > 0 ? ` → ${parts.join("; ")}` : ""
}

const BYTE_UNITS = ["B", "kB", "MB", "GB", "TB"]

/** Bytes in decimal units, as `du --si` and download tools print them. */
const formatBytes = (bytes: number): string => {
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1000
    unit++
  }
  return `${unit === 0 ? Math.round(value) : value.toFixed(value < 10 ? 2 : 1)} ${BYTE_UNITS[unit]}`
}

const duration = (seconds: number): string => {
  const s = Math.round(seconds)
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`
}

/** The bytes read, the rate and (unless the bar shows its own) the time left, since the stage started. */
const byteDetail = (progress: Progress, elapsedSeconds: number, eta = true): string => {
  const { bytes } = progress
  if (bytes === undefined) return ""
  const read = `${formatBytes(bytes.done)} of ${formatBytes(bytes.total)}`
  // A rate over less than a second says little.
  if (elapsedSeconds < 1 || bytes.done === 0) return read
  const rate = bytes.done / elapsedSeconds
  return `${read}, ${formatBytes(rate)}/s${eta ? `, ETA ${duration((bytes.total - bytes.done) / rate)}` : ""}`
}

/** Plain lines: one per event, progress at most every 10% or 5 s per stage. */
const plain = (write: (line: string) => void): ReporterService => {
  const lastShown = new Map<string, { fraction: number; at: number }>()
  const startedAt = new Map<string, number>()
  return {
    started: (id, reason) =>
      Effect.sync(() => {
        startedAt.set(id, Date.now())
        write(`▶ ${id}: running (${reason})`)
      }),
    progress: (id, progress) =>
      Effect.sync(() => {
        const { done, total, unit } = progress
        const now = Date.now()
        const since = startedAt.get(id) ?? now
        startedAt.set(id, since)
        const fraction = total > 0 ? done / total : 0
        const last = lastShown.get(id) ?? { fraction: 0, at: now }
        if (fraction - last.fraction >= 0.1 || now - last.at >= 5000 || (done === total && last.fraction < 1)) {
          lastShown.set(id, { fraction, at: now })
          const detail = byteDetail(progress, (now - since) / 1000)
          write(`  ${id}: ${done}/${total} ${unit}${detail === "" ? "" : ` (${detail})`}`)
        }
      }),
    log: (id, message) => Effect.sync(() => write(`  ${id}: ${message}`)),
    finished: (outcome) => Effect.sync(() => write(describeOutcome(outcome))),
    close: Effect.void
  }
}

const tty = (stream: NodeJS.WriteStream): ReporterService => {
  const multi = new MultiBar(
    { stream, format: " {bar} {stage} {value}/{total} {unit}{bytes} | {eta_formatted}", hideCursor: true, clearOnComplete: true, etaBuffer: 20 },
    Presets.shades_classic
  )
  const bars = new Map<string, SingleBar>()
  const startedAt = new Map<string, number>()
  // MultiBar.log only flushes on a redraw: with no bar on screen, write directly.
  const line = (text: string) => (bars.size > 0 ? multi.log(`${text}\n`) : stream.write(`${text}\n`))
  return {
    started: (id, reason) =>
      Effect.sync(() => {
        startedAt.set(id, Date.now())
        line(`▶ ${id}: running (${reason})`)
      }),
    progress: (id, progress) =>
      Effect.sync(() => {
        const { done, total, unit, bytes } = progress
        const now = Date.now()
        const since = startedAt.get(id) ?? now
        startedAt.set(id, since)
        const payload = { unit, bytes: bytes === undefined ? "" : ` | ${byteDetail(progress, (now - since) / 1000, false)}` }
        const bar = bars.get(id)
        if (bar === undefined) bars.set(id, multi.create(total, done, { stage: id, ...payload }))
        else {
          bar.setTotal(total)
          bar.update(done, payload)
        }
      }),
    log: (id, message) => Effect.sync(() => line(`  ${id}: ${message}`)),
    finished: (outcome) =>
      Effect.sync(() => {
        const bar = bars.get(outcome.id)
        if (bar) {
          multi.remove(bar)
          bars.delete(outcome.id)
        }
        line(describeOutcome(outcome))
      }),
    close: Effect.sync(() => multi.stop())
  }
}

/**
 * A stage run by a worker (`pipeline worker`, see queue.ts) runs in a child process with
 * PIPELINE_EVENTS=ipc: its progress also goes to the worker, which passes it to the run
 * that queued the stage; and the child ends as soon as the worker is gone (kill -9), so
 * that only the worker the queue gives the job to next runs it.
 */
const forwardToWorker = (reporter: ReporterService): ReporterService => {
  const send = process.send?.bind(process)
  if (process.env.PIPELINE_EVENTS !== "ipc" || send === undefined) return reporter
  process.on("disconnect", () => process.kill(process.pid, "SIGKILL"))
  return {
    ...reporter,
    progress: (id, progress) =>
      Effect.zipRight(
        reporter.progress(id, progress),
        Effect.sync(() => void send({ type: "progress", id, done: progress.done, total: progress.total, unit: progress.unit }))
      )
  }
}

const make = (options: { readonly quiet?: boolean } = {}): ReporterService => {
  if (options.quiet) {
    return { started: () => Effect.void, progress: () => Effect.void, log: () => Effect.void, finished: () => Effect.void, close: Effect.void }
  }
  return forwardToWorker(process.stderr.isTTY ? tty(process.stderr) : plain((text) => process.stderr.write(`${text}\n`)))
}

export const layer = (options: { readonly quiet?: boolean } = {}) =>
  Layer.scoped(Reporter, Effect.acquireRelease(Effect.sync(() => make(options)), (reporter) => reporter.close))
