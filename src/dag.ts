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

/** The `ids` and everything they need, transitively. */
export const ancestorsOf = (nodes: ReadonlyArray<Node>, ...ids: ReadonlyArray<string>): ReadonlySet<string> => {
  const byId = new Map(nodes.map((n) => [n.id, n]))
  const seen = new Set<string>()
  const walk = (current: string) => {
    if (seen.has(current)) return
    seen.add(current)
    for (const need of byId.get(current)?.needs ?? []) walk(need)
  }
  ids.forEach(walk)
  return seen
}

export const renderText = (nodes: ReadonlyArray<Node & { readonly uses: string }>): string =>
  nodes.map((n) => `${n.id} (${n.uses})${n.needs.length > 0 ? ` ← ${n.needs.join(", ")}` : ""}`).join("\n")

/**
 * Mermaid node ids are words: a sweep's variant (`train[lr=2e-5]`) gets one of its own,
 * its id shown as the label. A quote in a label is written as an entity.
 */
const mermaidIds = (nodes: ReadonlyArray<Node>): ReadonlyMap<string, string> => {
  const taken = new Set(nodes.map((n) => n.id).filter((id) => /^[A-Za-z_][A-Za-z0-9_-]*$/.test(id)))
  return new Map(nodes.map((n) => {
    if (taken.has(n.id)) return [n.id, n.id]
    let safe = n.id.replace(/[^A-Za-z0-9_-]+/g, "_").replace(/_+$/, "")
    while (taken.has(safe)) safe = `${safe}_`
    taken.add(safe)
    return [n.id, safe]
  }))
}

export const renderMermaid = (nodes: ReadonlyArray<Node & { readonly uses: string }>): string => {
  const ids = mermaidIds(nodes)
  const label = (text: string) => text.replace(/"/g, "#quot;")
  return [
    "graph TD",
    ...nodes.map((n) => `  ${ids.get(n.id)}["${label(n.id)}<br/><small>${n.uses.replace(/"/g, "'")}</small>"]`),
    ...nodes.flatMap((n) => n.needs.map((need) => `  ${ids.get(need) ?? need} --> ${ids.get(n.id)}`))
  ].join("\n")
}

/** A dot string's contents: backslashes and quotes escaped. */
const dotString = (text: string): string => text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')

export const renderDot = (nodes: ReadonlyArray<Node & { readonly uses: string }>): string =>
  [
    "digraph pipeline {",
    "  rankdir=LR;",
    "  node [shape=box];",
    ...nodes.map((n) => `  "${dotString(n.id)}" [label="${dotString(n.id)}\\n${dotString(n.uses)}"];`),
    ...nodes.flatMap((n) => n.needs.map((need) => `  "${dotString(need)}" -> "${dotString(n.id)}";`)),
    "}"
  ].join("\n")
