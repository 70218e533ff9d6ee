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
