/** A random small Qwen2 saved as a Hugging Face folder with a character-level tokenizer: a model for tests. */
import { Effect } from "effect"
import { ensureBackend } from "../../src/backend/runtime.ts"
import { decodeConfig } from "../../src/model/config.ts"
import { saveHfFolder } from "../../src/model/hf-folder.ts"
import { disposeModel, initModel } from "../../src/model/qwen2.ts"
import { loadTokenizer } from "../../src/tokenizer.ts"
import { ASCII_ALPHABET, writeTinyTokenizer } from "./tiny-tokenizer.ts"
import { runNode } from "../helpers.ts"

export interface TinyModelOptions {
  readonly seed?: number
  readonly hiddenSize?: number
  readonly layers?: number
}

/** Writes the model into `dir` and returns its tokenizer, on this process's backend (PIPELINE_BACKEND). */
export const writeTinyModel = (dir: string, options: TinyModelOptions = {}) =>
  runNode(Effect.gen(function* () {
    yield* writeTinyTokenizer(dir, { alphabet: ASCII_ALPHABET })
    const tokenizer = yield* loadTokenizer(dir)
    const hidden = options.hiddenSize ?? 32
    const config = yield* decodeConfig({
      architectures: ["Qwen2ForCausalLM"],
      vocab_size: tokenizer.vocabSize,
      hidden_size: hidden,
      intermediate_size: hidden * 2,
      num_hidden_layers: options.layers ?? 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 512,
      initializer_range: 0.2,
      tie_word_embeddings: true,
      eos_token_id: tokenizer.eosTokenId,
      pad_token_id: tokenizer.padTokenId
    }, "tiny")
    yield* ensureBackend
    const model = initModel(config, options.seed ?? 0)
    yield* saveHfFolder(model, dir)
    disposeModel(model)
    return tokenizer
  }))
