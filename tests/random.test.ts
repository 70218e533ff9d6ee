/**
 * Golden values come from NumPy 2.4 (python3 on a dev machine; CI has no NumPy), so these
 * tests pin `src/random.ts` to NumPy's exact streams. Each block names the command that
 * produced its literals, with `import numpy as np` (and `import hashlib` for the digests).
 */
import { createHash } from "node:crypto"
import { describe, expect, it } from "vitest"
import { Pcg64, permutation, randomInterval, seedSequenceState } from "../src/random.ts"

const sha256 = (values: Uint32Array): string =>
  createHash("sha256").update(Buffer.from(values.buffer, values.byteOffset, values.byteLength)).digest("hex")

const isPermutation = (values: Uint32Array): boolean => {
  const seen = new Uint8Array(values.length)
  for (const v of values) {
    if (v >= values.length || seen[v] === 1) return false
    seen[v] = 1
  }
  return true
}

describe("seedSequenceState", () => {
  it("matches SeedSequence.generate_state", () => {
    // np.random.SeedSequence(42).generate_state(4).tolist()
    expect(Array.from(seedSequenceState(42, 4))).toEqual([3444837047, 2669555309, 2046530742, 3581440988])
    // np.random.SeedSequence(0).generate_state(8).tolist()
    expect(Array.from(seedSequenceState(0n, 8))).toEqual([2968811710, 3677149159, 745650761, 2884920346, 2642120001, 549907821, 574372308, 742431198])
  })

  it("mixes entropy longer than the 128-bit pool", () => {
    // np.random.SeedSequence(2**160 + 12345).generate_state(8).tolist()
    expect(Array.from(seedSequenceState(2n ** 160n + 12345n, 8))).toEqual(
      [3776034388, 2666190566, 3527492146, 3660274090, 3455369329, 48915318, 1568773970, 3387381382]
    )
  })

  it("rejects negative and fractional seeds", () => {
    expect(() => seedSequenceState(-1, 4)).toThrow(RangeError)
    expect(() => seedSequenceState(1.5, 4)).toThrow(RangeError)
  })
})

describe("Pcg64", () => {
  it("seeds like np.random.PCG64(seed)", () => {
    // np.random.PCG64(42).state["state"]
    expect(Pcg64.fromSeed(42).state).toEqual({
      state: 0xcea44f6798798f2aacbc7c9d68860ac8n,
      inc: 0xfa505436c9a8416e66caf2e28d25abffn
    })
  })

  it("produces PCG64.random_raw", () => {
    // [hex(x) for x in np.random.PCG64(42).random_raw(5)]
    const rng = Pcg64.fromSeed(42)
    expect(Array.from({ length: 5 }, () => rng.nextUint64())).toEqual([
      0xc621fbcd16d92688n,
      0x705a5661a791ffc1n,
      0xdbcd12c26eda1624n,
      0xb286b60e1600888dn,
      0x181c01b5339381ebn
    ])
    // [hex(x) for x in np.random.PCG64(2**40 + 3).random_raw(3)]
    const big = Pcg64.fromSeed(2 ** 40 + 3)
    expect([big.nextUint64(), big.nextUint64(), big.nextUint64()]).toEqual([0xc60e533fbbb0872cn, 0xfef0825f71d66341n, 0x792240db6171ac88n])
  })

  it("buffers 32-bit draws like the C bitgen_t next_uint32", () => {
    // bg = np.random.PCG64(42); c = bg.ctypes; [c.next_uint32(c.state_address) for _ in range(6)]
    const rng = Pcg64.fromSeed(42)
    expect(Array.from({ length: 6 }, () => rng.nextUint32())).toEqual([383329928, 3324115917, 2811363265, 1884968545, 1859786276, 3687649986])
  })

  it("keeps the buffered half across 64-bit draws", () => {
    // bg = np.random.PCG64(42); c = bg.ctypes; a = c.state_address
    // [c.next_uint32(a), c.next_uint64(a), c.next_uint32(a), c.next_uint32(a), c.next_uint32(a)]
    const rng = Pcg64.fromSeed(42)
    expect([rng.nextUint32(), rng.nextUint64(), rng.nextUint32(), rng.nextUint32(), rng.nextUint32()]).toEqual([
      383329928,
      0x705a5661a791ffc1n,
      3324115917,
      1859786276,
      3687649986
    ])
  })
})

// Generator.integers uses Lemire's method, not random_interval, so it cannot serve as a
// reference. The legacy RandomState over the same PCG64 draws with masked rejection on the
// same 32/64-bit split, which is exactly random_interval's stream:
// np.random.RandomState(np.random.PCG64(seed)).randint(0, max + 1, size=6, dtype=np.uint64).tolist()
const intervalCases: ReadonlyArray<readonly [number, bigint, ReadonlyArray<bigint>]> = [
  [42, 0n, [0n, 0n, 0n, 0n, 0n, 0n]],
  [42, 10n, [8n, 1n, 1n, 4n, 2n, 5n]],
  [0, 1000n, [607n, 975n, 801n, 504n, 184n, 425n]],
  [7, 2n ** 32n - 1n, [4058335883n, 2684764585n, 2938530453n, 3853503932n, 2483747170n, 3331544671n]],
  [7, 2n ** 32n, [2938530453n, 3919686768n, 3506691144n, 1467175557n, 2188059499n, 3007655863n]],
  [0, 2n ** 40n + 5n, [516148842811n, 32469598189n, 449557991600n, 822031611376n, 496302003487n, 317168625574n]],
  [42, 2n ** 63n + 12345n, [8095878257575067585n, 1737265434024182251n, 2363279394319028499n, 8308154130757172590n, 6840016256055578665n, 8179548244416740899n]],
  [3, 2n ** 64n - 1n, [1579948266424812280n, 4368382809143759861n, 14780904992460893238n, 10738994088709064484n, 1736366973414412046n, 7989781817971124487n]],
]

describe("randomInterval", () => {
  it.each(intervalCases)("seed %s, max %s", (seed, max, expected) => {
    const rng = Pcg64.fromSeed(seed)
    expect(Array.from({ length: expected.length }, () => randomInterval(rng, max))).toEqual(expected)
  })

  it("draws nothing when max is 0", () => {
    const rng = Pcg64.fromSeed(42)
    randomInterval(rng, 0n)
    expect(rng.nextUint64()).toBe(0xc621fbcd16d92688n)
  })
})

// np.random.default_rng(seed).permutation(n).tolist()
const smallCases: ReadonlyArray<readonly [number | bigint, number, ReadonlyArray<number>]> = [
  [0, 1, [0]],
  [0, 2, [0, 1]],
  [0, 10, [4, 6, 2, 7, 3, 5, 9, 0, 8, 1]],
  [0, 100, [82, 36, 20, 5, 93, 16, 94, 52, 72, 90, 83, 13, 81, 37, 11, 10, 75, 8, 27, 9, 97, 23, 22, 19, 50, 98, 85, 44, 71, 4, 25, 70, 34, 39, 64, 57, 65, 42, 66, 15, 30, 2, 35, 86, 43, 17, 74, 28, 87, 18, 80, 3, 1, 55, 53, 24, 68, 21, 47, 0, 60, 6, 62, 67, 45, 84, 26, 51, 49, 91, 92, 99, 40, 61, 12, 32, 96, 46, 58, 14, 73, 38, 88, 31, 89, 48, 77, 76, 7, 63, 69, 78, 59, 54, 29, 41, 56, 33, 79, 95]],
  [42, 1, [0]],
  [42, 2, [1, 0]],
  [42, 10, [5, 6, 0, 7, 3, 2, 4, 9, 1, 8]],
  [42, 100, [59, 21, 56, 18, 33, 42, 50, 27, 92, 71, 2, 25, 24, 52, 81, 99, 51, 61, 4, 97, 94, 37, 28, 80, 7, 57, 79, 26, 76, 78, 38, 0, 86, 46, 10, 29, 70, 45, 17, 39, 91, 40, 89, 5, 68, 1, 95, 84, 63, 3, 83, 93, 20, 87, 43, 73, 32, 75, 23, 96, 69, 15, 48, 55, 60, 9, 62, 31, 72, 16, 44, 82, 67, 34, 30, 58, 74, 88, 98, 54, 49, 6, 90, 11, 85, 41, 22, 19, 35, 64, 47, 12, 53, 14, 13, 66, 36, 65, 77, 8]],
  [7, 1, [0]],
  [7, 2, [0, 1]],
  [7, 10, [8, 0, 7, 1, 3, 6, 2, 4, 5, 9]],
  [7, 100, [88, 42, 26, 50, 54, 70, 4, 53, 24, 32, 19, 10, 1, 2, 94, 91, 68, 23, 46, 40, 16, 93, 48, 73, 80, 36, 28, 12, 7, 96, 35, 61, 44, 17, 6, 56, 45, 97, 29, 37, 77, 58, 0, 82, 74, 78, 79, 20, 39, 98, 75, 67, 57, 51, 64, 14, 92, 8, 49, 22, 85, 47, 65, 90, 83, 62, 99, 89, 27, 63, 76, 9, 3, 55, 59, 84, 86, 13, 81, 30, 18, 31, 34, 5, 72, 71, 33, 15, 38, 87, 52, 25, 69, 43, 66, 95, 60, 21, 41, 11]],
  [2n ** 40n + 3n, 1, [0]],
  [2n ** 40n + 3n, 2, [1, 0]],
  [2n ** 40n + 3n, 10, [2, 4, 6, 5, 7, 9, 0, 3, 8, 1]],
  [2n ** 40n + 3n, 100, [41, 36, 0, 81, 69, 23, 77, 2, 24, 68, 26, 5, 4, 16, 97, 98, 92, 27, 22, 9, 35, 18, 37, 60, 38, 66, 43, 48, 86, 75, 31, 70, 15, 85, 96, 6, 29, 50, 11, 13, 40, 51, 80, 19, 20, 53, 83, 32, 55, 54, 78, 62, 58, 42, 25, 12, 71, 73, 88, 67, 89, 87, 74, 49, 82, 28, 56, 99, 30, 93, 72, 76, 39, 14, 7, 57, 34, 59, 1, 21, 10, 47, 45, 84, 33, 46, 94, 61, 52, 90, 3, 79, 17, 64, 91, 8, 95, 65, 63, 44]],
]

// p = np.random.default_rng(seed).permutation(7473)
// hashlib.sha256(p.astype("<u4").tobytes()).hexdigest(), p[:20].tolist(), p[-20:].tolist()
const largeCases: ReadonlyArray<{
  readonly seed: number | bigint
  readonly sha256: string
  readonly first: ReadonlyArray<number>
  readonly last: ReadonlyArray<number>
}> = [
  {
    seed: 0,
    sha256: "a1f5a510adbda2852b5cb5e734a066cb169a75d2cef608413dc1d10f60268efb",
    first: [5441, 2360, 5646, 1485, 1469, 824, 5624, 3950, 750, 2125, 6445, 2016, 49, 4199, 1779, 2888, 1543, 7435, 4386, 4337],
    last: [6248, 4272, 1869, 5964, 2055, 487, 2399, 6725, 7025, 4735, 6521, 7246, 6776, 4411, 1974, 4125, 2232, 5921, 3023, 607]
  },
  {
    seed: 42,
    sha256: "f51e81f35de239a95d43cf69488da602a3929f4d8a0d11b48eaf9a8b90ad89cf",
    first: [3082, 2184, 5897, 2437, 6330, 819, 3812, 5878, 5302, 5876, 5308, 1534, 2663, 4247, 4632, 1727, 1601, 3848, 6009, 1948],
    last: [6246, 4783, 4137, 3606, 4371, 675, 5952, 3375, 1137, 749, 5004, 437, 491, 5646, 2189, 4802, 5668, 5729, 7117, 1672]
  },
  {
    seed: 7,
    sha256: "40addbe2adb80c51807bb2a6d11fc976b9906303d55871a8b38b97dfa42006da",
    first: [2137, 1875, 4385, 5740, 2710, 1004, 7316, 1832, 6076, 1395, 1818, 4369, 3548, 4497, 2178, 7077, 4053, 2555, 5544, 2429],
    last: [7240, 5575, 6433, 6494, 1679, 1757, 4390, 3184, 4823, 1844, 4761, 4421, 3499, 1858, 5727, 6498, 3516, 2709, 425, 2699]
  },
  {
    seed: 2n ** 40n + 3n,
    sha256: "dcaba85a796dc68dd532f9c9696d5a3afb6b497cae410ba5b2242ebbf1ffe1eb",
    first: [7004, 4266, 7433, 211, 2188, 1243, 3792, 6475, 5842, 2303, 1822, 790, 1218, 2944, 5550, 3977, 7079, 1921, 3289, 2027],
    last: [5153, 6118, 4641, 2350, 5583, 189, 5230, 2541, 6964, 5251, 1501, 3535, 3601, 5440, 219, 3208, 607, 833, 4927, 1836]
  },
]

describe("permutation", () => {
  it("matches default_rng(42).permutation(10)", () => {
    // np.random.default_rng(42).permutation(10).tolist()
    expect(Array.from(permutation(10, 42))).toEqual([5, 6, 0, 7, 3, 2, 4, 9, 1, 8])
  })

  it.each(smallCases)("seed %s, n %s", (seed, n, expected) => {
    expect(Array.from(permutation(n, seed))).toEqual(expected)
  })

  it.each(largeCases)("seed $seed, n 7473", ({ seed, sha256: digest, first, last }) => {
    const result = permutation(7473, seed)
    expect(isPermutation(result)).toBe(true)
    expect(Array.from(result.subarray(0, 20))).toEqual(first)
    expect(Array.from(result.subarray(-20))).toEqual(last)
    expect(sha256(result)).toBe(digest)
  })

  it("matches default_rng(42).permutation(100000)", () => {
    // p = np.random.default_rng(42).permutation(100000); hashlib.sha256(p.astype("<u4").tobytes()).hexdigest()
    expect(sha256(permutation(100_000, 42))).toBe("72ac7e5c0254568e7e2ad3125fc5f51250a25000afc744b1a34f77e57969296a")
  })

  it("handles n = 0 and rejects bad sizes", () => {
    expect(permutation(0, 42)).toEqual(new Uint32Array(0))
    expect(() => permutation(-1, 42)).toThrow(RangeError)
    expect(() => permutation(2.5, 42)).toThrow(RangeError)
  })
})
