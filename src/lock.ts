/**
 * One writer per cache: `pipeline run` and `pipeline gc` hold `<cache>/lock`
 * while they work. A lock whose process is gone (kill -9, a crash) is taken over.
 */
import { FileSystem } from "@effect/platform"
import { Effect } from "effect"
import { hostname } from "node:os"
import { LockError } from "./errors.ts"

interface LockOwner {
  readonly pid: number
  readonly host: string
  readonly command: string
  readonly startedAt: string
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

const describe = (owner: LockOwner): string => {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(owner.startedAt)) / 1000))
  return `pid ${owner.pid} on ${owner.host} (${owner.command}, started ${seconds}s ago)`
}

/** Holds the lock for the enclosing scope. */
export const acquireLock = (lockFile: string, command: string) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const owner: LockOwner = { pid: process.pid, host: hostname(), command, startedAt: new Date().toISOString() }
      for (let attempt = 0; attempt < 3; attempt++) {
        const created = yield* fs.writeFileString(lockFile, JSON.stringify(owner), { flag: "wx" }).pipe(
          Effect.as(true),
          Effect.catchTag("SystemError", (e) => e.reason === "AlreadyExists" ? Effect.succeed(false) : Effect.fail(e))
        )
        if (created) return fs
        const text = yield* fs.readFileString(lockFile).pipe(Effect.orElseSucceed(() => ""))
        const holder = parseOwner(text)
        if (holder !== undefined && (holder.host !== owner.host || alive(holder.pid))) {
          return yield* new LockError({
            message: `the cache ${lockFile.replace(/\/lock$/, "")} is in use by ${describe(holder)}. Wait for it to finish, or give this run another --cache-dir.`
          })
        }
        // The holder is gone: its lock is stale.
        yield* fs.remove(lockFile).pipe(Effect.ignore)
      }
      return yield* new LockError({ message: `could not take the cache lock ${lockFile}` })
    }).pipe(
      Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(new LockError({ message: `cannot create the cache lock ${lockFile}: ${e.message}` })))
    ),
    (fs) => fs.remove(lockFile).pipe(Effect.ignore)
  )

const parseOwner = (text: string): LockOwner | undefined => {
  try {
    const value = JSON.parse(text) as Partial<LockOwner>
    return typeof value.pid === "number" && typeof value.host === "string"
      ? { pid: value.pid, host: value.host, command: String(value.command ?? "?"), startedAt: String(value.startedAt ?? new Date().toISOString()) }
      : undefined
  } catch {
    return undefined
  }
}
