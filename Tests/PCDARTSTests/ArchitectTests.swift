import PCDARTS
import TensorEngine
import TestSupport
import XCTest

final class ArchitectTests: XCTestCase {
  func makeSetup(seed: UInt64) throws -> (SearchNetwork, LabeledBatch, LabeledBatch, SGD) {
    var rng = SeededGenerator(seed: seed)
    let net = try SearchNetwork(
      config: NetworkConfig(initChannels: 4, layers: 3, classes: 3, partialChannels: 1, steps: 2, multiplier: 2),
      rng: &rng)
    // Larger architecture parameters than the 1e-3 init, so the softmax is far from uniform.
    for p in net.arch.all { for j in 0..<p.count { p.pointer[j] = 0.5 * rng.nextNormal() } }
    let train = LabeledBatch(images: Tensor.randomNormal([3, 3, 8, 8], using: &rng), labels: [0, 1, 2])
    let valid = LabeledBatch(images: Tensor.randomNormal([3, 3, 8, 8], using: &rng), labels: [2, 0, 1])
    let sgd = SGD(parameters: net.parameters(), learningRate: 0.05, momentum: 0.9, weightDecay: 3e-4)
    // One real weight step, so that momentum buffers take part in the virtual step.
    net.loss(train.images, labels: train.labels).backward()
    sgd.step()
    return (net, train, valid, sgd)
  }

  /// L_val(w′(α), α) with w′ = w − ξ(μ·buf + ∇_w L_train(w, α) + wd·w), computed directly.
  func unrolledValidationLoss(_ net: SearchNetwork, _ train: LabeledBatch, _ valid: LabeledBatch, _ sgd: SGD) -> Double {
    let weights = net.parameters()
    let saved = weights.map { $0.copy() }
    for w in weights { w.zeroGrad() }
    net.setArchitectureTrainable(false)
    net.loss(train.images, labels: train.labels).backward()
    net.setArchitectureTrainable(true)
    for (i, w) in weights.enumerated() {
      for j in 0..<w.count {
        let moment = sgd.momentumBuffers[i].map { sgd.momentum * $0.pointer[j] } ?? 0
        w.pointer[j] -= sgd.learningRate * (moment + w.grad!.pointer[j] + sgd.weightDecay * w.pointer[j])
      }
    }
    let loss = withNoGrad { net.loss(valid.images, labels: valid.labels).item }
    for (w, s) in zip(weights, saved) { w.assign(s); w.zeroGrad() }
    return Double(loss)
  }

  func testSecondOrderGradientMatchesFiniteDifferencesOfTheUnrolledLoss() throws {
    let (net, train, valid, sgd) = try makeSetup(seed: 3)
    let architect = Architect(network: net, settings: ArchitectSettings(unrolled: true))
    architect.unrolledGradients(train: train, valid: valid, weightOptimizer: sgd)
    let unrolled = net.arch.all.map { $0.grad!.scalars }
    architect.firstOrderGradients(valid: valid)
    let firstOrder = net.arch.all.map { $0.grad!.scalars }

    var numeric: [Float] = [], analytic: [Float] = [], naive: [Float] = []
    let h: Float = 1e-2
    for (k, p) in net.arch.all.enumerated() {
      for j in stride(from: 0, to: p.count, by: max(1, p.count / 6)) {
        let v = p.pointer[j]
        p.pointer[j] = v + h
        let plus = unrolledValidationLoss(net, train, valid, sgd)
        p.pointer[j] = v - h
        let minus = unrolledValidationLoss(net, train, valid, sgd)
        p.pointer[j] = v
        numeric.append(Float((plus - minus) / Double(2 * h)))
        analytic.append(unrolled[k][j])
        naive.append(firstOrder[k][j])
      }
    }
    print("analytic", analytic); print("numeric", numeric); print("first", naive)
    assertClose(analytic, numeric, tolerance: 3e-2, "second-order ∇α")
    // The check can tell the orders apart: the first-order gradient is far off.
    let scale = Double(numeric.map(abs).max()!)
    let firstOrderError = zip(naive, numeric).map { Double(abs($0 - $1)) }.max()! / scale
    XCTAssertGreaterThan(firstOrderError, 0.1, "ξ too small for the test to distinguish the orders")
  }

  func testUnrolledStepRestoresWeightsAndStatistics() throws {
    let (net, train, valid, sgd) = try makeSetup(seed: 4)
    let before = net.stateTensors().map { $0.1.scalars }
    let architect = Architect(network: net, settings: ArchitectSettings(unrolled: true))
    let alphaBefore = net.arch.alphasNormal.scalars
    architect.step(train: train, valid: valid, weightOptimizer: sgd)
    let after = net.stateTensors()
    for ((name, t), old) in zip(after, before) where !name.contains("running") && !name.contains("num_batches") {
      XCTAssertEqual(t.scalars, old, "\(name) changed")
    }
    XCTAssertNotEqual(net.arch.alphasNormal.scalars, alphaBefore, "Adam moved α")
  }
}

final class GenotypeTests: XCTestCase {
  let primitives = SearchSpace.darts.names

  func testDerivationOnHandMadeWeights() {
    // 14 edges; node 2 = edges 0-1, node 3 = 2-4, node 4 = 5-8, node 5 = 9-13.
    var ops = [[Float]](repeating: [Float](repeating: 0.1, count: 8), count: 14)
    var edges = [Float](repeating: 0.5, count: 14)
    ops[0][4] = 0.5; ops[1][7] = 0.4  // node 2: sep_conv_3x3 from 0, dil_conv_5x5 from 1
    ops[2][0] = 0.9  // 'none' is ignored, however large
    ops[3][3] = 0.3; ops[4][1] = 0.35  // node 3: max_pool from 2 beats skip from 1
    ops[5][5] = 0.6; ops[8][6] = 0.6  // node 4: equal α on inputs 0 and 3 ...
    edges[5] = 0.2; edges[8] = 0.5  // ... so β ranks input 3 first
    ops[9][2] = 0.7; ops[13][4] = 0.8
    let g = Genotype.derive(normal: (ops, edges), reduce: (ops, edges), primitives: primitives)
    XCTAssertEqual(g.normal, [
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
    XCTAssertEqual(g.pythonDescription,
      "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0)], normal_concat=range(2, 6), "
        + "reduce=[('max_pool_3x3', 0), ('dil_conv_5x5', 2)], reduce_concat=range(2, 6))")
    XCTAssertEqual(try Genotype(pythonDescription: g.pythonDescription), g)
    XCTAssertEqual(try Genotype(json: g.jsonString), g)
    XCTAssertTrue(g.jsonString.contains(#""normal":[["sep_conv_3x3",1],["skip_connect",0]]"#), g.jsonString)
    XCTAssertThrowsError(try Genotype(pythonDescription: "Genotype(normal=[]"))
  }
}
