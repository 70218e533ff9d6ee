/** The benchmark's results, and the markdown tables made of them (bench/results/latest.md, the README). */
import { median as medianOf } from "./cases/measure.ts"

export type Row = Record<string, unknown>

export interface TrainPair {
  readonly preset: string
  /** Every weight trains, or a LoRA adapter (r 16 on every linear layer). */
  readonly mode?: "full" | "lora"
  readonly batch?: number
  readonly seq?: number
  readonly backend: string
  readonly steps: number
  /** Why ours could not run (a model that does not fit the backend's memory, say). */
  failure?: string
  /** Why PyTorch could not (out of memory, say). */
  torchFailure?: string
  /** One JSON line per repeat, from bench/cases/train-step.ts and bench_torch.py. */
  ours: Array<Row>
  torch: Array<Row>
}

/** One inference shape, ours beside PyTorch (npm run bench -- --cases infer). */
export interface InferPair {
  readonly kind: "generate" | "eval-loss"
  readonly preset: string
  readonly backend: string
  readonly batch: number
  readonly prompt?: number
  readonly new?: number
  readonly seq?: number
  failure?: string
  torchFailure?: string
  /** One JSON line each, from bench/cases/generate.ts or eval-loss.ts and bench/infer_torch.py. */
  readonly ours: Array<Row>
  readonly torch: Array<Row>
}

export interface Results {
  readonly date: string
  readonly machine: { readonly cpu: string; readonly cores: number; readonly memory_gib: number; readonly node: string; readonly torch: string | null; readonly blas: string | null; readonly blas_core?: string | null }
  readonly command: string
  readonly train: Array<TrainPair>
  tokenize: { tokens: number; train_tokens: number; seconds: number; tokens_per_s: number; pipeline_peak_rss_mb: number | null } | undefined
  cached: { pipeline: string; runs: number; median_s: number; min_s: number; peak_rss_mb: number | null } | undefined
  readonly generate: Array<Row>
  e2e: {
    examples: number
    ours: { backend: string; stage_seconds: number; train_seconds: number; tokens: number; tokens_per_s: number; loss: number; peak_rss_mb: number | null }
    torch: Row | undefined
  } | undefined
  /** A generated corpus through the streaming data stages (npm run bench -- --cases stream). */
  stream?: StreamRun | undefined
  /** Generation and eval_loss beside PyTorch (npm run bench -- --cases infer). */
  infer?: Array<InferPair> | undefined
  /** The tutorial's pipeline files, two training steps each (npm run bench -- --cases gsm8k). */
  readonly gsm8k?: Array<Gsm8kRun>
  readonly skipped: Array<string>
}

export interface StreamRun {
  readonly corpus_mb: number
  readonly documents: number
  readonly heap_mb: number
  readonly stages: ReadonlyArray<{ readonly id: string; readonly seconds: number; readonly rows: number; readonly output_mb: number; readonly corpus_mb_per_s: number }>
  readonly total_s: number
  readonly corpus_mb_per_s: number
  readonly peak_rss_mb: number | null
}

export interface Gsm8kRun {
  readonly file: string
  readonly backend: string
  readonly steps: number
  readonly stage_seconds: number
  readonly train_seconds: number
  readonly seconds_per_step: number
  readonly tokens_per_s: number
  readonly trainable: number
  readonly epoch_hours: number
  readonly updates_per_epoch: number
  readonly peak_rss_mb: number | null
}

export const num = (value: unknown): number => (typeof value === "number" ? value : Number.NaN)

/** The median of the finite values (a repeat that produced no figure does not count). */
export const median = (values: ReadonlyArray<number>): number => medianOf(values.filter(Number.isFinite))

const fmt = (value: number, digits = 0): string =>
  Number.isFinite(value) ? value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "–"

/** "1,234 (1,100–1,300)" over repeats. */
const spread = (values: ReadonlyArray<number>, digits = 0): string => {
  const finite = values.filter(Number.isFinite)
  if (finite.length === 0) return "–"
  const m = fmt(median(finite), digits)
  return finite.length === 1 ? m : `${m} (${fmt(Math.min(...finite), digits)}–${fmt(Math.max(...finite), digits)})`
}

const contended = (rows: ReadonlyArray<Row>): boolean => rows.some((row) => num(row.others_cpu_frac) > 0.1)

const PARAMS = (n: number) => (n >= 1e6 ? `${fmt(n / 1e6, 1)}M` : fmt(n))

const header = (results: Results): string => {
  const { machine } = results
  return `Measured ${results.date.slice(0, 10)} on ${machine.cpu}, ${machine.cores} cores, ${machine.memory_gib} GiB; Node ${machine.node}` +
    `${machine.torch === null ? "; PyTorch absent" : `; PyTorch ${machine.torch} (Debian python3-torch, BLAS ${machine.blas ?? "unknown"}${machine.blas_core ? `, OpenBLAS kernels ${machine.blas_core}, with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset` : ""})`}. Command: \`${results.command}\`.`
}

/** Training, tokenizing, cached runs and generation: latest.md and the README's first block. */
export const formatTables = (results: Results): string => {
  const lines: Array<string> = [header(results)]
  let footnote = false
  const failures: Array<string> = []
  if (results.train.length > 0) {
    lines.push(
      "",
      "**Training** (forward + backward + clip + AdamW, the train stage's layer-wise step; B×T random ids, the first 40% of each row masked; LoRA: r 16, alpha 32, every linear layer; median of repeats, range in brackets):",
      "",
      "| preset | trains | B×T | backend | ours tokens/s | PyTorch tokens/s | ours / PyTorch | ours step: forward / head / backward / optimizer (s) | wasm heap peak (predicted), GiB | peak RSS ours / PyTorch (MB) |",
      "|---|---|---|---|---|---|---|---|---|---|"
    )
    for (const pair of results.train) {
      const ours = pair.ours.map((r) => num(r.tokens_per_s))
      const torch = pair.torch.map((r) => num(r.tokens_per_s))
      const ratio = median(ours) / median(torch)
      const noisy = contended(pair.ours) || contended(pair.torch)
      footnote ||= noisy
      const trains = pair.mode === "lora" ? `LoRA (${PARAMS(num(pair.ours[0]?.trainable ?? pair.torch[0]?.params))} of ${PARAMS(num(pair.ours[0]?.params))})` : `all ${PARAMS(num(pair.ours[0]?.params ?? pair.torch[0]?.params))}`
      const shape = `${pair.batch ?? 4}×${pair.seq ?? 256}`
      const torchCell = pair.torchFailure !== undefined ? "did not run (‡)" : spread(torch)
      if (pair.torchFailure !== undefined) failures.push(`PyTorch, ${pair.preset} ${pair.mode ?? "full"} ${shape}: ${pair.torchFailure}`)
      if (pair.failure !== undefined) {
        failures.push(`${pair.preset} on ${pair.backend}: ${pair.failure}`)
        lines.push(`| ${pair.preset} | ${trains} | ${shape} | ${pair.backend} | does not run (‡) | ${torchCell} | – | – | – | – / ${fmt(median(pair.torch.map((r) => num(r.peak_rss_mb))))} |`)
        continue
      }
      const at = (key: string, digits = 2) => fmt(median(pair.ours.map((r) => num(r[key]))), digits)
      const heap = pair.backend === "wasm" ? `${at("peak_heap_gib")} (${at("predicted_heap_gib")})` : "–"
      lines.push(
        `| ${pair.preset} | ${trains} | ${shape} | ${pair.backend}${pair.backend === "wasm" ? ` (${num(pair.ours[0]?.threads)} threads)` : ""} | ` +
          `${spread(ours, median(ours) < 100 ? 1 : 0)} | ${torchCell} | ${Number.isFinite(ratio) ? `**${fmt(ratio, ratio < 0.1 ? 4 : 2)}**` : "–"}${noisy ? " †" : ""} | ` +
          `${at("median_forward_s")} / ${at("median_head_s")} / ${at("median_backward_s")} / ${at("median_opt_s")} | ${heap} | ` +
          `${fmt(median(pair.ours.map((r) => num(r.peak_rss_mb))))} / ${fmt(median(pair.torch.map((r) => num(r.peak_rss_mb))))} |`
      )
    }
  }
  if ((results.gsm8k ?? []).length > 0) {
    lines.push(
      "",
      `**The tutorial's training** (\`pipeline run FILE --until train --set train.max_steps=${results.gsm8k![0]!.steps}\` against a loopback hub whose Qwen/Qwen2.5-0.5B is a stand-in of its exact size: its config and tokenizer, random weights; the tutorial's batch 5 × accumulation 4 on GSM8K):`,
      "",
      "| pipeline | trains | backend | seconds a step | tokens/s | an epoch (projected) | peak RSS (MB) |",
      "|---|---|---|---|---|---|---|"
    )
    for (const run of results.gsm8k ?? []) {
      lines.push(`| ${run.file} | ${PARAMS(run.trainable)} parameters | ${run.backend} | ${fmt(run.seconds_per_step, 0)} | ${fmt(run.tokens_per_s, 1)} | ${fmt(run.epoch_hours, 1)} h (${fmt(run.updates_per_epoch)} steps) | ${fmt(run.peak_rss_mb ?? Number.NaN)} |`)
    }
  }
  const other: Array<string> = []
  if (results.tokenize !== undefined) {
    const t = results.tokenize
    other.push(
      `| tokenize GSM8K (train + test, ${fmt(t.tokens)} tokens; the tokenize stage of gsm8k.yaml) | ${fmt(t.seconds, 2)} s, ${fmt(t.tokens_per_s)} tokens/s; train's ${fmt(t.train_tokens)} tokens ≈ ${fmt(t.train_tokens / t.tokens_per_s, 2)} s | ${fmt(t.pipeline_peak_rss_mb ?? Number.NaN)} (whole run) |`
    )
  }
  if (results.cached !== undefined) {
    const c = results.cached
    other.push(`| \`pipeline run\`, nothing stale: ${c.pipeline} | ${fmt(c.median_s, 2)} s wall (median of ${c.runs}, best ${fmt(c.min_s, 2)}) | ${fmt(c.peak_rss_mb ?? Number.NaN)} |`)
  }
  for (const row of results.generate) {
    other.push(
      `| greedy generation, ${String(row.preset)}, ${String(row.backend)}, ${row.kv_cache === true ? "KV cache" : "no KV cache"} (prompt ${num(row.prompt_tokens)}, ${num(row.new_tokens)} new) | ${fmt(num(row.tokens_per_s))} tokens/s | ${fmt(num(row.peak_rss_mb))} |`
    )
  }
  if (other.length > 0) lines.push("", "| case | figure | peak RSS (MB) |", "|---|---|---|", ...other)
  if (footnote) lines.push("", "† Other processes used more than a tenth of the machine during a run: a contended figure.")
  if (failures.length > 0) lines.push("", ...failures.map((f) => `‡ ${f}`))
  if (results.skipped.length > 0) lines.push("", ...results.skipped.map((s) => `Skipped: ${s}.`))
  return `${lines.join("\n")}\n`
}

/** The infer case: infer.md and the README's block of its own. */
export const formatInfer = (results: Results): string => {
  const lines: Array<string> = [header(results)]
  const pairs = results.infer ?? []
  const failures: Array<string> = []
  const ratio = (pair: InferPair, key: string) => {
    const value = num(pair.ours[0]?.[key]) / num(pair.torch[0]?.[key])
    return Number.isFinite(value) ? `**${fmt(value, 2)}**` : "–"
  }
  const cell = (rows: ReadonlyArray<Row>, key: string, failure: string | undefined, digits = 1) => {
    if (failure !== undefined) return "did not run (‡)"
    const value = num(rows[0]?.[key])
    return fmt(value, value < 10 ? 2 : digits)
  }
  const mark = (pair: InferPair) => (contended(pair.ours) || contended(pair.torch) ? " †" : "")
  const noted = (pair: InferPair, what: string) => {
    if (pair.failure !== undefined) failures.push(`ours, ${what}: ${pair.failure}`)
    if (pair.torchFailure !== undefined) failures.push(`PyTorch, ${what}: ${pair.torchFailure}`)
  }
  const generation = pairs.filter((pair) => pair.kind === "generate")
  if (generation.length > 0) {
    const first = generation[0]!
    lines.push(
      "",
      `**Generation** (greedy, KV cache, random weights, EOS off so that every row makes ${first.new} tokens from a ${first.prompt}-token prompt; PyTorch: transformers' \`generate\` loop with a DynamicCache, bench/infer_torch.py; tokens/s over the batch; first token: the prompts' forward pass, the latency a user waits before text appears):`,
      "",
      "| preset | prompts | backend | ours tokens/s | PyTorch tokens/s | ours / PyTorch | decoding tokens/s, ours / PyTorch | first token (s), ours / PyTorch | peak RSS ours / PyTorch (MB) |",
      "|---|---|---|---|---|---|---|---|---|"
    )
    for (const pair of generation) {
      noted(pair, `generate ${pair.preset}, ${pair.batch} prompts`)
      lines.push(
        `| ${pair.preset} | ${pair.batch} | ${pair.backend} | ${cell(pair.ours, "tokens_per_s", pair.failure)} | ${cell(pair.torch, "tokens_per_s", pair.torchFailure)} | ${ratio(pair, "tokens_per_s")}${mark(pair)} | ` +
          `${cell(pair.ours, "decode_tokens_per_s", pair.failure)} / ${cell(pair.torch, "decode_tokens_per_s", pair.torchFailure)} | ${cell(pair.ours, "first_token_s", pair.failure)} / ${cell(pair.torch, "first_token_s", pair.torchFailure)} | ` +
          `${fmt(num(pair.ours[0]?.peak_rss_mb))} / ${fmt(num(pair.torch[0]?.peak_rss_mb))} |`
      )
    }
  }
  const loss = pairs.filter((pair) => pair.kind === "eval-loss")
  if (loss.length > 0) {
    lines.push(
      "",
      "**eval_loss** (the forward pass `evaluate` runs per batch, no gradients; B×T random ids, the first 40% of each row labelled -100; PyTorch: the model with labels under `torch.no_grad()`, as `trainer.evaluate()` runs it):",
      "",
      "| preset | B×T | backend | ours tokens/s | PyTorch tokens/s | ours / PyTorch | seconds a batch, ours / PyTorch | wasm heap (GiB) | peak RSS ours / PyTorch (MB) |",
      "|---|---|---|---|---|---|---|---|---|"
    )
    for (const pair of loss) {
      noted(pair, `eval_loss ${pair.preset} ${pair.batch}×${pair.seq}`)
      lines.push(
        `| ${pair.preset} | ${pair.batch}×${pair.seq} | ${pair.backend} | ${cell(pair.ours, "tokens_per_s", pair.failure)} | ${cell(pair.torch, "tokens_per_s", pair.torchFailure)} | ${ratio(pair, "tokens_per_s")}${mark(pair)} | ` +
          `${cell(pair.ours, "median_s", pair.failure, 2)} / ${cell(pair.torch, "median_s", pair.torchFailure, 2)} | ${fmt(num(pair.ours[0]?.heap_gib), 2)} | ${fmt(num(pair.ours[0]?.peak_rss_mb))} / ${fmt(num(pair.torch[0]?.peak_rss_mb))} |`
      )
    }
  }
  if (pairs.some((pair) => contended(pair.ours) || contended(pair.torch))) lines.push("", "† Other processes used more than a tenth of the machine during a run: a contended figure.")
  if (failures.length > 0) lines.push("", ...failures.map((f) => `‡ ${f}`))
  return `${lines.join("\n")}\n`
}

/** The stream case: stream.md and the README's block of its own. */
export const formatStream = (results: Results): string => {
  const lines: Array<string> = [header(results)]
  if (results.stream !== undefined) {
    const run = results.stream
    lines.push(
      "",
      `**Larger than memory** (\`--cases stream\`): a generated ${fmt(run.corpus_mb)} MB JSON-lines corpus (${fmt(run.documents)} documents) through fetch → tokenize (\`text\`, \`pack: { block_size: 512 }\`, Qwen2.5's tokenizer) → filter → shuffle → select 100,000 blocks, in one \`pipeline run\` under \`node --max-old-space-size=${run.heap_mb}\`: peak RSS **${fmt(run.peak_rss_mb ?? Number.NaN)} MB**, ${fmt(run.total_s)} s in all, ${fmt(run.corpus_mb_per_s, 1)} MB of corpus a second.`,
      "",
      "| stage | seconds | rows out | Arrow out (MB) | corpus MB/s |",
      "|---|---|---|---|---|",
      ...run.stages.map((s) => `| ${s.id} | ${fmt(s.seconds, 1)} | ${fmt(s.rows)} | ${fmt(s.output_mb)} | ${fmt(s.corpus_mb_per_s, 1)} |`)
    )
  }
  return `${lines.join("\n")}\n`
}

/** The end-to-end comparison: e2e.md and the README's second block. */
export const formatE2e = (results: Results): string => {
  const lines: Array<string> = [header(results)]
  if (results.e2e !== undefined) {
    const { ours, torch, examples } = results.e2e
    lines.push(
      "",
      `**End to end**: one epoch of the tutorial's TrainingArguments (batch 5, accumulation 4, AdamW 2e-5, cosine, warmup 0.1) on ${fmt(examples)} GSM8K examples, \`small\` preset from scratch (bench/pipelines/gsm8k-small.yaml):`,
      "",
      "| | training time | tokens/s | final loss | peak RSS (MB) |",
      "|---|---|---|---|---|",
      `| ours (${ours.backend}; the train stage: ${fmt(ours.stage_seconds)} s with model init, checkpoint and save) | ${fmt(ours.train_seconds)} s | ${fmt(ours.tokens_per_s)} | ${fmt(ours.loss, 3)} | ${fmt(ours.peak_rss_mb ?? Number.NaN)} |`,
      torch === undefined
        ? "| PyTorch | – | – | – | – |"
        : `| PyTorch (padding to the longest row, full logits) | ${fmt(num(torch.seconds))} s | ${fmt(num(torch.tokens_per_s))} | ${fmt(num(torch.last_loss), 3)} | ${fmt(num(torch.peak_rss_mb))} |`
    )
    if (torch !== undefined) lines.push("", `Speed, ours / PyTorch: **${fmt(num(torch.seconds) / ours.train_seconds, 2)}×** (PyTorch's training time divided by ours).`)
  }
  return `${lines.join("\n")}\n`
}
