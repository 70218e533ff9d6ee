/**
 * Packing for continued pre-training, as run_clm.py's `group_texts` does it: the
 * documents' ids (EOS after each) concatenated and cut into blocks of `blockSize`
 * tokens, the last partial block dropped. Documents arrive a batch at a time; the
 * tokens that do not yet fill a block are carried to the next batch, so the blocks
 * are the same as from the whole split at once.
 */
export class BlockPacker {
  private carry = new Int32Array(0)
  private tokens = 0

  constructor(readonly blockSize: number) {}

  /** The blocks that `documents` complete, views into one buffer of their own. */
  push(documents: ReadonlyArray<Int32Array>): ReadonlyArray<Int32Array> {
    const length = documents.reduce((n, d) => n + d.length, this.carry.length)
    this.tokens += length - this.carry.length
    const all = new Int32Array(length)
    all.set(this.carry)
    let at = this.carry.length
    for (const document of documents) {
      all.set(document, at)
      at += document.length
    }
    const blocks = Math.floor(length / this.blockSize)
    this.carry = all.slice(blocks * this.blockSize)
    return Array.from({ length: blocks }, (_, i) => all.subarray(i * this.blockSize, (i + 1) * this.blockSize))
  }

  /** Tokens pushed so far, and those dropped at the end (a partial block). */
  get totalTokens(): number {
    return this.tokens
  }

  get leftover(): number {
    return this.carry.length
  }
}
