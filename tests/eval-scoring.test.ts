import { describe, expect, it } from "vitest"
import { extractAnswer, isCorrect } from "../src/eval/gsm8k.ts"
import { lineChart } from "../src/plot.ts"

describe("GSM8K answer extraction", () => {
  it("reads the number after ####, tolerating commas, currency and trailing periods", () => {
    expect(extractAnswer("She has 5 + 5 = <<5+5=10>>10 apples.\n#### 10")).toBe("10")
    expect(extractAnswer("#### 1,234.")).toBe("1234")
    expect(extractAnswer("#### $18.50 per hour")).toBe("18.5")
    expect(extractAnswer("#### -3")).toBe("-3")
    expect(extractAnswer("The answer is 7, then 9.")).toBe("9")
    expect(extractAnswer("no number here")).toBeUndefined()
  })

  it("scores against the reference answer", () => {
    const reference = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n#### 18"
    expect(isCorrect("9 * 2 = 18\n#### 18.", reference)).toBe(true)
    expect(isCorrect("#### 18.00", reference)).toBe(true)
    expect(isCorrect("#### 17", reference)).toBe(false)
    expect(isCorrect("", reference)).toBe(false)
  })
})

describe("loss chart", () => {
  it("draws each series as a polyline within the canvas", () => {
    const svg = lineChart("Loss", "step", "loss", [
      { name: "train", color: "#1f77b4", points: [[1, 2.5], [2, 2.0], [3, 1.5]] },
      { name: "eval", color: "#d62728", points: [[2, 2.2], [3, 1.8]] }
    ])
    expect(svg.startsWith("<svg")).toBe(true)
    expect(svg.match(/<polyline/g)).toHaveLength(2)
    const coordinates = [...svg.matchAll(/points="([^"]+)"/g)].flatMap((m) => m[1]!.split(" ").map((p) => p.split(",").map(Number)))
    for (const [x, y] of coordinates) {
      expect(x).toBeGreaterThanOrEqual(0)
      expect(x).toBeLessThanOrEqual(720)
      expect(y).toBeGreaterThanOrEqual(0)
      expect(y).toBeLessThanOrEqual(400)
    }
  })
})
