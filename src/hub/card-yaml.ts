/**
 * A dataset card's YAML header, parsed in a worker thread. Cards are anyone's to write,
 * and parsing is one synchronous step: a header of a few MiB built to be slow keeps a
 * core busy for seconds. In a worker it leaves the event loop free (progress, signals),
 * and interrupting the fetch terminates it. The header's size is bounded first
 * (MAX_HEADER_BYTES), and the worker's memory too.
 */
import { Data, Effect } from "effect"
import { Worker } from "node:worker_threads"
import { sourceUrl } from "../paths.ts"
import { printable } from "./errors.ts"

/** A dataset card's YAML header that the `datasets` library would refuse too; `key` is where (`configs[0].data_files`). */
export class CardProblem extends Data.TaggedError("CardProblem")<{ readonly key: string; readonly problem: string }> {}

const WORKER = sourceUrl("hub/card-yaml-worker.mjs")

/** The largest YAML header read: real cards' headers, their configs and dataset_info included, are far smaller. */
const MAX_HEADER_BYTES = 4 * 1024 * 1024
/** The most memory the parser may take (a header's data is a few times its text). */
const WORKER_HEAP_MB = 512

const MiB = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

const unparsable = (why: string) => new CardProblem({ key: "", problem: `its YAML header does not parse (${printable(why)})` })

/** The parsed header, as plain data. */
export const parseCardYaml = (header: string): Effect.Effect<unknown, CardProblem> =>
  Effect.suspend(() => {
    const bytes = Buffer.byteLength(header)
    if (bytes > MAX_HEADER_BYTES) {
      return Effect.fail(new CardProblem({ key: "", problem: `its YAML header is ${MiB(bytes)}; headers are read up to ${MiB(MAX_HEADER_BYTES)}` }))
    }
    return Effect.async<unknown, CardProblem>((resume) => {
      const worker = new Worker(WORKER, { workerData: header, resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB } })
      let answered = false
      const answer = (result: Effect.Effect<unknown, CardProblem>) => {
        if (answered) return
        answered = true
        resume(result)
        void worker.terminate()
      }
      worker.once("message", (message: { value?: unknown; error?: string }) =>
        answer(message.error === undefined ? Effect.succeed(message.value) : Effect.fail(unparsable(message.error))))
      worker.once("error", (error: Error & { code?: string }) =>
        answer(Effect.fail(unparsable(error.code === "ERR_WORKER_OUT_OF_MEMORY" ? `parsing it needs more than ${WORKER_HEAP_MB} MB` : error.message))))
      worker.once("exit", (code) => answer(Effect.fail(unparsable(`the parser stopped with exit code ${code}`))))
      return Effect.sync(() => {
        answered = true
        void worker.terminate()
      })
    })
  })
