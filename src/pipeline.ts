/**
 * A validated pipeline: the spec, its sweeps expanded into variants (matrix.ts), each
 * stage resolved to its definition with decoded params, the graph checked, and the
 * stages in run order. Everything a user can get wrong in the file is reported
 * here, together, before anything runs.
 */
import { Effect, Either, Schema } from "effect"
import { checkGraph, topoOrder } from "./dag.ts"
import { decodeWithDiagnostics, type Locate } from "./diagnostics.ts"
import { type Diagnostic, SpecError, suggestion } from "./errors.ts"
import { expandMatrix, toFileOf, type Variant } from "./matrix.ts"
import { BUILTIN_STAGES, codeVersions, type ResolvedDefinition, resolveStage, type ResolvedImpl } from "./registry.ts"
import { type Override, type PipelineSpec, readSpec } from "./spec.ts"

export interface ResolvedStage {
  readonly id: string
  readonly uses: string
  readonly needs: ReadonlyArray<string>
  readonly impl: ResolvedImpl
  /** Decoded params, defaults filled in: what the stage receives. */
  readonly params: unknown
  /** Encoded params without secrets and execution params: what fingerprints and manifests record. */
  readonly recordedParams: Readonly<Record<string, unknown>>
  /** Set on a stage made by a sweep (`train[learning_rate=2e-5]`) or below one: its base stage and label. */
  readonly variant?: Variant
}

export interface Pipeline {
  /** The file's stages, unexpanded; `locate` also takes the ids of variants. */
  readonly spec: PipelineSpec
  /** Topological order. */
  readonly stages: ReadonlyArray<ResolvedStage>
}

export interface LoadOptions {
  /** Where to remember stage modules' import graphs between runs (in the cache folder): saves an esbuild pass. */
  readonly codeMemo?: string
}

export const loadPipeline = (file: string, overrides: ReadonlyArray<Override> = [], options: LoadOptions = {}) =>
  Effect.gen(function* () {
    // Problems of the file's own keys (`name: [1]`) come with the stages' params' problems, not before them.
    const { spec, diagnostics: fileProblems } = yield* readSpec(file, overrides)
    const diagnostics: Array<Diagnostic> = [...fileProblems, ...checkGraph(spec.stages, spec.locate)]
    const definitions = new Map<string, ResolvedDefinition>()
    for (const stage of spec.stages) {
      const impl = yield* resolveStage(stage.uses, spec.baseDir).pipe(Effect.either)
      if (Either.isRight(impl)) {
        definitions.set(stage.id, impl.right)
        continue
      }
      const builtin = Object.hasOwn(BUILTIN_STAGES, stage.uses)
      const hint = builtin || stage.uses.includes("/") ? "" : suggestion(stage.uses, Object.keys(BUILTIN_STAGES))
      diagnostics.push({
        location: spec.locate(["stages", stage.id, "uses"], "value"),
        path: `stages.${stage.id}.uses`,
        message: `${impl.left.message}${hint}${hint === "" && !builtin && !stage.uses.includes("/") ? ` (built-in stages: ${Object.keys(BUILTIN_STAGES).join(", ")}; a plug-in is a path such as ./stages/my-stage.ts)` : ""}`
      })
    }
    // Sweeps expand before params are decoded: each variant's params are checked, located in the file.
    const expanded = expandMatrix(spec.stages)
    const toFile = toFileOf(expanded)
    const paramProblems = new Map<string, Diagnostic>()
    const resolved: Array<Omit<ResolvedStage, "impl"> & { readonly impl: ResolvedDefinition }> = []
    for (const stage of expanded) {
      const impl = definitions.get(stage.spec.id)
      if (impl === undefined) continue
      const definition = impl.definition
      const params = decodeWithDiagnostics(definition.params, stage.with, ["stages", stage.id, "with"], spec.locate, toFile)
      if (Either.isLeft(params)) {
        // A problem outside the swept params is the same in every variant: said once.
        for (const problem of params.left) paramProblems.set(`${problem.location} ${problem.path}: ${problem.message}`, problem)
        continue
      }
      const encoded = Schema.encodeSync(definition.params)(params.right) as Record<string, unknown>
      const untracked = new Set([...(definition.secrets ?? []), ...(definition.executionParams ?? [])])
      resolved.push({
        id: stage.id,
        uses: stage.spec.uses,
        needs: stage.needs,
        impl,
        params: params.right,
        recordedParams: Object.fromEntries(Object.entries(encoded).filter(([key]) => !untracked.has(key))),
        ...(stage.variant !== undefined && { variant: stage.variant })
      })
    }
    diagnostics.push(...paramProblems.values())
    if (diagnostics.length === 0) {
      diagnostics.push(...checkKinds(spec, spec.stages.map((stage) => ({ id: stage.id, needs: stage.needs, impl: definitions.get(stage.id)! }))))
    }
    if (diagnostics.length > 0) return yield* new SpecError({ file: spec.file, diagnostics })
    const impls = yield* codeVersions(resolved.map((stage) => stage.impl), options.codeMemo).pipe(
      Effect.mapError((failure) => new SpecError({ file: spec.file, diagnostics: [{ location: spec.file, path: "", message: failure.message }] }))
    )
    const stages = resolved.map((stage, i): ResolvedStage => ({ ...stage, impl: impls[i]! }))
    const locate: Locate = (path, at) => spec.locate(toFile(path, at), at)
    return { spec: { ...spec, locate }, stages: topoOrder(stages) } satisfies Pipeline
  })

/** Each stage gets the number and kinds of upstream artifacts it accepts. */
const checkKinds = (spec: PipelineSpec, stages: ReadonlyArray<{ readonly id: string; readonly needs: ReadonlyArray<string>; readonly impl: ResolvedDefinition }>): ReadonlyArray<Diagnostic> => {
  const byId = new Map(stages.map((s) => [s.id, s]))
  return stages.flatMap((stage): ReadonlyArray<Diagnostic> => {
    const { accepts, name } = stage.impl.definition
    const where = { location: spec.locate(["stages", stage.id, "needs"], "value"), path: `stages.${stage.id}.needs` }
    if (stage.needs.length < accepts.min || stage.needs.length > accepts.max) {
      const range = accepts.min === accepts.max ? `${accepts.min}` : accepts.max === Infinity ? `at least ${accepts.min}` : `${accepts.min} to ${accepts.max}`
      return [{
        ...where,
        location: stage.needs.length === 0 ? spec.locate(["stages", stage.id], "key") : where.location,
        message: `stage "${stage.id}" (${name}) needs ${range} upstream stage(s), got ${stage.needs.length}`
      }]
    }
    return stage.needs.flatMap((need, i) => {
      const upstream = byId.get(need)
      if (upstream === undefined) return []
      const produced = upstream.impl.definition.produces
      return produced.some((kind) => accepts.kinds.includes(kind))
        ? []
        : [{
          location: spec.locate(["stages", stage.id, "needs", i], "value"),
          path: where.path,
          message: `stage "${stage.id}" (${name}) reads ${accepts.kinds.join(" or ")}, but "${need}" (${upstream.impl.definition.name}) produces only ${produced.join(", ") || "nothing"}`
        }]
    })
  })
}
