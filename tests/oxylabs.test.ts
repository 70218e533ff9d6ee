/**
 * The Oxylabs review scraper, run as users run it (the CLI, a pipeline file, the
 * plug-in from stages/) against a loopback server that speaks Oxylabs' protocol.
 */
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Duration, Either } from "effect"
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest"
import { decodeIpc, rowAt } from "../src/arrow.ts"
import { retryAfter } from "../src/http-retry.ts"
import { helpfulCount, parseAnswer, parseDuration, redactor, reviewDate, reviewTitle, stars } from "../stages/oxylabs-reviews.ts"
import { cliInProcess, REPO, tempDir, writeFile } from "./helpers.ts"
import { writeTinyModel } from "./support/tiny-model.ts"
import { type MockOptions, type OxylabsMock, productFor, startOxylabsMock } from "./support/oxylabs-server.ts"

const STAGE = join(REPO, "stages/oxylabs-reviews.ts")
const USER = "acme_scraper"
const PASSWORD = "Pw-7f3Kq9zR2-oxylabs-distinctive"
const WRONG_PASSWORD = "Wr0ng-Pw-5512-also-distinctive"

const OK = "B0DZDBWM5B"
const SHARED = "B08N5WRWNW"
const RATE = "B0RATE4290"
const RATE_DATE = "B0RATEDATE"
const FLAKY = "B0FLAKY500"
const MALFORMED = "B0MALFORM1"
const NO_REVIEWS = "B0NOREVIEW"
const HANG = "B0HANG0000"

/** Every run's stdout and stderr, and every cache folder used: checked for the password at the end. */
const outputs: Array<string> = []
const caches: Array<string> = []
let mock: OxylabsMock | undefined
const savedEnv = { user: process.env.OXYLABS_USERNAME, password: process.env.OXYLABS_PASSWORD }

const startMock = async (options: Partial<MockOptions> = {}) => {
  mock = await startOxylabsMock({ username: USER, password: PASSWORD, ...options })
  return mock
}

beforeEach(() => {
  process.env.OXYLABS_USERNAME = USER
  process.env.OXYLABS_PASSWORD = PASSWORD
})

afterEach(async () => {
  await mock?.close()
  mock = undefined
  for (const [key, value] of [["OXYLABS_USERNAME", savedEnv.user], ["OXYLABS_PASSWORD", savedEnv.password]] as const) {
    if (value === undefined) delete process.env[key]
    else process.env[key] = value
  }
})

const pipeline = (params: Record<string, unknown>): string =>
  writeFile(tempDir(), "reviews.yaml", `name: reviews-test
stages:
  reviews:
    uses: ${JSON.stringify(STAGE)}
    with: ${JSON.stringify({ backoff: "10ms", timeout: 5, ...params })}
`)

const newCache = (): string => {
  const dir = tempDir()
  caches.push(dir)
  return dir
}

interface StageJson {
  readonly status: string
  readonly reason: string
  readonly metrics: Record<string, number>
  readonly outputs: { readonly entry: string; readonly dataset: { readonly splits: Record<string, Array<{ path: string }>> } } | null
}

const cli = async (args: ReadonlyArray<string>) => {
  const result = await cliInProcess(args)
  outputs.push(result.stdout, result.stderr)
  return result
}

const run = async (file: string, cache: string, ...extra: Array<string>) => {
  const result = await cli(["run", file, "--cache-dir", cache, "--json", ...extra])
  const stage = result.stdout.trim() === "" ? undefined : (JSON.parse(result.stdout) as { stages: Array<StageJson> }).stages[0]
  return { ...result, stage }
}

const tableOf = (stage: StageJson | undefined) => decodeIpc(readFileSync(stage!.outputs!.dataset.splits.train![0]!.path))
const rowsOf = (stage: StageJson | undefined) => {
  const table = tableOf(stage)
  return Array.from({ length: table.numRows }, (_, i) => rowAt(table, i))
}

describe("oxylabs-reviews: scraping", () => {
  it("writes one row per review with typed columns, deduplicated by review id, from the payload Oxylabs expects", async () => {
    const first = productFor(OK)
    const second = productFor(SHARED)
    // A variant's page shows some of the same reviews.
    const server = await startMock({ products: { [SHARED]: { ...second, reviews: [first.reviews[0]!, ...second.reviews.slice(1)] } } })
    const result = await run(pipeline({ asins: [OK, SHARED], geo_location: "10001", endpoint: server.url }), newCache())
    expect(result.code, result.stderr).toBe(0)
    expect(result.stage!.metrics).toMatchObject({ asins_ok: 2, asins_failed: 0, reviews: 9, duplicates: 1, requests: 2, retries: 0 })

    const table = tableOf(result.stage)
    expect(table.schema.fields.map((f) => `${f.name}:${f.type}`)).toEqual([
      "asin:Utf8", "review_id:Utf8", "title:Utf8", "author:Utf8", "rating:Int32", "content:Utf8",
      "date:Utf8", "verified:Bool", "helpful_count:Int32", "product_title:Utf8"
    ])
    const rows = rowsOf(result.stage)
    expect(rows[0]).toEqual({
      asin: OK,
      review_id: first.reviews[0]!.id,
      title: "Love it",
      author: "Dana K.",
      rating: 5,
      content: "Exactly as described, would buy again.",
      date: "2025-01-10",
      verified: true,
      helpful_count: 0,
      product_title: first.title
    })
    expect(rows.map((r) => r.rating)).toEqual([5, 4, 3, 2, 1, 4, 3, 2, 1])
    expect(new Set(rows.map((r) => r.review_id)).size).toBe(9)
    expect(rows.filter((r) => r.asin === SHARED)).toHaveLength(4)

    expect(server.received.map((q) => q.payload)).toEqual(expect.arrayContaining([
      { source: "amazon_product", domain: "com", query: OK, parse: true, geo_location: "10001" },
      { source: "amazon_product", domain: "com", query: SHARED, parse: true, geo_location: "10001" }
    ]))
    expect(server.received.every((q) => q.authorized)).toBe(true)
    expect(result.stderr).toContain(`${OK}: 5 reviews`)
    expect(result.stderr).toContain("2/2 asins")
  })

  it("reads amazon_reviews pages: star-prefixed titles, string flags, overlapping pages, day-first dates", async () => {
    const server = await startMock({ pageSize: 3 })
    const result = await run(pipeline({ asins: [OK], source: "amazon_reviews", pages: 2, domain: "co.uk", endpoint: server.url }), newCache())
    expect(result.code, result.stderr).toBe(0)
    expect(server.received[0]!.payload).toEqual({ source: "amazon_reviews", domain: "co.uk", query: OK, parse: true, pages: 2 })
    expect(result.stage!.metrics).toMatchObject({ reviews: 5, duplicates: 1 })
    const rows = rowsOf(result.stage)
    expect(rows.map((r) => r.title)).toEqual(["Love it", "Pretty good", "It's okay", "Disappointed", "Stopped working"])
    expect(rows.map((r) => r.verified)).toEqual([true, false, true, false, true])
    expect(rows.map((r) => r.helpful_count)).toEqual([0, 3, 6, 9, 12])
    expect(rows.map((r) => r.date)).toEqual(["2025-01-10", "2025-02-11", "2025-03-12", "2025-04-13", "2025-05-14"])
    expect(rows[0]!.product_title).toBe(productFor(OK).title)
  })

  it("keeps every column for a product without reviews", async () => {
    const server = await startMock({ products: { [OK]: { title: "New product", reviews: [] } } })
    const result = await run(pipeline({ asins: [OK], endpoint: server.url }), newCache())
    expect(result.code, result.stderr).toBe(0)
    const table = tableOf(result.stage)
    expect(table.numRows).toBe(0)
    expect(table.schema.fields.map((f) => f.name)).toEqual([
      "asin", "review_id", "title", "author", "rating", "content", "date", "verified", "helpful_count", "product_title"
    ])
  })
})

describe("oxylabs-reviews: failures", () => {
  it("honours Retry-After (seconds or an HTTP date) over its own backoff", async () => {
    const server = await startMock({
      script: {
        [RATE]: [{ status: 429, retryAfter: "0" }, "ok"],
        [RATE_DATE]: [{ status: 429, retryAfter: new Date(Date.now() - 5000).toUTCString() }, "ok"]
      }
    })
    // With an hour's backoff, only honouring Retry-After finishes within the test's timeout.
    const started = Date.now()
    const result = await run(pipeline({ asins: [RATE, RATE_DATE], backoff: "1h", endpoint: server.url }), newCache())
    expect(result.code, result.stderr).toBe(0)
    // Retry-After (0 s) wins over the 1 h backoff: far less than an hour, however busy the machine.
    expect(Date.now() - started).toBeLessThan(120_000)
    expect([server.requests(RATE), server.requests(RATE_DATE)]).toEqual([2, 2])
    expect(result.stage!.metrics).toMatchObject({ asins_ok: 2, requests: 4, retries: 2 })
    expect(result.stderr).toContain(`${RATE}: HTTP 429 (rate limited): Too many requests; retry 1 of 4 in 0ms (Retry-After)`)
  }, 180_000)

  it("retries 5xx with backoff, and gives up after `retries`", async () => {
    const server = await startMock({
      script: { [FLAKY]: [{ status: 500 }, { status: 500 }, "ok"], [OK]: [{ status: 503 }] }
    })
    const recovered = await run(pipeline({ asins: [FLAKY], endpoint: server.url }), newCache())
    expect(recovered.code, recovered.stderr).toBe(0)
    expect(server.requests(FLAKY)).toBe(3)
    expect(recovered.stage!.metrics).toMatchObject({ reviews: 5, retries: 2 })
    expect(recovered.stderr).toContain(`${FLAKY}: HTTP 500: Internal Server Error; retry 2 of 4`)

    const exhausted = await run(pipeline({ asins: [OK], retries: 2, endpoint: server.url }), newCache())
    expect(exhausted.code).toBe(1)
    expect(server.requests(OK)).toBe(3)
    expect(exhausted.stderr).toContain(`${OK}: HTTP 503: Internal Server Error (gave up after 3 attempts)`)
  })

  it("times out a request that never answers, and retries it", async () => {
    const server = await startMock({ script: { [HANG]: ["hang"] } })
    const started = Date.now()
    const result = await run(pipeline({ asins: [HANG], timeout: 0.3, retries: 1, endpoint: server.url }), newCache())
    expect(result.code).toBe(1)
    expect(server.requests(HANG)).toBe(2)
    expect(result.stderr).toContain(`${HANG}: no answer within 0.3s (gave up after 2 attempts)`)
    // The server never answers: only the timeout ends this (loose bound: busy machines are slow).
    expect(Date.now() - started).toBeLessThan(60_000)
  })

  it("stops at once when Oxylabs rejects the credentials, without retrying", async () => {
    process.env.OXYLABS_PASSWORD = WRONG_PASSWORD
    const server = await startMock()
    const result = await run(pipeline({ asins: [OK, SHARED, FLAKY], concurrency: 1, endpoint: server.url }), newCache())
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(`Oxylabs rejected the credentials for user "${USER}" (HTTP 401)`)
    expect(server.received).toHaveLength(1)

    process.env.OXYLABS_PASSWORD = PASSWORD
    const forbidden = await startOxylabsMock({ username: USER, password: PASSWORD, script: { [OK]: [{ status: 403, message: "Forbidden" }] } })
    const denied = await run(pipeline({ asins: [OK], endpoint: forbidden.url }), newCache())
    await forbidden.close()
    expect(denied.stderr).toContain(`Oxylabs rejected the credentials for user "${USER}" (HTTP 403`)
    expect(forbidden.requests(OK)).toBe(1)
  })

  it("names both variables when credentials are missing, before any request", async () => {
    delete process.env.OXYLABS_PASSWORD
    const server = await startMock()
    const result = await run(pipeline({ asins: [OK], endpoint: server.url }), newCache())
    expect(result.code).toBe(1)
    expect(result.stderr).toContain("Oxylabs credentials are missing: set OXYLABS_USERNAME and OXYLABS_PASSWORD in the environment (not set: OXYLABS_PASSWORD)")
    expect(server.received).toHaveLength(0)
  })

  it("on_error: fail lists each failed ASIN and why, and caches nothing", async () => {
    const server = await startMock({ script: { [MALFORMED]: ["malformed"], [NO_REVIEWS]: ["no-reviews"] } })
    const file = pipeline({ asins: [OK, MALFORMED, NO_REVIEWS], endpoint: server.url })
    const cache = newCache()
    const result = await run(file, cache)
    expect(result.code).toBe(1)
    expect(result.stderr).toContain("2 of 3 ASINs failed (on_error: fail; on_error: skip keeps the others):")
    expect(result.stderr).toContain(`  ${MALFORMED}: Oxylabs answered with malformed JSON (`)
    expect(result.stderr).toContain(`  ${NO_REVIEWS}: the answer has no results[0].content.reviews; parse_status_code 12000`)
    expect([server.requests(MALFORMED), server.requests(NO_REVIEWS)]).toEqual([1, 1])
    const status = await cli(["status", file, "--cache-dir", cache])
    expect(status.stdout).toMatch(/reviews\s+stale/)
  })

  it("on_error: skip reports the failed ASINs and keeps the rest; it fails only when all failed", async () => {
    const server = await startMock({ script: { [MALFORMED]: ["malformed"], [NO_REVIEWS]: ["no-reviews"] } })
    const partial = await run(pipeline({ asins: [OK, MALFORMED, NO_REVIEWS], on_error: "skip", endpoint: server.url }), newCache())
    expect(partial.code, partial.stderr).toBe(0)
    expect(partial.stage!.metrics).toMatchObject({ asins_ok: 1, asins_failed: 2, reviews: 5 })
    expect(partial.stderr).toContain(`${MALFORMED} failed: Oxylabs answered with malformed JSON`)
    expect(partial.stderr).toContain(`skipped 2 failed ASIN(s): ${MALFORMED}, ${NO_REVIEWS}`)
    expect(rowsOf(partial.stage).every((r) => r.asin === OK)).toBe(true)

    const none = await run(pipeline({ asins: [MALFORMED, NO_REVIEWS], on_error: "skip", endpoint: server.url }), newCache())
    expect(none.code).toBe(1)
    expect(none.stderr).toContain("all 2 ASINs failed:")
  })

  it("rejects bad params when the pipeline loads", async () => {
    const file = pipeline({ asins: ["b0dzdbwm5b", OK, OK], pages: 2, max_age: "1 day", on_error: "ignore" })
    const result = await cli(["dag", file])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(`"b0dzdbwm5b" is not an ASIN`)
    expect(result.stderr).toContain(`expected a duration such as 500ms, 30m, 24h or 7d, got "1 day"`)
    expect(result.stderr).toContain("on_error")
  })
})

describe("oxylabs-reviews: what the server sends back", () => {
  it("cuts the credentials out of error bodies that echo them, in the log and in the error", async () => {
    const basic = Buffer.from(`${USER}:${PASSWORD}`).toString("base64")
    const echo = `bad query from ${USER}:${PASSWORD} (Authorization: Basic ${basic})`
    const server = await startMock({
      script: {
        [FLAKY]: [{ status: 503, message: echo }, "ok"],
        [OK]: [{ status: 400, message: echo }],
        // The password straddles the 200 characters of the message that are shown.
        [MALFORMED]: [{ status: 400, message: `${"x".repeat(190)}${PASSWORD}` }]
      }
    })
    const skipped = await run(pipeline({ asins: [FLAKY, OK, MALFORMED], on_error: "skip", endpoint: server.url }), newCache())
    expect(skipped.code, skipped.stderr).toBe(0)
    expect(skipped.stderr).toContain(`${FLAKY}: HTTP 503: bad query from [redacted]:[redacted] (Authorization: Basic [redacted]); retry 1 of 4`)
    expect(skipped.stderr).toContain(`${OK} failed: Oxylabs refused the query with HTTP 400: bad query from [redacted]:[redacted] (Authorization: Basic [redacted])`)
    const failed = await run(pipeline({ asins: [OK], endpoint: server.url }), newCache())
    expect(failed.code).toBe(1)
    expect(failed.stderr).toContain(`the ASIN failed:\n  ${OK}: Oxylabs refused the query with HTTP 400: bad query from [redacted]`)
    for (const output of [skipped.stderr, failed.stderr]) {
      for (const secret of [PASSWORD, PASSWORD.slice(0, 8), basic, basic.slice(0, 12), USER]) expect(output).not.toContain(secret)
    }
  })

  it("redacts every form the credentials take: as typed, Basic's base64 with or without padding, JSON- and URL-escaped", () => {
    const redact = redactor("me@corp", 'p"w/ord')
    const basic = Buffer.from('me@corp:p"w/ord').toString("base64")
    expect(redact(`${basic} ${basic.replace(/=+$/, "")} p\\"w/ord p%22w%2Ford me%40corp me@corp`)).toBe(
      "[redacted] [redacted] [redacted] [redacted] [redacted] [redacted]"
    )
  })

  it("refuses a helpful_count beyond the Int32 column instead of wrapping it", async () => {
    const product = productFor(OK)
    const review = product.reviews[0]!
    const server = await startMock({ products: { [OK]: { ...product, reviews: [{ ...review, helpful: 12_345_678_901 }] } } })
    const result = await run(pipeline({ asins: [OK], endpoint: server.url }), newCache())
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(
      `${OK}: review ${review.id} has helpful_count "12345678901", more than an Int32 column holds (2,147,483,647): Oxylabs' answer looks wrong`
    )
    const answer = JSON.stringify({ results: [{ content: { reviews: [{ id: "R1", helpful_count: "12,345,678,901 people found this helpful" }] } }] })
    expect(Either.match(parseAnswer(answer, OK), { onLeft: (reason) => reason, onRight: () => "usable" })).toBe(
      `review R1 has helpful_count "12,345,678,901 people found this helpful", more than an Int32 column holds (2,147,483,647): Oxylabs' answer looks wrong`
    )
    expect(helpfulCount("2,147,483,647 people found this helpful")).toBe(2_147_483_647)
  })
})

describe("oxylabs-reviews: caching", () => {
  it("reuses a scrape until --force or until it is older than max_age, and status shows its age", async () => {
    const server = await startMock()
    const file = pipeline({ asins: [OK], max_age: "24h", endpoint: server.url })
    const cache = newCache()
    const first = await run(file, cache)
    expect(first.code, first.stderr).toBe(0)
    expect(first.stage!.status).toBe("ran")

    const again = await run(file, cache)
    expect(again.stage!.status).toBe("cached")
    expect(server.requests(OK)).toBe(1)
    expect((await cli(["status", file, "--cache-dir", cache])).stdout).toMatch(/reviews\s+fresh\s+\(cached \d+s ago/)
    // Tuning how the scrape runs is not a reason to scrape again.
    const tuned = await run(pipeline({ asins: [OK], max_age: "24h", endpoint: server.url, concurrency: 1, retries: 2, timeout: 9 }), cache)
    expect(tuned.stage!.status).toBe("cached")
    expect(server.requests(OK)).toBe(1)

    // Two days later, as far as the entry knows.
    const manifest = join(first.stage!.outputs!.entry, "manifest.json")
    const entry = JSON.parse(readFileSync(manifest, "utf8")) as { createdAt: string }
    writeFileSync(manifest, JSON.stringify({ ...entry, createdAt: new Date(Date.now() - 2 * 86_400_000).toISOString() }))
    expect((await cli(["status", file, "--cache-dir", cache])).stdout).toMatch(/reviews\s+stale\s+the cached output is 2d old \(max_age 24h\)/)
    const expired = await run(file, cache)
    expect(expired.stage!.status).toBe("ran")
    expect(expired.stage!.reason).toBe("the cached output is 2d old (max_age 24h)")
    expect(server.requests(OK)).toBe(2)

    const forced = await run(file, cache, "--force", "reviews")
    expect(forced.stage).toMatchObject({ status: "ran", reason: "forced" })
    expect(server.requests(OK)).toBe(3)
  })
})

describe("pipelines/reviews.yaml", () => {
  it("scrapes, labels the stars and builds prompts end to end", async () => {
    const server = await startMock()
    const cache = newCache()
    const file = join(REPO, "pipelines/reviews.yaml")
    const result = await cli(["run", file, "--until", "labeled", "--cache-dir", cache, "--json", "--set", `reviews.endpoint=${server.url}`, "--set", "reviews.backoff=10ms"])
    expect(result.code, result.stderr).toBe(0)
    const stages = (JSON.parse(result.stdout) as { stages: Array<StageJson & { id: string }> }).stages
    expect(stages.slice(0, 3).map((s) => `${s.id}:${s.status}`)).toEqual(["reviews:ran", "rated:ran", "labeled:ran"])
    const rows = rowsOf(stages[2])
    expect(rows).toHaveLength(15)
    const labels = rows.map((r) => `${r.rating}:${r.label}`)
    expect(new Set(labels)).toEqual(new Set(["5:positive", "4:positive", "3:neutral", "2:negative", "1:negative"]))
    const loved = rows.find((r) => r.title === "Love it")!
    expect(loved.review).toBe(
      "Classify the sentiment of this Amazon review as negative, neutral or positive.\n\nTitle: Love it\nReview: Exactly as described, would buy again.\nSentiment:"
    )
    expect(Object.keys(loved)).not.toContain("author")

    // The rest of the pipeline, offline: a tiny local model stands in for the hub's.
    const model = join(tempDir(), "tiny")
    await writeTinyModel(model, { hiddenSize: 16, layers: 1 })
    const rest = await cli(["run", file, "--cache-dir", cache, "--json", "--set", `reviews.endpoint=${server.url}`, "--set", "reviews.backoff=10ms",
      "--set", `tokenized.tokenizer=${model}`, "--set", `train.model=${model}`, "--set", "train.epochs=1", "--set", "evaluate.limit=4"])
    expect(rest.code, rest.stderr).toBe(0)
    const all = (JSON.parse(rest.stdout) as { stages: Array<StageJson & { id: string; metrics: Record<string, number> }> }).stages
    expect(all.map((s) => `${s.id}:${s.status}`)).toEqual(["reviews:cached", "rated:cached", "labeled:cached", "split:ran", "tokenized:ran", "train:ran", "evaluate:ran"])
    const evaluate = all.find((s) => s.id === "evaluate")!
    expect(evaluate.metrics.accuracy).toBeGreaterThanOrEqual(0)
    expect(evaluate.metrics.base_accuracy).toBeGreaterThanOrEqual(0)
  })
})

const filesUnder = (dir: string): Array<string> =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? filesUnder(path) : [path]
  })

afterAll(() => {
  // Every run above, failures and the 401 included: the password never reached the disk or the terminal.
  const secrets = [PASSWORD, WRONG_PASSWORD, Buffer.from(`${USER}:${PASSWORD}`).toString("base64"), Buffer.from(`${USER}:${WRONG_PASSWORD}`).toString("base64")]
  const files = caches.flatMap(filesUnder)
  if (caches.length > 0) expect(files.length).toBeGreaterThan(0)
  for (const file of files) {
    const content = readFileSync(file).toString("latin1")
    for (const secret of secrets) expect(content.includes(secret), `${secret} in ${file}`).toBe(false)
    expect(content.includes(USER), `the username in ${file}`).toBe(false)
  }
  for (const text of outputs) for (const secret of secrets) expect(text.includes(secret)).toBe(false)
})

describe("oxylabs-reviews: reading Oxylabs' values", () => {
  it("reads stars, helpful votes, verified flags, titles and dates in the shapes Oxylabs returns", () => {
    expect([stars(5), stars(4.6), stars("4.0 out of 5 stars"), stars("3,0 von 5 Sternen"), stars("n/a"), stars(0), stars(null)]).toEqual([5, 5, 4, 3, null, null, null])
    expect([helpfulCount(7), helpfulCount("One person found this helpful"), helpfulCount("1,024 people found this helpful"), helpfulCount(undefined)]).toEqual([7, 1, 1024, null])
    expect([reviewTitle("5.0 out of 5 stars Great sound"), reviewTitle("4,0 van 5 sterren Goed"), reviewTitle("3 of 5 pieces broke")]).toEqual(["Great sound", "Goed", "3 of 5 pieces broke"])
    expect([
      reviewDate("Reviewed in the United States on March 3, 2025"),
      reviewDate("Reviewed in the United Kingdom on 3 March 2025"),
      reviewDate("Rezension aus Deutschland vom 3. März 2025"),
      reviewDate("2025-03-03T10:00:00Z")
    ]).toEqual(["2025-03-03", "2025-03-03", "Rezension aus Deutschland vom 3. März 2025", "2025-03-03"])
  })

  it("reads Retry-After (with the hub client's helper) and durations", () => {
    const now = Date.parse("2025-06-02T09:00:00Z")
    const ms = (header: string) => {
      const wait = retryAfter(header, now)
      return wait === undefined ? undefined : Duration.toMillis(wait)
    }
    expect(ms("120")).toBe(120_000)
    expect(ms("Mon, 02 Jun 2025 09:00:30 GMT")).toBe(30_000)
    expect(ms("Mon, 02 Jun 2025 08:00:00 GMT")).toBe(0)
    expect(ms("soon")).toBeUndefined()
    expect([parseDuration("24h"), parseDuration("30m"), parseDuration("7d"), parseDuration("500ms"), parseDuration("1 day")]).toEqual([86_400_000, 1_800_000, 604_800_000, 500, undefined])
  })

  it("says why an answer is unusable", () => {
    const why = (body: string) => Either.match(parseAnswer(body, OK), { onLeft: (reason) => reason, onRight: () => "usable" })
    expect(why('{"results": []}')).toBe("the answer has no results")
    expect(why(JSON.stringify({ results: [{ content: "<html></html>", status_code: 404 }] }))).toBe(
      "the answer has no results[0].content.reviews; Amazon's page answered 404; content is unparsed HTML (is parse: true supported for this source?)"
    )
    expect(why('{"results": [{"content": {"reviews": [')).toMatch(/^Oxylabs answered with malformed JSON \(.+\); the body starts "\{\\"results/)
  })
})
