/**
 * `pipeline push` and `pipeline pull`: a pipeline's current entries between the local
 * store and the remote one (`dvc push` / `dvc pull`). Both walk the stages in order,
 * fingerprinting each from its upstream entries as `run` does; `pull` can fingerprint a
 * stage from a remote manifest alone, so pulling only `evaluate` does not fetch the
 * model it was made from.
 */
import { Effect, Option } from "effect"
import { UsageError } from "./errors.ts"
import { type FingerprintMaterial, fingerprintOf } from "./fingerprint.ts"
import { describeStageIds, resolveStageIds } from "./matrix.ts"
import type { Pipeline, ResolvedStage } from "./pipeline.ts"
import { RemoteStore } from "./remote.ts"
import { Reporter } from "./reporter.ts"
import { computeMaterial, expire, remoteEntry, transferProgress } from "./runner.ts"
import { ArtifactStore, type Entry, type Manifest } from "./store.ts"

export interface TransferLine {
  readonly id: string
  readonly fingerprint: string | undefined
  /** pushed, present (the remote had it), pulled, here (the local store had it), or missing. */
  readonly result: "pushed" | "present" | "pulled" | "here" | "missing"
  readonly detail?: string
}

/** The stage ids a command names (a base id stands for its variants), or every stage. */
export const selectStages = (pipeline: Pipeline, names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    if (names.length === 0) return new Set(pipeline.stages.map((s) => s.id))
    const selected = new Set<string>()
    for (const name of names) {
      const ids = resolveStageIds(pipeline, name)
      if (ids === undefined) return yield* new UsageError({ message: `there is no stage "${name}" in ${pipeline.spec.file} (stages: ${describeStageIds(pipeline)})` })
      for (const id of ids) selected.add(id)
    }
    return selected
  })

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`

/**
 * Each stage in order, fingerprinted from the entries of the stages it needs (undefined
 * when one of them has none); `visit` returns the entry that stands for the stage below it.
 */
const walk = <E, R>(
  pipeline: Pipeline,
  visit: (stage: ResolvedStage, fingerprint: string | undefined, material: FingerprintMaterial | undefined) => Effect.Effect<Entry | undefined, E, R>
) =>
  Effect.gen(function* () {
    const entries = new Map<string, Entry>()
    for (const stage of pipeline.stages) {
      const ready = stage.needs.every((need) => entries.has(need))
      const material = ready ? yield* computeMaterial(pipeline, stage, entries) : undefined
      const entry = yield* visit(stage, material === undefined ? undefined : fingerprintOf(material), material)
      if (entry !== undefined) entries.set(stage.id, entry)
    }
    return entries
  })

/** The local store's current entry of a stage, if it has one. */
const localEntry = (stage: ResolvedStage, fingerprint: string) =>
  Effect.gen(function* () {
    const found = expire(stage, yield* (yield* ArtifactStore).lookup(fingerprint))
    return found._tag === "Hit" ? found.entry : undefined
  })

const progressOf = (id: string, unit: string) => Effect.map(Reporter, (reporter) => transferProgress(reporter, id, unit))

const bytesOf = (manifest: Manifest) => Object.values(manifest.contents).reduce((sum, f) => sum + f.bytes, 0)

export const pushPipeline = (pipeline: Pipeline, names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore
    const remote = yield* RemoteStore
    const selected = yield* selectStages(pipeline, names)
    const lines: Array<TransferLine> = []
    yield* walk(pipeline, (stage, fingerprint) =>
      Effect.gen(function* () {
        const entry = fingerprint === undefined ? undefined : yield* localEntry(stage, fingerprint)
        if (!selected.has(stage.id) || entry === undefined) {
          if (selected.has(stage.id)) {
            lines.push({ id: stage.id, fingerprint, result: "missing", detail: fingerprint === undefined ? "an upstream stage is not cached here" : "not cached here for the current pipeline: run it first" })
          }
          return entry
        }
        // The parts it was made with (DPO's reference log-probabilities) go with it.
        for (const part of entry.manifest.parts) {
          const partEntry = yield* store.lookup(part)
          if (partEntry._tag === "Hit") yield* remote.push(partEntry.entry)
        }
        const result = yield* remote.push(entry, { progress: yield* progressOf(stage.id, "files pushed") })
        lines.push({ id: stage.id, fingerprint, result, detail: mb(bytesOf(entry.manifest)) })
        return entry
      })
    )
    const record = yield* store.readRun(pipeline.spec.file)
    if (record !== undefined) yield* remote.pushRun(record)
    return lines
  })

export const pullPipeline = (pipeline: Pipeline, names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore
    const remote = yield* RemoteStore
    const selected = yield* selectStages(pipeline, names)
    const lines: Array<TransferLine> = []
    // What is pulled is recorded as a run would, so that gc keeps it.
    const record = (stage: ResolvedStage, fingerprint: string, material: FingerprintMaterial, entry: Entry) =>
      store.recordStage(pipeline.spec.file, pipeline.spec.name, stage.id, {
        fingerprint,
        material,
        outputDigest: entry.manifest.outputDigest,
        finishedAt: new Date().toISOString(),
        ...(entry.manifest.parts.length > 0 && { parts: entry.manifest.parts })
      })
    const missing = (stage: ResolvedStage, fingerprint: string | undefined, detail: string): Effect.Effect<Entry | undefined> =>
      Effect.sync(() => {
        if (selected.has(stage.id)) lines.push({ id: stage.id, fingerprint, result: "missing", detail })
        return undefined
      })
    yield* walk(pipeline, (stage, fingerprint, material) =>
      Effect.gen(function* () {
        if (fingerprint === undefined || material === undefined) return yield* missing(stage, fingerprint, "an upstream stage is in neither store")
        const local = yield* localEntry(stage, fingerprint)
        if (local !== undefined) {
          if (selected.has(stage.id)) {
            lines.push({ id: stage.id, fingerprint, result: "here" })
            yield* record(stage, fingerprint, material, local)
          }
          return local
        }
        const found = yield* remote.lookup(fingerprint)
        if (found._tag !== "Found") return yield* missing(stage, fingerprint, found._tag === "Damaged" ? found.reason : `not in ${remote.location.url}`)
        // Only its digest is needed, to fingerprint what comes after it.
        if (!selected.has(stage.id)) return remoteEntry(remote, found.manifest)
        const pulled = yield* remote.pull(found.manifest, yield* progressOf(stage.id, "files pulled")).pipe(Effect.either)
        if (pulled._tag === "Left") return yield* missing(stage, fingerprint, `${pulled.left.message}: not used`)
        lines.push({ id: stage.id, fingerprint, result: "pulled", detail: mb(bytesOf(found.manifest)) })
        yield* record(stage, fingerprint, material, pulled.right)
        return pulled.right
      })
    )
    return lines
  })

/**
 * The manifest of each stage's current entry, from the local store or, when there is
 * one, the remote (manifests only, no data): what `compare` reads after a queue run,
 * whose entries are all in the remote.
 */
export const currentManifests = (pipeline: Pipeline) =>
  Effect.gen(function* () {
    const remote = Option.getOrUndefined(yield* Effect.serviceOption(RemoteStore))
    const entries = yield* walk(pipeline, (stage, fingerprint) =>
      Effect.gen(function* () {
        if (fingerprint === undefined) return undefined
        const local = yield* localEntry(stage, fingerprint)
        if (local !== undefined || remote === undefined) return local
        const found = yield* remote.lookup(fingerprint)
        if (found._tag !== "Found") return undefined
        const entry = remoteEntry(remote, found.manifest)
        return expire(stage, { _tag: "Hit", entry })._tag === "Hit" ? entry : undefined
      })
    )
    return new Map<string, Manifest>([...entries].map(([id, entry]) => [id, entry.manifest]))
  })
