/** Which files make up which config and split: the `datasets` library's conventions, on paths alone. */
import { describe, expect, it } from "vitest"
import { cardLayout, conversionLayout, filesLayout, folderLayout, inferSplits } from "../src/hub/layout.ts"
import { fnmatch, glob } from "../src/hub/patterns.ts"
import { isValidRepoId } from "../src/hub/repo.ts"

const configsOf = (layout: ReturnType<typeof cardLayout>) => (layout === undefined ? undefined : Object.fromEntries(layout.configs))

describe("split names from paths", () => {
  it("reads data/{split}-00000-of-00001.* first, any split name, known ones first", () => {
    expect(inferSplits(["data/zeta-00000-of-00001.parquet", "data/train-00001-of-00002.parquet", "data/train-00000-of-00002.parquet", "README.md"], "data/")).toEqual({
      train: ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
      zeta: ["data/zeta-00000-of-00001.parquet"]
    })
  })

  it("then folder names, then file names, keywords between separators (dev is validation, eval is test)", () => {
    expect(inferSplits(["train/a.jsonl", "dev/b.jsonl", "test.jsonl"], "data/")).toEqual({ train: ["train/a.jsonl"], validation: ["dev/b.jsonl"] })
    expect(inferSplits(["my_train_data.csv", "eval.csv", "pretrain.csv", "x/valid-1.csv"], "data/")).toEqual({
      train: ["my_train_data.csv"],
      validation: ["x/valid-1.csv"],
      test: ["eval.csv"]
    })
  })

  it("else everything is train", () => {
    expect(inferSplits(["b.jsonl", "a.jsonl"], "data/")).toEqual({ train: ["a.jsonl", "b.jsonl"] })
  })
})

describe("configs", () => {
  const card = (yaml: string) => `---\n${yaml}\n---\n# Card\n`

  it("from the card: a pattern, a list, {split, path} entries, data_dir, default", () => {
    const files = ["main/train-0.parquet", "main/test-0.parquet", "other/x.csv", "other/y.csv", "sub/data/train.jsonl", "sub/data/test.jsonl", ".hidden/train.csv"]
    const layout = cardLayout(
      card(`configs:
- config_name: main
  data_files:
  - split: train
    path: main/train-*
  - split: test
    path: [main/test-*]
- config_name: other
  data_files: other/*.csv
- config_name: nested
  data_dir: sub
  default: true`),
      files
    )
    expect(configsOf(layout)).toEqual({
      main: { train: ["main/train-0.parquet"], test: ["main/test-0.parquet"] },
      other: { train: ["other/x.csv", "other/y.csv"] },
      nested: { train: ["sub/data/train.jsonl"], test: ["sub/data/test.jsonl"] }
    })
    expect(layout?.defaultConfig).toBe("nested")
    expect(cardLayout(card("license: mit"), files)).toBeUndefined()
    expect(cardLayout("# no header\n", files)).toBeUndefined()
  })

  it("from parquet folders: one config per folder, the root and data/ being default", () => {
    expect(configsOf(folderLayout(["a/train-00000-of-00001.parquet", "a/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet", "x.jsonl"]))).toEqual({
      a: { train: ["a/train-00000-of-00001.parquet"], test: ["a/test-00000-of-00001.parquet"] },
      default: { train: ["data/train-00000-of-00001.parquet"] }
    })
    expect(folderLayout(["data/train.jsonl"])).toBeUndefined()
  })

  it("from the parquet conversion, partial splits keeping their name", () => {
    expect(configsOf(conversionLayout([".gitattributes", "default/train/0000.parquet", "default/train/0001.parquet", "big/partial-train/0000.parquet"]))).toEqual({
      default: { train: ["default/train/0000.parquet", "default/train/0001.parquet"] },
      big: { "partial-train": ["big/partial-train/0000.parquet"] }
    })
  })

  it("from other data files: the most common format only", () => {
    expect(configsOf(filesLayout(["train.jsonl", "test.json", "extra.csv", "README.md", ".github/ci.json"]))).toEqual({
      default: { train: ["train.jsonl"], test: ["test.json"] }
    })
  })
})

describe("patterns and names", () => {
  it("fnmatch crosses folders, fsspec's * does not", () => {
    expect(fnmatch("*.safetensors").test("sub/model.safetensors")).toBe(true)
    expect(fnmatch("tokenizer*").test("tokenizer_config.json")).toBe(true)
    expect(fnmatch("onnx/").test("onnx/model.onnx")).toBe(true)
    expect(glob("main/train-*").test("main/x/train-0.parquet")).toBe(false)
    expect(glob("main/**/*.parquet").test("main/a/b/c.parquet")).toBe(true)
    expect(glob("main/**/*.parquet").test("main/c.parquet")).toBe(true)
    expect(glob("data/[!x]*.csv").test("data/a.csv")).toBe(true)
    expect(glob("data/[!x]*.csv").test("data/x.csv")).toBe(false)
  })

  it("repository ids as huggingface_hub validates them", () => {
    for (const ok of ["gpt2", "openai/gsm8k", "Qwen/Qwen2.5-0.5B", "a_b/c.d"]) expect(isValidRepoId(ok)).toBe(true)
    for (const bad of ["a/b/c", "a--b/c", "a/..b", "", "-a/b", "a/b.", "with space/x"]) expect(isValidRepoId(bad)).toBe(false)
  })
})
