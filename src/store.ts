/**
 * The artifact store: content-addressed entries keyed by fingerprint.
 *
 *   <root>/entries/<fingerprint>/manifest.json + the stage's outputs
 *   <root>/tmp/      staging folders of runs in progress
 *   <root>/work/     per-fingerprint folders that survive crashes (training checkpoints)
 *   <root>/runs/     the latest run record of each pipeline (gc roots, `status` baselines)
 *   <root>/lock      held by `run` and `gc`
 *
 * An entry is written in a staging folder, its manifest last, then committed by
 * one atomic rename: a run killed at any moment leaves nothing that looks
 * complete. A lookup verifies the entry against its manifest; a damaged entry
 * is moved out of the way and reported, never read.
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Context, Effect, Layer, Option, Stream } from "effect"
import { createHash, randomBytes } from "node:crypto"
import type { Metrics, Outputs } from "./artifact.ts"
import { StoreError } from "./errors.ts"
import { canonicalJson, type FingerprintMaterial, sha256 } from "./fingerprint.ts"
import { acquireLock } from "./lock.ts"

export const MANIFEST = "manifest.json"

/** How long `gc` keeps the work folder of an interrupted run. */
const WORK_RETENTION_MS = 7 * 24 * 3600 * 1000

export interface ContentFile {
  readonly bytes: number
  readonly sha256: string
  readonly mtimeMs: number
}

export interface Manifest {
  readonly format: 1
  readonly fingerprint: string
  readonly pipeline: string
  readonly stage: string
  readonly material: FingerprintMaterial
  /** Outputs with paths relative to the entry folder. */
  readonly outputs: Outputs
  readonly metrics: Metrics
  /** Every file of the entry but the manifest, by relative path. */
  readonly contents: Readonly<Record<string, ContentFile>>
  /** sha256 over `contents` and `outputs`: what downstream fingerprints see. */
  readonly outputDigest: string
  readonly createdAt: string
  readonly durationMs: number
}

export interface Entry {
  readonly dir: string
  readonly manifest: Manifest
  /** Outputs with absolute paths. */
  readonly outputs: Outputs
}

export type Lookup =
  | { readonly _tag: "Hit"; readonly entry: Entry }
  | { readonly _tag: "Expired"; readonly reason: string }
  | { readonly _tag: "Miss" }
  | { readonly _tag: "Damaged"; readonly reason: string }

export interface RunRecordStage {
  readonly fingerprint: string
  readonly material: FingerprintMaterial
  readonly outputDigest: string
  readonly finishedAt: string
}

export interface RunRecord {
  readonly pipeline: string
  readonly file: string
  readonly updatedAt: string
  readonly stages: Readonly<Record<string, RunRecordStage>>
}

/** What a finished stage hands to `commit`: its outputs with absolute paths inside `stagingDir`. */
export interface CommitRequest extends Pick<Manifest, "fingerprint" | "pipeline" | "stage" | "material" | "outputs" | "metrics" | "durationMs"> {
  readonly stagingDir: string
}

export interface GcReport {
  readonly removedWork: number
  readonly removedEntries: number
  readonly keptEntries: number
  readonly bytesFreed: number
  readonly forgottenRuns: ReadonlyArray<string>
}

export interface ArtifactStoreService {
  readonly root: string
  readonly lookup: (fingerprint: string) => Effect.Effect<Lookup, StoreError>
  /** A fresh staging folder, removed when the scope closes unless committed. */
  readonly staging: (fingerprint: string) => Effect.Effect<string, StoreError, import("effect/Scope").Scope>
  readonly commit: (request: CommitRequest) => Effect.Effect<Entry, StoreError>
  /** The crash-surviving work folder of a fingerprint, created if needed; removed by `commit`. */
  readonly workDir: (fingerprint: string) => Effect.Effect<string, StoreError>
  readonly readRun: (file: string) => Effect.Effect<RunRecord | undefined, StoreError>
  readonly recordStage: (file: string, pipeline: string, stage: string, record: RunRecordStage) => Effect.Effect<void, StoreError>
  /** The writer lock, held for the enclosing scope; staging left by dead runs is cleared on taking it. */
  readonly lock: (command: string) => Effect.Effect<void, import("./errors.ts").LockError | StoreError, import("effect/Scope").Scope>
  readonly gc: (options: { readonly dryRun: boolean }) => Effect.Effect<GcReport, StoreError>
}

export class ArtifactStore extends Context.Tag("ArtifactStore")<ArtifactStore, ArtifactStoreService>() {}

const storeError = (what: string) => (cause: PlatformError) =>
  new StoreError({ message: `${what}: ${cause.message}`, cause })

export const make = (root: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const entriesDir = path.join(root, "entries")
    const tmpDir = path.join(root, "tmp")
    const runsDir = path.join(root, "runs")
    const workRoot = path.join(root, "work")
    const ensureDirs = Effect.forEach([entriesDir, tmpDir, runsDir, workRoot], (dir) => fs.makeDirectory(dir, { recursive: true })).pipe(
      Effect.mapError(storeError(`cannot create the cache folder ${root}`))
    )

    const hashFile = (file: string) =>
      fs.stream(file).pipe(
        Stream.runFold(createHash("sha256"), (hash, chunk) => hash.update(chunk)),
        Effect.map((hash) => hash.digest("hex"))
      )

    const listFiles = (dir: string): Effect.Effect<ReadonlyArray<string>, PlatformError> =>
      fs.readDirectory(dir, { recursive: true }).pipe(
        Effect.flatMap((names) =>
          Effect.filter(names, (name) => fs.stat(path.join(dir, name)).pipe(Effect.map((info) => info.type === "File")))
        )
      )

    const resolveOutputs = (dir: string, outputs: Outputs, to: (dir: string, p: string) => string): Outputs => ({
      ...(outputs.dataset && {
        dataset: {
          kind: "dataset",
          splits: Object.fromEntries(Object.entries(outputs.dataset.splits).map(([split, files]) =>
            [split, files.map((f) => ({ path: to(dir, f.path), rows: f.rows }))]
          ))
        }
      }),
      ...(outputs.model && { model: { kind: "model", dir: to(dir, outputs.model.dir) } }),
      ...(outputs.files && { files: { kind: "files", dir: to(dir, outputs.files.dir), files: outputs.files.files } })
    })

    const relative = (dir: string, p: string) => {
      const rel = path.relative(dir, p)
      if (rel.startsWith("..") || path.isAbsolute(rel)) throw new Error(`output ${p} is outside the staging folder ${dir}`)
      return rel.split(path.sep).join("/") || "."
    }

    const verify = (dir: string, manifest: Manifest) =>
      Effect.gen(function* () {
        for (const [name, expected] of Object.entries(manifest.contents)) {
          const file = path.join(dir, name)
          const info = yield* fs.stat(file).pipe(Effect.option)
          if (Option.isNone(info)) return `file ${name} is missing`
          const bytes = Number(info.value.size)
          if (bytes !== expected.bytes) return `file ${name} has ${bytes} bytes, expected ${expected.bytes}`
          const mtime = Option.getOrUndefined(info.value.mtime)?.getTime()
          // A file untouched since commit keeps its mtime: re-hash only what may have changed.
          if (mtime !== expected.mtimeMs) {
            const actual = yield* hashFile(file)
            if (actual !== expected.sha256) return `file ${name} does not match its sha256`
          }
        }
        return undefined
      })

    const quarantine = (dir: string) =>
      Effect.gen(function* () {
        const trash = path.join(tmpDir, `damaged-${path.basename(dir)}-${randomBytes(4).toString("hex")}`)
        yield* fs.rename(dir, trash)
        yield* fs.remove(trash, { recursive: true })
      }).pipe(Effect.ignore)

    const lookup = (fingerprint: string) =>
      Effect.gen(function* () {
        const dir = path.join(entriesDir, fingerprint)
        const text = yield* fs.readFileString(path.join(dir, MANIFEST)).pipe(Effect.option)
        if (Option.isNone(text)) {
          if (yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false))) {
            yield* quarantine(dir)
            return { _tag: "Damaged", reason: "the cached entry has no manifest" } as const
          }
          return { _tag: "Miss" } as const
        }
        let manifest: Manifest
        try {
          manifest = JSON.parse(text.value) as Manifest
        } catch {
          yield* quarantine(dir)
          return { _tag: "Damaged", reason: "the cached entry's manifest is not valid JSON" } as const
        }
        const problem = manifest.fingerprint !== fingerprint
          ? "the manifest belongs to another fingerprint"
          : yield* verify(dir, manifest).pipe(Effect.catchAll((e) => Effect.succeed(`cannot verify: ${e.message}`)))
        if (problem !== undefined) {
          yield* quarantine(dir)
          return { _tag: "Damaged", reason: `the cached entry was damaged (${problem})` } as const
        }
        const entry: Entry = { dir, manifest, outputs: resolveOutputs(dir, manifest.outputs, (d, p) => path.join(d, p)) }
        return { _tag: "Hit", entry } as const
      }).pipe(Effect.mapError(storeError(`cannot read the cache entry ${fingerprint}`)))

    const staging = (fingerprint: string) =>
      Effect.acquireRelease(
        Effect.gen(function* () {
          yield* ensureDirs
          const dir = path.join(tmpDir, `${fingerprint.slice(0, 16)}-${process.pid}-${randomBytes(4).toString("hex")}`)
          yield* fs.makeDirectory(dir).pipe(Effect.mapError(storeError("cannot create a staging folder")))
          return dir
        }),
        (dir) => fs.remove(dir, { recursive: true }).pipe(Effect.ignore)
      )

    const commit = (request: CommitRequest) =>
      Effect.gen(function* () {
        const dir = request.stagingDir
        const names = (yield* listFiles(dir)).filter((name) => name !== MANIFEST).sort()
        const contents: Record<string, ContentFile> = {}
        for (const name of names) {
          const file = path.join(dir, name)
          const info = yield* fs.stat(file)
          contents[name.split(path.sep).join("/")] = {
            bytes: Number(info.size),
            sha256: yield* hashFile(file),
            mtimeMs: Option.getOrElse(info.mtime, () => new Date(0)).getTime()
          }
        }
        const outputs = yield* Effect.try({
          try: () => resolveOutputs(dir, request.outputs, relative),
          catch: (e) => new StoreError({ message: (e as Error).message })
        })
        const digestOf = Object.fromEntries(Object.entries(contents).map(([name, c]) => [name, c.sha256]))
        const manifest: Manifest = {
          format: 1,
          fingerprint: request.fingerprint,
          pipeline: request.pipeline,
          stage: request.stage,
          material: request.material,
          outputs,
          metrics: request.metrics,
          contents,
          outputDigest: sha256(canonicalJson({ contents: digestOf, outputs })),
          createdAt: new Date().toISOString(),
          durationMs: request.durationMs
        }
        yield* fs.writeFileString(path.join(dir, MANIFEST), JSON.stringify(manifest, null, 2))
        const target = path.join(entriesDir, request.fingerprint)
        if (yield* fs.exists(target)) {
          // A forced re-run replaces the entry: move the old one aside first, so the
          // final rename is still a single atomic step.
          const old = path.join(tmpDir, `replaced-${request.fingerprint.slice(0, 16)}-${randomBytes(4).toString("hex")}`)
          yield* fs.rename(target, old)
          yield* fs.rename(dir, target)
          yield* fs.remove(old, { recursive: true }).pipe(Effect.ignore)
        } else {
          yield* fs.rename(dir, target)
        }
        yield* fs.remove(path.join(workRoot, request.fingerprint), { recursive: true }).pipe(Effect.ignore)
        return { dir: target, manifest, outputs: resolveOutputs(target, outputs, (d, p) => path.join(d, p)) } satisfies Entry
      }).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("cannot commit the cache entry")(e))))

    const workDir = (fingerprint: string) =>
      Effect.gen(function* () {
        const dir = path.join(workRoot, fingerprint)
        yield* fs.makeDirectory(dir, { recursive: true })
        return dir
      }).pipe(Effect.mapError(storeError("cannot create the work folder")))

    const runFile = (file: string) => {
      const base = path.basename(file).replace(/\.ya?ml$/, "").replace(/[^A-Za-z0-9_-]/g, "_")
      return path.join(runsDir, `${base}-${sha256(file).slice(0, 12)}.json`)
    }

    const readRun = (file: string) =>
      fs.readFileString(runFile(file)).pipe(
        Effect.map((text) => JSON.parse(text) as RunRecord),
        Effect.catchAll(() => Effect.succeed(undefined))
      )

    const writeAtomic = (target: string, text: string) =>
      Effect.gen(function* () {
        const temp = `${target}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`
        yield* fs.writeFileString(temp, text)
        yield* fs.rename(temp, target)
      })

    const recordStage = (file: string, pipeline: string, stage: string, record: RunRecordStage) =>
      Effect.gen(function* () {
        yield* ensureDirs
        const previous = yield* readRun(file)
        const next: RunRecord = {
          pipeline,
          file,
          updatedAt: new Date().toISOString(),
          stages: { ...previous?.stages, [stage]: record }
        }
        yield* writeAtomic(runFile(file), JSON.stringify(next, null, 2))
      }).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("cannot write the run record")(e))))

    const clearTmp = fs.readDirectory(tmpDir).pipe(
      Effect.flatMap((names) => Effect.forEach(names, (name) => fs.remove(path.join(tmpDir, name), { recursive: true }))),
      Effect.ignore
    )

    const lock = (command: string) =>
      Effect.gen(function* () {
        yield* ensureDirs
        yield* acquireLock(path.join(root, "lock"), command).pipe(Effect.provideService(FileSystem.FileSystem, fs))
        // We are the only writer now: staging folders left behind were a dead run's.
        yield* clearTmp
      })

    const sizeOf = (dir: string) =>
      listFiles(dir).pipe(
        Effect.flatMap((names) => Effect.forEach(names, (name) => fs.stat(path.join(dir, name)))),
        Effect.map((infos) => infos.reduce((sum, info) => sum + Number(info.size), 0)),
        Effect.orElseSucceed(() => 0)
      )

    const gc = (options: { readonly dryRun: boolean }) =>
      Effect.gen(function* () {
        yield* ensureDirs
        const keep = new Set<string>()
        const forgottenRuns: Array<string> = []
        for (const name of yield* fs.readDirectory(runsDir)) {
          if (!name.endsWith(".json")) continue
          const recordPath = path.join(runsDir, name)
          const record = yield* fs.readFileString(recordPath).pipe(
            Effect.map((text) => JSON.parse(text) as RunRecord),
            Effect.orElseSucceed(() => undefined)
          )
          if (record === undefined || !(yield* fs.exists(record.file))) {
            // The pipeline file is gone: nothing will ask for its entries again.
            forgottenRuns.push(record?.file ?? name)
            if (!options.dryRun) yield* fs.remove(recordPath)
            continue
          }
          for (const stage of Object.values(record.stages)) keep.add(stage.fingerprint)
        }
        let removedEntries = 0
        let keptEntries = 0
        let bytesFreed = 0
        for (const name of yield* fs.readDirectory(entriesDir)) {
          if (keep.has(name)) {
            keptEntries++
            continue
          }
          const dir = path.join(entriesDir, name)
          bytesFreed += yield* sizeOf(dir)
          removedEntries++
          if (!options.dryRun) yield* fs.remove(dir, { recursive: true })
        }
        // Work folders hold the checkpoints of interrupted runs: keep a week's worth to resume.
        let removedWork = 0
        for (const name of yield* fs.readDirectory(workRoot)) {
          const dir = path.join(workRoot, name)
          const modified = Option.getOrUndefined((yield* fs.stat(dir)).mtime)?.getTime() ?? 0
          if (keep.has(name) || Date.now() - modified < WORK_RETENTION_MS) continue
          bytesFreed += yield* sizeOf(dir)
          removedWork++
          if (!options.dryRun) yield* fs.remove(dir, { recursive: true })
        }
        if (!options.dryRun) yield* clearTmp
        return { removedEntries, removedWork, keptEntries, bytesFreed, forgottenRuns } satisfies GcReport
      }).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("garbage collection failed")(e))))

    return ArtifactStore.of({ root, lookup, staging, commit, workDir, readRun, recordStage, lock, gc })
  })

export const layer = (root: string) => Layer.effect(ArtifactStore, make(root))
