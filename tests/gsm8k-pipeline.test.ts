/**
 * The check of the data half: `HF_ENDPOINT=<loopback hub> pipeline run
 * pipelines/gsm8k.yaml --until shuffled`, then fully cached, then offline with no
 * server at all.
 */
import { spawnSync } from "node:child_process"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { BIN, cliInProcess, REPO, tempDir } from "./helpers.ts"
import { startHubServer } from "./support/hub-server.ts"

type Server = Awaited<ReturnType<typeof startHubServer>>
let server: Server
const hfCache = tempDir()
const cache = tempDir()
const file = join(REPO, "pipelines/gsm8k.yaml")
const saved = { ...process.env }

beforeAll(async () => {
  server = await startHubServer()
  process.env.HF_ENDPOINT = server.url
  process.env.HF_HUB_CACHE = hfCache
  delete process.env.HF_HUB_OFFLINE
})

afterAll(async () => {
  for (const key of ["HF_ENDPOINT", "HF_HUB_CACHE"]) {
    if (saved[key] === undefined) delete process.env[key]
    else process.env[key] = saved[key]
  }
  await server?.close().catch(() => undefined) // the test closes it to go offline
})

interface StageJson {
  id: string
  status: string
  metrics: Record<string, number>
  outputs: { dataset?: { splits: Record<string, Array<{ rows: number }>> } } | null
}

const rows = (stage: StageJson | undefined, split: string) => stage!.outputs!.dataset!.splits[split]!.reduce((n, f) => n + f.rows, 0)

describe("pipelines/gsm8k.yaml against a loopback hub", () => {
  it("fetches, tokenizes, filters at 512 and shuffles; then runs cached; then offline with no server", async () => {
    const first = await cliInProcess(["run", file, "--until", "shuffled", "--cache-dir", cache, "--json"])
    expect(first.code, first.stderr).toBe(0)
    const stages = JSON.parse(first.stdout).stages as Array<StageJson>
    const byId = new Map(stages.map((s) => [s.id, s]))
    const DATA = ["data", "tokenized", "filtered", "shuffled"]
    const statusOf = (list: Array<StageJson>) => Object.fromEntries(list.map((s) => [s.id, s.status]))
    expect(DATA.map((id) => statusOf(stages)[id])).toEqual(["ran", "ran", "ran", "ran"])
    // --until shuffled: nothing after it runs (subset, train, evaluate, generate).
    expect(stages.filter((s) => !DATA.includes(s.id)).map((s) => s.status)).toEqual(stages.filter((s) => !DATA.includes(s.id)).map(() => "skipped"))
    // The tutorial's counts before filtering, and ours after.
    expect([rows(byId.get("data"), "train"), rows(byId.get("data"), "test")]).toEqual([7473, 1319])
    expect([rows(byId.get("filtered"), "train"), rows(byId.get("filtered"), "test")]).toEqual([7471, 1318])
    expect([rows(byId.get("shuffled"), "train"), rows(byId.get("shuffled"), "test")]).toEqual([7471, 1318])

    const second = await cliInProcess(["run", file, "--until", "shuffled", "--cache-dir", cache, "--json"])
    expect(DATA.map((id) => statusOf(JSON.parse(second.stdout).stages as Array<StageJson>)[id])).toEqual(["cached", "cached", "cached", "cached"])

    await server.close()
    const offline = spawnSync(process.execPath, [BIN, "run", file, "--until", "shuffled", "--cache-dir", cache, "--json"], {
      cwd: REPO,
      env: { ...process.env, HF_HUB_OFFLINE: "1", HF_ENDPOINT: "http://127.0.0.1:9" },
      encoding: "utf8"
    })
    expect(offline.status, offline.stderr).toBe(0)
    expect(DATA.map((id) => statusOf(JSON.parse(offline.stdout).stages as Array<StageJson>)[id])).toEqual(["cached", "cached", "cached", "cached"])
  }, 180_000)
})
