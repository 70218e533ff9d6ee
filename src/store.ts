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
import { Context, Effect, Either, Layer, Option, ParseResult, Schema, Stream } from "effect"
import { createHash, randomBytes } from "node:crypto"
import type { Metrics, Outputs } from "./artifact.ts"
import { StoreError } from "./errors.ts"
import { canonicalJson, type FingerprintMaterial, fingerprintOf, sha256 } from "./fingerprint.ts"
import { acquireLock } from "./lock.ts"

const MANIFEST = "manifest.json"

/** How long `gc` keeps the work folder of an interrupted run. */
const WORK_RETENTION_MS = 7 * 24 * 3600 * 1000

// What the store writes, as Schemas: everything read back is decoded, never cast. A
// file that does not decode is damaged (a manifest) or ignored (a run record), and said so.

const Hex64 = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))
const Strings = Schema.Record({ key: Schema.String, value: Schema.String })

const MaterialSchema = Schema.Struct({
  engine: Schema.String,
  stage: Schema.String,
  code: Schema.String,
  sources: Schema.optional(Strings),
  params: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
  inputs: Strings,
  files: Strings,
  external: Schema.optionalWith(Strings, { default: () => ({}) })
})

const OutputsSchema = Schema.Struct({
  dataset: Schema.optional(Schema.Struct({
    kind: Schema.Literal("dataset"),
    splits: Schema.Record({ key: Schema.String, value: Schema.Array(Schema.Struct({ path: Schema.String, rows: Schema.NonNegativeInt })) })
  })),
  model: Schema.optional(Schema.Struct({ kind: Schema.Literal("model"), dir: Schema.String })),
  files: Schema.optional(Schema.Struct({ kind: Schema.Literal("files"), dir: Schema.String, files: Schema.Array(Schema.String) }))
})

const ContentFileSchema = Schema.Struct({ bytes: Schema.NonNegativeInt, sha256: Hex64, mtimeMs: Schema.Number })

const ManifestSchema = Schema.Struct({
  format: Schema.Literal(1),
  fingerprint: Hex64,
  pipeline: Schema.String,
  stage: Schema.String,
  material: MaterialSchema,
  /** Outputs with paths relative to the entry folder. */
  outputs: OutputsSchema,
  metrics: Schema.Record({ key: Schema.String, value: Schema.Number }),
  /** Every file of the entry but the manifest, by relative path. */
  contents: Schema.Record({ key: Schema.String, value: ContentFileSchema }),
  /** sha256 over `contents` and `outputs`: what downstream fingerprints see. */
  outputDigest: Hex64,
  createdAt: Schema.String,
  durationMs: Schema.Number,
  /** The cached parts (`StageContext.cachedPart`) the entry was made with, by fingerprint. */
  parts: Schema.optionalWith(Schema.Array(Hex64), { default: () => [] })
})

const RunRecordSchema = Schema.Struct({
  pipeline: Schema.String,
  file: Schema.String,
  updatedAt: Schema.String,
  stages: Schema.Record({
    key: Schema.String,
    value: Schema.Struct({
      fingerprint: Hex64,
      material: MaterialSchema,
      outputDigest: Hex64,
      finishedAt: Schema.String,
      parts: Schema.optionalWith(Schema.Array(Hex64), { default: () => [] })
    })
  })
})

export type ContentFile = typeof ContentFileSchema.Type

export interface Manifest extends Omit<typeof ManifestSchema.Type, "material" | "outputs" | "metrics"> {
  readonly material: FingerprintMaterial
  readonly outputs: Outputs
  readonly metrics: Metrics
}

/** JSON text → a value of `schema`, or why not, in one line. */
const decodeJson = <A, I>(schema: Schema.Schema<A, I>, text: string): Either.Either<A, string> => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    return Either.left(`not valid JSON (${(error as Error).message})`)
  }
  return Schema.decodeUnknownEither(schema, { onExcessProperty: "ignore" })(value).pipe(
    Either.mapLeft((error) => ParseResult.TreeFormatter.formatErrorSync(error).split("\n").map((l) => l.trim()).filter((l) => l !== "").slice(-2).join(": "))
  )
}

/** A relative path that stays inside its folder: no `..`, `.` or empty part, not absolute, no NUL or backslash. */
export const isInside = (relative: string): boolean =>
  relative !== "" && !relative.includes("\0") && !relative.startsWith("/") && !relative.includes("\\") &&
  relative.split("/").every((part) => part !== ".." && part !== "." && part !== "")

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
  /** The cached parts (`StageContext.cachedPart`) the entry was made with: gc keeps them with it. */
  readonly parts?: ReadonlyArray<string>
}

export interface LiveRun {
  readonly pid: number
  readonly startedAt: string
  readonly stages: Readonly<Record<string, { readonly state: "running" | "done"; readonly done?: number; readonly total?: number; readonly unit?: string; readonly fingerprint?: string }>>
}

export interface RunSummary {
  readonly startedAt: string
  readonly finishedAt: string
  readonly stages: ReadonlyArray<{ readonly id: string; readonly status: string; readonly durationMs: number; readonly reason: string }>
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
  readonly parts?: ReadonlyArray<string>
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
  /** Installs an entry fetched from a remote store into `stagingDir` (see `adopt`). */
  readonly adopt: (stagingDir: string, manifest: Manifest) => Effect.Effect<Entry, StoreError>
  /** The crash-surviving work folder of a fingerprint, created if needed; removed by `commit`. */
  readonly workDir: (fingerprint: string) => Effect.Effect<string, StoreError>
  readonly readRun: (file: string) => Effect.Effect<RunRecord | undefined, StoreError>
  readonly recordStage: (file: string, pipeline: string, stage: string, record: RunRecordStage) => Effect.Effect<void, StoreError>
  /** A run in progress, for `pipeline ui`: which stages run, how far; removed at the end (`undefined`). */
  readonly writeLive: (file: string, snapshot: LiveRun | undefined) => Effect.Effect<void>
  readonly readLive: (file: string) => Effect.Effect<LiveRun | undefined>
  /** Each run's summary, a JSON line each, after the run record: `pipeline ui`'s history. */
  readonly appendHistory: (file: string, run: RunSummary) => Effect.Effect<void>
  readonly readHistory: (file: string) => Effect.Effect<ReadonlyArray<RunSummary>>
  /** Drops from a pipeline's run record the stages it no longer has (a sweep's dropped variants), so gc can free them. */
  readonly forgetStages: (file: string, keep: ReadonlySet<string>) => Effect.Effect<void, StoreError>
  /** The writer lock, held for the enclosing scope; staging left by dead runs is cleared on taking it. */
  readonly lock: (command: string) => Effect.Effect<void, import("./errors.ts").LockError | StoreError, import("effect/Scope").Scope>
  readonly gc: (options: { readonly dryRun: boolean }) => Effect.Effect<GcReport, StoreError>
  readonly verifyAll: (options: { readonly repair: boolean }) => Effect.Effect<VerifyReport, StoreError>
}

export interface DamagedEntry {
  readonly fingerprint: string
  readonly pipeline: string | undefined
  readonly stage: string | undefined
  readonly reason: string
}

export interface VerifyReport {
  readonly checked: number
  readonly bytes: number
  readonly damaged: ReadonlyArray<DamagedEntry>
}

export class ArtifactStore extends Context.Tag("ArtifactStore")<ArtifactStore, ArtifactStoreService>() {}

const storeError = (what: string) => (cause: PlatformError) =>
  new StoreError({ message: `${what}: ${cause.message}`, cause })

/** The first path of a manifest that would leave its entry folder, if any. */
export const outsidePath = (manifest: Manifest): string | undefined =>
  [
    ...Object.keys(manifest.contents),
    ...Object.values(manifest.outputs.dataset?.splits ?? {}).flatMap((files) => files.map((f) => f.path)),
    ...(manifest.outputs.model ? [manifest.outputs.model.dir] : []),
    ...(manifest.outputs.files ? [manifest.outputs.files.dir, ...manifest.outputs.files.files] : [])
  ].find((p) => p !== "." && !isInside(p))

/** The first output a stage returned without writing it (outputs relative to the staging folder). */
const missingOutput = (outputs: Outputs, contents: Readonly<Record<string, ContentFile>>): string | undefined => {
  const within = (dir: string) => dir === "." ? Object.keys(contents).length > 0 : Object.keys(contents).some((name) => name.startsWith(`${dir}/`))
  for (const [split, files] of Object.entries(outputs.dataset?.splits ?? {})) {
    const missing = files.find((f) => !(f.path in contents))
    if (missing !== undefined) return `the file ${missing.path} of dataset split "${split}"`
  }
  if (outputs.model !== undefined && !within(outputs.model.dir)) return `the model folder ${outputs.model.dir} (empty or missing)`
  if (outputs.files !== undefined) {
    const { dir, files } = outputs.files
    // Each listed name is a file, or a folder with files in it (a model beside the report).
    const missing = files.find((f) => {
      const name = dir === "." ? f : `${dir}/${f}`
      return !(name in contents) && !within(name)
    })
    if (missing !== undefined) return `the file ${missing} in ${dir}`
  }
  return undefined
}

/** The digest downstream fingerprints see: over each file's sha256 and the outputs. */
const outputDigestOf = (contents: Readonly<Record<string, ContentFile>>, outputs: Outputs): string =>
  sha256(canonicalJson({ contents: Object.fromEntries(Object.entries(contents).map(([name, c]) => [name, c.sha256])), outputs }))

/**
 * A manifest from elsewhere (a remote store), checked before anything it names is
 * fetched: it decodes, it is the manifest of `fingerprint` (the sha256 of its own
 * material), its paths stay inside the entry, and its output digest is the digest of
 * its contents. Whatever the server sends, an entry that passes is one this program
 * would have written for that fingerprint.
 */
export const checkForeignManifest = (text: string, fingerprint: string): Either.Either<Manifest, string> =>
  Either.flatMap(decodeJson(ManifestSchema, text), (decoded) => {
    const manifest = decoded as Manifest
    if (manifest.fingerprint !== fingerprint) return Either.left(`it is the manifest of ${manifest.fingerprint.slice(0, 12)}, not ${fingerprint.slice(0, 12)}`)
    if (fingerprintOf(manifest.material) !== fingerprint) return Either.left("its material does not hash to its fingerprint")
    const outside = outsidePath(manifest)
    if (outside !== undefined) return Either.left(`it names ${outside}, outside the entry`)
    if (manifest.contents[MANIFEST] !== undefined) return Either.left(`it lists ${MANIFEST} among its files`)
    if (outputDigestOf(manifest.contents, manifest.outputs) !== manifest.outputDigest) return Either.left("its output digest does not match its files")
    return Either.right(manifest)
  })

export interface StoreOptions {
  /** Where warnings go (a damaged run record): stderr unless given. */
  readonly warn?: (message: string) => void
}

const make = (root: string, options: StoreOptions = {}) =>
  Effect.gen(function* () {
    const warn = (message: string) => Effect.sync(() => (options.warn ?? ((m) => process.stderr.write(`warning: ${m}\n`)))(message))
    // Stages finishing together each update the run record: one at a time, or one is lost.
    const recordLock = yield* Effect.makeSemaphore(1)
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

    /** Each file against the manifest: sizes always, hashes of files whose mtime moved (or of all, `full`). */
    const verify = (dir: string, manifest: Manifest, full = false) =>
      Effect.gen(function* () {
        for (const [name, expected] of Object.entries(manifest.contents)) {
          const file = path.join(dir, name)
          const info = yield* fs.stat(file).pipe(Effect.option)
          if (Option.isNone(info)) return `file ${name} is missing`
          const bytes = Number(info.value.size)
          if (bytes !== expected.bytes) return `file ${name} has ${bytes} bytes, expected ${expected.bytes}`
          const mtime = Option.getOrUndefined(info.value.mtime)?.getTime()
          // A file untouched since commit keeps its mtime: re-hash only what may have changed.
          if (full || mtime !== expected.mtimeMs) {
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
        const decoded = decodeJson(ManifestSchema, text.value)
        if (Either.isLeft(decoded)) {
          yield* quarantine(dir)
          return { _tag: "Damaged", reason: `the cached entry's manifest is damaged (${decoded.left})` } as const
        }
        const manifest = decoded.right as Manifest
        const problem = manifest.fingerprint !== fingerprint
          ? "the manifest belongs to another fingerprint"
          : outsidePath(manifest) !== undefined
          ? `the manifest names ${outsidePath(manifest)}, outside the entry`
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
        const nonFinite = Object.entries(request.metrics).find(([, value]) => !Number.isFinite(value))
        if (nonFinite !== undefined) {
          return yield* new StoreError({ message: `the stage reported the metric ${nonFinite[0]} = ${nonFinite[1]}: metrics must be finite numbers (a diverged run?); nothing was cached` })
        }
        const unwritten = missingOutput(outputs, contents)
        if (unwritten !== undefined) {
          return yield* new StoreError({ message: `the stage returned ${unwritten}, which it never wrote: nothing was cached` })
        }
        const manifest: Manifest = {
          format: 1,
          fingerprint: request.fingerprint,
          pipeline: request.pipeline,
          stage: request.stage,
          material: request.material,
          outputs,
          metrics: request.metrics,
          contents,
          outputDigest: outputDigestOf(contents, outputs),
          createdAt: new Date().toISOString(),
          durationMs: request.durationMs,
          parts: [...new Set(request.parts ?? [])]
        }
        return yield* install(dir, manifest)
      }).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("cannot commit the cache entry")(e))))

    /** The manifest written last, then the staging folder renamed into place: one atomic step. */
    const install = (dir: string, manifest: Manifest) =>
      Effect.gen(function* () {
        yield* fs.writeFileString(path.join(dir, MANIFEST), JSON.stringify(manifest, null, 2))
        const target = path.join(entriesDir, manifest.fingerprint)
        if (yield* fs.exists(target)) {
          // A forced re-run replaces the entry: move the old one aside first, so the
          // final rename is still a single atomic step.
          const old = path.join(tmpDir, `replaced-${manifest.fingerprint.slice(0, 16)}-${randomBytes(4).toString("hex")}`)
          yield* fs.rename(target, old)
          yield* fs.rename(dir, target)
          yield* fs.remove(old, { recursive: true }).pipe(Effect.ignore)
        } else {
          yield* fs.rename(dir, target)
        }
        yield* fs.remove(path.join(workRoot, manifest.fingerprint), { recursive: true }).pipe(Effect.ignore)
        return { dir: target, manifest, outputs: resolveOutputs(target, manifest.outputs, (d, p) => path.join(d, p)) } satisfies Entry
      })

    /**
     * An entry fetched from elsewhere into a staging folder, its files already checked
     * against `manifest` (checkForeignManifest, then each file's sha256 as it arrived):
     * the sizes are checked again, this disk's mtimes recorded, and it is installed.
     */
    const adopt = (stagingDir: string, manifest: Manifest) =>
      Effect.gen(function* () {
        const contents: Record<string, ContentFile> = {}
        for (const [name, expected] of Object.entries(manifest.contents)) {
          const info = yield* fs.stat(path.join(stagingDir, name))
          if (Number(info.size) !== expected.bytes) {
            return yield* new StoreError({ message: `the fetched file ${name} has ${Number(info.size)} bytes, its manifest says ${expected.bytes}` })
          }
          contents[name] = { ...expected, mtimeMs: Option.getOrElse(info.mtime, () => new Date(0)).getTime() }
        }
        return yield* install(stagingDir, { ...manifest, contents })
      }).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("cannot install the fetched cache entry")(e))))

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

    /** The latest run record of a pipeline file; a damaged one is ignored, with a warning. */
    const readRun = (file: string) =>
      Effect.gen(function* () {
        const recordPath = runFile(file)
        const text = yield* fs.readFileString(recordPath).pipe(Effect.option)
        if (Option.isNone(text)) return undefined
        const decoded = decodeJson(RunRecordSchema, text.value)
        if (Either.isRight(decoded)) return decoded.right as RunRecord
        yield* warn(`the run record ${recordPath} is damaged (${decoded.left}): ignored; this run writes a new one`)
        return undefined
      })

    const writeAtomic = (target: string, text: string) =>
      Effect.gen(function* () {
        const temp = `${target}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`
        yield* fs.writeFileString(temp, text)
        yield* fs.rename(temp, target)
      })

    const recordStage = (file: string, pipeline: string, stage: string, record: RunRecordStage) =>
      recordLock.withPermits(1)(Effect.gen(function* () {
        yield* ensureDirs
        const previous = yield* readRun(file)
        const next: RunRecord = {
          pipeline,
          file,
          updatedAt: new Date().toISOString(),
          stages: { ...previous?.stages, [stage]: record }
        }
        yield* writeAtomic(runFile(file), JSON.stringify(next, null, 2))
      })).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("cannot write the run record")(e))))

    // Beside the run records, not among them: `runs/` holds records only.
    const livePath = (file: string) => path.join(root, "live", path.basename(runFile(file)))
    const historyPath = (file: string) => path.join(root, "history", path.basename(runFile(file)).replace(/\.json$/, ".jsonl"))
    const writeLive = (file: string, snapshot: LiveRun | undefined) =>
      (snapshot === undefined
        ? fs.remove(livePath(file))
        : Effect.zipRight(fs.makeDirectory(path.dirname(livePath(file)), { recursive: true }), writeAtomic(livePath(file), JSON.stringify(snapshot)))).pipe(Effect.ignore)
    const readLive = (file: string) =>
      fs.readFileString(livePath(file)).pipe(
        Effect.map((text) => JSON.parse(text) as LiveRun),
        Effect.orElseSucceed(() => undefined)
      )
    const appendHistory = (file: string, run: RunSummary) =>
      Effect.zipRight(fs.makeDirectory(path.dirname(historyPath(file)), { recursive: true }), fs.writeFileString(historyPath(file), `${JSON.stringify(run)}\n`, { flag: "a" })).pipe(Effect.ignore)
    const readHistory = (file: string) =>
      fs.readFileString(historyPath(file)).pipe(
        Effect.map((text) => text.split("\n").flatMap((line) => {
          try {
            return line === "" ? [] : [JSON.parse(line) as RunSummary]
          } catch {
            return []
          }
        })),
        Effect.orElseSucceed(() => [] as ReadonlyArray<RunSummary>)
      )

    const forgetStages = (file: string, keep: ReadonlySet<string>) =>
      recordLock.withPermits(1)(Effect.gen(function* () {
        const previous = yield* readRun(file)
        if (previous === undefined || Object.keys(previous.stages).every((id) => keep.has(id))) return
        const next: RunRecord = { ...previous, stages: Object.fromEntries(Object.entries(previous.stages).filter(([id]) => keep.has(id))) }
        yield* writeAtomic(runFile(file), JSON.stringify(next, null, 2))
      })).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("cannot write the run record")(e))))

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

    /** `pipeline verify`: every entry re-hashed in full, like `git fsck`; `repair` removes the damaged ones. */
    const verifyAll = (verifyOptions: { readonly repair: boolean }) =>
      Effect.gen(function* () {
        yield* ensureDirs
        const damaged: Array<DamagedEntry> = []
        let checked = 0
        let bytes = 0
        for (const name of (yield* fs.readDirectory(entriesDir)).sort()) {
          const dir = path.join(entriesDir, name)
          checked++
          const text = yield* fs.readFileString(path.join(dir, MANIFEST)).pipe(Effect.option)
          const decoded = Option.isNone(text) ? Either.left("no manifest") : decodeJson(ManifestSchema, text.value).pipe(Either.mapLeft((why) => `the manifest is damaged (${why})`))
          const manifest = Either.isRight(decoded) ? decoded.right as Manifest : undefined
          const problem = manifest === undefined
            ? Either.getLeft(decoded).pipe(Option.getOrElse(() => "unreadable"))
            : manifest.fingerprint !== name
            ? "the manifest belongs to another fingerprint"
            : outsidePath(manifest) !== undefined
            ? `the manifest names ${outsidePath(manifest)}, outside the entry`
            : yield* verify(dir, manifest, true).pipe(Effect.catchAll((e) => Effect.succeed(`cannot verify: ${e.message}`)))
          if (manifest !== undefined) bytes += Object.values(manifest.contents).reduce((sum, c) => sum + c.bytes, 0)
          if (problem === undefined) continue
          damaged.push({ fingerprint: name, pipeline: manifest?.pipeline, stage: manifest?.stage, reason: problem })
          if (verifyOptions.repair) yield* quarantine(dir)
        }
        return { checked, bytes, damaged } satisfies VerifyReport
      }).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("cannot verify the cache")(e))))

    const sizeOf = (dir: string) =>
      listFiles(dir).pipe(
        Effect.flatMap((names) => Effect.forEach(names, (name) => fs.stat(path.join(dir, name)))),
        Effect.map((infos) => infos.reduce((sum, info) => sum + Number(info.size), 0)),
        Effect.orElseSucceed(() => 0)
      )

    const gc = (gcOptions: { readonly dryRun: boolean }) =>
      Effect.gen(function* () {
        yield* ensureDirs
        const keep = new Set<string>()
        const forgottenRuns: Array<string> = []
        for (const name of yield* fs.readDirectory(runsDir)) {
          if (!name.endsWith(".json")) continue
          const recordPath = path.join(runsDir, name)
          const decoded = decodeJson(RunRecordSchema, yield* fs.readFileString(recordPath).pipe(Effect.orElseSucceed(() => "")))
          if (Either.isLeft(decoded)) {
            yield* warn(`the run record ${recordPath} is damaged (${decoded.left}): ${gcOptions.dryRun ? "would be removed" : "removed"}; its pipeline's entries count as unused`)
            forgottenRuns.push(`${name} (damaged)`)
            if (!gcOptions.dryRun) yield* fs.remove(recordPath)
            continue
          }
          const record = decoded.right
          if (!(yield* fs.exists(record.file))) {
            // The pipeline file is gone: nothing will ask for its entries again.
            forgottenRuns.push(record.file)
            if (!gcOptions.dryRun) yield* fs.remove(recordPath)
            continue
          }
          for (const stage of Object.values(record.stages)) {
            keep.add(stage.fingerprint)
            for (const part of stage.parts ?? []) keep.add(part)
          }
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
          if (!gcOptions.dryRun) yield* fs.remove(dir, { recursive: true })
        }
        // Work folders hold the checkpoints of interrupted runs: keep a week's worth to resume.
        let removedWork = 0
        for (const name of yield* fs.readDirectory(workRoot)) {
          const dir = path.join(workRoot, name)
          const modified = Option.getOrUndefined((yield* fs.stat(dir)).mtime)?.getTime() ?? 0
          if (keep.has(name) || Date.now() - modified < WORK_RETENTION_MS) continue
          bytesFreed += yield* sizeOf(dir)
          removedWork++
          if (!gcOptions.dryRun) yield* fs.remove(dir, { recursive: true })
        }
        if (!gcOptions.dryRun) yield* clearTmp
        return { removedEntries, removedWork, keptEntries, bytesFreed, forgottenRuns } satisfies GcReport
      }).pipe(Effect.catchTag("SystemError", "BadArgument", (e) => Effect.fail(storeError("garbage collection failed")(e))))

    return ArtifactStore.of({ root, lookup, staging, commit, adopt, workDir, readRun, recordStage, forgetStages, writeLive, readLive, appendHistory, readHistory, lock, gc, verifyAll })
  })

export const layer = (root: string, options: StoreOptions = {}) => Layer.effect(ArtifactStore, make(root, options))
