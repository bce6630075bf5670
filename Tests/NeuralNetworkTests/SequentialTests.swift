// Sequential's fusions (batch norm → ReLU; depthwise → 1×1, and a ReLU before them) against the layers
// applied one by one.

import NeuralNetwork
import TensorEngine
import TestSupport
import XCTest

final class SequentialTests: XCTestCase {
  /// Runs `layers(x)` and its backward pass with recomputation off, then on, asserts that the
  /// outputs and the gradients of x and of the parameters are the same bits both times, and
  /// returns the bytes kept between the passes each time.
  private func keptBothWays(
    _ layers: Sequential, _ x: Tensor, file: StaticString = #filePath, line: UInt = #line
  ) -> [Int] {
    let saved = Engine.recomputesDepthwiseOutputs
    defer { Engine.recomputesDepthwiseOutputs = saved }
    var outputs: [[Float]] = [], kept: [Int] = [], gradients: [[Float]] = []
    for recompute in [false, true] {
      Engine.recomputesDepthwiseOutputs = recompute
      let before = MemoryStats.liveBytes
      let y = layers(x)
      kept.append(MemoryStats.liveBytes - before)
      y.backward(gradient: Tensor(repeating: 1, shape: y.shape))
      outputs.append(y.scalars)
      gradients.append(x.grad!.scalars + layers.parameters().flatMap { $0.grad!.scalars })
      x.zeroGrad()
      layers.zeroGrad()
    }
    XCTAssertEqual(outputs[0], outputs[1], "the same values either way", file: file, line: line)
    XCTAssertEqual(gradients[0], gradients[1], "the same gradients either way", file: file, line: line)
    return kept
  }

  func testDepthwiseThenPointwiseIsFusedOnlyWhenRecomputationIsOn() {
    var rng = SeededGenerator(seed: 61)
    let layers = Sequential([
      Conv2d(inChannels: 4, outChannels: 4, kernelSize: 3, padding: 1, groups: 4, rng: &rng),
      Conv2d(inChannels: 4, outChannels: 6, kernelSize: 1, rng: &rng),
    ])
    let x = Tensor.randomNormal([2, 4, 10, 10], using: &rng, requiresGrad: true)
    let kept = keptBothWays(layers, x)
    XCTAssertEqual(kept[0] - kept[1], 2 * 4 * 10 * 10 * 4, "recomputation keeps no depthwise output")
  }

  func testReLUBeforeDepthwiseThenPointwiseIsFusedWithThemAndWritesNoReLUTensor() {
    var rng = SeededGenerator(seed: 62)
    let layers = Sequential([
      ReLU(),
      Conv2d(inChannels: 4, outChannels: 4, kernelSize: 3, padding: 1, groups: 4, rng: &rng),
      Conv2d(inChannels: 4, outChannels: 6, kernelSize: 1, rng: &rng),
    ])
    let x = Tensor.randomNormal([2, 4, 10, 10], using: &rng, requiresGrad: true)
    let kept = keptBothWays(layers, x)
    XCTAssertEqual(kept[1], 2 * 6 * 10 * 10 * 4, "fused, only the output is kept")
    XCTAssertEqual(kept[0] - kept[1], 2 * 2 * 4 * 10 * 10 * 4, "no ReLU output and no depthwise output")
  }

  func testReLUBeforeAConvolutionIsFusedIntoItAndWritesNoReLUTensor() {
    var rng = SeededGenerator(seed: 63)
    let layers = Sequential([
      ReLU(), Conv2d(inChannels: 4, outChannels: 6, kernelSize: 1, rng: &rng), ReLU(),
      Conv2d(inChannels: 6, outChannels: 3, kernelSize: 3, stride: 2, padding: 1, rng: &rng),
    ])
    let x = Tensor.randomNormal([2, 4, 10, 10], using: &rng, requiresGrad: true)
    let before = MemoryStats.liveBytes
    let y = layers(x)
    // Kept: the first convolution's output (the second's input) and the second's output; no ReLU.
    XCTAssertEqual(MemoryStats.liveBytes - before, (2 * 6 * 10 * 10 + 2 * 3 * 5 * 5) * 4, "no ReLU tensor")
    y.backward(gradient: Tensor(repeating: 1, shape: y.shape))
    let fusedGradients = x.grad!.scalars + layers.parameters().flatMap { $0.grad!.scalars }
    x.zeroGrad()
    layers.zeroGrad()
    let plain = layers.layers.reduce(x) { $1($0) }
    plain.backward(gradient: Tensor(repeating: 1, shape: plain.shape))
    XCTAssertEqual(y.scalars, plain.scalars, "the layers' values")
    XCTAssertEqual(
      fusedGradients, x.grad!.scalars + layers.parameters().flatMap { $0.grad!.scalars }, "the layers' gradients")
  }

  func testBatchNormThenReLUInASequentialEqualsTheLayersAppliedOneByOne() {
    var rng = SeededGenerator(seed: 60)
    let x = Tensor.randomNormal([3, 2, 6, 7], std: 2, using: &rng, requiresGrad: true)
    let projection = Tensor.randomNormal([3, 2, 6, 7], using: &rng)
    for training in [true, false] {
      let (fusedNorm, plainNorm) = (BatchNorm2d(channels: 2), BatchNorm2d(channels: 2))
      for norm in [fusedNorm, plainNorm] {
        norm.weight!.assign(Tensor(shape: [2], data: [0.7, -1.3]))
        norm.bias!.assign(Tensor(shape: [2], data: [0.2, 0.1]))
        norm.train(training)
      }
      let fused = Sequential([fusedNorm, ReLU()])(x)
      fused.backward(gradient: projection)
      let fusedGrads = [x.grad!, fusedNorm.weight!.grad!, fusedNorm.bias!.grad!]
      x.zeroGrad()
      let plain = ReLU()(plainNorm(x))
      plain.backward(gradient: projection)
      let plainGrads = [x.grad!, plainNorm.weight!.grad!, plainNorm.bias!.grad!]
      x.zeroGrad()
      assertClose(fused, plain, tolerance: 1e-6, "forward, training \(training)")
      for (a, b) in zip(fusedGrads, plainGrads) {
        assertClose(a, b, tolerance: 1e-5, "gradients, training \(training)")
      }
      assertClose(fusedNorm.runningVar, plainNorm.runningVar, tolerance: 1e-6, "running variance")
      XCTAssertEqual(fusedNorm.numBatchesTracked.scalars, plainNorm.numBatchesTracked.scalars)
    }
  }
}
