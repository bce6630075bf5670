import NeuralNetwork
import PCDARTS
import TensorEngine
import TestSupport
import XCTest

/// A smooth two-level model: logits = Σᵢ softmax(α)ᵢ · (softmax(x·Aᵢᵀ) · Bᵢᵀ). Every op is C∞, so
/// finite differences of the unrolled loss are accurate to a few digits and the second-order
/// formula can be checked exactly; ReLU kinks in the real network would blur such a check.
final class SmoothMixture: BilevelSearchModel {
  let a: [Tensor], b: [Tensor], alpha: Tensor
  init(seed: UInt64) {
    var rng = SeededGenerator(seed: seed)
    a = (0..<3).map { _ in Tensor.randomNormal([5, 4], using: &rng, requiresGrad: true) }
    b = (0..<3).map { _ in Tensor.randomNormal([3, 5], using: &rng, requiresGrad: true) }
    alpha = Tensor.randomNormal([3], std: 0.5, using: &rng, requiresGrad: true)
  }
  var weights: [Tensor] { a + b }
  var architectureParameters: [Tensor] { [alpha] }
  var statisticBuffers: [Tensor] { [] }
  func loss(_ batch: LabeledBatch) -> Tensor {
    let x = reshape(batch.images, [batch.labels.count, 4])
    let paths = (0..<3).map { linear(softmax(linear(x, weight: a[$0])), weight: b[$0]) }
    return crossEntropy(weightedSum(paths, weights: softmax(alpha)), labels: batch.labels)
  }
}

final class ArchitectTests: XCTestCase {
  func batches(seed: UInt64) -> (LabeledBatch, LabeledBatch) {
    var rng = SeededGenerator(seed: seed)
    return (
      LabeledBatch(images: Tensor.randomNormal([6, 4, 1, 1], using: &rng), labels: [0, 1, 2, 0, 1, 2]),
      LabeledBatch(images: Tensor.randomNormal([6, 4, 1, 1], using: &rng), labels: [2, 0, 1, 1, 0, 2])
    )
  }

  /// L_val(w′(α), α) with w′ = w − ξ(μ·buf + ∇_w L_train(w, α) + wd·w), computed directly.
  func unrolledValidationLoss(_ model: BilevelSearchModel, _ train: LabeledBatch, _ valid: LabeledBatch, _ sgd: SGD)
    -> Double
  {
    let weights = model.weights
    let saved = weights.map { $0.copy() }
    for w in weights { w.zeroGrad() }
    model.loss(train).backward()
    for (i, w) in weights.enumerated() {
      for j in 0..<w.count {
        let moment = sgd.momentumBuffers[i].map { sgd.momentum * $0.pointer[j] } ?? 0
        w.pointer[j] -= sgd.learningRate * (moment + w.grad!.pointer[j] + sgd.weightDecay * w.pointer[j])
      }
    }
    let loss = withNoGrad { model.loss(valid).item }
    for (w, s) in zip(weights, saved) {
      w.assign(s)
      w.zeroGrad()
    }
    for p in model.architectureParameters { p.zeroGrad() }
    return Double(loss)
  }

  func testSecondOrderGradientMatchesFiniteDifferencesOfTheUnrolledLoss() {
    let model = SmoothMixture(seed: 3)
    let (train, valid) = batches(seed: 4)
    let sgd = SGD(parameters: model.weights, learningRate: 0.5, momentum: 0.9, weightDecay: 3e-4)
    model.loss(train).backward()  // one real step, so momentum takes part in the virtual step
    sgd.step()
    for w in model.weights { w.zeroGrad() }
    model.alpha.zeroGrad()

    let architect = Architect(network: model, settings: ArchitectSettings(unrolled: true))
    architect.unrolledGradients(train: train, valid: valid, weightOptimizer: sgd)
    let unrolled = model.alpha.grad!.scalars
    architect.firstOrderGradients(valid: valid)
    let firstOrder = model.alpha.grad!.scalars

    var numeric: [Float] = []
    for j in 0..<3 {
      let v = model.alpha.pointer[j]
      model.alpha.pointer[j] = v + 1e-2
      let plus = unrolledValidationLoss(model, train, valid, sgd)
      model.alpha.pointer[j] = v - 1e-2
      let minus = unrolledValidationLoss(model, train, valid, sgd)
      model.alpha.pointer[j] = v
      numeric.append(Float((plus - minus) / 2e-2))
    }
    assertClose(unrolled, numeric, tolerance: 1e-2, "second-order ∇α")
    // The check tells the orders apart: the first-order gradient misses the implicit term.
    let scale = Double(numeric.map(abs).max()!)
    let firstOrderError = zip(firstOrder, numeric).map { Double(abs($0 - $1)) }.max()! / scale
    XCTAssertGreaterThan(firstOrderError, 0.2)
  }

  /// With either stem (the ImageNet stem's network on 32 × 32 inputs, the least it takes).
  func testUnrolledStepOnTheSearchNetworkRestoresWeightsAndStatistics() throws {
    for (stem, side) in [(NetworkStem.cifar, 8), (.imagenet, 32)] {
      var rng = SeededGenerator(seed: 4)
      var config = NetworkConfig(initChannels: 4, layers: 3, classes: 3, partialChannels: 2, steps: 2, multiplier: 2)
      config.stem = stem
      let net = try SearchNetwork(config: config, rng: &rng)
      let train = LabeledBatch(images: Tensor.randomNormal([2, 3, side, side], using: &rng), labels: [0, 1])
      let valid = LabeledBatch(images: Tensor.randomNormal([2, 3, side, side], using: &rng), labels: [2, 0])
      let sgd = SGD(parameters: net.parameters(), learningRate: 0.1, momentum: 0.9, weightDecay: 3e-4)
      let weightsBefore = net.parameters().map(\.scalars)
      let alphaBefore = net.arch.alphasNormal.scalars
      let architect = Architect(network: net, settings: ArchitectSettings(unrolled: true))
      architect.step(train: train, valid: valid, weightOptimizer: sgd)
      XCTAssertEqual(net.parameters().map(\.scalars), weightsBefore, "\(stem): weights restored after the virtual step")
      XCTAssertTrue(net.parameters().allSatisfy { $0.requiresGrad }, "\(stem): weights unfrozen again")
      XCTAssertNotEqual(net.arch.alphasNormal.scalars, alphaBefore, "\(stem): Adam moved α")
      // Adam's first step moves every parameter with a non-zero gradient by ≈ lr.
      let moved = zip(net.arch.alphasNormal.scalars, alphaBefore).map { abs($0 - $1) }.max()!
      XCTAssertEqual(moved, 6e-4, accuracy: 1e-4, "\(stem)")
      XCTAssertEqual(net.genotype().normal.count, 2 * config.steps, "\(stem): a genotype derives")
    }
  }
}

final class GenotypeTests: XCTestCase {
  let primitives = SearchSpace.darts.names

  func testDerivationOnHandMadeWeights() {
    // 14 edges; node 2 = edges 0-1, node 3 = 2-4, node 4 = 5-8, node 5 = 9-13.
    var ops = [[Float]](repeating: [Float](repeating: 0.1, count: 8), count: 14)
    var edges = [Float](repeating: 0.5, count: 14)
    ops[0][4] = 0.5
    ops[1][7] = 0.4  // node 2: sep_conv_3x3 from 0, dil_conv_5x5 from 1
    ops[2][0] = 0.9  // 'none' is ignored, however large
    ops[3][3] = 0.3
    ops[4][1] = 0.35  // node 3: max_pool from 2 beats skip from 1
    ops[5][5] = 0.6
    ops[8][6] = 0.6  // node 4: equal α on inputs 0 and 3 ...
    edges[5] = 0.2
    edges[8] = 0.5  // ... so β ranks input 3 first
    ops[9][2] = 0.7
    ops[13][4] = 0.8
    let g = Genotype.derive(normal: (ops, edges), reduce: (ops, edges), primitives: primitives)
    XCTAssertEqual(
      g.normal,
      [
        GenotypeEdge(op: "sep_conv_3x3", input: 0), GenotypeEdge(op: "dil_conv_5x5", input: 1),
        GenotypeEdge(op: "max_pool_3x3", input: 2), GenotypeEdge(op: "skip_connect", input: 1),
        GenotypeEdge(op: "dil_conv_3x3", input: 3), GenotypeEdge(op: "sep_conv_5x5", input: 0),
        GenotypeEdge(op: "sep_conv_3x3", input: 4), GenotypeEdge(op: "avg_pool_3x3", input: 0),
      ])
    XCTAssertEqual(g.normalConcat, [2, 3, 4, 5])
  }

  func testTextFormsRoundTrip() throws {
    let g = Genotype(
      normal: [GenotypeEdge(op: "sep_conv_3x3", input: 1), GenotypeEdge(op: "skip_connect", input: 0)],
      normalConcat: [2, 3, 4, 5],
      reduce: [GenotypeEdge(op: "max_pool_3x3", input: 0), GenotypeEdge(op: "dil_conv_5x5", input: 2)],
      reduceConcat: [2, 3, 4, 5])
    XCTAssertEqual(
      g.pythonDescription,
      "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0)], normal_concat=range(2, 6), "
        + "reduce=[('max_pool_3x3', 0), ('dil_conv_5x5', 2)], reduce_concat=range(2, 6))")
    XCTAssertEqual(try Genotype(pythonDescription: g.pythonDescription), g)
    XCTAssertEqual(try Genotype(json: g.jsonString), g)
    XCTAssertTrue(g.jsonString.contains(#""normal":[["sep_conv_3x3",1],["skip_connect",0]]"#), g.jsonString)
    XCTAssertThrowsError(try Genotype(pythonDescription: "Genotype(normal=[]"))
  }
}
