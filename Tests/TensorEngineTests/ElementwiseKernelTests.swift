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
}
