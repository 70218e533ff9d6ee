/**
 * A Hugging Face model folder on disk: `config.json` plus `model.safetensors`, or shards
 * listed in `model.safetensors.index.json`. Loading takes a local folder (the hub
 * downloader resolves hub ids to one). Saving writes what `save_pretrained` writes for
 * a float32 model, so that transformers loads it back: `model.safetensors` (tied heads
 * omitted, `format: pt` metadata), `config.json`, `generation_config.json`, and the
 * source folder's tokenizer files.
 */
import { FileSystem, Path } from "@effect/platform"
import * as tf from "@tensorflow/tfjs-core"
import { Data, Effect, Exit } from "effect"
import { configJson, decodeConfig, type ModelConfigError, type Qwen2Config } from "./config.ts"
import { checkpointLayoutValues, modelLayoutValues, type ParamSpec, parameterSpecs, toCheckpointLayout } from "./params.ts"
import { createModel, type Qwen2 } from "./qwen2.ts"
import { openSafetensors, type SafetensorsError, type SafetensorsReader, writeSafetensors } from "./safetensors.ts"
import { TOKENIZER_FILES } from "../constants.ts"

const WEIGHTS_FILE = "model.safetensors"
const WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

/** A model folder that is missing a file or is inconsistent. */
class ModelFolderError extends Data.TaggedError("ModelFolderError")<{
  readonly path: string
  readonly message: string
}> {}

export interface LoadedModel {
  readonly model: Qwen2
  readonly folder: string
  /** config.json as found, so that keys we do not model survive a save. */
  readonly rawConfig: Readonly<Record<string, unknown>>
}

const folderError = (path: string, reason: string) => new ModelFolderError({ path, message: `${path}: ${reason}` })

const readJson = (path: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(Effect.mapError((cause) => folderError(path, `cannot read (${cause.message})`)))
    return yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (error) => folderError(path, `is not JSON (${error instanceof Error ? error.message : String(error)})`)
    })
  })

/** Which file holds each tensor: the index's weight map, or the single file. */
const weightFiles = (folder: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const index = path.join(folder, WEIGHTS_INDEX_FILE)
    const single = path.join(folder, WEIGHTS_FILE)
    const exists = (file: string) => fs.exists(file).pipe(Effect.orElseSucceed(() => false))
    if (yield* exists(index)) {
      const json = yield* readJson(index)
      const map = (json as { weight_map?: unknown } | null)?.weight_map
      if (typeof map !== "object" || map === null) return yield* folderError(index, "has no weight_map")
      return new Map(Object.entries(map as Record<string, string>).map(([name, file]) => [name, path.join(folder, file)]))
    }
    if (!(yield* exists(single))) {
      return yield* folderError(folder, `has neither ${WEIGHTS_FILE} nor ${WEIGHTS_INDEX_FILE}`)
    }
    return undefined
  })

/**
 * A folder's decoded config and raw config.json, without its weights: what the memory
 * check (`checkMemoryFit`) needs before anything is loaded.
 */
export const readHfConfig = (folder: string) =>
  Effect.gen(function* () {
    const path = yield* Path.Path
    const configPath = path.join(folder, "config.json")
    const rawConfig = (yield* readJson(configPath)) as Record<string, unknown>
    return { config: yield* decodeConfig(rawConfig, configPath), rawConfig }
  })

/**
 * Reads a folder's weights one tensor at a time, in checkpoint order, handing each to
 * `take` in model layout. Scoped: the files close when the effect ends.
 */
const readWeights = (folder: string, config: Qwen2Config, take: (spec: ParamSpec, values: Float32Array) => void) =>
  Effect.scoped(
    Effect.gen(function* () {
      const path = yield* Path.Path
      const files = yield* weightFiles(folder)
      const readers = new Map<string, SafetensorsReader>()
      const readerFor = (name: string) =>
        Effect.gen(function* () {
          const file = files === undefined ? path.join(folder, WEIGHTS_FILE) : files.get(name)
          if (file === undefined) return yield* folderError(path.join(folder, WEIGHTS_INDEX_FILE), `lists no file for tensor ${name}`)
          const open = readers.get(file)
          if (open !== undefined) return open
          const reader = yield* openSafetensors(file)
          readers.set(file, reader)
          return reader
        })
      yield* Effect.forEach(parameterSpecs(config), (spec) =>
        Effect.gen(function* () {
          const reader = yield* readerFor(spec.name)
          if (!reader.header.tensors.has(spec.name)) return yield* folderError(reader.path, `has no tensor ${spec.name}`)
          take(spec, modelLayoutValues(spec, yield* reader.read(spec.name, spec.checkpointShape)))
        }), { discard: true })
    })
  )

/** Loads config and weights from a local Hugging Face folder onto the backend. */
export const loadHfFolder = (
  folder: string
): Effect.Effect<LoadedModel, ModelFolderError | ModelConfigError | SafetensorsError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const { config, rawConfig } = yield* readHfConfig(folder)
    const tensors = new Map<string, tf.Tensor>()
    const loaded = yield* Effect.exit(readWeights(folder, config, (spec, values) => tensors.set(spec.name, tf.tensor(values, [...spec.shape], "float32"))))
    if (Exit.isFailure(loaded)) {
      tensors.forEach((tensor) => tensor.dispose())
      return yield* Effect.failCause(loaded.cause)
    }
    const model = createModel(config, (spec) => {
      const tensor = tensors.get(spec.name)
      if (tensor === undefined) throw new Error(`tensor ${spec.name} was not loaded`)
      return tensor
    })
    return { model, folder, rawConfig }
  })

/** A model folder read into JS memory: what the layer-wise trainer starts from. */
export interface HostModel {
  readonly config: Qwen2Config
  /** By Hugging Face name, in model layout. */
  readonly weights: Map<string, Float32Array>
  readonly folder: string
  readonly rawConfig: Readonly<Record<string, unknown>>
}

/** Loads config and weights from a local Hugging Face folder into JS memory (nothing on the backend). */
export const readHfFolder = (
  folder: string
): Effect.Effect<HostModel, ModelFolderError | ModelConfigError | SafetensorsError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const { config, rawConfig } = yield* readHfConfig(folder)
    const weights = new Map<string, Float32Array>()
    yield* readWeights(folder, config, (spec, values) => weights.set(spec.name, values))
    return { config, weights, folder, rawConfig }
  })

export interface SaveOptions {
  /** A folder whose tokenizer files and generation_config.json are copied along. */
  readonly copyFrom?: string
  /** Keys of the source config.json to keep (see `LoadedModel.rawConfig`). */
  readonly rawConfig?: Readonly<Record<string, unknown>>
}

const generationConfig = (config: Qwen2Config): Record<string, unknown> => ({
  _from_model_config: true,
  ...(config.bos_token_id === null ? {} : { bos_token_id: config.bos_token_id }),
  ...(config.eos_token_id === null ? {} : { eos_token_id: config.eos_token_id }),
  ...(config.pad_token_id === null ? {} : { pad_token_id: config.pad_token_id })
})

/** Writes `model` (on the backend) as a Hugging Face folder; the weights file appears whole or not at all. */
export const saveHfFolder = (model: Qwen2, folder: string, options: SaveOptions = {}) =>
  writeHfFolder(folder, model.config, (spec) => {
    const variable = model.params.get(spec.name)
    if (variable === undefined) throw new Error(`model has no parameter ${spec.name}`)
    return toCheckpointLayout(spec, variable)
  }, options)

/** Writes weights held in JS memory (model layout) as a Hugging Face folder. */
export const saveHostFolder = (config: Qwen2Config, weights: ReadonlyMap<string, Float32Array>, folder: string, options: SaveOptions = {}) =>
  writeHfFolder(folder, config, (spec) => {
    const values = weights.get(spec.name)
    if (values === undefined) throw new Error(`no weights for ${spec.name}`)
    return checkpointLayoutValues(spec, values)
  }, options)

/**
 * What `save_pretrained` writes for a float32 model: model.safetensors (tied heads
 * omitted, `format: pt`), config.json, generation_config.json and the tokenizer files of
 * `options.copyFrom`. Tensors are laid out and written one at a time.
 */
const writeHfFolder = (
  folder: string,
  config: Qwen2Config,
  checkpointValues: (spec: ParamSpec) => Float32Array,
  options: SaveOptions
): Effect.Effect<void, ModelFolderError | SafetensorsError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const io = (target: string) => (cause: { message: string }) => folderError(target, `cannot write (${cause.message})`)
    yield* fs.makeDirectory(folder, { recursive: true }).pipe(Effect.mapError(io(folder)))
    const tensors = parameterSpecs(config).map((spec) => ({ name: spec.name, shape: spec.checkpointShape, data: () => checkpointValues(spec) }))
    const weights = path.join(folder, WEIGHTS_FILE)
    const partial = `${weights}.partial`
    yield* writeSafetensors(partial, tensors, { format: "pt" })
    yield* fs.rename(partial, weights).pipe(Effect.mapError(io(weights)))
    const write = (name: string, json: unknown) => {
      const target = path.join(folder, name)
      return fs.writeFileString(target, `${JSON.stringify(json, null, 2)}\n`).pipe(Effect.mapError(io(target)))
    }
    yield* write("config.json", configJson(config, options.rawConfig))
    const source = options.copyFrom
    const copied = source === undefined ? [] : yield* copyExisting(source, folder, ["generation_config.json", ...TOKENIZER_FILES])
    if (!copied.includes("generation_config.json")) yield* write("generation_config.json", generationConfig(config))
  })

/** Copies those of `names` that exist in `from` into `to`; returns the names copied. */
export const copyExisting = (from: string, to: string, names: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const copied: Array<string> = []
    const sameFolder = path.resolve(from) === path.resolve(to)
    for (const name of names) {
      const source = path.join(from, name)
      if (!(yield* fs.exists(source).pipe(Effect.orElseSucceed(() => false)))) continue
      const target = path.join(to, name)
      if (!sameFolder) {
        yield* fs.copyFile(source, target).pipe(Effect.mapError((cause) => folderError(target, `cannot copy (${cause.message})`)))
      }
      copied.push(name)
    }
    return copied
  })
