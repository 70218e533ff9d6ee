/**
 * Tokenizers in Hugging Face's format: a folder holding `tokenizer.json` (normalizer,
 * pre-tokenizer, model, decoder and added tokens) and `tokenizer_config.json` (the
 * special tokens and the chat template). Encoding is @huggingface/tokenizers and chat
 * templates are @huggingface/jinja, the implementations transformers.js runs on, so
 * ids match transformers' fast tokenizers.
 */
import { FileSystem, Path } from "@effect/platform"
import { Hub, model } from "./hub/index.ts"
import { Template } from "@huggingface/jinja"
import { Tokenizer as UntypedHfTokenizer } from "@huggingface/tokenizers"
import { Data, Effect } from "effect"
import { installWordMemo } from "./tokenizer/word-memo.mjs"
import { REQUIRED_TOKENIZER_FILES } from "./constants.ts"

export type TokenizerErrorReason = "NotFound" | "Invalid" | "NoChatTemplate" | "ChatTemplate" | "HubUnavailable"

/** Every way loading or using a tokenizer can fail, with a message that names the file and what to do. */
export class TokenizerError extends Data.TaggedError("TokenizerError")<{
  readonly reason: TokenizerErrorReason
  readonly message: string
  readonly cause?: unknown
}> {}


/** Where transformers ≥ 4.50 saves the chat template; it takes precedence over tokenizer_config.json's. */
const CHAT_TEMPLATE_FILE = "chat_template.jinja"

export interface ChatMessage {
  readonly role: string
  readonly content: string
}

export interface EncodeOptions {
  /** Apply the post-processor's special tokens (a BOS for Llama-like tokenizers). Default true, as in transformers. */
  readonly addSpecialTokens?: boolean
}

export interface DecodeOptions {
  readonly skipSpecialTokens?: boolean
}

export interface Tokenizer {
  /** The absolute folder it was loaded from. */
  readonly dir: string
  /** The number of ids in use, added tokens included (`len(tokenizer)` in transformers): an embedding needs at least this many rows. */
  readonly vocabSize: number
  readonly bosTokenId: number | undefined
  readonly eosTokenId: number | undefined
  /** `pad_token`, or the EOS token when the config has none (the tutorial's `pad_token = eos_token`). */
  readonly padTokenId: number | undefined
  readonly hasChatTemplate: boolean
  readonly encode: (text: string, options?: EncodeOptions) => Int32Array
  readonly decode: (ids: ArrayLike<number>, options?: DecodeOptions) => string
  readonly tokenToId: (token: string) => number | undefined
  /** Renders tokenizer_config.json's `chat_template`, as transformers' `apply_chat_template(tokenize=False)`. */
  readonly applyChatTemplate: (
    messages: ReadonlyArray<ChatMessage>,
    options?: { readonly addGenerationPrompt?: boolean }
  ) => Effect.Effect<string, TokenizerError>
}

/**
 * Where a `tokenizer:` param points: a folder (resolved against the pipeline file) when
 * one exists there, as `from_pretrained` checks a local path first; otherwise a hub id.
 */
export type TokenizerSource =
  | { readonly _tag: "Local"; readonly dir: string }
  | { readonly _tag: "Hub"; readonly repo: string }

const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/

export const tokenizerSource = (idOrPath: string, baseDir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const dir = path.resolve(baseDir, idOrPath)
    const explicitPath = idOrPath.startsWith(".") || path.isAbsolute(idOrPath)
    const exists = yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false))
    return exists || explicitPath || !HUB_ID.test(idOrPath)
      ? ({ _tag: "Local", dir } as const)
      : ({ _tag: "Hub", repo: idOrPath } as const)
  })

/** Files a tokenizer folder may hold; the hub download takes those that exist. */
const TOKENIZER_PATTERNS = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"]

/**
 * The local folder of a tokenizer: a folder next to the pipeline file, or a hub
 * model's tokenizer files downloaded into the shared Hugging Face cache.
 */
export const resolveTokenizerDir = (idOrPath: string, baseDir: string) =>
  Effect.flatMap(tokenizerSource(idOrPath, baseDir), (source) =>
    source._tag === "Local"
      ? Effect.succeed(source.dir)
      : Effect.flatMap(Hub, (hub) => hub.modelFiles(source.repo, TOKENIZER_PATTERNS)).pipe(
        Effect.map((folder) => folder.dir),
        Effect.mapError((error) => new TokenizerError({ reason: "HubUnavailable", message: error.message }))
      ))

/** A hub tokenizer's resolved commit, for the fingerprint; nothing for a local folder (its files are hashed). */
export const tokenizerRevision = (idOrPath: string, baseDir: string) =>
  Effect.flatMap(tokenizerSource(idOrPath, baseDir), (source) =>
    source._tag === "Local"
      ? Effect.succeed({})
      : Effect.flatMap(Hub, (hub) => hub.resolveRevision(model(source.repo))).pipe(
        Effect.map((sha): Record<string, string> => ({ [`hf:models/${source.repo}@main`]: sha })),
        Effect.mapError((error) => new TokenizerError({ reason: "HubUnavailable", message: error.message }))
      ))

type Config = Readonly<Record<string, unknown>>

/** A special token as tokenizer_config.json writes it: a string, or an AddedToken object. */
const tokenContent = (value: unknown): string | undefined =>
  typeof value === "string"
    ? value
    : typeof value === "object" && value !== null && typeof (value as { content?: unknown }).content === "string"
    ? (value as { content: string }).content
    : undefined

/** The template named `default` when the config holds several (transformers' rule). */
const chatTemplateSource = (config: Config): string | undefined => {
  const template = config.chat_template
  if (typeof template === "string") return template
  if (Array.isArray(template)) {
    const named: unknown = template.find((t: unknown) => typeof t === "object" && t !== null && (t as { name?: unknown }).name === "default")
    const source = typeof named === "object" && named !== null ? (named as { template?: unknown }).template : undefined
    return typeof source === "string" ? source : undefined
  }
  return undefined
}

/** What templates may refer to besides `messages`: the special tokens as text, as transformers passes them. */
const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const

const specialTokensMap = (config: Config): Record<string, unknown> => {
  const map: Record<string, unknown> = {}
  for (const key of SPECIAL_TOKEN_KEYS) {
    const content = tokenContent(config[key])
    if (content !== undefined) map[key] = content
  }
  if (Array.isArray(config.additional_special_tokens)) {
    map.additional_special_tokens = config.additional_special_tokens.map(tokenContent)
  }
  return map
}

/**
 * The part of tokenizers.js used here. Its .d.ts files import each other without file
 * extensions, which NodeNext resolution rejects, so the package arrives typed `any`:
 * this interface puts the types back.
 */
interface HfTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: Array<number> }
  decode(ids: Array<number>, options: { skip_special_tokens: boolean }): string
  token_to_id(token: string): number | undefined
  readonly model: {
    /** Token by id, added tokens included. */
    readonly vocab: ReadonlyArray<string | undefined>
    /** BPE's per-word memo (other models have none). */
    cache?: unknown
  } | null
}

const HfTokenizer: new (json: object, config: object) => HfTokenizer = UntypedHfTokenizer


/** The chat template's text and the file it came from, for messages. */
interface ChatTemplateText {
  readonly source: string
  readonly file: string
}

/** Builds a tokenizer from the parsed files; throws what tokenizers.js throws on a file it cannot use. */
const makeTokenizer = (dir: string, json: object, config: Config, chatTemplate: ChatTemplateText | undefined): Tokenizer => {
  const hf = new HfTokenizer(json, config)
  installWordMemo(hf)
  const idOf = (key: string): number | undefined => {
    const content = tokenContent(config[key])
    return content === undefined ? undefined : hf.token_to_id(content)
  }
  const eosTokenId = idOf("eos_token")
  let compiled: Template | undefined
  const compile = (text: ChatTemplateText): Effect.Effect<Template, TokenizerError> =>
    compiled !== undefined ? Effect.succeed(compiled) : Effect.try({
      try: () => (compiled = new Template(text.source)),
      catch: (cause) => templateError(text.file, "cannot be parsed", cause)
    })
  const specials = specialTokensMap(config)
  return {
    dir,
    vocabSize: hf.model?.vocab.length ?? 0,
    bosTokenId: idOf("bos_token"),
    eosTokenId,
    padTokenId: idOf("pad_token") ?? eosTokenId,
    hasChatTemplate: chatTemplate !== undefined,
    encode: (text, options) =>
      Int32Array.from(hf.encode(text, { add_special_tokens: options?.addSpecialTokens ?? true }).ids),
    // tokenizers.js refuses an empty list; transformers decodes it to "".
    decode: (ids, options) =>
      ids.length === 0 ? "" : hf.decode(Array.from(ids), { skip_special_tokens: options?.skipSpecialTokens ?? false }),
    tokenToId: (token) => hf.token_to_id(token),
    applyChatTemplate: (messages, options) =>
      chatTemplate === undefined
        ? Effect.fail(
          new TokenizerError({
            reason: "NoChatTemplate",
            message: `${dir}/tokenizer_config.json has no chat_template: use a chat model's tokenizer, or tokenize without the chat template`
          })
        )
        : Effect.flatMap(compile(chatTemplate), (template) =>
          Effect.try({
            try: () => template.render({ ...specials, messages, add_generation_prompt: options?.addGenerationPrompt ?? false }),
            catch: (cause) => templateError(chatTemplate.file, "failed", cause)
          }))
  }
}

const templateError = (file: string, what: string, cause: unknown) =>
  new TokenizerError({
    reason: "ChatTemplate",
    message: `the chat template in ${file} ${what}: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

const notFound = (message: string) => new TokenizerError({ reason: "NotFound", message })

const readText = (file: string) =>
  Effect.flatMap(FileSystem.FileSystem, (fs) =>
    fs.readFileString(file).pipe(
      Effect.mapError((cause) => new TokenizerError({ reason: "NotFound", message: `cannot read ${file}: ${cause.message}`, cause }))
    ))

const readJsonFile = (file: string) =>
  Effect.gen(function* () {
    const text = yield* readText(file)
    return yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (cause) =>
        new TokenizerError({ reason: "Invalid", message: `${file} is not valid JSON: ${(cause as Error).message}`, cause })
    })
  })

/** The files a tokenizer is read from, as absolute paths. */
export interface TokenizerFiles {
  readonly json: string
  readonly config: string
  readonly chatTemplate: string | undefined
}

/** The files of a tokenizer folder, failing clearly when a required one is missing. */
export const tokenizerFiles = (dir: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const info = yield* fs.stat(dir).pipe(Effect.mapError(() => notFound(`no tokenizer folder at ${dir}`)))
    if (info.type !== "Directory") {
      return yield* notFound(`${dir} is not a folder: give the folder that holds ${REQUIRED_TOKENIZER_FILES.join(" and ")}`)
    }
    const present = (name: string) =>
      Effect.map(fs.exists(path.join(dir, name)).pipe(Effect.orElseSucceed(() => false)), (exists) => (exists ? path.join(dir, name) : undefined))
    const required = (name: (typeof REQUIRED_TOKENIZER_FILES)[number]) =>
      Effect.flatMap(present(name), (file) =>
        file !== undefined ? Effect.succeed(file) : Effect.fail(notFound(
          `${dir} has no ${name}: a tokenizer folder holds ${REQUIRED_TOKENIZER_FILES.join(" and ")} (vocab.json/merges.txt or tokenizer.model alone are not supported)`
        )))
    return {
      json: yield* required("tokenizer.json"),
      config: yield* required("tokenizer_config.json"),
      chatTemplate: yield* present(CHAT_TEMPLATE_FILE)
    } satisfies TokenizerFiles
  })

/** The files as a list: what a stage that reads the tokenizer fingerprints. */
export const fileList = (files: TokenizerFiles): ReadonlyArray<string> =>
  [files.json, files.config, ...(files.chatTemplate === undefined ? [] : [files.chatTemplate])]

/** Size and modification time of each file: a changed file is reloaded, an unchanged one is not parsed again. */
const filesStamp = (files: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const parts: Array<string> = []
    for (const file of files) {
      const stat = yield* fs.stat(file).pipe(Effect.mapError((cause) => notFound(`cannot read ${file}: ${cause.message}`)))
      parts.push(`${file}:${stat.size}:${stat.mtime._tag === "Some" ? stat.mtime.value.getTime() : 0}`)
    }
    return parts.join("|")
  })

const loaded = new Map<string, { readonly stamp: string; readonly tokenizer: Tokenizer }>()

/**
 * Loads the tokenizer in `dir` (tokenizer.json, tokenizer_config.json, and chat_template.jinja
 * when present). Kept per folder for the life of the process: parsing Qwen's 7 MB
 * tokenizer.json takes a second.
 */
export const loadTokenizer = Effect.fn("Tokenizer.load")(function* (dir: string) {
  const path = yield* Path.Path
  const absolute = path.resolve(dir)
  const files = yield* tokenizerFiles(absolute)
  const stamp = yield* filesStamp(fileList(files))
  const cached = loaded.get(absolute)
  if (cached !== undefined && cached.stamp === stamp) return cached.tokenizer
  const json = yield* readJsonFile(files.json)
  const config = yield* readJsonFile(files.config)
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    return yield* new TokenizerError({ reason: "Invalid", message: `${files.config} is not a JSON object` })
  }
  const inConfig = chatTemplateSource(config as Config)
  const chatTemplate: ChatTemplateText | undefined = files.chatTemplate !== undefined
    ? { source: yield* readText(files.chatTemplate), file: files.chatTemplate }
    : inConfig !== undefined
    ? { source: inConfig, file: files.config }
    : undefined
  const tokenizer = yield* Effect.try({
    try: () => makeTokenizer(absolute, json as object, config as Config, chatTemplate),
    catch: (cause) =>
      new TokenizerError({
        reason: "Invalid",
        message: `${files.json} is not a tokenizer this library can load: ${cause instanceof Error ? cause.message : String(cause)}`,
        cause
      })
  })
  loaded.set(absolute, { stamp, tokenizer })
  return tokenizer
})

/**
 * A prompt and its reply as the chat template renders them: the user turn with the
 * generation prompt, and the rest of the rendered conversation (the assistant's reply
 * and its turn end). Undefined when the template does not render the conversation as
 * that prompt followed by the reply, so that the reply cannot be told apart.
 */
export const chatTurns = (tokenizer: Tokenizer, prompt: string, reply: string) =>
  Effect.gen(function* () {
    const user = { role: "user", content: prompt }
    const head = yield* tokenizer.applyChatTemplate([user], { addGenerationPrompt: true })
    const whole = yield* tokenizer.applyChatTemplate([user, { role: "assistant", content: reply }])
    return whole.startsWith(head) ? ([head, whole.slice(head.length)] as const) : undefined
  })
