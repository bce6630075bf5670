// ReLU keeps NaN as torch.relu does (a diverged weight must not be hidden as a finite zero), in
// every kernel build, alone and fused after a batch norm.

import XCTest

@testable import TensorEngine

final class ElementwiseKernelTests: XCTestCase {
  func testReLUPropagatesNaNInEveryBuild() {
    forEachKernelBuild { build in
      // 19 values: a vector body and a tail.
      var values = (0..<19).map { Float($0) - 9 }
      values[3] = .nan
      values[16] = .nan
      let y = relu(Tensor(shape: [19], data: values)).scalars
      for (i, v) in values.enumerated() {
        if v.isNaN {
          XCTAssertTrue(y[i].isNaN, "\(build): relu(NaN) at \(i) gave \(y[i])")
        } else {
          XCTAssertEqual(y[i], max(v, 0), "\(build): at \(i)")
        }
      }
      // The backward passes the gradient where the output is NaN, as torch's threshold_backward.
      let x = Tensor(shape: [19], data: values, requiresGrad: true)
      relu(x).backward(gradient: Tensor(repeating: 1, shape: [19]))
      for (i, v) in values.enumerated() {
        XCTAssertEqual(x.grad!.scalars[i], v.isNaN || v > 0 ? 1 : 0, "\(build): gradient at \(i)")
      }
      // Batch norm → ReLU fused: a NaN input makes its channel's statistics NaN, so every output
      // of that channel is NaN; the other channel stays finite.
      var planes = (0..<(2 * 2 * 9)).map { Float($0 % 7) - 3 }
      planes[0] = .nan  // sample 0, channel 0
      let state = BatchNormState(runningMean: Tensor(zeros: [2]), runningVar: Tensor(repeating: 1, shape: [2]))
      let out = batchNormReLU(
        Tensor(shape: [2, 2, 3, 3], data: planes), weight: nil, bias: nil, state: state, training: true)
      let channel0 = (0..<2).flatMap { n in (0..<9).map { out.scalars[n * 18 + $0] } }
      let channel1 = (0..<2).flatMap { n in (0..<9).map { out.scalars[n * 18 + 9 + $0] } }
      XCTAssertTrue(channel0.allSatisfy(\.isNaN), "\(build): \(channel0)")
      XCTAssertTrue(channel1.allSatisfy(\.isFinite), "\(build): \(channel1)")
    }
  }

  /// x read by every op that adds its gradient into x's buffer (ReLU, depthwise convolution, the
  /// fused depthwise-pointwise pair, both pools) and by a plain op (scale): x's gradient is the sum
  /// of each reader's gradient taken alone, whichever reader comes first in the backward pass.
  func testReadersThatAddIntoTheInputsGradientGiveTheSumOfTheirGradients() {
    forEachKernelBuild { build in
      var rng = SeededGenerator(seed: 17)
      let data = Tensor.randomNormal([2, 3, 7, 7], using: &rng)
      let dw = Tensor.randomNormal([3, 1, 3, 3], using: &rng)
      let pw = Tensor.randomNormal([4, 3, 1, 1], using: &rng)
      let readers: [(Tensor) -> Tensor] = [
        { relu($0) }, { conv2d($0, weight: dw, padding: 1, groups: 3) },
        { depthwisePointwiseConv2d($0, depthwiseWeight: dw, pointwiseWeight: pw, stride: 2, padding: 2, dilation: 2) },
        { maxPool2d($0, kernel: 3, stride: 1, padding: 1) }, { avgPool2d($0, kernel: 3, stride: 2, padding: 1) },
        { scale($0, by: 0.5) },
      ]
      // One backward pass through all chosen readers' outputs, each weighted by its own fixed
      // random tensor; x is a graph node, so its readers meet in its pending gradient.
      func gradient(_ chosen: [Int]) -> [Float] {
        let leaf = data.copy(requiresGrad: true)
        let x = scale(leaf, by: 1)
        let outputs = chosen.map { readers[$0](x) }
        let weights = zip(chosen, outputs).map { i, y in
          var g = SeededGenerator(seed: UInt64(100 + i))
          return Tensor.randomNormal([y.count], using: &g)
        }
        concatRows(outputs.map { reshape($0, [$0.count]) }).backward(gradient: concatRows(weights))
        return leaf.grad!.scalars
      }
      let alone = readers.indices.map { gradient([$0]) }
      let expected = alone.dropFirst().reduce(alone[0]) { zip($0, $1).map { $0 + $1 } }
      for order in [Array(readers.indices), Array(readers.indices.reversed())] {
        let together = gradient(order)
        let worst = zip(together, expected).map { abs($0 - $1) / max(abs($1), 1) }.max()!
        XCTAssertLessThan(worst, 1e-5, "\(build), readers in order \(order)")
      }
    }
  }
}
