// Training a genotype from scratch (the official PC-DARTS train.py): per step, SGD on the
// cross-entropy plus the weighted auxiliary loss, with the gradient norm clipped; per epoch, the
// cosine learning rate and the linear drop-path ramp, then the test-set loss and accuracy, and
// an atomic checkpoint.

import Foundation
import NeuralNetwork
import TensorEngine

/// The evaluation network, its optimizer and the step that updates them: what a training run
/// and the benchmark both run.
public final class TrainingIteration {
  /// The settings the network and the optimizer were built with.
  public let settings: TrainingSettings
  /// The network.
  public let network: EvaluationNetwork
  /// SGD with momentum over every weight (the auxiliary head's included).
  public let optimizer: SGD
  /// The ranks sharing each batch (one process by default).
  public let dataParallel: DataParallel

  /// Builds the network from `settings.seed` and the optimizer from `settings`.
  /// - Parameter dataParallel: the ranks sharing each batch; every rank builds the same network.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` or ``SearchError/invalidGenotype(_:)``.
  public init(
    settings: TrainingSettings, genotype: Genotype, space: SearchSpace = .darts,
    dataParallel: DataParallel = DataParallel()
  ) throws {
    try settings.validate()
    self.settings = settings
    self.dataParallel = dataParallel
    var rng = SeededGenerator(seed: settings.seed)
    network = try EvaluationNetwork(
      config: settings.network, genotype: genotype, space: space, dropPathSeed: settings.seed &+ 3, rng: &rng)
    if settings.syncBatchNorm { network.synchronizeBatchNorm(over: dataParallel.group) }
    optimizer = SGD(
      parameters: network.parameters(), learningRate: settings.learningRate, momentum: settings.momentum,
      weightDecay: settings.weightDecay)
  }

  /// One training step in training mode: forward (with drop-path at the network's current
  /// probability), loss with the auxiliary term, backward, gradient clipping, SGD. Data-parallel,
  /// each rank passes its rows of the same global batch, and the results are the global batch's.
  ///
  /// - Parameters:
  ///   - batch: a training batch.
  ///   - epoch, step: where the step is (0-based epoch, 1-based step), for errors.
  /// - Returns: the loss (auxiliary term included, as train.py reports it), the number of
  ///   correct predictions of the main classifier, and the forward and backward times.
  /// - Throws: ``SearchError/nonFiniteLoss(_:)`` when the loss is NaN or infinite; no update is
  ///   applied from it.
  @discardableResult
  public func run(_ batch: LabeledBatch, epoch: Int, step: Int) throws -> IterationResult {
    network.train(true)
    optimizer.zeroGrad()
    network.dropPathShard = batch.shard
    let forwardStart = Date()
    let (loss, correct): (Tensor, Int) = {
      // The logits die here: backward needs only what the loss recorded.
      let (loss, logits) = network.loss(
        batch.images, labels: batch.labels, auxiliaryWeight: settings.auxiliaryWeight,
        labelSmoothing: settings.labelSmoothing)
      return (loss, correctPredictions(logits, batch.labels))
    }()
    let backwardStart = Date()
    loss.backward(shareOf: batch.shard)
    let backwardEnd = Date()
    let sums = dataParallel.allReduceGradients(
      optimizer.parameters, scalars: [Double(loss.item) * Double(batch.shard.rows.count), Double(correct)])
    let trainLoss = Float(sums[0] / Double(batch.shard.globalCount))
    guard trainLoss.isFinite else {
      throw SearchError.nonFiniteLoss(NonFiniteLoss(phase: .weightStep, epoch: epoch, step: step, loss: trainLoss))
    }
    clipGradientNorm(optimizer.parameters, maxNorm: settings.gradClip)
    optimizer.step()
    return IterationResult(
      trainLoss: trainLoss, correct: Int(sums[1]), validLoss: nil,
      forwardSeconds: backwardStart.timeIntervalSince(forwardStart),
      backwardSeconds: backwardEnd.timeIntervalSince(backwardStart))
  }
}

/// The summary of one training epoch, one line of a training run's `log.jsonl`.
public struct TrainingEpochRecord: Codable, Equatable, Sendable {
  /// The epoch, counted from 0.
  public var epoch: Int
  /// The learning rate and the drop-path probability of the epoch.
  public var lr: Double, dropPathProbability: Double
  /// Mean loss (auxiliary term included) and accuracy over the epoch's augmented batches.
  public var trainLoss: Double, trainAcc: Double
  /// Loss and accuracy on the test set after the epoch (evaluation mode).
  public var testLoss: Double, testAcc: Double
  /// The best test accuracy of any epoch so far (what train.py logs as `best_acc`; an optimistic
  /// figure, since it selects on the test set).
  public var bestTestAcc: Double
  /// Wall time of the epoch, evaluation included.
  public var seconds: Double
  /// Training images per second (evaluation excluded).
  public var imagesPerSecond: Double
  /// The peak of live tensor bytes during the epoch.
  public var peakTensorBytes: Int
  /// In the first epoch after a resume with changed settings: each change, "path: old → new".
  public var settingsChanged: [String]?

  enum CodingKeys: String, CodingKey {
    case epoch, lr, seconds
    case dropPathProbability = "drop_path_prob"
    case trainLoss = "train_loss"
    case trainAcc = "train_acc"
    case testLoss = "test_loss"
    case testAcc = "test_acc"
    case bestTestAcc = "best_test_acc"
    case imagesPerSecond = "images_per_second"
    case peakTensorBytes = "peak_tensor_bytes"
    case settingsChanged = "settings_changed"
  }

  /// The record as one JSON line (sorted keys).
  public var jsonLine: String { sortedJSON(self) }
}

/// The outcome of a finished training run (`result.json`): the final epoch's test error is the
/// result; the best epoch's is reported beside it, not instead of it.
public struct TrainingResult: Codable, Equatable, Sendable {
  /// 1 − the final epoch's test accuracy.
  public var testError: Double
  /// The final epoch's test accuracy.
  public var testAcc: Double
  /// The best test accuracy of any epoch, and that epoch (0-based).
  public var bestTestAcc: Double, bestEpoch: Int
  /// Epochs trained.
  public var epochs: Int
  /// Weights in millions without the auxiliary head (the official "param size").
  public var parametersMillions: Double
  /// The genotype, in DARTS form.
  public var genotype: String

  enum CodingKeys: String, CodingKey {
    case epochs, genotype
    case testError = "test_error"
    case testAcc = "test_acc"
    case bestTestAcc = "best_test_acc"
    case bestEpoch = "best_epoch"
    case parametersMillions = "parameters_millions"
  }
}

/// The training of one genotype: the network, its optimizer, the data streams and the history,
/// with checkpoints that resume exactly.
public final class TrainingRun {
  /// The settings, with `network.classes` taken from the data.
  public let settings: TrainingSettings
  /// The network, the optimizer and the step every batch runs.
  public let iteration: TrainingIteration
  /// The network.
  public var network: EvaluationNetwork { iteration.network }
  /// The genotype trained.
  public var genotype: Genotype { iteration.network.genotype }
  /// Augmented (crop, flip, cutout) training batches, one epoch per epoch.
  public let trainLoader: BatchLoader
  /// The training and the test images.
  public let trainData: ImageDataset, testData: ImageDataset
  /// The next epoch to run (0-based).
  public private(set) var nextEpoch = 0
  /// Every completed epoch.
  public private(set) var history: [TrainingEpochRecord] = []
  /// The settings that differ from the restored checkpoint's, as "path: old → new"; the next
  /// epoch's record carries them.
  public private(set) var settingsChanges: [String] = []

  /// Called after every step.
  public var onStep: ((StepProgress) -> Void)?
  /// Asked before an epoch and after every step: `true` ends the epoch there with
  /// ``SearchError/interrupted(epoch:step:)``, before anything of it is recorded.
  public var shouldStop: (() -> Bool)?

  /// Builds the network and the data stream from `settings.seed`.
  ///
  /// - Parameters:
  ///   - genotype: the architecture to train.
  ///   - trainData, testData: the training and the test set (their classes must agree).
  ///   - space: where the genotype's operations are built from.
  ///   - dataParallel: the ranks that share each batch (each takes its rows of every batch and
  ///     its part of the test set).
  /// - Throws: ``SearchError/invalidSetting(_:_:)``, ``SearchError/invalidGenotype(_:)``.
  public init(
    settings: TrainingSettings, genotype: Genotype, trainData fullTrain: ImageDataset,
    testData fullTest: ImageDataset, space: SearchSpace = .darts, dataParallel: DataParallel = DataParallel()
  ) throws {
    var settings = settings
    settings.network.classes = fullTrain.classCount
    try settings.validate()
    for data in [fullTrain, fullTest] {
      if let problem = inputSizeProblem(
        height: data.height, width: data.width, auxiliaryHead: settings.network.auxiliary, stem: settings.network.stem)
      {
        throw SearchError.invalidConfiguration("\(data.name): \(problem)")
      }
    }
    guard fullTest.classCount == fullTrain.classCount else {
      throw SearchError.invalidConfiguration(
        "the test set of \(fullTest.name) has \(fullTest.classCount) classes, the training set \(fullTrain.classCount)")
    }
    func prefix(_ data: ImageDataset, _ n: Int?, _ setting: String, _ what: String) throws -> ImageDataset {
      guard let n else { return data }
      guard n <= data.count else {
        throw SearchError.invalidSetting(setting, "\(n) exceeds the \(data.count) \(what) images of \(data.name)")
      }
      return data.subset(Array(0..<n))
    }
    trainData = try prefix(fullTrain, settings.subset, "subset", "training")
    testData = try prefix(fullTest, settings.testSubset, "testSubset", "test")
    self.settings = settings
    try settings.checkBatches(images: trainData.count, ranks: dataParallel.size)
    iteration = try TrainingIteration(settings: settings, genotype: genotype, space: space, dataParallel: dataParallel)
    trainLoader = BatchLoader(
      dataset: trainData, batchSize: settings.batchSize, augment: true, cutoutLength: settings.cutoutLength,
      seed: settings.seed &+ 1, rank: dataParallel.rank, ranks: dataParallel.size)
  }

  /// Whether every epoch has run.
  public var isFinished: Bool { nextEpoch >= settings.epochs }

  /// Trains one epoch, evaluates on the test set, and returns its record.
  /// - Throws: ``SearchError/nonFiniteLoss(_:)`` when a loss becomes NaN or infinite (no update
  ///   is applied from it), ``SearchError/interrupted(epoch:step:)`` when ``shouldStop`` says so.
  @discardableResult
  public func runEpoch() throws -> TrainingEpochRecord {
    let epoch = nextEpoch
    if shouldStop?() == true { throw SearchError.interrupted(epoch: epoch, step: 0) }
    let lr = settings.learningRate(epoch: epoch)
    iteration.optimizer.learningRate = lr
    network.dropPathProbability = settings.dropPathProbability(epoch: epoch)
    let memory = MemoryMeasurement()
    defer { memory.stop() }
    let start = Date()
    var (lossSum, correct, seen, step) = (0.0, 0, 0, 0)
    let steps = trainLoader.batchesPerEpoch
    while let batch = trainLoader.nextBatch() {
      step += 1
      let result = try iteration.run(LabeledBatch(batch), epoch: epoch, step: step)
      lossSum += Double(result.trainLoss) * Double(batch.shard.globalCount)
      correct += result.correct
      seen += batch.shard.globalCount
      if shouldStop?() == true { throw SearchError.interrupted(epoch: epoch, step: step) }
      let elapsed = Date().timeIntervalSince(start)
      onStep?(
        StepProgress(
          epoch: epoch, step: step, steps: steps, trainLoss: lossSum / Double(seen),
          trainAccuracy: Double(correct) / Double(seen), imagesPerSecond: Double(seen) / elapsed,
          epochSecondsLeft: elapsed / Double(step) * Double(steps - step)))
    }
    let trainSeconds = Date().timeIntervalSince(start)
    // Every rank gets rank 0's batch-norm statistics; the weights must agree already.
    iteration.dataParallel.broadcastFromFirstRank(network.namedBuffers().map(\.1))
    try iteration.dataParallel.checkIdentical(network.parameters(), what: "weights")
    let (testLoss, testAcc) = evaluate()
    guard testLoss.isFinite else {
      throw SearchError.nonFiniteLoss(NonFiniteLoss(phase: .evaluation, epoch: epoch, step: nil, loss: Float(testLoss)))
    }
    let record = TrainingEpochRecord(
      epoch: epoch, lr: Double(lr), dropPathProbability: Double(network.dropPathProbability),
      trainLoss: lossSum / Double(max(seen, 1)), trainAcc: Double(correct) / Double(max(seen, 1)),
      testLoss: testLoss, testAcc: testAcc, bestTestAcc: max(testAcc, history.map(\.bestTestAcc).max() ?? 0),
      seconds: Date().timeIntervalSince(start), imagesPerSecond: Double(seen) / trainSeconds,
      peakTensorBytes: memory.peakBytes, settingsChanged: settingsChanges.isEmpty ? nil : settingsChanges)
    settingsChanges = []
    history.append(record)
    nextEpoch += 1
    return record
  }

  /// Loss and accuracy on the test set, in evaluation mode (running batch-norm statistics, no
  /// drop-path, no auxiliary head), without augmentation (train.py's `infer`).
  public func evaluate() -> (loss: Double, accuracy: Double) {
    network.train(false)
    defer { network.train(true) }
    return evaluateClassifier(on: testData, batchSize: settings.batchSize, dataParallel: iteration.dataParallel) {
      network($0).logits
    }
  }

  /// The result once the run is finished, `nil` before.
  public var result: TrainingResult? {
    guard isFinished, let last = history.last,
      let best = history.enumerated().max(by: { $0.element.testAcc < $1.element.testAcc })
    else { return nil }
    return TrainingResult(
      testError: 1 - last.testAcc, testAcc: last.testAcc, bestTestAcc: best.element.testAcc,
      bestEpoch: best.offset, epochs: history.count,
      parametersMillions: Double(network.weightCountExcludingAuxiliary) / 1e6,
      genotype: genotype.pythonDescription)
  }

  // MARK: - Checkpoints

  /// The checkpoint format tag stored in the metadata.
  public static let checkpointFormat = "pcdarts-swift-train-v1"

  /// The full state after the last completed epoch: the weights under their official names,
  /// SGD's momentum buffers, and as metadata the settings, the genotype, the epoch, the loader's
  /// and the drop-path generator's states and the history.
  public func checkpoint() -> SafeTensorsFile {
    var metadata = modelMetadata(settings: settings, genotype: genotype)
    metadata["format"] = Self.checkpointFormat
    metadata["next_epoch"] = String(nextEpoch)
    metadata["train_loader"] = sortedJSON(trainLoader.epochState)
    metadata["drop_path_generator"] = sortedJSON(network.dropPathGenerator.state)
    metadata["history"] = sortedJSON(history)
    metadata["dataset"] = datasetIdentity
    return SafeTensorsFile(tensors: CheckpointTensors.collect(layout(withOptimizer: true)), metadata: metadata)
  }

  /// The weights and buffers alone under the official names (train.py's `weights.pt`), which
  /// `load_state_dict` of the official model.py accepts after `safetensors.torch.load_file`; the
  /// metadata names the genotype and the settings, so that `--evaluate` can rebuild the network.
  public func weights() -> SafeTensorsFile {
    SafeTensorsFile(
      tensors: CheckpointTensors.collect(layout(withOptimizer: false)),
      metadata: modelMetadata(settings: settings, genotype: genotype))
  }

  /// Continues from a checkpoint written by ``checkpoint()`` for the same genotype, data and
  /// settings (those of ``TrainingSettings/changeableOnResume`` may differ).
  /// - Throws: ``SearchError/checkpointMismatch(_:)`` naming what differs; nothing is changed then.
  public func restore(from file: SafeTensorsFile) throws {
    guard file.metadata["format"] == Self.checkpointFormat else {
      throw SearchError.checkpointMismatch(
        "format is \(file.metadata["format"] ?? "missing"), expected \(Self.checkpointFormat)")
    }
    let changes = try settings.changesOnResume(fromCheckpointSettings: file.metadata["settings"])
    guard let text = file.metadata["genotype"], let saved = try? Genotype(pythonDescription: text) else {
      throw SearchError.checkpointMismatch("its genotype is missing or unreadable")
    }
    guard saved == genotype else {
      throw SearchError.checkpointMismatch(
        "it trains \(text), not \(genotype.pythonDescription); pass the checkpoint's genotype or write to another folder"
      )
    }
    let decoder = JSONDecoder()
    func decode<T: Decodable>(_ type: T.Type, _ key: String) -> T? {
      file.metadata[key].flatMap { try? decoder.decode(T.self, from: Data($0.utf8)) }
    }
    guard let epochText = file.metadata["next_epoch"], let epoch = Int(epochText), epoch >= 0,
      epoch <= settings.epochs,
      let loaderState = decode(BatchLoader.EpochState.self, "train_loader"),
      let generator = decode([UInt64].self, "drop_path_generator"), generator.count == 4,
      let records = decode([TrainingEpochRecord].self, "history"), records.count == epoch
    else {
      throw SearchError.checkpointMismatch(
        "its epoch, data-loader or drop-path state or history is missing, unreadable or inconsistent")
    }
    if let saved = file.metadata["dataset"], saved != datasetIdentity {
      throw SearchError.checkpointMismatch(
        "it was written for \(saved), the data now is \(datasetIdentity); pass the checkpoint's dataset and data path or write to another folder"
      )
    }
    do {
      try trainLoader.check(loaderState)
    } catch let error as DataError {
      throw SearchError.checkpointMismatch("its data-loader state does not fit this data: \(error)")
    }
    try CheckpointTensors.restore(file.tensors, into: layout(withOptimizer: true))
    try trainLoader.restore(loaderState)
    network.dropPathGenerator.state = generator
    nextEpoch = epoch
    history = records
    settingsChanges = changes
  }

  /// The tensors of a checkpoint: the network's state, and SGD's momentum when asked.
  private func layout(withOptimizer: Bool) -> CheckpointLayout {
    CheckpointLayout(
      state: network.stateTensors(),
      sgd: withOptimizer ? (network.namedParameters().map(\.0), iteration.optimizer) : nil,
      requiresOptimizerState: withOptimizer)
  }

  /// The data's name and sizes, as a checkpoint records it.
  private var datasetIdentity: String {
    "\(trainData.name) (\(trainData.count) training, \(testData.count) test images)"
  }
}

/// The metadata that lets a weights file be rebuilt into its network: the settings (with the
/// network's shape) and the genotype.
func modelMetadata(settings: TrainingSettings, genotype: Genotype) -> [String: String] {
  ["settings": settings.json, "genotype": genotype.pythonDescription]
}

extension EvaluationNetwork {
  /// The network a training checkpoint or weights file holds, with its weights loaded, in
  /// evaluation mode (test.py).
  ///
  /// - Parameter file: a `checkpoint.safetensors` or `weights.safetensors` of a training run.
  /// - Returns: the network and the settings it was trained with.
  /// - Throws: ``SearchError/checkpointMismatch(_:)`` when the file names no network or its
  ///   tensors do not fit it.
  public static func load(
    from file: SafeTensorsFile, space: SearchSpace = .darts
  ) throws -> (network: EvaluationNetwork, settings: TrainingSettings) {
    guard let settingsText = file.metadata["settings"],
      let settings = try? JSONDecoder().decode(TrainingSettings.self, from: Data(settingsText.utf8)),
      let genotypeText = file.metadata["genotype"], let genotype = try? Genotype(pythonDescription: genotypeText)
    else {
      throw SearchError.checkpointMismatch(
        "it does not name the network it holds (no training settings and genotype in its metadata): "
          + "pass a checkpoint.safetensors or weights.safetensors written by train-cifar")
    }
    var rng = SeededGenerator(seed: settings.seed)
    let network = try EvaluationNetwork(config: settings.network, genotype: genotype, space: space, rng: &rng)
    try CheckpointTensors.restore(
      file.tensors, into: CheckpointLayout(state: network.stateTensors(), requiresOptimizerState: false))
    network.train(false)
    return (network, settings)
  }
}
