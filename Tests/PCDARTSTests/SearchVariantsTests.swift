// The search variants users of PC-DARTS and DARTS ask for, each off by default: random channel
// sampling (reproducible and resumable), a cap on skip_connect in the derived normal cell, and an
// architecture step every N weight steps.

import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine
import TestSupport
import XCTest

final class SearchVariantsTests: XCTestCase {
  private func dataset(count: Int, seed: UInt64) -> ImageDataset { tinyDataset(count: count, seed: seed) }

  private func settings(epochs: Int = 2) -> SearchSettings { tinySearchSettings(epochs: epochs, seed: 9) }

  /// What must repeat exactly between two runs (all but the timings).
  private func outcome(_ records: [EpochRecord]) -> [String] {
    records.map { "\($0.trainLoss) \($0.trainAcc) \($0.validLoss) \($0.validAcc) \($0.archSteps ?? -1) \($0.genotype)" }
  }

  /// An uninterrupted run against one stopped after its first epoch, checkpointed, restored into
  /// a fresh run and finished: both outcomes, which must be equal.
  private func uninterruptedAndResumed(_ s: SearchSettings, data: ImageDataset) throws -> ([String], [String]) {
    let whole = try SearchRun(settings: s, data: data)
    while !whole.isFinished { try whole.runEpoch() }
    let first = try SearchRun(settings: s, data: data)
    try first.runEpoch()
    let resumed = try SearchRun(settings: s, data: data)
    try resumed.restore(from: first.checkpoint())
    while !resumed.isFinished { try resumed.runEpoch() }
    return (outcome(whole.history), outcome(resumed.history))
  }

  // MARK: - Random channel sampling

  func testRandomChannelSamplingIsReproducibleResumesExactlyAndDiffersFromShuffle() throws {
    let data = dataset(count: 12, seed: 1)
    var random = settings()
    random.network.channelSampling = .random
    let (whole, resumed) = try uninterruptedAndResumed(random, data: data)
    XCTAssertEqual(whole, resumed, "a resumed random-sampling run differs from an uninterrupted one")
    let again = try SearchRun(settings: random, data: data)
    while !again.isFinished { try again.runEpoch() }
    XCTAssertEqual(outcome(again.history), whole, "two runs with one seed differ")

    let shuffle = try SearchRun(settings: settings(), data: data)
    while !shuffle.isFinished { try shuffle.runEpoch() }
    XCTAssertNotEqual(outcome(shuffle.history), whole, "random sampling changed nothing")
    XCTAssertNil(shuffle.network.channelSampler)
    // The same initial weights and α/β: the generator is drawn after them.
    let fresh = (try SearchRun(settings: random, data: data), try SearchRun(settings: settings(), data: data))
    XCTAssertEqual(fresh.0.network.stateTensors().map(\.1.scalars), fresh.1.network.stateTensors().map(\.1.scalars))
    XCTAssertEqual(fresh.0.network.arch.all.map(\.scalars), fresh.1.network.arch.all.map(\.scalars))
  }

  func testEveryForwardPassDrawsNewSubsetsFromTheSeededGenerator() throws {
    var config = NetworkConfig(initChannels: 4, layers: 3, classes: 4, partialChannels: 2)
    config.channelSampling = .random
    var rng = SeededGenerator(seed: 3)
    let network = try SearchNetwork(config: config, rng: &rng)
    let x = Tensor.randomNormal([2, 3, 8, 8], using: &rng)
    let start = try XCTUnwrap(network.channelSampler)
    let (a, b) = withNoGrad { (network(x).scalars, network(x).scalars) }
    XCTAssertNotEqual(a, b, "two forward passes used the same channels")
    XCTAssertNotEqual(network.channelSampler, start)
    network.channelSampler = start
    XCTAssertEqual(withNoGrad { network(x).scalars }, a, "the generator's state fixes the subsets")
  }

  // MARK: - skip_connect cap

  func testTheSkipConnectCapReplacesTheWeakestSkipsByEachNodesNextBestChoice() {
    // Two nodes (edges 0, 1 into node 0; edges 2, 3, 4 into node 1), every edge weight 1.
    let names = SearchSpace.darts.names
    func row(_ values: [String: Float]) -> [Float] { names.map { values[$0] ?? 0.01 } }
    let normal: [[Float]] = [
      row(["skip_connect": 0.6, "sep_conv_3x3": 0.3]),
      row(["skip_connect": 0.5, "dil_conv_3x3": 0.4]),
      row(["skip_connect": 0.7, "sep_conv_5x5": 0.2]),
      row(["max_pool_3x3": 0.45]),
      row(["avg_pool_3x3": 0.35, "none": 0.9]),
    ]
    let ones = [Float](repeating: 1, count: 5)
    func derive(_ cap: Int?) -> Genotype {
      Genotype.derive(
        normal: (normal, ones), reduce: (normal, ones), primitives: names, steps: 2, multiplier: 2,
        maxSkipConnect: cap)
    }
    func edges(_ list: [(String, Int)]) -> [GenotypeEdge] { list.map { GenotypeEdge(op: $0.0, input: $0.1) } }
    let raw = derive(nil)
    XCTAssertEqual(
      raw.normal, edges([("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("max_pool_3x3", 1)]))
    XCTAssertEqual(raw.normalSkipConnectCount, 3)
    XCTAssertEqual(derive(3), raw, "a cap that is not exceeded changes nothing")
    // Cap 1: edge 1's skip (0.5) goes first, node 0 takes dil_conv_3x3 on it; then edge 0's skip
    // (0.6), and node 0 ranks dil_conv_3x3 (0.4) on input 1 before sep_conv_3x3 (0.3) on input 0.
    XCTAssertEqual(
      derive(1).normal, edges([("dil_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("max_pool_3x3", 1)]))
    // Cap 0: edge 2's skip goes too; node 1 keeps its pools (`none` is never chosen).
    XCTAssertEqual(
      derive(0).normal, edges([("dil_conv_3x3", 1), ("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("avg_pool_3x3", 2)]))
    XCTAssertEqual(derive(0).reduce, raw.reduce, "the reduction cell is not capped")
  }

  func testGenotypeJSONKeepsTheRawGenotypeAndAddsTheCappedOne() throws {
    var s = settings(epochs: 1)
    s.maxSkipConnect = 0
    let run = try SearchRun(settings: s, data: dataset(count: 12, seed: 2))
    let record = try run.runEpoch()
    XCTAssertEqual(record.genotype, run.network.genotype().pythonDescription)
    XCTAssertEqual(record.cappedGenotype, run.network.genotype(maxSkipConnect: 0).pythonDescription)
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("SearchVariants-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: folder) }
    let directory = try RunDirectory(folder.path)
    try directory.writeEpoch(run)
    let text = try String(contentsOf: folder.appendingPathComponent("genotype.json"), encoding: .utf8)
    XCTAssertEqual(try Genotype(json: text), run.network.genotype(), "the top level is the raw genotype")
    let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    XCTAssertEqual(object["max_skip_connect"] as? Int, 0)
    let capped = try JSONSerialization.data(withJSONObject: try XCTUnwrap(object["capped"]))
    let cappedGenotype = try Genotype(json: String(decoding: capped, as: UTF8.self))
    XCTAssertEqual(cappedGenotype, run.network.genotype(maxSkipConnect: 0))
    XCTAssertEqual(cappedGenotype.normalSkipConnectCount, 0)
  }

  // MARK: - Architecture step every N weight steps

  func testArchUpdateEveryChangesTheArchitectureStepsOfAnEpochAndResumesExactly() throws {
    let data = dataset(count: 24, seed: 3)  // 12 search-train images: 4 steps of 3
    var every3 = settings()
    every3.archUpdateEvery = 3
    let run = try SearchRun(settings: every3, data: data)
    let record = try run.runEpoch()
    XCTAssertEqual(run.trainLoader.batchesPerEpoch, 4)
    XCTAssertEqual(record.archSteps, 2, "steps 1 and 4 of 4")
    XCTAssertEqual(run.architect.optimizer.stepCount, 2)
    let plain = try SearchRun(settings: settings(), data: data)
    XCTAssertEqual(try plain.runEpoch().archSteps, 4)
    XCTAssertEqual(plain.architect.optimizer.stepCount, 4)

    let (whole, resumed) = try uninterruptedAndResumed(every3, data: data)
    XCTAssertEqual(whole, resumed, "a resumed run differs from an uninterrupted one")
  }

  // MARK: - Older checkpoints

  func testSettingsWrittenBeforeTheVariantsExistedStillDecodeWithTheirDefaults() throws {
    var object = try XCTUnwrap(
      try JSONSerialization.jsonObject(with: Data(SearchSettings().json.utf8)) as? [String: Any])
    object["archUpdateEvery"] = nil
    var network = try XCTUnwrap(object["network"] as? [String: Any])
    network["channelSampling"] = nil
    network["stem"] = nil
    object["network"] = network
    let old = try JSONSerialization.data(withJSONObject: object)
    XCTAssertEqual(try JSONDecoder().decode(SearchSettings.self, from: old), SearchSettings())
  }
}
