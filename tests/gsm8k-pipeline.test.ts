/**
 * The tutorial's pipeline files against a loopback hub: `HF_ENDPOINT=<loopback hub>
 * pipeline run pipelines/gsm8k.yaml --until shuffled`, then fully cached, then offline
 * with no server at all; and the smoke run of training (`--set train.max_steps=2`) of
 * gsm8k.yaml and gsm8k-lora.yaml, unchanged, with a small stand-in behind the hub's
 * Qwen/Qwen2.5-0.5B (its real tokenizer and vocabulary, hidden 32: see
 * tests/support/standin-model.ts; `npm run bench -- --cases gsm8k` runs the full size).
 */
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cliAsync, cliInProcess, REPO, tempDir } from "./helpers.ts"
import { defaultRepos, type RepoSpec, startHubServer } from "./support/hub-server.ts"
import { standInCheckpoint } from "./support/standin-model.ts"

type Server = Awaited<ReturnType<typeof startHubServer>>
let server: Server
const hfCache = tempDir()
const cache = tempDir()
const file = join(REPO, "pipelines/gsm8k.yaml")
const saved = { ...process.env }

/** The hub's Qwen/Qwen2.5-0.5B with a small stand-in checkpoint of its vocabulary. */
const repos = (): ReadonlyArray<RepoSpec> => defaultRepos().map((repo) => repo.name !== "Qwen/Qwen2.5-0.5B" ? repo : {
  ...repo,
  branches: {
    main: {
      ...repo.branches.main,
      ...standInCheckpoint({ hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 })
    }
  }
})

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
    const offline = await cliAsync(["run", file, "--until", "shuffled", "--cache-dir", cache, "--json"], {
      env: { HF_HUB_OFFLINE: "1", HF_ENDPOINT: "http://127.0.0.1:9" }
    })
    expect(offline.code, offline.stderr).toBe(0)
    expect(DATA.map((id) => statusOf(JSON.parse(offline.stdout).stages as Array<StageJson>)[id])).toEqual(["cached", "cached", "cached", "cached"])
  }, 600_000)
})

describe("the tutorial's training starts (a stand-in checkpoint behind the loopback hub)", () => {
  let hub: Server
  // The data stages are cached by the test above; the same files give the same commits.
  beforeAll(async () => {
    hub = await startHubServer({ repos: repos() })
  })
  afterAll(() => hub.close())

  it.each(["gsm8k.yaml", "gsm8k-lora.yaml"])("%s starts: two steps of the tutorial's training (--set train.max_steps=2)", async (name) => {
    const result = await cliAsync(["run", join(REPO, "pipelines", name), "--until", "train", "--set", "train.max_steps=2", "--cache-dir", cache, "--json"], {
      env: { HF_ENDPOINT: hub.url, HF_HUB_CACHE: hfCache, PIPELINE_THREADS: "1" },
      // Eight micro-batches through a 151,936-token head: about 30 s here, minutes on a busy machine.
      timeoutMs: 900_000
    })
    expect(result.code, result.stderr).toBe(0)
    const train = (JSON.parse(result.stdout).stages as Array<StageJson & { outputs: { model?: { dir: string } } }>).find((s) => s.id === "train")!
    expect(train.status).toBe("ran")
    expect(train.metrics.steps).toBe(2)
    expect(result.stderr).toMatch(/train: training Qwen\/Qwen2\.5-0\.5B.* on 7471 examples, evaluating on 1318: 2 steps \(374 per epoch\), warmup 1/)
    // Evaluation comes every 100 steps, as the Trainer: none in a 2-step run.
    expect(train.metrics.eval_loss).toBeUndefined()
    const model = train.outputs.model!.dir
    if (name === "gsm8k-lora.yaml") {
      const config = JSON.parse(readFileSync(join(model, "adapter_config.json"), "utf8")) as { base_model_name_or_path: string; revision: string; r: number }
      // Pinned to the hub commit it was trained on.
      expect(config).toMatchObject({ base_model_name_or_path: "Qwen/Qwen2.5-0.5B", revision: hub.commitOf("model", "Qwen/Qwen2.5-0.5B"), r: 16 })
      expect(result.stderr).toMatch(/LoRA r 16 on 14 layers/)
    } else expect(existsSync(join(model, "model.safetensors"))).toBe(true)
  }, 960_000)
})
