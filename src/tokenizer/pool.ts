/**
 * Tokenizing on every core: a pool of worker threads (encode-worker.mjs), each with its
 * own copy of the tokenizer, as `datasets.map(num_proc=…)` runs a tokenizer in several
 * processes. Texts go out in batches and come back as ids, in order. Encoding is pure,
 * so the ids are the same however many workers there are (a test checks it).
 */
import { Data, Effect, type Scope } from "effect"
import { Worker } from "node:worker_threads"
import { sourceUrl } from "../paths.ts"
import type { TokenizerFiles } from "../tokenizer.ts"

class EncodePoolError extends Data.TaggedError("EncodePoolError")<{ readonly message: string }> {}

export interface EncodePool {
  readonly size: number
  /** The ids of each text, without special tokens, in the order given. */
  readonly encode: (texts: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Int32Array>, EncodePoolError>
}

type Resume = (result: Effect.Effect<ReadonlyArray<Int32Array>, EncodePoolError>) => void

interface Member {
  readonly worker: Worker
  readonly pending: Map<number, Resume>
  failure: string | undefined
}

type Reply = { readonly id: number; readonly ids: ReadonlyArray<Int32Array> } | { readonly id: number; readonly error: string }

const WORKER = sourceUrl("tokenizer/encode-worker.mjs")

/** Starts `size` workers for the tokenizer in `files`; they stop when the scope closes. */
export const encodePool = (files: TokenizerFiles, size: number): Effect.Effect<EncodePool, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() =>
        Array.from({ length: size }, (): Member => {
          const member: Member = {
            worker: new Worker(WORKER, { workerData: { json: files.json, config: files.config } }),
            pending: new Map(),
            failure: undefined
          }
          const failAll = (message: string) => {
            member.failure ??= message
            member.pending.forEach((resume) => resume(Effect.fail(new EncodePoolError({ message }))))
            member.pending.clear()
          }
          member.worker.on("message", (reply: Reply) => {
            const resume = member.pending.get(reply.id)
            member.pending.delete(reply.id)
            resume?.("error" in reply ? Effect.fail(new EncodePoolError({ message: `a tokenizer worker failed: ${reply.error}` })) : Effect.succeed(reply.ids))
          })
          member.worker.on("error", (error) => failAll(`a tokenizer worker failed: ${error.message}`))
          member.worker.on("exit", (code) => failAll(`a tokenizer worker exited (code ${code})`))
          return member
        })
      ),
      (members) => Effect.promise(() => Promise.all(members.map((m) => m.worker.terminate())))
    ),
    (members): EncodePool => {
      let nextId = 0
      return {
        size,
        encode: (texts) =>
          Effect.async<ReadonlyArray<Int32Array>, EncodePoolError>((resume) => {
            // The least busy worker that still works.
            const member = members.filter((m) => m.failure === undefined).sort((a, b) => a.pending.size - b.pending.size)[0]
            if (member === undefined) return resume(Effect.fail(new EncodePoolError({ message: members[0]?.failure ?? "no tokenizer workers" })))
            const id = nextId++
            member.pending.set(id, resume)
            member.worker.postMessage({ id, texts })
          })
      }
    }
  )
