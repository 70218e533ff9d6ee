/**
 * Reading and writing dataset artifacts from inside a stage: the helpers that
 * built-in stages and plug-ins share.
 */
import { FileSystem, Path } from "@effect/platform"
import { Field, type RecordBatch, Schema, Table } from "apache-arrow"
import { Effect, Stream } from "effect"
import { statSync } from "node:fs"
import { DEFAULT_BATCH_ROWS, IpcFileReader, IpcFileWriter } from "./arrow-file.ts"
import type { DatasetArtifact, SplitFile } from "./artifact.ts"
import { StageError } from "./errors.ts"
import type { StageContext } from "./stage.ts"

/**
 * The dataset of the stages in `needs`. A stage that produces a model may produce a
 * dataset beside it (dpo's reference log-probabilities): when another stage in `needs`
 * produces a dataset too, that one is meant.
 */
export const inputDataset = <P>(ctx: StageContext<P>): Effect.Effect<DatasetArtifact, StageError> => {
  const all = ctx.inputs.filter((input) => input.outputs.dataset !== undefined)
  const data = all.length > 1 ? all.filter((input) => input.outputs.model === undefined) : all
  return data.length === 1
    ? Effect.succeed(data[0]!.outputs.dataset!)
    : Effect.fail(new StageError({
      message: all.length === 0 ? "expected an upstream dataset in `needs`, got none" : `expected one upstream dataset, got ${data.length > 1 ? data.length : all.length} (from ${all.map((input) => input.id).join(", ")})`
    }))
}

/** What a cache file found damaged on reading says: what is wrong, and what to do. */
export const damagedEntry = (what: string): string =>
  `${what}: the cache entry is damaged. Run \`pipeline verify --repair\` to remove damaged entries; the next run rebuilds them.`

/** `path` could not be read as Arrow (bytes changed with the mtime restored get past the store's quick check). */
export const unreadableArrow = (path: string, cause: unknown): string =>
  damagedEntry(`${path} is not a readable Arrow file (${cause instanceof Error ? cause.message : String(cause)})`)

const damaged = (path: string, cause: unknown) => new StageError({ message: unreadableArrow(path, cause), cause })

const openReader = (file: SplitFile) =>
  Effect.acquireRelease(Effect.try({ try: () => IpcFileReader.open(file.path), catch: (cause) => damaged(file.path, cause) }), (reader) =>
    Effect.sync(() => reader.close()))

/** A split of an input dataset, read a record batch at a time. */
export interface SplitInput {
  readonly name: string
  readonly schema: Schema
  readonly rows: number
  /** Bytes of its Arrow files. */
  readonly bytes: number
  readonly files: ReadonlyArray<SplitFile>
  /** Its rows in order, in batches of at most the stage's batch rows. Each run reads the files again. */
  readonly batches: Stream.Stream<RecordBatch, StageError>
  /** Counts rows read some other way (a shuffle's buckets) in the stage's progress. */
  readonly advance: (rows: number) => Effect.Effect<void>
}

/** Batches of `file` of at most `batchRows` rows (slices of its own), checked against the rows it recorded. */
const fileBatches = (file: SplitFile, batchRows: number): Stream.Stream<RecordBatch, StageError> =>
  Stream.unwrapScoped(Effect.map(openReader(file), (reader) => {
    let rows = 0
    return Stream.range(0, reader.numBatches - 1).pipe(
      Stream.filter(() => reader.numBatches > 0),
      Stream.mapEffect((index) =>
        Effect.try({ try: () => reader.readBatch(index), catch: (cause) => damaged(file.path, cause) })),
      Stream.mapConcat((batch) => {
        rows += batch.numRows
        const slices: Array<RecordBatch> = []
        for (let start = 0; start < batch.numRows; start += batchRows) {
          slices.push(batch.numRows <= batchRows ? batch : batch.slice(start, Math.min(batch.numRows, start + batchRows)))
        }
        return slices
      }),
      Stream.concat(Stream.suspend(() =>
        rows === file.rows ? Stream.empty : Stream.fail(damaged(file.path, new Error(`it holds ${rows} rows where ${file.rows} were written`)))))
    )
  }))

/** Opens split `name` of `dataset` for reading in batches of at most `batchRows` rows. */
export const openSplit = (dataset: DatasetArtifact, name: string, batchRows: number): Effect.Effect<SplitInput, StageError> =>
  Effect.gen(function* () {
    const files = dataset.splits[name]
    if (files === undefined) {
      return yield* new StageError({
        message: `the dataset has no split "${name}" (it has: ${Object.keys(dataset.splits).join(", ") || "none"})`
      })
    }
    const first = files[0]
    const schema = first === undefined
      ? yield* new StageError({ message: `split "${name}" has no files` })
      : yield* Effect.scoped(Effect.map(openReader(first), (reader) => reader.schema))
    const bytes = yield* Effect.try({
      try: () => files.reduce((sum, file) => sum + statSync(file.path).size, 0),
      catch: (cause) => new StageError({ message: `cannot read split "${name}": ${(cause as Error).message}`, cause })
    })
    return {
      name,
      schema,
      rows: files.reduce((sum, file) => sum + file.rows, 0),
      bytes,
      files,
      batches: Stream.flatMap(Stream.fromIterable(files), (file) => fileBatches(file, batchRows)),
      advance: () => Effect.void
    }
  })

/**
 * The columns of a split being written: known before any row, or taken from its first
 * batch (a plug-in's `mapBatches`), with `ifEmpty` for a split that has none.
 */
export type OutputSchema = Schema | { readonly ifEmpty: Effect.Effect<Schema, StageError> }

/** The rows [start, end) of a stream of batches, read no further than `end`. */
export const rowRange = <E>(batches: Stream.Stream<RecordBatch, E>, start: number, end: number): Stream.Stream<RecordBatch, E> =>
  Stream.suspend(() => {
    let first = 0
    return batches.pipe(
      Stream.takeWhile(() => first < end),
      Stream.map((batch) => {
        const from = Math.min(batch.numRows, Math.max(0, start - first))
        const to = Math.min(batch.numRows, end - first)
        first += batch.numRows
        return from === 0 && to === batch.numRows ? batch : batch.slice(from, Math.max(from, to))
      })
    )
  })

/**
 * The first `count` rows of a split (every row for `Infinity`) as one table, reading no
 * further than they go; and how many rows the split has.
 */
export const readHead = (dataset: DatasetArtifact, split: string, count: number) =>
  Effect.gen(function* () {
    const input = yield* openSplit(dataset, split, Math.max(1, Math.min(count, DEFAULT_BATCH_ROWS)))
    const batches = yield* Stream.runCollect(rowRange(input.batches, 0, count))
    return { table: new Table(input.schema, [...batches]), rows: input.rows }
  })

/**
 * Every row of a split as one table: for what is small by nature (DPO's pairs, a
 * plug-in's whole-split transform). Stages that may meet a large split stream it
 * (`openSplit`).
 */
export const readSplit = (dataset: DatasetArtifact, split: string) => Effect.map(readHead(dataset, split, Infinity), (head) => head.table)

/**
 * Writes `batches` as split `split`'s Arrow file in `outDir`'s dataset folder, in record
 * batches of `batchRows` rows. A failure leaves a partial file in the staging folder,
 * which is thrown away with it.
 */
export const writeSplit = (
  outDir: string,
  split: string,
  schema: OutputSchema,
  batches: Stream.Stream<RecordBatch | Table, StageError>,
  batchRows: number = DEFAULT_BATCH_ROWS
): Effect.Effect<SplitFile, StageError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const file = yield* splitPath(outDir, split, "")
    let writer: IpcFileWriter | undefined
    yield* Effect.addFinalizer(() => Effect.sync(() => writer?.abort()))
    const open = (columns: Schema) =>
      Effect.try({ try: () => (writer ??= IpcFileWriter.create(file, columns, batchRows)), catch: (cause) => writeError(cause) })
    if (schema instanceof Schema) yield* open(schema)
    // Columns taken from the first batch may hold nulls in a later one.
    yield* Stream.runForEach(batches, (batch) =>
      Effect.flatMap(open(nullableSchema(batch.schema)), (w) => Effect.try({ try: () => w.write(batch), catch: (cause) => writeError(cause) })))
    const done = writer ?? (yield* open(schema instanceof Schema ? schema : yield* schema.ifEmpty))
    const rows = yield* Effect.try({ try: () => done.finish(), catch: (cause) => writeError(cause) })
    return { path: file, rows }
  }).pipe(Effect.scoped)

const nullableSchema = (schema: Schema): Schema =>
  new Schema(schema.fields.map((f) => (f.nullable ? f : new Field(f.name, f.type, true, f.metadata))), schema.metadata)

const writeError = (cause: unknown) =>
  new StageError({ message: `cannot write the dataset: ${cause instanceof Error ? cause.message : String(cause)}`, cause })

/** The path of a split's file in the staging folder (made on first use), its name checked. */
const splitPath = (outDir: string, split: string, suffix: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    if (!/^[A-Za-z0-9_.-]+$/.test(split)) {
      return yield* new StageError({ message: `invalid split name "${split}": use letters, digits, "_", "-" and "."` })
    }
    const dir = path.join(outDir, "dataset")
    yield* fs.makeDirectory(dir, { recursive: true }).pipe(Effect.mapError(writeError))
    return path.join(dir, `${split}${suffix}.arrow`)
  })

/** What a split of an output dataset is made from: a new table, or an input split kept as it is. */
export type SplitSource = Table | ReadonlyArray<SplitFile>

/**
 * Writes a dataset artifact into the stage's staging folder. Splits passed
 * through unchanged are hard-linked (copied where links are impossible), so a
 * stage that touches only `train` does not rewrite `test`.
 */
export const writeDataset = (outDir: string, splits: Readonly<Record<string, SplitSource>>) =>
  Effect.gen(function* () {
    const out: Record<string, ReadonlyArray<SplitFile>> = {}
    for (const [split, source] of Object.entries(splits)) {
      out[split] = source instanceof Table
        ? [yield* writeSplit(outDir, split, source.schema, Stream.make(source))]
        : yield* linkSplit(outDir, split, source)
    }
    return { kind: "dataset", splits: out } satisfies DatasetArtifact
  })

const linkSplit = (outDir: string, split: string, source: ReadonlyArray<SplitFile>) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const files: Array<SplitFile> = []
    for (const [i, input] of source.entries()) {
      const file = yield* splitPath(outDir, split, source.length === 1 ? "" : `-${String(i).padStart(5, "0")}`)
      yield* fs.link(input.path, file).pipe(Effect.orElse(() => fs.copyFile(input.path, file)), Effect.mapError(writeError))
      files.push({ path: file, rows: input.rows })
    }
    return files
  })

/** A split's new contents: its schema (known before any row) and its rows. */
export interface SplitResult {
  readonly schema: OutputSchema
  readonly batches: Stream.Stream<RecordBatch | Table, StageError>
  /** Rows per record batch written, when not the stage's batch rows. */
  readonly batchRows?: number
}

export interface TransformOptions {
  /** The splits to transform (all when undefined); the others pass through. */
  readonly splits: ReadonlyArray<string> | undefined
  /** Rows per batch read, and per record batch written. */
  readonly batchRows: number
  /** How many times the transform reads its input (for progress), 1 unless said. */
  readonly passes?: (input: SplitInput) => number
}

/**
 * The common shape of a dataset → dataset transform: `transform` turns each chosen
 * split's batches into new ones, written as they come, so that memory is bounded by
 * the batch size; the other splits pass through. Progress counts the rows read, and
 * the bytes of Arrow file they amount to.
 */
export const streamSplits = <P, R = never>(
  ctx: StageContext<P>,
  options: TransformOptions,
  transform: (input: SplitInput) => Effect.Effect<SplitResult, StageError, R>
) =>
  Effect.gen(function* () {
    const dataset = yield* inputDataset(ctx)
    const names = Object.keys(dataset.splits)
    for (const wanted of options.splits ?? []) {
      if (!names.includes(wanted)) {
        return yield* new StageError({
          message: `split "${wanted}" is not in the input dataset (it has: ${names.join(", ") || "none"})`
        })
      }
    }
    const chosen = names.filter((name) => options.splits === undefined || options.splits.includes(name))
    const inputs = yield* Effect.forEach(chosen, (name) => openSplit(dataset, name, options.batchRows))
    const passes = inputs.map((input) => options.passes?.(input) ?? 1)
    const total = { rows: 0, bytes: 0 }
    inputs.forEach((input, i) => {
      total.rows += input.rows * passes[i]!
      total.bytes += input.bytes * passes[i]!
    })
    const done = { rows: 0, bytes: 0 }
    const out: Record<string, ReadonlyArray<SplitFile>> = {}
    for (const name of names) {
      const index = chosen.indexOf(name)
      if (index === -1) {
        out[name] = yield* linkSplit(ctx.outDir, name, dataset.splits[name]!)
        continue
      }
      const input = inputs[index]!
      const bytesPerRow = input.rows === 0 ? 0 : input.bytes / input.rows
      const advance = (rows: number) => {
        done.rows += rows
        done.bytes += rows * bytesPerRow
        return ctx.progress(done.rows, total.rows, "rows", { done: done.bytes, total: total.bytes })
      }
      const tracked: SplitInput = { ...input, batches: Stream.tap(input.batches, (batch) => advance(batch.numRows)), advance }
      const result = yield* transform(tracked)
      out[name] = [yield* writeSplit(ctx.outDir, name, result.schema, result.batches, result.batchRows ?? options.batchRows)]
    }
    return { kind: "dataset", splits: out } satisfies DatasetArtifact
  })

/**
 * A transform applied to each batch of each chosen split (a plug-in's simplest
 * shape): `f` gets a batch of at most `batchRows` rows as a table and returns its
 * new rows. The first batch's result gives the output's columns and types, and every
 * batch must give the same; a split without rows is called once with an empty table.
 */
export const mapBatches = <P>(
  ctx: StageContext<P>,
  options: Omit<TransformOptions, "passes">,
  f: (batch: Table, split: string) => Effect.Effect<Table, StageError>
) =>
  streamSplits(ctx, options, (input) =>
    Effect.succeed({
      schema: { ifEmpty: Effect.map(f(new Table(input.schema, []), input.name), (empty) => empty.schema) },
      batches: Stream.mapEffect(input.batches, (batch) => f(new Table(input.schema, [batch]), input.name))
    }))

/**
 * The whole-split form, for a transform that needs every row at once (a
 * deduplication, a split-level statistic): each chosen split is read into memory,
 * so it suits splits that fit there. Prefer `mapBatches` or `streamSplits`.
 */
export const transformSplits = <P>(
  ctx: StageContext<P>,
  splits: ReadonlyArray<string> | undefined,
  transform: (table: Table, split: string) => Effect.Effect<Table, StageError>
) =>
  streamSplits(ctx, { splits, batchRows: DEFAULT_BATCH_ROWS }, (input) =>
    Effect.gen(function* () {
      const table = yield* readSplit({ kind: "dataset", splits: { [input.name]: input.files } }, input.name)
      const result = yield* transform(table, input.name)
      return { schema: result.schema, batches: Stream.make(result) }
    }))
