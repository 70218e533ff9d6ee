/**
 * The hub client against a hostile hub (tests/support/hostile-hub.ts): values that
 * would climb out of the cache, redirects and pages that would carry the token to
 * another origin, cards that would spin the CPU or crash, and bodies longer or
 * shorter than announced. Each case fails with a clear HubError, writes nothing
 * outside the cache, and sends the token nowhere but the hub.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Redacted } from "effect"
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs"
import { join } from "node:path"
import { afterAll, afterEach, beforeAll } from "vitest"
import { dataset, type HubConfig, model } from "../src/hub/index.ts"
import { cliAsync, tempDir, writeFile } from "./helpers.ts"
import { failureOf, testHubConfig, withHub } from "./support/hub-client.ts"
import { GRANTED_TOKEN } from "./support/hub-server.ts"
import { BACKTRACKING_PATTERN, CLIMBING_FILE, type HostileHub, MANY, SLOW_HEADER_KEYS, startHostileHub, type Upstream } from "./support/hostile-hub.ts"

let hub: HostileHub

beforeAll(async () => {
  hub = await startHostileHub()
})

afterEach(() => hub.clearTricks())

afterAll(() => hub?.close())

/** A cache one level down in a fresh folder, so that anything written beside it is seen. */
const sandbox = () => {
  const root = tempDir("hub-hostile-")
  const cacheDir = join(root, "cache")
  mkdirSync(cacheDir)
  return { root, cacheDir, outside: () => readdirSync(root).filter((name) => name !== "cache") }
}

/** The granted token, and no retries: each trick is met once. */
const settings = (cacheDir: string, overrides: Partial<HubConfig> = {}): HubConfig =>
  testHubConfig(hub.url, cacheDir, { token: Option.some(Redacted.make(GRANTED_TOKEN)), retries: 0, ...overrides })

/** Every file under a folder but the refs (`refs/main` is written as soon as the hub names main's commit), with its size. */
const sizesUnder = (dir: string): Array<[string, number]> =>
  readdirSync(dir, { recursive: true, encoding: "utf8" }).flatMap((entry) => {
    const path = join(dir, entry)
    return existsSync(path) && statSync(path).isFile() && !entry.includes("/refs/") ? [[entry, statSync(path).size] as [string, number]] : []
  })

const isResolve = (repo: string, file: string, method: string) => (r: { method: string; url: string }) =>
  r.method === method && r.url.includes(`${repo}/resolve/`) && r.url.endsWith(`/${file}`)

/** The honest answer with some headers replaced. */
const rewrite = (headers: Record<string, string>) => async (context: { upstream: () => Promise<Upstream>; send: (a: Upstream) => void }) => {
  const answer = await context.upstream()
  context.send({ ...answer, headers: { ...answer.headers, ...headers } })
}

const elsewherePort = () => new URL(hub.elsewhere.url).port

describe("hub (hostile): server-supplied values never name a path outside the cache", () => {
  it.live("an ETag holding ../ is refused: it names no cache key", () =>
    Effect.gen(function* () {
      const { cacheDir, outside } = sandbox()
      hub.trick(isResolve("acme/plain", "data/train.jsonl", "HEAD"), rewrite({ etag: '"../../../pwned-etag"' }))
      const error = yield* failureOf(settings(cacheDir), (h) => h.download(dataset("acme/plain"), "main", "data/train.jsonl"))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain(`data/train.jsonl of dataset acme/plain@main`)
      expect(error.message).toContain(`ETag "../../../pwned-etag" is not a hex digest, so it names no file in the cache`)
      expect(outside()).toEqual([])
    }))

  it.live("an X-Repo-Commit holding ../ is refused", () =>
    Effect.gen(function* () {
      const { cacheDir, outside } = sandbox()
      hub.trick(isResolve("acme/plain", "data/train.jsonl", "HEAD"), rewrite({ "x-repo-commit": "../../../pwned-commit" }))
      const error = yield* failureOf(settings(cacheDir), (h) => h.download(dataset("acme/plain"), "main", "data/train.jsonl"))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain(`X-Repo-Commit "../../../pwned-commit" is not a commit id (40 hexadecimal digits)`)
      expect(outside()).toEqual([])
      expect(sizesUnder(cacheDir)).toEqual([])
    }))

  it.live("a revision's sha holding ../ is refused, and no ref is written", () =>
    Effect.gen(function* () {
      const { cacheDir, outside } = sandbox()
      hub.trick(
        (r) => r.url.endsWith("/api/datasets/acme/plain/revision/main"),
        async ({ upstream, send }) => {
          const answer = await upstream()
          send({ ...answer, body: Buffer.from(JSON.stringify({ ...JSON.parse(answer.body.toString()), sha: "../../../pwned-sha" })) })
        }
      )
      const error = yield* failureOf(settings(cacheDir), (h) => h.resolveRevision(dataset("acme/plain")))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain(`the commit "../../../pwned-sha" is not a commit id (40 hexadecimal digits)`)
      expect(outside()).toEqual([])
      expect(sizesUnder(cacheDir)).toEqual([])
    }))

  it.live(`a repository file named ${CLIMBING_FILE} (it matches *.safetensors) is refused`, () =>
    Effect.gen(function* () {
      const { cacheDir, outside } = sandbox()
      // Were the path requested, the URL would be normalised to /evil.safetensors: answer it as the hub would.
      const file = hub.honest.fileOf("model", "evil/traversal", CLIMBING_FILE)
      const commit = hub.honest.commitOf("model", "evil/traversal")
      hub.trick((r) => r.url.endsWith("/evil.safetensors"), ({ res }) => {
        res.writeHead(302, {
          location: `${hub.url}/cdn/${file.sha256}`,
          "x-linked-etag": `"${file.sha256}"`,
          "x-linked-size": String(file.size),
          "x-repo-commit": commit
        })
        res.end()
      })
      const error = yield* failureOf(settings(cacheDir), (h) => h.modelFiles("evil/traversal", ["*.safetensors", "config.json"]))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain(`a file named "${CLIMBING_FILE}": a repository path has no ".." segment`)
      expect(outside()).toEqual([])
      expect(sizesUnder(cacheDir)).toEqual([])
    }))

  it.live("a revision given as ../../x is refused before any request", () =>
    Effect.gen(function* () {
      const { cacheDir, outside } = sandbox()
      const before = hub.requests.length
      const error = yield* failureOf(settings(cacheDir), (h) => h.datasetSplits("acme/plain", { revision: "../../../x" }))
      expect(error.reason).toBe("BadRevision")
      expect(error.message).toBe(`"../../../x" is not a revision of dataset acme/plain: a branch, tag or commit id has no ".." segment`)
      expect(hub.requests.length).toBe(before)
      expect(outside()).toEqual([])
    }))
})

describe("hub (hostile): the token goes to the hub's origin only", () => {
  it.live("a Location of /\\127.0.0.1:OTHER/… is another origin: not followed for an API call, and never with the token", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const path = "/api/datasets/acme/plain/revision/main"
      hub.trick((r) => r.url.endsWith(path), ({ res }) => {
        res.writeHead(307, { location: `/\\127.0.0.1:${elsewherePort()}${path}` })
        res.end()
      })
      const error = yield* failureOf(settings(cacheDir), (h) => h.resolveRevision(dataset("acme/plain")))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain(`HTTP 307 redirect to ${hub.elsewhere.url}${path}, another origin: not followed`)
      expect(hub.elsewhere.requests.filter((r) => r.headers.authorization !== undefined)).toEqual([])
    }))

  it.live("a CDN redirect written /\\host/… is fetched from there without the token", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const blob = hub.honest.fileOf("model", "acme/tiny", "model.safetensors").sha256
      hub.trick(isResolve("acme/tiny", "model.safetensors", "HEAD"), rewrite({ location: `/\\127.0.0.1:${elsewherePort()}/cdn/${blob}` }))
      const before = hub.elsewhere.requests.length
      const local = yield* withHub(settings(cacheDir), (h) => h.download(model("acme/tiny"), "main", "model.safetensors"))
      expect(statSync(local).size).toBe(4096)
      const there = hub.elsewhere.requests.slice(before)
      expect(there.map((r) => `${r.method} ${r.url}`)).toEqual([`GET /cdn/${blob}`])
      expect(there.filter((r) => r.headers.authorization !== undefined)).toEqual([])
      expect(hub.requests.some((r) => r.headers.authorization === `Bearer ${GRANTED_TOKEN}`)).toBe(true)
    }))

  it.live("tree pages linked on another origin are read without the token", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const commit = hub.honest.commitOf("dataset", "acme/plain")
      hub.trick((r) => r.url.includes("/api/datasets/acme/plain/tree/") && !r.url.includes("cursor="), async ({ req, upstream, send }) => {
        const answer = await upstream()
        const next = new URL(req.url!, hub.elsewhere.url)
        next.searchParams.set("cursor", "1")
        const entries = JSON.parse(answer.body.toString()) as Array<unknown>
        send({ ...answer, headers: { ...answer.headers, link: `<${next.href}>; rel="next"` }, body: Buffer.from(JSON.stringify(entries.slice(0, 1))) })
      })
      const before = hub.elsewhere.requests.length
      const files = yield* withHub(settings(cacheDir), (h) => h.listFiles(dataset("acme/plain"), commit))
      expect(files.map((f) => f.path)).toEqual(["README.md", "data/test.jsonl", "data/train.jsonl"])
      const there = hub.elsewhere.requests.slice(before)
      expect(there).toHaveLength(1)
      expect(there[0]!.headers.authorization).toBeUndefined()
    }))

  it.live("tree pages that link back to a page already read are refused, not followed forever", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const commit = hub.honest.commitOf("dataset", "acme/plain")
      hub.trick((r) => r.url.includes("/api/datasets/acme/plain/tree/"), async ({ req, upstream, send }) => {
        const answer = await upstream()
        send({ ...answer, headers: { ...answer.headers, link: `<${new URL(req.url!, hub.url).href}>; rel="next"` } })
      }, { times: 3 })
      const error = yield* failureOf(settings(cacheDir), (h) => h.listFiles(dataset("acme/plain"), commit))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain("links back to a page already read")
    }), 20_000)

  /** The honest page, linking on to a page never seen before, as often as it is asked. */
  const endlessPages = (repo: string) => {
    const sent = { pages: 0, files: 0 }
    hub.trick((r) => r.url.includes(`/api/datasets/${repo}/tree/`), async ({ req, upstream, send }) => {
      const answer = await upstream()
      const next = new URL(req.url!, hub.url)
      next.searchParams.set("cursor", String(++sent.pages))
      sent.files += (JSON.parse(answer.body.toString()) as Array<{ type: string }>).filter((entry) => entry.type === "file").length
      send({ ...answer, headers: { ...answer.headers, link: `<${next.href}>; rel="next"` } })
    }, { times: 1_000 })
    return sent
  }

  it.live("a tree whose pages link on to new pages for ever is cut off at the page limit", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const sent = endlessPages("acme/plain")
      const error = yield* failureOf(settings(cacheDir, { maxTree: { pages: 25, files: 1_000_000 } }), (h) => h.listFiles(dataset("acme/plain"), "main"))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain("the tree goes on past 25 pages")
      expect(sent.pages).toBe(25)
    }))

  it.live("a tree that lists more files than the limit is refused once it passes it", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const sent = endlessPages("acme/plain")
      const error = yield* failureOf(settings(cacheDir, { maxTree: { pages: 1_000, files: 7 } }), (h) => h.listFiles(dataset("acme/plain"), "main"))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain("the tree lists more than 7 files")
      // Cut off on the first page that passes the limit.
      const perPage = sent.files / sent.pages
      expect(sent.pages).toBe(Math.floor(7 / perPage) + 1)
    }))
})

describe("hub (hostile): dataset cards", () => {
  it("a data_files pattern of forty stars fails at once instead of backtracking for ever (pipeline run)", async () => {
    const { cacheDir } = sandbox()
    const file = writeFile(tempDir(), "redos.yaml", "name: redos\nstages:\n  data:\n    uses: fetch\n    with: { dataset: evil/redos }\n")
    const started = Date.now()
    const result = await cliAsync(["run", file, "--cache-dir", join(cacheDir, "pipeline")], {
      env: { HF_ENDPOINT: hub.url, HF_HOME: cacheDir, HF_HUB_CACHE: cacheDir, HF_TOKEN: "" },
      // Backtracking over 40 stars takes far longer than this (exponential); matching, well under a second.
      timeoutMs: 150_000
    })
    expect(result.code, result.stderr).toBe(1)
    expect(result.stderr).toContain(`config default's data_files match no file, and there is no parquet conversion`)
    expect(Date.now() - started).toBeLessThan(150_000)
    expect(BACKTRACKING_PATTERN).toHaveLength(41)
  }, 180_000)

  it.live("a card with configs: [null] is a HubError naming the repository and the key", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const error = yield* failureOf(settings(cacheDir), (h) => h.datasetSplits("evil/null-config"))
      expect(error.reason).toBe("BadCard")
      expect(error.message).toMatch(
        /^the card \(README\.md\) of dataset evil\/null-config@[0-9a-f]{7} is not valid: configs\[0\]: expected a mapping with config_name, data_files, data_dir or default, got null$/
      )
    }))

  it.live("a card's split names are split names: ../../escape is refused", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const error = yield* failureOf(settings(cacheDir), (h) => h.datasetSplits("evil/bad-split"))
      expect(error.reason).toBe("BadCard")
      expect(error.message).toContain(`is not valid: configs[0].data_files[0].split: "../../escape" is not a split name (letters, digits and "_", in parts joined by ".")`)
    }))

  it.live(`matching ${MANY} patterns over ${MANY} files stops as soon as it is interrupted (Ctrl-C)`, () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const isCard = (r: { url: string; method: string }) => r.method === "GET" && r.url.includes("evil/many-patterns/resolve/") && r.url.endsWith("/README.md")
      const fiber = yield* Effect.fork(withHub(settings(cacheDir), (h) => h.datasetSplits("evil/many-patterns")))
      while (!hub.requests.some(isCard)) yield* Effect.sleep("20 millis")
      const cardAt = hub.requests.find(isCard)!.at
      // The card arrives, is parsed, and the matching starts: interrupt it well into the matching.
      yield* Effect.sleep("400 millis")
      const exit = yield* Fiber.interrupt(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      // Before: one synchronous loop of about 5 s, which nothing could interrupt (the fiber
      // then ended on its own, not interrupted). The bound is loose: busy machines are slow.
      expect(Date.now() - cardAt).toBeLessThan(20_000)
    }), 60_000)

  it.live(`a YAML header of ${SLOW_HEADER_KEYS.toLocaleString("en-US")} keys is parsed off the event loop, and stops when interrupted`, () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const fiber = yield* Effect.fork(withHub(settings(cacheDir), (h) => h.datasetSplits("evil/slow-header")))
      // The card is in the cache (a large file comes through the CDN): its parse starts.
      const cardInCache = () => readdirSync(cacheDir, { recursive: true, encoding: "utf8" }).some((entry) => entry.endsWith("/README.md"))
      while (!cardInCache()) yield* Effect.sleep("20 millis")
      const cardAt = Date.now()
      // The timers below run only if the parse leaves the event loop free.
      let ticks = 0
      const timer = setInterval(() => ticks++, 10)
      yield* Effect.sleep("500 millis")
      clearInterval(timer)
      expect(ticks).toBeGreaterThan(5)
      const exit = yield* Fiber.interrupt(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(Date.now() - cardAt).toBeLessThan(20_000)
    }), 60_000)

  it.live("a card whose YAML header is over 4 MiB is refused without parsing it", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const error = yield* failureOf(settings(cacheDir), (h) => h.datasetSplits("evil/huge-header"))
      expect(error.reason).toBe("BadCard")
      expect(error.message).toMatch(/^the card \(README\.md\) of dataset evil\/huge-header@[0-9a-f]{7} is not valid: its YAML header is 4\.5 MiB; headers are read up to 4\.0 MiB$/)
    }))

  it.live("a card the listing says is over 16 MiB is refused without downloading it", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      hub.trick((r) => r.url.includes("/api/datasets/acme/plain/tree/"), async ({ upstream, send }) => {
        const answer = await upstream()
        const entries = JSON.parse(answer.body.toString()) as Array<{ path: string; size: number }>
        const body = Buffer.from(JSON.stringify(entries.map((e) => (e.path === "README.md" ? { ...e, size: 17 * 1024 * 1024 } : e))))
        send({ ...answer, headers: { ...answer.headers, "content-length": String(body.length) }, body })
      })
      const error = yield* failureOf(settings(cacheDir), (h) => h.datasetSplits("acme/plain"))
      expect(error.reason).toBe("BadCard")
      expect(error.message).toMatch(/is not valid: it is 17\.0 MiB, and cards are read up to 16\.0 MiB$/)
      expect(hub.requests.filter(isResolve("acme/plain", "README.md", "GET"))).toEqual([])
    }))
})

describe("hub (hostile): bodies longer or shorter than announced", () => {
  it.live("a body longer than announced is cut at the announced size and fails clearly", () =>
    Effect.gen(function* () {
      const { cacheDir, outside } = sandbox()
      const size = hub.honest.fileOf("dataset", "acme/plain", "data/train.jsonl").size
      let sent = 0
      hub.trick(isResolve("acme/plain", "data/train.jsonl", "GET"), ({ res }) => {
        res.writeHead(200, { "content-type": "application/octet-stream" })
        const chunk = Buffer.alloc(64 * 1024, 97)
        const more = () => {
          while (sent < 200 * 1024 * 1024 && !res.destroyed) {
            sent += chunk.length
            if (!res.write(chunk)) return void res.once("drain", more)
          }
          res.end()
        }
        res.on("close", () => res.destroy())
        more()
      })
      const error = yield* failureOf(settings(cacheDir), (h) => h.download(dataset("acme/plain"), "main", "data/train.jsonl"))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toMatch(
        new RegExp(`^${hub.url} sent more than the ${size} bytes it announced for data/train\\.jsonl of dataset acme/plain@main: the partial file was removed; check HF_ENDPOINT, or try again later$`)
      )
      expect(sizesUnder(cacheDir).filter(([, bytes]) => bytes > size)).toEqual([])
      expect(outside()).toEqual([])
      expect(sent).toBeLessThan(200 * 1024 * 1024)
    }))

  it.live("a Content-Length larger than the HEAD's size is refused before a byte is kept", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const size = hub.honest.fileOf("dataset", "acme/plain", "data/train.jsonl").size
      hub.trick(isResolve("acme/plain", "data/train.jsonl", "GET"), ({ res }) => {
        res.writeHead(200, { "content-length": String(10 * 1024 ** 3) })
        res.write("{}")
      })
      const error = yield* failureOf(settings(cacheDir), (h) => h.download(dataset("acme/plain"), "main", "data/train.jsonl"))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toBe(
        `${hub.url} announced 10,737,418,240 bytes for data/train.jsonl of dataset acme/plain@main where its HEAD announced ${size}: refused; check HF_ENDPOINT, or try again later`
      )
      expect(sizesUnder(cacheDir)).toEqual([])
    }))

  it.live("a body shorter than announced says that the server sent less than it announced", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      const tiny = model("acme/tiny")
      const blob = hub.honest.fileOf("model", "acme/tiny", "model.safetensors").sha256
      const announced = String(10 * 1024 ** 3)
      const head = isResolve("acme/tiny", "model.safetensors", "HEAD")
      // The HEAD says 10 GB; the CDN sends its 4,096 bytes and ends cleanly.
      hub.trick(head, rewrite({ "x-linked-size": announced }))
      const clean = yield* failureOf(settings(cacheDir), (h) => h.download(tiny, "main", "model.safetensors"))
      expect(clean.reason).toBe("Interrupted")
      expect(clean.message).toBe(
        `the download of model.safetensors of model acme/tiny@main from ${hub.url} stopped short: the server sent less than it announced (4,096 of 10,737,418,240 bytes); run again to resume it`
      )
      // Both say 10 GB; the CDN sends 2 bytes and closes the connection.
      hub.trick(head, rewrite({ "x-linked-size": announced }))
      hub.trick((r) => r.method === "GET" && r.url === `/cdn/${blob}`, ({ res }) => {
        res.writeHead(200, { "content-length": announced })
        // The reset waits a moment: one right away could discard the two bytes before the client reads them.
        res.write("ab", () => setTimeout(() => res.destroy(), 100))
      })
      const cut = yield* failureOf(settings(join(cacheDir, "again")), (h) => h.download(tiny, "main", "model.safetensors"))
      expect(cut.message).toBe(
        `the download of model.safetensors of model acme/tiny@main from ${hub.url} stopped short: the server sent less than it announced (2 of 10,737,418,240 bytes); run again to resume it`
      )
    }))

  it.live("an API answer that never ends is refused past its cap", () =>
    Effect.gen(function* () {
      const { cacheDir } = sandbox()
      hub.trick((r) => r.url.endsWith("/api/datasets/acme/plain/revision/main"), ({ res }) => {
        res.writeHead(200, { "content-type": "application/json" })
        const chunk = Buffer.alloc(256 * 1024, 32)
        let sent = 0
        const more = () => {
          while (sent < 256 * 1024 * 1024 && !res.destroyed) {
            sent += chunk.length
            if (!res.write(chunk)) return void res.once("drain", more)
          }
          res.end()
        }
        more()
      })
      const error = yield* failureOf(settings(cacheDir), (h) => h.resolveRevision(dataset("acme/plain")))
      expect(error.reason).toBe("Protocol")
      expect(error.message).toContain("the answer is larger than 32 MiB")
    }), 30_000)
})
