/**
 * The tokenizer module against published reference ids, the special tokens of the
 * tutorial's Qwen2.5 config, chat templates, every failure's message, the per-folder
 * cache, and tiny tokenizers written and read back through the same path.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { FetchHttpClient } from "@effect/platform"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"

import * as Hub from "../src/hub/index.ts"
import { fileList, loadTokenizer, resolveTokenizerDir, type TokenizerError, tokenizerFiles, tokenizerSource } from "../src/tokenizer.ts"
import { ASCII_ALPHABET, tinyTokenizerFiles, writeTinyTokenizer } from "./support/tiny-tokenizer.ts"
import { QWEN_TOKENIZER_JSON, qwenTokenizerDir } from "./fixtures/tokenizers/folders.ts"
import { tempDir, writeFile } from "./helpers.ts"

const PLAIN = { addSpecialTokens: false } as const

/**
 * huggingface/transformers, tests/models/qwen2/test_tokenization_qwen2.py (commit
 * 04bee35c8777d027a981e061f32fc12a1b3265d3), `test_tokenizer_integration`: the ids that
 * `Qwen/Qwen-tokenizer` (the Qwen2 vocabulary) gives these sequences, padding removed
 * (the attention masks there mark 90, 42 and 26 real tokens).
 */
const TRANSFORMERS_INTEGRATION: ReadonlyArray<readonly [string, ReadonlyArray<number>]> = [
  [
    "Transformers (formerly known as pytorch-transformers and pytorch-pretrained-bert) provides " +
    "general-purpose architectures (BERT, GPT-2, RoBERTa, XLM, DistilBert, XLNet...) for Natural " +
    "Language Understanding (NLU) and Natural Language Generation (NLG) with over 32+ pretrained " +
    "models in 100+ languages and deep interoperability between Jax, PyTorch and TensorFlow.",
    [8963, 388, 320, 69514, 3881, 438, 4510, 27414, 32852, 388, 323, 4510, 27414, 21334, 35722, 1455, 529, 8, 5707, 4586, 58238, 77235, 320, 61437, 11, 479, 2828, 12, 17, 11, 11830, 61437, 64, 11, 1599, 10994, 11, 27604, 321, 33, 529, 11, 29881, 6954, 32574, 369, 18448, 11434, 45451, 320, 45, 23236, 8, 323, 18448, 11434, 23470, 320, 30042, 38, 8, 448, 916, 220, 18, 17, 10, 80669, 4119, 304, 220, 16, 15, 15, 10, 15459, 323, 5538, 94130, 2897, 1948, 619, 706, 11, 5355, 51, 21584, 323, 94986, 13]
  ],
  [
    "🤗 Transformers 提供了可以轻松地下载并且训练先进的预训练模型的 API 和工具。使用预训练模型可以减少计算消耗和碳排放，并且节省从头训练所需要的时间和资源。",
    [144834, 80532, 93685, 83744, 34187, 73670, 104261, 29490, 62189, 103937, 104034, 102830, 98841, 104034, 104949, 9370, 5333, 58143, 102011, 1773, 37029, 98841, 104034, 104949, 73670, 101940, 100768, 104997, 33108, 100912, 105054, 90395, 100136, 106831, 45181, 64355, 104034, 113521, 101975, 33108, 85329, 1773]
  ],
  [
    "```python\ntokenizer = AutoTokenizer.from_pretrained(\"Qwen/Qwen-tokenizer\")\ntokenizer(\"世界，你好！\")```",
    [73594, 12669, 198, 85593, 284, 8979, 37434, 6387, 10442, 35722, 445, 48, 16948, 45274, 16948, 34841, 3135, 1138, 85593, 445, 99489, 3837, 108386, 6313, 899, 73594]
  ]
]

/** transformers' `bytes_to_unicode().values()`, in its order: the printable bytes, then the others shifted past 255. */
const bytesToUnicodeValues = (): Array<string> => {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
  const bytes = Array.from({ length: 256 }, (_, b) => b)
  const others = bytes.filter((b) => !printable(b)).map((_, n) => String.fromCodePoint(256 + n))
  return [...bytes.filter(printable).map((b) => String.fromCodePoint(b)), ...others]
}

/**
 * The toy vocabulary of the same test file's `setUpClass` (and `special_tokens_map`:
 * eos `<|endoftext|>`, added after the vocabulary, id 270), with Qwen2's normalizer,
 * pre-tokenizer and decoder.
 */
const toyTokenizerDir = () => {
  const qwen = JSON.parse(readFileSync(QWEN_TOKENIZER_JSON, "utf8")) as Record<string, unknown>
  const vocab = [
    ...bytesToUnicodeValues(),
    ...["\u0120l", "\u0120n", "\u0120lo", "\u0120low", "er", "\u0120lowest", "\u0120newer", "\u0120wider", "01", ";}", ";}\u010a", "\u00cf\u0135", "\u0120#", "##"]
  ]
  const merges = ["\u0120 l", "\u0120l o", "\u0120lo w", "e r", "0 1", "; }", ";} \u010a", "\u00cf \u0135", "\u0120 #", "# #"]
  const dir = tempDir("toy-tokenizer-")
  writeFile(dir, "tokenizer.json", JSON.stringify({
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: 270, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: qwen.normalizer,
    pre_tokenizer: qwen.pre_tokenizer,
    post_processor: qwen.post_processor,
    decoder: qwen.decoder,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab: Object.fromEntries(vocab.map((t, i) => [t, i])), merges }
  }))
  writeFile(dir, "tokenizer_config.json", JSON.stringify({ eos_token: "<|endoftext|>", clean_up_tokenization_spaces: false }))
  return dir
}

/** Folders the tests only read, shared so that the 7 MB tokenizer.json is parsed once per fixture. */
const QWEN25 = qwenTokenizerDir("qwen2.5")
const CHATML = qwenTokenizerDir("chatml")

/** A byte-level tiny tokenizer in a fresh folder, for tests that edit its files: it loads in milliseconds. */
const tinyDir = () => {
  const dir = join(tempDir(), "tiny")
  return Effect.as(writeTinyTokenizer(dir, { specialTokens: ["<|endoftext|>", "<|im_end|>"] }), dir)
}

const editConfig = (dir: string, edit: (config: Record<string, unknown>) => Record<string, unknown>) =>
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(edit(JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")))))

const failure = <A>(effect: Effect.Effect<A, TokenizerError, NodeContext.NodeContext>) =>
  Effect.flip(effect).pipe(Effect.map((e) => ({ reason: e.reason, message: e.message })))

layer(NodeContext.layer)("tokenizer", (it) => {
  it.effect("encodes transformers' Qwen2 integration sequences to the ids it asserts, and decodes them back", () =>
    Effect.gen(function* () {
      const tokenizer = yield* loadTokenizer(QWEN25)
      for (const [text, ids] of TRANSFORMERS_INTEGRATION) {
        expect(Array.from(tokenizer.encode(text))).toEqual(ids)
        expect(Array.from(tokenizer.encode(text, PLAIN))).toEqual(ids)
        expect(tokenizer.decode(ids)).toBe(text)
      }
    }))

  it.effect("matches test_python_full_tokenizer on transformers' toy vocabulary: NFC, digit splitting, symbols merged with \\n", () =>
    Effect.gen(function* () {
      const tokenizer = yield* loadTokenizer(toyTokenizerDir())
      // get_input_output_texts: U+03D2 U+0301 is NFC-normalized to U+03D3 before byte-level BPE.
      const input = "lower lower newer 010;}\n<|endoftext|>\u03d2\u0301"
      const ids = tokenizer.encode(input, PLAIN)
      expect(Array.from(ids)).toEqual([75, 78, 86, 260, 259, 260, 220, 77, 68, 86, 260, 220, 15, 16, 15, 266, 270, 267])
      expect(tokenizer.decode(ids)).toBe("lower lower newer 010;}\n<|endoftext|>\u03d3")
      // test_slow_tokenizer_token_with_number_sign
      expect(Array.from(tokenizer.encode(" ###", PLAIN))).toEqual([268, 269])
      expect(tokenizer.eosTokenId).toBe(270)
    }))

  it.effect("reads the special tokens of Qwen2.5's config: EOS and padding <|endoftext|>, no BOS", () =>
    Effect.gen(function* () {
      const tokenizer = yield* loadTokenizer(QWEN25)
      expect(tokenizer.eosTokenId).toBe(151643)
      expect(tokenizer.padTokenId).toBe(151643)
      expect(tokenizer.bosTokenId).toBeUndefined()
      // 151,643 BPE tokens and 26 added ones (Qwen2.5's 22, and Qwen3's four that this file carries).
      expect(tokenizer.vocabSize).toBe(151669)
      expect(tokenizer.tokenToId("<|im_start|>")).toBe(151644)
      // Special tokens written in the text are recognized, as transformers does by default.
      // "Transformers" is [8963, 388] in the first integration sequence above.
      expect(Array.from(tokenizer.encode("Transformers<|endoftext|>", PLAIN))).toEqual([8963, 388, 151643])
      expect(tokenizer.decode([8963, 388, 151643], { skipSpecialTokens: true })).toBe("Transformers")
      expect(tokenizer.decode([])).toBe("")
      expect(tokenizer.hasChatTemplate).toBe(false)
    }))

  it.effect("pads with EOS when the config names no pad token, as the tutorial sets it", () =>
    Effect.gen(function* () {
      const dir = yield* tinyDir()
      // EOS written as an AddedToken object, as older configs do.
      editConfig(dir, ({ pad_token: _, ...config }) => ({ ...config, eos_token: { content: "<|im_end|>", special: true } }))
      const tokenizer = yield* loadTokenizer(dir)
      expect(tokenizer.eosTokenId).toBe(1)
      expect(tokenizer.padTokenId).toBe(1)
    }))

  it.effect("renders the config's chat template, with and without the generation prompt", () =>
    Effect.gen(function* () {
      const tokenizer = yield* loadTokenizer(CHATML)
      const user = { role: "user", content: "What is 2+2?" }
      expect(yield* tokenizer.applyChatTemplate([user], { addGenerationPrompt: true })).toBe(
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
      )
      const chat = yield* tokenizer.applyChatTemplate([user, { role: "assistant", content: "4" }])
      expect(chat).toBe("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n")
      const ids = Array.from(tokenizer.encode(chat, PLAIN))
      expect(ids.filter((id) => id === 151644)).toHaveLength(2)
      expect(ids.slice(-2)).toEqual([151645, 198])
      expect(tokenizer.eosTokenId).toBe(151645)
      expect(tokenizer.padTokenId).toBe(151643)
    }))

  it.effect("renders Qwen2.5-0.5B's own chat template: its default system prompt, then the ChatML turns", () =>
    Effect.gen(function* () {
      const tokenizer = yield* loadTokenizer(qwenTokenizerDir("qwen2.5-hub"))
      const user = { role: "user", content: "What is 2+2?" }
      const system = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
      expect(yield* tokenizer.applyChatTemplate([user], { addGenerationPrompt: true })).toBe(
        `${system}<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n`
      )
      expect(yield* tokenizer.applyChatTemplate([{ role: "system", content: "Be brief." }, user, { role: "assistant", content: "4" }])).toBe(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
      )
      expect(tokenizer.eosTokenId).toBe(151643)
    }))

  it.effect("prefers chat_template.jinja, where newer transformers saves the template, and reloads when it changes", () =>
    Effect.gen(function* () {
      const dir = yield* tinyDir()
      editConfig(dir, (config) => ({ ...config, chat_template: "from the config" }))
      expect(yield* Effect.flatMap(loadTokenizer(dir), (t) => t.applyChatTemplate([]))).toBe("from the config")
      writeFile(dir, "chat_template.jinja", "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}")
      const tokenizer = yield* loadTokenizer(dir)
      expect(yield* tokenizer.applyChatTemplate([{ role: "user", content: "hi" }])).toBe("[user] hi")
      expect(fileList(yield* tokenizerFiles(dir))).toEqual(["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"].map((f) => join(dir, f)))
    }))

  it.effect("fails with a message that names the folder, the file and what to do", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      expect(yield* failure(loadTokenizer(join(dir, "nope")))).toEqual({ reason: "NotFound", message: `no tokenizer folder at ${dir}/nope` })
      writeFile(dir, "tokenizer.json", "{}")
      expect(yield* failure(loadTokenizer(dir))).toEqual({
        reason: "NotFound",
        message: `${dir} has no tokenizer_config.json: a tokenizer folder holds tokenizer.json and tokenizer_config.json (vocab.json/merges.txt or tokenizer.model alone are not supported)`
      })
      expect(yield* failure(loadTokenizer(join(dir, "tokenizer.json")))).toMatchObject({ reason: "NotFound", message: `${dir}/tokenizer.json is not a folder: give the folder that holds tokenizer.json and tokenizer_config.json` })
      writeFile(dir, "tokenizer_config.json", "{}")
      writeFile(dir, "tokenizer.json", "{\"model\": ")
      const truncated = yield* failure(loadTokenizer(dir))
      expect(truncated.reason).toBe("Invalid")
      expect(truncated.message).toMatch(new RegExp(`^${dir}/tokenizer\\.json is not valid JSON: `))
      writeFile(dir, "tokenizer.json", JSON.stringify({ model: { type: "Wordsmith" }, normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [] }))
      expect(yield* failure(loadTokenizer(dir))).toEqual({
        reason: "Invalid",
        message: `${dir}/tokenizer.json is not a tokenizer this library can load: Unknown TokenizerModel type: Wordsmith`
      })

      const plain = yield* loadTokenizer(QWEN25)
      const noTemplate = yield* failure(plain.applyChatTemplate([{ role: "user", content: "hi" }]))
      expect(noTemplate).toEqual({
        reason: "NoChatTemplate",
        message: `${plain.dir}/tokenizer_config.json has no chat_template: use a chat model's tokenizer, or tokenize without the chat template`
      })
      const broken = yield* tinyDir()
      editConfig(broken, (config) => ({ ...config, chat_template: "{% for m in messages %}{{ m.content }}" }))
      const brokenTemplate = yield* failure(Effect.flatMap(loadTokenizer(broken), (t) => t.applyChatTemplate([{ role: "user", content: "hi" }])))
      expect(brokenTemplate.reason).toBe("ChatTemplate")
      expect(brokenTemplate.message).toMatch(new RegExp(`^the chat template in ${broken}/tokenizer_config\\.json cannot be parsed: `))
    }))

  it.effect("resolves a path against the pipeline's folder; an id with no such folder is a hub id", () =>
    Effect.gen(function* () {
      const base = tempDir()
      const dir = qwenTokenizerDir("qwen2.5", base, "tok")
      expect(yield* resolveTokenizerDir("tok", base)).toBe(dir)
      expect(yield* resolveTokenizerDir("./missing", base)).toBe(join(base, "missing"))
      expect(yield* tokenizerSource("Qwen/Qwen2.5-0.5B", base)).toEqual({ _tag: "Hub", repo: "Qwen/Qwen2.5-0.5B" })
    }).pipe(Effect.provide(Hub.layer.pipe(Layer.provide(FetchHttpClient.layer)))))

  it.effect("keeps one tokenizer per folder, and reloads it when a file changes", () =>
    Effect.gen(function* () {
      const dir = yield* tinyDir()
      const first = yield* loadTokenizer(dir)
      expect(yield* loadTokenizer(dir + "/")).toBe(first)
      editConfig(dir, (config) => ({ ...config, eos_token: "<|im_end|>" }))
      const second = yield* loadTokenizer(dir)
      expect(second).not.toBe(first)
      expect(second.eosTokenId).toBe(1)
    }))

  it.effect("writes a character-level tokenizer that loads back and round-trips text in its alphabet", () =>
    Effect.gen(function* () {
      const dir = join(tempDir(), "char")
      yield* writeTinyTokenizer(dir, { alphabet: ASCII_ALPHABET })
      const tokenizer = yield* loadTokenizer(dir)
      // <|endoftext|>, <unk>, then newline and the 95 printable ASCII characters.
      expect(tokenizer.vocabSize).toBe(98)
      expect([tokenizer.eosTokenId, tokenizer.padTokenId, tokenizer.tokenToId("<unk>")]).toEqual([0, 0, 1])
      const text = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
      const ids = tokenizer.encode(text)
      expect(Array.from(ids)).toEqual(Array.from(text, (c) => ASCII_ALPHABET.indexOf(c) + 2))
      expect(tokenizer.decode(ids)).toBe(text)
      expect(Array.from(tokenizer.encode("né<|endoftext|>"))).toEqual([ASCII_ALPHABET.indexOf("n") + 2, 1, 0])
    }))

  it.effect("writes a byte-level tokenizer that round-trips any text", () =>
    Effect.gen(function* () {
      const dir = join(tempDir(), "bytes")
      yield* writeTinyTokenizer(dir, { specialTokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], chatTemplate: "{{ messages[0].content }}" })
      const tokenizer = yield* loadTokenizer(dir)
      expect(tokenizer.vocabSize).toBe(259)
      const text = "Zoë paid 12€ 😀\n#### 12"
      const ids = tokenizer.encode(text)
      expect(Array.from(ids)).toEqual(Array.from(new TextEncoder().encode(text), (b) => b + 3))
      expect(tokenizer.decode(ids)).toBe(text)
      expect(Array.from(tokenizer.encode("<|im_start|>A<|im_end|>"))).toEqual([1, 65 + 3, 2])
      expect(yield* tokenizer.applyChatTemplate([{ role: "user", content: "hi" }])).toBe("hi")
    }))

  it("refuses a special token that is also a character of the alphabet", () => {
    expect(() => tinyTokenizerFiles({ alphabet: "ab", specialTokens: ["a"] })).toThrow('the token "a" is both a special token and a character')
  })
})
