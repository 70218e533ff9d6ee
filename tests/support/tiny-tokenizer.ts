/**
 * Tiny tokenizers in Hugging Face's format, for models small enough to train in
 * minutes on a CPU (the offline quickstart): one token per character of a given
 * alphabet, or one per byte. They are ordinary `tokenizer.json` files (a BPE model
 * with no merges), so `loadTokenizer` and transformers' `AutoTokenizer` read them
 * like any other.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect } from "effect"
import { TokenizerError } from "../../src/tokenizer.ts"

/** Newline and the printable ASCII characters: enough for GSM8K-style word problems. */
export const ASCII_ALPHABET = "\n" + Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join("")

export interface TinyTokenizerOptions {
  /**
   * The characters that get a token each; other characters encode as `<unk>`.
   * Omit for byte level: 256 byte tokens, and any text round-trips.
   */
  readonly alphabet?: string
  /** Special tokens, given the first ids. The first is EOS and padding. Default `<|endoftext|>`. */
  readonly specialTokens?: ReadonlyArray<string>
  /** A Jinja chat template for tokenizer_config.json. */
  readonly chatTemplate?: string
}

export interface TokenizerFiles {
  readonly "tokenizer.json": Record<string, unknown>
  readonly "tokenizer_config.json": Record<string, unknown>
}

const UNK = "<unk>"

/**
 * GPT-2's byte → printable character table (`bytes_to_unicode` in transformers): the
 * vocabulary of a byte-level tokenizer spells each byte with one of these characters.
 */
const byteCharacters = (): Array<string> => {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
  const chars: Array<string> = []
  let shifted = 0
  for (let b = 0; b < 256; b++) chars.push(String.fromCodePoint(printable(b) ? b : 256 + shifted++))
  return chars
}

const addedToken = (content: string, id: number) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true
})

/** The contents of tokenizer.json and tokenizer_config.json for a tiny tokenizer. */
export const tinyTokenizerFiles = (options: TinyTokenizerOptions = {}): TokenizerFiles => {
  const characterLevel = options.alphabet !== undefined
  const specials = [...(options.specialTokens ?? ["<|endoftext|>"]), ...(characterLevel ? [UNK] : [])]
  const eos = specials[0]
  if (eos === undefined) throw new Error("a tiny tokenizer needs at least one special token (its EOS)")
  const symbols = characterLevel ? [...new Set(Array.from(options.alphabet!))] : byteCharacters()
  const vocab: Record<string, number> = {}
  for (const [id, token] of [...specials, ...symbols].entries()) {
    if (token in vocab) throw new Error(`the token ${JSON.stringify(token)} is both a special token and a character`)
    vocab[token] = id
  }
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }
  return {
    "tokenizer.json": {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: specials.map((token) => addedToken(token, vocab[token]!)),
      normalizer: null,
      pre_tokenizer: characterLevel ? null : byteLevel,
      post_processor: null,
      decoder: characterLevel ? { type: "Fuse" } : byteLevel,
      model: {
        type: "BPE",
        dropout: null,
        unk_token: characterLevel ? UNK : null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges: []
      }
    },
    "tokenizer_config.json": {
      tokenizer_class: "PreTrainedTokenizerFast",
      add_bos_token: false,
      bos_token: null,
      eos_token: eos,
      pad_token: eos,
      unk_token: characterLevel ? UNK : null,
      clean_up_tokenization_spaces: false,
      ...(options.chatTemplate === undefined ? {} : { chat_template: options.chatTemplate })
    }
  }
}

/** Writes a tiny tokenizer's two files into `dir` (created if needed). */
export const writeTinyTokenizer = Effect.fn("Tokenizer.writeTiny")(function* (dir: string, options: TinyTokenizerOptions = {}) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const files = yield* Effect.try({
    try: () => tinyTokenizerFiles(options),
    catch: (cause) => new TokenizerError({ reason: "Invalid", message: (cause as Error).message, cause })
  })
  yield* fs.makeDirectory(dir, { recursive: true })
  for (const [name, content] of Object.entries(files)) {
    yield* fs.writeFileString(path.join(dir, name), JSON.stringify(content, null, 2) + "\n")
  }
}, Effect.mapError((cause) =>
  cause instanceof TokenizerError
    ? cause
    : new TokenizerError({ reason: "Invalid", message: `cannot write the tokenizer: ${cause.message}`, cause })))
