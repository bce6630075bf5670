// The evaluation network (DARTS model.py's NetworkCIFAR) against PyTorch, and its parts.
//
// Tests/Fixtures/eval_network_{pcdarts_cifar,pcdarts_image}.safetensors (scripts/make_fixtures.py,
// network of scripts/darts_eval_torch.py) hold a C = 8, 5-cell network with the auxiliary head in
// training mode, its state_dict (non-trivial affine batch norms and running statistics), a
// (4, 3, 32, 32) input, and two cases computed in float64 from the same state: `nodrop.` (logits,
// auxiliary logits, loss = CE + 0.4·CE_aux, every weight's gradient, the running statistics after)
// and `drop.` (the same with drop-path 0.3 and the masks PyTorch drew, `drop.mask.cells.i._ops.j`;
// the gradients of every weight but the auxiliary head's).
// PC_DARTS_cifar and PC_DARTS_image together use every operation: both pools, identity and
// FactorizedReduce skip_connect, separable and dilated convolutions of both sizes.
// eval_network_imagenet_pcdarts_image.safetensors holds the official NetworkImageNet (stem0, stem1,
// AuxiliaryHeadImageNet) on a (2, 3, 224, 224) input with label smoothing 0.1 in both losses, and
// without the gradient of the head's 0.4 M-weight convolution (it would double the file).
import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine
import TestSupport
import XCTest

final class EvaluationNetworkTests: XCTestCase {
  // MARK: - Golden values

  // Each with the depthwise → 1×1 fusion off and on (as train-cifar runs CIFAR stems).
  func testPCDARTSCifarMatchesPyTorch() throws {
    try withDepthwiseFusionOffAndOn { try checkGolden("eval_network_pcdarts_cifar.safetensors", fused: $0) }
  }
  func testPCDARTSImageMatchesPyTorch() throws {
    try withDepthwiseFusionOffAndOn { try checkGolden("eval_network_pcdarts_image.safetensors", fused: $0) }
  }
  func testNetworkImageNetWithLabelSmoothingMatchesPyTorch() throws {
    try withDepthwiseFusionOffAndOn { try checkGolden("eval_network_imagenet_pcdarts_image.safetensors", fused: $0) }
  }

  /// A network holding exactly the fixture's state.
  private func loadNetwork(_ fixture: GoldenFixture) throws -> EvaluationNetwork {
    let config = try fixture.parameters("network")
    let genotype = try Genotype(pythonDescription: fixture.metadataString("genotype"))
    XCTAssertEqual(genotype, Genotype.published[try config.string("genotype_name")])
    var rng = SeededGenerator(seed: 99)  // every value is overwritten from the fixture
    let network = try EvaluationNetwork(
      config: EvaluationConfig(
        initChannels: try config.int("C"), layers: try config.int("layers"), classes: try config.int("num_classes"),
        auxiliary: true, stem: (try? config.string("stem")).flatMap(NetworkStem.init(rawValue:)) ?? .cifar),
      genotype: genotype, rng: &rng)
    let names = Set(network.stateTensors().map(\.0))
    let stateNames = fixture.names.filter { !$0.contains(".") || !$0.hasPrefix("nodrop.") && !$0.hasPrefix("drop.") }
      .filter { $0 != "input" && $0 != "target" }
    XCTAssertEqual(
      names, stateNames,
      "state names differ (only in the file: \(stateNames.subtracting(names).sorted().prefix(5)), "
        + "only in the network: \(names.subtracting(stateNames).sorted().prefix(5)))")
    try CheckpointTensors.restore(
      fixture.file.tensors.filter { names.contains($0.key) },
      into: CheckpointLayout(state: network.stateTensors(), requiresOptimizerState: false))
    return network
  }

  private func checkGolden(_ file: String, fused: Bool) throws {
    let fixture = try GoldenFixture(file)
    let fileName = file + (fused ? " (fused)" : "")
    let config = try fixture.parameters("network")
    XCTAssertEqual(
      try loadNetwork(fixture).weightCountExcludingAuxiliary, Int(try fixture.metadataString("param_count")))
    XCTAssertEqual(try loadNetwork(fixture).weightCount, Int(try fixture.metadataString("param_count_total")))
    let input = try fixture.tensor("input")
    let labels = try fixture.integers("target").map { Int32($0) }
    let weight = try config.float("auxiliary_weight")
    let smoothing = (try? config.float("label_smoothing")) ?? 0
    var report: [(String, Double)] = []
    for case_ in ["nodrop", "drop"] {
      // Each case from the stored state, as the generator computes each from a fresh copy.
      let network = try loadNetwork(fixture)
      var (asked, masks): (Set<String>, [String: [Bool]]) = ([], [:])
      if case_ == "drop" {
        network.dropPathProbability = try config.float("drop_path_prob")
        for name in fixture.names where name.hasPrefix("drop.mask.") {
          masks[String(name.dropFirst("drop.mask.".count))] = try fixture.tensor(name).scalars.map { $0 != 0 }
        }
        network.dropPathMasks = { cell, op, samples in
          let key = "cells.\(cell)._ops.\(op)"
          asked.insert(key)
          guard let mask = masks[key], mask.count == samples else {
            XCTFail("\(fileName): no mask of \(samples) samples for \(key)")
            return Array(repeating: true, count: samples)
          }
          return mask
        }
      }
      let (logits, auxiliary) = network(input)
      XCTAssertEqual(asked, Set(masks.keys), "\(fileName): the operations drop-path applies to")
      let auxiliaryLogits = try XCTUnwrap(auxiliary, "training mode with a head gives auxiliary logits")
      let loss = add(
        crossEntropy(logits, labels: labels, labelSmoothing: smoothing),
        scale(crossEntropy(auxiliaryLogits, labels: labels, labelSmoothing: smoothing), by: weight))
      func compare(_ actual: Tensor, _ key: String) throws {
        let expected = try fixture.tensor(key)
        report.append((key, relativeError(actual.scalars, expected.scalars)))
        // Float32 against float64. The outputs agree to 1e-5, as the search network's. The
        // gradients less closely: the head's last batch norm normalises over 4 values (batch 4 at
        // 1×1), whose backward amplifies rounding; PyTorch in float32 is itself up to 4.2e-5 off
        // the float64 gradients on these states (scripts/make_fixtures.py prints it).
        let tolerance = key.contains(".grad.") ? 1e-4 : 1e-5
        assertClose(actual, expected, tolerance: tolerance, "\(fileName): \(key)")
      }
      try compare(logits, case_ + ".logits")
      try compare(auxiliaryLogits, case_ + ".logits_aux")
      try compare(reshape(loss, [1]), case_ + ".loss")
      // The library's loss is the same sum.
      network.zeroGrad()
      loss.backward()
      var checked = 0
      // The fixture has the head's gradients without drop-path only (they would triple the file).
      for (name, parameter) in network.namedParameters() where case_ == "nodrop" || !name.hasPrefix("auxiliary_head.") {
        guard fixture.has(case_ + ".grad." + name) || name != "auxiliary_head.features.5.weight" else { continue }
        try compare(try XCTUnwrap(parameter.grad, "\(name) got no gradient"), case_ + ".grad." + name)
        checked += 1
      }
      XCTAssertEqual(checked, fixture.names.filter { $0.hasPrefix(case_ + ".grad.") }.count, "every gradient compared")
      if case_ == "nodrop" {
        for (name, buffer) in network.namedBuffers() where !name.hasSuffix("num_batches_tracked") {
          try compare(buffer, "nodrop.after." + name)
        }
      }
    }
    let worst = report.max { $0.1 < $1.1 }!
    print(
      String(
        format: "golden %@: %d comparisons, largest relative error %.2e (%@)", fileName, report.count, worst.1, worst.0)
    )
  }

  func testTheLibraryLossIsCrossEntropyPlusTheWeightedAuxiliaryLoss() throws {
    var rng = SeededGenerator(seed: 5)
    let network = try EvaluationNetwork(
      config: EvaluationConfig(initChannels: 4, layers: 3, classes: 10), genotype: Genotype.published["DARTS_V2"]!,
      rng: &rng)
    let x = Tensor.randomNormal([2, 3, 32, 32], using: &rng)
    let labels: [Int32] = [3, 7]
    let (loss, logits) = withNoGrad { network.loss(x, labels: labels, auxiliaryWeight: 0.4) }
    let (again, auxiliary) = withNoGrad { network(x) }
    let expected = withNoGrad {
      crossEntropy(again, labels: labels).item + 0.4 * crossEntropy(auxiliary!, labels: labels).item
    }
    XCTAssertEqual(loss.item, expected, accuracy: 1e-6)
    assertClose(logits, again, tolerance: 0)
    network.train(false)
    XCTAssertNil(withNoGrad { network(x) }.auxiliaryLogits, "no auxiliary logits in evaluation mode")
  }

  /// The auxiliary head's 5×5 pool and 2×2 convolution end at 1×1 (its classifier takes 768
  /// features) for maps of 8 to 10 pixels after the reductions (7 or 8 in the ImageNet variant):
  /// ``inputSizeProblem(height:width:auxiliaryHead:stem:)`` accepts exactly the image sizes that give
  /// those, and each of them trains.
  func testTheAuxiliaryHeadTakesExactlyTheImageSizesItsPoolingEndsAtOneByOne() throws {
    for (stem, accepted, tooSmall, tooLarge) in [
      (NetworkStem.cifar, [32, 36, 40], [28], [44, 64]), (.imagenet, [224, 256], [192], [288]),
    ] {
      var rng = SeededGenerator(seed: 6)
      let network = try EvaluationNetwork(
        config: EvaluationConfig(initChannels: 4, layers: 3, classes: 5, stem: stem),
        genotype: Genotype.published["PC_DARTS_image"]!, rng: &rng)
      for side in accepted {
        XCTAssertNil(inputSizeProblem(height: side, width: side, auxiliaryHead: true, stem: stem), "\(stem) \(side)")
        let (_, auxiliary) = withNoGrad { network(Tensor.randomNormal([2, 3, side, side], using: &rng)) }
        XCTAssertEqual(auxiliary?.shape, [2, 5], "\(stem) \(side)")
      }
      XCTAssertNil(inputSizeProblem(height: accepted[0], width: accepted.last!, auxiliaryHead: true, stem: stem))
      for side in tooSmall {
        let problem = inputSizeProblem(height: side, width: side, auxiliaryHead: true, stem: stem)
        XCTAssertTrue(problem?.contains("at least \(accepted[0]) × \(accepted[0])") ?? false, problem ?? "nil")
      }
      for side in tooLarge {
        let problem = inputSizeProblem(height: accepted[0], width: side, auxiliaryHead: true, stem: stem)
        let sizes = stem == .cifar ? "32, 36 or 40 pixels a side" : "224 or 256 pixels a side"
        XCTAssertTrue(problem?.contains(sizes) ?? false, problem ?? "nil")
        XCTAssertTrue(problem?.contains("\(accepted[0]) × \(side)") ?? false, problem ?? "nil")
        XCTAssertNil(inputSizeProblem(height: side, width: side, auxiliaryHead: false, stem: stem), "no head")
      }
    }
  }

  // MARK: - Drop-path

  func testDropPathDropsWholeSamplesOfNonIdentityOperationsInTrainingOnly() throws {
    var rng = SeededGenerator(seed: 8)
    let network = try EvaluationNetwork(
      config: EvaluationConfig(initChannels: 4, layers: 3, classes: 10, auxiliary: false),
      genotype: Genotype.published["DARTS_V2"]!, rng: &rng)
    let x = Tensor.randomNormal([3, 3, 32, 32], using: &rng)
    var asked: [(Int, Int)] = []
    network.dropPathProbability = 0.25
    network.dropPathMasks = { cell, op, samples in
      asked.append((cell, op))
      return Array(repeating: true, count: samples)
    }
    // Every sample kept: each non-identity path is scaled by 1/0.75 instead.
    let kept = withNoGrad { network(x).logits }
    let identities = network.cells.modules.map { $0.dropsPath.filter { !$0 }.count }
    XCTAssertEqual(asked.count, 3 * 8 - identities.reduce(0, +), "one mask per non-identity operation")
    XCTAssertGreaterThan(identities[0], 0, "DARTS_V2's normal cell has identities (skip_connect)")
    for (cell, op) in asked { XCTAssertTrue(network.cells[cell].dropsPath[op], "cell \(cell) op \(op)") }
    network.dropPathProbability = 0
    let plain = withNoGrad { network(x).logits }
    XCTAssertGreaterThan(relativeError(kept.scalars, plain.scalars), 1e-3, "kept paths are scaled by 1/keep")
    // Evaluation mode ignores drop-path.
    network.dropPathProbability = 0.25
    network.train(false)
    let evaluated = withNoGrad { network(x).logits }
    network.dropPathProbability = 0
    assertClose(evaluated, withNoGrad { network(x).logits }, tolerance: 0, "evaluation mode")

    // Masks drawn from the seeded generator: about 1 − p of the samples kept, reproducibly.
    network.train(true)
    network.dropPathMasks = nil
    network.dropPathProbability = 0.3
    network.dropPathGenerator = SeededGenerator(seed: 1)
    _ = withNoGrad { network(x) }
    let after = network.dropPathGenerator.state
    network.dropPathGenerator = SeededGenerator(seed: 1)
    _ = withNoGrad { network(x) }
    XCTAssertEqual(network.dropPathGenerator.state, after, "the same draws from the same state")
  }

  // MARK: - Shapes, names and counts

  func testParameterCountsAreTheOfficialOnes() throws {
    // count_parameters_in_MB of the official code (auxiliary head excluded), at C = 36, 20 cells:
    // PC_DARTS_cifar 3.634678 MB and DARTS_V2 3.349342 MB (the PC-DARTS and DARTS papers' 3.6M
    // and 3.3M); PC_DARTS_image from the fixture generator's PyTorch network.
    let image = try GoldenFixture("eval_network_pcdarts_image.safetensors").metadataString("mb_c36_l20")
    for (name, expected) in [("PC_DARTS_cifar", "3.634678"), ("DARTS_V2", "3.349342"), ("PC_DARTS_image", image)] {
      var rng = SeededGenerator(seed: 1)
      let network = try EvaluationNetwork(
        config: EvaluationConfig(), genotype: Genotype.published[name]!, rng: &rng)
      XCTAssertEqual(String(format: "%.6f", Double(network.weightCountExcludingAuxiliary) / 1e6), expected, name)
      XCTAssertGreaterThan(network.weightCount, network.weightCountExcludingAuxiliary)
    }
    // NetworkImageNet as train_imagenet.py builds it (C = 48, 14 cells, 1000 classes): the paper's
    // 5.3M for PC_DARTS_image; the figure from the fixture generator's PyTorch network.
    let imagenet = try GoldenFixture("eval_network_imagenet_pcdarts_image.safetensors").metadataString("mb_c36_l20")
    XCTAssertEqual(imagenet, "5.342464")
    var imagenetRng = SeededGenerator(seed: 1)
    let imagenetNetwork = try EvaluationNetwork(
      config: EvaluationConfig(initChannels: 48, layers: 14, classes: 1000, stem: .imagenet),
      genotype: Genotype.published["PC_DARTS_image"]!, rng: &imagenetRng)
    XCTAssertEqual(String(format: "%.6f", Double(imagenetNetwork.weightCountExcludingAuxiliary) / 1e6), imagenet)
    XCTAssertEqual(
      imagenetNetwork.namedParameters().map(\.0).filter { $0.hasPrefix("stem") }.sorted(),
      [
        "stem0.0.weight", "stem0.1.bias", "stem0.1.weight", "stem0.3.weight", "stem0.4.bias", "stem0.4.weight",
        "stem1.1.weight", "stem1.2.bias", "stem1.2.weight",
      ])
    // Names of the official state_dict.
    var rng = SeededGenerator(seed: 1)
    let network = try EvaluationNetwork(config: EvaluationConfig(), genotype: Genotype.published["PCDARTS"]!, rng: &rng)
    let names = Set(network.stateTensors().map(\.0))
    for name in [
      "stem.0.weight", "stem.1.running_var", "cells.0.preprocess0.op.1.weight", "cells.7.preprocess0.conv_1.weight",
      "cells.3._ops.0.op.1.weight", "cells.6._ops.0.op.5.weight", "auxiliary_head.features.2.weight",
      "auxiliary_head.features.6.num_batches_tracked", "auxiliary_head.classifier.weight", "classifier.weight",
    ] {
      XCTAssertTrue(names.contains(name), name)
    }
    XCTAssertEqual(network.cells.modules.filter(\.reduction).count, 2)
    XCTAssertTrue(network.cells[6].reduction && network.cells[13].reduction)
  }

  func testGenotypesTheCellsCannotBeBuiltFromAreRejected() throws {
    let good = Genotype.published["PC_DARTS_cifar"]!
    var laterNode = good
    laterNode.normal[2] = GenotypeEdge(op: "sep_conv_3x3", input: 3)
    var odd = good
    odd.reduce.removeLast()
    var concat = good
    concat.normalConcat = [2, 6]
    var unknown = good
    unknown.normal[0] = GenotypeEdge(op: "conv_7x1_1x7", input: 0)
    for (what, genotype, words) in [
      ("later node", laterNode, ["normal edge 2", "node 3", "0...2"]), ("odd edges", odd, ["reduce has 7 edges"]),
      ("concat", concat, ["normal_concat [2, 6]", "0...5"]), ("unknown op", unknown, ["conv_7x1_1x7", "sep_conv_5x5"]),
    ] {
      XCTAssertThrowsError(try genotype.validate(), what) { error in
        for word in words { XCTAssertTrue("\(error)".contains(word), "\(what): '\(word)' not in \(error)") }
      }
    }
    // A client's candidate without an evaluation form can be searched over but not trained.
    let space = SearchSpace.darts.adding(
      Primitive(name: "conv_7x1_1x7") { c, s, rng in
        Conv2d(inChannels: c, outChannels: c, kernelSize: 1, stride: s, rng: &rng)
      })
    XCTAssertThrowsError(try unknown.validate(space: space))
  }
}
