/**
 * One blob into the cache, never half of one: the bytes stream into
 * `blobs/<etag>.incomplete`, a retry resumes it with a Range request (or starts over
 * where the server ignores the range), and only a file of the announced size whose
 * hash matches its etag (git's sha1 for plain files, sha256 for LFS files) is
 * renamed to `blobs/<etag>`. A crash, a dropped connection or a concurrent writer
 * can leave an `.incomplete` file behind, but never a blob that is wrong.
 *
 * The HEAD's size is the most that is ever written: a GET that announces more is
 * refused before a byte is kept, and a body that runs past it is cut there and
 * removed. Neither is retried: the server is broken, not the network.
 */
import type { FileSystem } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Data, Duration, Effect, Stream } from "effect"
import { createHash } from "node:crypto"
import { Transient } from "../http-retry.ts"
import type { RepoCache } from "./cache.ts"
import type { HubConfig } from "./config.ts"
import * as Errors from "./errors.ts"
import type { FileMetadata, HubHttp, Target } from "./http.ts"
import { describe } from "./repo.ts"

/** Bytes downloaded so far of everything an operation fetches. */
export interface DownloadProgress {
  /** The file that just advanced. */
  readonly file: string
  readonly done: number
  readonly total: number
}

export type OnProgress = (progress: DownloadProgress) => Effect.Effect<void>

/** A body longer than the HEAD announced (`announced`: what the GET's Content-Length said, when it said too much). */
class Overflow extends Data.TaggedError("Overflow")<{ readonly announced?: number }> {}

/** The hash an etag names, or undefined where it names none we know (a mirror's md5, say). */
const digestFor = (etag: string, size: number) => {
  if (/^[0-9a-f]{64}$/.test(etag)) return createHash("sha256")
  if (/^[0-9a-f]{40}$/.test(etag)) return createHash("sha1").update(`blob ${size}\0`)
  return undefined
}

export const makeDownloader = (config: HubConfig, http: HubHttp, fs: FileSystem.FileSystem) => {
  const sizeOf = (file: string) =>
    fs.stat(file).pipe(
      Effect.map((info) => Number(info.size)),
      Effect.orElseSucceed(() => 0)
    )

  /** Appends the rest of the file to `incomplete`, from wherever it stopped, up to the announced size and no further. */
  const resume = (incomplete: string, meta: FileMetadata, target: Target, onProgress: (done: number) => Effect.Effect<void>) =>
    Effect.gen(function* () {
      let offset = yield* sizeOf(incomplete)
      if (offset === meta.size) return
      if (offset > meta.size) offset = 0
      const response = yield* http.body(meta, offset, target)
      const range = /^bytes (\d+)-/.exec(response.headers["content-range"] ?? "")
      if (response.status === 200 || range === null || Number(range[1]) !== offset) offset = 0
      const length = response.headers["content-length"]?.trim()
      if (length !== undefined && /^\d+$/.test(length) && offset + Number(length) > meta.size) {
        return yield* new Overflow({ announced: offset + Number(length) })
      }
      const file = yield* fs.open(incomplete, { flag: offset === 0 ? "w" : "a" })
      let done = offset
      yield* onProgress(done)
      yield* response.stream.pipe(
        Stream.timeoutFail(
          () => new Transient({ kind: "interrupted", detail: Errors.stalled(done, meta.size, Duration.format(config.idleTimeout)) }),
          config.idleTimeout
        ),
        Stream.mapError((e) => (e instanceof Transient ? e : new Transient({ kind: "interrupted", detail: Errors.sentLess(done, meta.size) }))),
        Stream.runForEach((chunk): Effect.Effect<void, Overflow | PlatformError> =>
          done + chunk.length > meta.size
            ? Effect.fail(new Overflow({}))
            : file.writeAll(chunk).pipe(Effect.zipRight(Effect.suspend(() => onProgress((done += chunk.length)))))
        )
      )
      if (done < meta.size) return yield* new Transient({ kind: "interrupted", detail: Errors.sentLess(done, meta.size) })
    }).pipe(Effect.scoped)

  /** The hash of the finished file, compared with its etag. */
  const verify = (incomplete: string, meta: FileMetadata) =>
    Effect.gen(function* () {
      const size = yield* sizeOf(incomplete)
      if (size !== meta.size) return yield* new Transient({ kind: "interrupted", detail: Errors.sentLess(size, meta.size) })
      const hash = digestFor(meta.etag, meta.size)
      if (hash === undefined) return
      yield* fs.stream(incomplete).pipe(Stream.runForEach((chunk) => Effect.sync(() => hash.update(chunk))))
      const actual = hash.digest("hex")
      if (actual !== meta.etag) {
        yield* fs.remove(incomplete)
        return yield* new Transient({ kind: "integrity", detail: `its hash is ${actual} where the hub announced ${meta.etag}` })
      }
    })

  /** Downloads the blob `meta` describes into the cache, retrying and resuming. */
  const fetchBlob = (
    cache: RepoCache,
    meta: FileMetadata,
    target: Target & { readonly file: string },
    onProgress: (done: number) => Effect.Effect<void>
  ) => {
    const blob = cache.blob(meta.etag)
    const incomplete = `${blob}.incomplete`
    const what = describe(target.repo, target.revision, target.file)
    const origin = new URL(meta.location).origin
    return Effect.gen(function* () {
      yield* cache.contained(blob)
      yield* fs.makeDirectory(cache.blobs, { recursive: true })
      yield* resume(incomplete, meta, target, onProgress)
      yield* verify(incomplete, meta)
      yield* fs.rename(incomplete, blob)
    }).pipe(
      Effect.catchTags({
        BadArgument: (e) => Effect.fail(cache.failed(e)),
        SystemError: (e) => Effect.fail(cache.failed(e)),
        Overflow: (e) =>
          e.announced === undefined
            ? Effect.zipRight(Effect.ignore(fs.remove(incomplete)), Effect.fail(Errors.sentMore(what, origin, meta.size)))
            : Effect.fail(Errors.announcedMore(what, origin, e.announced, meta.size))
      }),
      http.withRetries(what)
    )
  }

  return { fetchBlob, sizeOf }
}

export type Downloader = ReturnType<typeof makeDownloader>
