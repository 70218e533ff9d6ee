/**
 * The public stage interface. Built-in stages (`stages/*.ts`) and user plug-ins
 * are written against exactly this module: a name, a version, a params Schema,
 * the kinds of artifact accepted from `needs` and produced, and a `run` Effect.
 */
import type { FileSystem, Path } from "@effect/platform"
import type { Effect, Schema } from "effect"
import type { ArtifactKind, Metrics, Outputs } from "./artifact.ts"
import type { ComputeBackend } from "./backend/service.ts"
import type { Hub } from "./hub/index.ts"
import type { StageError } from "./errors.ts"

/** An upstream stage's outputs, as seen by a downstream stage. */
export interface Upstream {
  readonly id: string
  readonly outputs: Outputs
  readonly metrics: Metrics
}

/** Bytes read of those there are to read. */
export interface ByteProgress {
  readonly done: number
  readonly total: number
}

/** What a stage run may read and where it writes. */
export interface StageContext<P> {
  /** The stage's id in the pipeline file. */
  readonly id: string
  readonly params: P
  /** The outputs of the stages named in `needs`, in that order. */
  readonly inputs: ReadonlyArray<Upstream>
  /** The folder of the pipeline file: relative paths in params resolve against it. */
  readonly baseDir: string
  /** An empty staging folder: every output must be written inside it. */
  readonly outDir: string
  /**
   * A folder that survives interruption (Ctrl-C, kill -9, a crash) for as long as
   * the stage's fingerprint is unchanged: checkpoints go here, so a re-run resumes.
   * It is removed once the stage's entry is committed.
   */
  readonly workDir: string
  /**
   * Says the work folder is at a consistent point (a checkpoint written whole): with a
   * remote store, it is mirrored there, so that another machine can resume the stage.
   */
  readonly checkpointed: Effect.Effect<void>
  /**
   * Reports progress (`done` of `total` units, such as rows or steps), and for stages
   * that stream data, the bytes read so far: the reporter shows both, the rate and an ETA.
   */
  readonly progress: (done: number, total: number, unit?: string, bytes?: ByteProgress) => Effect.Effect<void>
  /** A line for the human log (stderr). */
  readonly log: (message: string) => Effect.Effect<void>
  /**
   * A part of the stage's work, cached as an entry of its own: DPO's reference
   * log-probabilities, which do not depend on `beta`. The part's fingerprint is the
   * stage's (code, inputs, files, hub revisions) with only the params named in `params`,
   * so a re-run that changed another param finds it cached. `produce` writes the part's
   * outputs into the folder it is given. gc keeps a part as long as an entry made with
   * it is kept.
   */
  readonly cachedPart: (
    name: string,
    params: ReadonlyArray<string>,
    produce: (outDir: string) => Effect.Effect<Outputs, StageError, StageServices>
  ) => Effect.Effect<CachedPart, StageError, StageServices>
}

export interface CachedPart {
  readonly outputs: Outputs
  /** Whether it came from the cache (else it was produced now). */
  readonly reused: boolean
}

export interface StageResult {
  readonly outputs: Outputs
  readonly metrics?: Metrics
}

/** The services a stage's `run` may use: files, paths, the Hugging Face hub client and the compute backend. */
export type StageServices = FileSystem.FileSystem | Path.Path | Hub | ComputeBackend

export interface StageDefinition<P = unknown, I = unknown> {
  /** How the stage is named in `uses:` (built-ins) or reported (plug-ins). */
  readonly name: string
  /** Bump when the stage's semantics change: part of every fingerprint. */
  readonly version: string
  readonly description: string
  /** The `with:` block. Decoded with every error reported and unknown keys rejected. */
  readonly params: Schema.Schema<P, I, never>
  /** The artifact kinds accepted from `needs`, and how many upstream stages. */
  readonly accepts: {
    readonly kinds: ReadonlyArray<ArtifactKind>
    readonly min: number
    readonly max: number
  }
  /** The kinds this stage writes. */
  readonly produces: ReadonlyArray<ArtifactKind>
  /** Param keys that never enter a fingerprint, a manifest or a log (tokens, passwords). */
  readonly secrets?: ReadonlyArray<string>
  /**
   * Param keys that change how the stage runs but not what it produces
   * (concurrency, timeouts, retries): left out of the fingerprint, so tuning them
   * re-runs nothing.
   */
  readonly executionParams?: ReadonlyArray<string>
  /**
   * Local files this run reads, as absolute paths. Their contents are hashed into
   * the fingerprint, so editing one re-runs the stage and everything after it.
   */
  readonly inputFiles?: (
    params: P,
    baseDir: string
  ) => Effect.Effect<ReadonlyArray<string>, StageError, StageServices>
  /**
   * Versions of what the run reads from outside the machine, such as a hub
   * repository's resolved commit sha: name → version. Part of the fingerprint, so
   * a dataset changed upstream is a changed input.
   */
  readonly externalInputs?: (
    params: P,
    baseDir: string
  ) => Effect.Effect<Readonly<Record<string, string>>, StageError, StageServices>
  /**
   * For outputs that go stale with time (web data): how long, in milliseconds, a
   * cached entry stays valid. Undefined: until its inputs change or it is forced.
   */
  readonly maxAgeMs?: (params: P) => number | undefined
  readonly run: (ctx: StageContext<P>) => Effect.Effect<StageResult, StageError, StageServices>
}

/** Declares a stage. The identity function, there for inference and for plug-in authors. */
export const defineStage = <P, I>(definition: StageDefinition<P, I>): StageDefinition<P, I> => definition
