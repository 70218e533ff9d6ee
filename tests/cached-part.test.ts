/**
 * A stage's cached part (StageContext.cachedPart): an entry of its own whose
 * fingerprint keeps only the params it names, so changing another param re-runs the
 * stage but reuses the part (DPO's reference log-probabilities across values of beta);
 * gc keeps a part while an entry made with it is in the latest run, and not after.
 */
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { cliInProcess, projectTempDir, REPO, tempDir, writeFile } from "./helpers.ts"

/** A plug-in whose part depends on `width` and not on `beta`; every time the part is produced it appends a line to `log`. */
const plugin = (dir: string) =>
  writeFile(dir, "parted.ts", `import { Effect, Schema } from "effect"
import { FileSystem } from "@effect/platform"
import { appendFileSync } from "node:fs"
import { defineStage } from ${JSON.stringify(join(REPO, "src/stage.ts"))}

export default defineStage({
  name: "parted",
  version: "1",
  description: "a part that depends on width only",
  params: Schema.Struct({ width: Schema.Number, beta: Schema.Number, log: Schema.String }),
  accepts: { kinds: [], min: 0, max: 0 },
  produces: ["files"],
  run: (ctx) => Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const part = yield* ctx.cachedPart("table", ["width"], (dir) => Effect.gen(function* () {
      appendFileSync(ctx.params.log, "produced width " + ctx.params.width + "\\n")
      yield* fs.writeFileString(dir + "/table.txt", "width " + ctx.params.width)
      return { files: { kind: "files", dir, files: ["table.txt"] } }
    }).pipe(Effect.orDie))
    yield* ctx.log(part.reused ? "part reused" : "part produced")
    const table = yield* fs.readFileString(part.outputs.files!.dir + "/table.txt").pipe(Effect.orDie)
    yield* fs.writeFileString(ctx.outDir + "/out.txt", table + ", beta " + ctx.params.beta).pipe(Effect.orDie)
    return { outputs: { files: { kind: "files", dir: ctx.outDir, files: ["out.txt"] } } }
  })
})
`)

const pipelineFile = (dir: string, width: number, beta: number, log: string) =>
  writeFile(dir, "p.yaml", `name: parts
stages:
  s:
    uses: ./parted.ts
    with: { width: ${width}, beta: ${beta}, log: ${JSON.stringify(log)} }
`)

describe("cached parts", () => {
  it("a change to a param the part does not name re-runs the stage and reuses the part; one it names makes it anew; gc keeps only live parts", async () => {
    const dir = projectTempDir()
    const cache = tempDir()
    const log = join(tempDir(), "produced.log")
    plugin(dir)
    const produced = () => readFileSync(log, "utf8").trim().split("\n")
    const run = async (width: number, beta: number) => {
      const result = await cliInProcess(["run", pipelineFile(dir, width, beta, log), "--cache-dir", cache])
      expect(result.code, result.stderr).toBe(0)
      return result.stderr
    }
    const runRecord = () => JSON.parse(readFileSync(join(cache, "runs", readdirSync(join(cache, "runs"))[0]!), "utf8")) as { stages: { s: { parts?: Array<string> } } }

    expect(await run(1, 0.1)).toContain("part produced")
    expect(produced()).toEqual(["produced width 1"])
    const firstParts = runRecord().stages.s.parts
    expect(firstParts).toHaveLength(1)

    const betaChanged = await run(1, 0.5)
    expect(betaChanged).toContain("part reused")
    expect(betaChanged).toContain("param `beta` changed 0.1→0.5")
    expect(produced()).toEqual(["produced width 1"])
    expect(runRecord().stages.s.parts).toEqual(firstParts)

    // Up to date: the run record keeps naming the part, so gc keeps it.
    await run(1, 0.5)
    const gcKept = await cliInProcess(["gc", "--cache-dir", cache, "--json"])
    expect(gcKept.code, gcKept.stderr).toBe(0)
    expect(JSON.parse(gcKept.stdout).removedEntries).toBe(1) // s with beta 0.1; its part is the live one's too
    expect(await run(1, 0.7)).toContain("part reused")
    expect(produced()).toEqual(["produced width 1"])

    expect(await run(2, 0.7)).toContain("part produced")
    expect(produced()).toEqual(["produced width 1", "produced width 2"])
    expect(runRecord().stages.s.parts).not.toEqual(firstParts)

    // Width 1's part and the entries made with it are no longer in the latest run: gc removes them.
    const gc = await cliInProcess(["gc", "--cache-dir", cache, "--json"])
    expect(gc.code, gc.stderr).toBe(0)
    expect(JSON.parse(gc.stdout).removedEntries).toBe(3) // s with width 1 (beta 0.5 and 0.7), and width 1's part
    expect(await run(1, 0.7)).toContain("part produced")
    expect(produced()).toEqual(["produced width 1", "produced width 2", "produced width 1"])
  }, 240_000)

  it("an entry served from the cache keeps its part live: going back to an earlier config, gc keeps the part it was made with", async () => {
    const dir = projectTempDir()
    const cache = tempDir()
    const log = join(tempDir(), "produced.log")
    plugin(dir)
    const run = async (width: number, beta: number) => {
      const result = await cliInProcess(["run", pipelineFile(dir, width, beta, log), "--cache-dir", cache])
      expect(result.code, result.stderr).toBe(0)
      return result.stderr
    }
    await run(1, 0.1)
    await run(2, 0.1)
    // Back to width 1: its entry is cached, and names its part in its manifest.
    expect(await run(1, 0.1)).toMatch(/s: cached/)
    const gc = await cliInProcess(["gc", "--cache-dir", cache, "--json"])
    expect(gc.code, gc.stderr).toBe(0)
    expect(JSON.parse(gc.stdout).removedEntries).toBe(2) // width 2's entry and its part
    expect(await run(1, 0.9)).toContain("part reused")
    expect(readFileSync(log, "utf8").trim().split("\n")).toEqual(["produced width 1", "produced width 2"])
  }, 240_000)

  it("--force on the stage makes its part anew", async () => {
    const dir = projectTempDir()
    const cache = tempDir()
    const log = join(tempDir(), "produced.log")
    plugin(dir)
    const file = pipelineFile(dir, 3, 0.1, log)
    expect((await cliInProcess(["run", file, "--cache-dir", cache])).code).toBe(0)
    const forced = await cliInProcess(["run", file, "--cache-dir", cache, "--force", "s"])
    expect(forced.code, forced.stderr).toBe(0)
    expect(forced.stderr).toContain("part produced")
    expect(readFileSync(log, "utf8").trim().split("\n")).toEqual(["produced width 3", "produced width 3"])
  }, 240_000)
})
