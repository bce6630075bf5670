import NeuralNetwork
import PCDARTS
import TensorEngine
import TestSupport
import XCTest

final class SearchNetworkTests: XCTestCase {
  func testWeightCountsMatchTheOfficialNetwork() throws {
    // sum(p.numel() for p in Network(16, 10, 8, criterion).parameters()) in the official code.
    var rng = SeededGenerator(seed: 0)
    let dartsNet = try SearchNetwork(config: NetworkConfig(partialChannels: 1), rng: &rng)
    XCTAssertEqual(dartsNet.weightCount, 1_930_618)
    let pcNet = try SearchNetwork(config: NetworkConfig(partialChannels: 4), rng: &rng)
    XCTAssertEqual(pcNet.weightCount, 299_578)
  }

  func testStateNamesFollowTheOfficialStateDict() throws {
    var rng = SeededGenerator(seed: 0)
    let net = try SearchNetwork(config: NetworkConfig(partialChannels: 4), rng: &rng)
    let names = Set(net.stateTensors().map(\.0))
    // 8 layers: reduction cells 2 and 5, so cells 3 and 6 reduce their first input.
    for expected in [
      "stem.0.weight", "stem.1.weight", "stem.1.running_mean", "stem.1.num_batches_tracked",
      "cells.0.preprocess1.op.1.weight", "cells.3.preprocess0.conv_1.weight",
      "cells.0._ops.3._ops.4.op.1.weight", "cells.0._ops.0._ops.1.1.running_mean",
      "cells.2._ops.0._ops.3.conv_2.weight", "classifier.weight", "classifier.bias",
    ] {
      XCTAssertTrue(names.contains(expected), "missing \(expected)")
    }
    XCTAssertEqual(net.arch.alphasNormal.shape, [14, 8])
    XCTAssertEqual(net.arch.betasReduce.shape, [14])
  }

  func testKThatDoesNotDivideTheChannelsFailsNamingTheCell() {
    var rng = SeededGenerator(seed: 0)
    XCTAssertThrowsError(try SearchNetwork(config: NetworkConfig(initChannels: 6, partialChannels: 4), rng: &rng)) {
      let message = "\($0)"
      XCTAssertTrue(message.contains("cell 0") && message.contains("6 channels") && message.contains("K = 4"), message)
    }
  }

  func testForwardShapesAndBackwardReachesArchitecture() throws {
    var rng = SeededGenerator(seed: 1)
    let net = try SearchNetwork(config: NetworkConfig(initChannels: 8, layers: 5, partialChannels: 2), rng: &rng)
    let x = Tensor.randomNormal([2, 3, 16, 16], using: &rng)
    let loss = net.loss(x, labels: [1, 7])
    XCTAssertEqual(loss.shape, [])
    loss.backward()
    for (name, p) in net.arch.named {
      XCTAssertNotNil(p.grad, name)
      XCTAssertGreaterThan(p.grad!.scalars.map(abs).max()!, 0, name)
    }
  }

  func testTheWeightCountFromTheShapeAloneEqualsTheBuiltNetworks() throws {
    for config in [
      NetworkConfig(), NetworkConfig(partialChannels: 1), NetworkConfig(initChannels: 8, layers: 5, partialChannels: 2),
      NetworkConfig(initChannels: 12, layers: 4, classes: 100, partialChannels: 3),
    ] {
      var rng = SeededGenerator(seed: 0)
      XCTAssertEqual(config.dartsWeightCount, try SearchNetwork(config: config, rng: &rng).weightCount, "\(config)")
    }
    XCTAssertEqual(NetworkConfig(partialChannels: 1).dartsWeightCount, 1_930_618)
  }

  func testTheMemoryEstimateFollowsAMeasuredIteration() throws {
    // One search iteration of a small network, measured, against the estimate (a ±30% guide).
    var settings = SearchSettings()
    settings.network = NetworkConfig(initChannels: 8, layers: 5, classes: 10, partialChannels: 2)
    settings.batchSize = 8
    let search = try SearchIteration(settings: settings)
    var rng = SeededGenerator(seed: 1)
    func batch() -> LabeledBatch {
      LabeledBatch(images: Tensor.randomNormal([8, 3, 32, 32], using: &rng), labels: (0..<8).map { Int32($0) })
    }
    let (train, valid) = (batch(), batch())
    try search.run(train: train, valid: valid, epoch: 0, step: 1)
    let (_, memory) = try MemoryStats.measure { try search.run(train: train, valid: valid, epoch: 0, step: 2) }
    let estimate = settings.network.estimatedPeakTensorBytes(batchSize: 8)
    let ratio = estimate / Double(memory.peakBytes)
    print(String(format: "memory estimate %.0f, measured peak %d, ratio %.3f", estimate, memory.peakBytes, ratio))
    XCTAssertTrue((0.7...1.3).contains(ratio), "estimate \(estimate) against a measured \(memory.peakBytes)")
  }
}
