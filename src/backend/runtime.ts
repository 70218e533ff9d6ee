/**
 * The compute backend of this process, chosen once: `PIPELINE_BACKEND`
 * (`auto`, `tensorflow`, `wasm`, `cpu`; the CLI's `--backend` sets it) and
 * `PIPELINE_THREADS` (wasm threads; the CLI's `--threads`). Model stages call
 * `ensureBackend` before touching a tensor and log what it chose.
 */
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import { type BackendInfo, initBackend, parseBackendChoice } from "./select.ts"

let chosen: Promise<BackendInfo> | undefined

const backendOptionsFromEnv = () => {
  const requested = process.env.PIPELINE_BACKEND ?? "auto"
  const backend = parseBackendChoice(requested)
  const threads = process.env.PIPELINE_THREADS === undefined ? undefined : Number(process.env.PIPELINE_THREADS)
  return { requested, backend, threads }
}

export const ensureBackend: Effect.Effect<BackendInfo, StageError> = Effect.suspend(() => {
  const { requested, backend, threads } = backendOptionsFromEnv()
  if (backend === undefined) {
    return Effect.fail(new StageError({ message: `PIPELINE_BACKEND=${requested}: expected auto, tensorflow, wasm or cpu` }))
  }
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
    return Effect.fail(new StageError({ message: `PIPELINE_THREADS=${process.env.PIPELINE_THREADS}: expected a whole number of threads, 1 or more` }))
  }
  chosen ??= initBackend({ backend, ...(threads !== undefined && { threads }) })
  return Effect.tryPromise({
    try: () => chosen!,
    catch: (error) => {
      chosen = undefined
      return new StageError({ message: error instanceof Error ? error.message : String(error) })
    }
  })
})

/** One line: the backend, its threads, and why better ones were passed over (without the stack of details). */
export const describeBackend = (info: BackendInfo): string => {
  const notes = info.notes.map((note) => note.replace(/\s*\(.*$/s, ""))
  return `backend ${info.name}${info.name === "wasm" ? ` (${info.threads} thread${info.threads === 1 ? "" : "s"})` : ""}${notes.length > 0 ? `: ${notes.join("; ")}` : ""}`
}
