/**
 * Resolves `uses:` to a stage definition: a built-in name, or a path to a
 * TypeScript/JavaScript module whose default export is a `defineStage(...)`.
 * `codeVersions` then gives each its code version: the declared version plus a hash of
 * the module's whole import closure (code-version.ts), so editing a stage, or anything
 * it imports, re-runs it. Built-in stages are keyed the same way as plug-ins.
 */
import { FileSystem, Path } from "@effect/platform"
import { Duration, Effect, Schema } from "effect"
import { fileURLToPath, pathToFileURL } from "node:url"
import { closureHash, type CodeClosure, ClosureFailure, codeClosures } from "./code-version.ts"
import { sourceUrl } from "./paths.ts"
import type { StageDefinition } from "./stage.ts"

/**
 * Built-in stages, by the name used in `uses:`: where the source is (hashed into the code
 * version) and how to load it. Loaded lazily: `pipeline dag` never imports a model. The
 * `import()`s are spelled out so that the start-up bundle (bin/pipeline.js) holds them.
 */
export const BUILTIN_STAGES: Readonly<Record<string, { readonly source: string; readonly load: () => Promise<{ default?: unknown }> }>> = {
  dpo: { source: "../stages/dpo.ts", load: () => import("../stages/dpo.ts") },
  evaluate: { source: "../stages/evaluate.ts", load: () => import("../stages/evaluate.ts") },
  fetch: { source: "../stages/fetch.ts", load: () => import("../stages/fetch.ts") },
  filter: { source: "../stages/filter.ts", load: () => import("../stages/filter.ts") },
  generate: { source: "../stages/generate.ts", load: () => import("../stages/generate.ts") },
  map: { source: "../stages/map.ts", load: () => import("../stages/map.ts") },
  select: { source: "../stages/select.ts", load: () => import("../stages/select.ts") },
  shuffle: { source: "../stages/shuffle.ts", load: () => import("../stages/shuffle.ts") },
  tokenize: { source: "../stages/tokenize.ts", load: () => import("../stages/tokenize.ts") },
  train: { source: "../stages/train.ts", load: () => import("../stages/train.ts") },
  "word-problems": { source: "../stages/word-problems.ts", load: () => import("../stages/word-problems.ts") }
}

// Params and results differ per stage; the registry holds them all behind one type.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyStage = StageDefinition<any, any>

export interface ResolvedDefinition {
  readonly definition: AnyStage
  /** `fetch` for a built-in, the module path relative to the pipeline file for a plug-in. */
  readonly identity: string
  readonly modulePath: string
}

export interface ResolvedImpl extends ResolvedDefinition {
  /** `<version>+<16 hex over the module's import closure>`. */
  readonly codeVersion: string
  /** What the code version covers: each file of the closure and each package, for "why did this re-run". */
  readonly code: CodeClosure
}

export const isModulePath = (uses: string): boolean =>
  uses.startsWith("./") || uses.startsWith("../") || uses.startsWith("/") || /\.(m?[jt]s)$/.test(uses)

/** Why a `uses:` could not be resolved; the caller locates it in the file. */
export class ResolveFailure {
  constructor(readonly message: string) {}
}

const loaded = new Map<string, ResolvedDefinition>()

export const resolveStage = (uses: string, baseDir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const builtin = Object.hasOwn(BUILTIN_STAGES, uses) ? BUILTIN_STAGES[uses] : undefined
    const modulePath = builtin !== undefined
      ? fileURLToPath(sourceUrl(builtin.source))
      : isModulePath(uses)
      ? path.resolve(baseDir, uses)
      : undefined
    if (modulePath === undefined) {
      return yield* Effect.fail(new ResolveFailure(`unknown stage "${uses}"`))
    }
    const cached = loaded.get(modulePath)
    if (cached) return cached
    if (!(yield* fs.exists(modulePath).pipe(Effect.orElseSucceed(() => false)))) {
      return yield* Effect.fail(new ResolveFailure(`cannot read the stage module ${uses} (resolved to ${modulePath})`))
    }
    const timeout = loadTimeout()
    if (typeof timeout === "string") return yield* Effect.fail(new ResolveFailure(timeout))
    const imported = yield* Effect.tryPromise({
      try: () => (builtin !== undefined ? builtin.load() : importPlugin(modulePath)),
      catch: (cause) => new ResolveFailure(`the stage module ${uses} failed to load: ${firstLine(cause)}`)
    }).pipe(
      Effect.timeoutFail({
        duration: Duration.seconds(timeout),
        onTimeout: () =>
          new ResolveFailure(
            `the stage module ${uses} did not finish loading within ${timeout} s (does its top-level code wait for something, such as a top-level await that never settles?); if it needs longer, set ${LOAD_TIMEOUT_VARIABLE}=<seconds>`
          )
      })
    )
    const definition = imported.default
    if (!isStageDefinition(definition)) {
      return yield* Effect.fail(
        new ResolveFailure(`the stage module ${uses} does not export a stage: its default export must be defineStage({ name, version, params, accepts, produces, run })`)
      )
    }
    const resolved: ResolvedDefinition = {
      definition,
      identity: builtin !== undefined ? uses : path.relative(baseDir, modulePath).split(path.sep).join("/"),
      modulePath
    }
    loaded.set(modulePath, resolved)
    return resolved
  })

/**
 * The code versions of resolved stages, found together (one esbuild pass). The files are
 * read afresh on every call: a module edited since it was imported still changes the
 * fingerprint, and `status` says which file changed.
 */
export const codeVersions = (stages: ReadonlyArray<ResolvedDefinition>, memoFile?: string) =>
  Effect.tryPromise({
    try: () => codeClosures(stages.map((s) => s.modulePath), memoFile),
    catch: (cause) => new ResolveFailure(cause instanceof ClosureFailure ? `cannot read the imports of a stage module: ${cause.message}` : `cannot read the imports of a stage module: ${String(cause)}`)
  }).pipe(
    Effect.map((closures) =>
      stages.map((stage): ResolvedImpl => {
        const code = closures.get(stage.modulePath)!
        return { ...stage, code, codeVersion: `${stage.definition.version}+${closureHash(code)}` }
      })
    )
  )

/** How long a stage module may take to load (its top-level code), in seconds. */
export const LOAD_TIMEOUT_VARIABLE = "PIPELINE_PLUGIN_LOAD_TIMEOUT"
const DEFAULT_LOAD_TIMEOUT_SECONDS = 60

/** The load timeout from the environment, or why its value is not one. */
const loadTimeout = (): number | string => {
  const text = process.env[LOAD_TIMEOUT_VARIABLE]
  if (text === undefined || text.trim() === "") return DEFAULT_LOAD_TIMEOUT_SECONDS
  const seconds = Number(text)
  return Number.isFinite(seconds) && seconds > 0
    ? seconds
    : `${LOAD_TIMEOUT_VARIABLE}=${text}: expected a number of seconds greater than 0 (default ${DEFAULT_LOAD_TIMEOUT_SECONDS})`
}

/**
 * A plug-in module, by path. TypeScript needs a loader: from source (bin/pipeline.js
 * without its bundle, the tests) one is already there; the start-up bundle registers
 * tsx's on the first TypeScript plug-in, so that runs without one never pay for it.
 */
const importPlugin = async (modulePath: string): Promise<{ default?: unknown }> => {
  const url = pathToFileURL(modulePath).href
  try {
    return (await import(url)) as { default?: unknown }
  } catch (error) {
    if ((error as { code?: string }).code !== "ERR_UNKNOWN_FILE_EXTENSION") throw error
    typeScriptLoader ??= import("tsx/esm/api").then(({ register }) => void register())
    await typeScriptLoader
    // Node remembers the failed load under the plain URL: ask again under another.
    return (await import(`${url}?typescript`)) as { default?: unknown }
  }
}

let typeScriptLoader: Promise<void> | undefined

/** Enough of a load error to act on: a transform error's location sits on its second line. */
const firstLine = (cause: unknown): string =>
  (cause instanceof Error ? cause.message : String(cause)).split("\n").filter((l) => l.trim() !== "").slice(0, 2).join(" ")

const isStageDefinition = (value: unknown): value is AnyStage => {
  if (typeof value !== "object" || value === null) return false
  const v = value as Record<string, unknown>
  return typeof v.name === "string" && typeof v.version === "string" && typeof v.run === "function" &&
    Schema.isSchema(v.params) && typeof v.accepts === "object" && v.accepts !== null && Array.isArray(v.produces)
}

/** All built-in definitions, for `pipeline schema` and the README. */
export const builtinDefinitions = Effect.forEach(Object.keys(BUILTIN_STAGES), (name) =>
  resolveStage(name, process.cwd()).pipe(Effect.map((impl) => [name, impl.definition] as const)))
