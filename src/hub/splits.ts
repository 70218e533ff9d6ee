/**
 * Which revision's files make up a dataset config's splits: the repository's own
 * files when its card or its parquet folders declare the config in a format we
 * read, else the hub's parquet conversion, else whatever data files it has (see
 * `layout.ts` for each source's conventions). The same plan is made online, from the
 * hub's listing, and offline, from the cache's snapshot folders.
 */
import { Effect, Option } from "effect"
import type { RepoFile } from "./cache.ts"
import type { OnProgress } from "./download.ts"
import * as Errors from "./errors.ts"
import type { HubError } from "./errors.ts"
import { cardLayout, conversionLayout, type DataLayout, filesLayout, folderLayout, isReadable, type Splits } from "./layout.ts"
import type { RepoRef } from "./repo.ts"

/** A revision's files, and how to get one of them locally. */
export interface View {
  readonly revision: string
  readonly sha: string
  readonly files: ReadonlyArray<RepoFile>
  readonly fetch: (file: string, onProgress?: OnProgress) => Effect.Effect<string, HubError>
}

export interface Plan {
  readonly view: View
  readonly config: string
  readonly splits: Splits
}

/**
 * The config asked for, or the one to use when none is: the card's default, the
 * only one, or "default". `cachedAt` (offline) says the configs listed are the cached ones.
 */
const chooseConfig = (repo: RepoRef, layout: DataLayout, requested: string | undefined, cachedAt: string | undefined) => {
  const names = [...layout.configs.keys()]
  if (requested !== undefined) {
    return layout.configs.has(requested)
      ? Effect.succeed(requested)
      : Effect.fail(Errors.configNotFound(repo, requested, names, cachedAt))
  }
  const only = names.length === 1 ? names[0] : undefined
  const chosen = layout.defaultConfig ?? only ?? (layout.configs.has("default") ? "default" : undefined)
  return chosen === undefined ? Effect.fail(Errors.configRequired(repo, names)) : Effect.succeed(chosen)
}

/** The largest card (README.md) read: only its YAML header counts, and that is read up to 4 MiB (card-yaml.ts). */
const MAX_CARD_BYTES = 16 * 1024 * 1024

const unreadable = (config: string, files: ReadonlyArray<string>) =>
  files.length === 0
    ? `config ${config}'s data_files match no file, and there is no parquet conversion`
    : `config ${config}'s files (${files.slice(0, 3).join(", ")}${files.length > 3 ? ", …" : ""}) are in no format read here (parquet, jsonl, json, csv, tsv, arrow), and there is no parquet conversion`

export const planSplits = (
  repo: RepoRef,
  main: View,
  readText: (file: string) => Effect.Effect<string, HubError>,
  conversion: Effect.Effect<Option.Option<View>, HubError>,
  requested: string | undefined,
  cachedAt: string | undefined
): Effect.Effect<Plan, HubError> =>
  Effect.gen(function* () {
    const paths = main.files.map((f) => f.path)
    const readme = main.files.find((f) => f.path === "README.md")
    if (readme !== undefined && readme.size > MAX_CARD_BYTES) {
      const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
      return yield* Errors.badCard(repo, main.sha, "", `it is ${mib(readme.size)}, and cards are read up to ${mib(MAX_CARD_BYTES)}`)
    }
    const card = readme !== undefined
      ? yield* cardLayout(yield* readText("README.md"), paths).pipe(
        Effect.mapError((e) => Errors.badCard(repo, main.sha, e.key, e.problem))
      )
      : undefined
    const declared = card ?? folderLayout(paths)
    let wanted = requested
    if (declared !== undefined) {
      const name = yield* chooseConfig(repo, declared, requested, cachedAt)
      const splits = declared.configs.get(name)!
      if (isReadable(splits)) return { view: main, config: name, splits }
      // The conversion names its configs as the card does.
      wanted = name
    }
    const converted = yield* conversion
    const convertedLayout = Option.flatMapNullable(converted, (view) => conversionLayout(view.files.map((f) => f.path)))
    if (Option.isSome(converted) && Option.isSome(convertedLayout)) {
      const name = yield* chooseConfig(repo, convertedLayout.value, wanted, cachedAt)
      return { view: converted.value, config: name, splits: convertedLayout.value.configs.get(name)! }
    }
    if (declared !== undefined && wanted !== undefined) {
      return yield* Errors.noData(repo, main.revision, unreadable(wanted, Object.values(declared.configs.get(wanted)!).flat()))
    }
    const inferred = filesLayout(paths)
    if (inferred !== undefined) {
      const name = yield* chooseConfig(repo, inferred, requested, cachedAt)
      return { view: main, config: name, splits: inferred.configs.get(name)! }
    }
    return yield* Errors.noData(repo, main.revision, "no data files (parquet, jsonl, json, csv, tsv, arrow) and no parquet conversion")
  })
