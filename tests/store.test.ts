import { existsSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { cliAsync, cliInProcess, cliSpawn, GSM8K_TEST, projectTempDir, samplePipeline, slowPlugin, tempDir, writeFile } from "./helpers.ts"

const slowPipeline = (dir: string) => {
  slowPlugin(dir)
  return writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST, `  slow:
    uses: ./slow.ts
    needs: [short]
`))
}

const entriesOf = (cache: string) => (existsSync(join(cache, "entries")) ? readdirSync(join(cache, "entries")) : [])

/** Waits until the child prints `marker` on stderr. */
const waitFor = (child: ReturnType<typeof cliSpawn>, marker: string) =>
  new Promise<string>((resolve, reject) => {
    let text = ""
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${marker}; stderr so far:\n${text}`)), 60_000)
    child.stderr.on("data", (chunk: Buffer) => {
      text += chunk.toString()
      if (text.includes(marker)) {
        clearTimeout(timer)
        resolve(text)
      }
    })
  })

const exitOf = (child: ReturnType<typeof cliSpawn>) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    let stderr = ""
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("exit", (code, signal) => resolve({ code, signal, stderr }))
  })

/** A run of the slow pipeline, started and waiting inside its fourth stage. */
const startSlowRun = async () => {
  const cache = tempDir()
  const file = slowPipeline(projectTempDir())
  const child = cliSpawn(["run", file, "--cache-dir", cache], { SLOW_STAGE: "1" })
  const exited = exitOf(child)
  await waitFor(child, "SLOW_STAGE_WAITING")
  return { cache, file, child, exited }
}

describe("artifact store", () => {
  it("a run killed mid-stage leaves no entry that looks complete, and the next run redoes only that stage", async () => {
    const { cache, file, child, exited } = await startSlowRun()
    child.kill("SIGKILL")
    await exited
    // Three finished stages are committed; the killed one left only a staging folder.
    expect(entriesOf(cache)).toHaveLength(3)
    for (const entry of entriesOf(cache)) expect(existsSync(join(cache, "entries", entry, "manifest.json"))).toBe(true)
    expect(readdirSync(join(cache, "tmp")).length).toBeGreaterThan(0)
    const again = await cliInProcess(["run", file, "--cache-dir", cache, "--json"])
    expect(again.code).toBe(0)
    const statuses = JSON.parse(again.stdout).stages.map((s: { id: string; status: string }) => `${s.id}:${s.status}`)
    expect(statuses).toEqual(["data:cached", "shuffled:cached", "short:cached", "slow:ran"])
    // The stale lock of the killed run was taken over, and its staging folder cleared.
    expect(readdirSync(join(cache, "tmp"))).toEqual([])
    expect(existsSync(join(cache, "lock"))).toBe(false)
  })

  it("detects a truncated or altered entry and re-runs it, never reading it", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST))
    const first = await cliInProcess(["run", file, "--cache-dir", cache, "--json"])
    expect(first.code).toBe(0)
    const shuffled = JSON.parse(first.stdout).stages.find((s: { id: string }) => s.id === "shuffled")
    const arrow = shuffled.outputs.dataset.splits.train[0].path as string
    const size = statSync(arrow).size
    truncateSync(arrow, size - 100)
    const second = await cliInProcess(["run", file, "--cache-dir", cache, "--json"])
    expect(second.code).toBe(0)
    const rerun = JSON.parse(second.stdout).stages.find((s: { id: string }) => s.id === "shuffled")
    expect(rerun.status).toBe("ran")
    expect(rerun.reason).toContain(`the cached entry was damaged (file dataset/train.arrow has ${size - 100} bytes, expected ${size})`)
    // Same length, different bytes: caught by the hash.
    const bytes = readFileSync(arrow)
    bytes[bytes.length - 200] = bytes[bytes.length - 200]! ^ 0xff
    writeFileSync(arrow, bytes)
    const third = await cliInProcess(["run", file, "--cache-dir", cache, "--json"])
    const again = JSON.parse(third.stdout).stages.find((s: { id: string }) => s.id === "shuffled")
    expect(again.status).toBe("ran")
    expect(again.reason).toContain("does not match its sha256")
    // The downstream stage's input is byte-identical, so it stays cached.
    expect(JSON.parse(third.stdout).stages.find((s: { id: string }) => s.id === "short").status).toBe("cached")
  })

  it("a second run against a locked cache fails with a clear message; Ctrl-C releases it and keeps finished stages", async () => {
    const { cache, file, child, exited } = await startSlowRun()
    const blocked = await cliAsync(["run", file, "--cache-dir", cache])
    expect(blocked.code).toBe(1)
    expect(blocked.stderr).toMatch(new RegExp(`error: the cache .* is in use by pid ${child.pid} on .* \\(pipeline run sample, started \\d+s ago\\)\\. Wait for it to finish, or give this run another --cache-dir\\.`))
    // Read-only commands do not need the lock.
    expect((await cliAsync(["status", file, "--cache-dir", cache])).code).toBe(0)
    child.kill("SIGINT")
    const { code, stderr } = await exited
    expect(code).toBe(130)
    expect(stderr).toContain("interrupted: finished stages are cached")
    expect(existsSync(join(cache, "lock"))).toBe(false)
    expect(readdirSync(join(cache, "tmp"))).toEqual([])
    expect(entriesOf(cache)).toHaveLength(3)
  })

  it("gc removes what no latest run references and reports the bytes", async () => {
    const dir = tempDir()
    const cache = tempDir()
    const file = writeFile(dir, "p.yaml", samplePipeline(GSM8K_TEST))
    expect((await cliInProcess(["run", file, "--cache-dir", cache])).code).toBe(0)
    expect((await cliInProcess(["run", file, "--cache-dir", cache, "--set", "shuffled.seed=7"])).code).toBe(0)
    expect(entriesOf(cache)).toHaveLength(5)
    const dry = await cliInProcess(["gc", "--cache-dir", cache, "--dry-run", "--json"])
    expect(JSON.parse(dry.stdout).removedEntries).toBe(2)
    expect(entriesOf(cache)).toHaveLength(5)
    const gc = await cliInProcess(["gc", "--cache-dir", cache, "--json"])
    const report = JSON.parse(gc.stdout)
    expect(report.removedEntries).toBe(2)
    expect(report.bytesFreed).toBeGreaterThan(100_000)
    expect(gc.stderr).toMatch(/removed 2 entries \(\d+\.\d [KM]iB\), kept 3/)
    expect(entriesOf(cache)).toHaveLength(3)
  })
})
