/**
 * Reading and writing dataset artifacts from inside a stage: the helpers that
 * built-in stages and plug-ins share.
 */
import { FileSystem, Path } from "@effect/platform"
import { Table } from "apache-arrow"
import { Effect } from "effect"
import { decodeIpc, encodeIpcFile } from "./arrow.ts"
import type { DatasetArtifact, SplitFile } from "./artifact.ts"
import { StageError } from "./errors.ts"
import type { StageContext } from "./stage.ts"

/** The single upstream dataset of a dataset → dataset stage. */
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

/** Reads every file of a split into one table. */
export const readSplit = (dataset: DatasetArtifact, split: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const files = dataset.splits[split]
    if (files === undefined) {
      return yield* new StageError({
        message: `the dataset has no split "${split}" (it has: ${Object.keys(dataset.splits).join(", ") || "none"})`
      })
    }
    const tables = yield* Effect.forEach(files, (file) =>
      fs.readFile(file.path).pipe(
        Effect.mapError((cause) => new StageError({ message: `cannot read ${file.path}: ${cause.message}`, cause })),
        Effect.flatMap((bytes) => decodeSplitFile(bytes, file))
      ))
    return concatTables(tables)
  })

/**
 * One Arrow file of a split, checked against the row count its entry recorded. A file
 * damaged in the cache (bytes changed with the mtime restored get past the quick check)
 * is a clean error that names it, never a crash.
 */
const decodeSplitFile = (bytes: Uint8Array, file: SplitFile) =>
  Effect.try({
    try: () => {
      const table = decodeIpc(bytes)
      if (table.numRows !== file.rows) throw new Error(`it holds ${table.numRows} rows where ${file.rows} were written`)
      return table
    },
    catch: (cause) =>
      new StageError({
        message: `${file.path} is not a readable Arrow file (${cause instanceof Error ? cause.message : String(cause)}): the cache entry is damaged. Run \`pipeline verify --repair\` to remove damaged entries; the next run rebuilds them.`,
        cause
      })
  })

const concatTables = (tables: ReadonlyArray<Table>): Table => {
  if (tables.length === 1) return tables[0]!
  const first = tables[0]
  return first === undefined ? new Table() : new Table(first.schema, tables.flatMap((t) => t.batches))
}

/** What a split of an output dataset is made from: a new table, or an input split kept as it is. */
export type SplitSource = Table | ReadonlyArray<SplitFile>

/**
 * Writes a dataset artifact into the stage's staging folder. Splits passed
 * through unchanged are hard-linked (copied where links are impossible), so a
 * stage that touches only `train` does not rewrite `test`.
 */
export const writeDataset = (outDir: string, splits: Readonly<Record<string, SplitSource>>) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const dir = path.join(outDir, "dataset")
    yield* fs.makeDirectory(dir, { recursive: true })
    const out: Record<string, ReadonlyArray<SplitFile>> = {}
    for (const [split, source] of Object.entries(splits)) {
      if (!/^[A-Za-z0-9_.-]+$/.test(split)) {
        return yield* new StageError({ message: `invalid split name "${split}": use letters, digits, "_", "-" and "."` })
      }
      if (source instanceof Table) {
        const file = path.join(dir, `${split}.arrow`)
        yield* fs.writeFile(file, encodeIpcFile(source))
        out[split] = [{ path: file, rows: source.numRows }]
        continue
      }
      const files: Array<SplitFile> = []
      for (const [i, input] of source.entries()) {
        const file = path.join(dir, source.length === 1 ? `${split}.arrow` : `${split}-${String(i).padStart(5, "0")}.arrow`)
        yield* fs.link(input.path, file).pipe(Effect.orElse(() => fs.copyFile(input.path, file)))
        files.push({ path: file, rows: input.rows })
      }
      out[split] = files
    }
    return { kind: "dataset", splits: out } satisfies DatasetArtifact
  }).pipe(
    Effect.catchTag("SystemError", "BadArgument", (cause) =>
      Effect.fail(new StageError({ message: `cannot write the dataset: ${cause.message}`, cause })))
  )

/**
 * The common shape of a dataset → dataset transform: apply `transform` to the
 * chosen splits (all when `splits` is undefined) and pass the others through.
 */
export const transformSplits = <P>(
  ctx: StageContext<P>,
  splits: ReadonlyArray<string> | undefined,
  transform: (table: Table, split: string) => Effect.Effect<Table, StageError>
) =>
  Effect.gen(function* () {
    const dataset = yield* inputDataset(ctx)
    const names = Object.keys(dataset.splits)
    for (const wanted of splits ?? []) {
      if (!names.includes(wanted)) {
        return yield* new StageError({
          message: `split "${wanted}" is not in the input dataset (it has: ${names.join(", ") || "none"})`
        })
      }
    }
    const out: Record<string, SplitSource> = {}
    for (const split of names) {
      if (splits !== undefined && !splits.includes(split)) {
        out[split] = dataset.splits[split]!
        continue
      }
      const table = yield* readSplit(dataset, split)
      out[split] = yield* transform(table, split)
    }
    return yield* writeDataset(ctx.outDir, out)
  })
