/**
 * Where a model stage's model comes from: an upstream stage's model artifact, a
 * local Hugging Face–format folder, or a hub id whose files are downloaded into the
 * shared Hugging Face cache (the resolved commit is fingerprinted).
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect } from "effect"
import { StageError } from "../errors.ts"
import { Hub, model } from "../hub/index.ts"
import type { Upstream } from "../stage.ts"

/** The files of a model folder: weights, config and tokenizer. */
export const MODEL_PATTERNS = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "model.safetensors.index.json",
  "model-*.safetensors",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja"
]

/** A local folder wins (as `from_pretrained` checks a local path first); otherwise a hub id. */
const isLocal = (idOrPath: string, baseDir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const dir = path.resolve(baseDir, idOrPath)
    const explicit = idOrPath.startsWith(".") || path.isAbsolute(idOrPath)
    return explicit || (yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false))) ? dir : undefined
  })

/** The local folder of a `model:` param, downloading from the hub when it is a hub id. */
export const resolveModelDir = (idOrPath: string, baseDir: string) =>
  Effect.gen(function* () {
    const local = yield* isLocal(idOrPath, baseDir)
    if (local !== undefined) {
      const fs = yield* FileSystem.FileSystem
      if (!(yield* fs.exists(`${local}/config.json`).pipe(Effect.orElseSucceed(() => false)))) {
        return yield* new StageError({ message: `no model folder at ${local}: expected config.json and model.safetensors (a Hugging Face–format folder)` })
      }
      return local
    }
    const hub = yield* Hub
    const folder = yield* hub.modelFiles(idOrPath, MODEL_PATTERNS).pipe(Effect.mapError((e) => new StageError({ message: e.message })))
    return folder.dir
  })

/** For `externalInputs`: a hub model's resolved commit; nothing for a local folder (hash its files instead). */
export const modelRevision = (idOrPath: string, baseDir: string) =>
  Effect.gen(function* () {
    if ((yield* isLocal(idOrPath, baseDir)) !== undefined) return {}
    const hub = yield* Hub
    const sha = yield* hub.resolveRevision(model(idOrPath)).pipe(Effect.mapError((e) => new StageError({ message: e.message })))
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
      .filter((name) => /^(config|generation_config|tokenizer|tokenizer_config|special_tokens_map)\.json$|\.safetensors$|^model\.safetensors\.index\.json$|^chat_template\.jinja$/.test(name))
      .sort()
      .map((name) => `${local}/${name}`)
  })

/** The model artifact of the upstream stages, if one of them produced a model. */
export const upstreamModelDir = (inputs: ReadonlyArray<Upstream>): string | undefined =>
  inputs.find((input) => input.outputs.model !== undefined)?.outputs.model?.dir
