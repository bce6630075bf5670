// The pieces of the paper's ImageNet search setting that are not the network: the learning-rate
// warm-up of train_search_imagenet.py and the per-class subsets it searches on.
import Foundation
import TensorEngine
import XCTest

@testable import PCDARTS

final class ImageNetSettingTests: XCTestCase {
  func testLearningRateWarmsUpLinearlyThenFollowsTheCosineSchedule() throws {
    var settings = SearchSettings()
    (settings.learningRate, settings.learningRateMin, settings.epochs) = (0.5, 0, 50)
    settings.learningRateWarmupEpochs = 5
    try settings.validate()
    XCTAssertEqual((0..<5).map { settings.learningRate(epoch: $0) }, [0.1, 0.2, 0.3, 0.4, 0.5].map { Float($0) })
    for epoch in [5, 20, 49] {
      let cosine = 0.5 * (1 + cos(Double.pi * Double(epoch) / 50)) / 2
      XCTAssertEqual(Double(settings.learningRate(epoch: epoch)), cosine, accuracy: 1e-6)
    }
    settings.learningRateWarmupEpochs = 0
    XCTAssertEqual(settings.learningRate(epoch: 0), 0.5)
    settings.learningRateWarmupEpochs = 51
    XCTAssertThrowsError(try settings.validate()) { XCTAssertTrue("\($0)".contains("learningRateWarmupEpochs")) }
    // Settings written before the field existed decode without it.
    let old = try JSONDecoder().decode(SearchSettings.self, from: Data(#"{"epochs": 7}"#.utf8))
    XCTAssertEqual(old.learningRateWarmupEpochs, 0)
  }

  func testTheTrainingScheduleOfTrainImagenetIsLinearAfterItsWarmUp() throws {
    var settings = TrainingSettings()
    (settings.learningRate, settings.epochs) = (0.5, 250)
    settings.learningRateSchedule = .linear
    settings.learningRateWarmupEpochs = 5
    try settings.validate()
    XCTAssertEqual((0..<5).map { settings.learningRate(epoch: $0) }, [0.1, 0.2, 0.3, 0.4, 0.5].map { Float($0) })
    // adjust_lr: lr·(E − 5 − e)/(E − 5) while more than 5 epochs remain, then lr·(E − e)/(5·(E − 5)).
    XCTAssertEqual(settings.learningRate(epoch: 5), 0.5 * 240 / 245, accuracy: 1e-7)
    XCTAssertEqual(settings.learningRate(epoch: 244), 0.5 * 1 / 245, accuracy: 1e-7)
    XCTAssertEqual(settings.learningRate(epoch: 245), 0.5 * 5 / 1225, accuracy: 1e-7)
    XCTAssertEqual(settings.learningRate(epoch: 249), 0.5 * 1 / 1225, accuracy: 1e-7)
    settings.epochs = 5
    XCTAssertThrowsError(try settings.validate()) { XCTAssertTrue("\($0)".contains("learningRateSchedule")) }
    let old = try JSONDecoder().decode(TrainingSettings.self, from: Data(#"{"epochs": 7}"#.utf8))
    XCTAssertEqual(old.learningRateSchedule, .cosine)
    XCTAssertEqual(old.learningRateWarmupEpochs, 0)
    XCTAssertEqual(old.network.stem, .cifar)
  }

  func testClassBalancedSamplesAreDisjointAndTakeTheirShareOfEveryClass() {
    let labels = (0..<40).map { _ in Int32(0) } + (0..<80).map { _ in Int32(1) } + (0..<200).map { _ in Int32(2) }
    var rng = SeededGenerator(seed: 3)
    let samples = classBalancedSample(labels: labels, portions: [0.1, 0.025], rng: &rng)
    XCTAssertEqual(
      samples[0].map { labels[$0] },
      [Int32](repeating: 0, count: 4) + .init(repeating: 1, count: 8) + .init(repeating: 2, count: 20))
    XCTAssertEqual(
      samples[1].map { labels[$0] },
      [Int32](repeating: 0, count: 1) + .init(repeating: 1, count: 2) + .init(repeating: 2, count: 5))
    XCTAssertTrue(Set(samples[0]).isDisjoint(with: samples[1]))
    XCTAssertEqual(Set(samples[0]).count, samples[0].count)
    var again = SeededGenerator(seed: 3)
    XCTAssertEqual(classBalancedSample(labels: labels, portions: [0.1, 0.025], rng: &again), samples)
    var other = SeededGenerator(seed: 4)
    XCTAssertNotEqual(classBalancedSample(labels: labels, portions: [0.1, 0.025], rng: &other), samples)
  }
}
