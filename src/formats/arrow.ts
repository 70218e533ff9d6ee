/**
 * Arrow IPC, file or stream, returned as is. Feather v2 is the IPC file format;
 * Feather v1, and streams from before Arrow 0.15 (without the continuation marker),
 * are refused.
 */
import type { Table } from "apache-arrow"
import { Effect } from "effect"
import { decodeIpc } from "../arrow.ts"
import { formatError, type FormatError } from "./error.ts"

const FILE_MAGIC = new TextEncoder().encode("ARROW1")
const STREAM_CONTINUATION = [0xff, 0xff, 0xff, 0xff]

const startsWith = (bytes: Uint8Array, prefix: ArrayLike<number>): boolean =>
  bytes.length >= prefix.length && Array.from(prefix).every((byte, i) => bytes[i] === byte)

/** The table's vectors are views into `bytes`. */
export const readArrow = (bytes: Uint8Array, path: string): Effect.Effect<Table, FormatError> =>
  // apache-arrow reads bytes of any other kind as an empty table instead of failing.
  startsWith(bytes, FILE_MAGIC) || startsWith(bytes, STREAM_CONTINUATION)
    ? Effect.try({
      try: () => decodeIpc(bytes),
      catch: (error) => formatError(path, `corrupt Arrow IPC data: ${error instanceof Error ? error.message : String(error)}`)
    })
    : Effect.fail(formatError(path, "not an Arrow IPC file or stream"))
