/**
 * The Hugging Face hub: datasets and models by name, downloaded into the cache the
 * Python libraries share. `Hub` is the service; `layer` reads its settings from the
 * environment as huggingface_hub does.
 */
export { type RepoFile, repoFolderName } from "./cache.ts"
export { DEFAULT_ENDPOINT, DEFAULT_MAX_TREE, type HubConfig, loadHubConfig } from "./config.ts"
export { type DownloadProgress, type OnProgress } from "./download.ts"
export { HubError, type HubErrorReason } from "./errors.ts"
export {
  type DatasetSplits,
  type DatasetSplitsOptions,
  Hub,
  type HubService,
  layer,
  layerConfig,
  make,
  type ModelFilesOptions,
  type ModelFolder
} from "./hub.ts"
export { dataset, isCommitSha, model, type RepoRef, type RepoType } from "./repo.ts"
