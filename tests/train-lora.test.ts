/**
 * LoRA through the `train` stage, end to end in the real CLI, offline: a small model
 * trained from scratch, then a LoRA adapter on it (dropout, NEFTune, all linear layers),
 * written as a PEFT folder; evaluate, generate and `pipeline generate` take the adapter;
 * `merge` writes the whole model instead; an interrupted LoRA run resumes to the same
 * bytes; `adapter:` trains an existing adapter further.
 */
import { createHash } from "node:crypto"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { describe, expect, it } from "vitest"
import { cliAsync, REPO, runAndKillAtCheckpoint, tempDir, writeFile } from "./helpers.ts"

const ASCII = resolve(REPO, "pipelines/tokenizers/ascii")
const ENV = { PIPELINE_THREADS: "1" }

const pipeline = (dir: string, loraWith = "") =>
  writeFile(dir, "p.yaml", `name: lora
stages:
  problems: { uses: word-problems, with: { splits: { train: 240, test: 16 }, seed: 1, max_operand: 9 } }
  tokenized:
    uses: tokenize
    needs: [problems]
    with: { tokenizer: ${JSON.stringify(ASCII)}, prompt: question, completion: answer, keep: [question, answer] }
  pretrain:
    uses: train
    needs: [tokenized]
    with:
      init: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256 }
      tokenizer: ${JSON.stringify(ASCII)}
      max_steps: 30
      batch_size: 8
      learning_rate: 3.0e-3
      logging_steps: 10
  lora:
    uses: train
    needs: [tokenized, pretrain]
    with:
      lora: { r: 4, lora_alpha: 8, lora_dropout: 0.1, target_modules: all-linear }
      neftune_noise_alpha: 5
      max_steps: 16
      batch_size: 8
      gradient_accumulation_steps: 2
      learning_rate: 1.0e-2
      save_steps: 4
      eval_steps: 8
      logging_steps: 4${loraWith}
  evaluate:
    uses: evaluate
    needs: [tokenized, lora]
    with: { limit: 4, max_new_tokens: 10, compare_base: true }
  generate:
    uses: generate
    needs: [lora]
    with: { prompts: ["Ava has 2 apples."], max_new_tokens: 10 }
`)

interface RunJson {
  stages: Array<{ id: string; status: string; metrics: Record<string, number>; outputs: { model?: { dir: string }; dataset?: { splits: Record<string, Array<{ path: string }>> } } | null }>
}

const run = async (file: string, cache: string, ...args: Array<string>) => {
  const result = await cliAsync(["run", file, "--cache-dir", cache, "--json", ...args], { env: ENV })
  expect(result.code, result.stderr).toBe(0)
  return { json: JSON.parse(result.stdout) as RunJson, stderr: result.stderr }
}

const stage = (json: RunJson, id: string) => json.stages.find((s) => s.id === id)!
const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

describe("train with lora", () => {
  it("writes a PEFT adapter over its base, which evaluate, generate and pipeline generate load; merge writes the whole model", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = pipeline(dir)
    const { json, stderr } = await run(file, cache)
    expect(json.stages.map((s) => `${s.id}:${s.status}`)).toEqual(["problems:ran", "tokenized:ran", "pretrain:ran", "lora:ran", "evaluate:ran", "generate:ran"])
    expect(stderr).toMatch(/lora: LoRA r 4 on 14 layers \(down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj\), scaling 2: [\d,]+ trainable parameters/)
    const base = stage(json, "pretrain").outputs!.model!.dir
    const adapter = stage(json, "lora").outputs!.model!.dir
    expect(readdirSync(adapter).sort()).toEqual(expect.arrayContaining(["adapter_config.json", "adapter_model.safetensors", "tokenizer.json"]))
    expect(existsSync(join(adapter, "model.safetensors"))).toBe(false)
    const config = JSON.parse(readFileSync(join(adapter, "adapter_config.json"), "utf8")) as Record<string, unknown>
    expect(config).toMatchObject({ peft_type: "LORA", task_type: "CAUSAL_LM", base_model_name_or_path: base, revision: null, r: 4, lora_alpha: 8, lora_dropout: 0.1 })
    const weights = readFileSync(join(adapter, "adapter_model.safetensors"))
    const header = JSON.parse(weights.subarray(8, 8 + Number(weights.readBigUInt64LE(0))).toString()) as Record<string, { shape: Array<number> }>
    expect(Object.keys(header).filter((k) => k !== "__metadata__")).toHaveLength(28)
    expect(header["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]!.shape).toEqual([4, 64])
    expect(header["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]!.shape).toEqual([32, 4])
    expect(stage(json, "lora").metrics.trainable_parameters).toBe(2 * (4 * (32 + 32) * 2 + 4 * (32 + 16) * 2 + 4 * (32 + 64) * 3))

    // evaluate compared the adapter with the model it was trained on.
    const summary = await cliAsync(["show", file, "evaluate", "--split", "summary", "--format", "jsonl", "--cache-dir", cache])
    const rows = summary.stdout.trim().split("\n").map((line) => JSON.parse(line) as { model: string; eval_loss: number })
    expect(rows.map((r) => r.model)).toEqual(["lora", `${base} (base)`])
    expect(rows[0]!.eval_loss).not.toBeCloseTo(rows[1]!.eval_loss, 3)

    // `pipeline generate` on the adapter folder prints what the generate stage wrote.
    const generated = await cliAsync(["show", file, "generate", "--format", "jsonl", "--cache-dir", cache])
    const text = (JSON.parse(generated.stdout.trim().split("\n")[0]!) as { generated: string }).generated
    const command = await cliAsync(["generate", "--model", adapter, "--prompt", "Ava has 2 apples.", "--max-new-tokens", "10"], { env: ENV })
    expect(command.code, command.stderr).toBe(0)
    expect(command.stdout).toBe(`${text}\n`)

    // merge: the whole model, which evaluates to the adapter's loss.
    const merged = await run(file, cache, "--set", "lora.merge=true")
    expect(merged.json.stages.map((s) => `${s.id}:${s.status}`)).toEqual(["problems:cached", "tokenized:cached", "pretrain:cached", "lora:ran", "evaluate:ran", "generate:ran"])
    const mergedDir = stage(merged.json, "lora").outputs!.model!.dir
    expect(existsSync(join(mergedDir, "model.safetensors"))).toBe(true)
    expect(existsSync(join(mergedDir, "adapter_config.json"))).toBe(false)
    expect(stage(merged.json, "evaluate").metrics.eval_loss).toBeCloseTo(stage(json, "evaluate").metrics.eval_loss!, 5)
  }, 300_000)

  it("resumes after kill -9 to the same adapter bytes, noise and dropout included", async () => {
    const reference = await run(pipeline(tempDir()), tempDir(), "--until", "lora")
    const want = sha(join(stage(reference.json, "lora").outputs!.model!.dir, "adapter_model.safetensors"))
    const dir = tempDir()
    const cache = tempDir()
    const file = pipeline(dir)
    await run(file, cache, "--until", "pretrain")
    await runAndKillAtCheckpoint([file, "--until", "lora"], cache, ENV, /^checkpoint-(4|8|12)$/)
    const resumed = await run(file, cache, "--until", "lora")
    expect(resumed.stderr).toMatch(/lora: resuming from checkpoint-(4|8|12) \(step \d+ of 16\)/)
    expect(sha(join(stage(resumed.json, "lora").outputs!.model!.dir, "adapter_model.safetensors"))).toBe(want)
  }, 300_000)

  it("trains an existing adapter further with `adapter:`, its settings from its folder", async () => {
    const first = await run(pipeline(tempDir()), tempDir(), "--until", "lora")
    const base = stage(first.json, "pretrain").outputs!.model!.dir
    const adapter = stage(first.json, "lora").outputs!.model!.dir
    const dir = tempDir()
    const file = writeFile(dir, "more.yaml", readFileSync(pipeline(dir), "utf8")
      .replace("    needs: [tokenized, pretrain]\n", "    needs: [tokenized]\n")
      .replace("      lora: { r: 4, lora_alpha: 8, lora_dropout: 0.1, target_modules: all-linear }\n", `      model: ${JSON.stringify(base)}\n      adapter: ${JSON.stringify(adapter)}\n`))
    const more = await run(file, tempDir(), "--until", "lora")
    expect(more.stderr).toMatch(/lora: training .* with a LoRA adapter \(continuing .*\) on 240 examples/)
    const out = stage(more.json, "lora").outputs!.model!.dir
    const config = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")) as Record<string, unknown>
    expect(config).toMatchObject({ r: 4, lora_alpha: 8, lora_dropout: 0.1, base_model_name_or_path: base })
    expect(sha(join(out, "adapter_model.safetensors"))).not.toBe(sha(join(adapter, "adapter_model.safetensors")))
  }, 300_000)

  it("says what is wrong before anything runs, or when no layer matches", async () => {
    const dir = tempDir()
    const init = pipeline(dir).replace("p.yaml", "")
    const bad = writeFile(dir, "bad.yaml", readFileSync(join(init, "p.yaml"), "utf8").replace("      max_steps: 30\n", "      max_steps: 30\n      lora: { r: 4 }\n"))
    const refused = await cliAsync(["run", bad, "--cache-dir", tempDir()], { env: ENV })
    expect(refused.code).toBe(2)
    expect(refused.stderr).toMatch(/stages\.pretrain\.with: LoRA adapts a trained model: give `model` \(or a stage in `needs` that trains one\) instead of `init`/)
    const nothing = writeFile(dir, "nothing.yaml", readFileSync(join(init, "p.yaml"), "utf8").replace("target_modules: all-linear", "target_modules: [qkv_proj]"))
    const failed = await cliAsync(["run", nothing, "--cache-dir", tempDir(), "--until", "lora"], { env: ENV })
    expect(failed.code).toBe(1)
    expect(failed.stderr).toMatch(/lora: failed: lora\.lora: target_modules \["qkv_proj"\] matches no linear layer of this model/)
  }, 300_000)
})
