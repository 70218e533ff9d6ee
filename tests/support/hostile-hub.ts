/**
 * A hostile hub, for the hub client's hardening tests: a front on 127.0.0.1 that
 * passes every request to an honest hub behind it (hub-server.ts, which speaks the
 * real protocol), except where a test sets a trick. A trick answers as a broken or
 * malicious server would: headers rewritten (an ETag or X-Repo-Commit holding `../`,
 * a Link to another origin), a JSON answer edited, a redirect, a body longer or
 * shorter than announced.
 *
 * `elsewhere` is a second listener, another origin: it records every request (the
 * tests assert that none carried the token) and passes it to the honest hub too, so
 * that a client sent there still gets real answers.
 *
 * The honest hub serves small repositories made for these tests (`hostileRepos`): a
 * plain dataset and model, and the bad cases (a path that climbs out of the cache, a
 * card whose pattern backtracks, a card with `configs: [null]`, a card with thousands
 * of patterns over thousands of files, a card whose YAML header is slow to parse, and
 * one whose header is too large to read).
 */
import { createServer, type IncomingMessage, request, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { type HubServer, type RecordedRequest, type RepoSpec, startHubServer } from "./hub-server.ts"

/** An answer from the honest hub, before it is passed on. */
export interface Upstream {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Buffer
}

interface TrickContext {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  /** The honest hub's answer to the same request. */
  readonly upstream: () => Promise<Upstream>
  /** Sends an answer (a HEAD gets the headers only). */
  readonly send: (answer: Upstream) => void
}

interface Trick {
  readonly when: (request: RecordedRequest) => boolean
  readonly answer: (context: TrickContext) => void | Promise<void>
}

interface Listener {
  readonly url: string
  readonly requests: Array<RecordedRequest & { readonly at: number }>
}

export interface HostileHub extends Listener {
  /** The honest hub behind the front. */
  readonly honest: HubServer
  /** Another origin, which passes requests to the honest hub and records them. */
  readonly elsewhere: Listener
  /** The next `times` requests that `when` accepts (default 1) meet `answer` instead of the honest hub. */
  readonly trick: (when: Trick["when"], answer: Trick["answer"], options?: { times?: number }) => void
  /** Tricks set but not met yet; `clearTricks` drops them. */
  readonly pendingTricks: () => number
  readonly clearTricks: () => void
  readonly close: () => Promise<void>
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "date"])

const jsonl = (rows: ReadonlyArray<Record<string, unknown>>) => rows.map((row) => JSON.stringify(row)).join("\n") + "\n"
const toy = (prefix: string, count: number) =>
  jsonl(Array.from({ length: count }, (_, i) => ({ question: `${prefix} question ${i + 1}?`, answer: `#### ${i + 1}` })))

const card = (yaml: string) => `---\n${yaml}\n---\n\n# A dataset card\n`

/**
 * A card with `count` patterns over `count` files, none matching: only the matching
 * takes time (seconds as one regex each; longer walked in linear time, which is why
 * it must be interruptible).
 */
const manyPatterns = (count: number) => {
  const name = (i: number) => String(i).padStart(5, "0")
  const files: Record<string, string> = {}
  for (let i = 0; i < count; i++) files[`data/part-${name(i)}.jsonl`] = `{"i": ${i}}\n`
  const patterns = Array.from({ length: count }, (_, i) => `    - data/part-*-${name(i)}.jsonl`).join("\n")
  return { "README.md": card(`configs:\n- config_name: default\n  data_files:\n  - split: train\n    path:\n${patterns}`), ...files }
}

/** Forty stars and an `x`: a regex translation backtracks forever on a long file name. */
export const BACKTRACKING_PATTERN = `${"*".repeat(40)}x`

/**
 * A card whose YAML header is about 3.5 MiB of distinct keys: seconds of parsing on any
 * machine (the `yaml` library's duplicate-key check made it minutes), so it must not
 * run on the event loop.
 */
export const SLOW_HEADER_KEYS = 150_000
const slowHeader = () => card(Array.from({ length: SLOW_HEADER_KEYS }, (_, i) => `key_${i}: {a: [1, 2]}`).join("\n"))

/** A card whose YAML header is 4.5 MiB: one long comment before `configs`. */
const hugeHeader = () => card(`# ${"x".repeat(4.5 * 1024 * 1024)}\nconfigs:\n- config_name: default\n  data_files: data/*.jsonl`)

/** A file whose path climbs out of the snapshot folder, and out of the cache, yet matches `*.safetensors`. */
export const CLIMBING_FILE = "model-/../../../../../evil.safetensors"

/** How many patterns and files `evil/many-patterns` has. */
export const MANY = 5000

const hostileRepos = (): ReadonlyArray<RepoSpec> => [
  {
    type: "dataset",
    name: "acme/plain",
    branches: { main: { "README.md": "# Plain\n", "data/train.jsonl": toy("plain train", 3), "data/test.jsonl": toy("plain test", 2) } }
  },
  {
    type: "model",
    name: "acme/tiny",
    branches: { main: { "config.json": '{"hidden_size": 8}\n', "model.safetensors": new Uint8Array(4096).fill(7) } }
  },
  {
    type: "model",
    name: "evil/traversal",
    branches: { main: { "config.json": '{"hidden_size": 8}\n', [CLIMBING_FILE]: new Uint8Array(64).fill(1) } }
  },
  {
    type: "dataset",
    name: "evil/redos",
    branches: {
      main: {
        "README.md": card(`configs:\n- config_name: default\n  data_files: "${BACKTRACKING_PATTERN}"`),
        [`train-${"0".repeat(48)}.jsonl`]: toy("redos", 1)
      }
    }
  },
  {
    type: "dataset",
    name: "evil/null-config",
    branches: { main: { "README.md": card("configs:\n- null"), "data/train.jsonl": toy("null", 1) } }
  },
  {
    type: "dataset",
    name: "evil/bad-split",
    branches: {
      main: {
        "README.md": card("configs:\n- config_name: default\n  data_files:\n  - split: ../../escape\n    path: data/*.jsonl"),
        "data/train.jsonl": toy("split", 1)
      }
    }
  },
  { type: "dataset", name: "evil/many-patterns", branches: { main: manyPatterns(MANY) } },
  { type: "dataset", name: "evil/slow-header", branches: { main: { "README.md": slowHeader(), "data/train.jsonl": toy("slow", 1) } } },
  { type: "dataset", name: "evil/huge-header", branches: { main: { "README.md": hugeHeader(), "data/train.jsonl": toy("huge", 1) } } }
]

const record = (req: IncomingMessage) => ({ method: req.method ?? "GET", url: req.url ?? "/", headers: req.headers, at: Date.now() })

const listen = async (handle: (req: IncomingMessage, res: ServerResponse) => void) => {
  const server = createServer(handle)
  const sockets = new Set<Socket>()
  server.on("connection", (socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const close = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resolve())
    })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close }
}

export const startHostileHub = async (): Promise<HostileHub> => {
  const honest = await startHubServer({ repos: hostileRepos() })
  const honestPort = Number(new URL(honest.url).port)

  /** The honest hub's answer; the Host header goes along, so that its absolute URLs point back at the asker. */
  const upstreamOf = (req: IncomingMessage) =>
    new Promise<Upstream>((resolve, reject) => {
      const forwarded = request({ host: "127.0.0.1", port: honestPort, method: req.method, path: req.url, headers: req.headers }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (chunk: Buffer) => chunks.push(chunk))
        res.on("error", reject)
        res.on("end", () => {
          const headers: Record<string, string> = {}
          for (const [key, value] of Object.entries(res.headers)) {
            if (value !== undefined && !HOP_BY_HOP.has(key)) headers[key] = Array.isArray(value) ? value.join(", ") : value
          }
          resolve({ status: res.statusCode ?? 502, headers, body: Buffer.concat(chunks) })
        })
      })
      forwarded.on("error", reject)
      forwarded.end()
    })

  const sendOf = (req: IncomingMessage, res: ServerResponse) => (answer: Upstream) => {
    res.writeHead(answer.status, answer.headers)
    res.end(req.method === "HEAD" ? undefined : answer.body)
  }

  const pass = (req: IncomingMessage, res: ServerResponse) =>
    upstreamOf(req).then(sendOf(req, res), () => res.socket?.destroy())

  const tricks: Array<Trick & { times: number }> = []
  const requests: HostileHub["requests"] = []
  const front = await listen((req, res) => {
    const seen = record(req)
    requests.push(seen)
    const index = tricks.findIndex((t) => t.times > 0 && t.when(seen))
    if (index === -1) return void pass(req, res)
    tricks[index]!.times--
    Promise.resolve(tricks[index]!.answer({ req, res, upstream: () => upstreamOf(req), send: sendOf(req, res) })).catch(() =>
      res.socket?.destroy()
    )
  })

  const elsewhereRequests: HostileHub["requests"] = []
  const elsewhere = await listen((req, res) => {
    elsewhereRequests.push(record(req))
    void pass(req, res)
  })

  return {
    url: front.url,
    requests,
    honest,
    elsewhere: { url: elsewhere.url, requests: elsewhereRequests },
    trick: (when, answer, { times = 1 } = {}) => void tricks.push({ when, answer, times }),
    pendingTricks: () => tricks.reduce((sum, t) => sum + t.times, 0),
    clearTricks: () => void tricks.splice(0),
    close: async () => {
      await Promise.all([front.close(), elsewhere.close()])
      await honest.close()
    }
  }
}
