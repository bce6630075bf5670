// The benchmark's in-process measurement and its table, on a tiny network (3 cells of 8 channels,
// batch 4) so a debug build measures both K in a few seconds.
import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine
import XCTest

@testable import SearchCommands

final class BenchTests: XCTestCase {
  func testMeasurementsArePositiveAndPartialChannelsSaveActivationMemory() throws {
    let options = try BenchCommand.parser.parse(["--batch", "4", "--layers", "3", "--init-channels", "8"])
    let results = try [1, 4].map {
      try BenchCommand.measure(settings: BenchCommand.settings(options, k: $0, batch: 4), iterations: 1, warmup: 1)
    }
    for r in results {
      XCTAssertEqual([r.batch, r.layers, r.initChannels], [4, 3, 8], "K=\(r.K)")
      for (name, value) in [
        ("secondsPerIteration", r.secondsPerIteration), ("imagesPerSecond", r.imagesPerSecond),
        ("forwardMilliseconds", r.forwardMilliseconds), ("backwardMilliseconds", r.backwardMilliseconds),
      ] {
        XCTAssertTrue(value.isFinite && value > 0, "K=\(r.K): \(name) = \(value)")
      }
      for (name, value) in [
        ("peakTensorBytes", r.peakTensorBytes), ("peakActivationBytes", r.peakActivationBytes),
        ("peakRSSBytes", r.peakRSSBytes),
      ] {
        XCTAssertGreaterThan(value, 0, "K=\(r.K): \(name)")
      }
      XCTAssertLessThanOrEqual(r.peakActivationBytes, r.peakTensorBytes, "K=\(r.K)")
      XCTAssertEqual(r.imagesPerSecond, 4 / r.secondsPerIteration, accuracy: 1e-9 * r.imagesPerSecond)
    }
    XCTAssertEqual(results.map(\.K), [1, 4])
    // With K = 4 only a quarter of each edge's channels enter the eight candidate operations,
    // whose activations dominate an iteration; the cells' inputs and outputs keep full width.
    let ratio = Double(results[1].peakActivationBytes) / Double(results[0].peakActivationBytes)
    print(
      String(
        format: "bench: peak activation bytes K=1 %d, K=4 %d, ratio %.3f",
        results[0].peakActivationBytes, results[1].peakActivationBytes, ratio))
    XCTAssertLessThan(ratio, 0.6, "K=4 should need well under K=1's activation memory")
    // The candidates' arithmetic shrinks with K as well; the stem, the preprocessing and the
    // classifier do not.
    let counts = results.map { $0.operationsPerIteration ?? OperationCounts() }
    let (flops, bytes) = (counts.map(\.flops), counts.map(\.bytes))
    // Among the ops: the candidates' convolutions both ways, and the node sums of partial channels.
    for name in ["conv2d", "conv2d backward", "depthwise conv2d", "partialChannelSum", "partialChannelSum backward"] {
      XCTAssertGreaterThan(counts[1].byOperation[name]?.flops ?? 0, 0, "K=4: \(name)")
    }
    XCTAssertTrue(flops.allSatisfy { $0 > 0 } && bytes.allSatisfy { $0 > 0 }, "\(flops), \(bytes)")
    XCTAssertLessThan(flops[1] / flops[0], 0.5, "FLOPs K=1 \(flops[0]), K=4 \(flops[1])")
    let peaks = MachinePeaks(matrixProductFLOPS: 1e11, memoryBytesPerSecond: 1e10)
    let roofline = BenchCommand.rooflineTable(results, peaks: peaks).split(separator: "\n").map(String.init)
    for (i, r) in results.enumerated() {
      let row = try XCTUnwrap(roofline.first { $0.hasPrefix("  K=\(r.K) ") }, roofline.joined(separator: "\n"))
      let fields = row.split(separator: " ").map(String.init)
      XCTAssertEqual(Double(fields[1])!, flops[i] / 1e9, accuracy: 0.051, row)
      XCTAssertEqual(fields.last, String(format: "%.1f×", r.secondsPerIteration / peaks.roofSeconds(counts[i])), row)
      XCTAssertTrue(roofline.contains { $0.hasPrefix("  K=\(r.K): ") }, "the ops moving K=\(r.K)'s bytes")
    }

    let table = BenchCommand.table(results)
    let lines = table.split(separator: "\n").map(String.init)
    for k in [1, 4] {
      XCTAssertEqual(lines.filter { $0.hasPrefix("\(k) ") }.count, 1, "one measurement row for K=\(k) in:\n\(table)")
      XCTAssertEqual(lines.filter { $0.hasPrefix("K=\(k) ") }.count, 1, "one ratio row for K=\(k) in:\n\(table)")
    }
    // The ratios are to K = 1, so its own row reads 1.00× throughout.
    let baseRatios = try XCTUnwrap(lines.first { $0.hasPrefix("K=1 ") })
    XCTAssertEqual(baseRatios.components(separatedBy: "1.00×").count - 1, 4, baseRatios)
  }

  func testEveryKAndTheJSONPathAreCheckedBeforeTheFirstMeasurement() {
    let start = Date()
    // K = 1 would measure; K = 1000 does not divide the channels, so nothing may run.
    XCTAssertEqual(BenchCommand.main(["--K", "1,1000", "--layers", "3", "--init-channels", "8", "--batch", "2"]), 2)
    XCTAssertEqual(
      BenchCommand.main(["--K", "1", "--layers", "3", "--init-channels", "8", "--json", "/nonexistent/folder/out.json"]
      ), 2)
    XCTAssertEqual(
      BenchCommand.main(["--roofline", "--decode", "/nonexistent/folder"]), 2, "--roofline measures steps")
    XCTAssertLessThan(Date().timeIntervalSince(start), 5, "a measurement ran before the checks")
  }

  func testTheTrainingStepIsTrainCifarsWithItsDefaultsAndMeasuresPositiveFigures() throws {
    // Sizes not given: train-cifar's defaults (the paper's evaluation); given: as given.
    let defaults = BenchCommand.trainingSettings(try BenchCommand.parser.parse(["--train"]))
    XCTAssertEqual([defaults.batchSize, defaults.network.initChannels, defaults.network.layers], [96, 36, 20])
    XCTAssertTrue(defaults.network.auxiliary)
    XCTAssertEqual(defaults.dropPathProbability, 0.15)
    let options = try BenchCommand.parser.parse([
      "--train", "--batch", "2", "--layers", "3", "--init-channels", "4", "--auxiliary-weight", "0",
    ])
    let settings = BenchCommand.trainingSettings(options)
    XCTAssertFalse(settings.network.auxiliary, "weight 0 measures the network without its head")
    let r = try BenchCommand.measureTraining(
      settings: settings, genotype: Genotype.published["DARTS_V2"]!, iterations: 1, warmup: 1)
    XCTAssertEqual([r.K, r.batch, r.layers, r.initChannels], [0, 2, 3, 4])
    XCTAssertEqual(r.genotype, Genotype.published["DARTS_V2"]!.pythonDescription)
    for value in [r.secondsPerIteration, r.imagesPerSecond, r.forwardMilliseconds, r.backwardMilliseconds] {
      XCTAssertTrue(value.isFinite && value > 0)
    }
    XCTAssertGreaterThan(r.peakActivationBytes, 0)
    XCTAssertLessThanOrEqual(r.peakActivationBytes, r.peakTensorBytes)
    XCTAssertGreaterThan(r.operationsPerIteration?.flops ?? 0, 0)
    XCTAssertGreaterThan(r.operationsPerIteration?.bytes ?? 0, 0)
    // Checked before anything runs: an unknown genotype, a drop-path probability of 1.
    XCTAssertEqual(BenchCommand.main(["--train", "--genotype", "NASNet"]), 2)
    XCTAssertEqual(BenchCommand.main(["--train", "--drop-path-prob", "1"]), 2)
  }
}
