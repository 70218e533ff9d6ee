/**
 * Resolves `uses:` to a stage definition: a built-in name, or a path to a
 * TypeScript/JavaScript module whose default export is a `defineStage(...)`.
 * Each resolved stage carries a code version: its declared version plus a hash
 * of its module source, so editing a stage re-runs it.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Schema } from "effect"
import { createHash } from "node:crypto"
import { fileURLToPath, pathToFileURL } from "node:url"
import { sourceUrl } from "./paths.ts"
import type { StageDefinition } from "./stage.ts"

/**
 * Built-in stages, by the name used in `uses:`: where the source is (hashed into the code
 * version) and how to load it. Loaded lazily: `pipeline dag` never imports a model. The
 * `import()`s are spelled out so that the start-up bundle (bin/pipeline.js) holds them.
 */
export const BUILTIN_STAGES: Readonly<Record<string, { readonly source: string; readonly load: () => Promise<{ default?: unknown }> }>> = {
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

export interface ResolvedImpl {
  readonly definition: AnyStage
  /** `fetch` for a built-in, the module path relative to the pipeline file for a plug-in. */
  readonly identity: string
  readonly modulePath: string
  /** `<version>+<sha256 of the module source, 16 hex>`. */
  readonly codeVersion: string
}

export const isModulePath = (uses: string): boolean =>
  uses.startsWith("./") || uses.startsWith("../") || uses.startsWith("/") || /\.(m?[jt]s)$/.test(uses)

/** Why a `uses:` could not be resolved; the caller locates it in the file. */
export class ResolveFailure {
  constructor(readonly message: string) {}
}

const loaded = new Map<string, ResolvedImpl>()

export const resolveStage = (uses: string, baseDir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const builtin = BUILTIN_STAGES[uses]
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
    const source = yield* fs.readFile(modulePath).pipe(
      Effect.mapError(() => new ResolveFailure(`cannot read the stage module ${uses} (resolved to ${modulePath})`))
    )
    const imported = yield* Effect.tryPromise({
      try: () => (builtin !== undefined ? builtin.load() : importPlugin(modulePath)),
      catch: (cause) => new ResolveFailure(`the stage module ${uses} failed to load: ${firstLine(cause)}`)
    })
    const definition = imported.default
    if (!isStageDefinition(definition)) {
      return yield* Effect.fail(
        new ResolveFailure(`the stage module ${uses} does not export a stage: its default export must be defineStage({ name, version, params, accepts, produces, run })`)
      )
    }
    const hash = createHash("sha256").update(source).digest("hex").slice(0, 16)
    const impl: ResolvedImpl = {
      definition,
      identity: builtin !== undefined ? uses : path.relative(baseDir, modulePath).split(path.sep).join("/"),
      modulePath,
      codeVersion: `${definition.version}+${hash}`
    }
    loaded.set(modulePath, impl)
    return impl
  })

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
