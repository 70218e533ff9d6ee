/** A repository on the hub, and how it is named in URLs, the cache and messages. */

export type RepoType = "dataset" | "model"

export interface RepoRef {
  readonly type: RepoType
  /** `namespace/name`, or a bare name for the hub's oldest repositories (`gpt2`). */
  readonly name: string
}

export const dataset = (name: string): RepoRef => ({ type: "dataset", name })
export const model = (name: string): RepoRef => ({ type: "model", name })

/** A full commit id, which names one immutable snapshot. */
export const isCommitSha = (revision: string): boolean => /^[0-9a-f]{40}$/.test(revision)

/**
 * Why `text` cannot name a path below a folder of the cache, or undefined when it can:
 * it must be relative and normalised (no "..", ".", empty segments, "\\", control
 * characters), with segments a file system accepts. `what` is what the text should be.
 */
const pathProblem = (text: string, what: string): string | undefined => {
  if (text === "") return `${what} is never empty`
  if (/[\u0000-\u001f\u007f]/.test(text)) return `${what} has no control characters`
  if (text.includes("\\")) return `${what} has no "\\"`
  if (text.startsWith("/")) return `${what} is relative (no leading "/")`
  if (text.length > 4096) return `${what} is at most 4,096 characters long`
  for (const segment of text.split("/")) {
    if (segment === "") return `${what} has no empty segment (no "//" or trailing "/")`
    if (segment === "..") return `${what} has no ".." segment`
    if (segment === ".") return `${what} has no "." segment`
    if (Buffer.byteLength(segment) > 255) return `${what} has no segment longer than 255 bytes`
  }
  return undefined
}

/** Why a path in a repository (from a listing, or asked for) cannot be one, or undefined. */
export const repoPathProblem = (file: string): string | undefined => pathProblem(file, "a repository path")

/** Why a branch, tag or commit id cannot be one (it names a file under `refs/` in the cache), or undefined. */
export const revisionProblem = (revision: string): string | undefined => pathProblem(revision, "a branch, tag or commit id")

/** huggingface_hub's `validate_repo_id`: at most one slash, no `--` or `..`, at most 96 characters. */
export const isValidRepoId = (name: string): boolean =>
  /^(?:[\w.-]+\/)?[\w.-]+$/.test(name) &&
  !/^[.-]|[.-]$|\/[.-]|[.-]\//.test(name) &&
  !name.includes("--") &&
  !name.includes("..") &&
  name.length <= 96

/** `dataset openai/gsm8k@main`, `main/train.parquet of model Qwen/Qwen2.5-0.5B@a1b2c3d`. */
export const describe = (repo: RepoRef, revision: string, file?: string): string => {
  const at = `${repo.type} ${repo.name}@${isCommitSha(revision) ? revision.slice(0, 7) : revision}`
  return file === undefined ? at : `${file} of ${at}`
}

/** The repository's page, where a gated repository's terms are accepted. */
export const webUrl = (endpoint: string, repo: RepoRef): string =>
  `${endpoint}/${repo.type === "dataset" ? "datasets/" : ""}${repo.name}`
