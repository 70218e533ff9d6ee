/**
 * A small SVG line chart for loss curves: a few hundred points, a few series, no
 * interaction. Hand-written because a charting library would pull megabytes of
 * code into a CLI for one static picture.
 */
export interface Series {
  readonly name: string
  readonly color: string
  readonly points: ReadonlyArray<readonly [number, number]>
}

const WIDTH = 720
const HEIGHT = 400
const MARGIN = { left: 64, right: 24, top: 36, bottom: 48 }

const niceTicks = (low: number, high: number, count: number): ReadonlyArray<number> => {
  const span = high - low || Math.abs(high) || 1
  const raw = span / count
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw
  const ticks: Array<number> = []
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)))
  return ticks
}

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;")

export const lineChart = (title: string, xLabel: string, yLabel: string, series: ReadonlyArray<Series>): string => {
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
  const xs = all.map(([x]) => x)
  const ys = all.map(([, y]) => y)
  const [x0, x1] = all.length > 0 ? [Math.min(...xs), Math.max(...xs)] : [0, 1]
  const [y0, y1] = all.length > 0 ? [Math.min(0, ...ys), Math.max(...ys)] : [0, 1]
  const plotW = WIDTH - MARGIN.left - MARGIN.right
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom
  const sx = (x: number) => MARGIN.left + ((x - x0) / (x1 - x0 || 1)) * plotW
  const sy = (y: number) => MARGIN.top + plotH - ((y - y0) / (y1 - y0 || 1)) * plotH
  const xTicks = niceTicks(x0, x1, 6)
  const yTicks = niceTicks(y0, y1, 5)
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="20" text-anchor="middle" font-size="14">${escape(title)}</text>`,
    ...yTicks.map((t) => `<line x1="${MARGIN.left}" x2="${WIDTH - MARGIN.right}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#eee"/><text x="${MARGIN.left - 6}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end">${t}</text>`),
    ...xTicks.map((t) => `<text x="${sx(t).toFixed(1)}" y="${HEIGHT - MARGIN.bottom + 16}" text-anchor="middle">${t}</text>`),
    `<line x1="${MARGIN.left}" x2="${MARGIN.left}" y1="${MARGIN.top}" y2="${HEIGHT - MARGIN.bottom}" stroke="#333"/>`,
    `<line x1="${MARGIN.left}" x2="${WIDTH - MARGIN.right}" y1="${HEIGHT - MARGIN.bottom}" y2="${HEIGHT - MARGIN.bottom}" stroke="#333"/>`,
    `<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 10}" text-anchor="middle">${escape(xLabel)}</text>`,
    `<text x="16" y="${MARGIN.top + plotH / 2}" text-anchor="middle" transform="rotate(-90 16 ${MARGIN.top + plotH / 2})">${escape(yLabel)}</text>`,
    ...series.map((s) => {
      const points = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
      const path = points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")
      const dots = points.length <= 40 ? points.map(([x, y]) => `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${s.color}"/>`).join("") : ""
      return `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${path}"/>${dots}`
    }),
    ...series.map((s, i) => `<rect x="${WIDTH - MARGIN.right - 150}" y="${MARGIN.top + 8 + i * 18}" width="12" height="12" fill="${s.color}"/><text x="${WIDTH - MARGIN.right - 132}" y="${MARGIN.top + 18 + i * 18}">${escape(s.name)}</text>`),
    "</svg>"
  ]
  return parts.join("\n")
}
