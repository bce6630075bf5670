// A convolution must round alike at every output position: equal input windows give bitwise
// equal outputs, as in exact arithmetic (and PyTorch's float64). Images with flat regions (the
// black background of Fashion-MNIST) make many windows equal, and the max pools and ReLUs after
// them tie exactly; with position-dependent rounding (sgemm's tiles) those ties were decided by
// rounding noise and the architecture gradients jumped (TrainedNetworkPrecisionTests).
// Layout (N, C, H, W).

import TestSupport
import XCTest

@testable import TensorEngine

final class ConvolutionRoundingTests: XCTestCase {
  /// The most distinct values among the outputs of one channel whose windows lie inside the
  /// constant input (at least `margin` from every edge), over every channel.
  private func mostDistinctInteriorValues(_ y: Tensor, margin: Int) -> Int {
    let (n, c, h, w) = (y.shape[0], y.shape[1], y.shape[2], y.shape[3])
    return (0..<c).map { ch in
      var values = Set<Float>()
      for s in 0..<n {
        for i in margin..<(h - margin) {
          for j in margin..<(w - margin) { values.insert(y.pointer[((s * c + ch) * h + i) * w + j]) }
        }
      }
      return values.count
    }.max()!
  }

  func testEqualWindowsGiveBitwiseEqualOutputs() {
    // (input channels, output channels, kernel, groups, dilation, stride): the stem, pointwise
    // convolutions at DARTS's channel counts (sgemm gave two values at 16 → 16 and 48 → 8 on
    // 32×32), FactorizedReduce's stride-2 1×1, and depthwise convolutions.
    let cases = [
      (3, 48, 3, 1, 1, 1), (16, 16, 1, 1, 1, 1), (48, 8, 1, 1, 1, 1), (64, 64, 1, 1, 1, 1),
      (144, 36, 1, 1, 1, 1), (16, 16, 1, 1, 1, 2), (16, 16, 3, 16, 1, 1), (16, 16, 5, 16, 2, 2),
    ]
    forEachKernelBuild { build in
      var rng = SeededGenerator(seed: 3)
      for (cin, cout, k, groups, dilation, stride) in cases {
        for size in [7, 32] {  // a plane shorter than one vector, and CIFAR's
          let x = Tensor(repeating: 0.7311, shape: [2, cin, size, size])
          let w = Tensor.randomNormal([cout, cin / groups, k, k], using: &rng)
          let padding = dilation * (k - 1) / 2
          let y = conv2d(x, weight: w, stride: stride, padding: padding, dilation: dilation, groups: groups)
          let margin = padding / stride + 1
          guard y.shape[2] - 2 * margin >= 2 else { continue }  // fewer than two inner windows
          XCTAssertEqual(
            mostDistinctInteriorValues(y, margin: margin), 1,
            "\(build): \(cin) → \(cout), \(k)×\(k), groups \(groups), dilation \(dilation), stride \(stride) "
              + "on \(size)×\(size): equal windows, unequal outputs")
        }
      }
    }
  }

  func testTheProductMatchesTheReferenceInEveryBuild() {
    // The position-invariant product against the naive convolution, at sizes that take every
    // path of the kernel (panels of 128 positions and fewer, 8-wide and single leftovers, row
    // blocks of six and fewer).
    forEachKernelBuild { build in
      for (cin, cout, size) in [(5, 13, 11), (16, 7, 32), (3, 6, 9)] {
        let x = randomInput([2, cin, size, size], seed: 40)
        let w = randomInput([cout, cin, 3, 3], seed: 41)
        let y = conv2d(x, weight: w, padding: 1)
        let expected = referenceConv2d(
          x: x.scalars, xShape: x.shape, weight: w.scalars, wShape: w.shape, stride: 1, padding: 1, dilation: 1,
          groups: 1)
        assertClose(y.scalars, expected, tolerance: 1e-6, "\(build): \(cin) → \(cout) on \(size)×\(size)")
      }
    }
  }
}
