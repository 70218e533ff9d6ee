/**
 * `pipeline push` and `pipeline pull`: a pipeline's current entries between the local
 * store and the remote one (`dvc push` / `dvc pull`). Both walk the stages in order,
 * fingerprinting each from its upstream entries as `run` does; `pull` can fingerprint a
 * stage from a remote manifest alone, so pulling only `evaluate` does not fetch the
 * model it was made from.
 */
import { Effect, Option } from "effect"
import { UsageError } from "./errors.ts"
import { fingerprintOf } from "./fingerprint.ts"
import { describeStageIds, resolveStageIds } from "./matrix.ts"
import type { Pipeline } from "./pipeline.ts"
import { RemoteStore } from "./remote.ts"
import { Reporter } from "./reporter.ts"
import { computeMaterial, expire, remoteEntry } from "./runner.ts"
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

export const pushPipeline = (pipeline: Pipeline, names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore
    const remote = yield* RemoteStore
    const reporter = yield* Reporter
    const selected = yield* selectStages(pipeline, names)
    const entries = new Map<string, Entry>()
    const lines: Array<TransferLine> = []
    for (const stage of pipeline.stages) {
      if (stage.needs.some((need) => !entries.has(need))) {
        if (selected.has(stage.id)) lines.push({ id: stage.id, fingerprint: undefined, result: "missing", detail: "an upstream stage is not cached here" })
        continue
      }
      const fingerprint = fingerprintOf(yield* computeMaterial(pipeline, stage, entries))
      const found = expire(stage, yield* store.lookup(fingerprint))
      if (found._tag !== "Hit") {
        if (selected.has(stage.id)) lines.push({ id: stage.id, fingerprint, result: "missing", detail: "not cached here for the current pipeline: run it first" })
        continue
      }
      entries.set(stage.id, found.entry)
      if (!selected.has(stage.id)) continue
      // The parts it was made with (DPO's reference log-probabilities) go with it.
      for (const part of found.entry.manifest.parts) {
        const partEntry = yield* store.lookup(part)
        if (partEntry._tag === "Hit") yield* remote.push(partEntry.entry)
      }
      const bytes = Object.values(found.entry.manifest.contents).reduce((sum, f) => sum + f.bytes, 0)
      const result = yield* remote.push(found.entry, {
        progress: ({ files, totalFiles, bytes: done, totalBytes }) =>
          Effect.runSync(reporter.progress(stage.id, { done: files, total: totalFiles, unit: "files pushed", bytes: { done, total: totalBytes } }))
      })
      lines.push({ id: stage.id, fingerprint, result, detail: mb(bytes) })
    }
    const record = yield* store.readRun(pipeline.spec.file)
    if (record !== undefined) yield* remote.pushRun(record)
    return lines
  })

export const pullPipeline = (pipeline: Pipeline, names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore
    const remote = yield* RemoteStore
    const reporter = yield* Reporter
    const selected = yield* selectStages(pipeline, names)
    const entries = new Map<string, Entry>()
    const lines: Array<TransferLine> = []
    for (const stage of pipeline.stages) {
      if (stage.needs.some((need) => !entries.has(need))) {
        if (selected.has(stage.id)) lines.push({ id: stage.id, fingerprint: undefined, result: "missing", detail: "an upstream stage is in neither store" })
        continue
      }
      const fingerprint = fingerprintOf(yield* computeMaterial(pipeline, stage, entries))
      const local = expire(stage, yield* store.lookup(fingerprint))
      if (local._tag === "Hit") {
        entries.set(stage.id, local.entry)
        if (selected.has(stage.id)) lines.push({ id: stage.id, fingerprint, result: "here" })
        continue
      }
      const found = yield* remote.lookup(fingerprint)
      if (found._tag !== "Found") {
        if (selected.has(stage.id)) lines.push({ id: stage.id, fingerprint, result: "missing", detail: found._tag === "Damaged" ? found.reason : `not in ${remote.location.url}` })
        continue
      }
      if (!selected.has(stage.id)) {
        // Only its digest is needed, to fingerprint what comes after it.
        entries.set(stage.id, remoteEntry(remote, found.manifest))
        continue
      }
      const bytes = Object.values(found.manifest.contents).reduce((sum, f) => sum + f.bytes, 0)
      const pulled = yield* remote.pull(found.manifest, ({ files, totalFiles, bytes: done, totalBytes }) =>
        Effect.runSync(reporter.progress(stage.id, { done: files, total: totalFiles, unit: "files pulled", bytes: { done, total: totalBytes } }))
      ).pipe(Effect.either)
      if (pulled._tag === "Left") {
        lines.push({ id: stage.id, fingerprint, result: "missing", detail: `${pulled.left.message}: not used` })
        continue
      }
      entries.set(stage.id, pulled.right)
      lines.push({ id: stage.id, fingerprint, result: "pulled", detail: mb(bytes) })
    }
    return lines
  })

/**
 * The manifest of each stage's current entry, from the local store or, when there is
 * one, the remote (manifests only, no data): what `compare` reads after a queue run,
 * whose entries are all in the remote.
 */
export const currentManifests = (pipeline: Pipeline) =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore
    const remote = Option.getOrUndefined(yield* Effect.serviceOption(RemoteStore))
    const entries = new Map<string, Entry>()
    for (const stage of pipeline.stages) {
      if (stage.needs.some((need) => !entries.has(need))) continue
      const fingerprint = fingerprintOf(yield* computeMaterial(pipeline, stage, entries))
      const local = expire(stage, yield* store.lookup(fingerprint))
      if (local._tag === "Hit") {
        entries.set(stage.id, local.entry)
        continue
      }
      if (remote === undefined) continue
      const found = yield* remote.lookup(fingerprint)
      if (found._tag !== "Found") continue
      const entry = remoteEntry(remote, found.manifest)
      if (expire(stage, { _tag: "Hit", entry })._tag === "Hit") entries.set(stage.id, entry)
    }
    return new Map<string, Manifest>([...entries].map(([id, entry]) => [id, entry.manifest]))
  })
