import { parse } from "csv-parse/sync"
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import { renderDot, renderMermaid } from "../src/dag.ts"
import type { SpecError, UsageError } from "../src/errors.ts"
import { expandMatrix, formatValue, resolveStageIds } from "../src/matrix.ts"
import { loadPipeline } from "../src/pipeline.ts"
import { parseOverride } from "../src/spec.ts"
import { cliInProcess, GSM8K_TEST, projectTempDir, REPO, runNode, tempDir, writeFile } from "./helpers.ts"

/**
 * Two plug-in stages that stand in for training and evaluation, fast and deterministic:
 * `fit` reports a loss that depends on its params (best at learning_rate 2e-5, large r),
 * `score` an accuracy from its first input's loss.
 */
const project = (): string => {
  const dir = projectTempDir()
  writeFile(dir, "stages/fit.ts", `import { Effect, Schema } from "effect"
import { FileSystem } from "@effect/platform"
import { defineStage } from ${JSON.stringify(`${REPO}/src/stage.ts`)}
export default defineStage({
  name: "fit", version: "1", description: "writes its params; reports a loss that depends on them",
  params: Schema.Struct({ learning_rate: Schema.Number, lora: Schema.Struct({ r: Schema.Number, alpha: Schema.Number }) }),
  accepts: { kinds: ["dataset"], min: 1, max: 1 },
  produces: ["files"],
  run: (ctx) => Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    yield* fs.writeFileString(ctx.outDir + "/params.json", JSON.stringify(ctx.params))
    const eval_loss = Math.abs(Math.log10(ctx.params.learning_rate) + 4.7) + 8 / ctx.params.lora.r
    return { outputs: { files: { kind: "files", dir: ctx.outDir, files: ["params.json"] } }, metrics: { eval_loss, tokens_per_second: 100 * ctx.params.lora.r } }
  })
})
`)
  writeFile(dir, "stages/score.ts", `import { Effect, Schema } from "effect"
import { defineStage } from ${JSON.stringify(`${REPO}/src/stage.ts`)}
export default defineStage({
  name: "score", version: "1", description: "an accuracy from the first input's loss",
  params: Schema.Struct({}),
  accepts: { kinds: ["files"], min: 1, max: 2 },
  produces: ["files"],
  run: (ctx) => Effect.succeed({
    outputs: { files: { kind: "files", dir: ctx.outDir, files: [] } },
    metrics: { accuracy: Math.round(1000 / (1 + ctx.inputs[0]!.metrics.eval_loss!)) / 1000 }
  })
})
`)
  return dir
}

const SWEEP = `name: sweep
stages:
  data:
    uses: fetch
    with: { path: ${JSON.stringify(GSM8K_TEST)} }
  train:
    uses: ./stages/fit.ts
    needs: [data]
    with: { learning_rate: 1e-4, lora: { alpha: 16 } }
    matrix:
      learning_rate: [1e-5, 2e-5]
      lora.r: [8, 16]
  evaluate:
    uses: ./stages/score.ts
    needs: [train]
`

const VARIANTS = ["learning_rate=1e-5,lora.r=8", "learning_rate=1e-5,lora.r=16", "learning_rate=2e-5,lora.r=8", "learning_rate=2e-5,lora.r=16"]

const failureOf = async (file: string, overrides: ReadonlyArray<string> = []) => {
  const result = await runNode(Effect.either(loadPipeline(file, overrides.map((o) => Either.getOrThrow(parseOverride(o))))))
  if (Either.isRight(result)) throw new Error("expected the pipeline to be rejected")
  return result.left as SpecError | UsageError
}

describe("matrix: in the pipeline file", () => {
  it("rejects bad shapes, each located at its key or value", async () => {
    const file = writeFile(tempDir(), "p.yaml", `stages:
  data: { uses: fetch, with: { path: x.jsonl } }
  a:
    uses: shuffle
    needs: [data]
    matrix:
      seed: [1, 2, 1]
      "split..x": [1]
      none: []
      one: 5
      odd: [[1], { a: 1 }, null]
  b: { uses: shuffle, needs: [data], matrix: [1, 2] }
  c:
    uses: shuffle
    needs: [data]
    with: { seed: 3, splits: [train] }
    matrix: { splits: [a], splits.x: [1], seed.y: [2], x.__proto__: [1] }
`)
    const error = await failureOf(file)
    expect(error._tag).toBe("SpecError")
    expect(error.message.split("\n")).toEqual([
      expect.stringMatching(/p\.yaml:9:13 stages\.a\.matrix\.none: expected a non-empty list of values to try, got \[\]$/),
      expect.stringMatching(/p\.yaml:10:12 stages\.a\.matrix\.one: expected a list of values to try \(\[1e-5, 2e-5\]\), got 5$/),
      expect.stringMatching(/p\.yaml:11:13 stages\.a\.matrix\.odd\[0\]: expected a number, string or boolean, got \[1\]$/),
      expect.stringMatching(/p\.yaml:11:18 stages\.a\.matrix\.odd\[1\]: expected a number, string or boolean, got \{"a":1\}$/),
      expect.stringMatching(/p\.yaml:11:28 stages\.a\.matrix\.odd\[2\]: expected a number, string or boolean, got null$/),
      expect.stringMatching(/p\.yaml:12:46 stages\.b\.matrix: expected a map from a param \(learning_rate\) or a dotted path into one \(lora\.r\) to a list of values, such as \{ learning_rate: \[1e-5, 2e-5\] \}, got \[1,2\]$/),
      expect.stringMatching(/p\.yaml:17:38 stages\.c\.matrix\.splits\.x: "splits\.x" is inside "splits", which the matrix also sweeps: keep one of them$/),
      expect.stringMatching(/p\.yaml:17:69 stages\.c\.matrix\.x\.__proto__: "x\.__proto__" cannot be swept: JavaScript reserves the name/)
    ])
    // Once the shapes are sound, what is left: a value listed twice, an empty part, a path through a scalar.
    const second = await failureOf(writeFile(tempDir(), "p.yaml", `stages:
  data: { uses: fetch, with: { path: x.jsonl } }
  a: { uses: shuffle, needs: [data], matrix: { seed: [1, 2, 1], "split..x": [1] } }
  c: { uses: shuffle, needs: [data], with: { seed: 3 }, matrix: { seed.y: [2] } }
`))
    expect(second.message.split("\n")).toEqual([
      expect.stringMatching(/p\.yaml:3:61 stages\.a\.matrix\.seed\[2\]: 1 is listed twice: each value makes one variant$/),
      expect.stringMatching(/p\.yaml:3:77 stages\.a\.matrix\.split\.\.x: "split\.\.x" is not a param \(learning_rate\) or a dotted path into one \(lora\.r\): it has an empty part$/),
      expect.stringMatching(/p\.yaml:4:75 stages\.c\.matrix\.seed\.y: with\.seed is 3, not a map, so the matrix cannot set "seed\.y" in it$/)
    ])
  })

  it("checks each variant's params, located at the matrix value for a swept param and said once otherwise", async () => {
    const dir = project()
    const error = await failureOf(writeFile(dir, "p.yaml", SWEEP
      .replace("lora: { alpha: 16 }", "lora: { alpha: loud }")
      .replace("learning_rate: [1e-5, 2e-5]", "learning_rate: [1e-5, fast]\n      lora.rank: [4]")))
    expect(error.message.split("\n")).toEqual([
      expect.stringMatching(/p\.yaml:9:49 stages\.train\.with\.lora\.alpha: expected number, got "loud"$/),
      expect.stringMatching(/p\.yaml:11:29 stages\.train\.matrix\.learning_rate\[1\]: expected number, got "fast"$/),
      expect.stringMatching(/p\.yaml:12:7 stages\.train\.matrix\.lora\.rank: unknown key \(expected one of: r, alpha\)$/)
    ])
  })

  it("refuses a --set of a swept param: the matrix says its values", async () => {
    const dir = project()
    const file = writeFile(dir, "p.yaml", SWEEP)
    for (const flag of ["train.learning_rate=3e-5", "train.lora={r: 4}"]) {
      const error = await failureOf(file, [flag])
      expect(error._tag).toBe("UsageError")
      expect(error.message).toMatch(new RegExp(`^--set ${flag.replace(/[{}.]/g, "\\$&")}: stages\\.train\\.with\\.(learning_rate|lora\\.r) is swept by matrix: at .*p\\.yaml:1[12]:7: edit the matrix instead$`))
    }
    const pipeline = await runNode(loadPipeline(file, [Either.getOrThrow(parseOverride("train.lora.alpha=4"))]))
    expect(pipeline.stages.filter((s) => s.variant?.base === "train").map((s) => s.params)).toEqual([
      { learning_rate: 1e-5, lora: { r: 8, alpha: 4 } },
      { learning_rate: 1e-5, lora: { r: 16, alpha: 4 } },
      { learning_rate: 2e-5, lora: { r: 8, alpha: 4 } },
      { learning_rate: 2e-5, lora: { r: 16, alpha: 4 } }
    ])
  })
})

describe("expanding a sweep", () => {
  it("makes one stage per combination, and one of each downstream stage per variant; upstream stays shared", async () => {
    const dir = project()
    const pipeline = await runNode(loadPipeline(writeFile(dir, "p.yaml", SWEEP)))
    expect(pipeline.stages.map((s) => [s.id, s.needs])).toEqual([
      ["data", []],
      ...VARIANTS.map((label) => [`train[${label}]`, ["data"]]),
      ...VARIANTS.map((label) => [`evaluate[${label}]`, [`train[${label}]`]])
    ])
    const variant = pipeline.stages.find((s) => s.id === "train[learning_rate=2e-5,lora.r=16]")!
    expect(variant.params).toEqual({ learning_rate: 2e-5, lora: { r: 16, alpha: 16 } })
    expect(variant.variant).toEqual({ base: "train", params: { learning_rate: 2e-5, "lora.r": 16 } })
    expect(pipeline.stages.find((s) => s.id === "evaluate[learning_rate=2e-5,lora.r=16]")!.variant).toEqual({ base: "evaluate", params: { learning_rate: 2e-5, "lora.r": 16 } })
    expect(pipeline.stages[0]!.variant).toBeUndefined()
    // The file's stages stay as written, and a variant's key paths locate into the file.
    expect(pipeline.spec.stages.map((s) => s.id)).toEqual(["data", "train", "evaluate"])
    expect(pipeline.spec.locate(["stages", "train[learning_rate=2e-5,lora.r=16]", "with", "lora", "r"], "value")).toMatch(/p\.yaml:12:19$/)
    expect(pipeline.spec.locate(["stages", "evaluate[learning_rate=2e-5,lora.r=16]", "needs"], "value")).toMatch(/p\.yaml:15:12$/)
  })

  it("runs a stage below two sweeps once per pair, telling apart a key both sweep", async () => {
    const dir = project()
    const pipeline = await runNode(loadPipeline(writeFile(dir, "p.yaml", SWEEP.replace("    needs: [train]\n", `    needs: [train, judge]
  judge:
    uses: ./stages/fit.ts
    needs: [data]
    with: { lora: { alpha: 1, r: 2 } }
    matrix: { learning_rate: [0.5, 1] }
`))))
    const evaluations = pipeline.stages.filter((s) => s.variant?.base === "evaluate")
    expect(evaluations).toHaveLength(8)
    expect(evaluations[0]!.id).toBe("evaluate[train.learning_rate=1e-5,lora.r=8,judge.learning_rate=0.5]")
    expect(evaluations[0]!.needs).toEqual(["train[learning_rate=1e-5,lora.r=8]", "judge[learning_rate=0.5]"])
    expect(evaluations[7]!.id).toBe("evaluate[train.learning_rate=2e-5,lora.r=16,judge.learning_rate=1]")
    expect(evaluations[7]!.variant!.params).toEqual({ "train.learning_rate": 2e-5, "lora.r": 16, "judge.learning_rate": 1 })
    expect(pipeline.stages.filter((s) => s.variant?.base === "judge").map((s) => s.id)).toEqual(["judge[learning_rate=0.5]", "judge[learning_rate=1]"])
    expect(pipeline.stages.filter((s) => s.id === "data")).toHaveLength(1)
  })

  it("writes values in ids briefly and unambiguously", () => {
    expect([2e-5, 16, 0.5, 1e-3, 1000, -0.25, 3e-3, 1e21, 2.5e22].map(formatValue)).toEqual(["2e-5", "16", "0.5", "1e-3", "1000", "-0.25", "3e-3", "1e21", "2.5e22"])
    expect([true, "cosine", "16", "true", "a,b", ""].map(formatValue)).toEqual(["true", "cosine", '"16"', '"true"', '"a,b"', '""'])
  })

  it("resolves command-line ids: a variant's, or a base id for all its variants", async () => {
    const dir = project()
    const pipeline = await runNode(loadPipeline(writeFile(dir, "p.yaml", SWEEP)))
    expect(resolveStageIds(pipeline, "data")).toEqual(["data"])
    expect(resolveStageIds(pipeline, "train")).toEqual(VARIANTS.map((label) => `train[${label}]`))
    expect(resolveStageIds(pipeline, "evaluate[learning_rate=1e-5,lora.r=8]")).toEqual(["evaluate[learning_rate=1e-5,lora.r=8]"])
    expect(resolveStageIds(pipeline, "train[learning_rate=3e-5,lora.r=8]")).toBeUndefined()
    const nodes = pipeline.stages.slice(0, 2)
    expect(renderMermaid(nodes).split("\n")).toEqual([
      "graph TD",
      '  data["data<br/><small>fetch</small>"]',
      '  train_learning_rate_1e-5_lora_r_8["train[learning_rate=1e-5,lora.r=8]<br/><small>./stages/fit.ts</small>"]',
      "  data --> train_learning_rate_1e-5_lora_r_8"
    ])
    expect(renderDot(nodes)).toContain('  "data" -> "train[learning_rate=1e-5,lora.r=8]";')
  })
})

interface RunJson {
  readonly stages: ReadonlyArray<{ readonly id: string; readonly status: string }>
}

describe("a sweep end to end: run, select, compare", () => {
  it("runs every variant, caches them, selects by variant or base id, and compares them as a table, JSON and CSV", async () => {
    const dir = project()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", SWEEP)
    const run = async (...args: ReadonlyArray<string>) => {
      const result = await cliInProcess(["run", file, "--cache-dir", cache, "--json", ...args])
      const statuses = result.stdout === "" ? {} : Object.fromEntries((JSON.parse(result.stdout) as RunJson).stages.map((s) => [s.id, s.status]))
      return { ...result, statuses }
    }
    const all = (status: string) => Object.fromEntries(["data", ...["train", "evaluate"].flatMap((base) => VARIANTS.map((label) => `${base}[${label}]`))].map((id) => [id, status]))

    const first = await run()
    expect(first.code, first.stderr).toBe(0)
    expect(first.statuses).toEqual(all("ran"))
    const second = await run()
    expect(second.statuses).toEqual(all("cached"))
    expect(second.stderr).toContain("sweep: 9 cached in")

    const one = await run("--force", "data,train[learning_rate=2e-5,lora.r=16]")
    expect(one.statuses).toEqual({ ...all("cached"), data: "ran", "train[learning_rate=2e-5,lora.r=16]": "ran" })
    const base = await run("--force", "train", "--until", "train")
    expect(base.statuses).toEqual({ ...all("skipped"), data: "cached", ...Object.fromEntries(VARIANTS.map((label) => [`train[${label}]`, "ran"])) })
    const only = await run("--only", "evaluate", "--force", "evaluate")
    expect(only.statuses).toEqual({ ...all("cached"), ...Object.fromEntries(VARIANTS.map((label) => [`evaluate[${label}]`, "ran"])) })
    const unknown = await cliInProcess(["run", file, "--cache-dir", cache, "--only", "train[learning_rate=3e-5,lora.r=8]"])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain(`--only train[learning_rate=3e-5,lora.r=8]: there is no stage "train[learning_rate=3e-5,lora.r=8]" in this pipeline (stages: data, train (variants: ${VARIANTS.map((l) => `train[${l}]`).join(", ")}), evaluate (variants: `)

    const shown = await cliInProcess(["show", file, "train", "--cache-dir", cache])
    expect(shown.code).toBe(2)
    expect(shown.stderr).toContain(`stage "train" is swept by matrix: into 4 variant(s): name one of train[learning_rate=1e-5,lora.r=8], `)
    expect((await cliInProcess(["show", file, "train[learning_rate=1e-5,lora.r=8]", "--cache-dir", cache])).stdout).toMatch(/^stage "train\[learning_rate=1e-5,lora\.r=8\]" produced no dataset/)
    expect((await cliInProcess(["status", file, "--cache-dir", cache])).stdout).toMatch(/^evaluate\[learning_rate=2e-5,lora\.r=16\] +fresh/m)

    const table = await cliInProcess(["compare", file, "--cache-dir", cache])
    expect(table.code, table.stderr).toBe(0)
    expect(table.stderr).toBe("")
    expect(table.stdout).toBe(`id                                  │ learning_rate │ lora.r │ eval_loss │ tokens_per_second │ evaluate.accuracy
────────────────────────────────────┼───────────────┼────────┼───────────┼───────────────────┼──────────────────
train[learning_rate=2e-5,lora.r=16] │ 2e-5          │ 16     │   0.50103 │              1600 │             0.666
train[learning_rate=1e-5,lora.r=16] │ 1e-5          │ 16     │       0.8 │              1600 │             0.556
train[learning_rate=2e-5,lora.r=8]  │ 2e-5          │ 8      │     1.001 │               800 │               0.5
train[learning_rate=1e-5,lora.r=8]  │ 1e-5          │ 8      │       1.3 │               800 │             0.435
`)

    const json = JSON.parse((await cliInProcess(["compare", file, "train", "--format", "json", "--sort", "-evaluate.accuracy", "--cache-dir", cache])).stdout)
    expect(json.map((row: { id: string }) => row.id)).toEqual([3, 1, 2, 0].map((i) => `train[${VARIANTS[i]}]`))
    expect(json[0]).toEqual({
      id: "train[learning_rate=2e-5,lora.r=16]",
      params: { learning_rate: 2e-5, "lora.r": 16 },
      metrics: { eval_loss: expect.closeTo(0.50103, 5), tokens_per_second: 1600, "evaluate.accuracy": 0.666 }
    })

    const csv = (await cliInProcess(["compare", file, "--format", "csv", "--sort", "lora.r", "--cache-dir", cache])).stdout
    expect(csv.split("\r\n")[1]).toBe('"train[learning_rate=1e-5,lora.r=8]",0.00001,8,1.2999999999999998,800,0.435')
    const records = parse(csv, { columns: true }) as Array<Record<string, string>>
    expect(records.map((r) => [r.id, r["lora.r"], r["evaluate.accuracy"]])).toEqual([
      [`train[${VARIANTS[0]}]`, "8", "0.435"],
      [`train[${VARIANTS[2]}]`, "8", "0.5"],
      [`train[${VARIANTS[1]}]`, "16", "0.556"],
      [`train[${VARIANTS[3]}]`, "16", "0.666"]
    ])

    const badSort = await cliInProcess(["compare", file, "--sort", "loss", "--cache-dir", cache])
    expect(badSort.code).toBe(2)
    expect(badSort.stderr).toContain('--sort loss: no column "loss" (columns: learning_rate, lora.r, eval_loss, tokens_per_second, evaluate.accuracy)')
    const notSwept = await cliInProcess(["compare", file, "data", "--cache-dir", cache])
    expect(notSwept.code).toBe(2)
    expect(notSwept.stderr).toContain('stage "data" is not swept, so it has no variants to compare (swept: train); to sweep it, give it a matrix:')
  })

  it("compares what has run, says what has not, and explains a file without a sweep", async () => {
    const dir = project()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", SWEEP)
    expect((await cliInProcess(["run", file, "--cache-dir", cache, "--until", "train[learning_rate=1e-5,lora.r=16]"])).code).toBe(0)
    const partial = await cliInProcess(["compare", file, "--format", "json", "--cache-dir", cache])
    expect(partial.code).toBe(0)
    const rows = JSON.parse(partial.stdout) as Array<{ id: string; metrics: Record<string, number | null> }>
    expect(rows.map((r) => [r.id, r.metrics])).toEqual([
      [`train[${VARIANTS[1]}]`, { eval_loss: expect.closeTo(0.8, 9), tokens_per_second: 1600 }],
      ...[0, 2, 3].map((i) => [`train[${VARIANTS[i]}]`, { eval_loss: null, tokens_per_second: null }])
    ])
    expect(partial.stderr).toContain(`no metrics yet for train[${VARIANTS[0]}], evaluate[${VARIANTS[0]}], evaluate[${VARIANTS[1]}], train[${VARIANTS[2]}]`)
    expect(partial.stderr).toContain(`pipeline run ${file} makes them`)
    const table = (await cliInProcess(["compare", file, "--cache-dir", cache])).stdout.split("\n")
    expect(table[3]).toBe("train[learning_rate=1e-5,lora.r=8]  │ 1e-5          │ 8      │         - │                 -")

    const plain = writeFile(dir, "plain.yaml", SWEEP.replace(/    matrix:\n.*\n.*\n/, "").replace("alpha: 16", "alpha: 16, r: 8"))
    const none = await cliInProcess(["compare", plain, "--cache-dir", cache])
    expect(none.code).toBe(2)
    expect(none.stderr).toContain("plain.yaml sweeps nothing, so there are no variants to compare: give a stage a matrix: beside its with: (matrix: { learning_rate: [1e-5, 2e-5] })")
  })

  it("a sweep narrowed leaves gc free to remove the dropped variants' entries", async () => {
    const dir = project()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", SWEEP)
    expect((await cliInProcess(["run", file, "--cache-dir", cache])).code).toBe(0)
    writeFile(dir, "p.yaml", SWEEP.replace("learning_rate: [1e-5, 2e-5]", "learning_rate: [1e-5]"))
    expect((await cliInProcess(["run", file, "--cache-dir", cache])).code).toBe(0)
    const gc = await cliInProcess(["gc", "--dry-run", "--json", "--cache-dir", cache])
    // The two dropped train variants and their two evaluate stages.
    expect(JSON.parse(gc.stdout)).toMatchObject({ removedEntries: 4, keptEntries: 5 })
  })

  it("variants with one fingerprint (a sweep over a param that is not fingerprinted) run once", async () => {
    const cache = tempDir()
    const file = writeFile(tempDir(), "w.yaml", `name: same
stages:
  data: { uses: fetch, with: { path: ${JSON.stringify(GSM8K_TEST)} } }
  tokenized:
    uses: tokenize
    needs: [data]
    with: { tokenizer: ${JSON.stringify(`${REPO}/pipelines/tokenizers/ascii`)}, prompt: question, completion: answer }
    matrix: { workers: [1, 2, 3] }
`)
    const run = await cliInProcess(["run", file, "--cache-dir", cache, "--jobs", "3", "--json"])
    expect(run.code, run.stderr).toBe(0)
    const stages = (JSON.parse(run.stdout) as { stages: Array<{ id: string; status: string; reason: string }> }).stages.slice(1)
    expect(stages.filter((s) => s.status === "ran")).toHaveLength(1)
    expect(stages.filter((s) => s.status === "cached").map((s) => s.reason)).toEqual(Array(2).fill(expect.stringMatching(/^the same work as tokenized\[workers=\d\], made by it in this run$/)))
  })

  it("a metric that is not a finite number fails the stage, and nothing is cached", async () => {
    const dir = project()
    writeFile(dir, "stages/nan.ts", `import { Effect, Schema } from "effect"
import { defineStage } from ${JSON.stringify(`${REPO}/src/stage.ts`)}
export default defineStage({
  name: "nan", version: "1", params: Schema.Struct({}), accepts: { kinds: [], min: 0, max: 0 }, produces: ["files"],
  run: (ctx) => Effect.succeed({ outputs: { files: { kind: "files", dir: ctx.outDir, files: [] } }, metrics: { eval_loss: Number.NaN } })
})
`)
    const file = writeFile(dir, "n.yaml", "name: nan\nstages:\n  diverged: { uses: ./stages/nan.ts }\n")
    const run = await cliInProcess(["run", file, "--cache-dir", tempDir()])
    expect(run.code).toBe(1)
    expect(run.stderr).toContain("diverged: failed: the stage reported the metric eval_loss = NaN: metrics must be finite numbers (a diverged run?); nothing was cached")
  })

  it("tells apart label keys that would clash even once prefixed with their stage", () => {
    // a and b both sweep lr (so: a.lr, b.lr), and c sweeps a key named a.lr: every key takes its stage.
    const stage = (id: string, needs: ReadonlyArray<string>, key?: string) =>
      ({ id, uses: "x", needs, with: {}, matrix: key === undefined ? [] : [{ key, path: key.split("."), values: [1, 2] }] }) as const
    const expanded = expandMatrix([stage("a", [], "lr"), stage("b", [], "lr"), stage("c", [], "a.lr"), stage("d", ["a", "b", "c"])])
    const ids = expanded.map((s) => s.id)
    expect(new Set(ids).size).toBe(ids.length)
    expect(ids.filter((id) => id.startsWith("d["))).toHaveLength(8)
    expect(ids).toContain("d[a.lr=1,b.lr=2,c.a.lr=1]")
  })
})
