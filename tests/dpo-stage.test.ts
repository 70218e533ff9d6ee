/**
 * The `dpo` stage end to end, on a tiny model and preference pairs written here: the
 * run and its log, TRL's metrics in the table `show` prints and in `--json`, the
 * reference log-probabilities as the stage's dataset, computed once (another beta
 * re-runs dpo and reuses them), LoRA (an adapter folder out), resume after kill -9 to
 * the weights an uninterrupted run ends with, and clear errors for bad data.
 */
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { cliAsync, projectTempDir, runAndKillAtCheckpoint, tempDir, writeFile } from "./helpers.ts"
import { writeTinyModel } from "./support/tiny-model.ts"

/** The default backend (wasm here): the cpu backend's matrix products make these runs minutes long (tests/dpo.test.ts holds cpu to the golden numbers). */
const ENV = {}

/** Arithmetic pairs: the chosen answer is right, the rejected one off by one. */
const pairs = (count: number, offset: number) =>
  Array.from({ length: count }, (_, i) => {
    const a = i + offset
    const b = (i * 7) % 10
    return JSON.stringify({ prompt: `What is ${a} + ${b}? `, chosen: `${a + b}.`, rejected: `${a + b + 1}.` })
  }).join("\n") + "\n"

const pipeline = (extra = "") => `name: prefs
stages:
  pairs:
    uses: fetch
    with: { path: { train: train.jsonl, test: test.jsonl } }
  dpo:
    uses: dpo
    needs: [pairs]
    with:
      model: ./tiny-model
      beta: 0.1
      learning_rate: 1.0e-3
      batch_size: 2
      gradient_accumulation_steps: 2
      epochs: 1
      logging_steps: 1
      eval_steps: 2
      save_steps: 1
${extra}`

let dir: string

beforeAll(async () => {
  dir = projectTempDir()
  await writeTinyModel(join(dir, "tiny-model"), { seed: 5 })
  writeFile(dir, "train.jsonl", pairs(12, 1))
  writeFile(dir, "test.jsonl", pairs(4, 40))
}, 300_000)

const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

describe("the dpo stage", () => {
  it("trains, logs TRL's metrics, and keeps the reference log-probabilities apart: another beta reuses them", async () => {
    const cache = tempDir()
    const file = writeFile(dir, "dpo.yaml", pipeline())
    const first = await cliAsync(["run", file, "--cache-dir", cache, "--json"], { env: ENV })
    expect(first.code, first.stderr).toBe(0)
    expect(first.stderr).toContain("the reference log-probabilities of 12 train pairs and 4 test pairs")
    expect(first.stderr).toMatch(/training .* on 12 pairs, evaluating on 4 \(sigmoid, beta 0\.1\): 3 steps/)
    // Step 1: the policy is the reference (to float noise: the reference ran in batches of another shape), so the loss is log 2 and the rewards 0.
    expect(first.stderr).toMatch(/step 1 \(epoch [\d.]+\): loss 0\.6931, .*rewards\/chosen -?0\.0000, rewards\/rejected -?0\.0000, rewards\/accuracies [\d.]+, rewards\/margins -?0\.0000, logps\/chosen -\d/)
    expect(first.stderr).toMatch(/step 2 \(epoch [\d.]+\): eval_loss \d\.\d{4}, eval_rewards\/chosen /)
    const dpo = (JSON.parse(first.stdout) as { stages: Array<{ id: string; metrics: Record<string, number> }> }).stages.find((s) => s.id === "dpo")!
    expect(Object.keys(dpo.metrics)).toEqual(expect.arrayContaining(["steps", "loss", "eval_loss", "rewards/margins", "rewards/accuracies", "eval_rewards/margins", "logps/chosen"]))
    expect(dpo.metrics.steps).toBe(3)

    const table = await cliAsync(["show", file, "dpo", "--cache-dir", cache, "--format", "jsonl"], { env: ENV })
    expect(table.code, table.stderr).toBe(0)
    const rows = table.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, number | null>)
    expect(rows.map((r) => r.step)).toEqual([1, 2, 2, 3])
    // Step 1: every reward is 0 (to float noise); step 2's second row is the evaluation.
    expect(Math.abs(rows[0]!["rewards/margins"]!)).toBeLessThan(1e-5)
    expect(rows[0]!.loss).toBeCloseTo(Math.log(2), 4)
    expect(rows[1]!["eval_loss"]).toBeNull()
    expect(rows[2]!["eval_loss"]).toBeGreaterThan(0)
    expect(rows[2]!["eval_rewards/accuracies"]).toBeGreaterThanOrEqual(0)
    expect(rows[2]!["rewards/margins"]).toBeNull()

    const reference = await cliAsync(["show", file, "dpo", "--split", "train", "--limit", "100", "--cache-dir", cache, "--format", "jsonl"], { env: ENV })
    expect(reference.code, reference.stderr).toBe(0)
    const refs = reference.stdout.trim().split("\n").map((line) => JSON.parse(line) as { ref_chosen_logps: number; ref_rejected_logps: number; chosen_tokens: number })
    expect(refs).toHaveLength(12)
    for (const r of refs) {
      expect(r.ref_chosen_logps).toBeLessThan(0)
      expect(r.ref_rejected_logps).toBeLessThan(0)
      expect(r.chosen_tokens).toBeGreaterThan(1)
    }

    const again = await cliAsync(["run", file, "--cache-dir", cache, "--set", "dpo.beta=0.5"], { env: ENV })
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr).toContain("param `beta` changed 0.1→0.5")
    expect(again.stderr).toContain("the reference log-probabilities are cached: not computed again")
    expect(again.stderr).not.toContain("the reference log-probabilities of 12")
    expect(again.stderr).toMatch(/pairs: .*cached|✔ pairs: cached|pairs.*up to date/)
  }, 600_000)

  it("with lora: an adapter folder out, the same cached reference (the base with the adapter off)", async () => {
    const cache = tempDir()
    const full = writeFile(dir, "full.yaml", pipeline())
    expect((await cliAsync(["run", full, "--cache-dir", cache], { env: ENV })).code).toBe(0)
    const file = writeFile(dir, "lora.yaml", pipeline("      lora: { r: 4, lora_alpha: 8, target_modules: all-linear }\n"))
    const run = await cliAsync(["run", file, "--cache-dir", cache, "--json"], { env: ENV })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toContain("the reference log-probabilities are cached: not computed again")
    expect(run.stderr).toMatch(/LoRA r 4 on \d+ layers/)
    const dpo = (JSON.parse(run.stdout) as { stages: Array<{ id: string; outputs: { model: { dir: string } } }> }).stages.find((s) => s.id === "dpo")!
    expect(readFileSync(join(dpo.outputs.model.dir, "adapter_config.json"), "utf8")).toContain('"peft_type": "LORA"')
  }, 600_000)

  it("evaluates on the training split itself when eval_split names it", async () => {
    const cache = tempDir()
    const file = writeFile(dir, "self.yaml", pipeline("      eval_split: train\n"))
    const run = await cliAsync(["run", file, "--cache-dir", cache], { env: ENV })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toMatch(/training .* on 12 pairs, evaluating on 12 /)
    expect(run.stderr).toContain("the reference log-probabilities of 12 train pairs")
    expect(run.stderr).toMatch(/step 2 \(epoch [\d.]+\): eval_loss \d\.\d{4}, eval_rewards\/chosen /)
  }, 600_000)

  it("resumes after kill -9 and ends with the weights of an uninterrupted run", async () => {
    const file = writeFile(dir, "resume.yaml", pipeline())
    // Nine steps: killed at the second checkpoint, seven are left to resume, however fast the machine.
    const longer = ["--set", "dpo.epochs=3"]
    const whole = tempDir()
    const straight = await cliAsync(["run", file, ...longer, "--cache-dir", whole, "--json"], { env: ENV })
    expect(straight.code, straight.stderr).toBe(0)
    const cache = tempDir()
    await runAndKillAtCheckpoint([file, ...longer], cache, ENV, /^checkpoint-2$/)
    const resumed = await cliAsync(["run", file, ...longer, "--cache-dir", cache, "--json"], { env: ENV })
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stderr).toMatch(/resuming from checkpoint-\d/)
    const modelOf = (stdout: string) =>
      join((JSON.parse(stdout) as { stages: Array<{ id: string; outputs: { model: { dir: string } } }> }).stages.find((s) => s.id === "dpo")!.outputs.model.dir, "model.safetensors")
    expect(sha(modelOf(resumed.stdout))).toBe(sha(modelOf(straight.stdout)))
  }, 600_000)

  it("refuses data without pairs, and a completion max_length leaves nothing of, naming the row", async () => {
    const cache = tempDir()
    writeFile(dir, "bad.jsonl", '{"question": "q", "answer": "a"}\n')
    const noPairs = writeFile(dir, "nopairs.yaml", pipeline().replace("{ train: train.jsonl, test: test.jsonl }", "{ train: bad.jsonl }"))
    const first = await cliAsync(["run", noPairs, "--cache-dir", cache], { env: ENV })
    expect(first.code).toBe(1)
    expect(first.stderr).toContain(`✖ dpo: failed: split "train" has neither text columns prompt, chosen, rejected nor token columns prompt_input_ids, chosen_input_ids, rejected_input_ids (columns: question, answer)`)
    const short = writeFile(dir, "short.yaml", pipeline("      max_length: 8\n"))
    const second = await cliAsync(["run", short, "--cache-dir", cache], { env: ENV })
    expect(second.code).toBe(1)
    expect(second.stderr).toMatch(/✖ dpo: failed: split "train" row \d+: the chosen completion starts after max_length \(8; the prompt has \d+ tokens\): nothing of it can be scored/)
    writeFile(dir, "empty.jsonl", '{"prompt": "", "chosen": "", "rejected": "no"}\n')
    const empty = writeFile(dir, "empty.yaml", pipeline().replace("{ train: train.jsonl, test: test.jsonl }", "{ train: empty.jsonl }"))
    const unscored = await cliAsync(["run", empty, "--cache-dir", cache], { env: ENV })
    expect(unscored.code).toBe(1)
    expect(unscored.stderr).toContain(`✖ dpo: failed: split "train" row 0: the chosen completion has one token and the prompt none (the first token is never scored): nothing of it can be scored`)
    const smoothing = writeFile(dir, "smoothing.yaml", pipeline("      loss_type: ipo\n      label_smoothing: 0.1\n"))
    const third = await cliAsync(["run", smoothing, "--cache-dir", cache], { env: ENV })
    expect(third.code).toBe(2)
    expect(third.stderr).toContain("label_smoothing applies to loss_type sigmoid only")
  }, 600_000)
})
