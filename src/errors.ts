/**
 * Every failure a user can meet, as a tagged value, and the one place that maps
 * them to an exit code and a message.
 *
 * Exit codes: 0 success, 1 a stage failed, 2 a bad command or a bad pipeline file
 * (130 interrupted; 70 a bug of ours: main.ts).
 */
import { Data } from "effect"
import type { HubError } from "./hub/errors.ts"

/** A problem located in a pipeline file (or in a `--set` override). */
export interface Diagnostic {
  /** `file:line:col`, or a description of where the value came from (`--set a.b=c`). */
  readonly location: string
  /** The key path inside the document, such as `stages.train.with.epochs`. */
  readonly path: string
  readonly message: string
}

/** The pipeline file is unreadable, malformed or invalid. Lists every problem found. */
export class SpecError extends Data.TaggedError("SpecError")<{
  readonly file: string
  readonly diagnostics: ReadonlyArray<Diagnostic>
}> {
  override get message(): string {
    return [...this.diagnostics]
      .sort(byPosition)
      .map((d) => `${d.location}${d.path === "" ? "" : ` ${d.path}`}: ${d.message}`)
      .join("\n")
  }
}

const position = (location: string): [number, number] => {
  const match = /:(\d+):(\d+)$/.exec(location)
  return match ? [Number(match[1]), Number(match[2])] : [0, 0]
}

const byPosition = (a: Diagnostic, b: Diagnostic): number => {
  const [la, ca] = position(a.location)
  const [lb, cb] = position(b.location)
  return la - lb || ca - cb
}

/** A bad command line: unknown stage in `--only`, a malformed `--set`, and so on. */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

/** A stage's own failure: its message is shown to the user as is. */
export class StageError extends Data.TaggedError("StageError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** One or more stages failed during a run (their errors were already reported). */
export class RunFailed extends Data.TaggedError("RunFailed")<{ readonly failed: ReadonlyArray<string> }> {
  override get message(): string {
    return `${this.failed.length} stage(s) failed: ${this.failed.join(", ")}`
  }
}

/** The artifact store could not be read or written. */
export class StoreError extends Data.TaggedError("StoreError")<{ readonly message: string; readonly cause?: unknown }> {}

/** The remote store (S3) or the job queue (Redis) could not be used, or sent something that failed its checks. */
export class RemoteError extends Data.TaggedError("RemoteError")<{
  readonly message: string
  /** The remote sent something that failed its checks (not a network or server failure): never use it. */
  readonly corrupt?: boolean
}> {}

/** Another process holds the cache lock. */
export class LockError extends Data.TaggedError("LockError")<{ readonly message: string }> {}

export type UserError = SpecError | UsageError | StageError | RunFailed | StoreError | LockError | HubError | RemoteError

/**
 * The exit code of each error a user can meet: 2 for a bad command or file, 1 for a
 * failure while working. The compiler checks that every tag of UserError is here.
 */
const EXIT_CODES: { readonly [Tag in UserError["_tag"]]: 1 | 2 } = {
  SpecError: 2,
  UsageError: 2,
  StageError: 1,
  HubError: 1,
  RunFailed: 1,
  StoreError: 1,
  LockError: 1,
  RemoteError: 1
}

export const exitCodeOf = (error: UserError): number => EXIT_CODES[error._tag]

export const isUserError = (error: unknown): error is UserError =>
  typeof error === "object" && error !== null && Object.hasOwn(EXIT_CODES, (error as { _tag?: unknown })._tag as PropertyKey)

/** Levenshtein distance, for "did you mean" suggestions. */
const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1))
      diagonal = above
    }
  }
  return row[b.length]!
}

/** The closest candidate to `name`, if it is close enough to be a likely typo. */
export const didYouMean = (name: string, candidates: Iterable<string>): string | undefined => {
  let best: string | undefined
  let bestScore = Infinity
  for (const candidate of candidates) {
    const score = distance(name.toLowerCase(), candidate.toLowerCase())
    if (score < bestScore) {
      best = candidate
      bestScore = score
    }
  }
  return best !== undefined && bestScore <= Math.max(1, Math.floor(name.length / 3)) ? best : undefined
}

export const suggestion = (name: string, candidates: Iterable<string>): string => {
  const close = didYouMean(name, candidates)
  return close === undefined ? "" : ` (did you mean "${close}"?)`
}
