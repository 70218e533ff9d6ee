/**
 * The hub client the stages use: commit shas for fingerprints, a dataset's splits
 * as local files, a model's files as a local folder.
 *
 * Online, every answer comes from the hub and every file lands in the shared cache
 * (see `cache.ts`); a file already in the snapshot is not downloaded again. With
 * `HF_HUB_OFFLINE=1`, or when the hub cannot be reached or keeps failing, the same
 * questions are answered from the cache alone: a revision through `refs/<name>`, a
 * repository's files through its snapshot folder. What the cache cannot answer is an
 * error that says so.
 */
import { FileSystem, HttpClient, Path } from "@effect/platform"
import { Context, Effect, Layer, Option } from "effect"
import { homedir } from "node:os"
import { listFilesUnder, makeRepoCache, type RepoFile } from "./cache.ts"
import { type HubConfig, loadHubConfig } from "./config.ts"
import { type DownloadProgress, makeDownloader, type OnProgress } from "./download.ts"
import * as Errors from "./errors.ts"
import { HubError, type HubErrorReason } from "./errors.ts"
import { makeHttp } from "./http.ts"
import { fnmatch } from "./patterns.ts"
import { dataset, describe, isCommitSha, isValidRepoId, model, type RepoRef, repoPathProblem, revisionProblem } from "./repo.ts"
import { type Plan, planSplits, type View } from "./splits.ts"

export interface DatasetSplitsOptions {
  /** The config (subset) name; may be left out when the dataset has one, or marks a default. */
  readonly config?: string
  /** A branch, a tag or a commit sha (default "main"). */
  readonly revision?: string
  readonly onProgress?: OnProgress
}

export interface DatasetSplits {
  /** The commit the requested revision names: the dataset's version, for fingerprints. */
  readonly sha: string
  readonly config: string
  /** Where the files were read: the revision itself, or the hub's parquet conversion. */
  readonly source: { readonly revision: string; readonly sha: string }
  /** Split → local file paths (in the cache's snapshot folder), in order. */
  readonly splits: Readonly<Record<string, ReadonlyArray<string>>>
  /** Whether the answer came from the cache alone (offline, or the hub unreachable). */
  readonly fromCache: boolean
}

export interface ModelFilesOptions {
  readonly revision?: string
  readonly onProgress?: OnProgress
}

export interface ModelFolder {
  /** A folder holding the files: the cache's snapshot folder, or the local folder given. */
  readonly dir: string
  /** The commit, for a hub model. */
  readonly sha: string | undefined
  /** The files of `dir` that match the patterns, relative to it. */
  readonly files: ReadonlyArray<string>
  readonly fromCache: boolean
}

export interface HubService {
  readonly config: HubConfig
  /** The commit sha a branch, tag or sha names. Offline: `refs/<revision>` in the cache, or the sha itself. */
  readonly resolveRevision: (repo: RepoRef, revision?: string) => Effect.Effect<string, HubError>
  /** The files at a revision, with sizes. Offline: the files of the cached snapshot. */
  readonly listFiles: (repo: RepoRef, revision: string) => Effect.Effect<ReadonlyArray<RepoFile>, HubError>
  /** One file into the cache: its path in the snapshot folder (a link to its blob). */
  readonly download: (repo: RepoRef, revision: string, file: string, onProgress?: OnProgress) => Effect.Effect<string, HubError>
  /** A dataset config's splits, downloaded. */
  readonly datasetSplits: (name: string, options?: DatasetSplitsOptions) => Effect.Effect<DatasetSplits, HubError>
  /**
   * A model's files matching `patterns` (fnmatch: `*.safetensors`, `tokenizer*`),
   * downloaded; or, given a local folder, that folder as it is.
   */
  readonly modelFiles: (
    modelIdOrDir: string,
    patterns: ReadonlyArray<string>,
    options?: ModelFilesOptions
  ) => Effect.Effect<ModelFolder, HubError>
}

export class Hub extends Context.Tag("Hub")<Hub, HubService>() {}

/** Where the hub's parquet conversion of a dataset lives. */
const CONVERSION = "refs/convert/parquet"

/** Failures after which the cache may still answer. */
const CACHE_FALLBACK: ReadonlyArray<HubErrorReason> = ["Unreachable", "ServerError", "RateLimited"]

export const make = (config: HubConfig) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const http = makeHttp(config, yield* HttpClient.HttpClient)
    const downloader = makeDownloader(config, http, fs)
    const cacheOf = (repo: RepoRef) => makeRepoCache(config.cacheDir, repo, fs, path)
    const blobLocks = new Map<string, Effect.Semaphore>()
    const blobLock = (blob: string) => {
      const lock = blobLocks.get(blob) ?? Effect.unsafeMakeSemaphore(1)
      blobLocks.set(blob, lock)
      return lock.withPermits(1)
    }

    const checked = (repo: RepoRef) =>
      isValidRepoId(repo.name)
        ? Effect.succeed(repo)
        : Effect.fail(
          new HubError({
            reason: "BadRepoId",
            message: `"${repo.name}" is not a ${repo.type} id: expected namespace/name (letters, digits, "-", "_", ".")`
          })
        )

    /** A revision names a file under `refs/` in the cache: it must not climb out of it. */
    const checkedRevision = (repo: RepoRef, revision: string) => {
      const problem = revisionProblem(revision)
      return problem === undefined ? Effect.succeed(revision) : Effect.fail(Errors.badRevision(repo, revision, problem))
    }

    const checkedFile = (repo: RepoRef, file: string) => {
      const problem = repoPathProblem(file)
      return problem === undefined ? Effect.succeed(file) : Effect.fail(Errors.badPath(repo, file, problem))
    }

    /** Online, else from the cache: always in offline mode, and when the hub cannot answer. */
    const onlineOrCached = <A>(what: string, online: Effect.Effect<A, HubError>, cached: Effect.Effect<Option.Option<A>, HubError>) => {
      const fromCache = (orElse: () => HubError) =>
        Effect.flatMap(cached, Option.match({ onNone: () => Effect.fail(orElse()), onSome: Effect.succeed }))
      return config.offline
        ? fromCache(() => Errors.offlineNotCached(what, config.cacheDir))
        : Effect.catchIf(online, (e) => CACHE_FALLBACK.includes(e.reason), (e) =>
          fromCache(() => (e.reason === "Unreachable" ? Errors.unreachable(what, http.where) : e)))
    }

    const cachedSha = (repo: RepoRef, revision: string) =>
      isCommitSha(revision) ? Effect.succeedSome(revision) : cacheOf(repo).readRef(revision)

    const resolveOnline = (repo: RepoRef, revision: string) =>
      http.revisionSha(repo, revision).pipe(
        Effect.tap((sha) => (sha === revision ? Effect.void : cacheOf(repo).writeRef(revision, sha)))
      )

    const resolveRevision = Effect.fn("Hub.resolveRevision")(function* (repo: RepoRef, revision: string = "main") {
      yield* checked(repo)
      yield* checkedRevision(repo, revision)
      return yield* onlineOrCached(describe(repo, revision), resolveOnline(repo, revision), cachedSha(repo, revision))
    })

    const cachedFiles = (repo: RepoRef, revision: string) =>
      Effect.flatMap(cachedSha(repo, revision), (sha) =>
        Option.isNone(sha)
          ? Effect.succeedNone
          : Effect.map(cacheOf(repo).listSnapshot(sha.value), (files) =>
            files.length === 0 ? Option.none() : Option.some({ sha: sha.value, files })
          ))

    const listFiles = Effect.fn("Hub.listFiles")(function* (repo: RepoRef, revision: string) {
      yield* checked(repo)
      yield* checkedRevision(repo, revision)
      return yield* onlineOrCached(
        describe(repo, revision),
        http.tree(repo, revision),
        Effect.map(cachedFiles(repo, revision), Option.map(({ files }) => files))
      )
    })

    const download = Effect.fn("Hub.download")(function* (repo: RepoRef, revision: string, file: string, onProgress?: OnProgress) {
      yield* checked(repo)
      yield* checkedRevision(repo, revision)
      yield* checkedFile(repo, file)
      const cache = cacheOf(repo)
      const report = (total: number) => (done: number) => onProgress === undefined ? Effect.void : onProgress({ file, done, total })
      if (isCommitSha(revision) && (yield* cache.exists(cache.pointer(revision, file)))) {
        const size = yield* downloader.sizeOf(cache.pointer(revision, file))
        yield* report(size)(size)
        return cache.pointer(revision, file)
      }
      const online = Effect.gen(function* () {
        const meta = yield* http.fileMetadata(repo, revision, file)
        if (meta.commit !== revision) yield* cache.writeRef(revision, meta.commit)
        const pointer = cache.pointer(meta.commit, file)
        if (!(yield* cache.exists(pointer))) {
          // Two paths can hold the same bytes: one fetch per blob at a time, the other then finds it.
          yield* blobLock(cache.blob(meta.etag))(Effect.gen(function* () {
            if (!(yield* cache.exists(cache.blob(meta.etag)))) {
              yield* downloader.fetchBlob(cache, meta, { repo, revision, file }, report(meta.size))
            }
          }))
          yield* cache.link(meta.etag, meta.commit, file)
        }
        yield* report(meta.size)(meta.size)
        return pointer
      })
      const cached = Effect.flatMap(cachedSha(repo, revision), (sha) =>
        Option.isNone(sha)
          ? Effect.succeedNone
          : Effect.map(cache.exists(cache.pointer(sha.value, file)), (present) =>
            present ? Option.some(cache.pointer(sha.value, file)) : Option.none()
          ))
      return yield* onlineOrCached(describe(repo, revision, file), online, cached)
    })

    /** Fetches files with a few at a time, adding their progress up into one. */
    const fetchAll = (view: View, files: ReadonlyArray<string>, onProgress: OnProgress | undefined) => {
      const sizes = new Map(view.files.map((f) => [f.path, f.size]))
      const total = files.reduce((sum, f) => sum + (sizes.get(f) ?? 0), 0)
      const doneByFile = new Map<string, number>()
      let done = 0
      const report = (progress: DownloadProgress) =>
        Effect.suspend(() => {
          done += progress.done - (doneByFile.get(progress.file) ?? 0)
          doneByFile.set(progress.file, progress.done)
          return onProgress === undefined ? Effect.void : onProgress({ file: progress.file, done, total })
        })
      return Effect.forEach(files, (file) => Effect.map(view.fetch(file, report), (local) => [file, local] as const), {
        concurrency: 4
      }).pipe(Effect.map((pairs) => new Map(pairs)))
    }

    const onlineView = (repo: RepoRef, revision: string, sha: string, files: ReadonlyArray<RepoFile>): View => ({
      revision,
      sha,
      files,
      fetch: (file, onProgress) => download(repo, sha, file, onProgress)
    })

    const cachedView = (repo: RepoRef, revision: string, sha: string, files: ReadonlyArray<RepoFile>): View => ({
      revision,
      sha,
      files,
      fetch: (file) => Effect.succeed(cacheOf(repo).pointer(sha, file))
    })

    const readText = (view: View, file: string) =>
      Effect.flatMap(view.fetch(file), (local) =>
        fs.readFileString(local).pipe(Effect.mapError((e) => Errors.filesystem(config.cacheDir, e.message))))

    const localSplits = (chosen: Plan, locals: ReadonlyMap<string, string>) =>
      Object.fromEntries(Object.entries(chosen.splits).map(([split, files]) => [split, files.map((f) => locals.get(f)!)]))

    const datasetSplits = Effect.fn("Hub.datasetSplits")(function* (name: string, options: DatasetSplitsOptions = {}) {
      const repo = yield* checked(dataset(name))
      const revision = yield* checkedRevision(repo, options.revision ?? "main")
      const online = Effect.gen(function* () {
        const sha = yield* resolveOnline(repo, revision)
        const main = onlineView(repo, revision, sha, yield* http.tree(repo, sha))
        const conversion = resolveOnline(repo, CONVERSION).pipe(
          Effect.flatMap((converted) =>
            Effect.map(http.tree(repo, converted), (files) => Option.some(onlineView(repo, CONVERSION, converted, files)))
          ),
          Effect.catchIf((e) => e.reason === "RevisionNotFound", () => Effect.succeedNone)
        )
        const chosen = yield* planSplits(repo, main, (file) => readText(main, file), conversion, options.config, undefined)
        const locals = yield* fetchAll(chosen.view, Object.values(chosen.splits).flat(), options.onProgress)
        return {
          sha,
          config: chosen.config,
          source: { revision: chosen.view.revision, sha: chosen.view.sha },
          splits: localSplits(chosen, locals),
          fromCache: false
        }
      })
      const cached = Effect.gen(function* () {
        const sha = yield* cachedSha(repo, revision)
        if (Option.isNone(sha)) return Option.none()
        // The main snapshot may hold nothing when every file came from the conversion.
        const mainView = cachedView(repo, revision, sha.value, yield* cacheOf(repo).listSnapshot(sha.value))
        const conversion = Effect.map(cachedFiles(repo, CONVERSION), Option.map(({ files, sha }) => cachedView(repo, CONVERSION, sha, files)))
        const chosen = yield* planSplits(
          repo,
          mainView,
          (file) => readText(mainView, file),
          conversion,
          options.config,
          config.offline ? config.cacheDir : undefined
        )
        const locals = yield* fetchAll(chosen.view, Object.values(chosen.splits).flat(), options.onProgress)
        return Option.some({
          sha: sha.value,
          config: chosen.config,
          source: { revision: chosen.view.revision, sha: chosen.view.sha },
          splits: localSplits(chosen, locals),
          fromCache: true
        })
      }).pipe(
        // What the cache lacks is "not cached"; a config it does not know is only final offline.
        Effect.catchIf((e) => e.reason === "NoData" || (!config.offline && e.reason.startsWith("Config")), () => Effect.succeedNone)
      )
      const what = `${describe(repo, revision)}${options.config === undefined ? "" : ` (config ${options.config})`}`
      return yield* onlineOrCached(what, online, cached)
    })

    /** A local folder given for a model, as transformers' `from_pretrained` tells one from a model id. */
    const localFolder = (source: string) =>
      Effect.gen(function* () {
        const resolved = path.resolve(source.startsWith("~") ? homedir() + source.slice(1) : source)
        const info = yield* fs.stat(resolved).pipe(Effect.option)
        if (Option.isSome(info)) {
          return info.value.type === "Directory"
            ? Option.some(resolved)
            : yield* new HubError({ reason: "LocalDir", message: `${resolved} is a file: give the model's folder, or a model id on the hub` })
        }
        const looksLikePath = /^(~|\.{1,2})?[/\\]/.test(source) || source.startsWith(".") || source.split("/").length > 2
        return looksLikePath
          ? yield* new HubError({ reason: "LocalDir", message: `no model folder at ${resolved}` })
          : Option.none<string>()
      })

    const folder = (dir: string, sha: string | undefined, files: ReadonlyArray<string>, fromCache: boolean): ModelFolder => ({
      dir,
      sha,
      files,
      fromCache
    })

    const modelFiles = Effect.fn("Hub.modelFiles")(function* (
      source: string,
      patterns: ReadonlyArray<string>,
      options: ModelFilesOptions = {}
    ) {
      const regexes = patterns.map(fnmatch)
      const matching = (files: ReadonlyArray<RepoFile>) => files.filter((f) => regexes.some((r) => r.test(f.path)))
      const local = yield* localFolder(source)
      if (Option.isSome(local)) {
        const files = matching(yield* listFilesUnder(fs, path, local.value)).map((f) => f.path)
        return folder(local.value, undefined, files, false)
      }
      const repo = yield* checked(model(source))
      const revision = yield* checkedRevision(repo, options.revision ?? "main")
      const online = Effect.gen(function* () {
        const sha = yield* resolveOnline(repo, revision)
        const all = yield* http.tree(repo, sha)
        const files = matching(all).map((f) => f.path)
        if (files.length === 0) {
          return yield* Errors.noData(repo, revision, `no file matches ${patterns.join(", ")} (files: ${all.map((f) => f.path).slice(0, 10).join(", ")})`)
        }
        yield* fetchAll(onlineView(repo, revision, sha, all), files, options.onProgress)
        return folder(cacheOf(repo).snapshot(sha), sha, files, false)
      })
      const cached = Effect.map(cachedFiles(repo, revision), (found) =>
        Option.flatMap(found, ({ sha, files }) => {
          const present = matching(files).map((f) => f.path)
          return present.length === 0
            ? Option.none()
            : Option.some(folder(cacheOf(repo).snapshot(sha), sha, present, true))
        }))
      return yield* onlineOrCached(describe(repo, revision), online, cached)
    })

    return Hub.of({ config, resolveRevision, listFiles, download, datasetSplits, modelFiles })
  })

/** The hub client with the given settings. */
export const layerConfig = (config: HubConfig) => Layer.effect(Hub, make(config))

/** The hub client with the settings of the environment (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE`, …). */
export const layer: Layer.Layer<Hub, HubError, FileSystem.FileSystem | Path.Path | HttpClient.HttpClient> = Layer.effect(
  Hub,
  Effect.flatMap(loadHubConfig, make)
)
