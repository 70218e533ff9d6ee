import { readFileSync, writeFileSync, mkdirSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { cliAsync, cliInProcess, GSM8K_TEST, projectTempDir, REPO, samplePipeline, tempDir, writeFile } from "./helpers.ts"

/** The plug-in example exactly as the README shows it, imports pointed at this checkout. */
const readmeExample = (): string => {
  const readme = readFileSync(join(REPO, "README.md"), "utf8")
  const block = /```ts\n(\/\/ stages\/uppercase\.ts[\s\S]*?)```/.exec(readme)
  if (block === null) throw new Error("README.md lost its plug-in example")
  return block[1]!.replaceAll('"../src/', `"${REPO}/src/`)
}

describe("plug-in stages", () => {
  it("the README's example runs, and editing the plug-in re-runs it and what follows", async () => {
    const dir = projectTempDir()
    const cache = tempDir()
    mkdirSync(join(dir, "stages"))
    const plugin = writeFile(dir, "stages/uppercase.ts", readmeExample())
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST, `  loud:
    uses: ./stages/uppercase.ts
    needs: [short]
    with: { column: question }
  first:
    uses: select
    needs: [loud]
    with: { rows: 3 }
`))
    const first = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    expect(first.code, first.stderr).toBe(0)
    const shown = await cliAsync(["show", file, "first", "--format", "jsonl", "--cache-dir", cache])
    const rows = shown.stdout.trim().split("\n").map((l) => JSON.parse(l) as { question: string; answer: string })
    expect(rows).toHaveLength(3)
    for (const row of rows) {
      expect(row.question).toBe(row.question.toUpperCase())
      expect(row.answer).not.toBe(row.answer.toUpperCase())
    }
    writeFileSync(plugin, readFileSync(plugin, "utf8").replace("toUpperCase()", "toUpperCase() + \"!\""))
    const second = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    const stages = JSON.parse(second.stdout).stages as Array<{ id: string; status: string; reason: string }>
    expect(stages.map((s) => `${s.id}:${s.status}`)).toEqual(["data:cached", "shuffled:cached", "short:cached", "loud:ran", "first:ran"])
    expect(stages[3]!.reason).toBe("code changed: uppercase.ts")
  })

  it("a helper the plug-in imports is part of its code: editing it re-runs the stage, and says which file", async () => {
    const dir = projectTempDir()
    const cache = tempDir()
    const helper = writeFile(dir, "lib/shout.ts", `export const shout = (text: string): string => text.toUpperCase()\n`)
    writeFile(dir, "stages/loud.ts", `import { Effect, Schema } from "effect"
import { defineStage } from "${REPO}/src/stage.ts"
import { readSplit, writeDataset } from "${REPO}/src/dataset.ts"
import { tableFromArrays } from "apache-arrow"
import { shout } from "../lib/shout.ts"
export default defineStage({
  name: "loud", version: "1", description: "shouts the first question",
  params: Schema.Struct({}), accepts: { kinds: ["dataset"], min: 1, max: 1 }, produces: ["dataset"],
  run: (ctx) => Effect.gen(function* () {
    const table = yield* readSplit(ctx.inputs[0]!.outputs.dataset!, "train")
    const question = String(table.getChild("question")!.get(0))
    return { outputs: { dataset: yield* writeDataset(ctx.outDir, { train: tableFromArrays({ q: [shout(question)] }) }) } }
  })
})
`)
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST, "  loud:\n    uses: ./stages/loud.ts\n    needs: [short]\n"))
    const first = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    expect(first.code, first.stderr).toBe(0)
    const before = (await cliAsync(["show", file, "loud", "--format", "jsonl", "--cache-dir", cache])).stdout
    expect(JSON.parse(before).q).toMatch(/^[^a-z]+$/)
    expect((await cliAsync(["status", file, "--cache-dir", cache])).stdout).not.toMatch(/stale/)

    writeFileSync(helper, "export const shout = (text: string): string => `${text.toUpperCase()}!`\n")
    const status = await cliAsync(["status", file, "--cache-dir", cache])
    expect(status.stdout).toMatch(/loud\s+stale\s+code changed: \.\.\/lib\/shout\.ts/)
    const second = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    const stages = JSON.parse(second.stdout).stages as Array<{ id: string; status: string; reason: string }>
    expect(stages.map((s) => `${s.id}:${s.status}`)).toEqual(["data:cached", "shuffled:cached", "short:cached", "loud:ran"])
    expect(stages[3]!.reason).toBe("code changed: ../lib/shout.ts")
    expect(JSON.parse((await cliAsync(["show", file, "loud", "--format", "jsonl", "--cache-dir", cache])).stdout).q).toMatch(/!$/)
  })

  it("reports a plug-in that throws as a failed stage with its message", async () => {
    const dir = projectTempDir()
    writeFile(dir, "boom.ts", `import { Effect, Schema } from "effect"
import { defineStage } from "${REPO}/src/stage.ts"
export default defineStage({
  name: "boom", version: "1", description: "fails", params: Schema.Struct({}),
  accepts: { kinds: ["dataset"], min: 1, max: 1 }, produces: ["dataset"],
  run: () => Effect.sync(() => { throw new RangeError("the widget is out of range") })
})
`)
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST, "  boom:\n    uses: ./boom.ts\n    needs: [short]\n"))
    const result = await cliAsync(["run", file, "--cache-dir", tempDir()])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain("✖ boom: failed: RangeError: the widget is out of range")
    expect(result.stderr).not.toMatch(/\n\s+at /)
  })
})

describe("concurrency", () => {
  it("runs independent stages at once, at most --jobs at a time", async () => {
    const dir = projectTempDir()
    writeFile(dir, "sleepy.ts", `import { Effect, Schema } from "effect"
import { defineStage } from "${REPO}/src/stage.ts"
import { writeDataset } from "${REPO}/src/dataset.ts"
import { tableFromArrays } from "apache-arrow"
export default defineStage({
  name: "sleepy", version: "1", description: "sleeps, then writes one row",
  params: Schema.Struct({ tag: Schema.String }),
  accepts: { kinds: [], min: 0, max: 0 }, produces: ["dataset"],
  run: (ctx) => Effect.gen(function* () {
    const start = Date.now()
    yield* Effect.sleep("400 millis")
    const dataset = yield* writeDataset(ctx.outDir, { train: tableFromArrays({ tag: [ctx.params.tag] }) })
    return { outputs: { dataset }, metrics: { start, end: Date.now() } }
  })
})
`)
    const file = writeFile(dir, "p.yaml", `stages:
${["a", "b", "c"].map((id) => `  ${id}: { uses: ./sleepy.ts, with: { tag: ${id} } }`).join("\n")}
`)
    const intervals = async (jobs: number) => {
      const result = await cliInProcess(["run", file, "--cache-dir", tempDir(), "--json", "--jobs", String(jobs)])
      expect(result.code, result.stderr).toBe(0)
      return (JSON.parse(result.stdout).stages as Array<{ metrics: { start: number; end: number } }>).map((s) => s.metrics)
    }
    const maxOverlap = (spans: Array<{ start: number; end: number }>) =>
      Math.max(...spans.map((s) => spans.filter((o) => o.start < s.end && s.start < o.end).length))
    expect(maxOverlap(await intervals(1))).toBe(1)
    expect(maxOverlap(await intervals(2))).toBe(2)
    expect(maxOverlap(await intervals(3))).toBe(3)
  })
})
