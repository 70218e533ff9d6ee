/**
 * `fetch`: brings data into the pipeline as Arrow splits, from the Hugging Face
 * hub (`dataset: openai/gsm8k`) or from local files (jsonl, json, csv, parquet,
 * arrow, the text formats gzipped or not: one path, a glob, a list, or a map of split →
 * path(s), relative to the pipeline file). What is read is fingerprinted: a local
 * file's contents, or the hub revision's commit sha, so a changed dataset re-runs
 * everything downstream.
 *
 * Files are read and written a batch at a time: every file of a split is opened first
 * (the text formats read themselves once to infer their schema), then its rows stream
 * into the split's Arrow file, so memory holds one batch, not the dataset.
 */
import { FileSystem, Path } from "@effect/platform"
import { type RecordBatch, type Schema as ArrowSchema, Table } from "apache-arrow"
import { Effect, Schema, Stream } from "effect"
import { statSync } from "node:fs"
import { glob } from "tinyglobby"
import { writeSplit } from "../src/dataset.ts"
import type { SplitFile } from "../src/artifact.ts"
import { StageError } from "../src/errors.ts"
import { detectFormat, type Format, openFile, type OpenedFile } from "../src/formats/index.ts"
import { dataset, Hub, type HubError, type OnProgress } from "../src/hub/index.ts"
import { defineStage } from "../src/stage.ts"
import { batchSize } from "./common.ts"

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
  }),
  batch_size: batchSize()
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

const columnsOf = (schema: ArrowSchema) => schema.fields.map((f) => `${f.name}: ${f.type}`).join(", ")

/** Every file of a split must have the first one's columns and types. */
const sameSchema = (opened: ReadonlyArray<OpenedFile>, files: ReadonlyArray<string>, split: string) => {
  const first = columnsOf(opened[0]!.schema)
  const differs = opened.findIndex((file) => columnsOf(file.schema) !== first)
  return differs === -1
    ? Effect.void
    : Effect.fail(new StageError({
      message: `split "${split}": ${files[differs]} has columns (${columnsOf(opened[differs]!.schema)}) but ${files[0]} has (${first})`
    }))
}

/** The names in `columns`, checked against the split's; all of them when undefined. */
const keptColumns = (schema: ArrowSchema, columns: ReadonlyArray<string> | undefined, split: string) => {
  const present = schema.fields.map((f) => f.name)
  if (columns === undefined) return Effect.succeed(undefined)
  const missing = columns.filter((c) => !present.includes(c))
  return missing.length > 0
    ? Effect.fail(new StageError({ message: `split "${split}" has no column ${missing.join(", ")} (columns: ${present.join(", ")})` }))
    : Effect.succeed(columns)
}

/**
 * Progress over every file of every split: bytes are each file's size times the share
 * of its reading done (a text file is read twice: its first pass is half of it), rows
 * count those written out of those the opened files hold.
 */
const fetchProgress = (
  sizes: ReadonlyMap<string, number>,
  report: (rows: number, totalRows: number, unit: string, bytes: number, totalBytes: number) => Effect.Effect<void>
) => {
  const totalBytes = [...sizes.values()].reduce((a, b) => a + b, 0)
  const share = new Map<string, number>()
  let rows = 0
  let totalRows = 0
  let shown = 0
  let opening = true
  const bytes = () => [...share].reduce((sum, [file, fraction]) => sum + sizes.get(file)! * fraction, 0)
  const show = (force: boolean) => {
    // A callback per chunk read: show at most ten times a second.
    if (!force && Date.now() - shown < 100) return
    shown = Date.now()
    // Until every file is open, the rows to write are not known yet: the text formats are inferring their schemas.
    Effect.runSync(report(rows, totalRows, opening ? "rows (reading the files' schemas)" : "rows", bytes(), totalBytes))
  }
  return {
    onFile: (file: string) => (done: number, total: number) => {
      share.set(file, total > 0 ? Math.min(1, done / total) : 1)
      show(false)
    },
    opened: (file: OpenedFile) => {
      totalRows += file.rows
    },
    writing: () => {
      opening = false
    },
    wrote: (batch: RecordBatch) => {
      rows += batch.numRows
      show(rows === totalRows)
    }
  }
}

export default defineStage({
  name: "fetch",
  version: "1",
  description: "Loads a Hugging Face hub dataset, or local data files (jsonl, json, csv, tsv, parquet, arrow; the text formats also gzipped), into Arrow splits",
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
      const bySplit = ctx.params.dataset !== undefined
        ? yield* hubFiles(ctx.params, (p) => ctx.progress(p.done, p.total, "bytes"))
        : yield* resolveFiles(ctx.params, ctx.baseDir)
      const sizes = new Map<string, number>()
      for (const file of Object.values(bySplit).flat()) {
        sizes.set(file, yield* Effect.try({ try: () => statSync(file).size, catch: (e) => new StageError({ message: `cannot read ${file}: ${(e as Error).message}` }) }))
      }
      const progress = fetchProgress(sizes, (rows, totalRows, unit, bytes, totalBytes) => ctx.progress(rows, totalRows, unit, { done: bytes, total: totalBytes }))
      const splits: Record<string, ReadonlyArray<SplitFile>> = {}
      // Every file first (the text formats read themselves once for their schema), so
      // that the rows to write are known before any is written.
      const openedBySplit: Record<string, ReadonlyArray<OpenedFile>> = {}
      for (const [split, files] of Object.entries(bySplit)) {
        const opened: Array<OpenedFile> = []
        for (const file of files) {
          const format = yield* formatOf(file, ctx.params)
          opened.push(yield* openFile(file, format, { batchRows: ctx.params.batch_size, onProgress: progress.onFile(file) }).pipe(
            Effect.mapError((e) => new StageError({ message: e.message }))
          ))
          progress.opened(opened[opened.length - 1]!)
        }
        openedBySplit[split] = opened
      }
      progress.writing()
      for (const [split, files] of Object.entries(bySplit)) {
        const opened = openedBySplit[split]!
        yield* sameSchema(opened, files, split)
        const kept = yield* keptColumns(opened[0]!.schema, ctx.params.columns, split)
        const select = (batch: RecordBatch) => (kept === undefined ? batch : new Table(batch.schema, [batch]).select([...kept]))
        const schema = kept === undefined ? opened[0]!.schema : new Table(opened[0]!.schema, []).select([...kept]).schema
        const batches = Stream.fromIterable(opened).pipe(
          Stream.flatMap((file) => Stream.mapError(file.batches, (e) => new StageError({ message: e.message }))),
          Stream.tap((batch) => Effect.sync(() => progress.wrote(batch))),
          Stream.map(select)
        )
        const written = yield* writeSplit(ctx.outDir, split, schema, batches, ctx.params.batch_size)
        splits[split] = [written]
        yield* ctx.log(`${split}: ${written.rows} rows from ${files.length} file(s)`)
      }
      return { outputs: { dataset: { kind: "dataset" as const, splits } } }
    })
})
