/**
 * The trainer against transformers, and against itself: the fixture's AdamW loss
 * trajectory (golden numbers from torch.optim.AdamW), an interrupted run that
 * resumes to the same weights, and a diverging run that stops with the step named.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Effect } from "effect"
import { createHash } from "node:crypto"
import { readdirSync, readFileSync, truncateSync } from "node:fs"
import { join, resolve } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { type BackendName, initBackend } from "../src/backend/select.ts"
import { loadHfFolder } from "../src/model/hf-folder.ts"
import { disposeModel, type Qwen2 } from "../src/model/qwen2.ts"
import { AdamW } from "../src/train/adamw.ts"
import type { Batch } from "../src/train/collate.ts"
import { updateStep } from "../src/train/trainer.ts"
import { cliAsync, REPO, runAndKillAtCheckpoint, SHARED, tempDir, writeFile } from "./helpers.ts"

const FIXTURE = join(SHARED, "fixtures/qwen2-tiny")
const golden = JSON.parse(readFileSync(join(FIXTURE, "golden.json"), "utf8")) as {
  batch: { input_ids: Array<Array<number>>; attention_mask: Array<Array<number>>; labels: Array<Array<number>>; num_label_tokens_after_shift: number }
  adamw_same_batch: { hyper: { lr: number; weight_decay: number }; loss_trajectory: Array<number> }
  adamw_same_batch_clip1: { loss_trajectory: Array<number> }
}

const goldenBatch: Batch = {
  size: golden.batch.input_ids.length,
  length: golden.batch.input_ids[0]!.length,
  inputIds: Int32Array.from(golden.batch.input_ids.flat()),
  labels: Int32Array.from(golden.batch.labels.flat()),
  attentionMask: Int32Array.from(golden.batch.attention_mask.flat()),
  labelTokens: golden.batch.num_label_tokens_after_shift,
  tokens: golden.batch.attention_mask.flat().reduce((a, b) => a + b, 0)
}

/** Ten updates on the fixture batch; the loss each update reports is the loss before it. */
const trajectory = async (clip: number | undefined) => {
  const model: Qwen2 = (await Effect.runPromise(loadHfFolder(FIXTURE).pipe(Effect.provide(NodeContext.layer)))).model
  try {
    const optimizer = new AdamW({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: golden.adamw_same_batch.hyper.weight_decay })
    const losses: Array<number> = []
    for (let step = 0; step <= 10; step++) {
      // The golden run decays every parameter (plain torch.optim.AdamW, not the Trainer's grouping).
      const { loss } = updateStep(model, optimizer, [goldenBatch], {
        normalizer: goldenBatch.labelTokens,
        lr: step < 10 ? golden.adamw_same_batch.hyper.lr : 0,
        maxGradNorm: clip,
        decay: () => true
      })
      losses.push(loss)
    }
    return losses
  } finally {
    disposeModel(model)
  }
}

describe.each<BackendName>(["wasm", "cpu"])("AdamW steps on qwen2-tiny match transformers on %s", (backend) => {
  beforeAll(async () => {
    await initBackend({ backend, threads: 1 })
  })

  it("losses after 1 and 10 steps, unclipped and clipped at 1.0", async () => {
    const plain = await trajectory(undefined)
    const want = golden.adamw_same_batch.loss_trajectory
    expect(Math.abs(plain[0]! - want[0]!)).toBeLessThan(1e-5)
    expect(Math.abs(plain[1]! - want[1]!)).toBeLessThan(1e-4)
    expect(Math.abs(plain[10]! - want[10]!)).toBeLessThan(1e-4)
    const clipped = await trajectory(1.0)
    const wantClipped = golden.adamw_same_batch_clip1.loss_trajectory
    expect(Math.abs(clipped[1]! - wantClipped[1]!)).toBeLessThan(1e-4)
    expect(Math.abs(clipped[10]! - wantClipped[10]!)).toBeLessThan(1e-4)
  }, 300_000)
})

const ASCII = resolve(REPO, "pipelines/tokenizers/ascii")

const trainPipeline = (dir: string, learningRate = "2.0e-3") =>
  writeFile(dir, "p.yaml", `name: resume
stages:
  problems: { uses: word-problems, with: { splits: { train: 400, test: 24 }, seed: 1, max_operand: 9 } }
  tokenized:
    uses: tokenize
    needs: [problems]
    with: { tokenizer: ${JSON.stringify(ASCII)}, prompt: question, completion: answer }
  train:
    uses: train
    needs: [tokenized]
    with:
      init: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 256 }
      tokenizer: ${JSON.stringify(ASCII)}
      max_steps: 40
      batch_size: 8
      gradient_accumulation_steps: 2
      learning_rate: ${learningRate}
      lr_scheduler: cosine
      warmup_steps: 4
      eval_steps: 10
      save_steps: 10
      save_total_limit: 2
      logging_steps: 5
`)

interface RunJson {
  stages: Array<{ id: string; status: string; reason: string; metrics: Record<string, number>; outputs: { entry: string; model?: { dir: string } } | null }>
}

const weightsHash = (run: RunJson) => {
  const stage = run.stages.find((s) => s.id === "train")!
  return createHash("sha256").update(readFileSync(join(stage.outputs!.model!.dir, "model.safetensors"))).digest("hex")
}

describe("train stage", () => {
  it("resumes after kill -9 from the last checkpoint and ends with the same weights as an uninterrupted run", async () => {
    const reference = await cliAsync(["run", trainPipeline(tempDir()), "--cache-dir", tempDir(), "--json"], { env: { PIPELINE_THREADS: "1" } })
    expect(reference.code, reference.stderr).toBe(0)
    const uninterrupted = JSON.parse(reference.stdout) as RunJson
    const train = uninterrupted.stages.find((s) => s.id === "train")!
    expect(train.metrics.steps).toBe(40)
    expect(train.metrics.eval_loss).toBeLessThan(train.metrics.loss! + 1)

    const dir = tempDir()
    const cache = tempDir()
    const file = trainPipeline(dir)
    // Killed as soon as a checkpoint exists, mid-training.
    await runAndKillAtCheckpoint([file], cache, { PIPELINE_THREADS: "1" })
    const resumed = await cliAsync(["run", file, "--cache-dir", cache, "--json"], { env: { PIPELINE_THREADS: "1" } })
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stderr).toMatch(/train: resuming from checkpoint-(10|20|30) \(step \d+ of 40\)/)
    const json = JSON.parse(resumed.stdout) as RunJson
    expect(json.stages.map((s) => `${s.id}:${s.status}`)).toEqual(["problems:cached", "tokenized:cached", "train:ran"])
    expect(weightsHash(json)).toBe(weightsHash(uninterrupted))
    // The work folder goes once the entry is committed.
    expect(readdirSync(join(cache, "work"))).toEqual([])
  }, 300_000)

  it("falls back to the previous checkpoint when the newest is damaged, and says so", async () => {
    const reference = await cliAsync(["run", trainPipeline(tempDir()), "--cache-dir", tempDir(), "--json"], { env: { PIPELINE_THREADS: "1" } })
    expect(reference.code, reference.stderr).toBe(0)
    const dir = tempDir()
    const cache = tempDir()
    const file = trainPipeline(dir)
    await runAndKillAtCheckpoint([file], cache, { PIPELINE_THREADS: "1" }, /^checkpoint-20$/)
    const work = join(cache, "work", readdirSync(join(cache, "work")).find((fp) => readdirSync(join(cache, "work", fp)).includes("checkpoint-20"))!)
    // On a busy machine the kill may come a checkpoint later: damage the newest, whichever it is.
    const [newest, previous] = readdirSync(work).filter((n) => /^checkpoint-\d+$/.test(n)).sort((a, b) => Number(b.slice(11)) - Number(a.slice(11)))
    // A torn write: the weights cut short (the state file says the checkpoint is complete).
    truncateSync(join(work, newest!, "model.safetensors"), 1000)
    const resumed = await cliAsync(["run", file, "--cache-dir", cache, "--json"], { env: { PIPELINE_THREADS: "1" } })
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stderr).toContain(`train: ${newest} is damaged (`)
    expect(resumed.stderr).toMatch(new RegExp(`train: ${newest} is damaged \\(.*model\\.safetensors.*\\): falling back to ${previous}`))
    expect(resumed.stderr).toContain(`train: resuming from ${previous} (step ${previous!.slice(11)} of 40)`)
    expect(weightsHash(JSON.parse(resumed.stdout) as RunJson)).toBe(weightsHash(JSON.parse(reference.stdout) as RunJson))
  }, 300_000)

  it("stops with the step named when training diverges", async () => {
    const result = await cliAsync(["run", trainPipeline(tempDir(), "1.0e+30"), "--cache-dir", tempDir()], {
      env: { PIPELINE_THREADS: "1" }
    })
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/✖ train: failed: training diverged at step \d+: loss (NaN|Infinity|-Infinity), gradient norm \S+\. The weights were not updated; the last checkpoint is kept\./)
  }, 300_000)
})

describe("train from scratch (init)", () => {
  it("pads the vocabulary to init.vocab_size, and refuses one smaller than the tokenizer's", async () => {
    const dir = tempDir()
    const base = readFileSync(trainPipeline(dir), "utf8").replace("max_steps: 40", "max_steps: 1").replace(/ {6}eval_steps: 10\n {6}save_steps: 10\n/, "")
    writeFile(dir, "p.yaml", base.replace("init: { hidden_size: 32,", "init: { vocab_size: 128, hidden_size: 32,"))
    const padded = await cliAsync(["run", join(dir, "p.yaml"), "--cache-dir", tempDir(), "--json"], { env: { PIPELINE_THREADS: "1" } })
    expect(padded.code, padded.stderr).toBe(0)
    const model = (JSON.parse(padded.stdout) as RunJson).stages.find((s) => s.id === "train")!.outputs!.model!.dir
    expect(JSON.parse(readFileSync(join(model, "config.json"), "utf8")).vocab_size).toBe(128)

    writeFile(dir, "p.yaml", base.replace("init: { hidden_size: 32,", "init: { vocab_size: 8, hidden_size: 32,"))
    const small = await cliAsync(["run", join(dir, "p.yaml"), "--cache-dir", tempDir()], { env: { PIPELINE_THREADS: "1" } })
    expect(small.code).toBe(1)
    expect(small.stderr).toMatch(/train\.init\.vocab_size is 8, but the tokenizer has \d+ tokens: give at least \d+, or leave it out/)
  }, 300_000)
})

describe("train, evaluate and generate in one pipeline", () => {
  it("--set evaluate.limit re-runs only evaluate; a new learning rate re-runs train, evaluate and generate but no data stage", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = trainPipeline(dir)
    writeFile(dir, "p.yaml", readFileSync(file, "utf8").replace("max_steps: 40", "max_steps: 6").replace("prompt: question, completion: answer }", "prompt: question, completion: answer, keep: [question, answer] }") + `  evaluate:
    uses: evaluate
    needs: [tokenized, train]
    with: { limit: 4, max_new_tokens: 12, eval_batch_size: 8 }
  generate:
    uses: generate
    needs: [train]
    with: { prompts: ["Ava has 2 apples."], max_new_tokens: 8 }
`)
    const statuses = async (...args: Array<string>) => {
      const result = await cliAsync(["run", file, "--cache-dir", cache, "--json", ...args], { env: { PIPELINE_THREADS: "1" } })
      expect(result.code, result.stderr).toBe(0)
      const json = JSON.parse(result.stdout) as RunJson
      return { statuses: Object.fromEntries(json.stages.map((s) => [s.id, s.status])), json }
    }
    const first = await statuses()
    expect(Object.values(first.statuses)).toEqual(["ran", "ran", "ran", "ran", "ran"])
    const metrics = first.json.stages.find((s) => s.id === "evaluate")!.metrics
    expect(metrics.perplexity).toBeCloseTo(Math.exp(metrics.eval_loss!), 6)
    expect(metrics.accuracy).toBeGreaterThanOrEqual(0)
    expect(first.json.stages.find((s) => s.id === "train")!.metrics.tokens_per_second).toBeGreaterThan(0)
    expect((await statuses("--set", "evaluate.limit=2")).statuses).toEqual({ problems: "cached", tokenized: "cached", train: "cached", evaluate: "ran", generate: "cached" })
    expect((await statuses("--set", "train.learning_rate=0.001")).statuses).toEqual({ problems: "cached", tokenized: "cached", train: "ran", evaluate: "ran", generate: "ran" })
  }, 300_000)
})
