/**
 * The `pipeline` commands. Each handler loads what it needs and returns an exit
 * code; errors are values mapped to codes by `errors.ts` (in `program.ts`).
 */
import { Args, Command, Options, Prompt } from "@effect/cli"
import { FetchHttpClient, FileSystem, Path } from "@effect/platform"
import { Config, Effect, Either, Layer, Option } from "effect"
import * as nodePath from "node:path"
import { decodeIpc } from "./arrow.ts"
import { readHead, unreadableArrow } from "./dataset.ts"
import { compareJson, compareRows, renderCompareCsv, renderCompareTable } from "./compare.ts"
import { renderDot, renderMermaid, renderText } from "./dag.ts"
import { LockError, RemoteError, StoreError, UsageError } from "./errors.ts"
import { statusOf, toJson } from "./events.ts"
import { currentManifests, pullPipeline, pushPipeline } from "./transfer.ts"
import * as Backend from "./backend/service.ts"
import * as Hub from "./hub/index.ts"
import { pipelineJsonSchema } from "./json-schema.ts"
import { describeOwnerInFull, inspectLock, removeLock } from "./lock.ts"
import { requireOneStage, shellWord } from "./matrix.ts"
import { loadPipeline } from "./pipeline.ts"
import { builtinDefinitions } from "./registry.ts"
import * as Queue from "./queue.ts"
import * as Remote from "./remote.ts"
import * as Reporter from "./reporter.ts"
import { requireSuccess, runPipeline } from "./runner.ts"
import { renderJsonl, renderTable } from "./show.ts"
import { parseOverride } from "./spec.ts"
import { pipelineStatus, renderStatus, statusJson } from "./status.ts"
import * as Store from "./store.ts"

const file = Args.text({ name: "FILE" }).pipe(Args.withDescription("The pipeline file (YAML)"))
const json = Options.boolean("json").pipe(Options.withDescription("Print one JSON object on stdout (human output stays on stderr)"))
const cacheDir = Options.text("cache-dir").pipe(
  Options.withFallbackConfig(Config.string("PIPELINE_CACHE_DIR")),
  Options.withDefault("cache"),
  Options.withDescription("The artifact store (default ./cache, or $PIPELINE_CACHE_DIR)")
)

/**
 * The remote store of a command: PIPELINE_REMOTE, else the pipeline file's `cache.remote`.
 * Provided as an optional service: commands that can do without one check for it.
 */
const remoteUrl = (pipeline?: { readonly spec: { readonly remote?: string | undefined } }): string | undefined => {
  const fromEnv = process.env.PIPELINE_REMOTE
  // PIPELINE_REMOTE=off: this machine works without the file's remote (offline, or a bucket gone).
  if (fromEnv === "off") return undefined
  return fromEnv !== undefined && fromEnv !== "" ? fromEnv : pipeline?.spec.remote
}

const provideRemote = <A, E, R>(effect: Effect.Effect<A, E, R>, url: string): Effect.Effect<A, E | UsageError, Exclude<R, Remote.RemoteStore>> =>
  Remote.fromUrl(url, process.env.PIPELINE_REMOTE ? "PIPELINE_REMOTE" : "cache.remote").pipe(
    Effect.mapError((error) => new UsageError({ message: error.message })),
    Effect.flatMap((remote) => Effect.provideService(effect, Remote.RemoteStore, remote))
  )

/** For commands that use a remote store when there is one (`Effect.serviceOption`). */
const withRemote = <A, E, R>(effect: Effect.Effect<A, E, R>, url: string | undefined): Effect.Effect<A, E | UsageError, R> =>
  url === undefined ? effect : provideRemote(effect, url) as Effect.Effect<A, E | UsageError, R>

const noRemote = (file: string) =>
  new UsageError({
    message: process.env.PIPELINE_REMOTE === "off"
      ? "PIPELINE_REMOTE=off turns the remote store off, and this command needs one: unset it"
      : `no remote store: set cache.remote: s3://BUCKET/PREFIX in ${file}, or PIPELINE_REMOTE`
  })

const requireRemote = (url: string | undefined, file: string) => (url === undefined ? Effect.fail(noRemote(file)) : Effect.succeed(url))

const queueUrl = Options.text("queue").pipe(
  Options.withFallbackConfig(Config.string("PIPELINE_QUEUE")),
  Options.optional,
  Options.withDescription("The Redis of the job queue, redis://HOST:PORT (default $PIPELINE_QUEUE)")
)

const parseQueue = (url: Option.Option<string>, flag: string) =>
  Option.match(url, {
    onNone: () => Effect.fail(new UsageError({ message: `${flag} needs --queue redis://HOST:PORT (or PIPELINE_QUEUE)` })),
    onSome: (text) => Either.match(Queue.parseQueueUrl(text), { onLeft: (why) => Effect.fail(new UsageError({ message: `--queue: ${why}` })), onRight: Effect.succeed })
  })

const BACKENDS = ["auto", "tensorflow", "wasm", "cpu"] as const
const backend = Options.choice("backend", BACKENDS).pipe(
  Options.withFallbackConfig(Config.literal(...BACKENDS)("PIPELINE_BACKEND")),
  Options.withDefault("auto" as const),
  Options.withDescription("The compute backend (default $PIPELINE_BACKEND, else auto: tensorflow, then wasm, then cpu)")
)
const threads = Options.integer("threads").pipe(
  Options.withFallbackConfig(Config.integer("PIPELINE_THREADS")),
  Options.optional,
  Options.withDescription("wasm threads, 1 or more (default $PIPELINE_THREADS, else one per core)")
)

/**
 * The compute backend of this command, from `--backend` and `--threads` (or their
 * variables): built once here and provided to what computes, which starts it on first use.
 */
const backendLayer = (choice: (typeof BACKENDS)[number], count: Option.Option<number>) =>
  Option.isSome(count) && !(count.value >= 1)
    ? Effect.fail(new UsageError({ message: `--threads ${count.value}: expected a whole number of threads, 1 or more` }))
    : Effect.succeed(Backend.layer({ backend: choice, ...(Option.isSome(count) && { threads: count.value }) }))

const storeLayer = (dir: string) =>
  Layer.unwrapEffect(Effect.map(Path.Path, (path) => Store.layer(path.resolve(dir))))

/** What stages need besides files: the store, the hub client (settings from HF_* variables) and the backend. */
const stageLayer = (dir: string, compute: Layer.Layer<Backend.ComputeBackend> = Backend.layer({ backend: "cpu" })) =>
  Layer.mergeAll(storeLayer(dir), Hub.layer.pipe(Layer.provide(FetchHttpClient.layer)), compute)

/** Where `run`, `status` and `show` remember stage modules' import graphs (see code-version.ts). */
const codeMemo = (dir: string): string => nodePath.resolve(dir, "code-graphs.json")

const stdout = (text: string) => Effect.sync(() => process.stdout.write(text.endsWith("\n") ? text : `${text}\n`))
const stderr = (text: string) => Effect.sync(() => process.stderr.write(text.endsWith("\n") ? text : `${text}\n`))

const parseOverrides = (texts: ReadonlyArray<string>) =>
  Effect.forEach(texts, (text) => Either.match(parseOverride(text), { onLeft: Effect.fail, onRight: Effect.succeed }))

/** `a,b` → a, b; a sweep's variant id keeps the commas inside its brackets: `train[lr=1e-5,r=8]`. */
const splitList = (values: ReadonlyArray<string>) => values.flatMap((v) => v.split(/,(?![^[]*\])/)).map((v) => v.trim()).filter((v) => v !== "")

const run = Command.make(
  "run",
  {
    file,
    json,
    cacheDir,
    dryRun: Options.boolean("dry-run").pipe(Options.withDescription("Say what would run, and why, without running it")),
    force: Options.text("force").pipe(Options.repeated, Options.withDescription("Re-run STAGE even if cached (repeatable, or comma-separated)")),
    only: Options.text("only").pipe(Options.optional, Options.withDescription("Run only STAGE; its upstream must already be cached")),
    until: Options.text("until").pipe(Options.optional, Options.withDescription("Run STAGE and everything it needs, nothing after it")),
    set: Options.text("set").pipe(Options.repeated, Options.withDescription("Override a param: --set STAGE.KEY=VALUE (VALUE is YAML)")),
    jobs: Options.integer("jobs").pipe(Options.withDefault(2), Options.withDescription("How many stages may run at once (here; with --executor queue, the workers decide)")),
    push: Options.boolean("push").pipe(Options.withDescription("Push each stage's entry to the remote store (cache.remote or $PIPELINE_REMOTE) once it is made or found")),
    executor: Options.choice("executor", ["local", "queue"]).pipe(
      Options.withDefault("local" as const),
      Options.withDescription("Where stages run: here, or on workers through the job queue (--queue; needs a remote store)")
    ),
    queue: queueUrl,
    backend,
    threads
  },
  (args) =>
    Effect.gen(function* () {
      const compute = yield* backendLayer(args.backend, args.threads)
      const overrides = yield* parseOverrides(args.set)
      const pipeline = yield* loadPipeline(args.file, overrides, { codeMemo: codeMemo(args.cacheDir) })
      const remote = remoteUrl(pipeline)
      // A worker's child run: the fingerprints the queuing run computed (see queue.ts).
      const expected = yield* Queue.expectedFingerprints(process.env.PIPELINE_EXPECT)
      const started = performance.now()
      const options = {
        force: splitList(args.force),
        only: Option.getOrUndefined(args.only),
        until: Option.getOrUndefined(args.until),
        dryRun: args.dryRun,
        concurrency: args.jobs,
        push: args.push,
        expect: expected
      }
      const outcomes = yield* Effect.gen(function* () {
        if (args.executor === "local") return yield* runPipeline(pipeline, options)
        const location = yield* parseQueue(args.queue, "--executor queue")
        const store = Option.getOrUndefined(yield* Effect.serviceOption(Remote.RemoteStore))
        if (store === undefined) return yield* noRemote(args.file)
        const dispatch = yield* Queue.queueDispatch(location, store, { file: pipeline.spec.file, overrides: args.set })
        return yield* runPipeline(pipeline, { ...options, dispatch })
      }).pipe(
        (effect) => withRemote(effect, remote),
        Effect.provide(Reporter.layer()),
        Effect.provide(stageLayer(args.cacheDir, compute)),
        Effect.scoped
      )
      const counts = new Map<string, number>()
      for (const outcome of outcomes) counts.set(statusOf(outcome), (counts.get(statusOf(outcome)) ?? 0) + 1)
      yield* stderr(`${pipeline.spec.name}: ${[...counts].map(([status, n]) => `${n} ${status}`).join(", ")} in ${((performance.now() - started) / 1000).toFixed(1)}s`)
      if (args.json) yield* stdout(JSON.stringify({ pipeline: pipeline.spec.name, stages: outcomes.map(toJson) }, null, 2))
      // A worker's child run: the outcome goes to the worker (stdout is the stage's to print on).
      if (process.env.PIPELINE_EVENTS === "ipc" && process.send !== undefined) {
        const send = process.send.bind(process)
        yield* Effect.async<void>((resume) => void send({ type: "result", stages: outcomes.map(toJson) }, undefined, {}, () => resume(Effect.void)))
      }
      yield* requireSuccess(outcomes)
    })
).pipe(Command.withDescription("Run the stages whose inputs changed; everything else comes from the cache"))

const status = Command.make("status", { file, json, cacheDir }, (args) =>
  Effect.gen(function* () {
    const pipeline = yield* loadPipeline(args.file, [], { codeMemo: codeMemo(args.cacheDir) })
    const statuses = yield* withRemote(pipelineStatus(pipeline), remoteUrl(pipeline)).pipe(Effect.provide(stageLayer(args.cacheDir)))
    yield* args.json
      ? stdout(JSON.stringify({ pipeline: pipeline.spec.name, stages: statusJson(statuses) }, null, 2))
      : stdout(renderStatus(statuses))
  })).pipe(Command.withDescription("For each stage: fresh or stale, and why"))

/** A cached table as text; a damaged file is a clean error that names it. */
const rendered = (file: string, render: () => string) =>
  Effect.try({
    try: render,
    catch: (cause) =>
new StoreError({ message: unreadableArrow(file, cause) })
  })

const show = Command.make(
  "show",
  {
    file,
    stage: Args.text({ name: "STAGE" }).pipe(Args.withDescription("The stage whose output to show")),
    split: Options.text("split").pipe(Options.optional, Options.withDescription("The split (default: the first)")),
    limit: Options.integer("limit").pipe(Options.withDefault(10), Options.withDescription("How many rows")),
    format: Options.choice("format", ["table", "jsonl"]).pipe(Options.withDefault("table" as const)),
    cacheDir
  },
  (args) =>
    Effect.gen(function* () {
      const pipeline = yield* loadPipeline(args.file, [], { codeMemo: codeMemo(args.cacheDir) })
      yield* requireOneStage(pipeline, args.stage, args.file)
      const statuses = yield* withRemote(pipelineStatus(pipeline), remoteUrl(pipeline)).pipe(Effect.provide(stageLayer(args.cacheDir)))
      const target = statuses.find((s) => s.id === args.stage)!
      if (target.remote === true) {
        return yield* new UsageError({ message: `stage "${args.stage}"'s output is in the remote store, not here: pipeline pull ${args.file} ${shellWord(args.stage)} fetches it` })
      }
      if (target.entry === undefined) {
        return yield* new UsageError({
          message: `stage "${args.stage}" has no cached output for the current pipeline (${target.reasons.join("; ")}). Run: pipeline run ${args.file} --until ${shellWord(args.stage)}`
        })
      }
      const dataset = target.entry.outputs.dataset
      const files = target.entry.outputs.files
      const metricsFile = files?.files.find((name) => name.endsWith(".arrow"))
      // A training stage's table is its metrics log (files/metrics.arrow); dpo's dataset
      // (its reference log-probabilities) is shown with --split.
      if (dataset === undefined || (metricsFile !== undefined && Option.isNone(args.split))) {
        if (files !== undefined && metricsFile !== undefined) {
          const fs = yield* FileSystem.FileSystem
          const where = `${files.dir}/${metricsFile}`
          const bytes = yield* fs.readFile(where).pipe(Effect.mapError((e) => new StoreError({ message: e.message })))
          return yield* stdout(yield* rendered(where, () => {
            const rows = decodeIpc(bytes)
            return args.format === "jsonl" ? renderJsonl(rows, args.limit) : renderTable(rows, args.limit)
          }))
        }
        const other = target.entry.outputs.model?.dir ?? files?.dir ?? target.entry.dir
        return yield* stdout(`stage "${args.stage}" produced no dataset; its outputs are in ${other}`)
      }
      const splits = Object.keys(dataset.splits)
      const split = Option.getOrElse(args.split, () => splits[0]!)
      if (!splits.includes(split)) {
        return yield* new UsageError({ message: `stage "${args.stage}" has no split "${split}" (splits: ${splits.join(", ")})` })
      }
      // Only the rows shown are read: a split may be larger than memory.
      const { table, rows } = yield* readHead(dataset, split, args.limit).pipe(Effect.mapError((e) => new StoreError({ message: e.message })))
      yield* stdout(yield* rendered(dataset.splits[split]!.map((f) => f.path).join(", "), () =>
        args.format === "jsonl" ? renderJsonl(table, args.limit) : renderTable(table, args.limit, rows)))
    })
).pipe(Command.withDescription("Print a stage's cached rows"))

const compare = Command.make(
  "compare",
  {
    file,
    stage: Args.text({ name: "STAGE" }).pipe(Args.optional, Args.withDescription("The swept stage whose variants to compare (default: every swept stage)")),
    format: Options.choice("format", ["table", "json", "csv"]).pipe(Options.withDefault("table" as const)),
    sort: Options.text("sort").pipe(Options.optional, Options.withDescription("The column to sort by (default eval_loss, else the first metric); -COLUMN sorts descending")),
    cacheDir
  },
  (args) =>
    Effect.gen(function* () {
      const pipeline = yield* loadPipeline(args.file, [], { codeMemo: codeMemo(args.cacheDir) })
      // The local store's entries, else the remote's manifests (a queue run leaves its entries there).
      const entries = yield* withRemote(currentManifests(pipeline), remoteUrl(pipeline)).pipe(Effect.provide(stageLayer(args.cacheDir)))
      const comparison = yield* compareRows(pipeline, (id) => entries.get(id), { stage: Option.getOrUndefined(args.stage), sort: Option.getOrUndefined(args.sort) })
      if (comparison.missing.length > 0) {
        yield* stderr(`no metrics yet for ${comparison.missing.join(", ")} (never run, or stale): pipeline run ${args.file} makes them`)
      }
      yield* stdout(
        args.format === "json" ? JSON.stringify(compareJson(comparison), null, 2) : args.format === "csv" ? renderCompareCsv(comparison) : renderCompareTable(comparison)
      )
    })
).pipe(Command.withDescription("Tabulate a sweep's variants: the params each sets and the metrics each reported, sorted (like dvc exp show)"))

const dag = Command.make(
  "dag",
  { file, format: Options.choice("format", ["text", "mermaid", "dot"]).pipe(Options.withDefault("text" as const)) },
  (args) =>
    Effect.gen(function* () {
      const pipeline = yield* loadPipeline(args.file)
      const render = { text: renderText, mermaid: renderMermaid, dot: renderDot }[args.format]
      yield* stdout(render(pipeline.stages))
    })
).pipe(Command.withDescription("Print the stage graph"))

const formatBytes = (bytes: number): string => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}

const gc = Command.make(
  "gc",
  {
    cacheDir,
    json,
    dryRun: Options.boolean("dry-run").pipe(Options.withDescription("Report what would be removed")),
    remote: Options.boolean("remote").pipe(
      Options.withDescription("Clean the remote store ($PIPELINE_REMOTE, or FILE's cache.remote) instead: remove the entries no pushed run record names")
    ),
    graceHours: Options.float("grace-hours").pipe(
      Options.withDefault(24),
      Options.withDescription("With --remote: keep entries pushed in the last N hours, which a run in progress may not have recorded yet (default 24)")
    ),
    file: Args.text({ name: "FILE" }).pipe(Args.optional, Args.withDescription("With --remote: the pipeline file whose cache.remote to clean"))
  },
  (args) =>
    Effect.gen(function* () {
      if (args.remote) {
        const pipeline = Option.isSome(args.file) ? yield* loadPipeline(args.file.value) : undefined
        const url = yield* requireRemote(remoteUrl(pipeline), Option.getOrElse(args.file, () => "the pipeline file"))
        const remote = yield* Remote.fromUrl(url).pipe(Effect.mapError((e) => new UsageError({ message: e.message })))
        const report = yield* remote.gc({ dryRun: args.dryRun, graceMs: args.graceHours * 3600 * 1000 })
        const verb = args.dryRun ? "would remove" : "removed"
        yield* stderr(`${url}: ${verb} ${report.removedEntries} entr${report.removedEntries === 1 ? "y" : "ies"} and ${report.removedWork} work folder(s) (${formatBytes(report.bytesFreed)}), kept ${report.keptEntries}`)
        if (args.json) yield* stdout(JSON.stringify(report))
        return
      }
      if (Option.isSome(args.file)) return yield* new UsageError({ message: "pipeline gc cleans the whole local cache: FILE is for --remote" })
      const store = yield* Store.ArtifactStore
      yield* store.lock("pipeline gc")
      const report = yield* store.gc({ dryRun: args.dryRun })
      const verb = args.dryRun ? "would remove" : "removed"
      yield* stderr(`${verb} ${report.removedEntries} entr${report.removedEntries === 1 ? "y" : "ies"} (${formatBytes(report.bytesFreed)}), kept ${report.keptEntries}`)
      if (report.removedWork > 0) yield* stderr(`${verb} ${report.removedWork} work folder(s) of interrupted runs older than a week`)
      for (const forgotten of report.forgottenRuns) yield* stderr(`  forgot the runs of ${forgotten} (the file is gone)`)
      if (args.json) yield* stdout(JSON.stringify(report))
    }).pipe(Effect.scoped, Effect.provide(storeLayer(args.cacheDir)))
).pipe(Command.withDescription("Remove cache entries that no pipeline's latest run references"))

const stageNames = Args.text({ name: "STAGE" }).pipe(Args.repeated, Args.withDescription("Only these stages (a swept stage's id names all its variants); default all"))

const transferCommand = (name: "push" | "pull") =>
  Command.make(name, { file, stages: stageNames, cacheDir, json }, (args) =>
    Effect.gen(function* () {
      const pipeline = yield* loadPipeline(args.file, [], { codeMemo: codeMemo(args.cacheDir) })
      const url = yield* requireRemote(remoteUrl(pipeline), args.file)
      const store = yield* Store.ArtifactStore
      if (name === "pull") yield* store.lock("pipeline pull")
      const lines = yield* provideRemote(name === "push" ? pushPipeline(pipeline, args.stages) : pullPipeline(pipeline, args.stages), url)
      for (const line of lines) {
        const mark = line.result === "missing" ? "✖" : line.result === "here" || line.result === "present" ? "•" : "✔"
        const what = { pushed: "pushed", pulled: "pulled", present: "already in the remote", here: "already here", missing: "not " + (name === "push" ? "pushed" : "pulled") }[line.result]
        yield* stderr(`${mark} ${line.id}: ${what}${line.detail === undefined ? "" : ` (${line.detail})`}`)
      }
      const missing = lines.filter((l) => l.result === "missing")
      const moved = lines.filter((l) => l.result === "pushed" || l.result === "pulled").length
      yield* stderr(`${pipeline.spec.name}: ${moved} ${name === "push" ? "pushed to" : "pulled from"} ${url}, ${lines.length - moved - missing.length} already there${missing.length > 0 ? `, ${missing.length} missing` : ""}`)
      if (args.json) yield* stdout(JSON.stringify({ pipeline: pipeline.spec.name, remote: url, stages: lines }, null, 2))
      if (missing.length > 0) {
        return yield* new RemoteError({ message: `${missing.length} stage(s) not ${name === "push" ? "pushed" : "pulled"}: ${missing.map((l) => l.id).join(", ")}` })
      }
    }).pipe(Effect.provide(Reporter.layer()), Effect.scoped, Effect.provide(stageLayer(args.cacheDir))))

const push = transferCommand("push").pipe(
  Command.withDescription("Upload the pipeline's current entries to the remote store (cache.remote or $PIPELINE_REMOTE), manifests last")
)
const pull = transferCommand("pull").pipe(
  Command.withDescription("Download the pipeline's current entries from the remote store, each file checked against its manifest")
)

const worker = Command.make(
  "worker",
  {
    queue: queueUrl,
    concurrency: Options.integer("concurrency").pipe(Options.withDefault(1), Options.withDescription("How many stages this worker runs at once")),
    cacheDir: Options.text("cache-dir").pipe(
      Options.withFallbackConfig(Config.string("PIPELINE_CACHE_DIR")),
      Options.withDefault("cache/worker"),
      Options.withDescription("The worker's local store (one per concurrent stage inside it; default ./cache/worker)")
    ),
    stallSeconds: Options.integer("stall-seconds").pipe(
      Options.withDefault(30),
      Options.withDescription("How long a stage's job stays with a worker that stops answering (killed, cut off) before another worker takes it")
    ),
    backend,
    threads
  },
  (args) =>
    Effect.gen(function* () {
      const location = yield* parseQueue(args.queue, "pipeline worker")
      if (args.concurrency < 1) return yield* new UsageError({ message: `--concurrency ${args.concurrency}: expected 1 or more` })
      if (args.stallSeconds < 2) return yield* new UsageError({ message: `--stall-seconds ${args.stallSeconds}: expected 2 or more` })
      const path = yield* Path.Path
      yield* Queue.runWorker({
        queue: location,
        concurrency: args.concurrency,
        cacheDir: path.resolve(args.cacheDir),
        stallMs: args.stallSeconds * 1000,
        runArgs: [
          ...(args.backend === "auto" ? [] : ["--backend", args.backend]),
          ...(Option.isSome(args.threads) ? ["--threads", String(args.threads.value)] : [])
        ],
        log: (line) => process.stderr.write(`${line}\n`)
      })
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("Run stages queued by `pipeline run --executor queue` (Redis at --queue), pulling inputs from and pushing outputs to the remote store"))

const verify = Command.make(
  "verify",
  {
    cacheDir,
    json,
    repair: Options.boolean("repair").pipe(Options.withDescription("Remove the damaged entries (the next run rebuilds them)"))
  },
  (args) =>
    Effect.gen(function* () {
      const store = yield* Store.ArtifactStore
      if (args.repair) yield* store.lock("pipeline verify --repair")
      const report = yield* store.verifyAll({ repair: args.repair })
      for (const entry of report.damaged) {
        const owner = entry.stage === undefined ? "" : ` (${entry.pipeline}: ${entry.stage})`
        yield* stderr(`damaged ${entry.fingerprint.slice(0, 12)}${owner}: ${entry.reason}${args.repair ? ": removed" : ""}`)
      }
      yield* stderr(`checked ${report.checked} entr${report.checked === 1 ? "y" : "ies"} (${formatBytes(report.bytes)}): ${report.damaged.length === 0 ? "all intact" : `${report.damaged.length} damaged${args.repair ? ", removed; the next run rebuilds them" : "; run pipeline verify --repair to remove them"}`}`)
      if (args.json) yield* stdout(JSON.stringify(report))
      if (report.damaged.length > 0 && !args.repair) return yield* new StoreError({ message: `${report.damaged.length} damaged cache entr${report.damaged.length === 1 ? "y" : "ies"}` })
    }).pipe(Effect.scoped, Effect.provide(storeLayer(args.cacheDir)))
).pipe(Command.withDescription("Re-hash every cache entry against its manifest (like git fsck); exit 1 if any is damaged"))

const generate = Command.make(
  "generate",
  {
    model: Options.text("model").pipe(Options.withDescription("A Hugging Face–format model folder, or a hub id (Qwen/Qwen2.5-0.5B)")),
    prompt: Options.text("prompt").pipe(Options.withDescription("The text to continue")),
    maxNewTokens: Options.integer("max-new-tokens").pipe(Options.withDefault(128), Options.withDescription("Most tokens to generate")),
    sample: Options.boolean("sample").pipe(Options.withDescription("Sample instead of greedy decoding (do_sample=True)")),
    temperature: Options.float("temperature").pipe(Options.optional, Options.withDescription("With --sample: divides the logits (default 1)")),
    topK: Options.integer("top-k").pipe(Options.optional, Options.withDescription("With --sample: keep the k most likely tokens, 0 for all (default 50)")),
    topP: Options.float("top-p").pipe(Options.optional, Options.withDescription("With --sample: nucleus sampling threshold (default 1)")),
    seed: Options.integer("seed").pipe(Options.optional, Options.withDescription("With --sample: the sampler's seed (default 0)")),
    stop: Options.text("stop").pipe(Options.repeated, Options.withDescription("Stop once the continuation contains this text (repeatable)")),
    noCache: Options.boolean("no-cache").pipe(Options.withDescription("Recompute the whole sequence at each step instead of using the KV cache (slower; the same tokens)")),
    backend,
    threads
  },
  (args) =>
    Effect.gen(function* () {
      const compute = yield* backendLayer(args.backend, args.threads)
      const sampling = { temperature: args.temperature, "top-k": args.topK, "top-p": args.topP, seed: args.seed }
      const ignored = Object.entries(sampling).filter(([, value]) => Option.isSome(value)).map(([name]) => `--${name}`)
      if (!args.sample && ignored.length > 0) yield* stderr(`${ignored.join(", ")} ignored without --sample (greedy decoding)`)
      const { generateCommand } = yield* Effect.promise(() => import("./eval/generate-command.ts"))
      yield* generateCommand({
        model: args.model,
        prompt: args.prompt,
        options: {
          maxNewTokens: args.maxNewTokens,
          doSample: args.sample,
          temperature: Option.getOrUndefined(args.temperature),
          topK: Option.getOrUndefined(args.topK),
          topP: Option.getOrUndefined(args.topP),
          seed: Option.getOrUndefined(args.seed),
          stop: args.stop,
          batchSize: 1,
          useCache: !args.noCache
        }
      }).pipe(Effect.provide(Layer.merge(Hub.layer.pipe(Layer.provide(FetchHttpClient.layer)), compute)))
    })
).pipe(Command.withDescription("Continue a prompt with a model, as the generate stage does (the continuation on stdout)"))

const unlock = Command.make(
  "unlock",
  {
    cacheDir,
    yes: Options.boolean("yes").pipe(Options.withAlias("y"), Options.withDescription("Remove the lock without asking"))
  },
  (args) =>
    Effect.gen(function* () {
      const path = yield* Path.Path
      const root = path.resolve(args.cacheDir)
      const lockFile = path.join(root, "lock")
      const lock = yield* inspectLock(lockFile)
      if (lock === undefined) return yield* stderr(`the cache ${root} is not locked`)
      if (lock.owner === undefined || lock.state === undefined) {
        yield* stderr(`${lockFile} names no holder (it holds ${JSON.stringify(lock.text.slice(0, 120))}): it is stale`)
      } else {
        yield* stderr(`${lockFile} is held by:\n${describeOwnerInFull(lock.owner, lock.state)}`)
        if (lock.state._tag === "Running") {
          return yield* new LockError({
            message: `pid ${lock.owner.pid} is a pipeline running on this host: wait for it to finish, or stop it (Ctrl-C, or kill ${lock.owner.pid}: finished stages stay cached). pipeline unlock does not remove a running pipeline's lock.`
          })
        }
      }
      if (!args.yes) {
        if (!process.stdin.isTTY || !process.stdout.isTTY) {
          return yield* new UsageError({ message: `not removing the lock without a terminal to ask on: run pipeline unlock --yes${args.cacheDir === "cache" ? "" : ` --cache-dir ${args.cacheDir}`} to remove it` })
        }
        const confirmed = yield* Prompt.confirm({ message: `Remove ${lockFile}?`, initial: false }).pipe(
          Effect.catchTag("QuitException", () => Effect.succeed(false))
        )
        if (!confirmed) return yield* new LockError({ message: `kept ${lockFile}` })
      }
      yield* removeLock(lockFile, lock.text)
      yield* stderr(`removed ${lockFile}`)
    })
).pipe(Command.withDescription("Show who holds the cache lock and, if that process is gone, remove the lock (asks first; --yes to skip)"))

const ui = Command.make(
  "ui",
  {
    file,
    cacheDir,
    set: Options.text("set").pipe(Options.repeated, Options.withDescription("Override a param, as in run: --set STAGE.KEY=VALUE")),
    port: Options.integer("port").pipe(Options.withDefault(4321), Options.withDescription("The port (default 4321; 0 picks a free one)")),
    host: Options.text("host").pipe(Options.withDefault("127.0.0.1"), Options.withDescription("The interface to listen on (default 127.0.0.1: this machine only)")),
    open: Options.boolean("open").pipe(Options.withDescription("Open the page in the default browser"))
  },
  (args) =>
    Effect.gen(function* () {
      if (args.port < 0 || args.port > 65535) return yield* new UsageError({ message: `--port ${args.port}: expected 0 to 65535` })
      const overrides = yield* parseOverrides(args.set)
      const { serve } = yield* Effect.promise(() => import("./ui/server.ts"))
      const path = yield* Path.Path
      return yield* serve({
        file: args.file,
        overrides,
        cacheDir: path.resolve(args.cacheDir),
        host: args.host,
        port: args.port,
        codeMemo: codeMemo(args.cacheDir),
        open: args.open
      }).pipe(Effect.provide(stageLayer(args.cacheDir)))
    })
).pipe(Command.withDescription("Serve a local page of the pipeline: its stages and their state, curves, evaluation examples; run from it"))

const schema = Command.make("schema", {}, () =>
  Effect.gen(function* () {
    const definitions = yield* builtinDefinitions.pipe(
      Effect.mapError((e) => new UsageError({ message: e.message }))
    )
    yield* stdout(JSON.stringify(pipelineJsonSchema(definitions), null, 2))
  })).pipe(Command.withDescription("Print the JSON Schema of pipeline files (for yaml-language-server)"))

const command = Command.make("pipeline").pipe(
  Command.withDescription("A declarative, cached pipeline for fine-tuning language models"),
  Command.withSubcommands([run, status, show, dag, generate, push, pull, worker, gc, verify, unlock, schema, compare, ui])
)

export const cli = Command.run(command, { name: "pipeline", version: "0.1.0" })
