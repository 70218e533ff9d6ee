/**
 * The stage graph: `needs` edges, checked for dangling names and cycles before
 * anything runs, ordered topologically (ties keep file order), and cut down to
 * what `--only` / `--until` select.
 */
import type { Diagnostic } from "./errors.ts"
import { suggestion } from "./errors.ts"
import type { Locate } from "./diagnostics.ts"

export interface Node {
  readonly id: string
  readonly needs: ReadonlyArray<string>
}

/** Dangling `needs` and cycles, as located diagnostics. */
export const checkGraph = (nodes: ReadonlyArray<Node>, locate: Locate): ReadonlyArray<Diagnostic> => {
  const ids = new Set(nodes.map((n) => n.id))
  const problems: Array<Diagnostic> = []
  for (const node of nodes) {
    node.needs.forEach((need, i) => {
      if (need === node.id) {
        problems.push({ location: locate(["stages", node.id, "needs", i], "value"), path: `stages.${node.id}.needs`, message: `stage "${node.id}" needs itself` })
      } else if (!ids.has(need)) {
        problems.push({
          location: locate(["stages", node.id, "needs", i], "value"),
          path: `stages.${node.id}.needs`,
          message: `no stage named "${need}"${suggestion(need, ids)}`
        })
      }
    })
  }
  if (problems.length > 0) return problems
  const cycle = findCycle(nodes)
  if (cycle !== undefined) {
    problems.push({
      location: locate(["stages", cycle[0]!, "needs"], "value"),
      path: `stages.${cycle[0]}.needs`,
      message: `the stages form a cycle: ${cycle.join(" → ")}`
    })
  }
  return problems
}

/** A cycle as `[a, b, c, a]` (each needs the next), or undefined. */
const findCycle = (nodes: ReadonlyArray<Node>): ReadonlyArray<string> | undefined => {
  const byId = new Map(nodes.map((n) => [n.id, n]))
  const state = new Map<string, "visiting" | "done">()
  const stack: Array<string> = []
  const visit = (id: string): ReadonlyArray<string> | undefined => {
    if (state.get(id) === "done") return undefined
    if (state.get(id) === "visiting") return [...stack.slice(stack.indexOf(id)), id]
    state.set(id, "visiting")
    stack.push(id)
    for (const need of byId.get(id)?.needs ?? []) {
      const cycle = visit(need)
      if (cycle) return cycle
    }
    stack.pop()
    state.set(id, "done")
    return undefined
  }
  for (const node of nodes) {
    const cycle = visit(node.id)
    if (cycle) return cycle
  }
  return undefined
}

/** Topological order: every stage after its needs; independent stages keep file order. */
export const topoOrder = <N extends Node>(nodes: ReadonlyArray<N>): ReadonlyArray<N> => {
  const placed = new Set<string>()
  const order: Array<N> = []
  while (order.length < nodes.length) {
    const next = nodes.find((n) => !placed.has(n.id) && n.needs.every((need) => placed.has(need)))
    if (next === undefined) throw new Error("topoOrder called on a graph with a cycle")
    placed.add(next.id)
    order.push(next)
  }
  return order
}

/** `id` and everything it needs, transitively. */
export const ancestorsOf = (nodes: ReadonlyArray<Node>, id: string): ReadonlySet<string> => {
  const byId = new Map(nodes.map((n) => [n.id, n]))
  const seen = new Set<string>()
  const walk = (current: string) => {
    if (seen.has(current)) return
    seen.add(current)
    for (const need of byId.get(current)?.needs ?? []) walk(need)
  }
  walk(id)
  return seen
}

export const renderText = (nodes: ReadonlyArray<Node & { readonly uses: string }>): string =>
  nodes.map((n) => `${n.id} (${n.uses})${n.needs.length > 0 ? ` ← ${n.needs.join(", ")}` : ""}`).join("\n")

export const renderMermaid = (nodes: ReadonlyArray<Node & { readonly uses: string }>): string =>
  [
    "graph TD",
    ...nodes.map((n) => `  ${n.id}["${n.id}<br/><small>${n.uses.replace(/"/g, "'")}</small>"]`),
    ...nodes.flatMap((n) => n.needs.map((need) => `  ${need} --> ${n.id}`))
  ].join("\n")

export const renderDot = (nodes: ReadonlyArray<Node & { readonly uses: string }>): string =>
  [
    "digraph pipeline {",
    "  rankdir=LR;",
    "  node [shape=box];",
    ...nodes.map((n) => `  "${n.id}" [label="${n.id}\\n${n.uses.replace(/"/g, '\\"')}"];`),
    ...nodes.flatMap((n) => n.needs.map((need) => `  "${need}" -> "${n.id}";`)),
    "}"
  ].join("\n")
