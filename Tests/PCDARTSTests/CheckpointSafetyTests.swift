// Restoring a checkpoint is all or nothing, and a checkpoint of other data is refused.

import NeuralNetwork
import PCDARTS
import TensorEngine
import XCTest

final class CheckpointSafetyTests: XCTestCase {
  func testARefusedRestoreChangesNothing() throws {
    let data = tinyDataset(count: 12, seed: 4)
    let trained = try SearchRun(settings: tinySearchSettings(seed: 6), data: data)
    try trained.runEpoch()
    var file = trained.checkpoint()
    file.tensors["optimizer.adam.step"] = nil  // the last check of the tensors
    let fresh = try SearchRun(settings: tinySearchSettings(seed: 6), data: data)
    let before = (fresh.network.stateTensors() + fresh.network.arch.named).map(\.1.scalars)
    XCTAssertThrowsError(try fresh.restore(from: file)) { error in
      XCTAssertTrue("\(error)".contains("adam.step"), "\(error)")
    }
    XCTAssertEqual((fresh.network.stateTensors() + fresh.network.arch.named).map(\.1.scalars), before)
    XCTAssertTrue(fresh.weightOptimizer.momentumBuffers.allSatisfy { $0 == nil }, "momentum buffers were created")
    XCTAssertEqual(
      fresh.trainLoader.epochState,
      try SearchRun(settings: tinySearchSettings(seed: 6), data: data).trainLoader.epochState)
    XCTAssertEqual(fresh.nextEpoch, 0)
  }

  func testACheckpointOfOtherDataIsRefusedNamingBoth() throws {
    let run = try SearchRun(
      settings: tinySearchSettings(seed: 7), data: tinyDataset(count: 12, seed: 5, name: "CIFAR-10"))
    try run.runEpoch()
    let other = try SearchRun(
      settings: tinySearchSettings(seed: 7), data: tinyDataset(count: 12, seed: 5, name: "Fashion-MNIST"))
    XCTAssertThrowsError(try other.restore(from: run.checkpoint())) { error in
      let message = "\(error)"
      XCTAssertTrue(message.contains("CIFAR-10 (12 training images)") && message.contains("Fashion-MNIST"), message)
    }
  }
}
