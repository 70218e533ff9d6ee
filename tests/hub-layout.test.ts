/** Which files make up which config and split: the `datasets` library's conventions, on paths alone. */
import { Effect, Exit, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import { cardConfigs, cardLayout, conversionLayout, type DataLayout, filesLayout, folderLayout, inferSplits } from "../src/hub/layout.ts"
import { fnmatch, glob } from "../src/hub/patterns.ts"
import { isValidRepoId } from "../src/hub/repo.ts"

const configsOf = (layout: DataLayout | undefined) => (layout === undefined ? undefined : Object.fromEntries(layout.configs))

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

  it("from the card: a pattern, a list, {split, path} entries, data_dir, default", async () => {
    const files = ["main/train-0.parquet", "main/test-0.parquet", "other/x.csv", "other/y.csv", "sub/data/train.jsonl", "sub/data/test.jsonl", ".hidden/train.csv"]
    const layout = await Effect.runPromise(cardLayout(
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
    ))
    expect(configsOf(layout)).toEqual({
      main: { train: ["main/train-0.parquet"], test: ["main/test-0.parquet"] },
      other: { train: ["other/x.csv", "other/y.csv"] },
      nested: { train: ["sub/data/train.jsonl"], test: ["sub/data/test.jsonl"] }
    })
    expect(layout?.defaultConfig).toBe("nested")
    expect(await Effect.runPromise(cardLayout(card("license: mit"), files))).toBeUndefined()
    expect(await Effect.runPromise(cardLayout("# no header\n", files))).toBeUndefined()
    expect(configsOf(await Effect.runPromise(cardLayout(card("configs:\n- data_files: {train: other/x.csv, test: [other/y.csv]}"), files)))).toEqual({
      default: { train: ["other/x.csv"], test: ["other/y.csv"] }
    })
  })

  it("a card the datasets library would refuse is a problem naming the key, not a crash", async () => {
    const problem = (yaml: string) =>
      Effect.runPromise(Effect.match(cardConfigs(card(yaml)), { onFailure: ({ key, problem }) => `${key}: ${problem}`, onSuccess: () => "accepted" }))
    expect(await problem("configs:\n- null")).toBe("configs[0]: expected a mapping with config_name, data_files, data_dir or default, got null")
    expect(await problem("configs: main")).toBe(`configs: expected a list of configs, got "main"`)
    expect(await problem("configs:\n- config_name: 3")).toBe("configs[0].config_name: expected string, got 3")
    expect(await problem("configs:\n- data_files: 5")).toBe(
      "configs[0].data_files: expected a pattern, a list of patterns, a list of {split, path}, or a map of split to patterns"
    )
    expect(await problem("configs:\n- data_files:\n  - split: train")).toBe("configs[0].data_files[0].path: is missing")
    expect(await problem("configs:\n- data_files: [a.csv, 3]")).toBe("configs[0].data_files[0]: expected {split, path}, got \"a.csv\"")
    expect(await problem("configs:\n- data_files: {a/b: x.csv}")).toBe(
      `configs[0].data_files: "a/b" is not a split name (letters, digits and "_", in parts joined by ".")`
    )
    expect(await problem("configs: [a")).toMatch(/^: its YAML header does not parse \(/)
    expect(await problem("- a")).toBe(": its YAML header is not a mapping")
    expect(await problem("configs:\n- data_files: {train.v1: x.csv}")).toBe("accepted")
    expect(await problem("configs:\n- config_name: ../main")).toBe(`configs[0].config_name: "../main" is not a config name (not empty, no <>:/\\|?* or control characters)`)
    expect(await problem('configs:\n- config_name: "a\\nb"')).toBe(`configs[0].config_name: "a\\u000ab" is not a config name (not empty, no <>:/\\|?* or control characters)`)
  })

  it("a key given twice keeps its last value, as PyYAML (the datasets library) reads it", async () => {
    const layout = await Effect.runPromise(cardLayout(card("configs:\n- data_files: a.csv\nconfigs:\n- data_files: b.csv"), ["a.csv", "b.csv"]))
    expect(configsOf(layout)).toEqual({ default: { train: ["b.csv"] } })
  })

  it("a header is parsed off this thread: a slow one neither blocks the caller nor outlives an interruption", async () => {
    const slow = card(Array.from({ length: 60_000 }, (_, i) => `key_${i}: {a: [1, 2]}`).join("\n"))
    const fiber = Effect.runFork(cardConfigs(slow))
    // Parsed on this thread, the header would be done (seconds later) before runFork returned.
    expect(fiber.unsafePoll()).toBeNull()
    const exit = await Effect.runPromise(Fiber.interrupt(fiber))
    expect(Exit.isInterrupted(exit)).toBe(true)
    // And the same header, left alone, parses (to no configs).
    expect(await Effect.runPromise(cardConfigs(slow))).toEqual([])
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
    expect(glob("data/[a-c]?.csv").test("data/b1.csv")).toBe(true)
    expect(glob("data/[a-c]?.csv").test("data/d1.csv")).toBe(false)
    expect(glob("data/?.csv").test("data//.csv")).toBe(false)
    expect(fnmatch("a?b").test("a/b")).toBe(true)
    expect(glob("**").test("a/b/c")).toBe(true)
    expect(glob("[x").test("[x")).toBe(true)
    expect(glob("[]]").test("]")).toBe(true)
    expect(fnmatch("*.ünï?").test("x/é.ünïç")).toBe(true)
  })

  it("patterns from cards cannot make matching backtrack: forty stars over a long name take no time", () => {
    // Translated to a regex, eighteen stars over thirty characters took 2.5 s, and each star more several times that.
    const short = performance.now()
    expect(glob(`${"*".repeat(18)}x`).test("a".repeat(30))).toBe(false)
    expect(performance.now() - short).toBeLessThan(2500)
    const started = performance.now()
    expect(glob(`${"*".repeat(40)}x`).test("a".repeat(5000))).toBe(false)
    expect(fnmatch(`${"*a".repeat(30)}b`).test("a".repeat(5000))).toBe(false)
    expect(glob(`${"*".repeat(40)}x`).test(`${"a".repeat(5000)}x`)).toBe(true)
    // Bounds far above the milliseconds these take, and far below backtracking's hours.
    expect(performance.now() - started).toBeLessThan(20_000)
  })

  it("repository ids as huggingface_hub validates them", () => {
    for (const ok of ["gpt2", "openai/gsm8k", "Qwen/Qwen2.5-0.5B", "a_b/c.d"]) expect(isValidRepoId(ok)).toBe(true)
    for (const bad of ["a/b/c", "a--b/c", "a/..b", "", "-a/b", "a/b.", "with space/x"]) expect(isValidRepoId(bad)).toBe(false)
  })
})
