/**
 * `pipeline ui` in a real browser: Debian's chromium driven by playwright-core. The page
 * for a quickstart-shaped pipeline's cache shows its 5 stages fresh; a `--set` makes one
 * stale with its reason; the training curves have points; the evaluation table shows the
 * base and the fine-tuned answers; a run started from the page turns states to running,
 * then fresh. A screenshot of each view goes to the test's output folder.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdirSync } from "node:fs"
import { join, resolve } from "node:path"
import { type Browser, chromium, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cliAsync, REPO, tempDir, writeFile } from "./helpers.ts"

const ASCII = resolve(REPO, "pipelines/tokenizers/ascii")
const SHOTS = join(REPO, ".test-tmp", "ui-screenshots")

const CHROMIUM = (() => {
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      return execFileSync("which", [name], { encoding: "utf8" }).trim()
    } catch {
      // next
    }
  }
  throw new Error("chromium is not installed: apt-get install -y chromium (.ci/run installs it)")
})()

const quickstart = (dir: string) => writeFile(dir, "quick.yaml", quickstartText())

const quickstartText = () => `name: quick
stages:
  problems: { uses: word-problems, with: { splits: { train: 160, test: 16 }, seed: 0, max_operand: 9, kinds: [add, subtract] } }
  tokenized:
    uses: tokenize
    needs: [problems]
    with: { tokenizer: ${JSON.stringify(ASCII)}, prompt: question, completion: answer, keep: [question, answer] }
  train:
    uses: train
    needs: [tokenized]
    with:
      init: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 256 }
      tokenizer: ${JSON.stringify(ASCII)}
      max_steps: 12
      batch_size: 8
      learning_rate: 3.0e-3
      eval_steps: 4
      logging_steps: 2
  evaluate:
    uses: evaluate
    needs: [tokenized, train]
    with: { eval_batch_size: 8, limit: 4, max_new_tokens: 8, compare_base: true }
  generate:
    uses: generate
    needs: [train]
    with: { prompts: ["James has 5 apples. How many apples does James have?"], max_new_tokens: 8 }
`

interface Ui {
  readonly url: string
  readonly child: ChildProcess
}

/** `pipeline ui` on a free port: the address it logs once it listens. */
const startUi = (args: ReadonlyArray<string>): Promise<Ui> =>
  new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(REPO, "bin/pipeline.js"), "ui", ...args, "--port", "0"], { cwd: REPO, env: { ...process.env, PIPELINE_THREADS: "1" }, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    const look = (chunk: Buffer) => {
      out += chunk.toString()
      const match = /Listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
      if (match) done({ url: match[1]!, child })
    }
    child.stdout!.on("data", look)
    child.stderr!.on("data", look)
    child.on("exit", (code) => fail(new Error(`pipeline ui exited (${code}): ${out}`)))
  })

let browser: Browser
const uis: Array<Ui> = []
let file: string
let cache: string

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true })
  file = quickstart(tempDir())
  cache = tempDir()
  const run = await cliAsync(["run", file, "--cache-dir", cache], { env: { PIPELINE_THREADS: "1" } })
  if (run.code !== 0) throw new Error(run.stderr)
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] })
})

afterAll(async () => {
  await browser?.close()
  for (const ui of uis) ui.child.kill("SIGTERM")
})

const open = async (args: ReadonlyArray<string>): Promise<Page> => {
  const ui = await startUi(args)
  uis.push(ui)
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  const started = performance.now()
  await page.goto(ui.url)
  await page.waitForSelector("g.node")
  // How long the page takes to show the graph (recorded, not asserted: speed lives in the README).
  console.log(`pipeline ui: the graph shown ${Math.round(performance.now() - started)} ms after the request`)
  return page
}

const states = (page: Page) => page.$$eval("g.node", (nodes) => nodes.map((n) => `${n.getAttribute("data-stage")}:${n.getAttribute("data-state")}`))

describe("pipeline ui, in chromium", () => {
  it("shows the 5 stages fresh, the training curves with points, and the evaluation's before and after answers", async () => {
    const page = await open([file, "--cache-dir", cache])
    expect(await states(page)).toEqual(["problems:fresh", "tokenized:fresh", "train:fresh", "evaluate:fresh", "generate:fresh"])
    await page.screenshot({ path: join(SHOTS, "dag.png") })
    await page.click('g.node[data-stage="train"]')
    await page.waitForSelector('[data-curve="loss"] canvas')
    const points = await page.$$eval("[data-curve]", (els) => Object.fromEntries(els.map((e) => [e.getAttribute("data-curve"), Number(e.getAttribute("data-points"))])))
    expect(points.loss).toBeGreaterThan(2)
    expect(points.eval_loss).toBeGreaterThan(1)
    await page.screenshot({ path: join(SHOTS, "training.png"), fullPage: true })
    await page.click('g.node[data-stage="evaluate"]')
    await page.waitForSelector('table[data-split="examples"]')
    const header = await page.$$eval('table[data-split="examples"] th', (ths) => ths.map((th) => th.textContent))
    expect(header).toEqual(expect.arrayContaining(["prediction", "base_prediction", "correct", "base_correct"]))
    expect(await page.$$eval('table[data-split="examples"] tr', (rows) => rows.length)).toBe(5)
    // Before and after, side by side.
    const beforeAfter = await page.$$eval("#before-after tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)))
    expect(beforeAfter[0]).toEqual(["metric", "before", "after"])
    expect(beforeAfter.map((r) => r[0])).toEqual(expect.arrayContaining(["eval_loss", "perplexity", "accuracy"]))
    await page.check("#wrong-only")
    const shown = await page.$$eval('table[data-split="examples"] tr', (rows) => rows.length - 1)
    expect(shown).toBeLessThanOrEqual(4)
    await page.screenshot({ path: join(SHOTS, "evaluation.png"), fullPage: true })
  })

  it("marks a stage stale with its reason after a --set, and a run from the page makes it fresh", async () => {
    const page = await open([file, "--cache-dir", cache, "--set", "train.learning_rate=1e-3"])
    expect(await states(page)).toEqual(["problems:fresh", "tokenized:fresh", "train:stale", "evaluate:stale", "generate:stale"])
    await page.click('g.node[data-stage="train"]')
    await page.waitForSelector("#detail-reasons")
    expect(await page.textContent("#detail-reasons")).toContain("param `learning_rate` changed 0.003→0.001")
    await page.screenshot({ path: join(SHOTS, "stale.png") })
    await page.click("#run-all")
    await page.waitForSelector('g.node[data-stage="train"][data-state="running"]', { timeout: 60_000 })
    await page.waitForFunction(() => [...document.querySelectorAll("g.node")].every((n) => n.getAttribute("data-state") === "fresh"), undefined, { timeout: 240_000 })
    expect(await states(page)).toEqual(["problems:fresh", "tokenized:fresh", "train:fresh", "evaluate:fresh", "generate:fresh"])
    // The runs, latest first: the page's, which ran train, then the first one.
    await page.waitForFunction(() => document.querySelectorAll("#runs tr").length >= 3)
    const runs = await page.$$eval("#runs tr", (rows) => rows.slice(1).map((r) => r.children[2]!.textContent ?? ""))
    expect(runs[0]!.split(", ").map((s) => s.replace(/ \(.*\)$/, "")).sort()).toEqual(["evaluate", "generate", "train"])
    await page.screenshot({ path: join(SHOTS, "runs.png") })

    // A run from the CLI beside the page shows on it too.
    const beside = cliAsync(["run", file, "--cache-dir", cache, "--set", "train.learning_rate=1e-3", "--force", "train"], { env: { PIPELINE_THREADS: "1" } })
    await page.waitForSelector('g.node[data-stage="train"][data-state="running"]', { timeout: 60_000 })
    expect((await beside).code).toBe(0)
    await page.waitForFunction(() => [...document.querySelectorAll("g.node")].every((n) => n.getAttribute("data-state") === "fresh"), undefined, { timeout: 60_000 })
  })

  it("grows a training's curves while it runs, with its progress on the graph", async () => {
    const page = await open([file, "--cache-dir", cache, "--set", "train.max_steps=400", "--set", "train.logging_steps=5"])
    await page.click("#run-all")
    await page.waitForSelector('g.node[data-stage="train"][data-state="running"]', { timeout: 60_000 })
    await page.click('g.node[data-stage="train"]')
    const points = async () => Number(await page.getAttribute('[data-curve="loss"]', "data-points").catch(() => "0"))
    await page.waitForFunction(() => Number(document.querySelector('[data-curve="loss"]')?.getAttribute("data-points") ?? 0) > 2, undefined, { timeout: 120_000 })
    const first = await points()
    await page.waitForFunction((n) => Number(document.querySelector('[data-curve="loss"]')?.getAttribute("data-points") ?? 0) > n, first, { timeout: 120_000 })
    expect(await page.textContent('g.node[data-stage="train"]')).toMatch(/running \d+\/400 steps/)
    await page.screenshot({ path: join(SHOTS, "live.png"), fullPage: true })
    await page.waitForFunction(() => [...document.querySelectorAll("g.node")].every((n) => n.getAttribute("data-state") === "fresh"), undefined, { timeout: 240_000 })
  })

  it("overlays the training curves of a sweep's variants", async () => {
    const text = quickstartText().replace(/  evaluate:[\s\S]*$/, "").replace("      logging_steps: 2\n", "      logging_steps: 2\n    matrix:\n      learning_rate: [3.0e-3, 1.0e-3]\n")
    const swept = writeFile(tempDir(), "sweep.yaml", text)
    const sweptCache = tempDir()
    const ran = await cliAsync(["run", swept, "--cache-dir", sweptCache], { env: { PIPELINE_THREADS: "1" } })
    expect(ran.code, ran.stderr).toBe(0)
    const page = await open([swept, "--cache-dir", sweptCache])
    await page.click('g.node[data-stage="train[learning_rate=3e-3]"]')
    await page.click("#overlay")
    await page.waitForSelector('[data-curve="loss"][data-series="2"] canvas')
    await page.screenshot({ path: join(SHOTS, "overlay.png"), fullPage: true })
  })

  it("reads nothing outside the pipeline: an API id that is not a stage is refused", async () => {
    const ui = uis[0]!
    for (const id of ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "train%00", "nope"]) {
      const response = await fetch(`${ui.url}/api/stages/${id}`)
      expect(response.status).toBe(404)
    }
    const bad = await fetch(`${ui.url}/api/run`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ stage: "../x" }) })
    expect(bad.status).toBe(400)
    // Another site's page cannot start a run: a form post, or a request from another origin.
    const form = await fetch(`${ui.url}/api/run`, { method: "POST", headers: { "content-type": "text/plain" }, body: "{}" })
    expect(form.status).toBe(403)
    const foreign = await fetch(`${ui.url}/api/run`, { method: "POST", headers: { "content-type": "application/json", origin: "http://evil.example" }, body: "{}" })
    expect(foreign.status).toBe(403)
  })
})
