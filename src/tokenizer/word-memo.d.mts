/** Swaps a tokenizers.js tokenizer's BPE word cache for a faster bounded memo. */
export declare const installWordMemo: (tokenizer: { model: { cache?: unknown } | null }) => void
