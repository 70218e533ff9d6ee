/**
 * What a stage produces. An entry in the store holds a stage's outputs, each of
 * one kind, plus its metrics. Paths inside an artifact are absolute once handed
 * to a stage; the store records them relative to the entry.
 */
export type ArtifactKind = "dataset" | "model" | "files"

const ARTIFACT_KINDS: ReadonlyArray<ArtifactKind> = ["dataset", "model", "files"]

/** One Arrow IPC file of a split. */
export interface SplitFile {
  readonly path: string
  readonly rows: number
}

/** Named splits (`train`, `test`, …), each one or more Arrow IPC files. */
export interface DatasetArtifact {
  readonly kind: "dataset"
  readonly splits: Readonly<Record<string, ReadonlyArray<SplitFile>>>
}

/** A Hugging Face–format model folder (config.json, model.safetensors, tokenizer files). */
export interface ModelArtifact {
  readonly kind: "model"
  readonly dir: string
}

/** Plain files: plots, reports. */
export interface FilesArtifact {
  readonly kind: "files"
  readonly dir: string
  readonly files: ReadonlyArray<string>
}

export type Artifact = DatasetArtifact | ModelArtifact | FilesArtifact

/** A stage's outputs, at most one of each kind. */
export interface Outputs {
  readonly dataset?: DatasetArtifact
  readonly model?: ModelArtifact
  readonly files?: FilesArtifact
}

export type Metrics = Readonly<Record<string, number>>

export const kindsOf = (outputs: Outputs): ReadonlyArray<ArtifactKind> =>
  ARTIFACT_KINDS.filter((kind) => outputs[kind] !== undefined)

export const rowCount = (dataset: DatasetArtifact, split: string): number =>
  (dataset.splits[split] ?? []).reduce((sum, file) => sum + file.rows, 0)
