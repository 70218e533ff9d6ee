/** What every format's reader opens a file as: its schema and row count first, then its batches. */
import type { RecordBatch, Schema } from "apache-arrow"
import { Chunk, Effect, Stream } from "effect"
import type { BatchBuilder } from "./batch.ts"
import type { FormatError } from "./error.ts"

export interface OpenedFile {
  /** The schema every batch has: the same schema the whole-file reader gives for this file. */
  readonly schema: Schema
  /** Rows in the file. */
  readonly rows: number
  /**
   * The file's rows in order, in batches of `batchRows` rows (the last one shorter);
   * no batch for a file without rows. Each run reads the file anew.
   */
  readonly batches: Stream.Stream<RecordBatch, FormatError>
}

export interface OpenOptions {
  readonly batchRows: number
  /**
   * Progress: bytes of the file read so far, out of `total`, which counts every pass: twice
   * the file for the text formats but JSON documents, the column chunks read for parquet.
   */
  readonly onProgress?: (done: number, total: number) => void
}

/** `rows` in batches of `batchRows`. */
export const rowBatches = (
  rows: Stream.Stream<Record<string, unknown>, FormatError>,
  builder: BatchBuilder,
  batchRows: number
): Stream.Stream<RecordBatch, FormatError> =>
  rows.pipe(Stream.grouped(batchRows), Stream.map((chunk) => builder.build(Chunk.toReadonlyArray(chunk))))

/**
 * The progress callback of a pass that reads `share` bytes of `total`, starting `before`
 * bytes in; capped at its share, so that progress only grows from pass to pass.
 */
export const progressFrom = (options: OpenOptions, before: number, share: number, total: number) => (done: number): void =>
  options.onProgress?.(before + Math.min(done, share), total)

/**
 * Progress at `total` once the batches end: for the formats read at positions, whose
 * total is what the file's metadata says the reads will take, give or take a header.
 */
export const completeProgress = (options: OpenOptions, total: number) =>
  Stream.onEnd(Effect.sync(() => options.onProgress?.(total, total)))
