/**
 * The cache's promises under attack (issue 12): run records under concurrent stages,
 * stored JSON that is damaged or hostile, and a plug-in that lies about its outputs.
 */
import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { cliAsync, GSM8K_TEST, projectTempDir, REPO, samplePipeline, tempDir, writeFile } from "./helpers.ts"

interface StageJson {
  readonly id: string
  readonly status: string
  readonly reason: string
  readonly fingerprint?: string
}

const stagesOf = (stdout: string): ReadonlyArray<StageJson> => (JSON.parse(stdout) as { stages: ReadonlyArray<StageJson> }).stages
const statuses = (stdout: string) => stagesOf(stdout).map((s) => `${s.id}:${s.status}`)
const entriesOf = (cache: string) => (existsSync(join(cache, "entries")) ? readdirSync(join(cache, "entries")) : [])
const runRecords = (cache: string) => readdirSync(join(cache, "runs")).map((name) => join(cache, "runs", name))

/** The sample pipeline with `n` sibling stages under `short`, which finish at about the same time. */
const siblings = (dir: string, n: number) =>
  writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST, Array.from({ length: n }, (_, i) => `  s${i}:
    uses: select
    needs: [short]
    with: { rows: ${i + 1} }
`).join("")))

describe("run records", () => {
  it("keeps every stage of stages finishing together, so gc keeps what the latest run uses", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = siblings(dir, 12)
    const first = await cliAsync(["run", file, "--cache-dir", cache, "--jobs", "12", "--json"])
    expect(first.code, first.stderr).toBe(0)
    const [record] = runRecords(cache)
    const recorded = Object.keys((JSON.parse(readFileSync(record!, "utf8")) as { stages: object }).stages)
    expect(recorded.sort()).toEqual(stagesOf(first.stdout).map((s) => s.id).sort())

    const gc = await cliAsync(["gc", "--cache-dir", cache, "--json"])
    expect(gc.code, gc.stderr).toBe(0)
    expect(JSON.parse(gc.stdout).removedEntries).toBe(0)
    const again = await cliAsync(["run", file, "--cache-dir", cache, "--jobs", "12", "--json"])
    expect(statuses(again.stdout).every((s) => s.endsWith(":cached")), again.stderr).toBe(true)
  }, 240_000)

  it.each([["empty", ""], ["garbage", "{ not json"], ["null", "null"], ["the wrong shape", '{"pipeline": 3, "stages": []}']])(
    "a run record that is %s is ignored with a warning: run, status and gc go on",
    async (_, text) => {
      const dir = tempDir()
      const cache = tempDir()
      const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST))
      expect((await cliAsync(["run", file, "--cache-dir", cache])).code).toBe(0)
      const [record] = runRecords(cache)
      writeFileSync(record!, text)

      const status = await cliAsync(["status", file, "--cache-dir", cache])
      expect(status.code, status.stderr).toBe(0)
      expect(status.stderr).toMatch(/warning: the run record .*\.json is damaged \(.+\): ignored/)
      const run = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
      expect(run.code, run.stderr).toBe(0)
      expect(statuses(run.stdout)).toEqual(["data:cached", "shuffled:cached", "short:cached"])
      // The run wrote a good record again.
      expect(JSON.parse(readFileSync(record!, "utf8")).stages.short.fingerprint).toMatch(/^[0-9a-f]{64}$/)

      writeFileSync(record!, text)
      const gc = await cliAsync(["gc", "--cache-dir", cache, "--json"])
      expect(gc.code, gc.stderr).toBe(0)
      expect(gc.stderr).toMatch(/warning: the run record .* is damaged/)
    },
    240_000
  )
})

/** The sample pipeline run once into a fresh cache, and the fingerprint of its `short` stage. */
const cachedSample = async () => {
  const cache = tempDir()
  const file = writeFile(tempDir(), "p.yaml", samplePipeline(GSM8K_TEST))
  const first = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
  expect(first.code, first.stderr).toBe(0)
  return { file, cache, short: stagesOf(first.stdout).find((s) => s.id === "short")!.fingerprint! }
}

describe("manifests", () => {
  const damage = async (edit: (manifest: Record<string, unknown>) => unknown) => {
    const { file, cache, short } = await cachedSample()
    const manifest = join(cache, "entries", short, "manifest.json")
    writeFileSync(manifest, JSON.stringify(edit(JSON.parse(readFileSync(manifest, "utf8")) as Record<string, unknown>)))
    return { file, cache }
  }

  it.each([
    ["null", () => null],
    ["lacking its contents", (m: Record<string, unknown>) => ({ ...m, contents: undefined })],
    ["with a number where outputs belong", (m: Record<string, unknown>) => ({ ...m, outputs: 7 })],
    ["naming a file outside its entry", (m: Record<string, unknown>) => ({ ...m, contents: { "../../../escape.arrow": { bytes: 1, sha256: "0".repeat(64), mtimeMs: 0 } } })]
  ])("a manifest %s is a damaged entry: removed, the reason shown, the stage re-run", async (_, edit) => {
    const { file, cache } = await damage(edit)
    const status = await cliAsync(["status", file, "--cache-dir", cache])
    expect(status.code, status.stderr).toBe(0)
    expect(status.stdout).toMatch(/short\s+stale\s+the cached entry('s manifest is damaged| was damaged) \(.+\)/)
    const run = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    expect(run.code, run.stderr).toBe(0)
    expect(statuses(run.stdout)).toEqual(["data:cached", "shuffled:cached", "short:ran"])
    const gc = await cliAsync(["gc", "--cache-dir", cache])
    expect(gc.code, gc.stderr).toBe(0)
  }, 240_000)
})

describe("outputs a stage never wrote", () => {
  it("are refused: nothing is committed, and the next run tries again", async () => {
    const dir = projectTempDir()
    const cache = tempDir()
    writeFile(dir, "liar.ts", `import { Effect, Schema } from "effect"
import { defineStage } from "${REPO}/src/stage.ts"
export default defineStage({
  name: "liar", version: "1", description: "claims a split it never wrote",
  params: Schema.Struct({}), accepts: { kinds: ["dataset"], min: 1, max: 1 }, produces: ["dataset"],
  run: (ctx) => Effect.succeed({ outputs: { dataset: { kind: "dataset" as const, splits: { train: [{ path: ctx.outDir + "/train.arrow", rows: 3 }] } } } })
})
`)
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST, "  liar:\n    uses: ./liar.ts\n    needs: [short]\n  after:\n    uses: select\n    needs: [liar]\n    with: { rows: 1 }\n"))
    const first = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    expect(first.code).toBe(1)
    expect(first.stderr).toContain("✖ liar: failed: the stage returned the file train.arrow of dataset split \"train\", which it never wrote: nothing was cached")
    expect(statuses(first.stdout)).toEqual(["data:ran", "shuffled:ran", "short:ran", "liar:failed", "after:skipped"])
    expect(entriesOf(cache)).toHaveLength(3)
    const second = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    expect(statuses(second.stdout)).toEqual(["data:cached", "shuffled:cached", "short:cached", "liar:failed", "after:skipped"])
  }, 240_000)
})

describe("bytes changed behind the cache's back", () => {
  it("show names the damaged file (exit 1), verify finds it, verify --repair removes it, and the next run rebuilds it", async () => {
    const { file, cache, short } = await cachedSample()
    const arrow = join(cache, "entries", short, "dataset", "train.arrow")
    // Same size, same mtime: the quick check (size and mtime) cannot see it.
    const { size, atime, mtime } = statSync(arrow)
    writeFileSync(arrow, Buffer.alloc(size, 0xab))
    utimesSync(arrow, atime, mtime)

    const show = await cliAsync(["show", file, "short", "--cache-dir", cache])
    expect(show.code).toBe(1)
    expect(show.stderr).toContain(`error: ${arrow} is not a readable Arrow file (`)
    expect(show.stderr).toContain("pipeline verify --repair")
    expect(show.stderr).not.toMatch(/\n\s+at /)

    const verify = await cliAsync(["verify", "--cache-dir", cache, "--json"])
    expect(verify.code).toBe(1)
    expect(verify.stderr).toContain(`damaged ${short.slice(0, 12)} (sample: short): file dataset/train.arrow does not match its sha256`)
    expect(verify.stderr).toMatch(/checked 3 entries \(.+\): 1 damaged; run pipeline verify --repair to remove them/)
    expect(JSON.parse(verify.stdout).damaged).toHaveLength(1)

    const repair = await cliAsync(["verify", "--repair", "--cache-dir", cache])
    expect(repair.code, repair.stderr).toBe(0)
    expect(existsSync(join(cache, "entries", short))).toBe(false)
    expect((await cliAsync(["verify", "--cache-dir", cache])).stderr).toMatch(/checked 2 entries \(.+\): all intact/)
    const again = await cliAsync(["run", file, "--cache-dir", cache, "--json"])
    expect(statuses(again.stdout)).toEqual(["data:cached", "shuffled:cached", "short:ran"])
  }, 240_000)
})
