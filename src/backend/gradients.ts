/**
 * Gradients of the kernels the model uses.
 *
 * Why: `@tensorflow/tfjs-core` registers no gradients by itself. The union package
 * `@tensorflow/tfjs` does (so they exist when tfjs-node loads), but it drags in layers,
 * converter, data and webgl. Registering the ~20 we need is small and lets the parity
 * test check every one of them. A gradient already registered is left alone.
 *
 * Each `gradFunc` returns, per input name, a thunk that gives that input's gradient.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { GradConfig, NamedAttrMap, Tensor } from "@tensorflow/tfjs-core"

/** Sums a broadcast gradient back down to the input's shape. */
const unbroadcast = (dy: Tensor, shape: ReadonlyArray<number>): Tensor => {
  const axes = tf.broadcast_util.getReductionAxes([...shape], dy.shape)
  return tf.reshape(axes.length > 0 ? tf.sum(dy, axes) : dy, [...shape])
}

const single = (dy: Tensor | Array<Tensor>): Tensor => {
  if (Array.isArray(dy)) throw new Error("expected one gradient, got several")
  return dy
}

const saved2 = (saved: Array<Tensor>): [Tensor, Tensor] => {
  const [a, b] = saved
  if (a === undefined || b === undefined) throw new Error("gradient is missing its saved inputs")
  return [a, b]
}

const saved1 = (saved: Array<Tensor>): Tensor => {
  const [x] = saved
  if (x === undefined) throw new Error("gradient is missing its saved input")
  return x
}

const reductionAxes = (attrs: NamedAttrMap, rank: number): Array<number> => {
  const axis = attrs["axis"] as number | Array<number> | null | undefined
  const list = axis === null || axis === undefined ? [...Array(rank).keys()] : Array.isArray(axis) ? axis : [axis]
  return list.map((a) => (a < 0 ? a + rank : a))
}

/** Spreads a reduced gradient back over `shape`, as a sum's gradient does. */
const spread = (dy: Tensor, axes: ReadonlyArray<number>, shape: ReadonlyArray<number>): Tensor => {
  const kept = shape.map((size, i) => (axes.includes(i) ? 1 : size))
  return tf.add(tf.reshape(dy, kept), tf.zeros([...shape]))
}

// A function, not a constant: naming the kernels touches tfjs, which loads only when used.
const configs = (): ReadonlyArray<GradConfig> => [
  {
    kernelName: tf.Add,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, saved) => {
      const [a, b] = saved2(saved)
      return { a: () => unbroadcast(single(dy), a.shape), b: () => unbroadcast(single(dy), b.shape) }
    }
  },
  {
    kernelName: tf.Sub,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, saved) => {
      const [a, b] = saved2(saved)
      return { a: () => unbroadcast(single(dy), a.shape), b: () => tf.neg(unbroadcast(single(dy), b.shape)) }
    }
  },
  {
    kernelName: tf.Multiply,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, saved) => {
      const [a, b] = saved2(saved)
      return {
        a: () => unbroadcast(tf.mul(single(dy), b), a.shape),
        b: () => unbroadcast(tf.mul(single(dy), a), b.shape)
      }
    }
  },
  {
    kernelName: tf.RealDiv,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, saved) => {
      const [a, b] = saved2(saved)
      return {
        a: () => unbroadcast(tf.div(single(dy), b), a.shape),
        b: () => unbroadcast(tf.neg(tf.div(tf.mul(single(dy), a), tf.square(b))), b.shape)
      }
    }
  },
  { kernelName: tf.Neg, gradFunc: (dy) => ({ x: () => tf.neg(single(dy)) }) },
  { kernelName: tf.Identity, gradFunc: (dy) => ({ x: () => single(dy) }) },
  { kernelName: tf.Cast, gradFunc: (dy) => ({ x: () => tf.clone(single(dy)) }) },
  {
    kernelName: tf.Reshape,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => ({ x: () => tf.reshape(single(dy), saved1(saved).shape) })
  },
  {
    kernelName: tf.Transpose,
    gradFunc: (dy, _saved, attrs) => {
      const perm = attrs["perm"] as Array<number>
      const inverse = perm.map((_, i) => perm.indexOf(i))
      return { x: () => tf.transpose(single(dy), inverse) }
    }
  },
  {
    kernelName: tf.Square,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => ({ x: () => tf.mul(single(dy), tf.mul(saved1(saved), 2)) })
  },
  {
    kernelName: tf.Rsqrt,
    inputsToSave: ["x"],
    // d/dx x^(-1/2) = -1/2 x^(-3/2)
    gradFunc: (dy, saved) => {
      const x = saved1(saved)
      return { x: () => tf.mul(single(dy), tf.mul(tf.div(tf.rsqrt(x), x), -0.5)) }
    }
  },
  {
    kernelName: tf.Sigmoid,
    outputsToSave: [true],
    gradFunc: (dy, saved) => {
      const y = saved1(saved)
      return { x: () => tf.mul(single(dy), tf.mul(y, tf.sub(1, y))) }
    }
  },
  {
    kernelName: tf.Sum,
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs) => {
      const x = saved1(saved)
      return { x: () => spread(single(dy), reductionAxes(attrs, x.rank), x.shape) }
    }
  },
  {
    kernelName: tf.Mean,
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs) => {
      const x = saved1(saved)
      const axes = reductionAxes(attrs, x.rank)
      const count = axes.reduce((n, a) => n * (x.shape[a] ?? 1), 1)
      return { x: () => tf.div(spread(single(dy), axes, x.shape), count) }
    }
  },
  {
    kernelName: tf.Softmax,
    outputsToSave: [true],
    // Softmax over the last axis: dx = y * (dy - sum(dy * y)).
    gradFunc: (dy, saved) => {
      const y = saved1(saved)
      return { logits: () => tf.mul(y, tf.sub(single(dy), tf.sum(tf.mul(single(dy), y), -1, true))) }
    }
  },
  {
    kernelName: tf.BatchMatMul,
    inputsToSave: ["a", "b"],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved2(saved)
      const g = single(dy)
      const { transposeA, transposeB } = attrs as unknown as tf.BatchMatMulAttrs
      // Only same-rank operands reach here (the model reshapes to 2D first): no batch broadcast.
      if (a.rank !== b.rank) throw new Error(`matMul gradient needs operands of equal rank, got ${a.shape} and ${b.shape}`)
      if (!transposeA && !transposeB) return { a: () => tf.matMul(g, b, false, true), b: () => tf.matMul(a, g, true, false) }
      if (!transposeA && transposeB) return { a: () => tf.matMul(g, b), b: () => tf.matMul(g, a, true, false) }
      if (transposeA && !transposeB) return { a: () => tf.matMul(b, g, false, true), b: () => tf.matMul(a, g) }
      return { a: () => tf.matMul(b, g, true, true), b: () => tf.matMul(g, a, true, true) }
    }
  },
  {
    kernelName: tf.GatherV2,
    inputsToSave: ["x", "indices"],
    gradFunc: (dy, saved, attrs) => {
      const [x, indices] = saved2(saved)
      if ((attrs["axis"] as number) !== 0 || (attrs["batchDims"] as number) !== 0) {
        throw new Error("gather gradient supports axis 0 without batch dims")
      }
      const rows = tf.reshape(single(dy), [indices.size, ...x.shape.slice(1)])
      return {
        x: () => tf.unsortedSegmentSum(rows, tf.reshape(indices, [indices.size]), x.shape[0] ?? 0),
        indices: () => tf.zerosLike(indices)
      }
    }
  },
  {
    kernelName: tf.Slice,
    inputsToSave: ["x"],
    gradFunc: (dy, saved, attrs) => {
      const x = saved1(saved)
      const begin = attrs["begin"] as Array<number>
      const size = single(dy).shape
      const paddings = x.shape.map((dim, i): [number, number] => [begin[i] ?? 0, dim - (begin[i] ?? 0) - (size[i] ?? 0)])
      return { x: () => tf.pad(single(dy), paddings) }
    }
  },
  {
    kernelName: tf.Concat,
    saveAllInputs: true,
    gradFunc: (dy, saved, attrs) => {
      const rank = single(dy).rank
      const raw = attrs["axis"] as number
      const axis = raw < 0 ? raw + rank : raw
      const pieces = tf.split(single(dy), saved.map((t) => t.shape[axis] ?? 0), axis)
      return Object.fromEntries(pieces.map((piece, i) => [String(i), () => piece]))
    }
  }
]

/** Registers the gradients above that nothing registered yet. Idempotent. */
export const registerGradients = (): void => {
  for (const config of configs()) {
    if (tf.getGradient(config.kernelName) === undefined) tf.registerGradient(config)
  }
}
