/**
 * A stand-in for Oxylabs' realtime Web Scraper API on 127.0.0.1, speaking its
 * protocol: POST /v1/queries with basic auth and a JSON payload, answered with the
 * parsed `amazon_product` / `amazon_reviews` shapes (`results[].content.reviews`),
 * and Oxylabs' status codes. Each ASIN follows a script of steps (a 429 with
 * Retry-After, 500s, malformed JSON, a hang, ...), the last step repeating, and
 * every request is counted so that tests can assert retries from the server's side.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"

export interface MockReview {
  readonly id: string
  readonly title: string
  readonly author: string
  readonly rating: number
  readonly content: string
  /** ISO date; rendered as Amazon's "Reviewed in … on …" text. */
  readonly date: string
  readonly verified: boolean
  readonly helpful: number
}

export interface MockProduct {
  readonly title: string
  readonly reviews: ReadonlyArray<MockReview>
}

export type Step =
  /** 200 with the ASIN's parsed product (or review pages). */
  | "ok"
  /** 200 with a body cut off mid-JSON. */
  | "malformed"
  /** 200 with parsed content that has no `reviews`. */
  | "no-reviews"
  /** Reads the request and never answers. */
  | "hang"
  | { readonly status: number; readonly retryAfter?: string; readonly message?: string }

export interface MockOptions {
  readonly username: string
  readonly password: string
  readonly products?: Readonly<Record<string, MockProduct>>
  readonly script?: Readonly<Record<string, ReadonlyArray<Step>>>
  /** Reviews per page for amazon_reviews; page n+1 repeats page n's last review, as live pages shift. */
  readonly pageSize?: number
}

export interface ReceivedQuery {
  readonly asin: string
  readonly payload: Record<string, unknown>
  readonly authorized: boolean
}

export interface OxylabsMock {
  /** The endpoint to give the stage. */
  readonly url: string
  /** Requests that named this ASIN, answered or not. */
  readonly requests: (asin: string) => number
  readonly received: ReadonlyArray<ReceivedQuery>
  readonly close: () => Promise<void>
}

const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]

/** Amazon's review date line for a marketplace: US month-first, elsewhere day-first. */
const reviewedText = (iso: string, domain: string): string => {
  const [year, month, day] = iso.split("-").map(Number) as [number, number, number]
  return domain === "com"
    ? `Reviewed in the United States on ${MONTHS[month - 1]} ${day}, ${year}`
    : `Reviewed in the United Kingdom on ${day} ${MONTHS[month - 1]} ${year}`
}

const AUTHORS = ["Dana K.", "Miguel", "Amazon Customer", "P. Okafor", "Lena"]
const OPINIONS: Record<number, [string, string]> = {
  1: ["Stopped working", "Died after two weeks and support never answered."],
  2: ["Disappointed", "Feels cheap and the battery barely lasts a day."],
  3: ["It's okay", "Does the job, nothing special for the price."],
  4: ["Pretty good", "Solid build, setup took a while but works well."],
  5: ["Love it", "Exactly as described, would buy again."]
}

/** A plausible product for any ASIN: five reviews with ids derived from the ASIN, ratings 5 down to 1. */
export const productFor = (asin: string): MockProduct => ({
  title: `Wireless Earbuds ${asin}, Bluetooth 5.3, 40H Playtime`,
  reviews: [5, 4, 3, 2, 1].map((rating, i) => ({
    id: `R${asin.slice(-6)}${i}X`,
    title: OPINIONS[rating]![0],
    author: AUTHORS[i]!,
    rating,
    content: OPINIONS[rating]![1],
    date: `2025-0${i + 1}-1${i}`,
    verified: i % 2 === 0,
    helpful: i * 3
  }))
})

const resultMeta = (url: string, page: number) => ({
  created_at: "2025-06-02 09:14:07",
  updated_at: "2025-06-02 09:14:12",
  page,
  url,
  job_id: `73${String(Math.floor(Math.random() * 1e15)).padStart(15, "0")}`,
  is_render_forced: false,
  status_code: 200,
  parser_type: ""
})

/** `amazon_product`: one result, the product page, its top reviews. */
const productAnswer = (asin: string, product: MockProduct, domain: string) => {
  const url = `https://www.amazon.${domain}/dp/${asin}`
  const average = product.reviews.reduce((sum, r) => sum + r.rating, 0) / Math.max(1, product.reviews.length)
  return {
    results: [{
      content: {
        url,
        asin,
        page: 1,
        title: product.title,
        brand: "Soundcore",
        price: 29.99,
        currency: "USD",
        stock: "In Stock",
        rating: Math.round(average * 10) / 10,
        reviews_count: product.reviews.length * 311,
        rating_stars_distribution: [5, 4, 3, 2, 1].map((rating) => ({ rating, percentage: rating === 5 ? 61 : 10 - rating })),
        reviews: product.reviews.map((r) => ({
          id: r.id,
          title: r.title,
          author: r.author,
          rating: r.rating,
          content: r.content,
          timestamp: reviewedText(r.date, domain),
          is_verified: r.verified,
          helpful_count: r.helpful,
          product_attributes: "Color: Black"
        })),
        parse_status_code: 12000
      },
      ...resultMeta(url, 1)
    }]
  }
}

/** `amazon_reviews`: one result per page; titles carry the stars, `is_verified` is a string. */
const reviewsAnswer = (asin: string, product: MockProduct, domain: string, pages: number, pageSize: number) => ({
  results: Array.from({ length: pages }, (_, p) => {
    const start = Math.max(0, p * pageSize - 1)
    const url = `https://www.amazon.${domain}/product-reviews/${asin}?reviewerType=all_reviews&pageNumber=${p + 1}`
    return {
      content: {
        url,
        asin,
        asin_in_url: asin,
        page: p + 1,
        pages,
        page_type: "Reviews",
        product_name: product.title,
        reviews: product.reviews.slice(start, (p + 1) * pageSize).map((r) => ({
          id: r.id,
          title: `${r.rating.toFixed(1)} out of 5 stars ${r.title}`,
          author: r.author,
          rating: r.rating,
          content: r.content,
          timestamp: reviewedText(r.date, domain),
          is_verified: r.verified ? "True" : "False",
          helpful_count: r.helpful === 1 ? "One person found this helpful" : `${r.helpful} people found this helpful`,
          product_attributes: ""
        })),
        parse_status_code: 12000
      },
      ...resultMeta(url, p + 1)
    }
  })
})

const PAYLOAD_KEYS = new Set(["source", "query", "parse", "domain", "geo_location", "pages", "start_page", "user_agent_type", "context"])

/** Oxylabs' 400s: the payload's first problem, or undefined when it is acceptable. */
const payloadProblem = (payload: Record<string, unknown>): string | undefined => {
  const unknown = Object.keys(payload).find((key) => !PAYLOAD_KEYS.has(key))
  if (unknown !== undefined) return `Unsupported parameter: ${unknown}`
  if (payload.source !== "amazon_product" && payload.source !== "amazon_reviews") return `Unsupported source: ${String(payload.source)}`
  if (typeof payload.query !== "string" || payload.query === "") return "query is required"
  if (payload.parse !== undefined && typeof payload.parse !== "boolean") return "parse must be a boolean"
  if (payload.domain !== undefined && (typeof payload.domain !== "string" || !/^[a-z.]+$/.test(payload.domain))) return "Invalid domain"
  if (payload.pages !== undefined && (!Number.isInteger(payload.pages) || (payload.pages as number) < 1)) return "pages must be a positive integer"
  if (payload.pages !== undefined && payload.source !== "amazon_reviews") return "pages is not supported for this source"
  return undefined
}

const readBody = (request: IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    request.on("error", reject)
  })

const sendJson = (response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  response.writeHead(status, { "content-type": "application/json", ...headers })
  response.end(typeof body === "string" ? body : JSON.stringify(body))
}

export const startOxylabsMock = async (options: MockOptions): Promise<OxylabsMock> => {
  const counts = new Map<string, number>()
  const received: Array<ReceivedQuery> = []
  const sockets = new Set<Socket>()
  const expected = `Basic ${Buffer.from(`${options.username}:${options.password}`).toString("base64")}`

  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    if (request.method !== "POST" || request.url !== "/v1/queries") return sendJson(response, 404, { message: "Not Found" })
    const text = await readBody(request)
    const auth = request.headers.authorization
    let payload: Record<string, unknown>
    try {
      payload = JSON.parse(text) as Record<string, unknown>
    } catch {
      return sendJson(response, 422, { message: "Unprocessable Entity: the payload is not valid JSON" })
    }
    const asin = String(payload.query)
    counts.set(asin, (counts.get(asin) ?? 0) + 1)
    received.push({ asin, payload, authorized: auth === expected })
    if (auth === undefined) return sendJson(response, 401, { message: "Authorization header not provided" })
    if (!auth.startsWith("Basic ")) return sendJson(response, 401, { message: "Invalid authorization header" })
    if (auth !== expected) return sendJson(response, 401, { message: "Client not found" })
    if (!String(request.headers["content-type"]).startsWith("application/json")) return sendJson(response, 400, { message: "Content-Type must be application/json" })
    const problem = payloadProblem(payload)
    if (problem !== undefined) return sendJson(response, 400, { message: problem })

    const script = options.script?.[asin] ?? ["ok"]
    const step = script[Math.min(counts.get(asin)! - 1, script.length - 1)]!
    const domain = typeof payload.domain === "string" ? payload.domain : "com"
    const product = options.products?.[asin] ?? productFor(asin)
    switch (step) {
      case "hang":
        return
      case "malformed":
        return sendJson(response, 200, JSON.stringify(productAnswer(asin, product, domain)).slice(0, 150))
      case "no-reviews": {
        const answer = productAnswer(asin, product, domain)
        const { reviews: _, ...content } = answer.results[0]!.content
        return sendJson(response, 200, { results: [{ ...answer.results[0], content }] })
      }
      case "ok":
        return sendJson(
          response,
          200,
          payload.source === "amazon_reviews"
            ? reviewsAnswer(asin, product, domain, typeof payload.pages === "number" ? payload.pages : 1, options.pageSize ?? 3)
            : productAnswer(asin, product, domain)
        )
      default:
        return sendJson(response, step.status, { message: step.message ?? (step.status === 429 ? "Too many requests" : "Internal Server Error") },
          step.retryAfter === undefined ? {} : { "retry-after": step.retryAfter })
    }
  }

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => sendJson(response, 500, { message: String(error) }))
  })
  server.on("connection", (socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/v1/queries`,
    requests: (asin) => counts.get(asin) ?? 0,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        // Hung requests hold their sockets open: end them, or close would wait forever.
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  }
}
