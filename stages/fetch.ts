/**
 * `fetch`: brings data into the pipeline as Arrow splits, from the Hugging Face
 * hub (`dataset: openai/gsm8k`) or from local files (jsonl, json, csv, parquet,
 * arrow: one path, a glob, a list, or a map of split → path(s), relative to the
 * pipeline file). What is read is fingerprinted: a local file's contents, or the
 * hub revision's commit sha, so a changed dataset re-runs everything downstream.
 */
import { FileSystem, Path } from "@effect/platform"
import { Table } from "apache-arrow"
import { Effect, Schema } from "effect"
import { glob } from "tinyglobby"
import { writeDataset } from "../src/dataset.ts"
import { StageError } from "../src/errors.ts"
import { detectFormat, type Format, readTable } from "../src/formats/index.ts"
import { dataset, Hub, type HubError, type OnProgress } from "../src/hub/index.ts"
import { defineStage } from "../src/stage.ts"

const Paths = Schema.Union(Schema.String, Schema.Array(Schema.String).pipe(Schema.minItems(1)))

const Params = Schema.Struct({
  path: Schema.optional(Schema.Union(Paths, Schema.Record({ key: Schema.String, value: Paths }))).annotations({
    description: "A file, a glob, a list of them, or a map of split → file(s); relative to the pipeline file"
  }),
  dataset: Schema.optional(Schema.String.pipe(Schema.pattern(/^[\w.-]+(\/[\w.-]+)?$/))).annotations({
    description: "A Hugging Face hub dataset id, such as openai/gsm8k (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE apply)"
  }),
  config: Schema.optional(Schema.String).annotations({ description: "The hub dataset's config (subset), such as main" }),
  revision: Schema.optionalWith(Schema.String, { default: () => "main" }).annotations({
    description: "A hub branch, tag or commit sha; the resolved commit is pinned in the fingerprint"
  }),
  split: Schema.optionalWith(Schema.String, { default: () => "train" }).annotations({
    description: "The split name when `path` is not a map (Hugging Face's default: train)"
  }),
  format: Schema.optional(Schema.Literal("jsonl", "json", "csv", "tsv", "parquet", "arrow")).annotations({
    description: "The file format (default: from the extension)"
  }),
  columns: Schema.optional(Schema.Array(Schema.String).pipe(Schema.minItems(1))).annotations({
    description: "Keep only these columns"
  })
}).pipe(
  Schema.filter((p) =>
    (p.path === undefined) !== (p.dataset === undefined) ||
    "give exactly one source: `path` (local files) or `dataset` (a Hugging Face hub id)"
  )
)

type Params = typeof Params.Type

const patternsBySplit = (params: Params): Record<string, ReadonlyArray<string>> => {
  const asList = (p: string | ReadonlyArray<string>) => (typeof p === "string" ? [p] : p)
  const source = params.path ?? []
  return typeof source === "string" || Array.isArray(source)
    ? { [params.split]: asList(source as string | ReadonlyArray<string>) }
    : Object.fromEntries(Object.entries(source as Record<string, string | ReadonlyArray<string>>).map(([s, p]) => [s, asList(p)]))
}

const hubFailure = (error: HubError) => new StageError({ message: error.message })

/** Split → downloaded files of a hub dataset, at the commit the fingerprint pinned. */
const hubFiles = (params: Params, onProgress?: OnProgress) =>
  Effect.gen(function* () {
    const hub = yield* Hub
    const found = yield* hub.datasetSplits(params.dataset!, {
      ...(params.config !== undefined && { config: params.config }),
      revision: params.revision,
      ...(onProgress !== undefined && { onProgress })
    })
    return found.splits
  }).pipe(Effect.catchTag("HubError", (e) => Effect.fail(hubFailure(e))))

/** Split → the files it reads, globs expanded and sorted, each pattern required to match. */
const resolveFiles = (params: Params, baseDir: string) =>
  Effect.gen(function* () {
    const path = yield* Path.Path
    const fs = yield* FileSystem.FileSystem
    const out: Record<string, ReadonlyArray<string>> = {}
    for (const [split, patterns] of Object.entries(patternsBySplit(params))) {
      const files: Array<string> = []
      for (const pattern of patterns) {
        const absolute = path.resolve(baseDir, pattern)
        const isGlob = /[*?[\]{}]/.test(pattern)
        const matches = isGlob
          ? yield* Effect.promise(() => glob(absolute, { absolute: true, onlyFiles: true })).pipe(Effect.map((m) => m.sort()))
          : (yield* fs.exists(absolute).pipe(Effect.orElseSucceed(() => false)))
          ? [absolute]
          : []
        if (matches.length === 0) {
          return yield* new StageError({
            message: `${isGlob ? "no file matches" : "no such file"}: ${pattern} (resolved to ${absolute})`
          })
        }
        files.push(...matches)
      }
      out[split] = files
    }
    return out
  })

const formatOf = (file: string, params: Params): Effect.Effect<Format, StageError> => {
  const format = params.format ?? detectFormat(file)
  return format === undefined
    ? Effect.fail(new StageError({ message: `cannot tell the format of ${file} from its extension: set \`format\` (jsonl, json, csv, tsv, parquet, arrow)` }))
    : Effect.succeed(format)
}

const concat = (tables: ReadonlyArray<Table>, files: ReadonlyArray<string>, split: string) => {
  const first = tables[0]!
  const differs = tables.findIndex((t) => String(t.schema.fields.map((f) => `${f.name}:${f.type}`)) !== String(first.schema.fields.map((f) => `${f.name}:${f.type}`)))
  return differs === -1
    ? Effect.succeed(tables.length === 1 ? first : new Table(first.schema, tables.flatMap((t) => t.batches)))
    : Effect.fail(new StageError({
      message: `split "${split}": ${files[differs]} has columns (${tables[differs]!.schema.fields.map((f) => `${f.name}: ${f.type}`).join(", ")}) but ${files[0]} has (${first.schema.fields.map((f) => `${f.name}: ${f.type}`).join(", ")})`
    }))
}

const keepColumns = (table: Table, columns: ReadonlyArray<string> | undefined, split: string) => {
  if (columns === undefined) return Effect.succeed(table)
  const present = table.schema.fields.map((f) => f.name)
  const missing = columns.filter((c) => !present.includes(c))
  return missing.length > 0
    ? Effect.fail(new StageError({ message: `split "${split}" has no column ${missing.join(", ")} (columns: ${present.join(", ")})` }))
    : Effect.succeed(table.select([...columns]))
}

export default defineStage({
  name: "fetch",
  version: "1",
  description: "Loads a Hugging Face hub dataset, or local data files (jsonl, json, csv, tsv, parquet, arrow), into Arrow splits",
  params: Params,
  accepts: { kinds: [], min: 0, max: 0 },
  produces: ["dataset"],
  inputFiles: (params, baseDir) =>
    params.path === undefined ? Effect.succeed([]) : Effect.map(resolveFiles(params, baseDir), (bySplit) => Object.values(bySplit).flat()),
  externalInputs: (params) =>
    params.dataset === undefined
      ? Effect.succeed({})
      : Effect.gen(function* () {
        const hub = yield* Hub
        const sha = yield* hub.resolveRevision(dataset(params.dataset!), params.revision)
        return { [`hf:datasets/${params.dataset}@${params.revision}`]: sha }
      }).pipe(Effect.catchTag("HubError", (e) => Effect.fail(hubFailure(e)))),
  run: (ctx) =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const bySplit = ctx.params.dataset !== undefined
        ? yield* hubFiles(ctx.params, (p) => ctx.progress(p.done, p.total, "bytes"))
        : yield* resolveFiles(ctx.params, ctx.baseDir)
      const splits: Record<string, Table> = {}
      for (const [split, files] of Object.entries(bySplit)) {
        const tables: Array<Table> = []
        for (const file of files) {
          const bytes = yield* fs.readFile(file).pipe(Effect.mapError((e) => new StageError({ message: `cannot read ${file}: ${e.message}` })))
          const format = yield* formatOf(file, ctx.params)
          tables.push(yield* readTable(bytes, format, file).pipe(Effect.mapError((e) => new StageError({ message: e.message }))))
        }
        const table = yield* concat(tables, files, split)
        splits[split] = yield* keepColumns(table, ctx.params.columns, split)
        yield* ctx.log(`${split}: ${splits[split]!.numRows} rows from ${files.length} file(s)`)
      }
      return { outputs: { dataset: yield* writeDataset(ctx.outDir, splits) } }
    })
})
