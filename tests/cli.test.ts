import { appendFileSync, readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { cliAsync, cliInProcess, GSM8K_TEST, samplePipeline, tempDir, writeFile } from "./helpers.ts"

interface RunJson {
  pipeline: string
  stages: Array<{ id: string; status: string; fingerprint: string | null; reason: string; durationMs: number; outputs: { entry: string; dataset?: { splits: Record<string, Array<{ path: string; rows: number }>> } } | null }>
}

const statuses = (json: RunJson) => Object.fromEntries(json.stages.map((s) => [s.id, s.status]))

/** 60 real GSM8K rows in a file of the test's own, so a test can edit it. */
const localData = (dir: string) =>
  writeFile(dir, "gsm8k.jsonl", readFileSync(GSM8K_TEST, "utf8").split("\n").slice(0, 60).join("\n") + "\n")

describe("pipeline CLI, end to end in a child process", () => {
  it("runs the example, caches it, re-runs only what --set changed, and explains status", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST))

    const first = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    expect(first.code).toBe(0)
    const run1 = JSON.parse(first.stdout) as RunJson
    expect(run1.pipeline).toBe("sample")
    expect(statuses(run1)).toEqual({ data: "ran", shuffled: "ran", short: "ran" })
    expect(run1.stages[0]!.reason).toBe("never run")
    expect(run1.stages[0]!.outputs!.dataset!.splits.train![0]!.rows).toBe(1319)
    expect(run1.stages[0]!.fingerprint).toMatch(/^[0-9a-f]{64}$/)
    expect(first.stderr).toContain("✔ data: ran in")
    expect(first.stderr).toContain("short: train: 1319 → ")

    const second = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    expect(statuses(JSON.parse(second.stdout) as RunJson)).toEqual({ data: "cached", shuffled: "cached", short: "cached" })
    expect(second.stderr).toContain("sample: 3 cached in")

    const third = await cliAsync(["run", file, "--cache-dir", cache, "--json", "--set", "shuffled.seed=7"])
    const run3 = JSON.parse(third.stdout) as RunJson
    expect(statuses(run3)).toEqual({ data: "cached", shuffled: "ran", short: "ran" })
    expect(run3.stages[1]!.reason).toBe("param `seed` changed 42→7")
    expect(run3.stages[2]!.reason).toBe("input `shuffled` changed")

    // The file still says 42: against the latest run (seed 7), status explains the difference.
    const status = await cliAsync(["status", file, "--cache-dir", cache])
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(/^data +fresh +\(cached \d+s ago, [0-9a-f]{12}\)$/m)
    expect(status.stdout).toMatch(/^shuffled +fresh/m)
    const changed = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST).replace("seed: 42", "seed: 9"))
    const stale = await cliAsync(["status", changed, "--cache-dir", cache])
    expect(stale.stdout).toMatch(/^shuffled +stale +param `seed` changed 7→9$/m)
    expect(stale.stdout).toMatch(/^short +stale +upstream `shuffled` is stale$/m)
  })

  it("re-runs from the stage that reads an edited input file", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const data = localData(dir)
    const file = writeFile(dir, "p.yaml", samplePipeline("gsm8k.jsonl"))
    expect((await cliInProcess(["run", file, "--cache-dir", cache])).code).toBe(0)
    appendFileSync(data, JSON.stringify({ question: "What is 1 + 1?", answer: "1 + 1 = 2\n#### 2" }) + "\n")
    const status = await cliInProcess(["status", file, "--cache-dir", cache])
    expect(status.stdout).toMatch(/^data +stale +file `gsm8k\.jsonl` changed$/m)
    const run = await cliInProcess(["run", file, "--cache-dir", cache, "--json"])
    const json = JSON.parse(run.stdout) as RunJson
    expect(statuses(json)).toEqual({ data: "ran", shuffled: "ran", short: "ran" })
    expect(json.stages[0]!.outputs!.dataset!.splits.train![0]!.rows).toBe(61)
  })

  it("selects stages with --until, --only, --force and --dry-run", async () => {
    const dir = tempDir()
    const cache = tempDir()
    localData(dir)
    const file = writeFile(dir, "p.yaml", samplePipeline("gsm8k.jsonl"))
    const run = async (...args: Array<string>) => {
      const result = await cliInProcess(["run", file, "--cache-dir", cache, "--json", ...args])
      return { code: result.code, stages: statuses(JSON.parse(result.stdout) as RunJson), json: JSON.parse(result.stdout) as RunJson, stderr: result.stderr }
    }
    expect((await run("--dry-run")).stages).toEqual({ data: "would-run", shuffled: "would-run", short: "would-run" })
    const only = await run("--only", "shuffled")
    expect(only.code).toBe(1)
    expect(only.stages).toEqual({ data: "skipped", shuffled: "failed", short: "skipped" })
    expect(only.json.stages[1]!.reason).toBe("upstream `data` is not cached: run it first, or run without --only")
    expect((await run("--until", "shuffled")).stages).toEqual({ data: "ran", shuffled: "ran", short: "skipped" })
    expect((await run("--only", "short")).stages).toEqual({ data: "cached", shuffled: "cached", short: "ran" })
    const forced = await run("--force", "data,short")
    expect(forced.stages).toEqual({ data: "ran", shuffled: "cached", short: "ran" })
    expect(forced.json.stages[0]!.reason).toBe("forced")
    const bad = await cliInProcess(["run", file, "--cache-dir", cache, "--only", "shufled"])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('--only shufled: there is no stage "shufled" in this pipeline')
  })

  it("shows rows, draws the graph and prints the JSON Schema", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST))
    const notYet = await cliInProcess(["show", file, "short", "--cache-dir", cache])
    expect(notYet.code).toBe(2)
    expect(notYet.stderr).toContain(`stage "short" has no cached output for the current pipeline (upstream \`shuffled\` is stale). Run: pipeline run`)
    await cliInProcess(["run", file, "--cache-dir", cache])
    const table = await cliInProcess(["show", file, "short", "--limit", "3", "--cache-dir", cache])
    expect(table.code).toBe(0)
    expect(table.stdout.split("\n")[0]).toMatch(/^question +│ answer$/)
    expect(table.stdout).toMatch(/\(3 of \d+ rows; question: Utf8, answer: Utf8\)/)
    const jsonl = await cliInProcess(["show", file, "shuffled", "--limit", "2", "--format", "jsonl", "--cache-dir", cache])
    const rows = jsonl.stdout.trim().split("\n").map((line) => JSON.parse(line))
    expect(rows).toHaveLength(2)
    // python3 -c "import numpy as np; print(np.random.default_rng(42).permutation(1319)[:2])"  →  [ 30 754 ]
    const original = readFileSync(GSM8K_TEST, "utf8").split("\n")
    expect(rows[0]).toEqual(JSON.parse(original[30]!))
    expect(rows[1]).toEqual(JSON.parse(original[754]!))

    expect((await cliInProcess(["dag", file])).stdout).toBe("data (fetch)\nshuffled (shuffle) ← data\nshort (filter) ← shuffled\n")
    expect((await cliInProcess(["dag", file, "--format", "mermaid"])).stdout).toContain("  shuffled --> short")
    expect((await cliInProcess(["dag", file, "--format", "dot"])).stdout).toContain('"data" -> "shuffled";')

    const schema = JSON.parse((await cliInProcess(["schema"])).stdout)
    type With = { properties: { with: { properties: Record<string, unknown>; required?: Array<string> } } }
    const conditions = schema.properties.stages.additionalProperties.allOf as Array<{ if: { properties: { uses: { const: string } } }; then: { then: With; else: With } }>
    const shuffle = conditions.find((c) => c.if.properties.uses.const === "shuffle")!
    expect(Object.keys(shuffle.then.else.properties.with.properties)).toEqual(["seed", "splits", "batch_size"])
    const select = conditions.find((c) => c.if.properties.uses.const === "select")!
    expect(select.then.else.properties.with.required).toEqual(["rows"])
    // With a matrix, which may supply them, required params are not required in with:.
    expect(select.then.then.properties.with.required).toBeUndefined()
    expect(schema.properties.cache.properties.remote.pattern).toBe("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
  })

  it("exits 2 on a bad command or file and 1 on a failed stage, with one clear message and no stack trace", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const unknownFlag = await cliAsync(["run", "x.yaml", "--frobnicate"])
    expect(unknownFlag.code).toBe(2)
    const missing = await cliAsync(["run", `${dir}/nope.yaml`, "--cache-dir", cache])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toBe(`error: ${dir}/nope.yaml: cannot read the pipeline file (does it exist?)\n`)
    const failing = writeFile(dir, "f.yaml", samplePipeline("no-such-file.jsonl"))
    const failed = await cliAsync(["run", failing, "--cache-dir", cache, "--json"])
    expect(failed.code).toBe(1)
    expect(failed.stderr).toContain(`✖ data: failed: no such file: no-such-file.jsonl (resolved to ${dir}/no-such-file.jsonl)`)
    expect(failed.stderr).toContain("- shuffled: skipped (upstream `data` failed)")
    expect(failed.stderr).not.toMatch(/\n\s+at /)
    expect(statuses(JSON.parse(failed.stdout) as RunJson)).toEqual({ data: "failed", shuffled: "skipped", short: "skipped" })
  })
})
