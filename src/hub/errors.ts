/**
 * Every way a hub operation can fail, as one tagged error with a one-line message
 * that names the repository and says what to do. Messages never hold the token:
 * they are built from the repository, the endpoint and the cache folder only.
 */
import { Data } from "effect"
import { didYouMean, suggestion } from "../errors.ts"
import { describe, type RepoRef, webUrl } from "./repo.ts"

export type HubErrorReason =
  | "BadRepoId"
  | "BadRevision"
  | "BadPath"
  | "BadCard"
  | "RepoNotFound"
  | "Gated"
  | "BadToken"
  | "Forbidden"
  | "RevisionNotFound"
  | "EntryNotFound"
  | "ConfigNotFound"
  | "ConfigRequired"
  | "NoData"
  | "Unreachable"
  | "Interrupted"
  | "ServerError"
  | "RateLimited"
  | "OfflineNotCached"
  | "Integrity"
  | "Protocol"
  | "LocalDir"
  | "Config"
  | "Filesystem"

export class HubError extends Data.TaggedError("HubError")<{
  readonly reason: HubErrorReason
  readonly message: string
}> {}

const fail = (reason: HubErrorReason, message: string) => new HubError({ reason, message })

/** Text a server chose (a header, a name from a listing or a card), made safe to print on one line: control characters escaped, at most `max` characters. */
export const printable = (text: string, max = 200): string => {
  const escaped = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
  return escaped.length > max ? `${escaped.slice(0, max)}…` : escaped
}

/** A byte count as people read it: 1,880. */
const bytes = (n: number) => n.toLocaleString("en-US")

/** What the messages need to know about where a request went. */
export interface Where {
  readonly endpoint: string
  readonly hasToken: boolean
}

export const repoNotFound = (repo: RepoRef, where: Where) =>
  fail(
    "RepoNotFound",
    `no ${repo.type} ${repo.name} on ${where.endpoint} (check the name, or ${
      where.hasToken ? "that HF_TOKEN can read it" : "set HF_TOKEN"
    } if it is private)`
  )

export const gated = (repo: RepoRef, where: Where) =>
  fail(
    "Gated",
    where.hasToken
      ? `${repo.type} ${repo.name} is gated and HF_TOKEN has no access: accept its terms at ${webUrl(where.endpoint, repo)} with the account of that token`
      : `${repo.type} ${repo.name} is gated: accept its terms at ${webUrl(where.endpoint, repo)} and set HF_TOKEN`
  )

export const badToken = (where: Where) =>
  fail("BadToken", `${where.endpoint} refused HF_TOKEN (invalid credentials): check it, or unset it to read public repos`)

export const forbidden = (repo: RepoRef, where: Where) =>
  fail("Forbidden", `${where.endpoint} refused access to ${repo.type} ${repo.name}: check that HF_TOKEN can read it`)

export const revisionNotFound = (repo: RepoRef, revision: string, where: Where, known: ReadonlyArray<string>) => {
  const close = didYouMean(revision, known)
  const hints = [close === undefined ? "" : `did you mean "${close}"?`, known.length > 0 ? `branches and tags: ${known.join(", ")}` : ""]
    .filter((hint) => hint !== "")
  return fail(
    "RevisionNotFound",
    `${repo.type} ${repo.name} has no revision "${revision}" on ${where.endpoint}${hints.length > 0 ? ` (${hints.join("; ")})` : ""}`
  )
}

export const entryNotFound = (repo: RepoRef, revision: string, file: string) =>
  fail("EntryNotFound", `${describe(repo, revision)} has no file ${file}`)

export const configNotFound = (repo: RepoRef, config: string, configs: ReadonlyArray<string>, cached?: string) =>
  fail(
    "ConfigNotFound",
    cached === undefined
      ? `dataset ${repo.name} has no config "${config}"${suggestion(config, configs)} (configs: ${configs.join(", ")})`
      : `HF_HUB_OFFLINE=1 and dataset ${repo.name} has no config "${config}" in the cache at ${cached} (cached: ${configs.join(", ")}): run once online first`
  )

export const configRequired = (repo: RepoRef, configs: ReadonlyArray<string>) =>
  fail("ConfigRequired", `dataset ${repo.name} has several configs (${configs.join(", ")}): choose one with \`config\``)

export const noData = (repo: RepoRef, revision: string, detail: string) =>
  fail("NoData", `${describe(repo, revision)}: ${detail}`)

export const unreachable = (what: string, where: Where) =>
  fail("Unreachable", `cannot reach ${where.endpoint} and nothing is cached for ${what}: connect, or set HF_ENDPOINT to a mirror`)

/** `detail` says how it stopped: "the server sent less than it announced (…)", "no data for 10s after …". */
export const interrupted = (what: string, where: Where, detail: string) =>
  fail("Interrupted", `the download of ${what} from ${where.endpoint} stopped short: ${detail}; run again to resume it`)

/** What an interrupted download got, for `interrupted`'s detail. */
export const sentLess = (received: number, announced: number) =>
  `the server sent less than it announced (${bytes(received)} of ${bytes(announced)} bytes)`

export const stalled = (received: number, announced: number, idle: string) =>
  `no data for ${idle} after ${bytes(received)} of ${bytes(announced)} bytes`

/** A body that went past the size the HEAD announced: cut there, and never retried (the server is broken). */
export const sentMore = (what: string, origin: string, size: number) =>
  fail("Protocol", `${origin} sent more than the ${bytes(size)} bytes it announced for ${what}: the partial file was removed; check HF_ENDPOINT, or try again later`)

/** A GET whose Content-Length is more than its HEAD announced: refused before a byte is kept. */
export const announcedMore = (what: string, origin: string, announced: number, size: number) =>
  fail("Protocol", `${origin} announced ${bytes(announced)} bytes for ${what} where its HEAD announced ${bytes(size)}: refused; check HF_ENDPOINT, or try again later`)

export const badRevision = (repo: RepoRef, revision: string, problem: string) =>
  fail("BadRevision", `"${printable(revision)}" is not a revision of ${repo.type} ${repo.name}: ${problem}`)

export const badPath = (repo: RepoRef, file: string, problem: string) =>
  fail("BadPath", `"${printable(file)}" is not a file of ${repo.type} ${repo.name}: ${problem}`)

/** A dataset card whose YAML header the `datasets` library would refuse too. */
export const badCard = (repo: RepoRef, revision: string, key: string, problem: string) =>
  fail("BadCard", `the card (README.md) of ${describe(repo, revision)} is not valid: ${key === "" ? "" : `${key}: `}${problem}`)

/** A path that would leave the cache; only a server's value could name one, and those are checked first. */
export const outsideCache = (cacheDir: string, target: string) =>
  fail("Protocol", `refusing to write ${printable(target)}: it is outside the hub cache at ${cacheDir}`)

export const serverError = (what: string, where: Where, status: number, attempts: number) =>
  fail(
    "ServerError",
    `${where.endpoint} answered HTTP ${status} ${attempts} time(s) for ${what} and nothing is cached for it: try again later, or set HF_ENDPOINT to a mirror`
  )

export const rateLimited = (what: string, where: Where, retryAfterSeconds: number | undefined) =>
  fail(
    "RateLimited",
    `${where.endpoint} is rate-limiting requests for ${what}${
      retryAfterSeconds === undefined ? "" : ` (retry after ${retryAfterSeconds}s)`
    }: wait and run again${where.hasToken ? "" : ", or set HF_TOKEN (logged-in limits are higher)"}`
  )

export const offlineNotCached = (what: string, cacheDir: string) =>
  fail("OfflineNotCached", `HF_HUB_OFFLINE=1 and ${what} is not in the cache at ${cacheDir}: run once online first`)

export const integrity = (what: string, detail: string) =>
  fail("Integrity", `downloaded ${what} but ${detail}: the partial file was removed; run again`)

export const protocol = (what: string, url: string, detail: string) =>
  fail("Protocol", `unexpected answer for ${what} from ${printable(url, 300)}: ${detail}`)

export const filesystem = (cacheDir: string, detail: string) =>
  fail("Filesystem", `cannot use the hub cache at ${cacheDir}: ${detail} (set HF_HUB_CACHE to a writable folder)`)
