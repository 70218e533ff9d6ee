/**
 * The HTTP retry helper (src/http-retry.ts) that the hub client and the Oxylabs
 * plug-in share: Retry-After, which failures are retried, and the waits, on the TestClock.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, TestClock } from "effect"
import { requestFailure, retryAfter, retrySchedule, Transient } from "../src/http-retry.ts"

const now = Date.parse("2025-06-02T09:00:00Z")

/** An effect that fails with `errors` in turn, then succeeds; counts its attempts. */
const failing = (errors: ReadonlyArray<unknown>) => {
  let attempts = 0
  const effect = Effect.suspend(() => (attempts < errors.length ? Effect.fail(errors[attempts++]) : Effect.succeed(++attempts)))
  return { effect, attempts: () => attempts }
}

describe("http-retry: Retry-After", () => {
  it("reads delay-seconds and HTTP dates; a past date is no wait; anything else is none", () => {
    const ms = (header: string | undefined) => Option.map(Option.fromNullable(retryAfter(header, now)), Duration.toMillis)
    expect(ms("120")).toEqual(Option.some(120_000))
    expect(ms(" 7 ")).toEqual(Option.some(7_000))
    expect(ms("Mon, 02 Jun 2025 09:00:30 GMT")).toEqual(Option.some(30_000))
    expect(ms("Mon, 02 Jun 2025 08:00:00 GMT")).toEqual(Option.some(0))
    for (const header of [undefined, "", "soon", "-5", "1.5"]) expect(ms(header)).toEqual(Option.none())
  })

  it("a refused connection is final, any other network failure is retried", () => {
    const refused = requestFailure({ message: "fetch failed", cause: { code: "ECONNREFUSED", message: "connect ECONNREFUSED 127.0.0.1:9" } } as Error)
    expect(refused.kind).toBe("refused")
    expect(requestFailure(new Error("other side closed"), "the answer broke off").detail).toBe("the answer broke off")
    expect(requestFailure(new Error("other side closed")).kind).toBe("network")
  })
})

describe("http-retry: the schedule", () => {
  it.effect("waits what Retry-After asks instead of its backoff, and tells each retry", () =>
    Effect.gen(function* () {
      const told: Array<string> = []
      const schedule = retrySchedule({
        base: "1 hour",
        retries: 3,
        maxRetryAfter: "5 minutes",
        onRetry: (error, attempt, delay) => Effect.sync(() => void told.push(`${attempt} ${error.detail} ${Duration.format(delay)}`))
      })
      const { effect, attempts } = failing([
        new Transient({ kind: "status", status: 429, detail: "HTTP 429", retryAfter: Duration.seconds(30) }),
        new Transient({ kind: "status", status: 503, detail: "HTTP 503", retryAfter: Duration.zero })
      ])
      const fiber = yield* Effect.fork(Effect.retry(effect, schedule))
      yield* TestClock.adjust("29 seconds")
      expect(attempts()).toBe(1)
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(fiber)).toBe(3)
      expect(told).toEqual(["1 HTTP 429 30s", "2 HTTP 503 0"])
    }))

  it.effect("backs off exponentially (jittered) without a Retry-After, `retries` times at most", () =>
    Effect.gen(function* () {
      const error = new Transient({ kind: "timeout", detail: "no answer in 10s" })
      const delays: Array<number> = []
      const schedule = retrySchedule({
        base: "1 second",
        retries: 2,
        maxRetryAfter: "5 minutes",
        onRetry: (_, __, delay) => Effect.sync(() => void delays.push(Duration.toMillis(delay)))
      })
      const { effect, attempts } = failing([error, error, error, error])
      const fiber = yield* Effect.fork(Effect.flip(Effect.retry(effect, schedule)))
      yield* TestClock.adjust("1 minute")
      expect(yield* Fiber.join(fiber)).toBe(error)
      expect(attempts()).toBe(3)
      expect(delays).toHaveLength(2)
      // Jittered between 0.8 and 1.2 times 1 s, then 2 s.
      expect(delays[0]).toBeGreaterThanOrEqual(800)
      expect(delays[0]).toBeLessThanOrEqual(1200)
      expect(delays[1]).toBeGreaterThanOrEqual(1600)
      expect(delays[1]).toBeLessThanOrEqual(2400)
    }))

  it.effect("does not retry a wait longer than the limit, a refused connection, or any other error", () =>
    Effect.gen(function* () {
      const schedule = retrySchedule({ base: "1 millis", retries: 5, maxRetryAfter: "5 minutes" })
      for (const error of [
        new Transient({ kind: "status", status: 429, detail: "HTTP 429", retryAfter: Duration.minutes(10) }),
        new Transient({ kind: "refused", detail: "ECONNREFUSED" }),
        new Error("not a transient failure")
      ]) {
        const { effect, attempts } = failing([error])
        expect(yield* Effect.flip(Effect.retry(effect, schedule))).toBe(error)
        expect(attempts()).toBe(1)
      }
    }))
})
