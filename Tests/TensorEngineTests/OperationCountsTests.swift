// OperationCounter: the FLOPs and bytes the ops report are those of their formulas, nothing is
// counted outside a count, counts nest, and the recomputing depthwise-pointwise op pays for its
// second depthwise pass. MachinePeaks: both roofs measured and combined as the roofline model says.

import TensorEngine
import TestSupport
import XCTest

final class OperationCountsTests: XCTestCase {
  func testAConvolutionCountsTwoFLOPsPerMultiplyAddAndEachTensorOnce() {
    var rng = SeededGenerator(seed: 3)
    // (N, C, H, W) = (2, 3, 8, 8), weight (O, C, K, K) = (4, 3, 3, 3), padding 1: 8×8 outputs.
    let x = Tensor.randomNormal([2, 3, 8, 8], using: &rng, requiresGrad: true)
    let w = Tensor.randomNormal([4, 3, 3, 3], using: &rng, requiresGrad: true)
    let (y, forward) = OperationCounter.counting { conv2d(x, weight: w, padding: 1) }
    let multiplyAdds = 2 * 4 * 3 * 9 * 64
    XCTAssertEqual(forward.flops, Double(2 * multiplyAdds))
    XCTAssertEqual(forward.bytes, Double(4 * (x.count + w.count + y.count)))
    XCTAssertEqual(forward.arithmeticIntensity, forward.flops / forward.bytes)
    let (_, backward) = OperationCounter.counting { y.backward(gradient: Tensor(repeating: 1, shape: y.shape)) }
    // dx and dW are one product each; dout is read once, x and W once each, dx and dW written.
    XCTAssertEqual(backward.flops, Double(2 * 2 * multiplyAdds))
    XCTAssertEqual(backward.bytes, Double(4 * (y.count + x.count + w.count + w.count + x.count)))
    XCTAssertEqual(forward.byOperation.keys.sorted(), ["conv2d"])
    XCTAssertEqual(backward.byOperation.keys.sorted(), ["conv2d backward"])
  }

  func testNothingIsCountedOutsideACountAndCountsNest() {
    var rng = SeededGenerator(seed: 4)
    let x = Tensor.randomNormal([1, 2, 6, 6], using: &rng)
    _ = relu(x)  // not counted anywhere
    let (inner, outer) = OperationCounter.counting { () -> OperationCounts in
      _ = relu(x)
      let (_, inner) = OperationCounter.counting { relu(x) }
      return inner
    }
    let reluCounts = OperationCounts(flops: 72, bytes: 4 * 144)
    XCTAssertEqual(inner, OperationCounts(flops: 72, bytes: 4 * 144, byOperation: ["relu": reluCounts]))
    // A forward sum's adds are the sum's, not autograd's gradient accumulation.
    let (_, sumCounts) = OperationCounter.counting { sum([x, x, x]) }
    XCTAssertEqual(sumCounts.byOperation.keys.sorted(), ["sum"])
    XCTAssertEqual(sumCounts.flops, 144)
    XCTAssertEqual(
      outer,
      OperationCounts(flops: 144, bytes: 8 * 144, byOperation: ["relu": OperationCounts(flops: 144, bytes: 8 * 144)]))
  }

  func testTheFusedDepthwisePointwiseOpCountsItsSecondDepthwisePassAndNoMiddleTensor() {
    var rng = SeededGenerator(seed: 5)
    // (N, C, H, W) = (2, 4, 6, 6), a 3×3 depthwise kernel with padding 1, then 1×1 to 5 channels.
    let x = Tensor.randomNormal([2, 4, 6, 6], using: &rng, requiresGrad: true)
    let dw = Tensor.randomNormal([4, 1, 3, 3], using: &rng, requiresGrad: true)
    let pw = Tensor.randomNormal([5, 4, 1, 1], using: &rng, requiresGrad: true)
    let depthwiseFLOPs = 2.0 * 2 * 4 * 9 * 36, pointwiseFLOPs = 2.0 * 2 * 5 * 4 * 36
    let middleBytes = 4.0 * 2 * 4 * 36  // the (2, 4, 6, 6) depthwise output
    let (twoOps, separate) = OperationCounter.counting {
      conv2d(conv2d(x, weight: dw, padding: 1, groups: 4), weight: pw)
    }
    // Fresh leaves, so that no gradient is added into one the first graph left there.
    let (x2, dw2, pw2) = (x.copy(requiresGrad: true), dw.copy(requiresGrad: true), pw.copy(requiresGrad: true))
    let (fused, together) = OperationCounter.counting {
      depthwisePointwiseConv2d(x2, depthwiseWeight: dw2, pointwiseWeight: pw2, padding: 1)
    }
    // The same forward work op by op, less the middle tensor's write (depthwise) and read (1×1).
    XCTAssertEqual(together.byOperation.keys.sorted(), ["conv2d", "depthwise conv2d"])
    XCTAssertEqual(together.flops, depthwiseFLOPs + pointwiseFLOPs)
    for op in ["conv2d", "depthwise conv2d"] {
      XCTAssertEqual(together.byOperation[op]?.flops, separate.byOperation[op]?.flops, op)
      XCTAssertEqual(together.byOperation[op]?.bytes, separate.byOperation[op].map { $0.bytes - middleBytes }, op)
    }
    let g = Tensor(repeating: 1, shape: fused.shape)
    let (_, separateBackward) = OperationCounter.counting { twoOps.backward(gradient: g) }
    let (_, fusedBackward) = OperationCounter.counting { fused.backward(gradient: g) }
    XCTAssertEqual(separateBackward.flops, 2 * (depthwiseFLOPs + pointwiseFLOPs))
    XCTAssertEqual(fusedBackward.flops, separateBackward.flops + depthwiseFLOPs, "one more depthwise forward pass")
    XCTAssertEqual(fusedBackward.byOperation["depthwise conv2d"]?.flops, depthwiseFLOPs)
    // The parts add up to the totals.
    XCTAssertEqual(fusedBackward.byOperation.values.reduce(0) { $0 + $1.flops }, fusedBackward.flops)
    XCTAssertEqual(fusedBackward.byOperation.values.reduce(0) { $0 + $1.bytes }, fusedBackward.bytes)
    // The recomputation reads x and the depthwise weight again; the middle tensor is not read by
    // the 1×1 weight gradient, and its gradient is neither written nor read back.
    XCTAssertEqual(
      fusedBackward.bytes, separateBackward.bytes + Double(4 * (x.count + dw.count)) - 3 * middleBytes)
  }

  func testMachinePeaksArePositiveAndTheRoofIsTheSlowerOfTheTwoBounds() {
    let peaks = MachinePeaks.measure(size: 64, arrayBytes: 1 << 20, trials: 1)
    XCTAssertTrue(peaks.matrixProductFLOPS.isFinite && peaks.matrixProductFLOPS > 1e8, "\(peaks)")
    XCTAssertTrue(peaks.memoryBytesPerSecond.isFinite && peaks.memoryBytesPerSecond > 1e8, "\(peaks)")
    let fixed = MachinePeaks(matrixProductFLOPS: 100e9, memoryBytesPerSecond: 20e9)
    XCTAssertEqual(fixed.ridgeIntensity, 5)
    XCTAssertEqual(fixed.roofSeconds(OperationCounts(flops: 200e9, bytes: 20e9)), 2, "compute-bound")
    XCTAssertEqual(fixed.roofSeconds(OperationCounts(flops: 20e9, bytes: 60e9)), 3, "bandwidth-bound")
  }
}
