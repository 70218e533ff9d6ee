/**
 * Retrying HTTP requests, for every client that talks to a remote service (the hub,
 * the Oxylabs plug-in): a failure worth another try is a `Transient`; a 429 or 5xx
 * carries the server's Retry-After; `retrySchedule` backs off exponentially with
 * jitter, waits what Retry-After asks instead where the server asks, and does not
 * retry at all when it asks for longer than a run should sit through.
 */
import { Data, Duration, Effect, Schedule } from "effect"

/** A failure worth retrying; the one left after the last retry is turned into the caller's own error. */
export class Transient extends Data.TaggedError("Transient")<{
  /**
   * network: no answer; refused: nothing listens there, or the name does not resolve
   * (not retried: waiting will not change it); timeout: no answer in time; status: a
   * 429 or 5xx; interrupted: a body that broke off or stalled; integrity: bytes that
   * do not hash to what was announced.
   */
  readonly kind: "network" | "refused" | "timeout" | "status" | "interrupted" | "integrity"
  readonly detail: string
  readonly status?: number
  readonly retryAfter?: Duration.Duration
}> {}

/** A Retry-After header (delay-seconds or an HTTP date) as the wait from `now`; undefined when it says neither. */
export const retryAfter = (header: string | undefined, now: number): Duration.Duration | undefined => {
  const text = header?.trim() ?? ""
  if (text === "") return undefined
  if (/^\d+$/.test(text)) return Duration.seconds(Number(text))
  // An HTTP date names its day and month ("Mon, 02 Jun 2025 09:00:30 GMT"); Date.parse alone reads "1.5" as a date in 2001.
  const date = /[A-Za-z]{3}/.test(text) ? Date.parse(text) : NaN
  return Number.isNaN(date) ? undefined : Duration.millis(Math.max(0, date - now))
}

/** Errors that waiting will not fix soon: no listener, no route, no such host. "bad port" is fetch refusing a port on the WHATWG list (such as 9) before connecting. */
const UNREACHABLE = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|bad port/

/** The codes and messages down an error's chain of causes (fetch nests the socket's error). */
const causeChain = (error: unknown): string => {
  const parts: Array<string> = []
  let current: unknown = error
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const { code, message } = current as { code?: unknown; message?: unknown }
    if (typeof code === "string") parts.push(code)
    if (typeof message === "string") parts.push(message)
    current = (current as { cause?: unknown }).cause
  }
  return parts.join(" ")
}

/** A request that got no answer: refused (final) when nothing can answer there, else a network failure (retried). */
export const requestFailure = (error: { readonly message: string }, detail: string = error.message): Transient =>
  new Transient({ kind: UNREACHABLE.test(causeChain(error)) ? "refused" : "network", detail })

interface RetryOptions {
  /** The first retry's delay, doubled for each next one, jittered. */
  readonly base: Duration.DurationInput
  readonly retries: number
  /** A longer Retry-After is not waited out: the failure is final, and its message can say when to come back. */
  readonly maxRetryAfter: Duration.DurationInput
  /** Told of each retry before its wait: the failure, the retry's number (from 1) and the wait. */
  readonly onRetry?: (error: Transient, attempt: number, delay: Duration.Duration) => Effect.Effect<void>
}

/** Whether a failure is a Transient worth another try. */
const isRetryable = (maxRetryAfter: Duration.DurationInput) => (error: unknown): error is Transient =>
  error instanceof Transient && error.kind !== "refused" &&
  (error.retryAfter === undefined || Duration.lessThanOrEqualTo(error.retryAfter, maxRetryAfter))

/** Retries Transients only (see `isRetryable`): jittered exponential backoff, or the server's Retry-After where it gave one. */
export const retrySchedule = (options: RetryOptions): Schedule.Schedule<unknown, unknown> =>
  Schedule.exponential(options.base).pipe(
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(options.retries)),
    Schedule.intersect(Schedule.identity<unknown>()),
    Schedule.whileInput(isRetryable(options.maxRetryAfter)),
    Schedule.modifyDelayEffect(([[, retry], error], backoff) => {
      const transient = error as Transient
      const delay = transient.retryAfter ?? backoff
      return Effect.as(options.onRetry?.(transient, retry + 1, delay) ?? Effect.void, delay)
    })
  )
