/**
 * The property test can be replayed: its cases depend on the seed alone, the seed is
 * printed, and PROPERTY_SEED gives it back (a bad one is refused, not replaced).
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { mutatedPipeline, propertySeed } from "./support/property-cases.ts"

const cases = (seed: number) => fc.sample(mutatedPipeline, { seed, numRuns: 40 })

describe("the property test's seed", () => {
  it("is PROPERTY_SEED when set, negative and extreme values included", () => {
    expect(propertySeed({ PROPERTY_SEED: "1234567" })).toBe(1234567)
    expect(propertySeed({ PROPERTY_SEED: " -42 " })).toBe(-42)
    expect(propertySeed({ PROPERTY_SEED: "2147483647" })).toBe(2147483647)
    expect(propertySeed({ PROPERTY_SEED: "-2147483648" })).toBe(-2147483648)
  })

  it("is a new 31-bit integer when PROPERTY_SEED is unset or empty", () => {
    expect(propertySeed({}, 5_000_000_000_123)).toBe(5_000_000_000_123 % 2 ** 31)
    expect(propertySeed({ PROPERTY_SEED: "" }, 77)).toBe(77)
    const fresh = propertySeed({})
    expect(Number.isSafeInteger(fresh) && fresh >= 0 && fresh < 2 ** 31).toBe(true)
  })

  it("refuses a PROPERTY_SEED that is not an integer fast-check takes, naming the variable", () => {
    for (const bad of ["abc", "1.5", "1e3", "0x10", "2147483648", "-2147483649", "99999999999999999999"]) {
      expect(() => propertySeed({ PROPERTY_SEED: bad }), bad).toThrow(/^PROPERTY_SEED must be an integer .*, got "/)
    }
  })

  it("replays the same cases, in the same order, and another seed gives others", () => {
    const first = cases(20261130)
    expect(cases(20261130)).toEqual(first)
    expect(new Set(first).size).toBeGreaterThan(20)
    expect(cases(20261131)).not.toEqual(first)
  })
})
