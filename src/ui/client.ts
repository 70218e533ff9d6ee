/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The page of `pipeline ui`, in the browser: the DAG with each stage's state, the
 * selected stage's details (params, metrics, first rows), training curves (uPlot) and
 * evaluation examples. It polls /api/state, so runs from the CLI beside it show up.
 */
import uPlot from "uplot"

interface StageSummary {
  readonly id: string
  readonly uses: string
  readonly needs: ReadonlyArray<string>
  readonly state: "fresh" | "stale" | "running"
  readonly progress: { readonly done: number; readonly total: number; readonly unit: string } | null
  readonly reasons: ReadonlyArray<string>
  readonly remote: boolean
  readonly fingerprint: string | null
  readonly createdAt: string | null
  readonly durationMs: number | null
  readonly metrics: Readonly<Record<string, number>>
  readonly params: Readonly<Record<string, unknown>>
  readonly outputs: { readonly entry: string; readonly dataset?: ReadonlyArray<string>; readonly model?: string; readonly files?: ReadonlyArray<string> } | null
}

interface State {
  readonly name: string
  readonly file: string
  readonly stages: ReadonlyArray<StageSummary>
  readonly running: { readonly pid: number; readonly startedAt: string } | null
  readonly lastRunError: string | null
  readonly history: ReadonlyArray<{ readonly startedAt: string; readonly finishedAt: string; readonly stages: ReadonlyArray<{ readonly id: string; readonly status: string; readonly durationMs: number }> }>
}

interface Detail extends StageSummary {
  readonly splits: Readonly<Record<string, { readonly rows: number; readonly columns: ReadonlyArray<string>; readonly head: ReadonlyArray<Record<string, unknown>> }>>
  readonly log: ReadonlyArray<Record<string, unknown>>
}

const app = document.getElementById("app")!
let state: State | undefined
let selected: string | undefined
let detail: Detail | undefined
let wrongOnly = false
let lastKey = ""

const h = (tag: string, attrs: Record<string, string> = {}, ...children: Array<Node | string>): HTMLElement => {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v)
  for (const child of children) el.append(child)
  return el
}

const stateOf = (stage: StageSummary): string => (stage.state === "fresh" && stage.remote ? "remote" : stage.state)

const progressOf = (stage: StageSummary): string =>
  stage.progress === null ? "" : ` ${stage.progress.done}/${stage.progress.total} ${stage.progress.unit.split(",")[0]}`

const STYLE = `
body { font: 14px system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9 }
header { padding: 12px 20px; background: #1d2330; color: white; display: flex; gap: 16px; align-items: center }
header h1 { font-size: 16px; margin: 0 } header .file { opacity: .7; font-size: 12px }
button { font: inherit; padding: 4px 12px; border-radius: 4px; border: 1px solid #9aa3b5; background: white; cursor: pointer }
main { display: grid; grid-template-columns: minmax(320px, 40%) 1fr; gap: 16px; padding: 16px } main > div { display: grid; gap: 16px; align-content: start }
section { background: white; border-radius: 6px; padding: 12px; box-shadow: 0 1px 2px #0002; overflow: auto }
.node rect { fill: white; stroke: #9aa3b5; stroke-width: 1.5; rx: 6 } .node { cursor: pointer }
.node.fresh rect { stroke: #2e9e5b } .node.stale rect { stroke: #d08a1c } .node.running rect { stroke: #2f6fd6; stroke-dasharray: 4 3 }
.node.remote rect { stroke: #7b5cd6 } .node.selected rect { stroke-width: 3 }
.node text { font-size: 12px } .edge { stroke: #9aa3b5; fill: none; marker-end: url(#arrow) }
.error { background: #fde8e8; color: #8a1c1c; padding: 8px 20px } .badge { font-size: 11px; padding: 1px 6px; border-radius: 8px; color: white }
.badge.fresh { background: #2e9e5b } .badge.stale { background: #d08a1c } .badge.running { background: #2f6fd6 } .badge.remote { background: #7b5cd6 }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0 } td, th { border-bottom: 1px solid #e3e6ec; padding: 3px 8px; text-align: left; vertical-align: top; max-width: 420px }
td.wrong { background: #fde8e8 } .reasons { color: #a35f00 } h2 { font-size: 15px; margin: 4px 0 8px } h3 { font-size: 13px; margin: 12px 0 4px }
`

const renderDag = (stages: ReadonlyArray<StageSummary>): SVGSVGElement => {
  // Layers by depth (the longest path from a stage without needs), in file order within one.
  const depth = new Map<string, number>()
  for (const stage of stages) depth.set(stage.id, Math.max(0, ...stage.needs.map((n) => (depth.get(n) ?? 0) + 1)))
  const layers = new Map<number, Array<StageSummary>>()
  for (const stage of stages) layers.set(depth.get(stage.id)!, [...(layers.get(depth.get(stage.id)!) ?? []), stage])
  const W = 180, H = 44, GX = 40, GY = 28
  const pos = new Map<string, { x: number; y: number }>()
  for (const [d, layer] of layers) layer.forEach((stage, i) => pos.set(stage.id, { x: 10 + i * (W + GX), y: 10 + d * (H + GY) }))
  const width = 20 + Math.max(...[...layers.values()].map((l) => l.length)) * (W + GX)
  const height = 20 + layers.size * (H + GY)
  const ns = "http://www.w3.org/2000/svg"
  const svg = document.createElementNS(ns, "svg")
  svg.setAttribute("width", String(width))
  svg.setAttribute("height", String(height))
  svg.innerHTML = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#9aa3b5"/></marker></defs>`
  for (const stage of stages) {
    for (const need of stage.needs) {
      const a = pos.get(need)!, b = pos.get(stage.id)!
      const path = document.createElementNS(ns, "path")
      path.setAttribute("class", "edge")
      path.setAttribute("d", `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${a.y + H + GY / 2} ${b.x + W / 2},${b.y - GY / 2} ${b.x + W / 2},${b.y}`)
      svg.append(path)
    }
  }
  for (const stage of stages) {
    const { x, y } = pos.get(stage.id)!
    const g = document.createElementNS(ns, "g")
    g.setAttribute("class", `node ${stateOf(stage)}${stage.id === selected ? " selected" : ""}`)
    g.setAttribute("data-stage", stage.id)
    g.setAttribute("data-state", stateOf(stage))
    g.setAttribute("transform", `translate(${x},${y})`)
    g.innerHTML = `<rect width="${W}" height="${H}"></rect><text x="10" y="18" font-weight="600"></text><text x="10" y="34" fill="#5b6477"></text>`
    const [name, kind] = g.querySelectorAll("text")
    name!.textContent = stage.id.length > 26 ? `${stage.id.slice(0, 25)}…` : stage.id
    kind!.textContent = `${stage.uses} · ${stateOf(stage)}${progressOf(stage)}`
    const title = document.createElementNS(ns, "title")
    title.textContent = `${stage.id}: ${stateOf(stage)}${stage.reasons.length > 0 ? ` (${stage.reasons.join("; ")})` : ""}`
    g.append(title)
    g.addEventListener("click", () => select(stage.id))
    svg.append(g)
  }
  return svg
}

const table = (rows: ReadonlyArray<Record<string, unknown>>, columns: ReadonlyArray<string>, mark?: (row: Record<string, unknown>) => boolean) =>
  h("table", {}, h("tr", {}, ...columns.map((c) => h("th", {}, c))), ...rows.map((row) => {
    const tr = h("tr", {}, ...columns.map((c) => h("td", mark?.(row) ? { class: "wrong" } : {}, cellText(row[c]))))
    return tr
  }))

/** A cell: numbers to 5 significant digits (integers whole), objects as JSON. */
const cellText = (value: unknown): string =>
  typeof value === "number" ? (Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(5)))) : typeof value === "object" && value !== null ? JSON.stringify(value) : String(value ?? "")

const CURVES = ["loss", "eval_loss", "learning_rate", "grad_norm"]
const COLOURS = ["#2f6fd6", "#d08a1c", "#2e9e5b", "#c0392b", "#7b5cd6", "#16a2b8", "#8a6d3b", "#e84393"]

/** Overlaid trainings (a sweep's variants) or one: a chart per quantity, a series per training. */
let overlay: ReadonlyArray<{ readonly label: string; readonly log: ReadonlyArray<Record<string, unknown>> }> | undefined

const curves = (runs: ReadonlyArray<{ readonly label: string; readonly log: ReadonlyArray<Record<string, unknown>> }>): HTMLElement => {
  const box = h("div", { id: "curves" })
  for (const key of CURVES) {
    const per = runs.map((run) => run.log.filter((row) => typeof row[key] === "number" && typeof row.step === "number"))
    const total = per.reduce((sum, points) => sum + points.length, 0)
    if (total === 0) continue
    const steps = [...new Set(per.flatMap((points) => points.map((r) => r.step as number)))].sort((a, b) => a - b)
    const columns = per.map((points) => {
      const at = new Map(points.map((r) => [r.step as number, r[key] as number]))
      return steps.map((step) => at.get(step) ?? null)
    })
    const holder = h("div", { class: "curve", "data-curve": key, "data-points": String(total), "data-series": String(runs.length) })
    box.append(holder)
    queueMicrotask(() =>
      new uPlot({
        title: key,
        width: Math.min(560, (app.clientWidth || 900) * 0.5),
        height: 180,
        scales: { x: { time: false } },
        series: [
          { label: "step" },
          ...runs.map((run, i) => ({ label: run.label, stroke: runs.length === 1 && key === "eval_loss" ? "#d08a1c" : COLOURS[i % COLOURS.length]!, width: 2, spanGaps: true, points: { show: steps.length < 40 } }))
        ]
      }, [steps, ...columns], holder)
    )
  }
  return box
}

const toggleOverlay = async (ids: ReadonlyArray<string>) => {
  overlay = overlay !== undefined
    ? undefined
    : await Promise.all(ids.map(async (id) => ({ label: id, log: ((await (await fetch(`/api/stages/${encodeURIComponent(id)}`)).json()) as Detail).log })))
  render()
}

const renderDetail = (): HTMLElement => {
  if (detail === undefined) return h("section", { id: "detail" }, h("p", {}, "Click a stage to see it."))
  const d = detail
  const parts: Array<HTMLElement> = [
    h("h2", {}, d.id, " ", h("span", { class: `badge ${stateOf(d)}`, id: "detail-state" }, stateOf(d))),
    h("div", {}, `${d.uses} · fingerprint ${d.fingerprint?.slice(0, 12) ?? "-"}${d.durationMs === null ? "" : ` · ran in ${(d.durationMs / 1000).toFixed(1)} s`}${d.createdAt === null ? "" : ` · ${new Date(d.createdAt).toLocaleString()}`}`),
    ...(d.reasons.length > 0 ? [h("p", { class: "reasons", id: "detail-reasons" }, `stale: ${d.reasons.join("; ")}`)] : []),
    h("div", { id: "detail-io" }, `reads: ${d.needs.join(", ") || "nothing upstream"}`,
      ...(d.outputs === null ? [] : [h("br"), `wrote: ${[
        ...(d.outputs.dataset === undefined ? [] : [`dataset (${d.outputs.dataset.join(", ")})`]),
        ...(d.outputs.model === undefined ? [] : ["a model folder"]),
        ...(d.outputs.files === undefined ? [] : [`files (${d.outputs.files.join(", ")})`])
      ].join("; ")} in ${d.outputs.entry}`])),
    h("div", {}, h("button", { id: "run-stage" }, `Run ${d.id}`))
  ]
  parts.push(h("h3", {}, "Params"), table(Object.entries(d.params).map(([k, v]) => ({ param: k, value: v })), ["param", "value"]))
  const names = Object.keys(d.metrics)
  const compared = names.filter((k) => !k.startsWith("base_") && names.includes(`base_${k}`))
  if (compared.length > 0) {
    // Evaluation beside the base model: before and after, side by side.
    const rows = compared.map((k) => ({ metric: k, before: d.metrics[`base_${k}`], after: d.metrics[k] }))
    const rest = names.filter((k) => !compared.includes(k) && !compared.some((c) => k === `base_${c}`)).map((k) => ({ metric: k, before: "", after: d.metrics[k] }))
    const before = table([...rows, ...rest], ["metric", "before", "after"])
    before.id = "before-after"
    parts.push(h("h3", {}, "Metrics (the base model, then this one)"), before)
  } else if (names.length > 0) {
    parts.push(h("h3", {}, "Metrics"), table(names.map((k) => ({ metric: k, value: d.metrics[k] })), ["metric", "value"]))
  }
  if (d.log.length > 0) parts.push(h("h3", {}, "Training"), overlay === undefined ? curves([{ label: d.id, log: d.log }]) : curves(overlay))
  const base = d.id.includes("[") ? d.id.slice(0, d.id.indexOf("[")) : undefined
  const siblings = base === undefined ? [] : (state?.stages ?? []).filter((s) => s.id.startsWith(`${base}[`))
  if (d.log.length > 0 && siblings.length > 1) {
    const button = h("button", { id: "overlay" }, overlay === undefined ? `Overlay the ${siblings.length} variants of ${base}` : "Show this variant alone")
    button.addEventListener("click", () => void toggleOverlay(siblings.map((s) => s.id)))
    parts.push(button)
  }
  for (const [split, data] of Object.entries(d.splits)) {
    const examples = split === "examples"
    const rows = examples && wrongOnly ? data.head.filter((r) => r.correct === false || r.base_correct === false) : data.head
    const header = h("h3", {}, `${split} (${data.rows} rows${examples ? "; before and after" : ""})`)
    if (examples) {
      const toggle = h("input", { type: "checkbox", id: "wrong-only", ...(wrongOnly ? { checked: "" } : {}) }) as HTMLInputElement
      toggle.addEventListener("change", () => {
        wrongOnly = toggle.checked
        render()
      })
      header.append(" ", h("label", {}, toggle, " wrong answers only"))
    }
    parts.push(header, table(rows, data.columns, examples ? (r) => r.correct === false : undefined))
    parts[parts.length - 1]!.setAttribute("data-split", split)
  }
  const section = h("section", { id: "detail" }, ...parts)
  section.querySelector("#run-stage")!.addEventListener("click", () => void run(d.id))
  return section
}

const seconds = (ms: number) => (ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`)

/** The runs, latest first: when, what ran and what was cached, how long. */
const renderHistory = (): HTMLElement => {
  const runs = state?.history ?? []
  const rows = runs.map((run) => ({
    started: new Date(run.startedAt).toLocaleString(),
    took: seconds(Date.parse(run.finishedAt) - Date.parse(run.startedAt)),
    ran: run.stages.filter((s) => s.status === "ran").map((s) => `${s.id} (${seconds(s.durationMs)})`).join(", ") || "-",
    cached: String(run.stages.filter((s) => s.status === "cached").length),
    failed: run.stages.filter((s) => s.status === "failed").map((s) => s.id).join(", ") || "-"
  }))
  const section = h("section", { id: "runs" }, h("h2", {}, "Runs"))
  section.append(rows.length === 0 ? h("p", {}, "No run recorded yet.") : table(rows, ["started", "took", "ran", "cached", "failed"]))
  return section
}

const render = () => {
  if (state === undefined) return
  app.replaceChildren()
  const style = h("style", {}, STYLE)
  const runAll = h("button", { id: "run-all" }, state.running === null ? "Run" : "Running…")
  runAll.addEventListener("click", () => void run(undefined))
  app.append(
    style,
    h("header", {}, h("h1", {}, state.name), h("span", { class: "file" }, state.file), runAll),
    ...(state.lastRunError === null ? [] : [h("div", { id: "run-error", class: "error" }, `The last run from this page failed: ${state.lastRunError}`)]),
    h("main", {}, h("div", {}, h("section", { id: "dag" }, h("h2", {}, "Stages"), renderDag(state.stages)), renderHistory()), renderDetail())
  )
}

const run = async (stage: string | undefined) => {
  await fetch("/api/run", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(stage === undefined ? {} : { stage }) })
  await refresh()
}

const select = async (id: string) => {
  selected = id
  overlay = undefined
  detail = await (await fetch(`/api/stages/${encodeURIComponent(id)}`)).json() as Detail
  render()
}

const refresh = async () => {
  const next = await (await fetch("/api/state")).json() as State
  const key = JSON.stringify(next)
  state = next
  if (key === lastKey) return
  lastKey = key
  if (selected !== undefined) detail = await (await fetch(`/api/stages/${encodeURIComponent(selected)}`)).json() as Detail
  render()
}

void refresh()
setInterval(() => void refresh(), 1000)
