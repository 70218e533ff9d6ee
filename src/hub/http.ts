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
 * jittered exponential backoff, honouring `Retry-After`.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { Data, Duration, Effect, Option, Schedule, Schema } from "effect"
import type { RepoFile } from "./cache.ts"
import type { HubConfig } from "./config.ts"
import * as Errors from "./errors.ts"
import type { HubError } from "./errors.ts"
import { describe, type RepoRef } from "./repo.ts"

/** A failure worth retrying; one left after the last retry becomes a HubError. */
export class Transient extends Data.TaggedError("Transient")<{
  /**
   * network: no answer; refused: nothing listens there, or the name does not resolve
   * (not retried: huggingface_hub falls back to the cache at once); interrupted: a
   * body that broke off or stalled (kept, to resume).
   */
  readonly kind: "network" | "refused" | "timeout" | "status" | "interrupted" | "integrity"
  readonly detail: string
  readonly status?: number
  readonly retryAfter?: Duration.Duration
}> {}

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

const RevisionInfo = Schema.Struct({ sha: Schema.String })
const TreeEntry = Schema.Struct({ type: Schema.String, path: Schema.String, size: Schema.Number })
const Refs = Schema.Struct({
  branches: Schema.Array(Schema.Struct({ name: Schema.String })),
  tags: Schema.Array(Schema.Struct({ name: Schema.String }))
})

const encodePath = (file: string) => file.split("/").map(encodeURIComponent).join("/")
const prefix = (repo: RepoRef) => (repo.type === "dataset" ? "datasets/" : "")

/** huggingface_hub's `_normalize_etag`: no weak marker, no quotes. */
const normalizeEtag = (etag: string) => etag.replace(/^W\//, "").replace(/^"|"$/g, "")

const retryAfterOf = (header: string | undefined): Duration.Duration | undefined => {
  if (header === undefined) return undefined
  const seconds = /^\d+$/.test(header.trim()) ? Number(header) : (Date.parse(header) - Date.now()) / 1000
  return Number.isFinite(seconds) ? Duration.seconds(Math.max(0, seconds)) : undefined
}

const isRetryable = (e: unknown): e is Transient =>
  e instanceof Transient && e.kind !== "refused" &&
  (e.retryAfter === undefined || Duration.lessThanOrEqualTo(e.retryAfter, MAX_RETRY_AFTER))

/** Errors that waiting will not fix soon: no listener, no route, no such host. */
// Nothing there, and retrying will not change it. "bad port" is fetch refusing a port
// on the WHATWG list (such as 9, the discard port) before connecting.
const UNREACHABLE = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|bad port/

/** The codes and messages down an error's chain of causes (fetch nests the socket's error). */
const causeCode = (error: unknown): string => {
  const parts: Array<string> = []
  let current: unknown = error
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const { code, message } = current as { code?: unknown; message?: unknown }
    if (typeof code === "string") parts.push(code)
    if (typeof message === "string") parts.push(message)
    current = (current as { cause?: unknown }).cause
  }
  return parts.join(" ")
}

const nextLink = (header: string | undefined): string | undefined =>
  header === undefined ? undefined : /<([^>]+)>\s*;\s*rel="next"/.exec(header)?.[1]

export const makeHttp = (config: HubConfig, httpClient: HttpClient.HttpClient) => {
  const client = httpClient.pipe(HttpClient.withTracerPropagation(false))
  const where: Errors.Where = { endpoint: config.endpoint, hasToken: Option.isSome(config.token) }
  const api = (repo: RepoRef) => `${config.endpoint}/api/${repo.type}s/${repo.name}`

  const request = (method: "GET" | "HEAD", url: string, withToken: boolean, headers: Record<string, string>) => {
    const plain = HttpClientRequest.make(method)(url).pipe(HttpClientRequest.setHeaders({ "user-agent": USER_AGENT, ...headers }))
    return withToken && Option.isSome(config.token) ? HttpClientRequest.bearerToken(plain, config.token.value) : plain
  }

  /**
   * Sends a request, following relative redirects (a renamed repository) always and
   * absolute ones (a CDN) only when asked. The token goes only where it was meant to:
   * an absolute redirect drops it.
   */
  const execute = (
    method: "GET" | "HEAD",
    url: string,
    options: { readonly withToken: boolean; readonly followAbsolute: boolean; readonly headers?: Record<string, string> }
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, Transient> => {
    const send = (at: string, withToken: boolean, hops: number): Effect.Effect<HttpClientResponse.HttpClientResponse, Transient> =>
      client.execute(request(method, at, withToken, options.headers ?? {})).pipe(
        // Redirects are ours to follow (above); fetch would follow them all, token and all.
        Effect.provideService(FetchHttpClient.RequestInit, { redirect: "manual" }),
        Effect.mapError((e) => new Transient({ kind: UNREACHABLE.test(`${e.message} ${causeCode(e)}`) ? "refused" : "network", detail: e.message })),
        Effect.flatMap((response) => {
          const location = response.headers["location"]
          const relative = location !== undefined && !/^([a-z][a-z\d+.-]*:)?\/\//i.test(location)
          return response.status >= 300 && response.status < 400 && location !== undefined && hops < 10 &&
              (relative || options.followAbsolute)
            ? Effect.ignore(response.text).pipe(Effect.zipRight(send(new URL(location, at).href, withToken && relative, hops + 1)))
            : Effect.succeed(response)
        })
      )
    return send(url, options.withToken, 0)
  }

  /** The revisions a repository has, for a "did you mean". Best effort: none on any failure. */
  const knownRevisions = (repo: RepoRef): Effect.Effect<ReadonlyArray<string>> =>
    execute("GET", `${api(repo)}/refs`, { withToken: true, followAbsolute: false }).pipe(
      Effect.flatMap((response) => response.json),
      Effect.flatMap(Schema.decodeUnknown(Refs)),
      Effect.map((refs) => [...refs.branches, ...refs.tags].map((ref) => ref.name)),
      Effect.timeout(config.requestTimeout),
      Effect.orElseSucceed(() => [])
    )

  /** Turns a non-2xx answer into the error it stands for. */
  const failure = (
    response: HttpClientResponse.HttpClientResponse,
    target: Target,
    url: string
  ): Effect.Effect<never, HubError | Transient> =>
    Effect.gen(function* () {
      yield* Effect.ignore(response.text)
      const { status } = response
      if (status === 429 || status >= 500) {
        const retryAfter = retryAfterOf(response.headers["retry-after"])
        return yield* new Transient({ kind: "status", status, detail: `HTTP ${status}`, ...(retryAfter ? { retryAfter } : {}) })
      }
      const { repo, revision, file } = target
      const message = response.headers["x-error-message"] ?? ""
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

  const getJson = <A, I>(url: string, schema: Schema.Schema<A, I>, target: Target) =>
    execute("GET", url, { withToken: true, followAbsolute: false }).pipe(
      Effect.flatMap((response) =>
        response.status >= 200 && response.status < 300
          ? response.json.pipe(
            Effect.flatMap(Schema.decodeUnknown(schema)),
            Effect.mapError((e) => Errors.protocol(describe(target.repo, target.revision), url, e.message)),
            Effect.map((value) => ({ value, next: nextLink(response.headers["link"]) }))
          )
          : failure(response, target, url)
      ),
      timeout
    )

  const retrySchedule = Schedule.exponential(config.retryBase).pipe(
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(config.retries)),
    Schedule.intersect(Schedule.identity<unknown>()),
    Schedule.whileInput(isRetryable),
    Schedule.modifyDelay(([, error], delay) =>
      error instanceof Transient && error.retryAfter !== undefined ? Duration.max(delay, error.retryAfter) : delay
    )
  )

  /** Retries transient failures; the last one becomes the HubError it stands for. */
  const withRetries = (what: string) => <A, E>(self: Effect.Effect<A, E | Transient>): Effect.Effect<A, E | HubError> =>
    self.pipe(
      Effect.retry(retrySchedule),
      Effect.catchIf((e): e is Transient => e instanceof Transient, (e) => Effect.fail(fromTransient(e, what)))
    )

  const fromTransient = (e: Transient, what: string): HubError => {
    switch (e.kind) {
      case "network":
      case "refused":
      case "timeout":
        return Errors.unreachable(what, where)
      case "interrupted":
        return Errors.interrupted(what, where)
      case "integrity":
        return Errors.integrity(what, e.detail)
      case "status":
        return e.status === 429
          ? Errors.rateLimited(what, where, e.retryAfter === undefined ? undefined : Math.ceil(Duration.toSeconds(e.retryAfter)))
          : Errors.serverError(what, where, e.status ?? 500, config.retries + 1)
    }
  }

  const revisionSha = (repo: RepoRef, revision: string) =>
    getJson(`${api(repo)}/revision/${encodeURIComponent(revision)}`, RevisionInfo, { repo, revision }).pipe(
      Effect.map(({ value }) => value.sha),
      withRetries(describe(repo, revision))
    )

  /** Every file of the tree, following the pages. */
  const tree = (repo: RepoRef, revision: string) =>
    Effect.gen(function* () {
      const files: Array<RepoFile> = []
      let url: string | undefined = `${api(repo)}/tree/${encodeURIComponent(revision)}?recursive=true&expand=false`
      while (url !== undefined) {
        const page: { value: ReadonlyArray<typeof TreeEntry.Type>; next: string | undefined } = yield* getJson(
          url,
          Schema.Array(TreeEntry),
          { repo, revision }
        ).pipe(withRetries(describe(repo, revision)))
        files.push(...page.value.filter((entry) => entry.type === "file").map(({ path, size }) => ({ path, size })))
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
    return execute("HEAD", url, { withToken: true, followAbsolute: false, headers: { "accept-encoding": "identity" } }).pipe(
      Effect.flatMap((response): Effect.Effect<FileMetadata, HubError | Transient> => {
        if (response.status >= 400 || response.status < 200) return failure(response, target, url)
        const headers = response.headers
        const redirected = response.status >= 300
        const etag = headers["x-linked-etag"] ?? headers["etag"]
        const size = Number(headers["x-linked-size"] ?? headers["content-length"])
        const commit = headers["x-repo-commit"]
        if (etag === undefined || commit === undefined || !Number.isSafeInteger(size) || (redirected && !headers["location"])) {
          return Errors.protocol(describe(repo, revision, file), url, "no ETag, X-Repo-Commit, size or redirect location")
        }
        return Effect.succeed({
          commit,
          etag: normalizeEtag(etag),
          size,
          location: redirected ? new URL(headers["location"]!, url).href : url,
          onHub: !redirected
        })
      }),
      timeout,
      withRetries(describe(repo, revision, file))
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
