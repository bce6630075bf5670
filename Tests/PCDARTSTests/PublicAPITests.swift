// The public surface as another Swift tool sees it: plain imports only (no @testable), so a
// symbol these tests need cannot silently become internal.
//
// Legend: N batch, E edges per cell (14), P primitives (9 here: DARTS's 8 plus conv_1x1).

import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine
import XCTest

/// ReLU → 1×1 convolution (stride s) → non-affine batch norm, defined outside the package.
private final class Conv1x1: Layer {
  let op: Sequential

  init(channels: Int, stride: Int, rng: inout SeededGenerator) {
    op = Sequential([
      ReLU(),
      Conv2d(inChannels: channels, outChannels: channels, kernelSize: 1, stride: stride, rng: &rng),
      BatchNorm2d(channels: channels, affine: false),
    ])
  }

  override var children: [(String, Module)] { [("op", op)] }
  override func callAsFunction(_ x: Tensor) -> Tensor { op(x) }
}

private let conv1x1 = Primitive(name: "conv_1x1") { channels, stride, rng in
  Conv1x1(channels: channels, stride: stride, rng: &rng)
}

/// DARTS's eight candidates plus conv_1x1 as column 8.
private let space = SearchSpace.darts.adding(conv1x1)

/// 5 cells of 8 initial channels, K = 2: reduction cells 1 and 3.
private let smallConfig = NetworkConfig(initChannels: 8, layers: 5, classes: 10, partialChannels: 2)

/// N random (3, H, W) images with random labels.
private func randomBatch(_ n: Int, side: Int = 8, using rng: inout SeededGenerator) -> LabeledBatch {
  LabeledBatch(
    images: Tensor.randomNormal([n, 3, side, side], using: &rng),
    labels: (0..<n).map { _ in Int32(rng.nextInt(below: 10)) })
}

/// Settings for a search of the smallest network on `tinyDataset(count: 12, …)`: 6 search-train
/// images in batches of 3, so 2 steps, each with an architecture update.
private func tinySettings() -> SearchSettings { tinySearchSettings(seed: 5) }

final class PublicAPITests: XCTestCase {
  func testACustomPrimitiveGetsAnAlphaColumnAndNamedWeights() throws {
    XCTAssertEqual(space.names.last, "conv_1x1")
    XCTAssertEqual(space.count, 9)
    XCTAssertEqual(Array(space.names.prefix(8)), SearchSpace.darts.names)

    var rng = SeededGenerator(seed: 0)
    let network = try SearchNetwork(config: smallConfig, space: space, rng: &rng)
    XCTAssertEqual(network.arch.alphasNormal.shape, [14, 9])
    XCTAssertEqual(network.arch.alphasReduce.shape, [14, 9])
    let names = Set(network.stateTensors().map(\.0))
    // Edge 0 of cell 0, candidate 8, built for C/K = 4 channels.
    for name in [
      "cells.0._ops.0._ops.8.op.1.weight", "cells.0._ops.0._ops.8.op.2.running_mean",
      "cells.1._ops.0._ops.8.op.1.weight",
    ] {
      XCTAssertTrue(names.contains(name), "missing \(name)")
    }
    let weight = network.stateTensors().first { $0.0 == "cells.0._ops.0._ops.8.op.1.weight" }!.1
    XCTAssertEqual(weight.shape, [4, 4, 1, 1])
  }

  func testTheCustomPrimitiveHonoursTheStrideOfAReductionEdge() throws {
    var rng = SeededGenerator(seed: 1)
    let op = conv1x1.make(4, 2, &rng)
    XCTAssertEqual(op(Tensor.randomNormal([2, 4, 8, 8], using: &rng)).shape, [2, 4, 4, 4])
    let edge = MixedOp(channels: 8, stride: 2, partialChannels: 2, space: space, rng: &rng)
    let weights = softmax(Tensor(zeros: [space.count]))
    XCTAssertEqual(edge(Tensor.randomNormal([2, 8, 8, 8], using: &rng), weights: weights).shape, [2, 8, 4, 4])
  }

  func testALargeAlphaMakesTheCustomPrimitiveWinTheGenotype() throws {
    var rng = SeededGenerator(seed: 2)
    let network = try SearchNetwork(config: smallConfig, space: space, rng: &rng)
    let column = space.names.firstIndex(of: "conv_1x1")!
    for alphas in [network.arch.alphasNormal, network.arch.alphasReduce] {
      for edge in 0..<alphas.shape[0] { alphas.pointer[edge * alphas.shape[1] + column] = 5 }
    }
    let genotype = network.genotype()
    XCTAssertEqual(genotype.normal.count, 8)
    XCTAssertEqual(genotype.reduce.count, 8)
    XCTAssertTrue((genotype.normal + genotype.reduce).allSatisfy { $0.op == "conv_1x1" }, genotype.pythonDescription)
    // Both text forms carry the custom name and parse back.
    XCTAssertEqual(try Genotype(pythonDescription: genotype.pythonDescription), genotype)
    XCTAssertEqual(try Genotype(json: genotype.jsonString), genotype)
  }

  func testTheNetworkTakesAnArchitectureAndAWeightStep() throws {
    var rng = SeededGenerator(seed: 3)
    let network = try SearchNetwork(config: smallConfig, space: space, rng: &rng)
    let sgd = SGD(parameters: network.parameters(), learningRate: 0.05, momentum: 0.9, weightDecay: 3e-4)
    let architect = Architect(network: network)
    let (train, valid) = (randomBatch(4, using: &rng), randomBatch(4, using: &rng))
    let customWeight = network.stateTensors().first { $0.0 == "cells.0._ops.0._ops.8.op.1.weight" }!.1
    let (alphaBefore, weightBefore) = (network.arch.alphasNormal.scalars, customWeight.scalars)

    let validLoss = architect.step(train: train, valid: valid, weightOptimizer: sgd)
    XCTAssertTrue(validLoss.isFinite)
    XCTAssertNotEqual(network.arch.alphasNormal.scalars, alphaBefore, "the architecture step moved no α")
    XCTAssertEqual(customWeight.scalars, weightBefore, "a first-order architecture step changed a weight")

    sgd.zeroGrad()
    let trainLoss = network.withFrozenArchitecture {
      let loss = network.loss(train)
      loss.backward()
      return loss.item
    }
    XCTAssertTrue(trainLoss.isFinite)
    XCTAssertNotNil(customWeight.grad, "no gradient reached the custom primitive")
    XCTAssertTrue(network.arch.all.allSatisfy(\.requiresGrad), "the architecture stayed frozen")
    clipGradientNorm(network.parameters(), maxNorm: 5)
    sgd.step()
    XCTAssertNotEqual(customWeight.scalars, weightBefore, "the weight step did not move the custom weight")
  }

  func testSearchRunCallsOnStepOncePerTrainingBatchAndOnEpochOnce() throws {
    let run = try SearchRun(settings: tinySettings(), data: tinyDataset(count: 12, seed: 1), space: space)
    XCTAssertEqual(run.network.arch.alphasNormal.shape, [14, 9])
    var seen: [StepProgress] = []
    var epochs: [EpochRecord] = []
    run.onStep = { seen.append($0) }
    run.onEpoch = { epochs.append($0) }
    let record = try run.runEpoch()
    XCTAssertEqual(epochs, [record], "onEpoch reports each epoch's record once")
    let steps = run.trainLoader.batchesPerEpoch
    XCTAssertEqual(steps, 2)
    XCTAssertEqual(seen.map(\.step), Array(1...steps))
    XCTAssertTrue(seen.allSatisfy { $0.steps == steps && $0.epoch == 0 })
    XCTAssertEqual(record.epoch, 0)
    XCTAssertTrue(record.archUpdates)
    XCTAssertEqual(run.history, [record])
    XCTAssertEqual(run.nextEpoch, 1)
  }

  func testACheckpointRestoresTheRunExactly() throws {
    let data = tinyDataset(count: 12, seed: 2)
    let run = try SearchRun(settings: tinySettings(), data: data, space: space)
    try run.runEpoch()
    let folder = FileManager.default.temporaryDirectory
      .appendingPathComponent("PublicAPITests-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: folder) }
    let directory = try RunDirectory(folder.path)
    try directory.writeEpoch(run)
    XCTAssertTrue(directory.hasCheckpoint)

    let file = try SafeTensorsFile.read(from: directory.checkpointURL)
    XCTAssertEqual(file, run.checkpoint())
    for name in [
      "stem.0.weight", "cells.0._ops.0._ops.8.op.1.weight", "alphas_normal", "betas_reduce",
      "optimizer.sgd.momentum_buffer.cells.0._ops.0._ops.8.op.1.weight",
      "optimizer.adam.exp_avg.alphas_normal", "optimizer.adam.step",
    ] {
      XCTAssertNotNil(file.tensors[name], "checkpoint lacks \(name)")
    }

    let resumed = try SearchRun(settings: tinySettings(), data: data, space: space)
    try resumed.restore(from: file)
    XCTAssertEqual(resumed.nextEpoch, 1)
    XCTAssertEqual(resumed.history, run.history)
    XCTAssertEqual(resumed.network.genotype(), run.network.genotype())
    for ((name, a), (_, b)) in zip(
      run.network.stateTensors() + run.network.arch.named,
      resumed.network.stateTensors() + resumed.network.arch.named)
    {
      XCTAssertEqual(a.scalars, b.scalars, name)
    }
    XCTAssertEqual(resumed.checkpoint(), run.checkpoint())
    // Both continue identically from there.
    XCTAssertEqual(try resumed.runEpoch().trainLoss, try run.runEpoch().trainLoss)
  }

  func testTheSearchIterationStopsBeforeAnyUpdateFromANonFiniteLoss() throws {
    var settings = tinySettings()
    settings.network.classes = 10
    let search = try SearchIteration(settings: settings, space: space)
    var rng = SeededGenerator(seed: 4)
    let (train, valid) = (randomBatch(4, using: &rng), randomBatch(4, using: &rng))
    let result = try search.run(train: train, valid: valid, epoch: 0, step: 1)
    XCTAssertTrue(result.trainLoss.isFinite && (result.validLoss ?? .nan).isFinite)
    XCTAssertEqual(search.architect.optimizer.stepCount, 1)

    // Parameters only: a forward pass updates the batch-norm statistics, as in PyTorch.
    let state = (search.network.namedParameters() + search.network.arch.named).map { ($0.0, $0.1.scalars) }
    let moments = search.architect.optimizer.firstMoments.map(\.scalars)
    let poisoned = valid.images.copy()
    poisoned.pointer[0] = .nan
    XCTAssertThrowsError(
      try search.run(
        train: train, valid: LabeledBatch(images: poisoned, labels: valid.labels),
        epoch: 3, step: 7)
    ) { error in
      guard case SearchError.nonFiniteLoss(let loss) = error else { return XCTFail("\(error)") }
      XCTAssertEqual(
        [loss.phase == .architectureStep, loss.epoch == 3, loss.step == 7], [true, true, true], "\(loss)")
      XCTAssertEqual(loss.settingsToLower.first, "architect.learningRate")
    }
    XCTAssertEqual(search.architect.optimizer.stepCount, 1, "Adam took the non-finite step")
    XCTAssertEqual(search.architect.optimizer.firstMoments.map(\.scalars), moments)
    for (name, values) in state {
      let now = (search.network.namedParameters() + search.network.arch.named).first { $0.0 == name }!.1.scalars
      XCTAssertTrue(zip(now, values).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }, "\(name) changed")
    }
  }

  func testASettingOutOfRangeIsNamedByItsPathNotByAFlag() {
    var settings = SearchSettings()
    settings.architect.weightDecay = -1
    XCTAssertThrowsError(try settings.validate()) { error in
      XCTAssertEqual(error as? SearchError, .invalidSetting("architect.weightDecay", "must be ≥ 0, got -1.0"))
      XCTAssertFalse("\(error)".contains("--"), "\(error)")
    }
    settings = SearchSettings()
    settings.network.partialChannels = 3
    XCTAssertThrowsError(try settings.validate()) { error in
      guard case SearchError.invalidSetting("network.partialChannels", let problem) = error else {
        return XCTFail("\(error)")
      }
      XCTAssertTrue(problem.contains("K = 3") && problem.contains("16 channels"), problem)
    }
    XCTAssertEqual(SearchSettings().value(of: "network.layers"), "8")
    XCTAssertNil(SearchSettings().value(of: "no.such.setting"))
  }
}
