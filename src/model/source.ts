/**
 * Where a model stage's model comes from: an upstream stage's model artifact, a
 * local Hugging Face–format folder, or a hub id whose files are downloaded into the
 * shared Hugging Face cache (the resolved commit is fingerprinted). Any of them may be
 * a PEFT adapter folder instead of a whole model: it names its base model, and reads
 * as that base with the adapter merged in.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import { Hub, model } from "../hub/index.ts"
import type { Upstream } from "../stage.ts"
import { ADAPTER_FILES, type AdapterBase, isAdapterFolder, readAdapterConfig, readAdapterFolder } from "./adapter-folder.ts"
import { type HostModel, readHfFolder } from "./hf-folder.ts"
import { mergeAdapter } from "./lora.ts"

/** The files of a model folder: weights, config and tokenizer, or an adapter's. */
const MODEL_PATTERNS = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "model.safetensors.index.json",
  "model-*.safetensors",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  ...ADAPTER_FILES
]

const stageError = (error: { readonly message: string }) => new StageError({ message: error.message })

/** A local folder wins (as `from_pretrained` checks a local path first); otherwise a hub id. */
const isLocal = (idOrPath: string, baseDir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const dir = path.resolve(baseDir, idOrPath)
    const explicit = idOrPath.startsWith(".") || path.isAbsolute(idOrPath)
    return explicit || (yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false))) ? dir : undefined
  })

/** A model's local folder and, for a hub model, the id and commit it came from. */
export interface ResolvedModel {
  readonly dir: string
  readonly hub: { readonly id: string; readonly sha: string } | undefined
}

/**
 * The local folder of a `model:` param (or an adapter's base), downloading from the hub
 * when it is a hub id, at `revision` when given (an adapter pins its base's commit).
 */
export const resolveModelDir = (idOrPath: string, baseDir: string, revision?: string | null) =>
  Effect.map(resolveModel(idOrPath, baseDir, revision), (resolved) => resolved.dir)

export const resolveModel = (idOrPath: string, baseDir: string, revision?: string | null) =>
  Effect.gen(function* () {
    const local = yield* isLocal(idOrPath, baseDir)
    if (local !== undefined) {
      const fs = yield* FileSystem.FileSystem
      const has = (name: string) => fs.exists(`${local}/${name}`).pipe(Effect.orElseSucceed(() => false))
      if (!(yield* has("config.json")) && !(yield* has("adapter_config.json"))) {
        return yield* new StageError({ message: `no model folder at ${local}: expected config.json and model.safetensors (a Hugging Face–format folder), or adapter_config.json (a PEFT adapter)` })
      }
      return { dir: local, hub: undefined } satisfies ResolvedModel
    }
    const hub = yield* Hub
    const options = revision === undefined || revision === null ? {} : { revision }
    const folder = yield* hub.modelFiles(idOrPath, MODEL_PATTERNS, options).pipe(Effect.mapError(stageError))
    return { dir: folder.dir, hub: folder.sha === undefined ? undefined : { id: idOrPath, sha: folder.sha } } satisfies ResolvedModel
  })

/** For `externalInputs`: a hub model's resolved commit; nothing for a local folder (hash its files instead). */
export const modelRevision = (idOrPath: string, baseDir: string) =>
  Effect.gen(function* () {
    if ((yield* isLocal(idOrPath, baseDir)) !== undefined) return {}
    const hub = yield* Hub
    const sha = yield* hub.resolveRevision(model(idOrPath)).pipe(Effect.mapError(stageError))
    return { [`hf:models/${idOrPath}@main`]: sha }
  })

/** For `inputFiles`: a local model folder's files (their contents are fingerprinted). */
export const localModelFiles = (idOrPath: string, baseDir: string) =>
  Effect.gen(function* () {
    const local = yield* isLocal(idOrPath, baseDir)
    if (local === undefined) return []
    const fs = yield* FileSystem.FileSystem
    const names = yield* fs.readDirectory(local).pipe(Effect.orElseSucceed(() => [] as Array<string>))
    return names
      .filter((name) => /^(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|adapter_config)\.json$|\.safetensors$|^model\.safetensors\.index\.json$|^chat_template\.jinja$/.test(name))
      .sort()
      .map((name) => `${local}/${name}`)
  })

/** The model artifact of the upstream stages, if one of them produced a model. */
export const upstreamModelDir = (inputs: ReadonlyArray<Upstream>): string | undefined =>
  inputs.find((input) => input.outputs.model !== undefined)?.outputs.model?.dir

/** The folder of an adapter's base model: a local path is read relative to the adapter folder. */
const adapterBaseDir = (adapterDir: string, base: AdapterBase | undefined) =>
  base === undefined
    ? Effect.fail(new StageError({ message: `${adapterDir}/adapter_config.json names no base model (base_model_name_or_path): give \`model\`` }))
    : resolveModelDir(base.nameOrPath, adapterDir, base.revision)

/** Adapters over adapters are followed this deep, no further (a loop would never end). */
const MAX_ADAPTER_DEPTH = 4

/** A model folder's chain: the adapter folders it stacks (outermost first), down to the whole model under them. */
export interface ModelChain {
  readonly adapters: ReadonlyArray<string>
  readonly baseDir: string
}

/** Follows adapter folders to the Hugging Face folder at the bottom (`dir` itself when it is one). */
export const modelChain = (dir: string) =>
  Effect.gen(function* () {
    const adapters: Array<string> = []
    let current = dir
    while (yield* isAdapterFolder(current)) {
      if (adapters.length >= MAX_ADAPTER_DEPTH) return yield* new StageError({ message: `${dir}: adapters over adapters more than ${MAX_ADAPTER_DEPTH} deep (${adapters.join(" → ")})` })
      adapters.push(current)
      const { base } = yield* readAdapterConfig(current).pipe(Effect.mapError(stageError))
      current = yield* adapterBaseDir(current, base)
    }
    return { adapters, baseDir: current } satisfies ModelChain
  })

/**
 * The weights a model folder stands for, in JS memory: a Hugging Face folder as it is,
 * or an adapter folder's base (found through its config) with the adapter merged in.
 * `folder` is the folder given; `config` the base's.
 */
export const readModelWeights = (dir: string): Effect.Effect<HostModel, StageError, FileSystem.FileSystem | Path.Path | Hub> =>
  Effect.gen(function* () {
    const { adapters, baseDir } = yield* modelChain(dir)
    const host = yield* readHfFolder(baseDir).pipe(Effect.mapError(stageError))
    for (const adapterDir of [...adapters].reverse()) {
      const adapter = yield* readAdapterFolder(adapterDir, host.config).pipe(Effect.mapError(stageError))
      mergeAdapter(host.weights, adapter.plan, adapter.weights)
    }
    return { ...host, folder: dir }
  })
