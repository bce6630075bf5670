// The fusion contract of candidate operations (FusableCandidate): a mixed op's fused path — the
// shared ReLU of the edge input, the final non-affine batch norm folded into the weighted sum —
// gives the same outputs, gradients and running statistics as calling each candidate as a plain
// layer, for every built-in primitive and for client primitives that declare nothing, a complete
// output, or an affine final batch norm (which must not be fused).

import NeuralNetwork
import PCDARTS
import TensorEngine
import TestSupport
import XCTest

/// ReLU → 1×1 convolution (stride s), declaring nothing: a mixed op must call it as a layer.
private final class PlainConv: Layer {
  let conv: Conv2d
  init(channels: Int, stride: Int, rng: inout SeededGenerator) {
    conv = Conv2d(inChannels: channels, outChannels: channels, kernelSize: 1, stride: stride, rng: &rng)
  }
  override var children: [(String, Module)] { [("conv", conv)] }
  override func callAsFunction(_ x: Tensor) -> Tensor { conv(relu(x)) }
}

/// The same operation declaring a complete output computed from the shared ReLU.
private final class CompleteConv: Layer, FusableCandidate {
  let conv: Conv2d
  init(channels: Int, stride: Int, rng: inout SeededGenerator) {
    conv = Conv2d(inChannels: channels, outChannels: channels, kernelSize: 1, stride: stride, rng: &rng)
  }
  override var children: [(String, Module)] { [("conv", conv)] }
  override func callAsFunction(_ x: Tensor) -> Tensor { conv(relu(x)) }
  func output(on input: EdgeInput) -> CandidateOutput { .complete(conv(input.activated)) }
}

/// ReLU → 1×1 convolution → affine batch norm, declaring its norm: affine, so not fusable.
private final class AffineNormConv: Layer, FusableCandidate {
  let conv: Conv2d, bn: BatchNorm2d
  init(channels: Int, stride: Int, rng: inout SeededGenerator) {
    conv = Conv2d(inChannels: channels, outChannels: channels, kernelSize: 1, stride: stride, rng: &rng)
    bn = BatchNorm2d(channels: channels, affine: true)
    bn.weight!.fill(1.5)
  }
  override var children: [(String, Module)] { [("conv", conv), ("bn", bn)] }
  override func callAsFunction(_ x: Tensor) -> Tensor { bn(conv(relu(x))) }
  func output(on input: EdgeInput) -> CandidateOutput { .beforeNorm(conv(input.activated), norm: bn) }
}

final class FusionContractTests: XCTestCase {
  private let clients = [
    Primitive(name: "plain_conv") { c, s, rng in PlainConv(channels: c, stride: s, rng: &rng) },
    Primitive(name: "complete_conv") { c, s, rng in CompleteConv(channels: c, stride: s, rng: &rng) },
    Primitive(name: "affine_norm_conv") { c, s, rng in AffineNormConv(channels: c, stride: s, rng: &rng) },
  ]

  /// For one primitive, K and stride: the mixed op's processed channels against 0.7 · the
  /// candidate called as a layer on the same channels, with the same parameters.
  private func check(_ primitive: Primitive, k: Int, stride: Int) {
    let what = "\(primitive.name) K=\(k) stride \(stride)"
    var rng = SeededGenerator(seed: 11)
    let edge = MixedOp(channels: 8, stride: stride, partialChannels: k, space: SearchSpace([primitive]), rng: &rng)
    let x = Tensor.randomNormal([3, 8, 6, 6], using: &rng, requiresGrad: true)
    let weights = Tensor(shape: [1], data: [0.7], requiresGrad: true)
    let parameters = edge.parameters()
    let buffers = edge.namedBuffers().map(\.1)
    let initialBuffers = buffers.map { $0.copy() }
    func run(_ forward: () -> Tensor, projection: Tensor?) -> (Tensor, [Tensor], [Tensor]) {
      for (b, initial) in zip(buffers, initialBuffers) { b.assign(initial) }
      for t in [x, weights] + parameters { t.zeroGrad() }
      let y = forward()
      y.backward(gradient: projection ?? Tensor(repeating: 1, shape: y.shape))
      let grads = ([x, weights] + parameters).map { $0.grad?.copy() ?? Tensor(zeros: $0.shape) }
      return (y, grads, buffers.map { $0.copy() })
    }
    let projection = Tensor.randomNormal([3, 8 / k, 6 / stride, 6 / stride], using: &rng)
    let fused = run({ edge.processed(x, weights: weights) }, projection: projection)
    let plain = run(
      {
        let part = k == 1 ? x : sliceChannels(x, 0..<8 / k)
        return scale(edge.ops[0](part), byElementOf: weights, at: 0)
      }, projection: projection)
    assertClose(fused.0, plain.0, tolerance: 1e-5, "\(what): output")
    for (i, (a, b)) in zip(fused.1, plain.1).enumerated() {
      assertClose(a, b, tolerance: 1e-4, "\(what): gradient \(i) (x, weight, then parameters)")
    }
    for (a, b) in zip(fused.2, plain.2) { assertClose(a, b, tolerance: 1e-5, "\(what): batch-norm buffers") }
  }

  func testEveryBuiltInPrimitiveFusedEqualsItsPlainLayers() {
    for primitive in SearchSpace.darts.primitives where primitive.name != Primitive.noneName {
      for (k, stride) in [(1, 1), (2, 1), (2, 2)] { check(primitive, k: k, stride: stride) }
    }
  }

  func testClientPrimitivesThatDeclareNothingACompleteOutputOrAnAffineNorm() {
    for primitive in clients {
      for (k, stride) in [(1, 1), (2, 2)] { check(primitive, k: k, stride: stride) }
    }
  }

  func testAMixedOpOfBuiltInAndClientPrimitivesTogether() {
    // All candidates at once, so that several of them share the edge input's one ReLU.
    var space = SearchSpace.darts
    for primitive in clients { space = space.adding(primitive) }
    var rng = SeededGenerator(seed: 12)
    let edge = MixedOp(channels: 8, stride: 1, partialChannels: 2, space: space, rng: &rng)
    let x = Tensor.randomNormal([2, 8, 6, 6], using: &rng)
    let weights = softmax(Tensor.randomNormal([space.count], using: &rng))
    let fused = edge.processed(x, weights: weights)
    let part = sliceChannels(x, 0..<4)
    let terms = (0..<space.count).filter { space.names[$0] != Primitive.noneName }
    let plain = weightedSum(terms.map { edge.ops[$0](part) }, weights: weights, indices: terms)
    assertClose(fused, plain, tolerance: 1e-5, "all candidates")
  }
}
