/**
 * Human output, on stderr: a progress bar per running stage on a TTY, plain
 * lines otherwise. Machine output (`--json`) goes to stdout elsewhere.
 */
import { MultiBar, Presets, type SingleBar } from "cli-progress"
import { Context, Effect, Layer } from "effect"
import { rowCount } from "./artifact.ts"
import type { StageOutcome } from "./events.ts"

export interface ReporterService {
  readonly started: (id: string, reason: string) => Effect.Effect<void>
  readonly progress: (id: string, done: number, total: number, unit: string) => Effect.Effect<void>
  readonly log: (id: string, message: string) => Effect.Effect<void>
  readonly finished: (outcome: StageOutcome) => Effect.Effect<void>
  readonly close: Effect.Effect<void>
}

export class Reporter extends Context.Tag("Reporter")<Reporter, ReporterService>() {}

const seconds = (ms: number) => (ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`)

const describeOutcome = (outcome: StageOutcome): string => {
  switch (outcome._tag) {
    case "Ran":
      return `✔ ${outcome.id}: ran in ${seconds(outcome.durationMs)} (${outcome.reason})${summarize(outcome.outputs)}`
    case "Cached":
      return `• ${outcome.id}: cached${summarize(outcome.outputs)}`
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

/** Plain lines: one per event, progress at most every 10% or 5 s per stage. */
const plain = (write: (line: string) => void): ReporterService => {
  const lastShown = new Map<string, { fraction: number; at: number }>()
  return {
    started: (id, reason) => Effect.sync(() => write(`▶ ${id}: running (${reason})`)),
    progress: (id, done, total, unit) =>
      Effect.sync(() => {
        const fraction = total > 0 ? done / total : 0
        const last = lastShown.get(id) ?? { fraction: 0, at: Date.now() }
        if (fraction - last.fraction >= 0.1 || Date.now() - last.at >= 5000 || (done === total && last.fraction < 1)) {
          lastShown.set(id, { fraction, at: Date.now() })
          write(`  ${id}: ${done}/${total} ${unit}`)
        }
      }),
    log: (id, message) => Effect.sync(() => write(`  ${id}: ${message}`)),
    finished: (outcome) => Effect.sync(() => write(describeOutcome(outcome))),
    close: Effect.void
  }
}

const tty = (stream: NodeJS.WriteStream): ReporterService => {
  const multi = new MultiBar(
    { stream, format: " {bar} {stage} {value}/{total} {unit} | {eta_formatted}", hideCursor: true, clearOnComplete: true, etaBuffer: 20 },
    Presets.shades_classic
  )
  const bars = new Map<string, SingleBar>()
  // MultiBar.log only flushes on a redraw: with no bar on screen, write directly.
  const line = (text: string) => (bars.size > 0 ? multi.log(`${text}\n`) : stream.write(`${text}\n`))
  return {
    started: (id, reason) => Effect.sync(() => line(`▶ ${id}: running (${reason})`)),
    progress: (id, done, total, unit) =>
      Effect.sync(() => {
        const bar = bars.get(id)
        if (bar === undefined) bars.set(id, multi.create(total, done, { stage: id, unit }))
        else {
          bar.setTotal(total)
          bar.update(done, { unit })
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

const make = (options: { readonly quiet?: boolean } = {}): ReporterService => {
  if (options.quiet) {
    return { started: () => Effect.void, progress: () => Effect.void, log: () => Effect.void, finished: () => Effect.void, close: Effect.void }
  }
  return process.stderr.isTTY ? tty(process.stderr) : plain((text) => process.stderr.write(`${text}\n`))
}

export const layer = (options: { readonly quiet?: boolean } = {}) =>
  Layer.scoped(Reporter, Effect.acquireRelease(Effect.sync(() => make(options)), (reporter) => reporter.close))
