/**
 * Runs a pipeline: stages start as soon as their upstream stages are done,
 * at most `concurrency` at a time. Each stage is fingerprinted, looked up in the
 * store, and run only when its entry is missing, damaged or forced. Everything
 * downstream of a failure is skipped (DVC's `reproduce`); independent branches
 * go on. An interrupted run leaves its finished stages cached.
 */
import { FileSystem, Path } from "@effect/platform"
import { Cause, Deferred, Effect, Option, Stream } from "effect"
import { createHash } from "node:crypto"
import { kindsOf } from "./artifact.ts"
import { ancestorsOf } from "./dag.ts"
import { describeStageIds, resolveStageIds } from "./matrix.ts"
import { RemoteError, RunFailed, StageError, UsageError } from "./errors.ts"
import { StageOutcome, statusOf, type Where } from "./events.ts"
import { ENGINE_VERSION, explainChange, type FingerprintMaterial, fingerprintOf } from "./fingerprint.ts"
import type { Pipeline, ResolvedStage } from "./pipeline.ts"
import { Reporter, type ReporterService } from "./reporter.ts"
import type { CachedPart, StageContext } from "./stage.ts"
import { RemoteStore, type RemoteStoreService, type TransferProgress } from "./remote.ts"
import { ArtifactStore, type ArtifactStoreService, type Entry, type LiveRun, type Lookup, type Manifest } from "./store.ts"

export interface RunOptions {
  readonly force: ReadonlyArray<string>
  readonly only?: string | undefined
  readonly until?: string | undefined
  readonly dryRun: boolean
  readonly concurrency: number
  /** Push every entry this run makes or finds to the remote store (`--push`). */
  readonly push?: boolean
  /** Run stages elsewhere (the queue executor's workers) instead of here; needs a remote store. */
  readonly dispatch?: StageDispatch
  /** A worker's check: the fingerprints the run that queued its stage computed, by stage id (PIPELINE_EXPECT). */
  readonly expect?: Readonly<Record<string, string>> | undefined
}

/** Runs a stage on another machine; its entry is then in the remote store. */
export interface StageDispatch {
  readonly run: (
    stage: ResolvedStage,
    fingerprint: string,
    reason: string,
    context: {
      /** The fingerprints of the stages it needs, by id: a worker checks its copy gives the same. */
      readonly upstream: Readonly<Record<string, string>>
      readonly force: boolean
    }
  ) => Effect.Effect<{ readonly manifest: Manifest; readonly worker: string; readonly durationMs: number }, StageError>
}

/** An entry that stays in the remote store (a queue run's coordinator never fetches data): its outputs as s3:// addresses. */
export const remoteEntry = (remote: RemoteStoreService, manifest: Manifest): Entry => {
  const dir = `${remote.location.url}entries/${manifest.fingerprint}`
  const at = (p: string) => (p === "." ? dir : `${dir}/${p}`)
  const { dataset, model, files } = manifest.outputs
  return {
    dir,
    manifest,
    outputs: {
      ...(dataset && { dataset: { kind: "dataset", splits: Object.fromEntries(Object.entries(dataset.splits).map(([split, list]) => [split, list.map((f) => ({ path: at(f.path), rows: f.rows }))])) } }),
      ...(model && { model: { kind: "model", dir: at(model.dir) } }),
      ...(files && { files: { kind: "files", dir: at(files.dir), files: files.files } })
    }
  }
}

/** A transfer's progress as a stage's progress (files, with bytes), at most five times a second. */
export const transferProgress = (reporter: ReporterService, id: string, unit: string): TransferProgress => {
  let last = 0
  return ({ files, totalFiles, bytes, totalBytes }) => {
    const now = Date.now()
    if (now - last < 200 && files < totalFiles) return
    last = now
    Effect.runSync(reporter.progress(id, { done: files, total: totalFiles, unit, bytes: { done: bytes, total: totalBytes } }))
  }
}

/** The material of a stage whose upstream entries are known. */
export const computeMaterial = (pipeline: Pipeline, stage: ResolvedStage, upstream: ReadonlyMap<string, Entry>) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const files: Record<string, string> = {}
    const inputFiles = stage.impl.definition.inputFiles
    if (inputFiles) {
      for (const file of yield* inputFiles(stage.params, pipeline.spec.baseDir)) {
        const hash = yield* fs.stream(file).pipe(
          Stream.runFold(createHash("sha256"), (h, chunk) => h.update(chunk)),
          Effect.map((h) => h.digest("hex")),
          Effect.mapError((e) => new StageError({ message: `cannot read input file ${file}: ${e.message}` }))
        )
        files[path.relative(pipeline.spec.baseDir, file).split(path.sep).join("/")] = hash
      }
    }
    const external = stage.impl.definition.externalInputs
      ? yield* stage.impl.definition.externalInputs(stage.params, pipeline.spec.baseDir)
      : {}
    return {
      engine: ENGINE_VERSION,
      stage: stage.impl.identity,
      code: stage.impl.codeVersion,
      sources: {
        ...stage.impl.code.files,
        ...Object.fromEntries(Object.entries(stage.impl.code.packages).map(([name, version]) => [`npm:${name}`, version]))
      },
      params: stage.recordedParams,
      // By the upstream stage's own id, a sweep's variant by its base id: a stage below a
      // sweep has the fingerprint it would have below the same stage unswept.
      inputs: Object.fromEntries(stage.needs.map((need) => [baseIdOf(pipeline, need), upstream.get(need)!.manifest.outputDigest])),
      files,
      external
    } satisfies FingerprintMaterial
  })

const baseIdOf = (pipeline: Pipeline, id: string): string => pipeline.stages.find((s) => s.id === id)?.variant?.base ?? id

const checkSelection = (pipeline: Pipeline, options: RunOptions) => {
  for (const [flag, id] of [["--only", options.only], ["--until", options.until], ...options.force.map((f) => ["--force", f] as const)] as const) {
    if (id !== undefined && resolveStageIds(pipeline, id) === undefined) {
      return Effect.fail(new UsageError({ message: `${flag} ${id}: there is no stage "${id}" in this pipeline (stages: ${describeStageIds(pipeline)})` }))
    }
  }
  return Effect.void
}

export const formatAge = (ms: number): string => {
  const seconds = Math.max(0, ms / 1000)
  if (seconds < 90) return `${Math.round(seconds)}s`
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)}h`
  return `${Math.round(seconds / 86400)}d`
}

/** A hit older than the stage's max age counts as expired: web data goes stale. */
export const expire = (stage: ResolvedStage, found: Lookup): Lookup => {
  const maxAge = stage.impl.definition.maxAgeMs?.(stage.params)
  if (found._tag !== "Hit" || maxAge === undefined) return found
  const age = Date.now() - Date.parse(found.entry.manifest.createdAt)
  return age <= maxAge ? found : { _tag: "Expired", reason: `the cached output is ${formatAge(age)} old (max_age ${formatAge(maxAge)})` }
}

/** Which stages this run may execute; the rest are only looked up. A swept stage's base id selects all its variants. */
const selectedStages = (pipeline: Pipeline, options: RunOptions): ReadonlySet<string> => {
  if (options.only !== undefined) return new Set(resolveStageIds(pipeline, options.only))
  if (options.until !== undefined) return ancestorsOf(pipeline.stages, ...resolveStageIds(pipeline, options.until) ?? [])
  return new Set(pipeline.stages.map((s) => s.id))
}

interface Settled {
  readonly outcome: StageOutcome
  readonly entry: Entry | undefined
  /** Not cached, and not run because --only left it out. */
  readonly uncachedOutsideSelection?: boolean
  /** Why its entry could not be had, when the remote store had a bad one. */
  readonly unavailable?: string
}

export const runPipeline = (pipeline: Pipeline, options: RunOptions) =>
  Effect.gen(function* () {
    yield* checkSelection(pipeline, options)
    const store = yield* ArtifactStore
    const startedAt = new Date().toISOString()
    const finished: Array<StageOutcome> = []
    const reporter = options.dryRun ? yield* Reporter : tracked(yield* Reporter, store, pipeline.spec.file, startedAt, finished)
    const remote = Option.getOrUndefined(yield* Effect.serviceOption(RemoteStore))
    if (remote === undefined && (options.dispatch !== undefined || options.push === true)) {
      return yield* new UsageError({
        message: `${options.dispatch !== undefined ? "--executor queue" : "--push"} needs a remote store: ${
          process.env.PIPELINE_REMOTE === "off" ? "PIPELINE_REMOTE=off turns it off; unset it" : `set cache.remote: s3://BUCKET/PREFIX in ${pipeline.spec.file}, or PIPELINE_REMOTE`
        }`
      })
    }
    if (!options.dryRun) yield* store.lock(`pipeline run ${pipeline.spec.name}`)
    const record = yield* store.readRun(pipeline.spec.file)
    const selected = selectedStages(pipeline, options)
    const wanted = options.only !== undefined ? ancestorsOf(pipeline.stages, ...selected) : selected
    const forcedIds = new Set(options.force.flatMap((id) => resolveStageIds(pipeline, id) ?? []))
    const semaphore = yield* Effect.makeSemaphore(Math.max(1, options.concurrency))
    const inFlight = new Map<string, Deferred.Deferred<{ readonly id: string; readonly entry: Entry | undefined }>>()
    const done = new Map<string, Deferred.Deferred<Settled>>()
    for (const stage of pipeline.stages) done.set(stage.id, yield* Deferred.make<Settled>())

    const settle = (stage: ResolvedStage) =>
      Effect.gen(function* () {
        const upstream = new Map<string, Entry>()
        for (const need of stage.needs) {
          const settled = yield* Deferred.await(done.get(need)!)
          if (settled.entry === undefined) {
            if (settled.outcome._tag === "WouldRun") {
              return { outcome: StageOutcome.WouldRun({ id: stage.id, fingerprint: undefined, reason: `upstream \`${need}\` would run first` }), entry: undefined }
            }
            if (settled.uncachedOutsideSelection && selected.has(stage.id)) {
              return {
                outcome: StageOutcome.Failed({
                  id: stage.id,
                  fingerprint: undefined,
                  reason: `upstream \`${need}\` is not cached${settled.unavailable === undefined ? "" : ` (${settled.unavailable})`}: run it first, or run without --only`,
                  durationMs: 0
                }),
                entry: undefined
              }
            }
            const why = settled.outcome._tag === "Failed" ? "failed" : "was skipped"
            return { outcome: StageOutcome.Skipped({ id: stage.id, reason: `upstream \`${need}\` ${why}` }), entry: undefined }
          }
          upstream.set(need, settled.entry)
        }
        return yield* assessAndRun(stage, upstream)
      })

    const assessAndRun = (stage: ResolvedStage, upstream: ReadonlyMap<string, Entry>) =>
      Effect.gen(function* () {
        const material = yield* computeMaterial(pipeline, stage, upstream)
        const fingerprint = fingerprintOf(material)
        const expected = options.expect?.[stage.id]
        if (expected !== undefined && expected !== fingerprint) {
          return {
            outcome: StageOutcome.Failed({
              id: stage.id,
              fingerprint,
              reason: `this worker's copy of the pipeline gives ${stage.id} the fingerprint ${fingerprint.slice(0, 12)}, the run that queued it ${expected.slice(0, 12)}: the pipeline file, a stage's code or an input file differs here; give workers the same checkout`,
              durationMs: 0
            }),
            entry: undefined
          } satisfies Settled
        }
        const forced = forcedIds.has(stage.id)
        const local = forced ? { _tag: "Miss" as const } : expire(stage, yield* store.lookup(fingerprint))
        // A worker's run follows the remote, where the run that queued it reads: a stage
        // this worker's cache holds with other bytes than the remote's is taken from there.
        const stale = local._tag === "Hit" && options.expect !== undefined && remote !== undefined && !forced
          ? yield* remote.lookup(fingerprint).pipe(Effect.map((theirs) => theirs._tag === "Found" && theirs.manifest.outputDigest !== local.entry.manifest.outputDigest))
          : false
        const { found, where, replaceRemote, unavailable } = (local._tag === "Hit" && !stale) || forced || remote === undefined
          ? { found: local, where: {} as Where, replaceRemote: false, unavailable: undefined }
          : yield* fromRemote(remote, stage, fingerprint, stale ? { _tag: "Miss" } : local)
        if (found._tag === "Hit") {
          // With --push, what the remote lacks is sent there too; a queue run sends its
          // local entries there, where the workers read them.
          const pushed = (options.push === true || options.dispatch !== undefined) && remote !== undefined && where.remote === undefined && !options.dryRun
            ? yield* pushWithParts(remote, stage, found.entry, false)
            : undefined
          const entry = pushed?.entry ?? found.entry
          if (selected.has(stage.id)) yield* remember(stage.id, fingerprint, material, entry)
          return {
            outcome: StageOutcome.Cached({
              id: stage.id,
              fingerprint,
              reason: "up to date",
              entryDir: entry.dir,
              outputs: entry.outputs,
              metrics: entry.manifest.metrics,
              where: pushed?.result === "pushed" ? { ...where, remote: "pushed" } : where
            }),
            entry
          }
        }
        if (!selected.has(stage.id)) {
          return {
            outcome: StageOutcome.Skipped({ id: stage.id, reason: `not cached, and --only ${options.only} does not run it` }),
            entry: undefined,
            uncachedOutsideSelection: true,
            ...(unavailable !== undefined && { unavailable })
          }
        }
        const reason = forced
          ? "forced"
          : found._tag === "Damaged" || found._tag === "Expired"
          ? found.reason
          : explainChange(record?.stages[stage.id]?.material, material).join("; ") || "no cached entry"
        if (options.dryRun) {
          return { outcome: StageOutcome.WouldRun({ id: stage.id, fingerprint, reason }), entry: undefined }
        }
        // Stages that share a fingerprint (variants of a sweep over a param that is not
        // fingerprinted) run once: the others wait for its entry.
        const running = inFlight.get(fingerprint)
        if (running !== undefined) {
          const { id, entry } = yield* Deferred.await(running)
          if (entry === undefined) {
            return { outcome: StageOutcome.Failed({ id: stage.id, fingerprint, reason: `it is the same work as ${id} (the same fingerprint), which failed`, durationMs: 0 }), entry: undefined } satisfies Settled
          }
          if (selected.has(stage.id)) yield* remember(stage.id, fingerprint, material, entry)
          return {
            outcome: StageOutcome.Cached({ id: stage.id, fingerprint, reason: `the same work as ${id}, made by it in this run`, entryDir: entry.dir, outputs: entry.outputs, metrics: entry.manifest.metrics }),
            entry
          } satisfies Settled
        }
        const made = yield* Deferred.make<{ readonly id: string; readonly entry: Entry | undefined }>()
        inFlight.set(fingerprint, made)
        const work = options.dispatch !== undefined
          ? dispatch(options.dispatch, stage, material, fingerprint, reason, {
            upstream: Object.fromEntries(stage.needs.map((need) => [need, upstream.get(need)!.manifest.fingerprint])),
            force: forced
          })
          : semaphore.withPermits(1)(execute(stage, upstream, material, fingerprint, reason, replaceRemote))
        return yield* work.pipe(
          Effect.tap((settled) => Deferred.succeed(made, { id: stage.id, entry: settled.entry })),
          Effect.onInterrupt(() => Deferred.succeed(made, { id: stage.id, entry: undefined }))
        )
      })

    /** An entry and the parts it was made with (DPO's reference log-probabilities), to the remote. */
    const pushWithParts = (remote: RemoteStoreService, stage: ResolvedStage, entry: Entry, replace: boolean) =>
      Effect.gen(function* () {
        for (const part of entry.manifest.parts) {
          const found = yield* store.lookup(part)
          if (found._tag === "Hit") yield* remote.push(found.entry)
        }
        const result = yield* remote.push(entry, { replace, progress: pushProgress(stage.id) })
        if (result === "pushed") return { result, entry }
        // The remote had this fingerprint already. Made elsewhere with other bytes (a
        // training's timings), its entry is the one everyone's later stages are keyed by:
        // this machine uses it too.
        const theirs = yield* remote.lookup(entry.manifest.fingerprint)
        if (theirs._tag !== "Found" || theirs.manifest.outputDigest === entry.manifest.outputDigest) return { result, entry }
        yield* reporter.log(stage.id, `the remote has this stage's entry already, made elsewhere with other bytes: using it, so that the stages after it share fingerprints with every machine's`)
        const adopted = yield* fromRemote(remote, stage, entry.manifest.fingerprint, { _tag: "Miss" })
        return { result, entry: adopted.found._tag === "Hit" ? adopted.found.entry : entry }
      })

    /** Whether this run needs a stage's data, or only its digest (to fingerprint what follows). */
    const needsData = (id: string) =>
      options.dispatch === undefined && (selected.has(id) || pipeline.stages.some((s) => selected.has(s.id) && s.needs.includes(id)))

    const pushProgress = (id: string) => transferProgress(reporter, id, "files pushed")

    /**
     * The remote store's entry, when the local store has none: fetched (the log says so),
     * or, for a queue run's coordinator, only found. A damaged remote entry is reported
     * and never used; the stage runs, and a push replaces it.
     */
    const fromRemote = (remote: RemoteStoreService, stage: ResolvedStage, fingerprint: string, local: Lookup) =>
      Effect.gen(function* () {
        const none = { found: local, where: {} as Where, replaceRemote: false, unavailable: undefined as string | undefined }
        const looked = yield* remote.lookup(fingerprint)
        if (looked._tag === "Miss") return none
        if (looked._tag === "Damaged") {
          yield* reporter.log(stage.id, looked.reason)
          return { ...none, replaceRemote: true }
        }
        const manifest = looked.manifest
        const aged = expire(stage, { _tag: "Hit", entry: remoteEntry(remote, manifest) })
        if (aged._tag !== "Hit") return { ...none, found: aged }
        // A queue run, a dry run, and `--only` for what lies above the stages it runs need only the digest.
        if (options.dryRun || !needsData(stage.id)) return { ...none, found: aged, where: { remote: "remote" } as Where }
        const bytes = Object.values(manifest.contents).reduce((sum, f) => sum + f.bytes, 0)
        yield* reporter.log(stage.id, `pulling from ${remote.location.url} (${Object.keys(manifest.contents).length} file(s), ${(bytes / 1e6).toFixed(1)} MB)`)
        const progress = transferProgress(reporter, stage.id, "files pulled")
        const pulled = yield* remote.pull(manifest, progress).pipe(Effect.either)
        if (pulled._tag === "Left") {
          // A network or server failure fails the stage (run again); re-running it here
          // could take hours, and would replace a good entry.
          if (pulled.left.corrupt !== true) return yield* new RemoteError({ message: `${pulled.left.message}; run again` })
          // A bad object: reported, never used; the stage runs here instead.
          yield* reporter.log(stage.id, `${pulled.left.message}: not used`)
          return { ...none, replaceRemote: true, unavailable: pulled.left.message }
        }
        return { ...none, found: { _tag: "Hit", entry: pulled.right } as Lookup, where: { remote: "pulled" } as Where }
      })

    /** The queue executor: the stage runs on a worker, which pushes its entry; the run goes on from its manifest. */
    const dispatch = (to: StageDispatch, stage: ResolvedStage, material: FingerprintMaterial, fingerprint: string, reason: string, context: Parameters<StageDispatch["run"]>[3]) =>
      Effect.gen(function* () {
        const started = performance.now()
        yield* reporter.started(stage.id, `${reason}; queued`)
        const result = yield* to.run(stage, fingerprint, reason, context).pipe(Effect.either)
        if (result._tag === "Left") {
          return {
            outcome: StageOutcome.Failed({ id: stage.id, fingerprint, reason: result.left.message, durationMs: performance.now() - started }),
            entry: undefined
          } satisfies Settled
        }
        const entry = remoteEntry(remote!, result.right.manifest)
        yield* remember(stage.id, fingerprint, material, entry)
        return {
          outcome: StageOutcome.Ran({
            id: stage.id,
            fingerprint,
            reason,
            durationMs: result.right.durationMs,
            entryDir: entry.dir,
            outputs: entry.outputs,
            metrics: entry.manifest.metrics,
            where: { worker: result.right.worker, remote: "pushed" }
          }),
          entry
        } satisfies Settled
      })

    /** The run record names the parts (`cachedPart`) each entry was made with, from its manifest, so gc keeps them. */
    const remember = (id: string, fingerprint: string, material: FingerprintMaterial, entry: Entry, parts: ReadonlyArray<string> = entry.manifest.parts) =>
      options.dryRun
        ? Effect.void
        : store.recordStage(pipeline.spec.file, pipeline.spec.name, id, {
          fingerprint,
          material,
          outputDigest: entry.manifest.outputDigest,
          finishedAt: new Date().toISOString(),
          ...(parts.length > 0 && { parts: [...new Set(parts)] })
        })

    /** A stage's part, cached as an entry of its own: its material is the stage's with only `params` kept. */
    const cachedPart = (stage: ResolvedStage, material: FingerprintMaterial, used: Array<string>, forced: boolean) =>
      <R>(name: string, params: ReadonlyArray<string>, produce: (outDir: string) => Effect.Effect<CachedPart["outputs"], StageError, R>): Effect.Effect<CachedPart, StageError, R> =>
        Effect.gen(function* () {
          if (!/^[a-z][a-z0-9-]*$/.test(name)) return yield* new StageError({ message: `a cached part's name must be lowercase letters, digits and "-": got "${name}"` })
          const partMaterial: FingerprintMaterial = {
            ...material,
            stage: `${material.stage}#${name}`,
            params: Object.fromEntries(params.filter((key) => Object.hasOwn(material.params, key)).sort().map((key) => [key, material.params[key]]))
          }
          const fingerprint = fingerprintOf(partMaterial)
          used.push(fingerprint)
          // `--force` on the stage makes its parts anew too.
          const found = forced ? { _tag: "Miss" as const } : yield* store.lookup(fingerprint).pipe(Effect.mapError((e) => new StageError({ message: e.message })))
          if (found._tag === "Hit") return { outputs: found.entry.outputs, reused: true }
          const started = performance.now()
          const entry = yield* Effect.scoped(
            Effect.gen(function* () {
              const outDir = yield* store.staging(fingerprint)
              const outputs = yield* produce(outDir)
              return yield* store.commit({
                stagingDir: outDir,
                fingerprint,
                pipeline: pipeline.spec.name,
                stage: `${stage.id}#${name}`,
                material: partMaterial,
                outputs,
                metrics: {},
                durationMs: performance.now() - started
              })
            })
          ).pipe(Effect.catchTag("StoreError", (e) => Effect.fail(new StageError({ message: e.message }))))
          return { outputs: entry.outputs, reused: false }
        })

    const execute = (stage: ResolvedStage, upstream: ReadonlyMap<string, Entry>, material: FingerprintMaterial, fingerprint: string, reason: string, replaceRemote: boolean) => {
      const started = performance.now()
      return Effect.scoped(
        Effect.gen(function* () {
          yield* reporter.started(stage.id, reason)
          const outDir = yield* store.staging(fingerprint)
          const workDir = yield* store.workDir(fingerprint)
          if (remote !== undefined) yield* resumeWork(remote, stage.id, fingerprint, workDir)
          const parts: Array<string> = []
          const ctx: StageContext<unknown> = {
            id: stage.id,
            params: stage.params,
            inputs: stage.needs.map((need) => {
              const entry = upstream.get(need)!
              return { id: need, outputs: entry.outputs, metrics: entry.manifest.metrics }
            }),
            baseDir: pipeline.spec.baseDir,
            outDir,
            workDir,
            progress: (doneUnits, total, unit = "rows", bytes) => reporter.progress(stage.id, { done: doneUnits, total, unit, ...(bytes && { bytes }) }),
            log: (message) => reporter.log(stage.id, message),
            // Checkpoints go to the remote as they are written: another machine can resume from them.
            checkpointed: remote === undefined
              ? Effect.void
              : remote.pushWork(fingerprint, workDir).pipe(
                Effect.catchAll((e) => reporter.log(stage.id, `the checkpoint stays on this machine only: ${e.message}`))
              ),
            cachedPart: cachedPart(stage, material, parts, forcedIds.has(stage.id))
          }
          const result = yield* stage.impl.definition.run(ctx)
          const declared = stage.impl.definition.produces
          const missing = declared.filter((kind) => !kindsOf(result.outputs).includes(kind))
          const extra = kindsOf(result.outputs).filter((kind) => !declared.includes(kind))
          if (missing.length > 0 || extra.length > 0) {
            return yield* new StageError({
              message: `the stage declares it produces ${declared.join(", ")} but returned ${kindsOf(result.outputs).join(", ") || "nothing"}`
            })
          }
          const durationMs = performance.now() - started
          const committed = yield* store.commit({
            stagingDir: outDir,
            fingerprint,
            pipeline: pipeline.spec.name,
            stage: stage.id,
            material,
            outputs: result.outputs,
            metrics: result.metrics ?? {},
            durationMs,
            parts
          })
          // A forced run replaces the remote's entry: it was forced for a reason.
          const pushed = options.push === true && remote !== undefined
            ? yield* pushWithParts(remote, stage, committed, replaceRemote || forcedIds.has(stage.id)).pipe(
              Effect.mapError((e) => new StageError({ message: `ran and was cached here, but ${e.message}; pipeline push retries` })),
              // Its checkpoints are of no more use to anyone.
              Effect.tap(() => remote.dropWork(fingerprint).pipe(Effect.ignore))
            )
            : undefined
          const entry = pushed?.entry ?? committed
          yield* remember(stage.id, fingerprint, material, entry, parts)
          return {
            outcome: StageOutcome.Ran({
              id: stage.id,
              fingerprint,
              reason,
              durationMs,
              entryDir: entry.dir,
              outputs: entry.outputs,
              metrics: entry.manifest.metrics,
              ...(pushed?.result === "pushed" && { where: { remote: "pushed" as const } })
            }),
            entry
          }
        })
      ).pipe(
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.failCause(cause)
            : Effect.succeed({
              outcome: StageOutcome.Failed({ id: stage.id, fingerprint, reason: messageOf(cause), durationMs: performance.now() - started }),
              entry: undefined
            })
        )
      )
    }

    // The run record: stages the pipeline no longer has (a sweep's dropped variants) leave
    // it, so gc frees their entries; and it goes to the remote, even when the run is
    // interrupted, for `gc --remote` keeps what the latest runs use. A worker's run
    // (PIPELINE_EXPECT) runs one stage of another run's: that run records it.
    const finishRecord = Effect.gen(function* () {
      if (options.dryRun) return
      yield* store.writeLive(pipeline.spec.file, undefined)
      yield* store.appendHistory(pipeline.spec.file, {
        startedAt,
        finishedAt: new Date().toISOString(),
        // A failure's message may name what the run was given (a user name): the history keeps why
        // stages ran, not why they failed (the run's own output said that).
        stages: finished.map((o) => ({ id: o.id, status: statusOf(o), durationMs: Math.round("durationMs" in o ? o.durationMs : 0), reason: o._tag === "Failed" ? "" : o.reason }))
      })
      yield* store.forgetStages(pipeline.spec.file, new Set(pipeline.stages.map((s) => s.id)))
      if (remote === undefined || options.expect !== undefined || (options.push !== true && options.dispatch === undefined)) return
      const latest = yield* store.readRun(pipeline.spec.file)
      if (latest !== undefined) yield* remote.pushRun(latest)
    }).pipe(
      Effect.catchAll((e) => Effect.sync(() => process.stderr.write(`warning: ${e.message}: gc --remote may not keep this run's entries past its grace period\n`)))
    )
    const outcomes = yield* Effect.forEach(
      pipeline.stages,
      (stage) =>
        Effect.gen(function* () {
          const settled = wanted.has(stage.id)
            ? yield* settle(stage).pipe(
              Effect.catchAll((error) =>
                Effect.succeed<Settled>({ outcome: StageOutcome.Failed({ id: stage.id, fingerprint: undefined, reason: error.message, durationMs: 0 }), entry: undefined })
              )
            )
            : { outcome: StageOutcome.Skipped({ id: stage.id, reason: options.until !== undefined ? `after --until ${options.until}` : `not selected by --only ${options.only}` }), entry: undefined }
          yield* Deferred.succeed(done.get(stage.id)!, settled)
          yield* reporter.finished(settled.outcome)
          return settled.outcome
        }),
      { concurrency: "unbounded" }
    ).pipe(Effect.ensuring(finishRecord))
    return outcomes
  })

/**
 * The reporter, also keeping the run's live state in the store (which stages run, how
 * far), at most once a second, for `pipeline ui`; and each outcome, for the run's history.
 */
const tracked = (reporter: ReporterService, store: ArtifactStoreService, file: string, startedAt: string, finished: Array<StageOutcome>): ReporterService => {
  const stages: Record<string, LiveRun["stages"][string]> = {}
  let last = 0
  const flush = (force: boolean) =>
    Effect.suspend(() => {
      if (!force && Date.now() - last < 1000) return Effect.void
      last = Date.now()
      return store.writeLive(file, { pid: process.pid, startedAt, stages: { ...stages } })
    })
  return {
    ...reporter,
    started: (id, reason) => Effect.zipRight(reporter.started(id, reason), Effect.suspend(() => ((stages[id] = { state: "running" }), flush(true)))),
    // Progress is reported from synchronous callbacks too (Effect.runSync): the file is written on a fiber of its own.
    progress: (id, progress) =>
      Effect.zipRight(
        reporter.progress(id, progress),
        Effect.suspend(() => {
          stages[id] = { state: "running", done: progress.done, total: progress.total, unit: progress.unit }
          return Date.now() - last < 1000 ? Effect.void : Effect.asVoid(Effect.forkDaemon(flush(false)))
        })
      ),
    finished: (outcome) =>
      Effect.zipRight(reporter.finished(outcome), Effect.suspend(() => {
        finished.push(outcome)
        if (stages[outcome.id] === undefined) return Effect.void
        stages[outcome.id] = { state: "done" }
        return flush(true)
      }))
  }
}

/** A work folder left on the remote by an interrupted run elsewhere: fetched when this machine has none. */
const resumeWork = (remote: RemoteStoreService, id: string, fingerprint: string, workDir: string) =>
  Effect.gen(function* () {
    const reporter = yield* Reporter
    const fs = yield* FileSystem.FileSystem
    // Every checkpoint is mirrored as it is written, so the remote's folder is the newest
    // there is: it replaces what this machine has (left from an earlier turn at the stage).
    const fetched = `${workDir}.remote-${process.pid}`
    yield* fs.remove(fetched, { recursive: true }).pipe(Effect.ignore)
    yield* fs.makeDirectory(fetched, { recursive: true }).pipe(Effect.orDie)
    const pulled = yield* remote.pullWork(fingerprint, fetched).pipe(
      Effect.catchAll((e: RemoteError) => reporter.log(id, `${e.message}: going on with this machine's work folder`).pipe(Effect.as({ files: 0, bad: [] as ReadonlyArray<string> })))
    )
    if (pulled.files > 0) {
      yield* fs.remove(workDir, { recursive: true }).pipe(Effect.orDie)
      yield* fs.rename(fetched, workDir).pipe(Effect.orDie)
      yield* reporter.log(id, `fetched the work folder of an interrupted run from ${remote.location.url} (${pulled.files} file(s))`)
    } else {
      yield* fs.remove(fetched, { recursive: true }).pipe(Effect.ignore)
    }
    for (const bad of pulled.bad) yield* reporter.log(id, `left out of the fetched work folder: ${bad}`)
  })

/** The user-facing message of a stage failure: a StageError's text, or the defect's first line. */
const messageOf = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value as { message?: unknown }
    return typeof error.message === "string" ? error.message : String(failure.value)
  }
  const defect = Cause.dieOption(cause)
  if (Option.isSome(defect)) {
    const error = defect.value
    return error instanceof Error ? `${error.name}: ${error.message}` : String(error)
  }
  return Cause.pretty(cause).split("\n")[0] ?? "unknown failure"
}

/** Fails with RunFailed when any stage failed. */
export const requireSuccess = (outcomes: ReadonlyArray<StageOutcome>) => {
  const failed = outcomes.filter((o) => o._tag === "Failed").map((o) => o.id)
  return failed.length > 0 ? Effect.fail(new RunFailed({ failed })) : Effect.void
}
