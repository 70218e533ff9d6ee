/**
 * One writer per cache: `pipeline run` and `pipeline gc` hold `<cache>/lock` while
 * they work. A lock whose process is gone (kill -9, a crash) is taken over, and so is
 * one whose pid now names another process (a pid reused after a reboot or a crash),
 * where the process's start time, recorded in the lock, proves it. What cannot be
 * proved here (a lock from another host, or a live process that may be the holder) is
 * refused, and `pipeline unlock` shows the holder and clears the lock by hand.
 */
import { FileSystem } from "@effect/platform"
import { Effect } from "effect"
import { hostname } from "node:os"
import { LockError } from "./errors.ts"

export interface LockOwner {
  readonly pid: number
  readonly host: string
  readonly command: string
  readonly startedAt: string
  /** The process's start time (field 22 of /proc/PID/stat), where the system has one: a reused pid has another. */
  readonly processStart?: string | undefined
}

/** What the lock's holder is now, as far as this machine can tell. */
export type HolderState =
  /** The holder runs on this host: the same process (same start time), or a live process that is a pipeline. */
  | { readonly _tag: "Running"; readonly commandLine: string | undefined }
  /** No process with the holder's pid runs on this host: the lock is stale. */
  | { readonly _tag: "Gone" }
  /** The pid runs, but it started after the lock was taken: another process now has it, and the lock is stale. */
  | { readonly _tag: "Reused"; readonly commandLine: string | undefined }
  /**
   * The pid runs, and nothing proves whether it is the holder: the lock has no start time
   * (taken before they were recorded, or on a system without /proc), and the process
   * does not look like a pipeline, or cannot be inspected.
   */
  | { readonly _tag: "Unproven"; readonly commandLine: string | undefined }
  /** The holder is on another host: this one cannot see its processes. */
  | { readonly _tag: "OtherHost" }

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Field 22 of /proc/PID/stat (clock ticks since boot); undefined without /proc. The command name may hold spaces and parentheses, so count from the last ")". */
const processStart = (fs: FileSystem.FileSystem, pid: number | "self") =>
  fs.readFileString(`/proc/${pid}/stat`).pipe(
    Effect.map((stat) => stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]),
    Effect.orElseSucceed(() => undefined)
  )

const commandLineOf = (fs: FileSystem.FileSystem, pid: number) =>
  fs.readFileString(`/proc/${pid}/cmdline`).pipe(
    Effect.map((text) => text.split("\0").filter((part) => part !== "").join(" ") || undefined),
    Effect.orElseSucceed(() => undefined)
  )

export const holderState = (owner: LockOwner) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    if (owner.host !== hostname()) return { _tag: "OtherHost" } satisfies HolderState
    if (!alive(owner.pid)) return { _tag: "Gone" } satisfies HolderState
    const [started, commandLine] = [yield* processStart(fs, owner.pid), yield* commandLineOf(fs, owner.pid)]
    if (owner.processStart !== undefined && started !== undefined) {
      return (started === owner.processStart ? { _tag: "Running", commandLine } : { _tag: "Reused", commandLine }) satisfies HolderState
    }
    // No start time to compare: only the command line tells, and only that it is some pipeline.
    return (commandLine !== undefined && /pipeline/.test(commandLine) ? { _tag: "Running", commandLine } : { _tag: "Unproven", commandLine }) satisfies HolderState
  })

const ago = (iso: string): string => {
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000)
  if (!Number.isFinite(seconds)) return "at an unknown time"
  const [amount, unit] = seconds < 120 ? [Math.max(0, seconds), "s"] : seconds < 7200 ? [Math.round(seconds / 60), " min"] : seconds < 172_800 ? [Math.round(seconds / 3600), " h"] : [Math.round(seconds / 86_400), " days"]
  return `${amount}${unit} ago`
}

/** `pid 1234 on host (pipeline run gsm8k, started 12s ago)`. */
export const describeOwner = (owner: LockOwner): string => `pid ${owner.pid} on ${owner.host} (${owner.command}, started ${ago(owner.startedAt)})`

/** The holder in full, one fact a line, for `pipeline unlock`. */
export const describeOwnerInFull = (owner: LockOwner, state: HolderState): string =>
  [
    `  pid:     ${owner.pid}`,
    `  host:    ${owner.host}${owner.host === hostname() ? " (this host)" : ""}`,
    `  command: ${owner.command}`,
    `  since:   ${owner.startedAt} (${ago(owner.startedAt)})`,
    `  now:     ${stateLine(owner, state)}`
  ].join("\n")

const stateLine = (owner: LockOwner, state: HolderState): string => {
  switch (state._tag) {
    case "Running":
      return `running${state.commandLine === undefined ? "" : `: ${state.commandLine}`}`
    case "Gone":
      return `no process ${owner.pid} runs on this host: the lock is stale`
    case "Reused":
      return `pid ${owner.pid} belongs to a process started after the lock was taken${state.commandLine === undefined ? "" : ` (${state.commandLine})`}: the lock is stale`
    case "Unproven":
      return state.commandLine === undefined
        ? `pid ${owner.pid} runs, and this host cannot tell what it is: check with ps -p ${owner.pid} that it is not a pipeline`
        : `pid ${owner.pid} runs ${state.commandLine}, which does not look like a pipeline: the lock is probably stale`
    case "OtherHost":
      return `on another host: check there whether pid ${owner.pid} still runs (ps -p ${owner.pid})`
  }
}

const unlockHint = (cacheDir: string) => `\`pipeline unlock --cache-dir ${cacheDir}\` shows the holder and clears a stale lock`

/** Why a run cannot take the lock, and what to do about it. */
const refusal = (lockFile: string, owner: LockOwner, state: HolderState): string => {
  const cacheDir = lockFile.replace(/\/lock$/, "")
  const holder = `the cache ${cacheDir} is in use by ${describeOwner(owner)}`
  switch (state._tag) {
    case "OtherHost":
      return `${holder}. This host cannot see ${owner.host}'s processes: wait for it to finish, or give this run another --cache-dir. If pid ${owner.pid} no longer runs on ${owner.host} (check there: ps -p ${owner.pid}), ${unlockHint(cacheDir)}.`
    case "Unproven":
      return `${holder}. Pid ${owner.pid} now runs ${state.commandLine === undefined ? `a process this host cannot inspect (ps -p ${owner.pid} shows it)` : `${state.commandLine}, which does not look like a pipeline`}: if the pid was reused after that run died, ${unlockHint(cacheDir)}.`
    default:
      return `${holder}. Wait for it to finish, or give this run another --cache-dir. If that process is not the run that took the lock, ${unlockHint(cacheDir)}.`
  }
}

/** Holds the lock for the enclosing scope. */
export const acquireLock = (lockFile: string, command: string) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const owner: LockOwner = { pid: process.pid, host: hostname(), command, startedAt: new Date().toISOString(), processStart: yield* processStart(fs, "self") }
      for (let attempt = 0; attempt < 3; attempt++) {
        const created = yield* fs.writeFileString(lockFile, JSON.stringify(owner), { flag: "wx" }).pipe(
          Effect.as(true),
          Effect.catchTag("SystemError", (e) => e.reason === "AlreadyExists" ? Effect.succeed(false) : Effect.fail(e))
        )
        if (created) return fs
        const text = yield* fs.readFileString(lockFile).pipe(Effect.orElseSucceed(() => ""))
        const holder = parseOwner(text)
        if (holder !== undefined) {
          const state = yield* holderState(holder)
          if (state._tag !== "Gone" && state._tag !== "Reused") return yield* new LockError({ message: refusal(lockFile, holder, state) })
        }
        // The holder is gone, or the file is not a lock at all: it is stale.
        yield* fs.remove(lockFile).pipe(Effect.ignore)
      }
      return yield* new LockError({ message: `could not take the cache lock ${lockFile}` })
    }).pipe(
      Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(new LockError({ message: `cannot create the cache lock ${lockFile}: ${e.message}` })))
    ),
    (fs) => fs.remove(lockFile).pipe(Effect.ignore)
  )

/** The lock as it is now: its text, its holder if the text names one, and what the holder is. Undefined when there is no lock. */
export const inspectLock = (lockFile: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(lockFile).pipe(
      Effect.map((content): string | undefined => content),
      Effect.catchTag("SystemError", (e) => e.reason === "NotFound" ? Effect.succeed(undefined) : Effect.fail(e))
    )
    if (text === undefined) return undefined
    const owner = parseOwner(text)
    return { text, owner, state: owner === undefined ? undefined : yield* holderState(owner) }
  }).pipe(Effect.catchTags({ SystemError: lockReadError(lockFile), BadArgument: lockReadError(lockFile) }))

/** Removes the lock if it still holds `text`: a run that took it over since it was inspected keeps it. */
export const removeLock = (lockFile: string, text: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const now = yield* fs.readFileString(lockFile).pipe(Effect.orElseSucceed(() => undefined))
    if (now === undefined) return
    if (now !== text) {
      return yield* new LockError({ message: `the lock ${lockFile} changed while you were asked (another run took it): run pipeline unlock again to see its new holder` })
    }
    yield* fs.remove(lockFile)
  }).pipe(Effect.catchTags({ SystemError: lockReadError(lockFile), BadArgument: lockReadError(lockFile) }))

const lockReadError = (lockFile: string) => (e: { readonly message: string }) =>
  Effect.fail(new LockError({ message: `cannot read or remove the cache lock ${lockFile}: ${e.message}` }))

const parseOwner = (text: string): LockOwner | undefined => {
  try {
    const value = JSON.parse(text) as Partial<LockOwner>
    return Number.isSafeInteger(value.pid) && value.pid! > 0 && typeof value.host === "string"
      ? {
        pid: value.pid!,
        host: value.host,
        command: String(value.command ?? "?"),
        startedAt: String(value.startedAt ?? "an unknown time"),
        processStart: typeof value.processStart === "string" ? value.processStart : undefined
      }
      : undefined
  } catch {
    return undefined
  }
}
