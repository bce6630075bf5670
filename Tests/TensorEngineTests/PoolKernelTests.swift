// The pooling kernels (vectorised stride-1 and stride-2 paths, gather-form stride-1 backward,
// scalar tails, generic fallbacks) against a naive reference written from the definitions.
// Legend: N batch, C channels, H×W input, K×K window, s stride, p padding.

import TestSupport
import XCTest

@testable import TensorEngine

final class PoolKernelTests: XCTestCase {
  /// (H, W, K, s, p): DARTS's shapes, widths with and without a scalar tail (odd, < 8, > 32),
  /// 1×1 planes, and K = 5 for the generic-K instantiations.
  static let geometries: [(Int, Int, Int, Int, Int)] = [
    (32, 32, 3, 1, 1), (16, 16, 3, 1, 1), (8, 8, 3, 1, 1), (37, 45, 3, 1, 1), (5, 3, 3, 1, 1),
    (1, 1, 3, 1, 1), (1, 1, 1, 1, 0), (9, 21, 5, 1, 2), (6, 19, 2, 1, 0),
    (32, 32, 3, 2, 1), (16, 16, 3, 2, 1), (17, 17, 3, 2, 1), (37, 45, 3, 2, 1), (4, 5, 3, 2, 1),
    (32, 32, 2, 2, 0), (16, 16, 2, 2, 0), (33, 35, 2, 2, 0), (8, 8, 2, 2, 0), (30, 50, 5, 2, 2),
    (12, 40, 3, 3, 1),
  ]

  /// Inputs as named value patterns over an (N, C, H, W) shape: Gaussian, small integers (many
  /// ties inside a window) and all equal (every window a tie).
  func inputs(_ shape: [Int], seed: UInt64) -> [(String, [Float])] {
    let count = shape.reduce(1, *)
    var rng = SeededGenerator(seed: seed)
    let gaussian = randomInput(shape, seed: seed).scalars
    let integers = (0..<count).map { _ in Float(Int.random(in: -2...2, using: &rng)) }
    return [("gaussian", gaussian), ("integers", integers), ("equal", [Float](repeating: 0.5, count: count))]
  }

  func testMaxPoolMatchesReference() {
    forEachKernelBuild { build in
      for (index, (h, w, k, s, p)) in Self.geometries.enumerated() {
        let shape = [2, 3, h, w]
        for (pattern, values) in inputs(shape, seed: UInt64(index)) {
          let what = "\(build) max \(h)×\(w) k\(k) s\(s) p\(p) \(pattern)"
          let x = Tensor(shape: shape, data: values, requiresGrad: true)
          let y = maxPool2d(x, kernel: k, stride: s, padding: p)
          let g = randomInput(y.shape, seed: UInt64(100 + index))
          y.backward(gradient: g)
          let expected = ReferencePool(shape: shape, kernel: k, stride: s, padding: p)
          XCTAssertEqual(y.shape, [2, 3, expected.outH, expected.outW], what)
          XCTAssertEqual(y.scalars, expected.maxForward(values), "\(what): forward")
          assertClose(
            x.grad!.scalars, expected.maxBackward(values, g.scalars), tolerance: 1e-6,
            "\(what): backward")
        }
      }
    }
  }

  func testAvgPoolMatchesReference() {
    forEachKernelBuild { build in
      for (index, (h, w, k, s, p)) in Self.geometries.enumerated() {
        let shape = [2, 3, h, w]
        for includePad in [false, true] {
          let what = "\(build) avg \(h)×\(w) k\(k) s\(s) p\(p) countIncludePad \(includePad)"
          let x = randomInput(shape, seed: UInt64(200 + index))
          let y = avgPool2d(x, kernel: k, stride: s, padding: p, countIncludePad: includePad)
          let g = randomInput(y.shape, seed: UInt64(300 + index))
          y.backward(gradient: g)
          let expected = ReferencePool(shape: shape, kernel: k, stride: s, padding: p)
          assertClose(
            y.scalars, expected.avgForward(x.scalars, countIncludePad: includePad),
            tolerance: 1e-6, "\(what): forward")
          assertClose(
            x.grad!.scalars, expected.avgBackward(g.scalars, countIncludePad: includePad),
            tolerance: 1e-6, "\(what): backward")
        }
      }
    }
  }

  /// The first maximum in row-major window order takes the gradient (PyTorch's rule), checked
  /// by hand on a 3×3 stride-1 pool (padding 1) of a 3×9 plane, wide enough for the vector
  /// path: two 9s at (0, 1) and (1, 0), zeros elsewhere, and a gradient of ones.
  func testMaxTiesRouteToFirstMaximum() {
    forEachKernelBuild { build in
      var plane = [Float](repeating: 0, count: 3 * 9)
      plane[1] = 9  // (0, 1)
      plane[9] = 9  // (1, 0)
      let x = Tensor(shape: [1, 1, 3, 9], data: plane, requiresGrad: true)
      let y = maxPool2d(x, kernel: 3, stride: 1, padding: 1)
      y.backward(gradient: Tensor(repeating: 1, shape: y.shape))
      let dx = x.grad!.scalars
      // (0, 1) is in the windows of outputs r ≤ 1, q ≤ 2 (6) and wins all of them, as it comes
      // first in row-major order; (1, 0) is in those of r ≤ 2, q ≤ 1, but wins only the two
      // without (0, 1): r = 2, q ≤ 1.
      XCTAssertEqual(dx[1], 6, build)
      XCTAssertEqual(dx[9], 2, build)
      // The remaining outputs (all-zero windows) route to their window's first position.
      XCTAssertEqual(dx.reduce(0, +), Float(y.count), build)
    }
  }
}

/// Naive pooling on (N, C, H, W) straight from the definitions: −∞ padding for max (first
/// maximum by strict `>` over row-major taps), in-image counts or K² for averages.
struct ReferencePool {
  let planes: Int, h: Int, w: Int, k: Int, s: Int, p: Int
  var outH: Int { (h + 2 * p - k) / s + 1 }
  var outW: Int { (w + 2 * p - k) / s + 1 }

  init(shape: [Int], kernel: Int, stride: Int, padding: Int) {
    (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3])
    (k, s, p) = (kernel, stride, padding)
  }

  /// Calls `body(plane, output index, in-image input indices of the window in row-major order)`.
  func forEachWindow(_ body: (Int, Int, [Int]) -> Void) {
    for plane in 0..<planes {
      for r in 0..<outH {
        for q in 0..<outW {
          var taps: [Int] = []
          for i in 0..<k {
            for j in 0..<k {
              let (y, x) = (r * s + i - p, q * s + j - p)
              if y >= 0, y < h, x >= 0, x < w { taps.append(plane * h * w + y * w + x) }
            }
          }
          body(plane, plane * outH * outW + r * outW + q, taps)
        }
      }
    }
  }

  func firstMax(_ x: [Float], _ taps: [Int]) -> Int {
    var best = taps[0]
    for t in taps where x[t] > x[best] { best = t }
    return best
  }

  func maxForward(_ x: [Float]) -> [Float] {
    var out = [Float](repeating: 0, count: planes * outH * outW)
    forEachWindow { _, o, taps in out[o] = x[firstMax(x, taps)] }
    return out
  }

  func maxBackward(_ x: [Float], _ g: [Float]) -> [Float] {
    var dx = [Float](repeating: 0, count: x.count)
    forEachWindow { _, o, taps in dx[firstMax(x, taps)] += g[o] }
    return dx
  }

  func divisor(_ taps: [Int], countIncludePad: Bool) -> Float {
    Float(countIncludePad ? k * k : taps.count)
  }

  func avgForward(_ x: [Float], countIncludePad: Bool) -> [Float] {
    var out = [Float](repeating: 0, count: planes * outH * outW)
    forEachWindow { _, o, taps in
      out[o] = taps.reduce(0) { $0 + x[$1] } / divisor(taps, countIncludePad: countIncludePad)
    }
    return out
  }

  func avgBackward(_ g: [Float], countIncludePad: Bool) -> [Float] {
    var dx = [Float](repeating: 0, count: planes * h * w)
    forEachWindow { _, o, taps in
      for t in taps { dx[t] += g[o] / divisor(taps, countIncludePad: countIncludePad) }
    }
    return dx
  }
}
