/**
 * Which files of a dataset repository make up which config and split, decided
 * as the hub and the `datasets` library decide it:
 * 1. the dataset card: `configs:` in README.md's YAML header, with `data_files`
 *    (a pattern, a list, or a list of `{split, path}`), `data_dir` and `default`;
 * 2. without one, parquet files, one config per top-level folder (`main/train-00000-of-00001.parquet`
 *    is split train of config main; files at the root or under `data/` are config "default");
 * 3. the hub's parquet conversion on `refs/convert/parquet`: `{config}/{split}/0000.parquet`;
 * 4. any other data files (json lines, JSON, CSV, Arrow; the text formats gzipped too,
 *    `train.jsonl.gz`) as config "default", the most common format only (gzipped or
 *    not, as `datasets` counts them), with splits named as `datasets` names them from paths:
 *    `data/{split}-00000-of-00001.*`, else a folder or a file name holding a split
 *    keyword (train/training; validation/valid/dev/val; test/testing/eval/evaluation)
 *    between separators, else everything is train.
 * These functions see paths only (and the card's text). The card is anyone's to write:
 * its header is decoded with a schema (a bad one is a `CardProblem` naming the key),
 * and matching its patterns yields to the event loop as it goes, so that a card with
 * thousands of patterns over thousands of files can still be interrupted.
 */
import { Effect, Either, ParseResult, Scheduler, Schema } from "effect"
import { CardProblem, parseCardYaml } from "./card-yaml.ts"
import { detectFormat, type Format } from "../formats/index.ts"
import { printable } from "./errors.ts"
import { glob, type PathPattern } from "./patterns.ts"

/** Split name → repository paths, sorted. */
export type Splits = Readonly<Record<string, ReadonlyArray<string>>>

export interface DataLayout {
  readonly configs: ReadonlyMap<string, Splits>
  /** The config a card marks `default: true`. */
  readonly defaultConfig?: string
}

const SPLIT_KEYWORDS: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
  ["train", ["train", "training"]],
  ["validation", ["validation", "valid", "dev", "val"]],
  ["test", ["test", "testing", "eval", "evaluation"]]
]
const KNOWN_SPLITS = SPLIT_KEYWORDS.map(([split]) => split)
/** `datasets`' NON_WORDS_CHARS: what may stand around a split keyword. */
const SEP = "[-._ 0-9]"

const inDirectory = (keyword: string) => new RegExp(`^(?:.*[-._ 0-9/])?${keyword}(?:${SEP}[^/]*)?/.+$`)
const inFileName = (keyword: string) => new RegExp(`^(?:.*[-._ 0-9/])?${keyword}${SEP}[^/]*$`)
const SHARDED = /^(\w+(?:\.\w+)*)-\d{5}-of-\d{5}[^/]*\.[^/]*$/

const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/** train, validation, test first, then the others by name, as `datasets` orders them. */
const ordered = (splits: Record<string, Array<string>>): Splits => {
  const names = Object.keys(splits).filter((name) => splits[name]!.length > 0)
  const known = KNOWN_SPLITS.filter((name) => names.includes(name))
  const others = names.filter((name) => !KNOWN_SPLITS.includes(name)).sort(byPath)
  return Object.fromEntries([...known, ...others].map((name) => [name, [...splits[name]!].sort(byPath)]))
}

export const isHidden = (file: string): boolean => file.split("/").some((part) => part.startsWith(".") || part.startsWith("__"))

/** A format `openFile` reads (gzipped or not), for a data file that is not hidden. */
export const dataFormat = (file: string): Format | undefined => (isHidden(file) ? undefined : detectFormat(file))

/**
 * Splits from paths relative to a config's folder, by `datasets`' conventions.
 * `shardedAt` is the folder where `{split}-00000-of-00001.*` names a split ("data/" at a repo's root).
 */
export const inferSplits = (files: ReadonlyArray<string>, shardedAt: string): Splits => {
  const sharded: Record<string, Array<string>> = {}
  for (const file of files) {
    const split = file.startsWith(shardedAt) ? SHARDED.exec(file.slice(shardedAt.length))?.[1] : undefined
    if (split !== undefined) (sharded[split] ??= []).push(file)
  }
  if (Object.keys(sharded).length > 0) return ordered(sharded)
  for (const where of [inDirectory, inFileName]) {
    const found: Record<string, Array<string>> = {}
    for (const [split, keywords] of SPLIT_KEYWORDS) {
      const patterns = keywords.map(where)
      found[split] = files.filter((file) => patterns.some((pattern) => pattern.test(file)))
    }
    if (Object.values(found).some((list) => list.length > 0)) return ordered(found)
  }
  return ordered({ train: [...files] })
}

const under = (folder: string, files: ReadonlyArray<string>) =>
  folder === "" ? files : files.filter((f) => f.startsWith(`${folder}/`)).map((f) => f.slice(folder.length + 1))

const prefixed = (folder: string, splits: Splits): Splits =>
  folder === ""
    ? splits
    : Object.fromEntries(Object.entries(splits).map(([split, files]) => [split, files.map((f) => `${folder}/${f}`)]))

/** `datasets`' own rule for split names (`NamedSplit`): they become file names downstream. */
const SPLIT_NAME = /^\w+(\.\w+)*$/
const splitNameProblem = (name: string) => `"${printable(name)}" is not a split name (letters, digits and "_", in parts joined by ".")`
const SplitName = Schema.String.pipe(Schema.filter((name) => SPLIT_NAME.test(name) || splitNameProblem(name)))

const Patterns = Schema.Union(Schema.String, Schema.Array(Schema.String))
/** The message of a value of the wrong type, with what it was. */
const expected = (what: string) => (issue: ParseResult.ParseIssue) =>
  `expected ${what}, got ${issue._tag === "Type" ? printable(JSON.stringify(issue.actual) ?? String(issue.actual), 80) : "something else"}`

const SplitFiles = Schema.Struct({ split: SplitName, path: Patterns }).annotations({ message: expected("{split, path}") })
const FilesBySplit = Schema.Record({ key: Schema.String, value: Patterns }).pipe(
  Schema.filter((bySplit) => {
    const bad = Object.keys(bySplit).find((name) => !SPLIT_NAME.test(name))
    return bad === undefined || splitNameProblem(bad)
  })
)

/** `datasets`' rule for config names (`BuilderConfig`): they name folders, and are shown in messages. */
const ConfigName = Schema.String.pipe(
  Schema.filter((name) =>
    (name !== "" && !/[<>:/\\|?*\u0000-\u001f\u007f]/.test(name)) ||
    `"${printable(name)}" is not a config name (not empty, no <>:/\\|?* or control characters)`
  )
)

const ConfigEntry = Schema.Struct({
  config_name: Schema.optional(ConfigName),
  data_dir: Schema.optional(Schema.String),
  // Decoded by its shape (`dataFilePatterns`): a union's failure would list every member.
  data_files: Schema.optional(Schema.Unknown),
  default: Schema.optional(Schema.Boolean)
}).annotations({ message: expected("a mapping with config_name, data_files, data_dir or default") })

const CardHeader = Schema.Struct({
  configs: Schema.optional(Schema.Array(ConfigEntry).annotations({ message: expected("a list of configs") }))
})

const keyOf = (path: ReadonlyArray<PropertyKey>) =>
  path.reduce<string>((key, part) => (typeof part === "number" ? `${key}[${part}]` : key === "" ? String(part) : `${key}.${String(part)}`), "")

/** The most precise issue (the deepest), in words for a user. */
const firstProblem = (error: ParseResult.ParseError, prefix: ReadonlyArray<PropertyKey>): CardProblem => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error).filter((issue) => !issue.message.startsWith("Expected undefined"))
  const issue = [...issues].sort((a, b) => b.path.length - a.path.length)[0]
  const message = (issue?.message ?? "is not valid").replace(/^Expected (.*), actual (.*)$/s, (_, want: string, got: string) =>
    `expected ${want}, got ${got}`)
  return new CardProblem({ key: keyOf([...prefix, ...(issue?.path ?? [])]), problem: printable(message) })
}

const decode = <A, I>(schema: Schema.Schema<A, I>, value: unknown, path: ReadonlyArray<PropertyKey>) =>
  Either.mapLeft(Schema.decodeUnknownEither(schema)(value), (error) => firstProblem(error, path))

/** `data_files` in its YAML shapes → split → patterns. */
const dataFilePatterns = (value: unknown, path: ReadonlyArray<PropertyKey>): Either.Either<Record<string, ReadonlyArray<string>>, CardProblem> => {
  const asList = (patterns: string | ReadonlyArray<string>) => (typeof patterns === "string" ? [patterns] : patterns)
  if (typeof value === "string") return Either.right({ train: [value] })
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return Either.right({ train: value })
  if (Array.isArray(value)) {
    return Either.map(decode(Schema.Array(SplitFiles), value, path), (entries) => {
      const out: Record<string, Array<string>> = {}
      for (const entry of entries) (out[entry.split] ??= []).push(...asList(entry.path))
      return out
    })
  }
  if (typeof value === "object" && value !== null) {
    return Either.map(decode(FilesBySplit, value, path), (bySplit) =>
      Object.fromEntries(Object.entries(bySplit).map(([split, patterns]) => [split, asList(patterns)])))
  }
  return Either.left(new CardProblem({ key: keyOf(path), problem: "expected a pattern, a list of patterns, a list of {split, path}, or a map of split to patterns" }))
}

/** A config the card declares, its `data_files` decoded (undefined: none given, find them by name). */
interface DeclaredConfig {
  readonly name: string
  readonly dataDir: string
  readonly patterns: Record<string, ReadonlyArray<string>> | undefined
  readonly isDefault: boolean
}

/** The `configs:` of a card's YAML header; none without a header, or without `configs`. */
export const cardConfigs = (readme: string): Effect.Effect<ReadonlyArray<DeclaredConfig>, CardProblem> =>
  Effect.gen(function* () {
    const header = /^---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)/.exec(readme)?.[1]
    if (header === undefined) return []
    const metadata = yield* parseCardYaml(header)
    if (metadata === null || metadata === undefined) return []
    if (typeof metadata !== "object" || Array.isArray(metadata)) {
      return yield* new CardProblem({ key: "", problem: "its YAML header is not a mapping" })
    }
    const { configs = [] } = yield* decode(CardHeader, metadata, [])
    return yield* Effect.forEach(configs, (entry, i) => {
      const path = ["configs", i, "data_files"]
      const patterns = entry.data_files === undefined ? Either.right(undefined) : dataFilePatterns(entry.data_files, path)
      return Either.map(patterns, (patterns): DeclaredConfig => ({
        name: entry.config_name ?? "default",
        dataDir: (entry.data_dir ?? "").replace(/^\/+|\/+$/g, ""),
        patterns,
        isDefault: entry.default === true
      }))
    })
  })

/** A turn of the event loop (a timer, not a microtask), so that timers and signals get in. */
const breathe = Effect.yieldNow().pipe(Effect.withScheduler(Scheduler.timer(0)))

/** The files any pattern matches, breathing every 10 ms or so of work. */
const matching = (files: ReadonlyArray<string>, patterns: ReadonlyArray<PathPattern>) =>
  Effect.gen(function* () {
    const found: Array<string> = []
    let since = performance.now()
    let tests = 0
    for (const file of files) {
      if (patterns.some((pattern) => pattern.test(file))) found.push(file)
      tests += patterns.length
      if (tests >= 1024) {
        tests = 0
        if (performance.now() - since > 10) {
          yield* breathe
          since = performance.now()
        }
      }
    }
    return found
  })

/** The card's YAML header, when it has `configs:`. */
export const cardLayout = (readme: string, files: ReadonlyArray<string>): Effect.Effect<DataLayout | undefined, CardProblem> =>
  Effect.gen(function* () {
    const declared = yield* cardConfigs(readme)
    if (declared.length === 0) return undefined
    const visible = files.filter((f) => !isHidden(f))
    const configs = new Map<string, Splits>()
    let defaultConfig: string | undefined
    for (const { name, dataDir, patterns, isDefault } of declared) {
      const splits: Record<string, Array<string>> = {}
      if (patterns === undefined) {
        Object.assign(splits, prefixed(dataDir, inferSplits(under(dataDir, visible).filter((f) => detectFormat(f)), "data/")))
      } else {
        for (const [split, list] of Object.entries(patterns)) {
          splits[split] = yield* matching(visible, list.map((p) => glob(dataDir === "" ? p : `${dataDir}/${p}`)))
        }
      }
      configs.set(name, ordered(splits))
      if (isDefault) defaultConfig = name
    }
    return defaultConfig === undefined ? { configs } : { configs, defaultConfig }
  })

/** Parquet files on the main branch, one config per top-level folder. */
export const folderLayout = (files: ReadonlyArray<string>): DataLayout | undefined => {
  const byFolder = new Map<string, Array<string>>()
  for (const file of files.filter((f) => dataFormat(f) === "parquet")) {
    const slash = file.indexOf("/")
    const folder = slash === -1 ? "" : file.slice(0, slash)
    const list = byFolder.get(folder) ?? []
    list.push(file)
    byFolder.set(folder, list)
  }
  if (byFolder.size === 0) return undefined
  const configs = new Map<string, Splits>()
  for (const [folder, list] of byFolder) {
    const name = folder === "" || folder === "data" ? "default" : folder
    const splits = folder === "" ? inferSplits(list, "data/") : prefixed(folder, inferSplits(under(folder, list), ""))
    const merged = { ...configs.get(name) }
    for (const [split, paths] of Object.entries(splits)) merged[split] = [...(merged[split] ?? []), ...paths]
    configs.set(name, ordered(merged as Record<string, Array<string>>))
  }
  return { configs }
}

/** The hub's parquet conversion: `{config}/{split}/0000.parquet` (`partial-{split}` where it stopped early). */
export const conversionLayout = (files: ReadonlyArray<string>): DataLayout | undefined => {
  const configs = new Map<string, Record<string, Array<string>>>()
  for (const file of files) {
    const match = /^([^/]+)\/([^/]+)\/[^/]+\.parquet$/.exec(file)
    if (match === null || isHidden(file)) continue
    const splits = configs.get(match[1]!) ?? {}
    ;(splits[match[2]!] ??= []).push(file)
    configs.set(match[1]!, splits)
  }
  return configs.size === 0 ? undefined : { configs: new Map([...configs].map(([name, splits]) => [name, ordered(splits)])) }
}

/** The `datasets` module a format belongs to: JSON lines and JSON are one, CSV and TSV are one. */
const moduleOf = (format: Format) => (format === "jsonl" ? "json" : format === "tsv" ? "csv" : format)

/** Data files of any readable format as config "default", keeping the most common format only. */
export const filesLayout = (files: ReadonlyArray<string>): DataLayout | undefined => {
  const data = files.filter((f) => dataFormat(f) !== undefined)
  if (data.length === 0) return undefined
  const counts = new Map<string, number>()
  for (const file of data) counts.set(moduleOf(dataFormat(file)!), (counts.get(moduleOf(dataFormat(file)!)) ?? 0) + 1)
  const [common] = [...counts].sort((a, b) => b[1] - a[1])[0]!
  const chosen = data.filter((f) => moduleOf(dataFormat(f)!) === common)
  return { configs: new Map([["default", inferSplits(chosen, "data/")]]) }
}

/** Whether every file of the splits is one `openFile` reads, and there is at least one. */
export const isReadable = (splits: Splits): boolean => {
  const files = Object.values(splits).flat()
  return files.length > 0 && files.every((f) => detectFormat(f) !== undefined)
}
