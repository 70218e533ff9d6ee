/**
 * `oxylabs-reviews`: Amazon product reviews through Oxylabs' Web Scraper API
 * (the realtime endpoint), as a dataset with one row per review. A plug-in, written
 * against the public stage interface only: `uses: ../stages/oxylabs-reviews.ts`.
 *
 * - `amazon_product` (the default) answers with the product page: `content.title`
 *   and, in `content.reviews`, the page's top reviews (about ten). `amazon_reviews`
 *   answers with review pages, one result per page (`pages` of them, about ten
 *   reviews each): `content.product_name`, titles that start with the stars ("5.0
 *   out of 5 stars Great"), `is_verified` as "True"; more reviews, where offered.
 * - Credentials come from OXYLABS_USERNAME and OXYLABS_PASSWORD, held as Redacted:
 *   not params, they enter no fingerprint, manifest or log line, and no message
 *   but the one naming the user whose credentials Oxylabs rejected. Text the server
 *   sends back (an error that echoes the query, say) has them cut out, in every form
 *   they could take there, before it is shown.
 * - Each request has a timeout; 429, 5xx and timeouts are retried with jittered
 *   exponential backoff, or after the server's Retry-After (`src/http-retry.ts`, as
 *   the hub client does). 401/403 fail the stage at once (every query would fail
 *   alike); any other failure is the ASIN's own, and `on_error` says whether the
 *   others make an acceptable dataset.
 * - Values are checked, not coerced: a helpful_count beyond the Int32 column fails
 *   the ASIN rather than wrapping around.
 * - Web data goes stale: `max_age` bounds how long a cached scrape is reused.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { Bool, Field, Int32, makeBuilder, makeData, RecordBatch, Schema as ArrowSchema, Struct, Table, Utf8 } from "apache-arrow"
import { Config, Data, Duration, Effect, Either, Redacted, Ref, Schema } from "effect"
import { writeDataset } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { requestFailure, retryAfter, retrySchedule, Transient } from "../src/http-retry.ts"
import { defineStage } from "../src/stage.ts"

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/** `500ms`, `30s`, `30m`, `24h`, `7d`, `2w` → milliseconds; undefined when malformed. */
export const parseDuration = (text: string): number | undefined => {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$/.exec(text.trim())
  return match === null ? undefined : Number(match[1]) * DURATION_UNITS[match[2]!]!
}

const DurationText = Schema.String.pipe(
  Schema.filter((text) => parseDuration(text) !== undefined || `expected a duration such as 500ms, 30m, 24h or 7d, got "${text}"`)
)

const Asin = Schema.String.pipe(
  Schema.filter((asin) => /^[A-Z0-9]{10}$/.test(asin) || `"${asin}" is not an ASIN: ten capital letters or digits, such as B0DZDBWM5B`)
)

const Params = Schema.Struct({
  asins: Schema.Array(Asin).pipe(
    Schema.minItems(1),
    Schema.filter((asins) => {
      const twice = asins.filter((asin, i) => asins.indexOf(asin) !== i)
      return twice.length === 0 || `listed more than once: ${[...new Set(twice)].join(", ")}`
    })
  ).annotations({ description: "The products, by ASIN" }),
  source: Schema.optionalWith(Schema.Literal("amazon_product", "amazon_reviews"), { default: () => "amazon_product" as const })
    .annotations({ description: "amazon_product: the product page's top reviews; amazon_reviews: review pages (more reviews)" }),
  pages: Schema.optional(Schema.Int.pipe(Schema.between(1, 100))).annotations({ description: "Review pages per ASIN (amazon_reviews only)" }),
  domain: Schema.optionalWith(Schema.String.pipe(Schema.pattern(/^[a-z]{2,3}(\.[a-z]{2,3})?$/)), { default: () => "com" })
    .annotations({ description: "The Amazon marketplace: com, co.uk, de, ..." }),
  geo_location: Schema.optional(Schema.String).annotations({ description: "Amazon's 'Deliver to' location, such as a ZIP code" }),
  parse: Schema.optionalWith(Schema.Literal(true), { default: () => true as const }).annotations({ description: "Always true: the stage reads Oxylabs' parsed JSON" }),
  concurrency: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 64)), { default: () => 4 }).annotations({ description: "Requests in flight at once" }),
  timeout: Schema.optionalWith(Schema.Number.pipe(Schema.positive()), { default: () => 30 }).annotations({ description: "Seconds to wait for one answer" }),
  retries: Schema.optionalWith(Schema.Int.pipe(Schema.between(0, 20)), { default: () => 4 }).annotations({ description: "Retries of a query after 429, 5xx or a timeout" }),
  backoff: Schema.optionalWith(DurationText, { default: () => "1s" }).annotations({ description: "The first retry's delay; doubled for each next one, with jitter" }),
  endpoint: Schema.optionalWith(Schema.String.pipe(Schema.pattern(/^https?:\/\/\S+$/)), { default: () => "https://realtime.oxylabs.io/v1/queries" }),
  on_error: Schema.optionalWith(Schema.Literal("fail", "skip"), { default: () => "fail" as const })
    .annotations({ description: "fail: any failed ASIN fails the stage; skip: keep the others (fails only if all failed)" }),
  max_age: Schema.optional(DurationText).annotations({ description: "Re-scrape when the cached reviews are older than this (24h, 7d, ...)" })
}).pipe(Schema.filter((p) => p.pages === undefined || p.source === "amazon_reviews" || "`pages` needs source: amazon_reviews"))

type Params = typeof Params.Type

/** 401/403: every query would fail alike. */
class CredentialsRejected extends Data.TaggedError("CredentialsRejected")<{ readonly status: number }> {}
/** The ASIN's own failure, the same on every try. */
class QueryFailed extends Data.TaggedError("QueryFailed")<{ readonly reason: string }> {}

/** A server may ask for a wait no run should sit through: longer ones are cut to this. */
const MAX_RETRY_AFTER = Duration.minutes(2)

interface Credentials {
  readonly username: string
  readonly password: Redacted.Redacted
}

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/**
 * Cuts the credentials out of text a server sent, in each form they can take there:
 * as typed, as Basic auth's base64 (padded or not), JSON- or URL-escaped. One pass
 * over one alternation of literals, longest first, so that no form is cut in half.
 */
export const redactor = (username: string, password: string): ((text: string) => string) => {
  const basic = Buffer.from(`${username}:${password}`).toString("base64")
  const forms = [basic, basic.replace(/=+$/, ""), ...[password, username].flatMap((secret) => [secret, JSON.stringify(secret).slice(1, -1), encodeURIComponent(secret)])]
  const unique = [...new Set(forms.filter((form) => form !== ""))].sort((a, b) => b.length - a.length)
  const pattern = new RegExp(unique.map(escapeRegex).join("|"), "g")
  return (text) => text.replace(pattern, "[redacted]")
}

const readCredentials = Effect.gen(function* () {
  const username = yield* Config.string("OXYLABS_USERNAME").pipe(Config.withDefault(""))
  const password = yield* Config.redacted(Config.string("OXYLABS_PASSWORD").pipe(Config.withDefault("")))
  const missing = [...(username === "" ? ["OXYLABS_USERNAME"] : []), ...(Redacted.value(password) === "" ? ["OXYLABS_PASSWORD"] : [])]
  if (missing.length > 0) {
    return yield* new StageError({
      message: `Oxylabs credentials are missing: set OXYLABS_USERNAME and OXYLABS_PASSWORD in the environment (not set: ${missing.join(", ")})`
    })
  }
  return { username, password } satisfies Credentials
}).pipe(Effect.catchTag("ConfigError", (e) => Effect.fail(new StageError({ message: `cannot read the Oxylabs credentials: ${e.message}` }))))

/** Oxylabs' error bodies are JSON with a `message`; show a short one. */
const errorText = (body: string): string => {
  try {
    const json = JSON.parse(body) as { message?: unknown; errors?: { message?: unknown } }
    const message = json.message ?? json.errors?.message
    if (typeof message === "string") return `: ${message.slice(0, 200)}`
  } catch {
    // Not JSON: the status says enough.
  }
  return ""
}

/** The answer's body, or why not; an error body is redacted before a word of it is kept. */
const classify = (response: HttpClientResponse.HttpClientResponse, redact: (text: string) => string) =>
  Effect.gen(function* () {
    const body = yield* response.text
    const status = response.status
    if (status >= 200 && status < 300) return body
    if (status === 401 || status === 403) return yield* new CredentialsRejected({ status })
    const said = errorText(redact(body))
    if (status === 429 || status >= 500) {
      const asked = retryAfter(response.headers["retry-after"], Date.now())
      return yield* new Transient({
        kind: "status",
        status,
        detail: `HTTP ${status}${status === 429 ? " (rate limited)" : ""}${said}`,
        ...(asked === undefined ? {} : { retryAfter: Duration.min(asked, MAX_RETRY_AFTER) })
      })
    }
    return yield* new QueryFailed({ reason: `Oxylabs refused the query with HTTP ${status}${said}` })
  }).pipe(
    Effect.catchTag("ResponseError", (e) => Effect.fail(new Transient({ kind: "network", detail: redact(`the answer broke off: ${e.message}`) })))
  )

/** One request for one ASIN: the answer's body, or why not. */
const queryOnce = (params: Params, credentials: Credentials, asin: string, redact: (text: string) => string) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const body = {
      source: params.source,
      domain: params.domain,
      query: asin,
      parse: params.parse,
      ...(params.geo_location !== undefined ? { geo_location: params.geo_location } : {}),
      ...(params.pages !== undefined ? { pages: params.pages } : {})
    }
    const request = HttpClientRequest.post(params.endpoint).pipe(
      HttpClientRequest.basicAuth(credentials.username, credentials.password),
      HttpClientRequest.acceptJson,
      HttpClientRequest.bodyUnsafeJson(body)
    )
    return yield* client.execute(request).pipe(
      Effect.flatMap((response) => classify(response, redact)),
      Effect.catchTags({
        RequestError: (e) => Effect.fail(requestFailure(e, redact(`cannot reach ${params.endpoint}: ${e.message}`))),
        ResponseError: (e) => Effect.fail(new Transient({ kind: "network", detail: redact(`the answer broke off: ${e.message}`) }))
      })
    )
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(params.timeout * 1000),
      onTimeout: () => new Transient({ kind: "timeout", detail: `no answer within ${params.timeout}s` })
    })
  )

const seconds = (ms: number): string => (ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`)

// Parsing Oxylabs' parsed JSON: fields vary by source and marketplace, so every value is checked.

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value)
const text = (value: unknown): string | null => (typeof value === "string" ? value : typeof value === "number" ? String(value) : null)

/** Whole stars from 5, 4.6 or "4.0 out of 5 stars"; null when none can be read. */
export const stars = (value: unknown): number | null => {
  const number = typeof value === "number" ? value : typeof value === "string" ? Number(/\d+(?:[.,]\d+)?/.exec(value)?.[0].replace(",", ".")) : NaN
  const rounded = Math.round(number)
  return Number.isFinite(number) && rounded >= 1 && rounded <= 5 ? rounded : null
}

/** amazon_reviews titles carry the stars first: "5.0 out of 5 stars Great", "4,0 van 5 sterren Goed". */
export const reviewTitle = (value: unknown): string | null =>
  text(value)?.replace(/^\s*\d[.,]\d\s+\S+(?:\s+\S+)?\s+5\s+\S+\s*/, "").trim() ?? null

export const verified = (value: unknown): boolean | null => {
  if (typeof value === "boolean") return value
  if (typeof value !== "string") return null
  if (/^(true|yes|1|verified purchase)$/i.test(value.trim())) return true
  return /^(false|no|0)$/i.test(value.trim()) ? false : null
}

/** 12, "12", "1,024 people found this helpful", "One person found this helpful". */
export const helpfulCount = (value: unknown): number | null => {
  if (typeof value === "number") return Number.isFinite(value) ? Math.trunc(value) : null
  if (typeof value !== "string") return null
  if (/^\s*one\b/i.test(value)) return 1
  const digits = /\d[\d,.]*/.exec(value)?.[0].replace(/[,.]/g, "")
  return digits === undefined ? null : Number(digits)
}

const MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"]

/** "Reviewed in the United States on March 3, 2025" → 2025-03-03; other languages' dates are kept as written. */
export const reviewDate = (value: unknown): string | null => {
  const raw = text(value)?.trim()
  if (raw === undefined || raw === "") return null
  if (/^\d{4}-\d{2}-\d{2}/.test(raw)) return raw.slice(0, 10)
  const monthFirst = /\b([A-Za-z]+)\.? (\d{1,2}), (\d{4})\b/.exec(raw)
  const dayFirst = /\b(\d{1,2}) ([A-Za-z]+)\.? (\d{4})\b/.exec(raw)
  const [month, day, year] = monthFirst !== null
    ? [monthFirst[1]!, monthFirst[2]!, monthFirst[3]!]
    : dayFirst !== null
    ? [dayFirst[2]!, dayFirst[1]!, dayFirst[3]!]
    : ["", "", ""]
  const m = MONTHS.findIndex((name) => name.startsWith(month.toLowerCase()) && month.length >= 3)
  return m === -1 ? raw : `${year}-${String(m + 1).padStart(2, "0")}-${day.padStart(2, "0")}`
}

export interface ReviewRow {
  readonly asin: string
  readonly review_id: string | null
  readonly title: string | null
  readonly author: string | null
  readonly rating: number | null
  readonly content: string | null
  readonly date: string | null
  readonly verified: boolean | null
  readonly helpful_count: number | null
  readonly product_title: string | null
}

const snippet = (body: string): string => JSON.stringify(body.length > 60 ? `${body.slice(0, 60)}…` : body)

/** What the Int32 column holds: a count beyond it is refused rather than wrapped around. */
const INT32_MAX = 2_147_483_647

/**
 * The reviews of one answer (one result per page), or why the answer is unusable.
 * `redact` cleans what of the body a reason quotes.
 */
export const parseAnswer = (
  body: string,
  asin: string,
  redact: (text: string) => string = (text) => text
): Either.Either<ReadonlyArray<ReviewRow>, string> => {
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch (error) {
    return Either.left(`Oxylabs answered with malformed JSON (${redact((error as Error).message)}); the body starts ${snippet(redact(body))}`)
  }
  const results = isObject(json) ? json.results : undefined
  if (!Array.isArray(results) || results.length === 0) return Either.left("the answer has no results")
  const rows: Array<ReviewRow> = []
  for (const [i, result] of results.entries()) {
    const content = isObject(result) ? result.content : undefined
    if (!isObject(content) || !Array.isArray(content.reviews)) {
      const status = isObject(result) && typeof result.status_code === "number" && result.status_code !== 200 ? `; Amazon's page answered ${result.status_code}` : ""
      const parse = isObject(content) && content.parse_status_code !== undefined ? `; parse_status_code ${String(content.parse_status_code)}` : ""
      const raw = typeof content === "string" ? "; content is unparsed HTML (is parse: true supported for this source?)" : ""
      return Either.left(`the answer has no results[${i}].content.reviews${status}${parse}${raw}`)
    }
    const productTitle = text(content.title) ?? text(content.product_name)
    for (const review of content.reviews) {
      if (!isObject(review)) continue
      const helpful = helpfulCount(review.helpful_count)
      if (helpful !== null && Math.abs(helpful) > INT32_MAX) {
        const quoted = snippet(redact(typeof review.helpful_count === "string" ? review.helpful_count : String(review.helpful_count)))
        return Either.left(
          `review ${text(review.id) ?? `#${rows.length + 1}`} has helpful_count ${quoted}, more than an Int32 column holds (2,147,483,647): Oxylabs' answer looks wrong`
        )
      }
      rows.push({
        asin,
        review_id: text(review.id),
        title: reviewTitle(review.title),
        author: text(review.author),
        rating: stars(review.rating),
        content: text(review.content),
        date: reviewDate(review.timestamp ?? review.date),
        verified: verified(review.is_verified),
        helpful_count: helpful,
        product_title: productTitle
      })
    }
  }
  return Either.right(rows)
}

/** Built once, so that every output (an empty one too) has these columns and types. */
const REVIEW_SCHEMA = new ArrowSchema([
  new Field("asin", new Utf8(), false),
  new Field("review_id", new Utf8(), true),
  new Field("title", new Utf8(), true),
  new Field("author", new Utf8(), true),
  new Field("rating", new Int32(), true),
  new Field("content", new Utf8(), true),
  new Field("date", new Utf8(), true),
  new Field("verified", new Bool(), true),
  new Field("helpful_count", new Int32(), true),
  new Field("product_title", new Utf8(), true)
])

const reviewsTable = (rows: ReadonlyArray<ReviewRow>): Table => {
  const children = REVIEW_SCHEMA.fields.map((field) => {
    const builder = makeBuilder({ type: field.type, nullValues: [null] })
    for (const row of rows) builder.append(row[field.name as keyof ReviewRow])
    return builder.finish().toVector().data[0]!
  })
  const data = makeData({ type: new Struct(REVIEW_SCHEMA.fields), length: rows.length, nullCount: 0, children })
  return new Table(REVIEW_SCHEMA, [new RecordBatch(REVIEW_SCHEMA, data)])
}

/** First occurrence wins: variants of one product share reviews, and pages overlap. */
const dedupe = (rows: ReadonlyArray<ReviewRow>): ReadonlyArray<ReviewRow> => {
  const seen = new Set<string>()
  return rows.filter((row) => {
    const key = row.review_id ?? JSON.stringify([row.asin, row.author, row.title, row.content, row.date])
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

type Outcome = { readonly asin: string; readonly rows: ReadonlyArray<ReviewRow> } | { readonly asin: string; readonly failure: string }

export default defineStage({
  name: "oxylabs-reviews",
  version: "1",
  description: "Scrapes Amazon product reviews through Oxylabs' Web Scraper API: one row per review",
  params: Params,
  accepts: { kinds: [], min: 0, max: 0 },
  produces: ["dataset"],
  executionParams: ["concurrency", "timeout", "retries", "backoff"],
  maxAgeMs: (params) => (params.max_age === undefined ? undefined : parseDuration(params.max_age)),
  run: (ctx) =>
    Effect.gen(function* () {
      const params = ctx.params
      const credentials = yield* readCredentials
      const redact = redactor(credentials.username, Redacted.value(credentials.password))
      const total = params.asins.length
      const done = yield* Ref.make(0)
      const requests = yield* Ref.make(0)
      const retries = yield* Ref.make(0)
      yield* ctx.progress(0, total, "asins")

      const scrape = (asin: string) => {
        let attempts = 0
        const onRetry = (error: Transient, attempt: number, delay: Duration.Duration) =>
          Effect.zipRight(
            Ref.update(retries, (n) => n + 1),
            ctx.log(redact(`${asin}: ${error.detail}; retry ${attempt} of ${params.retries} in ${seconds(Duration.toMillis(delay))}${error.retryAfter !== undefined ? " (Retry-After)" : ""}`))
          )
        const attempt = Effect.suspend(() => {
          attempts++
          return Effect.zipRight(Ref.update(requests, (n) => n + 1), queryOnce(params, credentials, asin, redact))
        })
        const schedule = retrySchedule({ base: Duration.millis(parseDuration(params.backoff)!), retries: params.retries, maxRetryAfter: MAX_RETRY_AFTER, onRetry })
        return attempt.pipe(
          Effect.retry(schedule),
          Effect.flatMap((body) => Either.match(parseAnswer(body, asin, redact), { onLeft: (reason) => Effect.fail(new QueryFailed({ reason })), onRight: Effect.succeed })),
          Effect.map((rows): Outcome => ({ asin, rows })),
          Effect.catchTags({
            QueryFailed: (e) => Effect.succeed<Outcome>({ asin, failure: redact(e.reason) }),
            Transient: (e) => Effect.succeed<Outcome>({ asin, failure: redact(`${e.detail} (gave up after ${attempts} attempt${attempts === 1 ? "" : "s"})`) })
          }),
          Effect.tap((outcome) =>
            Effect.gen(function* () {
              yield* ctx.log("failure" in outcome ? `${asin} failed: ${outcome.failure}` : `${asin}: ${outcome.rows.length} reviews`)
              yield* ctx.progress(yield* Ref.updateAndGet(done, (n) => n + 1), total, "asins")
            })
          )
        )
      }

      const outcomes = yield* Effect.forEach(params.asins, scrape, { concurrency: params.concurrency }).pipe(
        Effect.catchTag("CredentialsRejected", (e) =>
          Effect.fail(new StageError({
            message: `Oxylabs rejected the credentials for user "${credentials.username}" (HTTP ${e.status}${e.status === 403 ? ": the account has no access to this source" : ""}); check OXYLABS_USERNAME and OXYLABS_PASSWORD`
          })))
      )
      const failures = outcomes.flatMap((o) => ("failure" in o ? [o] : []))
      if (failures.length > 0 && (params.on_error === "fail" || failures.length === total)) {
        const why = total === 1 ? "the ASIN failed" : failures.length === total ? `all ${total} ASINs failed` : `${failures.length} of ${total} ASINs failed (on_error: fail; on_error: skip keeps the others)`
        return yield* new StageError({ message: `${why}:\n${failures.map((f) => `  ${f.asin}: ${f.failure}`).join("\n")}` })
      }
      if (failures.length > 0) yield* ctx.log(`skipped ${failures.length} failed ASIN(s): ${failures.map((f) => f.asin).join(", ")}`)
      const scraped = outcomes.flatMap((o) => ("rows" in o ? o.rows : []))
      const rows = dedupe(scraped)
      const dataset = yield* writeDataset(ctx.outDir, { train: reviewsTable(rows) })
      return {
        outputs: { dataset },
        metrics: {
          asins_ok: total - failures.length,
          asins_failed: failures.length,
          reviews: rows.length,
          duplicates: scraped.length - rows.length,
          requests: yield* Ref.get(requests),
          retries: yield* Ref.get(retries)
        }
      }
    }).pipe(Effect.provide(FetchHttpClient.layer))
})
