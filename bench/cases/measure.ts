/** What every benchmark case measures the same way: medians, peak memory, other processes' share of the CPU. */
import { readFileSync } from "node:fs"
import { cpus } from "node:os"

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length === 0 ? Number.NaN : sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** This process's peak resident set, in MB (worker threads included: they share it). */
export const peakRssMb = (): number => Math.round(process.resourceUsage().maxRSS / 1024 * 10) / 10

/** A small seeded generator of floats in [0, 1) (SplitMix32): benchmark data, not statistics. */
export const splitMix = (seed: number) => {
  let state = seed >>> 0
  return (): number => {
    state = (state + 0x9e3779b9) >>> 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return ((z ^ (z >>> 16)) >>> 0) / 2 ** 32
  }
}

const machineJiffies = (): { busy: number; total: number } => {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number)
  const total = fields.reduce((a, b) => a + b, 0)
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total }
}

/**
 * The share of the machine that other processes used while this one measured, as
 * bench_torch.py reports it: 0.5 is a whole core of two. Above about 0.1 the figure
 * was taken on a contended machine.
 */
export class CpuMeter {
  private readonly start = machineJiffies()
  private readonly self = process.cpuUsage()

  othersFraction(): number {
    const end = machineJiffies()
    const used = process.cpuUsage(this.self)
    const busy = end.busy - this.start.busy
    const total = end.total - this.start.total
    // Jiffies are 1/100 s on Linux; cpuUsage is in µs. Total jiffies count every core.
    const mine = (used.user + used.system) / 1e4
    return Math.round(Math.max(0, (busy - mine) / Math.max(1, total)) * 1000) / 1000
  }
}

export const coreCount = (): number => cpus().length
