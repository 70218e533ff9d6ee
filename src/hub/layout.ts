/**
 * Which files of a dataset repository make up which config and split, decided
 * as the hub and the `datasets` library decide it:
 * 1. the dataset card: `configs:` in README.md's YAML header, with `data_files`
 *    (a pattern, a list, or a list of `{split, path}`), `data_dir` and `default`;
 * 2. without one, parquet files, one config per top-level folder (`main/train-00000-of-00001.parquet`
 *    is split train of config main; files at the root or under `data/` are config "default");
 * 3. the hub's parquet conversion on `refs/convert/parquet`: `{config}/{split}/0000.parquet`;
 * 4. any other data files (json lines, JSON, CSV, Arrow) as config "default", the
 *    most common format only, with splits named as `datasets` names them from paths:
 *    `data/{split}-00000-of-00001.*`, else a folder or a file name holding a split
 *    keyword (train/training; validation/valid/dev/val; test/testing/eval/evaluation)
 *    between separators, else everything is train.
 * These functions are pure: they see paths only.
 */
import { parse } from "yaml"
import { detectFormat, type Format } from "../formats/index.ts"
import { glob } from "./patterns.ts"

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

/** A format `readTable` reads, for a data file that is not hidden. */
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

/** `data_files` in its three YAML shapes → split → patterns. */
const dataFilePatterns = (value: unknown): Record<string, Array<string>> | undefined => {
  const asList = (v: unknown) => (typeof v === "string" ? [v] : Array.isArray(v) ? v.filter((p) => typeof p === "string") : [])
  if (typeof value === "string") return { train: [value] }
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return { train: value }
  if (Array.isArray(value)) {
    const out: Record<string, Array<string>> = {}
    for (const entry of value) {
      if (typeof entry === "object" && entry !== null && typeof entry.split === "string") {
        ;(out[entry.split] ??= []).push(...asList(entry.path))
      }
    }
    return out
  }
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([split, paths]) => [split, asList(paths)]))
  }
  return undefined
}

/** The card's YAML header, when it has `configs:`. */
export const cardLayout = (readme: string, files: ReadonlyArray<string>): DataLayout | undefined => {
  const header = /^---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)/.exec(readme)?.[1]
  let metadata: unknown
  try {
    metadata = header === undefined ? undefined : parse(header)
  } catch {
    return undefined
  }
  const declared = (metadata as { configs?: unknown } | null | undefined)?.configs
  if (!Array.isArray(declared) || declared.length === 0) return undefined
  const visible = files.filter((f) => !isHidden(f))
  const configs = new Map<string, Splits>()
  let defaultConfig: string | undefined
  for (const entry of declared as ReadonlyArray<Record<string, unknown>>) {
    const name = typeof entry.config_name === "string" ? entry.config_name : "default"
    const dataDir = typeof entry.data_dir === "string" ? entry.data_dir.replace(/^\/+|\/+$/g, "") : ""
    const patterns = dataFilePatterns(entry.data_files)
    const splits: Record<string, Array<string>> = {}
    if (patterns === undefined) {
      Object.assign(splits, prefixed(dataDir, inferSplits(under(dataDir, visible).filter((f) => detectFormat(f)), "data/")))
    } else {
      for (const [split, list] of Object.entries(patterns)) {
        const regexes = list.map((p) => glob(dataDir === "" ? p : `${dataDir}/${p}`))
        splits[split] = visible.filter((file) => regexes.some((r) => r.test(file)))
      }
    }
    configs.set(name, ordered(splits))
    if (entry.default === true) defaultConfig = name
  }
  return defaultConfig === undefined ? { configs } : { configs, defaultConfig }
}

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

/** Whether every file of the splits is one `readTable` reads, and there is at least one. */
export const isReadable = (splits: Splits): boolean => {
  const files = Object.values(splits).flat()
  return files.length > 0 && files.every((f) => detectFormat(f) !== undefined)
}
