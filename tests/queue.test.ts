/**
 * Many machines, on one: Redis (Debian's redis-server), an S3-compatible server and
 * `pipeline worker` processes, all on loopback. A 2×2 sweep of the quickstart's train
 * stage goes through the queue to two workers, twice at once; a fresh machine then
 * pulls it all; `compare` lists the variants. A worker killed with SIGKILL mid-training
 * loses nothing: another resumes from the checkpoint it pushed and ends with the
 * weights of an uninterrupted run. A dead Redis fails the run clearly; Ctrl-C withdraws
 * the jobs no worker started. The canary credentials appear nowhere.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import { readdirSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cliAsync, type CliResult, cliSpawn, projectTempDir, REPO, tempDir, writeFile } from "./helpers.ts"
import { canaryLeaks, type RedisServer, type S3Server, startRedis, startS3, startWorker, until, type WorkerProcess } from "./support/servers.ts"

const ASCII = resolve(REPO, "pipelines/tokenizers/ascii")

let redis: RedisServer
let s3: S3Server
const outputs: Array<string> = []
const dirs: Array<string> = []
const workers: Array<WorkerProcess> = []

beforeAll(async () => {
  ;[redis, s3] = await Promise.all([startRedis(), startS3()])
})
afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop()))
  await Promise.all([redis?.stop(), s3?.stop()])
})

const env = () => ({ ...s3.env, PIPELINE_THREADS: "1" })

const dir = () => {
  const made = tempDir()
  dirs.push(made)
  return made
}

/**
 * A worker. Only the kill test shortens `--stall-seconds` (a dead worker's job goes to
 * another after it): elsewhere a busy machine that delays a lock's renewal by seconds
 * must not make a live worker's job look stalled.
 */
const worker = (extra: ReadonlyArray<string> = []) => {
  const started = startWorker(redis.url, join(dir(), "worker"), env(), extra)
  workers.push(started)
  return started
}

const pipeline = async (args: ReadonlyArray<string>): Promise<CliResult> => {
  const result = await cliAsync(args, { env: env(), timeoutMs: 280_000 })
  outputs.push(result.stdout, result.stderr)
  return result
}

interface RunJson {
  stages: Array<{ id: string; status: string; reason: string; remote?: string; worker?: string; fingerprint: string | null; metrics: Record<string, number> }>
}

const trainStage = (extra: string) => `  train:
    uses: train
    needs: [tokenized]
    with:
      init: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 256 }
      tokenizer: ${JSON.stringify(ASCII)}
      batch_size: 8
      learning_rate: 2.0e-3
      logging_steps: 5
${extra}`

const file = (prefix: string, train: string, seed: number) =>
  writeFile(dir(), "p.yaml", `name: sweep
cache: { remote: s3://${s3.bucket}/${prefix} }
stages:
  problems: { uses: word-problems, with: { splits: { train: 240, test: 16 }, seed: ${seed}, max_operand: 9 } }
  tokenized:
    uses: tokenize
    needs: [problems]
    with: { tokenizer: ${JSON.stringify(ASCII)}, prompt: question, completion: answer, keep: [question, answer] }
${train}`)

/** A queue run in the background: its output so far, and its exit code once it ends. */
const background = (sweep: string, json = true) => {
  const child = cliSpawn(["run", sweep, "--executor", "queue", "--queue", redis.url, "--cache-dir", dir(), ...(json ? ["--json"] : [])], env())
  let stdout = ""
  let stderr = ""
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const finished = new Promise<number | null>((done) => child.on("close", (code) => done(code))).then((code) => {
    outputs.push(stdout, stderr)
    return code
  })
  return { child, finished, stdout: () => stdout, stderr: () => stderr }
}

/** How many times workers started a stage whose id starts with `id`. */
const startsOf = (id: string) => workers.map((w) => w.output().split("\n").filter((line) => line.startsWith(`▶ ${id}`) && line.includes(" from ")).length).reduce((a, b) => a + b, 0)

const sha = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex")

describe("the queue executor (Redis, S3 and workers on loopback)", () => {
  it("a 2×2 sweep runs on two workers, twice at once, each stage once; a fresh machine pulls it all; compare lists the variants", async () => {
    const sweep = file("sweep", trainStage(`      max_steps: 6
    matrix:
      learning_rate: [3.0e-3, 1.0e-3]
      weight_decay: [0, 0.01]
`), 11)
    const [a, b] = [worker(), worker()]
    await until("the workers to start", () => [a, b].every((w) => w!.output().includes("waiting for stages")))
    // Two runs of the same sweep at once: every fingerprint is one job, run once.
    const coordinatorCache = dir()
    const [first, second] = await Promise.all([
      pipeline(["run", sweep, "--executor", "queue", "--queue", redis.url, "--cache-dir", coordinatorCache, "--json"]),
      pipeline(["run", sweep, "--executor", "queue", "--queue", redis.url, "--cache-dir", dir(), "--json"])
    ])
    expect(first.code, first.stderr).toBe(0)
    expect(second.code, second.stderr).toBe(0)
    const run = JSON.parse(first.stdout) as RunJson
    expect(run.stages.map((s) => s.id)).toEqual([
      "problems",
      "tokenized",
      "train[learning_rate=3e-3,weight_decay=0]",
      "train[learning_rate=3e-3,weight_decay=0.01]",
      "train[learning_rate=1e-3,weight_decay=0]",
      "train[learning_rate=1e-3,weight_decay=0.01]"
    ])
    for (const stage of run.stages) {
      // Ran on a worker, or found in the remote when the other run's job made it first.
      expect(`${stage.status}:${stage.remote}`, stage.reason).toMatch(/^(ran:pushed|cached:remote)$/)
      if (stage.status === "ran") expect(stage.worker).toMatch(/^[^:]+:\d+$/)
    }
    expect(startsOf("problems")).toBe(1)
    expect(startsOf("tokenized")).toBe(1)
    expect(startsOf("train[")).toBe(4)
    // Both workers ran stages.
    expect(a!.output()).toMatch(/✔ \S+: (ran|cached) in/)
    expect(b!.output()).toMatch(/✔ \S+: (ran|cached) in/)
    expect(first.stderr).toMatch(/train\[learning_rate=3e-3,weight_decay=0\]: running on worker \S+:\d+/)

    // A machine with an empty cache: everything comes from the remote, nothing runs.
    const fresh = dir()
    const pulled = await pipeline(["run", sweep, "--cache-dir", fresh, "--json"])
    expect(pulled.code, pulled.stderr).toBe(0)
    expect((JSON.parse(pulled.stdout) as RunJson).stages.map((s) => `${s.status}:${s.remote}`)).toEqual(Array(6).fill("cached:pulled"))

    // compare reads the metrics from the remote's manifests: the coordinator's own cache holds no entry.
    const compare = await pipeline(["compare", sweep, "train", "--cache-dir", coordinatorCache, "--format", "json"])
    expect(compare.code, compare.stderr).toBe(0)
    const rows = JSON.parse(compare.stdout) as Array<{ id: string; params: Record<string, unknown>; metrics: Record<string, number | null> }>
    expect(rows.map((r) => r.id).sort()).toEqual(run.stages.slice(2).map((s) => s.id).sort())
    for (const row of rows) expect(row.metrics.loss).toBeGreaterThan(0)
  })

  it("a worker killed with SIGKILL mid-training loses nothing: another resumes from its pushed checkpoint, to an uninterrupted run's weights", async () => {
    const train = trainStage(`      max_steps: 40
      gradient_accumulation_steps: 2
      lr_scheduler: cosine
      warmup_steps: 4
      eval_steps: 10
      save_steps: 10
      save_total_limit: 2
`)
    const sweep = file("resume", train, 12)
    // Only the workers of this test: the first is killed, the second finishes.
    await Promise.all(workers.map((w) => w.stop()))
    // The reference: the same stages, run here without interruption (another prefix: nothing to pull).
    const reference = await cliAsync(["run", sweep, "--cache-dir", dir(), "--json"], { env: { ...env(), PIPELINE_REMOTE: `s3://${s3.bucket}/reference` } })
    expect(reference.code, reference.stderr).toBe(0)
    const referenceRun = JSON.parse(reference.stdout) as RunJson & { stages: Array<{ outputs: { model?: { dir: string } } | null }> }
    const want = sha(join(referenceRun.stages[2]!.outputs!.model!.dir, "model.safetensors"))

    const first = worker(["--stall-seconds", "4"])
    const coordinator = background(sweep)
    // Killed once a checkpoint of train has reached the bucket.
    const bucketWork = join(s3.dir, s3.bucket, "resume", "work")
    const pushedCheckpoint = () => {
      try {
        return readdirSync(bucketWork, { recursive: true }).some((name) => /checkpoint-\d+\/trainer_state\.json\._S3rver_object$/.test(String(name)))
      } catch {
        return false
      }
    }
    await until("a checkpoint pushed by the first worker", pushedCheckpoint, 240_000)
    first.child.kill("SIGKILL")
    // Its stage's process goes with it: nothing else runs that fingerprint.
    await until("the killed worker's stage process to end", () => {
      try {
        execFileSync("pgrep", ["-f", join(first.cacheDir, "slot-0")])
        return false
      } catch {
        return true
      }
    }, 30_000)
    const second = worker(["--stall-seconds", "4"])
    const code = await coordinator.finished
    expect(code, coordinator.stderr()).toBe(0)
    const run = JSON.parse(coordinator.stdout()) as RunJson
    const trained = run.stages.find((s) => s.id === "train")!
    expect(trained.status).toBe("ran")
    expect(trained.worker).toBe(`${execFileSync("hostname", { encoding: "utf8" }).trim()}:${second.child.pid}`)
    expect(second.output()).toMatch(/train: fetched the work folder of an interrupted run from s3:\/\/artifacts\/resume\//)
    expect(second.output()).toMatch(/train: resuming from checkpoint-(10|20|30) \(step \d+ of 40\)/)

    const here = dir()
    const pulled = await pipeline(["pull", sweep, "train", "--cache-dir", here, "--json"])
    expect(pulled.code, pulled.stderr).toBe(0)
    const entry = readdirSync(join(here, "entries"))[0]!
    expect(sha(join(here, "entries", entry, "model", "model.safetensors"))).toBe(want)
  })

  it("a worker stopped with Ctrl-C mid-stage puts its job straight back, and another worker finishes it", async () => {
    const sweep = file("stopped", trainStage(`      max_steps: 40
      save_steps: 10
`), 15)
    await Promise.all(workers.map((w) => w.stop()))
    const first = worker()
    const coordinator = background(sweep)
    await until("train to start on the first worker", () => /│ train: +train: \d+\/40 steps/.test(first.output()), 240_000)
    first.child.kill("SIGINT")
    await until("the first worker to stop", () => first.child.exitCode !== null || first.child.signalCode !== null, 60_000)
    expect(first.output()).toMatch(/↩ train: stopped here, back in the queue/)
    const second = worker()
    const code = await coordinator.finished
    expect(code, coordinator.stderr()).toBe(0)
    const trained = (JSON.parse(coordinator.stdout()) as RunJson).stages.find((s) => s.id === "train")!
    expect(`${trained.status}:${trained.worker}`).toBe(`ran:${execFileSync("hostname", { encoding: "utf8" }).trim()}:${second.child.pid}`)
  })

  it("a run whose own copy of a stage has other bytes than the remote's dispatches what follows on the remote's, which the workers read", async () => {
    const sweep = file("apart", `${trainStage("      max_steps: 2\n")}  evaluate:
    uses: evaluate
    needs: [tokenized, train]
    with: { limit: 2, max_new_tokens: 4, eval_batch_size: 8 }
`, 17)
    await Promise.all(workers.map((w) => w.stop()))
    // This machine trained on its own (timings differ: other bytes, the same fingerprint) …
    const cache = dir()
    const own = await cliAsync(["run", sweep, "--cache-dir", cache, "--until", "train"], { env: { ...env(), PIPELINE_REMOTE: "off" } })
    expect(own.code, own.stderr).toBe(0)
    // … and another pushed its own training first.
    expect((await pipeline(["run", sweep, "--cache-dir", dir(), "--until", "train", "--push"])).code).toBe(0)
    worker()
    const run = await pipeline(["run", sweep, "--executor", "queue", "--queue", redis.url, "--cache-dir", cache, "--json"])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain("train: the remote has this stage's entry already, made elsewhere with other bytes: using it")
    expect((JSON.parse(run.stdout) as RunJson).stages.map((s) => `${s.id}:${s.status}`)).toEqual(["problems:cached", "tokenized:cached", "train:cached", "evaluate:ran"])
  })

  it("a stage that fails on a worker is reported with the worker's message, and its downstream is skipped", async () => {
    const project = projectTempDir()
    dirs.push(project)
    writeFile(project, "broken.ts", `import { Effect, Schema } from "effect"
import { defineStage } from ${JSON.stringify(join(REPO, "src/stage.ts"))}
import { StageError } from ${JSON.stringify(join(REPO, "src/errors.ts"))}
export default defineStage({
  name: "broken",
  version: "1",
  params: Schema.Struct({}),
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["dataset"],
  run: () => Effect.fail(new StageError({ message: "the plug-in broke on purpose" }))
})
`)
    const broken = writeFile(project, "p.yaml", `name: broken
cache: { remote: s3://${s3.bucket}/broken }
stages:
  problems: { uses: word-problems, with: { splits: { train: 40, test: 8 }, seed: 14, max_operand: 9 } }
  broken: { uses: ./broken.ts, needs: [problems] }
  after: { uses: shuffle, needs: [broken], with: { seed: 1 } }
`)
    await Promise.all(workers.map((w) => w.stop()))
    const one = worker()
    const result = await pipeline(["run", broken, "--executor", "queue", "--queue", redis.url, "--cache-dir", dir(), "--json"])
    expect(result.code).toBe(1)
    const stages = (JSON.parse(result.stdout) as RunJson).stages
    expect(stages.map((s) => `${s.id}:${s.status}`)).toEqual(["problems:ran", "broken:failed", "after:skipped"])
    expect(stages[1]!.reason).toBe(`on a worker: the plug-in broke on purpose (worker ${execFileSync("hostname", { encoding: "utf8" }).trim()}:${one.child.pid})`)
    expect(result.stderr).toMatch(/- after: skipped \(upstream `broken` failed\)/)
  })

  it("a run waiting on a job another run queued goes on when that run is interrupted; --force runs the stage again on a worker", async () => {
    const sweep = file("joined", trainStage("      max_steps: 2\n"), 16)
    await Promise.all(workers.map((w) => w.stop()))
    const first = background(sweep)
    await until("the first run's job", () => redis.cli("LLEN", "bull:pipeline-stages:wait").trim() === "1", 60_000)
    const second = background(sweep)
    await until("the second run to join it", () => second.stderr().includes("▶ problems: running (never run; queued)"), 60_000)
    first.child.kill("SIGINT")
    expect(await first.finished).toBe(130)
    // Withdrawn by the first run, queued again by the second.
    await until("the job queued again", () => redis.cli("LLEN", "bull:pipeline-stages:wait").trim() === "1", 60_000)
    const one = worker()
    expect(await second.finished, second.stderr()).toBe(0)
    expect((JSON.parse(second.stdout()) as RunJson).stages.map((s) => s.status)).toEqual(["ran", "ran", "ran"])

    const forced = await pipeline(["run", sweep, "--executor", "queue", "--queue", redis.url, "--cache-dir", dir(), "--force", "problems", "--json"])
    expect(forced.code, forced.stderr).toBe(0)
    expect((JSON.parse(forced.stdout) as RunJson).stages.map((s) => `${s.id}:${s.status}`)).toEqual(["problems:ran", "tokenized:cached", "train:cached"])
    expect(one.output()).toMatch(/│ problems: ▶ problems: running \(forced\)/)
  })

  it("a dead Redis fails the run with one clear error, never a hang; Ctrl-C withdraws the jobs no worker started", async () => {
    const sweep = file("dead", trainStage("      max_steps: 2\n"), 13)
    const nowhere = await pipeline(["run", sweep, "--executor", "queue", "--queue", "redis://127.0.0.1:1", "--cache-dir", dir()])
    expect(nowhere.code).toBe(1)
    expect(nowhere.stderr).toMatch(/cannot reach Redis at redis:\/\/127\.0\.0\.1:1 \(.*ECONNREFUSED.*\): start it/)
    // A password is never printed, whatever it holds.
    for (const url of ["redis://:S3c/retPW@127.0.0.1:1", "redis://user:S3cretPW@127.0.0.1:1"]) {
      const refused = await pipeline(["run", sweep, "--executor", "queue", "--queue", url, "--cache-dir", dir()])
      expect(refused.code).not.toBe(0)
      expect(refused.stderr).not.toMatch(/S3c\/?retPW/)
      expect(refused.stderr).toMatch(/redis:\/\/(\*\*\*@|127\.0\.0\.1:1)/)
    }

    // No worker is running: the first stage waits in the queue until Ctrl-C.
    await Promise.all(workers.map((w) => w.stop()))
    const waiting = background(sweep, false)
    await until("the first stage to be queued", () => redis.cli("LLEN", "bull:pipeline-stages:wait").trim() === "1", 60_000)
    waiting.child.kill("SIGINT")
    expect(await waiting.finished).toBe(130)
    expect(redis.cli("LLEN", "bull:pipeline-stages:wait").trim()).toBe("0")

    // Redis dies while a run waits: it fails, and says why.
    const stranded = background(sweep, false)
    await until("the first stage to be queued again", () => redis.cli("LLEN", "bull:pipeline-stages:wait").trim() === "1", 60_000)
    redis.cli("SAVE")
    await redis.stop()
    expect(await stranded.finished).toBe(1)
    expect(stranded.stderr()).toMatch(/problems: failed: lost the connection to Redis at redis:\/\/127\.0\.0\.1:\d+/)
  })

  it("the canary credentials appear in no output, no job, no file", () => {
    // The Redis dump (the jobs as they were), the bucket, every cache and pipeline folder.
    expect(readdirSync(redis.dir)).toContain("dump.rdb")
    expect(canaryLeaks([...outputs, ...workers.map((w) => w.output())], [...dirs, s3.dir, redis.dir])).toEqual([])
  })
})
