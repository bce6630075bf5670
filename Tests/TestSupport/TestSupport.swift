// Shared test helpers: one closeness assertion and one gradient checker for every op.

import Foundation
import TensorEngine
import XCTest

/// Asserts that `actual` matches `expected` in the max norm relative to the largest expected
/// magnitude: max|a − e| ≤ tolerance · max(max|e|, 1e-30). On failure the message names the
/// worst element, both values and the error.
public func assertClose(
  _ actual: [Float], _ expected: [Float], tolerance: Double = 1e-5, _ what: String = "",
  file: StaticString = #filePath, line: UInt = #line
) {
  guard actual.count == expected.count else {
    XCTFail("\(what): \(actual.count) values, expected \(expected.count)", file: file, line: line)
    return
  }
  let scale = max(expected.map { Double(abs($0)) }.max() ?? 0, 1e-30)
  var worst = 0.0
  var at = 0
  for i in actual.indices {
    let d = abs(Double(actual[i]) - Double(expected[i]))
    // `!(<=)` also catches NaN.
    if !(d <= worst) {
      worst = d
      at = i
    }
  }
  let relative = worst / scale
  if !(relative <= tolerance) {
    XCTFail(
      "\(what): max error \(worst) at [\(at)] (got \(actual[at]), expected \(expected[at])) is "
        + "\(relative) of the largest magnitude \(scale), tolerance \(tolerance)",
      file: file, line: line)
  }
}

/// Asserts two tensors agree in shape and values (see ``assertClose(_:_:tolerance:_:file:line:)``).
public func assertClose(
  _ actual: Tensor, _ expected: Tensor, tolerance: Double = 1e-5, _ what: String = "",
  file: StaticString = #filePath, line: UInt = #line
) {
  XCTAssertEqual(actual.shape, expected.shape, "\(what): shape", file: file, line: line)
  assertClose(actual.scalars, expected.scalars, tolerance: tolerance, what, file: file, line: line)
}

/// Checks the gradients autograd computes for `inputs` against central finite differences.
///
/// The scalar differentiated is ⟨f(inputs), R⟩ for a fixed random projection R, accumulated in
/// Double; each input element is perturbed by ±`step` (all of them, or `maxChecks` chosen by a
/// seeded generator for large inputs). Passes when the max-norm relative error of every input's
/// gradient is within `tolerance`.
public func checkGradients(
  _ what: String, inputs: [Tensor], step: Float = 1e-2, tolerance: Double = 2e-3,
  maxChecks: Int = 400, seed: UInt64 = 7,
  file: StaticString = #filePath, line: UInt = #line, _ f: ([Tensor]) -> Tensor
) {
  var rng = SeededGenerator(seed: seed)
  for x in inputs { x.zeroGrad() }
  let out = f(inputs)
  let projection = Tensor.randomNormal(out.shape, using: &rng)
  out.backward(gradient: projection)
  func objective() -> Double {
    let y = withNoGrad { f(inputs) }
    var total = 0.0
    for i in 0..<y.count { total += Double(y.pointer[i]) * Double(projection.pointer[i]) }
    return total
  }
  for (k, x) in inputs.enumerated() {
    guard let analytic = x.grad else {
      XCTFail("\(what): input \(k) got no gradient", file: file, line: line)
      continue
    }
    var positions = Array(0..<x.count)
    if positions.count > maxChecks {
      positions.shuffle(using: &rng)
      positions = Array(positions.prefix(maxChecks))
    }
    var numeric: [Float] = []
    var expectedAnalytic: [Float] = []
    for i in positions {
      let saved = x.pointer[i]
      x.pointer[i] = saved + step
      let plus = objective()
      x.pointer[i] = saved - step
      let minus = objective()
      x.pointer[i] = saved
      numeric.append(Float((plus - minus) / (2 * Double(step))))
      expectedAnalytic.append(analytic.pointer[i])
    }
    assertClose(
      expectedAnalytic, numeric, tolerance: tolerance, "\(what): d/d input \(k)",
      file: file, line: line)
  }
}

/// A tensor of N(0, 1) samples that collects gradients.
/// Runs `body` with ``Engine/recomputesDepthwiseOutputs`` off (the engine's default) and then on,
/// as the commands run CIFAR stems: depthwise → 1×1 pairs fused, the ReLUs before them too, and the
/// gradients reaching a node added in another order. Restores the setting afterwards.
public func withDepthwiseFusionOffAndOn(_ body: (_ fused: Bool) throws -> Void) rethrows {
  let saved = Engine.recomputesDepthwiseOutputs
  defer { Engine.recomputesDepthwiseOutputs = saved }
  for fused in [false, true] {
    Engine.recomputesDepthwiseOutputs = fused
    try body(fused)
  }
}

public func randomInput(_ shape: [Int], seed: UInt64, std: Float = 1) -> Tensor {
  var rng = SeededGenerator(seed: seed)
  return Tensor.randomNormal(shape, std: std, using: &rng, requiresGrad: true)
}

/// Asserts that `body` throws an error of type `E`, and hands it to `check` for the details.
public func assertThrows<E: Error>(
  _ type: E.Type, _ body: @autoclosure () throws -> Any, file: StaticString = #filePath,
  line: UInt = #line, _ check: (E) -> Void
) {
  XCTAssertThrowsError(try body(), file: file, line: line) { error in
    guard let typed = error as? E else {
      return XCTFail("expected \(E.self), got \(error)", file: file, line: line)
    }
    check(typed)
  }
}

/// A naive direct convolution (seven nested loops over arrays), the reference the engine's
/// im2col, pointwise and depthwise paths are checked against.
/// - Parameters: x (N, C, H, W) and weight (O, C/groups, K, K) as flat arrays with their shapes.
/// - Returns: (N, O, Ho, Wo) flattened, Ho = ⌊(H + 2p − d(K − 1) − 1)/s⌋ + 1.
public func referenceConv2d(
  x: [Float], xShape: [Int], weight: [Float], wShape: [Int],
  stride: Int, padding: Int, dilation: Int, groups: Int
) -> [Float] {
  let (n, c, h, w) = (xShape[0], xShape[1], xShape[2], xShape[3])
  let (o, cg, k) = (wShape[0], wShape[1], wShape[2])
  let og = o / groups
  let oh = (h + 2 * padding - dilation * (k - 1) - 1) / stride + 1
  let ow = (w + 2 * padding - dilation * (k - 1) - 1) / stride + 1
  var out = [Float](repeating: 0, count: n * o * oh * ow)
  for s in 0..<n {
    for oc in 0..<o {
      let g = oc / og
      for r in 0..<oh {
        for q in 0..<ow {
          var acc: Double = 0
          for ic in 0..<cg {
            for ki in 0..<k {
              for kj in 0..<k {
                let (i, j) = (r * stride - padding + ki * dilation, q * stride - padding + kj * dilation)
                guard i >= 0, i < h, j >= 0, j < w else { continue }
                acc +=
                  Double(x[((s * c + g * cg + ic) * h + i) * w + j])
                  * Double(weight[((oc * cg + ic) * k + ki) * k + kj])
              }
            }
          }
          out[((s * o + oc) * oh + r) * ow + q] = Float(acc)
        }
      }
    }
  }
  return out
}
