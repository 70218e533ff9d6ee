/**
 * `npm run bench`: the benchmark suite, side by side with PyTorch.
 *
 * Every case runs in a fresh child process (its own peak RSS), one at a time. Training
 * alternates ours and ../shared/anchor/bench_torch.py (Debian's python3-torch) repeat by
 * repeat, and quotes medians and the ratio ours/PyTorch: these machines are noisy, so
 * ratios taken in one run are what to compare. Writes bench/results/latest.json and
 * latest.md (e2e.json and e2e.md for the end-to-end case, stream.json and stream.md for
 * the stream case); `--readme` also puts the
 * tables into README.md's Performance section.
 */
import { spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs"
import { cpus, totalmem, tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { formatE2e, formatInfer, formatStream, formatTables, type Gsm8kRun, type InferPair, median, num, type Results, type TrainPair } from "./report.ts"
import { PRESET_NAMES, type PresetName, torchPreset } from "./presets.ts"
import { qwenTokenizerDir } from "../tests/fixtures/tokenizers/folders.ts"

const HERE = dirname(fileURLToPath(import.meta.url))
const REPO = resolve(HERE, "..")
const ANCHOR = resolve(REPO, "../shared/anchor/bench_torch.py")
const LORA_ANCHOR = resolve(HERE, "lora_torch.py")
const INFER_ANCHOR = resolve(HERE, "infer_torch.py")
const ALL_CASES = ["train", "tokenize", "cached", "generate", "infer", "e2e", "gsm8k", "stream"] as const
/** Cases and presets that take many minutes each: run only when asked for. */
const LONG_CASES: ReadonlyArray<string> = ["infer", "e2e", "gsm8k", "stream"]
const LONG_PRESETS: ReadonlyArray<string> = ["qwen2.5-0.5b"]

const HELP = `npm run bench [-- OPTIONS]

Measures training, tokenizing, cached runs and generation, and trains the same presets
in PyTorch (../shared/anchor/bench_torch.py) in the same run when python3 has torch.

Options:
  --cases LIST        ${ALL_CASES.join(",")} (default: all but ${LONG_CASES.join(" and ")}, which take most of an hour)
                      gsm8k: pipelines/gsm8k.yaml and gsm8k-lora.yaml, --set train.max_steps=N, against a
                      loopback hub whose Qwen/Qwen2.5-0.5B is a full-size stand-in (random weights)
                      stream: a generated JSON-lines corpus (--stream-mb) through fetch, tokenize (text,
                      pack 512), filter, shuffle and select, under node --max-old-space-size=1024
                      infer: inference beside PyTorch (bench/infer_torch.py) on --infer-presets: greedy
                      generation with the KV cache, 8 prompts batched and 1 alone (--gen-prompt,
                      --gen-new), and eval_loss's forward pass at 5×512
  --presets LIST      ${PRESET_NAMES.join(",")} (default: all but ${LONG_PRESETS.join(", ")}, whose four cases
                      (full and LoRA r 16, at 4×256 and 5×512) take about an hour with PyTorch)
  --backends LIST     tensorflow,wasm,cpu (default: every one present; cpu trains only tiny)
  --gsm8k-steps N     optimizer steps of each tutorial pipeline in the gsm8k case (default 2)
  --shapes LIST       batch×sequence shapes for qwen2.5-0.5b (default 4x256,5x512; 5x512 is the tutorial's)
  --repeats N         alternating repeats per training case (default 3)
  --quick             1 repeat, tiny and small only
  --e2e-examples N    GSM8K training examples for the end-to-end case (default 2000)
  --stream-mb N       size of the stream case's corpus in MB (default 3000)
  --infer-presets L   presets of the infer case (default small,qwen2.5-0.5b)
  --gen-prompt N      prompt tokens a row in the infer case's generation (default 64)
  --gen-new N         new tokens a row in the infer case's generation (default 32)
  --python PATH       the Python with torch (default: $BENCH_PYTHON or /usr/bin/python3)
  --no-torch          skip PyTorch
  --out DIR           where the results go (default bench/results): latest.json and
                      latest.md, and e2e.json and e2e.md for the end-to-end case
  --readme            also write the tables into README.md (## Performance)
  --render            measure nothing: write the tables again from the results in --out
  --help              this text

Example: npm run bench -- --cases train --presets small --repeats 5`

const { values: flags } = parseArgs({
  options: {
    cases: { type: "string" },
    presets: { type: "string" },
    backends: { type: "string" },
    repeats: { type: "string" },
    quick: { type: "boolean", default: false },
    "e2e-examples": { type: "string", default: "2000" },
    "stream-mb": { type: "string", default: "3000" },
    "infer-presets": { type: "string", default: "small,qwen2.5-0.5b" },
    "gen-prompt": { type: "string", default: "64" },
    "gen-new": { type: "string", default: "32" },
    shapes: { type: "string", default: "4x256,5x512" },
    "gsm8k-steps": { type: "string", default: "2" },
    python: { type: "string" },
    "no-torch": { type: "boolean", default: false },
    out: { type: "string", default: join(REPO, "bench/results") },
    readme: { type: "boolean", default: false },
    render: { type: "boolean", default: false },
    help: { type: "boolean", default: false }
  }
})

if (flags.help) {
  console.log(HELP)
  process.exit(0)
}

const fail = (message: string): never => {
  console.error(`bench: ${message}\n\n${HELP}`)
  process.exit(2)
}

const list = <T extends string>(value: string | undefined, allowed: ReadonlyArray<T>, fallback: ReadonlyArray<T>, flag: string): ReadonlyArray<T> => {
  if (value === undefined) return fallback
  const items = value.split(",").map((s) => s.trim()).filter(Boolean)
  for (const item of items) if (!allowed.includes(item as T)) fail(`${flag} ${item}: expected one of ${allowed.join(", ")}`)
  return items as Array<T>
}

const cases = list(flags.cases, ALL_CASES, ALL_CASES.filter((c) => !LONG_CASES.includes(c)), "--cases")
const presets = list(flags.presets, PRESET_NAMES, flags.quick ? ["tiny", "small"] : PRESET_NAMES.filter((p) => !LONG_PRESETS.includes(p)), "--presets")
const SHAPE_NAMES = ["4x256", "5x512"] as const
const shapes = list(flags.shapes, SHAPE_NAMES, SHAPE_NAMES, "--shapes").map((name) => name.split("x").map(Number) as [number, number])
const repeats = flags.repeats === undefined ? (flags.quick ? 1 : 3) : Number(flags.repeats)
if (!(Number.isInteger(repeats) && repeats >= 1)) fail(`--repeats ${flags.repeats}: expected a whole number, 1 or more`)
const gsm8kSteps = Number(flags["gsm8k-steps"])
if (!(Number.isInteger(gsm8kSteps) && gsm8kSteps >= 1)) fail(`--gsm8k-steps ${flags["gsm8k-steps"]}: expected a whole number, 1 or more`)
const streamMb = Number(flags["stream-mb"])
if (!(Number.isFinite(streamMb) && streamMb >= 1)) fail(`--stream-mb ${flags["stream-mb"]}: expected a number of MB, 1 or more`)
const inferPresets = list(flags["infer-presets"], PRESET_NAMES, ["small", "qwen2.5-0.5b"], "--infer-presets")
const [genPrompt, genNew] = [flags["gen-prompt"], flags["gen-new"]].map(Number) as [number, number]
if (!(Number.isInteger(genPrompt) && genPrompt >= 1 && Number.isInteger(genNew) && genNew >= 2)) fail(`--gen-prompt ${flags["gen-prompt"]} --gen-new ${flags["gen-new"]}: expected whole numbers, at least 1 and 2`)
const e2eExamples = Number(flags["e2e-examples"])
if (!(Number.isInteger(e2eExamples) && e2eExamples >= 20)) fail(`--e2e-examples ${flags["e2e-examples"]}: expected a whole number, 20 or more`)

// ---------------------------------------------------------------------------------------
// Child processes: one JSON line out, wall time and peak RSS measured from outside.

const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined

interface ChildResult {
  readonly json: Record<string, unknown>
  readonly wallS: number
  /** Peak RSS of the child, from /usr/bin/time (undefined without it). */
  readonly peakRssMb: number | undefined
}

const runChild = (command: string, args: ReadonlyArray<string>, env: Record<string, string> = {}, base: Record<string, string | undefined> = process.env): Promise<ChildResult> =>
  new Promise((done, failed) => {
    const argv = TIME === undefined ? [command, ...args] : [TIME, "-f", "BENCH_PEAK_RSS_KB=%M", command, ...args]
    const started = performance.now()
    const child = spawn(argv[0]!, argv.slice(1), { cwd: REPO, env: { ...base, ...env } as NodeJS.ProcessEnv, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("error", failed)
    child.on("close", (code) => {
      const wallS = (performance.now() - started) / 1000
      const rss = /BENCH_PEAK_RSS_KB=(\d+)/.exec(stderr)
      const json = parseJson(stdout)
      if (code !== 0 || json === undefined) {
        // /usr/bin/time reports a child the kernel killed (out of memory, say) as "Command terminated by signal 9".
        const killed = /terminated by signal (\d+)/.exec(stderr)
        failed(new Error(`${[command, ...args].join(" ")} exited ${code}${killed ? ` (killed by signal ${killed[1]}${killed[1] === "9" ? ", out of memory?" : ""})` : ""}:\n${stderr.replace(/BENCH_PEAK_RSS_KB=\d+\n?/, "").trim().slice(-2000)}`))
        return
      }
      done({ json, wallS, peakRssMb: rss === null ? undefined : Math.round(Number(rss[1]) / 102.4) / 10 })
    })
  })

/** The whole output as JSON (`pipeline run --json`), else its last line that is (the cases). */
const parseJson = (stdout: string): Record<string, unknown> | undefined => {
  const candidates = [stdout.trim(), ...stdout.trim().split("\n").filter((line) => line.startsWith("{")).reverse()]
  for (const text of candidates) {
    try {
      return JSON.parse(text) as Record<string, unknown>
    } catch {
      // not this one
    }
  }
  return undefined
}

const NODE_TS = [process.execPath, "--import", "tsx"] as const
const node = (script: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  runChild(NODE_TS[0], [...NODE_TS.slice(1), join(HERE, script), ...args], env)

const note = (line: string) => process.stderr.write(`${line}\n`)
/** The line of a child's stderr that says what went wrong (not its stack). */
const firstErrorLine = (text: string): string =>
  text.split("\n").map((line) => line.trim()).find((line) => /^[A-Za-z]*(Error|Exhausted)\b|^Error:/.test(line)) ?? text.split("\n")[0] ?? text

// ---------------------------------------------------------------------------------------
// What this machine has.

const tensorflowPresent = (): boolean =>
  spawnSync(process.execPath, ["-e", "require('@tensorflow/tfjs-node')"], { cwd: REPO, stdio: "ignore" }).status === 0

const python = flags.python ?? process.env.BENCH_PYTHON ?? "/usr/bin/python3"
const torchVersion = (): string | undefined => {
  if (flags["no-torch"]) return undefined
  if (!existsSync(ANCHOR)) {
    note(`bench: ${ANCHOR} is missing: PyTorch is skipped`)
    return undefined
  }
  const probe = spawnSync(python, ["-c", "import torch; print(torch.__version__)"], { encoding: "utf8" })
  if (probe.status !== 0) {
    note(`bench: ${python} has no torch (apt-get install python3-torch): PyTorch is skipped`)
    return undefined
  }
  return probe.stdout.trim()
}

/**
 * Which BLAS Debian's torch calls (the libblas.so.3 alternative). Netlib's reference BLAS,
 * what apt picks when nothing better is installed, is 5-20× slower than OpenBLAS: a
 * PyTorch figure measured on it says nothing. `apt-get install libopenblas0-pthread`.
 */
const blasLibrary = (): string => {
  const link = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"
  try {
    return realpathSync(link)
  } catch {
    return "unknown"
  }
}

const present = ["tensorflow", "wasm", "cpu"].filter((b) => b !== "tensorflow" || tensorflowPresent())
const backends = list(flags.backends, ["tensorflow", "wasm", "cpu"] as const, present as Array<"tensorflow" | "wasm" | "cpu">, "--backends")
for (const backend of backends) if (!present.includes(backend)) fail(`--backends ${backend}: not present here (@tensorflow/tfjs-node does not load)`)
let torch = torchVersion()
const blas = torch === undefined ? undefined : blasLibrary()
if (blas !== undefined && /\/blas\/libblas\.so/.test(blas)) {
  note(`bench: PyTorch would use netlib's reference BLAS (${blas}), 5-20x slower than OpenBLAS: apt-get install libopenblas0-pthread. PyTorch is skipped.`)
  torch = undefined
}
const cpuModel = (/model name\s*:\s*(.+)/.exec(existsSync("/proc/cpuinfo") ? readFileSync("/proc/cpuinfo", "utf8") : "")?.[1] ?? cpus()[0]?.model ?? "unknown").trim()
const threads = cpus().length

/**
 * PyTorch at its best: without the OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE this machine
 * sets for old OpenBLAS builds, which hold OpenBLAS to older kernels (bench_torch.py
 * --check passes without them: the results are correct).
 */
const torchRun = (script: string, args: ReadonlyArray<string>) => {
  const env: Record<string, string | undefined> = { ...process.env }
  delete env.OPENBLAS_CORETYPE
  delete env.OPENBLAS_L2_SIZE
  return runChild(python, [script, ...args], {}, env)
}

/** The kernel set OpenBLAS picks for PyTorch (run as torchRun runs it). */
const blasCore = (): string | undefined => {
  if (torch === undefined) return undefined
  const env: Record<string, string | undefined> = { ...process.env }
  delete env.OPENBLAS_CORETYPE
  delete env.OPENBLAS_L2_SIZE
  const probe = spawnSync(python, ["-c", "import ctypes, ctypes.util, torch\nlib = ctypes.CDLL(ctypes.util.find_library('openblas') or 'libopenblas.so.0')\nlib.openblas_get_corename.restype = ctypes.c_char_p\nprint(lib.openblas_get_corename().decode())"], { encoding: "utf8", env: env as NodeJS.ProcessEnv })
  return probe.status === 0 ? probe.stdout.trim() : undefined
}

const results: Results = {
  date: new Date().toISOString(),
  machine: { cpu: cpuModel, cores: threads, memory_gib: Math.round(totalmem() / 2 ** 30), node: process.version, torch: torch ?? null, blas: blas ?? null, blas_core: blasCore() ?? null },
  command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
  train: [],
  tokenize: undefined,
  cached: undefined,
  generate: [],
  e2e: undefined,
  gsm8k: [] as Array<Gsm8kRun>,
  skipped: []
}

const backendEnv = (backend: string): Record<string, string> => ({ PIPELINE_BACKEND: backend, PIPELINE_THREADS: String(threads) })

// ---------------------------------------------------------------------------------------
// Training: ours and PyTorch, alternating.

const STEPS: Record<PresetName, number> = { tiny: 20, small: 3, "qwen2.5-0.5b-slice": 2, "qwen2.5-0.5b": 2 }

interface TrainShape {
  readonly preset: PresetName
  readonly mode: "full" | "lora"
  readonly batch: number
  readonly seq: number
  readonly warmup: number
  readonly steps: number
}

/** The anchor's protocol (4×256, 2 warm-up steps) per preset; the whole 0.5B fully and with LoRA r 16, at 4×256 and the tutorial's 5×512. */
const trainShapes = (): ReadonlyArray<TrainShape> =>
  presets.flatMap((preset): ReadonlyArray<TrainShape> =>
    preset === "qwen2.5-0.5b"
      ? shapes.flatMap(([batch, seq]) => (["lora", "full"] as const).map((mode) => ({ preset, mode, batch: batch!, seq: seq!, warmup: 1, steps: STEPS[preset] })))
      : [{ preset, mode: "full", batch: 4, seq: 256, warmup: 2, steps: STEPS[preset] }]
  )

const LORA = ["--r", "16", "--alpha", "32"] as const

const trainCase = async () => {
  for (const shape of trainShapes()) {
    const { preset, mode, batch, seq, warmup } = shape
    const label = `${preset} ${mode} ${batch}x${seq}`
    const shapeArgs = ["--batch", String(batch), "--seq", String(seq), "--warmup", String(warmup)]
    for (const backend of backends) {
      if (backend === "cpu" && preset !== "tiny") {
        results.skipped.push(`train ${preset} on cpu: plain JS trains small at about 2.5 tokens/s, minutes a step; cpu is the correctness reference`)
        continue
      }
      // cpu (plain JS) takes about 25 s a tiny step: two steps, once, are enough to place it.
      const steps = backend === "cpu" ? 2 : shape.steps
      const pair: TrainPair = { preset, mode, batch, seq, backend, steps, ours: [], torch: [] }
      for (let r = 0; r < (backend === "cpu" ? 1 : repeats); r++) {
        // Alternate who goes first, so that neither always runs on a warmer machine.
        const order = r % 2 === 0 ? ["ours", "torch"] : ["torch", "ours"]
        for (const who of order) {
          if (who === "ours") {
            if (pair.failure !== undefined) continue
            const args = ["--preset", preset, "--mode", mode, ...(mode === "lora" ? LORA : []), "--steps", String(steps), ...shapeArgs]
            const run = await node("cases/train-step.ts", args, backendEnv(backend)).catch((error: Error) => {
              // Recorded, not fatal: a preset that does not fit a backend is a result too.
              pair.failure = firstErrorLine(error.message)
              note(`train ${label} ${backend}: failed: ${pair.failure}`)
              return undefined
            })
            if (run === undefined) continue
            pair.ours.push({ ...run.json, peak_rss_mb: run.peakRssMb ?? num(run.json.peak_rss_mb) })
            note(`train ${label} ${backend} #${r + 1}: ${num(run.json.tokens_per_s)} tokens/s (forward ${num(run.json.median_forward_s)} s, head ${num(run.json.median_head_s)} s, backward ${num(run.json.median_backward_s)} s, optimizer ${num(run.json.median_opt_s)} s; heap ${String(run.json.peak_heap_gib)} GiB, predicted ${num(run.json.predicted_heap_gib)})`)
          } else if (torch !== undefined && backend === backends[0] && pair.torchFailure === undefined) {
            const { preset: anchorPreset, layers } = torchPreset(preset)
            const args = ["--preset", anchorPreset, ...(layers === undefined ? [] : ["--layers", String(layers)]), "--steps", String(shape.steps), "--threads", String(threads), ...shapeArgs]
            const run = await torchRun(mode === "lora" ? LORA_ANCHOR : ANCHOR, mode === "lora" ? [...args, ...LORA] : args).catch((error: Error) => {
              pair.torchFailure = firstErrorLine(error.message.replace(/^.*?exited/s, "exited"))
              note(`train ${label} torch: failed: ${pair.torchFailure}`)
              return undefined
            })
            if (run === undefined) continue
            pair.torch.push({ ...run.json, peak_rss_mb: run.peakRssMb ?? num(run.json.peak_rss_mb) })
            note(`train ${label} torch #${r + 1}: ${num(run.json.tokens_per_s)} tokens/s`)
          }
        }
      }
      results.train.push(pair)
    }
  }
  // PyTorch ran beside the first backend; every backend of a case compares with those runs.
  for (const pair of results.train) {
    if (pair.torch.length === 0) {
      const twin = results.train.find((p) => p.preset === pair.preset && p.mode === pair.mode && p.batch === pair.batch && p.seq === pair.seq && p.torch.length > 0)
      pair.torch = twin?.torch ?? []
    }
  }
}

// ---------------------------------------------------------------------------------------
// The data half of gsm8k.yaml against the loopback hub: tokenize, then fully cached runs.

const withHub = async <A>(body: (env: Record<string, string>, cacheDir: string) => Promise<A>, options: { readonly standIn?: boolean } = {}): Promise<A> => {
  const { defaultRepos, startHubServer } = await import("../tests/support/hub-server.ts")
  const { standInCheckpoint } = await import("../tests/support/standin-model.ts")
  // A full-size stand-in behind Qwen/Qwen2.5-0.5B: its config, random weights (2 GB).
  const repos = options.standIn !== true ? defaultRepos() : defaultRepos().map((repo) =>
    repo.name !== "Qwen/Qwen2.5-0.5B" ? repo : { ...repo, branches: { main: { ...repo.branches.main, ...standInCheckpoint() } } })
  const server = await startHubServer({ repos })
  const work = mkdtempSync(join(tmpdir(), "pipeline-bench-"))
  try {
    return await body({ HF_ENDPOINT: server.url, HF_HUB_CACHE: join(work, "hf"), HF_HUB_OFFLINE: "" }, join(work, "cache"))
  } finally {
    await server.close().catch(() => undefined)
    rmSync(work, { recursive: true, force: true })
  }
}

interface StageJson {
  readonly id: string
  readonly status: string
  readonly durationMs: number
  readonly metrics: Record<string, number>
  readonly outputs: { readonly dataset?: { readonly splits: Record<string, ReadonlyArray<{ readonly path: string; readonly rows: number }>> } } | null
}

// ---------------------------------------------------------------------------------------
// The tutorial's training starts: both pipeline files, two optimizer steps, full size.

const GSM8K_FILES = ["pipelines/gsm8k.yaml", "pipelines/gsm8k-lora.yaml"] as const

const gsm8kCase = () =>
  withHub(async (env, cacheDir) => {
    const smoke = ["--until", "train", "--set", `train.max_steps=${gsm8kSteps}`]
    // The data half first, so that the train stage's time is its own.
    await pipelineRun(join(REPO, GSM8K_FILES[0]), cacheDir, env, ["--until", "shuffled"])
    for (const file of GSM8K_FILES) {
      const run = await pipelineRun(join(REPO, file), cacheDir, { ...env, ...backendEnv(backends[0] ?? "wasm") }, smoke)
      const train = stagesOf(run).find((s) => s.id === "train")
      if (train?.status !== "ran") throw new Error(`${file}: the train stage did not run`)
      const steps = train.metrics.steps ?? Number.NaN
      const secondsPerStep = (train.metrics.train_seconds ?? Number.NaN) / steps
      // The tutorial's epoch: 7,471 examples, batch 5, accumulation 4 (the stage logs the plan).
      const updatesPerEpoch = Math.ceil(Math.ceil(7471 / 5) / 4)
      results.gsm8k!.push({
        file,
        backend: backends[0] ?? "wasm",
        steps,
        stage_seconds: train.durationMs / 1000,
        train_seconds: train.metrics.train_seconds ?? Number.NaN,
        seconds_per_step: secondsPerStep,
        tokens_per_s: train.metrics.tokens_per_second ?? Number.NaN,
        trainable: train.metrics.trainable_parameters ?? Number.NaN,
        epoch_hours: (secondsPerStep * updatesPerEpoch) / 3600,
        updates_per_epoch: updatesPerEpoch,
        peak_rss_mb: run.peakRssMb ?? null
      })
      note(`gsm8k ${file}: ${secondsPerStep.toFixed(1)} s a step, ${train.metrics.tokens_per_second} tokens/s; an epoch (${updatesPerEpoch} steps) ≈ ${((secondsPerStep * updatesPerEpoch) / 3600).toFixed(1)} h`)
    }
  }, { standIn: true })

// ---------------------------------------------------------------------------------------
// A dataset larger than the heap: the data stages stream it.

/** The node heap the stream case allows the pipeline: a third of the corpus at the default size. */
const STREAM_HEAP_MB = 1024

const streamPipeline = (corpus: string, tokenizer: string) => `name: stream
stages:
  corpus:
    uses: fetch
    with: { path: ${JSON.stringify(corpus)} }
  tokens:
    uses: tokenize
    needs: [corpus]
    with: { tokenizer: ${JSON.stringify(tokenizer)}, text: text, pack: { block_size: 512 } }
  kept:
    uses: filter
    needs: [tokens]
    with: { max_length: { column: input_ids, max: 512 } }
  mixed:
    uses: shuffle
    needs: [kept]
  sample:
    uses: select
    needs: [mixed]
    with: { rows: 100000 }
`

const streamCase = async () => {
  const dir = mkdtempSync(join(tmpdir(), "bench-stream-"))
  try {
    const corpus = join(dir, "corpus.jsonl")
    note(`stream: generating a ${streamMb} MB corpus`)
    const generated = await node("cases/stream-corpus.ts", ["--out", corpus, "--mb", String(streamMb)])
    const file = join(dir, "stream.yaml")
    writeFileSync(file, streamPipeline(corpus, qwenTokenizerDir("qwen2.5", dir)))
    note(`stream: fetch → tokenize → filter → shuffle → select under --max-old-space-size=${STREAM_HEAP_MB}`)
    const run = await runChild(process.execPath, [`--max-old-space-size=${STREAM_HEAP_MB}`, join(REPO, "bin/pipeline.js"), "run", file, "--cache-dir", join(dir, "cache"), "--json"])
    const corpusMb = num(generated.json.bytes) / 1e6
    const stages = stagesOf(run).map((stage) => {
      const files = Object.values(stage.outputs?.dataset?.splits ?? {}).flat()
      const seconds = stage.durationMs / 1000
      return {
        id: stage.id,
        seconds,
        rows: files.reduce((n, f) => n + f.rows, 0),
        output_mb: Math.round(files.reduce((n, f) => n + statSync(f.path).size, 0) / 1e5) / 10,
        corpus_mb_per_s: Math.round((corpusMb / seconds) * 10) / 10
      }
    })
    const total = stages.reduce((n, s) => n + s.seconds, 0)
    results.stream = {
      corpus_mb: Math.round(corpusMb),
      documents: num(generated.json.documents),
      heap_mb: STREAM_HEAP_MB,
      stages,
      total_s: Math.round(total),
      corpus_mb_per_s: Math.round((corpusMb / total) * 10) / 10,
      peak_rss_mb: run.peakRssMb ?? null
    }
    note(`stream: ${Math.round(corpusMb)} MB in ${Math.round(total)} s (${results.stream.corpus_mb_per_s} MB/s); peak RSS ${run.peakRssMb ?? "?"} MB`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const pipelineRun = (file: string, cacheDir: string, env: Record<string, string>, extra: ReadonlyArray<string> = []) =>
  runChild(process.execPath, [join(REPO, "bin/pipeline.js"), "run", file, "--cache-dir", cacheDir, "--json", ...extra], env)

const stagesOf = (run: ChildResult) => (run.json.stages as ReadonlyArray<StageJson>)

const dataHalfCases = () =>
  withHub(async (env, cacheDir) => {
    const file = join(REPO, "pipelines/gsm8k.yaml")
    const first = await pipelineRun(file, cacheDir, env, ["--until", "shuffled"])
    const tokenized = stagesOf(first).find((s) => s.id === "tokenized")
    if (tokenized?.status !== "ran") throw new Error("the tokenize stage did not run")
    const tokens = Object.entries(tokenized.metrics).filter(([k]) => k.endsWith(".tokens")).reduce((sum, [, v]) => sum + v, 0)
    results.tokenize = {
      tokens,
      train_tokens: tokenized.metrics["train.tokens"] ?? Number.NaN,
      seconds: tokenized.durationMs / 1000,
      tokens_per_s: Math.round(tokens / (tokenized.durationMs / 1000)),
      pipeline_peak_rss_mb: first.peakRssMb ?? null
    }
    note(`tokenize: ${tokens} tokens in ${(tokenized.durationMs / 1000).toFixed(2)} s (${results.tokenize.tokens_per_s} tokens/s)`)
    if (!cases.includes("cached")) return
    const walls: Array<number> = []
    const rss: Array<number> = []
    for (let r = 0; r < Math.max(5, repeats); r++) {
      const run = await pipelineRun(file, cacheDir, env, ["--until", "shuffled"])
      const statuses = stagesOf(run).filter((s) => s.status !== "skipped").map((s) => s.status)
      if (statuses.some((s) => s !== "cached")) throw new Error(`a cached run re-ran something: ${statuses.join(", ")}`)
      walls.push(run.wallS)
      if (run.peakRssMb !== undefined) rss.push(run.peakRssMb)
    }
    results.cached = {
      pipeline: "pipelines/gsm8k.yaml --until shuffled (4 stages, all cached, hub on loopback)",
      runs: walls.length,
      median_s: Math.round(median(walls) * 1000) / 1000,
      min_s: Math.round(Math.min(...walls) * 1000) / 1000,
      peak_rss_mb: rss.length > 0 ? median(rss) : null
    }
    note(`cached run: median ${results.cached.median_s} s over ${walls.length} runs`)
  })

// ---------------------------------------------------------------------------------------
// Generation, with and without the KV cache.

const generateCase = async () => {
  for (const preset of presets.filter((p) => p !== "qwen2.5-0.5b-slice")) {
    for (const backend of backends) {
      if (backend === "cpu" && preset !== "tiny") continue
      for (const cache of ["on", "off"]) {
        const run = await node("cases/generate.ts", ["--preset", preset, "--cache", cache], backendEnv(backend))
        results.generate.push({ ...run.json, peak_rss_mb: run.peakRssMb ?? num(run.json.peak_rss_mb) })
        note(`generate ${preset} ${backend} cache ${cache}: ${num(run.json.tokens_per_s)} tokens/s`)
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Inference beside PyTorch: generation (8 prompts batched, and 1 alone) and eval_loss.

const inferShapes = (preset: PresetName): ReadonlyArray<Omit<InferPair, "backend" | "ours" | "torch">> => [
  { kind: "generate", preset, batch: 8, prompt: genPrompt, new: genNew },
  { kind: "generate", preset, batch: 1, prompt: genPrompt, new: genNew },
  { kind: "eval-loss", preset, batch: 5, seq: 512 }
]

const inferCase = async () => {
  const backend = backends.find((b) => b !== "cpu") ?? "cpu"
  const infer: Array<InferPair> = []
  for (const preset of inferPresets) {
    for (const shape of inferShapes(preset)) {
      const pair: InferPair = { ...shape, backend, ours: [], torch: [] }
      const label = `infer ${shape.kind} ${preset} ${shape.kind === "generate" ? `batch ${shape.batch}` : `${shape.batch}x${shape.seq}`}`
      const caseArgs = shape.kind === "generate"
        ? ["--batch", String(shape.batch), "--prompt", String(shape.prompt), "--new", String(shape.new)]
        : ["--batch", String(shape.batch), "--seq", String(shape.seq)]
      // Each process takes the median of its own repeats (a 0.5B model loads in about 30 s).
      const inner = String(preset === "qwen2.5-0.5b" ? Math.min(repeats, 2) : repeats)
      const ours = await node(shape.kind === "generate" ? "cases/generate.ts" : "cases/eval-loss.ts", ["--preset", preset, ...caseArgs, "--repeats", inner], backendEnv(backend)).catch((error: Error) => {
        pair.failure = firstErrorLine(error.message)
        return undefined
      })
      if (ours !== undefined) pair.ours.push({ ...ours.json, peak_rss_mb: ours.peakRssMb ?? num(ours.json.peak_rss_mb) })
      if (torch !== undefined) {
        const { preset: anchorPreset, layers } = torchPreset(preset)
        const mode = shape.kind === "generate" ? ["--mode", "generate"] : ["--mode", "eval-loss"]
        const run = await torchRun(INFER_ANCHOR, [...mode, "--preset", anchorPreset, ...(layers === undefined ? [] : ["--layers", String(layers)]), ...caseArgs, "--repeats", inner, "--threads", String(threads)]).catch((error: Error) => {
          pair.torchFailure = firstErrorLine(error.message.replace(/^.*?exited/s, "exited"))
          return undefined
        })
        if (run !== undefined) pair.torch.push({ ...run.json, peak_rss_mb: run.peakRssMb ?? num(run.json.peak_rss_mb) })
      }
      note(`${label}: ours ${pair.failure ?? `${num(pair.ours[0]?.tokens_per_s)} tokens/s`}, PyTorch ${pair.torchFailure ?? `${num(pair.torch[0]?.tokens_per_s)} tokens/s`}`)
      infer.push(pair)
    }
  }
  results.infer = infer
}

// ---------------------------------------------------------------------------------------
// End to end: one epoch of the tutorial's settings, 2,000 GSM8K examples, small preset.

const e2eCase = () =>
  withHub(async (env, cacheDir) => {
    const file = join(REPO, "bench/pipelines/gsm8k-small.yaml")
    const set = ["--set", `subset.rows.train=${e2eExamples}`]
    // The data half first, so that the train stage's time is its own.
    await pipelineRun(file, cacheDir, env, [...set, "--until", "subset"])
    const ours = await pipelineRun(file, cacheDir, { ...env, ...backendEnv(backends[0] ?? "wasm") }, set)
    const train = stagesOf(ours).find((s) => s.id === "train")
    const subset = stagesOf(ours).find((s) => s.id === "subset")
    if (train?.status !== "ran" || subset?.outputs?.dataset === undefined) throw new Error("the e2e train stage did not run")
    results.e2e = {
      examples: e2eExamples,
      ours: {
        backend: backends[0] ?? "wasm",
        stage_seconds: train.durationMs / 1000,
        train_seconds: train.metrics.train_seconds ?? Number.NaN,
        tokens: train.metrics.tokens ?? Number.NaN,
        tokens_per_s: train.metrics.tokens_per_second ?? Number.NaN,
        loss: train.metrics.loss ?? Number.NaN,
        peak_rss_mb: ours.peakRssMb ?? null
      },
      torch: undefined
    }
    note(`e2e ours: ${train.metrics.train_seconds} s training (${train.durationMs / 1000} s stage), ${train.metrics.tokens_per_second} tokens/s`)
    if (torch === undefined) return
    const dataFile = join(dirname(cacheDir), "e2e-examples.json")
    await exportExamples(subset.outputs.dataset.splits.train ?? [], dataFile)
    const run = await runChild(python, [join(HERE, "e2e_torch.py"), "--data", dataFile, "--preset", "small", "--threads", String(threads)])
    results.e2e.torch = { ...run.json, peak_rss_mb: run.peakRssMb ?? num(run.json.peak_rss_mb) }
    note(`e2e torch: ${num(run.json.seconds)} s, ${num(run.json.tokens_per_s)} tokens/s`)
  })

/** The subset's examples in the order our trainer visits them in epoch 0 (seed 42), for PyTorch. */
const exportExamples = async (files: ReadonlyArray<{ readonly path: string }>, out: string) => {
  const { tableFromIPC } = await import("apache-arrow")
  const { permutation } = await import("../src/random.ts")
  const examples: Array<{ input_ids: Array<number>; labels: Array<number> }> = []
  for (const { path } of files) {
    const table = tableFromIPC(readFileSync(path))
    const ids = table.getChild("input_ids")!
    const labels = table.getChild("labels")!
    for (let i = 0; i < table.numRows; i++) {
      examples.push({ input_ids: Array.from(ids.get(i)!.toArray() as Int32Array), labels: Array.from(labels.get(i)!.toArray() as Int32Array) })
    }
  }
  const order = permutation(examples.length, 42)
  // Qwen2.5's pad (<|endoftext|>); padding only has to be masked, its id changes nothing.
  writeFileSync(out, JSON.stringify({ examples: Array.from(order, (i) => examples[i]), pad_token_id: 151643 }))
}

// ---------------------------------------------------------------------------------------

const main = async () => {
  note(`bench: ${cpuModel}, ${threads} cores; backends ${backends.join(", ")}; PyTorch ${torch ?? "absent"}; ${repeats} repeat(s)`)
  const started = performance.now()
  if (cases.includes("train")) await trainCase()
  if (cases.includes("tokenize") || cases.includes("cached")) await dataHalfCases()
  if (cases.includes("generate")) await generateCase()
  if (cases.includes("infer")) await inferCase()
  if (cases.includes("e2e")) await e2eCase()
  if (cases.includes("gsm8k")) await gsm8kCase()
  if (cases.includes("stream")) await streamCase()
  mkdirSync(flags.out!, { recursive: true })
  // The end-to-end case (most of an hour) keeps files and a README block of its own, so
  // that the other cases can be measured again without it, and the other way round.
  if (cases.some((c) => c !== "e2e" && c !== "stream" && c !== "infer")) {
    const latest = { ...results, e2e: undefined, stream: undefined, infer: undefined }
    console.log(publish("latest", "bench", formatTables(latest), latest))
  }
  const own = (key: "infer" | "stream" | "e2e") => ({ date: results.date, machine: results.machine, command: results.command, [key]: results[key] })
  if (results.infer !== undefined) console.log(publish("infer", "bench-infer", formatInfer(results), own("infer")))
  if (results.stream !== undefined) console.log(publish("stream", "bench-stream", formatStream(results), own("stream")))
  if (results.e2e !== undefined) console.log(publish("e2e", "bench-e2e", formatE2e(results), own("e2e")))
  note(`bench: done in ${Math.round((performance.now() - started) / 1000)} s; results in ${flags.out}`)
}

/** Writes NAME.md (and NAME.json when given results), and with --readme the README block; returns the markdown. */
const publish = (name: string, block: string, markdown: string, json?: object): string => {
  if (json !== undefined) writeFileSync(join(flags.out!, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`)
  writeFileSync(join(flags.out!, `${name}.md`), markdown)
  if (flags.readme) updateReadme(block, markdown)
  return markdown
}

/** Replaces what is between `<!-- NAME:start -->` and `<!-- NAME:end -->` in README.md. */
const updateReadme = (name: string, markdown: string) => {
  const file = join(REPO, "README.md")
  const text = readFileSync(file, "utf8")
  const start = `<!-- ${name}:start -->`
  const end = `<!-- ${name}:end -->`
  const from = text.indexOf(start)
  const to = text.indexOf(end)
  if (from < 0 || to < from) fail(`README.md has no ${start} … ${end} block to fill`)
  writeFileSync(file, `${text.slice(0, from + start.length)}\n${markdown}\n${text.slice(to)}`)
}

/** `--render`: the tables again from saved results (after a change to how they are written). */
const render = () => {
  const saved = (name: string): Results | undefined => {
    const file = join(flags.out!, name)
    return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Results) : undefined
  }
  const latest = saved("latest.json")
  const e2e = saved("e2e.json")
  const stream = saved("stream.json")
  const infer = saved("infer.json")
  if (infer !== undefined) publish("infer", "bench-infer", formatInfer(infer))
  if (stream !== undefined) publish("stream", "bench-stream", formatStream(stream))
  if (latest === undefined && e2e === undefined) fail(`--render: no latest.json or e2e.json in ${flags.out}`)
  if (latest !== undefined) publish("latest", "bench", formatTables(latest))
  if (e2e !== undefined) publish("e2e", "bench-e2e", formatE2e({ ...e2e, train: [], generate: [], gsm8k: [], skipped: [], tokenize: undefined, cached: undefined }))
}

if (flags.render) {
  render()
  process.exit(0)
}

main().catch((error: unknown) => {
  console.error(`bench: ${error instanceof Error ? error.message : String(error)}`)
  process.exit(1)
})
