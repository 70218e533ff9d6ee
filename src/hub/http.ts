/**
 * The hub's HTTP protocol as huggingface_hub speaks it (`hf_api.py`,
 * `file_download.py`, `utils/_http.py`):
 * - `GET /api/{datasets|models}/{repo}/revision/{rev}`: the commit a revision names;
 * - `GET /api/{type}s/{repo}/tree/{rev}?recursive=true`: the files, paged by a
 *   `Link: <…>; rel="next"` header;
 * - `HEAD /{datasets/}{repo}/resolve/{rev}/{path}`: a file's commit (`X-Repo-Commit`),
 *   etag and size; an LFS file answers 302 to a CDN with `X-Linked-Etag` and
 *   `X-Linked-Size`, and the CDN is then fetched without the token.
 * Revisions are URL-encoded as one path segment (`refs%2Fconvert%2Fparquet`).
 * Failures are told apart by `X-Error-Code` (RepoNotFound, GatedRepo, RevisionNotFound,
 * EntryNotFound). 429s, 5xx, timeouts and dropped connections are retried with
 * jittered exponential backoff, honouring `Retry-After` (`../http-retry.ts`).
 *
 * Every answer is treated as a stranger's: a commit must be 40 hex digits, an ETag a
 * hex digest, a listed path relative and normalised (they name files in the cache);
 * the token goes to the endpoint's origin only, compared by the URL parser, never
 * across a redirect or a page link to another; an API answer is read up to a cap.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { Duration, Effect, Option, Schema, Stream } from "effect"
import { requestFailure, retryAfter, retrySchedule, Transient } from "../http-retry.ts"
import type { RepoFile } from "./cache.ts"
import type { HubConfig } from "./config.ts"
import * as Errors from "./errors.ts"
import type { HubError } from "./errors.ts"
import { describe, isCommitSha, repoPathProblem, type RepoRef } from "./repo.ts"

/** What a request is about, for messages. */
export interface Target {
  readonly repo: RepoRef
  readonly revision: string
  readonly file?: string
}

export interface FileMetadata {
  readonly commit: string
  readonly etag: string
  readonly size: number
  /** Where to GET the bytes: the resolve URL, or the CDN it redirected to. */
  readonly location: string
  /** Whether `location` is the hub itself, which alone is sent the token. */
  readonly onHub: boolean
}

/** A longer Retry-After is not waited out: the run fails and says when to come back. */
const MAX_RETRY_AFTER = Duration.minutes(5)

const USER_AGENT = "llm-pipeline/0.1.0"

/** The most of an API answer that is read: a tree page of the hub's 1,000 entries is a few hundred kB. */
const MAX_JSON_BYTES = 32 * 1024 * 1024
/** The most of an error or redirect body that is read (then dropped). */
const MAX_DISCARDED_BYTES = 64 * 1024

const RevisionInfo = Schema.Struct({ sha: Schema.String })
const TreeEntry = Schema.Struct({ type: Schema.String, path: Schema.String, size: Schema.NonNegativeInt })
const Refs = Schema.Struct({
  branches: Schema.Array(Schema.Struct({ name: Schema.String })),
  tags: Schema.Array(Schema.Struct({ name: Schema.String }))
})

const encodePath = (file: string) => file.split("/").map(encodeURIComponent).join("/")
const prefix = (repo: RepoRef) => (repo.type === "dataset" ? "datasets/" : "")

/** huggingface_hub's `_normalize_etag`: no weak marker, no quotes. */
const normalizeEtag = (etag: string) => etag.replace(/^W\//, "").replace(/^"|"$/g, "")

/** An ETag names a blob in the cache: only a hex digest (the hub's are git sha1s and sha256s) can name one safely. */
const isHexDigest = (etag: string) => /^[0-9a-f]{32,128}$/.test(etag)

/** The URL's origin (scheme, host, port), as fetch will resolve it; undefined when it does not parse. */
const originOf = (url: string, base?: string): string | undefined => {
  try {
    return new URL(url, base).origin
  } catch {
    return undefined
  }
}

/**
 * Whether a Location is written relative to the request (no scheme or host of its
 * own), as the URL parser reads it: `/\host/x` names another host, since WHATWG URLs
 * read `\` as `/`. Resolved against two bases, a relative one keeps each base's host.
 */
const isRelativeReference = (location: string) =>
  originOf(location, "http://a.invalid/") === "http://a.invalid" && originOf(location, "http://b.invalid/") === "http://b.invalid"

/** An http(s) URL resolved against `base`; undefined otherwise (a `data:` or `file:` URL, garbage). */
const httpUrl = (url: string, base: string): URL | undefined => {
  try {
    const resolved = new URL(url, base)
    return resolved.protocol === "http:" || resolved.protocol === "https:" ? resolved : undefined
  } catch {
    return undefined
  }
}

const nextLink = (header: string | undefined): string | undefined =>
  header === undefined ? undefined : /<([^>]*)>\s*;\s*rel="?next"?/.exec(header)?.[1]

/** At most `limit` bytes of a body; `undefined` when it holds more (the rest is not read). */
const readAtMost = (response: HttpClientResponse.HttpClientResponse, limit: number) =>
  Effect.suspend(() => {
    const chunks: Array<Uint8Array> = []
    let size = 0
    return response.stream.pipe(
      Stream.runForEachWhile((chunk) =>
        Effect.sync(() => {
          size += chunk.length
          if (size <= limit) chunks.push(chunk)
          return size <= limit
        })
      ),
      Effect.map(() => (size > limit ? undefined : Buffer.concat(chunks))),
      Effect.mapError((e) => new Transient({ kind: "network", detail: `the answer broke off: ${e.message}` }))
    )
  })

/** Reads a little of a body nobody needs, so that the connection can be reused; never the whole of an endless one. */
const discard = (response: HttpClientResponse.HttpClientResponse) => Effect.ignore(readAtMost(response, MAX_DISCARDED_BYTES))

export const makeHttp = (config: HubConfig, httpClient: HttpClient.HttpClient) => {
  const client = httpClient.pipe(HttpClient.withTracerPropagation(false))
  const where: Errors.Where = { endpoint: config.endpoint, hasToken: Option.isSome(config.token) }
  const hubOrigin = originOf(config.endpoint)
  const api = (repo: RepoRef) => `${config.endpoint}/api/${repo.type}s/${repo.name}`

  /** The token rides along only where asked, and only to the endpoint's own origin. */
  const request = (method: "GET" | "HEAD", url: string, withToken: boolean, headers: Record<string, string>) => {
    const plain = HttpClientRequest.make(method)(url).pipe(HttpClientRequest.setHeaders({ "user-agent": USER_AGENT, ...headers }))
    return withToken && Option.isSome(config.token) && hubOrigin !== undefined && originOf(url) === hubOrigin
      ? HttpClientRequest.bearerToken(plain, config.token.value)
      : plain
  }

  /**
   * Sends a request, following relative redirects (a renamed repository) always and
   * absolute ones (a CDN) only when asked, as huggingface_hub does. An absolute
   * redirect drops the token for the rest of the way, and `request` never sends it
   * off the endpoint's origin anyway. A redirect to anything but http(s) is not followed.
   */
  const execute = (
    method: "GET" | "HEAD",
    url: string,
    options: { readonly withToken: boolean; readonly followAbsolute: boolean; readonly headers?: Record<string, string> }
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, Transient> => {
    const send = (at: string, withToken: boolean, hops: number): Effect.Effect<HttpClientResponse.HttpClientResponse, Transient> =>
      client.execute(request(method, at, withToken, options.headers ?? {})).pipe(
        // Redirects are ours to follow (above); fetch would follow them all.
        Effect.provideService(FetchHttpClient.RequestInit, { redirect: "manual" }),
        Effect.mapError((e) => requestFailure(e)),
        Effect.flatMap((response) => {
          const location = response.headers["location"]
          const next = location === undefined ? undefined : httpUrl(location, at)
          if (response.status < 300 || response.status >= 400 || location === undefined || next === undefined || hops >= 10) {
            return Effect.succeed(response)
          }
          const relative = isRelativeReference(location)
          return relative || options.followAbsolute
            ? Effect.zipRight(discard(response), send(next.href, withToken && relative, hops + 1))
            : Effect.succeed(response)
        })
      )
    return send(url, options.withToken, 0)
  }

  /** An API answer as JSON, read up to MAX_JSON_BYTES. */
  const readJson = (response: HttpClientResponse.HttpClientResponse, what: string, url: string) =>
    Effect.flatMap(readAtMost(response, MAX_JSON_BYTES), (body) => {
      if (body === undefined) return Effect.fail(Errors.protocol(what, url, `the answer is larger than ${MAX_JSON_BYTES / 1024 / 1024} MiB`))
      try {
        return Effect.succeed<unknown>(JSON.parse(body.toString("utf8")))
      } catch (error) {
        return Effect.fail(Errors.protocol(what, url, `the answer is not JSON (${Errors.printable((error as Error).message)})`))
      }
    })

  /** The revisions a repository has, for a "did you mean". Best effort: none on any failure. */
  const knownRevisions = (repo: RepoRef): Effect.Effect<ReadonlyArray<string>> => {
    const url = `${api(repo)}/refs`
    return execute("GET", url, { withToken: true, followAbsolute: false }).pipe(
      Effect.flatMap((response) => readJson(response, describe(repo, "refs"), url)),
      Effect.flatMap(Schema.decodeUnknown(Refs)),
      Effect.map((refs) => [...refs.branches, ...refs.tags].map((ref) => Errors.printable(ref.name, 100)).slice(0, 50)),
      Effect.timeout(config.requestTimeout),
      Effect.orElseSucceed(() => [])
    )
  }

  /** Turns a non-2xx answer into the error it stands for. */
  const failure = (
    response: HttpClientResponse.HttpClientResponse,
    target: Target,
    url: string
  ): Effect.Effect<never, HubError | Transient> =>
    Effect.gen(function* () {
      yield* discard(response)
      const { status } = response
      const { repo, revision, file } = target
      if (status === 429 || status >= 500) {
        const wait = retryAfter(response.headers["retry-after"], Date.now())
        return yield* new Transient({ kind: "status", status, detail: `HTTP ${status}`, ...(wait ? { retryAfter: wait } : {}) })
      }
      const location = response.headers["location"]
      if (status >= 300 && status < 400 && location !== undefined) {
        const next = httpUrl(location, url)
        const why = next === undefined
          ? "not an http(s) URL"
          : originOf(next.href) === originOf(url) ? "more than 10 redirects" : "another origin"
        return yield* Errors.protocol(
          describe(repo, revision, file),
          url,
          `HTTP ${status} redirect to ${Errors.printable(next?.href ?? location)}, ${why}: not followed`
        )
      }
      const message = Errors.printable(response.headers["x-error-message"] ?? "")
      switch (response.headers["x-error-code"]) {
        case "RevisionNotFound":
          return yield* Errors.revisionNotFound(repo, revision, where, yield* knownRevisions(repo))
        case "EntryNotFound":
          return yield* Errors.entryNotFound(repo, revision, file ?? url)
        case "GatedRepo":
          return yield* Errors.gated(repo, where)
        case "RepoNotFound":
          return yield* Errors.repoNotFound(repo, where)
      }
      // As huggingface_hub: a 401 on a repository URL means "not found or private".
      if (status === 401) {
        return yield* (message.startsWith("Invalid credentials") ? Errors.badToken(where) : Errors.repoNotFound(repo, where))
      }
      if (status === 403) return yield* Errors.forbidden(repo, where)
      if (status === 404) {
        return yield* (file === undefined ? Errors.repoNotFound(repo, where) : Errors.entryNotFound(repo, revision, file))
      }
      return yield* Errors.protocol(describe(repo, revision, file), url, `HTTP ${status}${message === "" ? "" : ` ${message}`}`)
    })

  const timeout = <A, E>(self: Effect.Effect<A, E>) =>
    Effect.timeoutFail(self, {
      duration: config.requestTimeout,
      onTimeout: () => new Transient({ kind: "timeout", detail: `no answer in ${Duration.format(config.requestTimeout)}` })
    })

  /** An API answer, decoded, and the next page's URL (resolved; on any origin, where it gets no token). */
  const getJson = <A, I>(url: string, schema: Schema.Schema<A, I>, target: Target) => {
    const what = describe(target.repo, target.revision)
    return execute("GET", url, { withToken: true, followAbsolute: false }).pipe(
      Effect.flatMap((response) =>
        response.status >= 200 && response.status < 300
          ? readJson(response, what, url).pipe(
            Effect.flatMap((json) =>
              Effect.mapError(Schema.decodeUnknown(schema)(json), (e) => Errors.protocol(what, url, Errors.printable(e.message, 500)))
            ),
            Effect.flatMap((value) => {
              const link = nextLink(response.headers["link"])
              const next = link === undefined ? undefined : httpUrl(link, url)
              return link !== undefined && next === undefined
                ? Effect.fail(Errors.protocol(what, url, `the next page's link "${Errors.printable(link)}" is not an http(s) URL`))
                : Effect.succeed({ value, next: next?.href })
            })
          )
          : failure(response, target, url)
      ),
      timeout
    )
  }

  const retries = retrySchedule({ base: config.retryBase, retries: config.retries, maxRetryAfter: MAX_RETRY_AFTER })

  /** Retries transient failures; the last one becomes the HubError it stands for. */
  const withRetries = (what: string) => <A, E>(self: Effect.Effect<A, E | Transient>): Effect.Effect<A, E | HubError> =>
    self.pipe(
      Effect.retry(retries),
      Effect.catchIf((e): e is Transient => e instanceof Transient, (e) => Effect.fail(fromTransient(e, what)))
    )

  const fromTransient = (e: Transient, what: string): HubError => {
    switch (e.kind) {
      case "network":
      case "refused":
      case "timeout":
        return Errors.unreachable(what, where)
      case "interrupted":
        return Errors.interrupted(what, where, e.detail)
      case "integrity":
        return Errors.integrity(what, e.detail)
      case "status":
        return e.status === 429
          ? Errors.rateLimited(what, where, e.retryAfter === undefined ? undefined : Math.ceil(Duration.toSeconds(e.retryAfter)))
          : Errors.serverError(what, where, e.status ?? 500, config.retries + 1)
    }
  }

  const notACommit = (commit: string, source: string) =>
    `${source} "${Errors.printable(commit)}" is not a commit id (40 hexadecimal digits)`

  const revisionSha = (repo: RepoRef, revision: string) => {
    const url = `${api(repo)}/revision/${encodeURIComponent(revision)}`
    return getJson(url, RevisionInfo, { repo, revision }).pipe(
      Effect.flatMap(({ value }) =>
        isCommitSha(value.sha)
          ? Effect.succeed(value.sha)
          : Effect.fail(Errors.protocol(describe(repo, revision), url, notACommit(value.sha, "the commit")))
      ),
      withRetries(describe(repo, revision))
    )
  }

  /** Every file of the tree, following the pages; each path checked, as it will name a file in the cache. */
  const tree = (repo: RepoRef, revision: string) =>
    Effect.gen(function* () {
      const files: Array<RepoFile> = []
      const seen = new Set<string>()
      let url: string | undefined = `${api(repo)}/tree/${encodeURIComponent(revision)}?recursive=true&expand=false`
      while (url !== undefined) {
        if (seen.has(url)) {
          return yield* Errors.protocol(describe(repo, revision), url, "the tree's next page links back to a page already read")
        }
        if (seen.size >= config.maxTree.pages) {
          return yield* Errors.protocol(describe(repo, revision), url, `the tree goes on past ${config.maxTree.pages.toLocaleString("en-US")} pages`)
        }
        seen.add(url)
        const page: { value: ReadonlyArray<typeof TreeEntry.Type>; next: string | undefined } = yield* getJson(
          url,
          Schema.Array(TreeEntry),
          { repo, revision }
        ).pipe(withRetries(describe(repo, revision)))
        for (const { path, size, type } of page.value) {
          if (type !== "file") continue
          const problem = repoPathProblem(path)
          if (problem !== undefined) {
            return yield* Errors.protocol(describe(repo, revision), url, `it lists a file named "${Errors.printable(path)}": ${problem}`)
          }
          files.push({ path, size })
        }
        if (files.length > config.maxTree.files) {
          return yield* Errors.protocol(describe(repo, revision), url, `the tree lists more than ${config.maxTree.files.toLocaleString("en-US")} files`)
        }
        url = page.next
      }
      return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    })

  const resolveUrl = (repo: RepoRef, revision: string, file: string) =>
    `${config.endpoint}/${prefix(repo)}${repo.name}/resolve/${encodeURIComponent(revision)}/${encodePath(file)}`

  /** HEAD on the resolve URL, without following the CDN redirect, to read the linked etag and size. */
  const fileMetadata = (repo: RepoRef, revision: string, file: string) => {
    const url = resolveUrl(repo, revision, file)
    const target = { repo, revision, file }
    const what = describe(repo, revision, file)
    return execute("HEAD", url, { withToken: true, followAbsolute: false, headers: { "accept-encoding": "identity" } }).pipe(
      Effect.flatMap((response): Effect.Effect<FileMetadata, HubError | Transient> => {
        if (response.status >= 400 || response.status < 200) return failure(response, target, url)
        const headers = response.headers
        const redirected = response.status >= 300
        const rawEtag = headers["x-linked-etag"] ?? headers["etag"]
        const rawSize = headers["x-linked-size"] ?? headers["content-length"]
        const commit = headers["x-repo-commit"]
        const location = redirected && headers["location"] !== undefined ? httpUrl(headers["location"], url) : undefined
        if (rawEtag === undefined || commit === undefined || rawSize === undefined || (redirected && location === undefined)) {
          return Errors.protocol(what, url, "no ETag, X-Repo-Commit, size or http(s) redirect location")
        }
        const etag = normalizeEtag(rawEtag)
        const size = /^\d+$/.test(rawSize.trim()) ? Number(rawSize) : NaN
        if (!isCommitSha(commit)) return Errors.protocol(what, url, notACommit(commit, "X-Repo-Commit"))
        if (!isHexDigest(etag)) {
          return Errors.protocol(what, url, `ETag "${Errors.printable(etag)}" is not a hex digest, so it names no file in the cache`)
        }
        if (!Number.isSafeInteger(size)) return Errors.protocol(what, url, `the size "${Errors.printable(rawSize)}" is not a number of bytes`)
        return Effect.succeed({ commit, etag, size, location: location?.href ?? url, onHub: !redirected })
      }),
      timeout,
      withRetries(what)
    )
  }

  /** Starts a GET of the bytes from `offset` on (a Range request when resuming). */
  const body = (meta: FileMetadata, offset: number, target: Target) =>
    execute("GET", meta.location, {
      withToken: meta.onHub,
      followAbsolute: true,
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {}
    }).pipe(
      Effect.flatMap((response) =>
        response.status === 200 || response.status === 206 ? Effect.succeed(response) : failure(response, target, meta.location)
      ),
      timeout
    )

  return { where, revisionSha, tree, fileMetadata, body, withRetries }
}

export type HubHttp = ReturnType<typeof makeHttp>
