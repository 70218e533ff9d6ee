/**
 * Names and numbers more than one module must agree on, defined once.
 */

/** The label PyTorch's cross-entropy (and so the HF Trainer) skips: prompt tokens and padding. */
export const IGNORE_INDEX = -100

/** What a tokenizer's `save_pretrained` may write; copied beside a saved model when present. */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
  "tokenizer.model",
  "chat_template.json",
  "chat_template.jinja"
] as const

/** The two files a tokenizer folder must hold for us to read it. */
export const REQUIRED_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"] as const

/** A stage id, as pipeline files, `--set` and the JSON Schema accept it. */
const STAGE_ID_SOURCE = "[A-Za-z_][A-Za-z0-9_-]*"
export const STAGE_ID = new RegExp(`^${STAGE_ID_SOURCE}$`)
