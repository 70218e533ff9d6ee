/**
 * Every outcome a stage can have in a run, as a typed variant (after wireit's
 * `event.ts`). The reporter prints them; `--json` serialises them.
 */
import { Data } from "effect"
import type { Metrics, Outputs } from "./artifact.ts"

export type StageOutcome = Data.TaggedEnum<{
  /** The stage ran and its output was committed. */
  Ran: { readonly id: string; readonly fingerprint: string; readonly reason: string; readonly durationMs: number; readonly entryDir: string; readonly outputs: Outputs; readonly metrics: Metrics; readonly where?: Where }
  /** An entry with this fingerprint was in the store (or the remote store) and verified. */
  Cached: { readonly id: string; readonly fingerprint: string; readonly reason: string; readonly entryDir: string; readonly outputs: Outputs; readonly metrics: Metrics; readonly where?: Where }
  /** The stage would run (`--dry-run`), for this reason. */
  WouldRun: { readonly id: string; readonly fingerprint: string | undefined; readonly reason: string }
  Failed: { readonly id: string; readonly fingerprint: string | undefined; readonly reason: string; readonly durationMs: number }
  /** Not run: an upstream stage failed, or the stage was outside `--only` / `--until`. */
  Skipped: { readonly id: string; readonly reason: string }
}>

/** Where a stage ran and what the remote store did with its entry; absent parts mean "here" and "nothing". */
export interface Where {
  /** `host:pid` of the worker that ran the stage (queue executor). */
  readonly worker?: string
  /** `pulled` from the remote store, `pushed` to it, or `remote` (found there; a queue run does not fetch it). */
  readonly remote?: "pulled" | "pushed" | "remote"
}

export const StageOutcome = Data.taggedEnum<StageOutcome>()

export const statusOf = (outcome: StageOutcome): "ran" | "cached" | "would-run" | "failed" | "skipped" => {
  switch (outcome._tag) {
    case "Ran":
      return "ran"
    case "Cached":
      return "cached"
    case "WouldRun":
      return "would-run"
    case "Failed":
      return "failed"
    case "Skipped":
      return "skipped"
  }
}

/** One stage's entry in `pipeline run --json`. */
export const toJson = (outcome: StageOutcome) => ({
  id: outcome.id,
  status: statusOf(outcome),
  fingerprint: "fingerprint" in outcome ? outcome.fingerprint ?? null : null,
  reason: outcome.reason,
  durationMs: "durationMs" in outcome ? Math.round(outcome.durationMs) : 0,
  outputs: "outputs" in outcome ? { entry: outcome.entryDir, ...outcome.outputs } : null,
  metrics: "metrics" in outcome ? outcome.metrics : {},
  ...("where" in outcome && outcome.where?.worker !== undefined && { worker: outcome.where.worker }),
  ...("where" in outcome && outcome.where?.remote !== undefined && { remote: outcome.where.remote })
})
