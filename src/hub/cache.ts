/**
 * The cache on disk, laid out as huggingface_hub lays it out, so that files
 * downloaded by Python (transformers, datasets) or by us are shared:
 *
 *   $HF_HUB_CACHE/datasets--openai--gsm8k/
 *     blobs/<etag>                     each file's bytes, named by its git sha1 or LFS sha256
 *     blobs/<etag>.incomplete          a download in progress, never read as a file
 *     refs/main                        the commit sha that `main` pointed to when last seen
 *     refs/refs/convert/parquet        (a ref name with slashes nests)
 *     snapshots/<sha>/main/train-….parquet  → ../../../blobs/<etag> (relative symlink)
 */
import type { FileSystem, Path } from "@effect/platform"
import { Effect, Option } from "effect"
import { filesystem, outsideCache } from "./errors.ts"
import { isCommitSha, type RepoRef } from "./repo.ts"

/** A file of a repository at a revision: its path in the repository and its size in bytes. */
export interface RepoFile {
  readonly path: string
  readonly size: number
}

/** The files under a folder, following links (a dangling one is skipped), sorted by path; none if it is missing. */
export const listFilesUnder = (fs: FileSystem.FileSystem, path: Path.Path, dir: string): Effect.Effect<ReadonlyArray<RepoFile>> =>
  Effect.gen(function* () {
    const entries = yield* fs.readDirectory(dir, { recursive: true }).pipe(Effect.orElseSucceed(() => []))
    const files: Array<RepoFile> = []
    for (const entry of entries) {
      const info = yield* fs.stat(path.join(dir, entry)).pipe(Effect.option)
      if (Option.isSome(info) && info.value.type === "File") {
        files.push({ path: entry.split(path.sep).join("/"), size: Number(info.value.size) })
      }
    }
    return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  })

/** `datasets--openai--gsm8k`, `models--Qwen--Qwen2.5-0.5B`. */
export const repoFolderName = (repo: RepoRef): string => `${repo.type}s--${repo.name.split("/").join("--")}`

export const makeRepoCache = (cacheDir: string, repo: RepoRef, fs: FileSystem.FileSystem, path: Path.Path) => {
  const root = path.join(cacheDir, repoFolderName(repo))
  const blobs = path.join(root, "blobs")
  const blob = (etag: string) => path.join(blobs, etag)
  const snapshot = (sha: string) => path.join(root, "snapshots", sha)
  const pointer = (sha: string, file: string) => path.join(snapshot(sha), ...file.split("/"))
  const ref = (revision: string) => path.join(root, "refs", ...revision.split("/"))
  const failed = (e: { readonly message: string }) => filesystem(cacheDir, e.message)

  /**
   * The path, if it lies inside this repository's folder. Every name in it was checked
   * where it came in (commit, etag, repository path, revision); this is the last guard
   * before anything is written or linked.
   */
  const contained = (target: string) => {
    const relative = path.relative(root, target)
    const inside = relative !== "" && relative !== ".." && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative)
    return inside ? Effect.succeed(target) : Effect.fail(outsideCache(cacheDir, target))
  }

  const exists = (file: string) => fs.exists(file).pipe(Effect.orElseSucceed(() => false))

  const readRef = (revision: string): Effect.Effect<Option.Option<string>> =>
    fs.readFileString(ref(revision)).pipe(
      // Anything but a commit id (a damaged file, or one written by a hostile server before) is no answer.
      Effect.map((text) => Option.some(text.trim()).pipe(Option.filter(isCommitSha))),
      Effect.orElseSucceed(() => Option.none())
    )

  /** Written to a temp file and renamed, so that a reader never sees half a sha. */
  const writeRef = (revision: string, sha: string) =>
    Effect.gen(function* () {
      const target = yield* contained(ref(revision))
      yield* fs.makeDirectory(path.dirname(target), { recursive: true })
      const temp = `${target}.${process.pid}.tmp`
      yield* fs.writeFileString(temp, sha)
      yield* fs.rename(temp, target)
    }).pipe(Effect.catchTags({ BadArgument: (e) => Effect.fail(failed(e)), SystemError: (e) => Effect.fail(failed(e)) }))

  /**
   * Points `snapshots/<sha>/<file>` at its blob with a relative symlink, replacing any
   * stale link. Where symlinks are refused (some Windows setups), the blob is copied,
   * as huggingface_hub does.
   */
  const link = (etag: string, sha: string, file: string) =>
    Effect.gen(function* () {
      const target = yield* contained(pointer(sha, file))
      const source = yield* contained(blob(etag))
      yield* fs.makeDirectory(path.dirname(target), { recursive: true })
      yield* fs.remove(target).pipe(Effect.ignore)
      yield* fs.symlink(path.relative(path.dirname(target), source), target).pipe(
        Effect.orElse(() => fs.copyFile(source, target))
      )
      return target
    }).pipe(Effect.catchTags({ BadArgument: (e) => Effect.fail(failed(e)), SystemError: (e) => Effect.fail(failed(e)) }))

  /** The files of a cached snapshot whose blobs are present. */
  const listSnapshot = (sha: string) => listFilesUnder(fs, path, snapshot(sha))

  return { root, blobs, blob, snapshot, pointer, ref, contained, exists, readRef, writeRef, link, listSnapshot, failed }
}

export type RepoCache = ReturnType<typeof makeRepoCache>
