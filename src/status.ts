/**
 * `pipeline status`: for each stage, fresh or stale and why, without running
 * anything. A stage is fresh when an entry for its current fingerprint is in the
 * store; a stale stage makes everything below it stale.
 */
import { Effect, Option } from "effect"
import { explainChange, fingerprintOf } from "./fingerprint.ts"
import type { Pipeline } from "./pipeline.ts"
import { RemoteStore } from "./remote.ts"
import { computeMaterial, expire, formatAge, remoteEntry } from "./runner.ts"
import { ArtifactStore, type Entry } from "./store.ts"

export interface StageStatus {
  readonly id: string
  readonly uses: string
  readonly state: "fresh" | "stale"
  readonly reasons: ReadonlyArray<string>
  readonly fingerprint: string | undefined
  readonly entry: Entry | undefined
  /** Fresh in the remote store only (`pull`, or a run, fetches it). */
  readonly remote?: boolean
}

export const pipelineStatus = (pipeline: Pipeline) =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore
    const remote = Option.getOrUndefined(yield* Effect.serviceOption(RemoteStore))
    const record = yield* store.readRun(pipeline.spec.file)
    const entries = new Map<string, Entry>()
    const statuses: Array<StageStatus> = []
    for (const stage of pipeline.stages) {
      const staleUpstream = stage.needs.filter((need) => !entries.has(need))
      if (staleUpstream.length > 0) {
        statuses.push({
          id: stage.id,
          uses: stage.uses,
          state: "stale",
          reasons: staleUpstream.map((need) => `upstream \`${need}\` is stale`),
          fingerprint: undefined,
          entry: undefined
        })
        continue
      }
      const material = yield* computeMaterial(pipeline, stage, entries)
      const fingerprint = fingerprintOf(material)
      const found = expire(stage, yield* store.lookup(fingerprint))
      if (found._tag === "Hit") {
        entries.set(stage.id, found.entry)
        statuses.push({ id: stage.id, uses: stage.uses, state: "fresh", reasons: [], fingerprint, entry: found.entry })
        continue
      }
      // Not here, but in the remote store: fresh, and a run pulls it instead of running it.
      const elsewhere = remote === undefined ? undefined : yield* remote.lookup(fingerprint)
      if (elsewhere?._tag === "Found") {
        const entry = remoteEntry(remote!, elsewhere.manifest)
        if (expire(stage, { _tag: "Hit", entry })._tag === "Hit") {
          entries.set(stage.id, entry)
          statuses.push({ id: stage.id, uses: stage.uses, state: "fresh", reasons: [], fingerprint, entry, remote: true })
          continue
        }
      }
      const reasons = found._tag === "Damaged" || found._tag === "Expired" ? [found.reason] : explainChange(record?.stages[stage.id]?.material, material)
      statuses.push({
        id: stage.id,
        uses: stage.uses,
        state: "stale",
        reasons: reasons.length > 0 ? reasons : ["the cached entry is gone (garbage-collected or deleted)"],
        fingerprint,
        entry: undefined
      })
    }
    return statuses
  })

const age = (iso: string): string => formatAge(Date.now() - Date.parse(iso))

export const renderStatus = (statuses: ReadonlyArray<StageStatus>): string => {
  const width = Math.max(5, ...statuses.map((s) => s.id.length))
  return statuses
    .map((s) =>
      s.state === "fresh"
        ? `${s.id.padEnd(width)}  fresh  (${s.remote === true ? "in the remote, made" : "cached"} ${age(s.entry!.manifest.createdAt)} ago, ${s.fingerprint!.slice(0, 12)})`
        : `${s.id.padEnd(width)}  stale  ${s.reasons.join("; ")}`
    )
    .join("\n")
}

export const statusJson = (statuses: ReadonlyArray<StageStatus>) =>
  statuses.map((s) => ({
    id: s.id,
    uses: s.uses,
    state: s.state,
    reasons: s.reasons,
    fingerprint: s.fingerprint ?? null,
    cachedAt: s.entry?.manifest.createdAt ?? null,
    entry: s.entry?.dir ?? null,
    ...(s.remote === true && { remote: true })
  }))
