/** The benchmark's results, and the markdown tables made of them (bench/results/latest.md, the README). */
import { median as medianOf } from "./cases/measure.ts"

export type Row = Record<string, unknown>

export interface TrainPair {
  readonly preset: string
  readonly backend: string
  readonly steps: number
  /** Why ours could not run (a model that does not fit the backend's memory, say). */
  failure?: string
  /** One JSON line per repeat, from bench/cases/train-step.ts and bench_torch.py. */
  ours: Array<Row>
  torch: Array<Row>
}

export interface Results {
  readonly date: string
  readonly machine: { readonly cpu: string; readonly cores: number; readonly memory_gib: number; readonly node: string; readonly torch: string | null; readonly blas: string | null }
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
  readonly skipped: Array<string>
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
    `${machine.torch === null ? "; PyTorch absent" : `; PyTorch ${machine.torch} (Debian python3-torch, BLAS ${machine.blas ?? "unknown"})`}. Command: \`${results.command}\`.`
}

/** Training, tokenizing, cached runs and generation: latest.md and the README's first block. */
export const formatTables = (results: Results): string => {
  const lines: Array<string> = [header(results)]
  let footnote = false
  const failures: Array<string> = []
  if (results.train.length > 0) {
    lines.push(
      "",
      "**Training** (forward + backward + clip + AdamW; B=4, T=256, first 40% of each row masked; median of repeats, range in brackets):",
      "",
      "| preset | params | backend | ours tokens/s | PyTorch tokens/s | ours / PyTorch | ours step: fwd+bwd / optimizer (s) | peak RSS ours / PyTorch (MB) |",
      "|---|---|---|---|---|---|---|---|"
    )
    for (const pair of results.train) {
      const ours = pair.ours.map((r) => num(r.tokens_per_s))
      const torch = pair.torch.map((r) => num(r.tokens_per_s))
      const ratio = median(ours) / median(torch)
      const noisy = contended(pair.ours) || contended(pair.torch)
      footnote ||= noisy
      if (pair.failure !== undefined) {
        failures.push(`${pair.preset} on ${pair.backend}: ${pair.failure}`)
        lines.push(`| ${pair.preset} | ${PARAMS(num(pair.torch[0]?.params))} | ${pair.backend} | does not run (‡) | ${spread(torch)} | – | – | – / ${fmt(median(pair.torch.map((r) => num(r.peak_rss_mb))))} |`)
        continue
      }
      lines.push(
        `| ${pair.preset} | ${PARAMS(num(pair.ours[0]?.params))} | ${pair.backend}${pair.backend === "wasm" ? ` (${num(pair.ours[0]?.threads)} threads)` : ""} | ` +
          `${spread(ours)} | ${spread(torch)} | ${Number.isFinite(ratio) ? `**${fmt(ratio, ratio < 0.1 ? 4 : 2)}**` : "–"}${noisy ? " †" : ""} | ` +
          `${fmt(median(pair.ours.map((r) => num(r.median_fwd_bwd_s))), 2)} / ${fmt(median(pair.ours.map((r) => num(r.median_opt_s))), 2)} | ` +
          `${fmt(median(pair.ours.map((r) => num(r.peak_rss_mb))))} / ${fmt(median(pair.torch.map((r) => num(r.peak_rss_mb))))} |`
      )
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
