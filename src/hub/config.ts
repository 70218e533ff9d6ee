/**
 * The hub settings, read from the environment exactly as huggingface_hub reads
 * them (its `constants.py`), so that both share one cache and one login:
 * - `HF_ENDPOINT` (default https://huggingface.co), a mirror such as hf-mirror.com;
 * - `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the file
 *   `$HF_TOKEN_PATH`, default `$HF_HOME/token`, that `huggingface-cli login` writes;
 * - `HF_HOME` (default `$XDG_CACHE_HOME/huggingface`, else ~/.cache/huggingface) and
 *   `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`; default `$HF_HOME/hub`);
 * - `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`): 1/ON/YES/TRUE reads the cache only;
 * - `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT`, in seconds (default 10).
 */
import { FileSystem, Path } from "@effect/platform"
import { Config, Duration, Effect, Option, Redacted } from "effect"
import { homedir } from "node:os"
import { HubError } from "./errors.ts"

export interface HubConfig {
  /** No trailing slash. */
  readonly endpoint: string
  readonly token: Option.Option<Redacted.Redacted<string>>
  readonly home: string
  readonly cacheDir: string
  readonly offline: boolean
  /** How long metadata requests (API calls, HEAD) may take. */
  readonly requestTimeout: Duration.Duration
  /** How long a download may go without receiving a byte. */
  readonly idleTimeout: Duration.Duration
  /** Retries after a 429, a 5xx, a timeout or a dropped connection. */
  readonly retries: number
  /** The first retry's delay, doubled for each next one, jittered. */
  readonly retryBase: Duration.Duration
  /**
   * The most pages and files a repository's listing may have: the hub sends 1,000 files
   * a page, and a server that keeps linking to new pages is cut off.
   */
  readonly maxTree: { readonly pages: number; readonly files: number }
}

export const DEFAULT_MAX_TREE = { pages: 10_000, files: 2_000_000 } as const

export const DEFAULT_ENDPOINT = "https://huggingface.co"

const truthy = (value: string): boolean => ["1", "ON", "YES", "TRUE"].includes(value.trim().toUpperCase())

/** A token as huggingface_hub cleans it: trimmed, line breaks dropped, empty means none. */
const cleanToken = (raw: string | undefined): Option.Option<Redacted.Redacted<string>> => {
  const token = raw?.replace(/[\r\n]/g, "").trim() ?? ""
  return token === "" ? Option.none() : Option.some(Redacted.make(token))
}

const optional = (name: string) => Config.option(Config.string(name)).pipe(Config.map(Option.getOrUndefined))

const variables = Config.all({
  endpoint: optional("HF_ENDPOINT"),
  token: optional("HF_TOKEN"),
  legacyToken: optional("HUGGING_FACE_HUB_TOKEN"),
  tokenPath: optional("HF_TOKEN_PATH"),
  home: optional("HF_HOME"),
  xdgCache: optional("XDG_CACHE_HOME"),
  cache: optional("HF_HUB_CACHE"),
  legacyCache: optional("HUGGINGFACE_HUB_CACHE"),
  offline: optional("HF_HUB_OFFLINE"),
  transformersOffline: optional("TRANSFORMERS_OFFLINE"),
  etagTimeout: Config.number("HF_HUB_ETAG_TIMEOUT").pipe(Config.withDefault(10)),
  downloadTimeout: Config.number("HF_HUB_DOWNLOAD_TIMEOUT").pipe(Config.withDefault(10))
})

/** Reads the settings from the current ConfigProvider (the process environment by default). */
export const loadHubConfig: Effect.Effect<HubConfig, HubError, FileSystem.FileSystem | Path.Path> = Effect.gen(function* () {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const env = yield* variables.pipe(
    Effect.mapError(() =>
      new HubError({ reason: "Config", message: "HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT must be numbers of seconds" })
    )
  )
  const expand = (p: string) => path.resolve(p.startsWith("~") ? homedir() + p.slice(1) : p)
  const home = expand(env.home || path.join(env.xdgCache || "~/.cache", "huggingface"))
  const fromEnvironment = cleanToken(env.token || env.legacyToken)
  const token = Option.isSome(fromEnvironment)
    ? fromEnvironment
    : cleanToken(yield* fs.readFileString(expand(env.tokenPath || path.join(home, "token"))).pipe(Effect.orElseSucceed(() => undefined)))
  return {
    endpoint: (env.endpoint || DEFAULT_ENDPOINT).replace(/\/+$/, ""),
    token,
    home,
    cacheDir: expand(env.cache || env.legacyCache || path.join(home, "hub")),
    offline: truthy(env.offline || env.transformersOffline || ""),
    requestTimeout: Duration.seconds(env.etagTimeout),
    idleTimeout: Duration.seconds(env.downloadTimeout),
    retries: 5,
    retryBase: Duration.seconds(1),
    maxTree: DEFAULT_MAX_TREE
  }
})
