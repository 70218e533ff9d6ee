// Plain JavaScript, so that the encode workers (encode-worker.mjs) load it without a
// TypeScript loader; word-memo.d.mts gives its types.

/**
 * tokenizers.js 0.2 memoises BPE per word in an LRU that deletes and re-inserts a Map
 * entry on every hit; on GSM8K that bookkeeping is half of encode's time. A Map that is
 * emptied when full holds the same pieces, and encoding runs about twice as fast.
 */
class BoundedWordMemo {
  #words = new Map()
  #capacity
  constructor(capacity) {
    this.#capacity = capacity
  }
  get(word) {
    return this.#words.get(word)
  }
  put(word, pieces) {
    if (this.#words.size >= this.#capacity) this.#words.clear()
    this.#words.set(word, pieces)
  }
  clear() {
    this.#words.clear()
  }
}

const WORD_MEMO_CAPACITY = 100_000

/** Swaps a tokenizers.js tokenizer's BPE word cache for the bounded memo (other models have none). */
export const installWordMemo = (tokenizer) => {
  if (tokenizer.model?.cache !== undefined) tokenizer.model.cache = new BoundedWordMemo(WORD_MEMO_CAPACITY)
}
