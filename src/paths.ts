/**
 * Where this project's source files are on disk, for what is loaded or hashed by path
 * (the built-in stages, worker scripts). In the start-up bundle (bin/bundle.js) this
 * file is no longer where it was, and the bundle tells where the sources are.
 */
declare const __PIPELINE_ROOT__: string | undefined

const SOURCE_ROOT = typeof __PIPELINE_ROOT__ === "string" ? new URL("src/", __PIPELINE_ROOT__) : new URL(".", import.meta.url)

/** The URL of a file given relative to src/ (`../stages/fetch.ts`, `tokenizer/encode-worker.mjs`). */
export const sourceUrl = (relative: string): URL => new URL(relative, SOURCE_ROOT)
