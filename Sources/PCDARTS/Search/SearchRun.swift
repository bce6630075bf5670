// The search loop (the official train_search.py): per step, an architecture update on a
// search-validation batch (after the warm-up epochs), then a weight update on a search-train
// batch; per epoch, a cosine learning rate, an evaluation on the search-validation split, the
// genotype, and an atomic checkpoint.

import Foundation
import NeuralNetwork
import TensorEngine

/// Progress within an epoch, reported after every step.
public struct StepProgress: Sendable {
  /// The epoch, counted from 0.
  public var epoch: Int
  /// 1-based step within the epoch, and the epoch's step count.
  public var step: Int, steps: Int
  /// Running means over the epoch so far.
  public var trainLoss: Double, trainAccuracy: Double
  /// Training throughput of the epoch so far.
  public var imagesPerSecond: Double
  /// Estimated seconds left in this epoch.
  public var epochSecondsLeft: Double
}

/// The summary of one epoch, one line of `log.jsonl`.
public struct EpochRecord: Codable, Equatable, Sendable {
  /// The epoch, counted from 0.
  public var epoch: Int
  /// The weights' learning rate in the epoch.
  public var lr: Double
  /// Mean loss and accuracy over the epoch's weight steps (augmented search-train batches).
  public var trainLoss: Double, trainAcc: Double
  /// Loss and accuracy on the search-validation split after the epoch (evaluation mode, no
  /// augmentation).
  public var validLoss: Double, validAcc: Double
  /// Wall time of the epoch, evaluation included.
  public var seconds: Double
  /// Training images per second (evaluation excluded).
  public var imagesPerSecond: Double
  /// The peak of live tensor bytes during the epoch (a ``MemoryMeasurement``).
  public var peakTensorBytes: Int
  /// The DARTS string of the genotype after the epoch.
  public var genotype: String
  /// Whether the architecture was updated in this epoch.
  public var archUpdates: Bool
  /// Architecture steps taken in the epoch (`nil` in records written before it was recorded).
  public var archSteps: Int?
  /// With ``SearchSettings/maxSkipConnect`` set: the DARTS string of the capped genotype
  /// (``genotype`` stays the raw one).
  public var cappedGenotype: String?
  /// In the first epoch after a resume with changed settings: each change, "path: old → new".
  public var settingsChanged: [String]?

  enum CodingKeys: String, CodingKey {
    case epoch, lr, seconds, genotype
    case trainLoss = "train_loss"
    case trainAcc = "train_acc"
    case validLoss = "valid_loss"
    case validAcc = "valid_acc"
    case imagesPerSecond = "images_per_second"
    case peakTensorBytes = "peak_tensor_bytes"
    case archUpdates = "arch_updates"
    case archSteps = "arch_steps"
    case cappedGenotype = "genotype_capped"
    case settingsChanged = "settings_changed"
  }

  /// The record as one JSON line (sorted keys).
  public var jsonLine: String { sortedJSON(self) }
}

/// The architecture weights after one epoch, one line of `architecture.jsonl`: per cell type,
/// softmax(α) per edge and the edge-normalised β.
public struct ArchitectureRecord: Codable, Equatable, Sendable {
  /// The epoch, counted from 0.
  public var epoch: Int
  /// The candidate operations, in column order.
  public var primitives: [String]
  /// (E, P) softmax(α) of the normal and the reduction cells.
  public var normalOpWeights: [[Float]], reduceOpWeights: [[Float]]
  /// (E) edge weights of the normal and the reduction cells.
  public var normalEdgeWeights: [Float], reduceEdgeWeights: [Float]

  enum CodingKeys: String, CodingKey {
    case epoch, primitives
    case normalOpWeights = "normal_op_weights"
    case reduceOpWeights = "reduce_op_weights"
    case normalEdgeWeights = "normal_edge_weights"
    case reduceEdgeWeights = "reduce_edge_weights"
  }

  /// The network's architecture weights now, recorded for `epoch`.
  public init(epoch: Int, network: SearchNetwork) {
    let (normal, reduce) = network.architectureWeights()
    self.epoch = epoch
    primitives = network.space.names
    (normalOpWeights, normalEdgeWeights) = normal
    (reduceOpWeights, reduceEdgeWeights) = reduce
  }

  /// The record as one JSON line (sorted keys).
  public var jsonLine: String { sortedJSON(self) }
}

/// One PC-DARTS search: the super-net, its two optimizers, the data streams and the history,
/// with checkpointing that resumes exactly.
public final class SearchRun {
  /// The settings, with `network.classes` taken from the data.
  public let settings: SearchSettings
  /// The network, the optimizers and the iteration every step runs.
  public let iteration: SearchIteration
  /// The super-net.
  public var network: SearchNetwork { iteration.network }
  /// The architecture step (Adam on α and β).
  public var architect: Architect { iteration.architect }
  /// SGD with momentum over the network's weights; its learning rate follows ``learningRate(epoch:)``.
  public var weightOptimizer: SGD { iteration.weightOptimizer }
  /// Search-train batches (augmented), one epoch per epoch.
  public let trainLoader: BatchLoader
  /// Search-validation batches (augmented, as the reference) for the architecture steps; cycles.
  public let archLoader: BatchLoader
  /// The data and the split.
  public let data: ImageDataset
  /// Positions in ``data`` of the search-validation split.
  public let validIndices: [Int]
  /// The next epoch to run (0-based).
  public private(set) var nextEpoch = 0
  /// Every completed epoch.
  public private(set) var history: [EpochRecord] = []
  /// The architecture weights after every completed epoch (empty for epochs restored from a
  /// checkpoint written before they were recorded).
  public private(set) var architectureHistory: [ArchitectureRecord] = []

  /// Called after every weight step.
  public var onStep: ((StepProgress) -> Void)?
  /// Called after every epoch with its record (already in ``history``).
  public var onEpoch: ((EpochRecord) -> Void)?
  /// Asked before an epoch and after every step: `true` ends the epoch there with
  /// ``SearchError/interrupted(epoch:step:)`` (step 0: before its first step), before anything
  /// of it is recorded (a command sets it from SIGINT and SIGTERM).
  public var shouldStop: (() -> Bool)?

  /// The ranks sharing each batch (one process unless the run was given a group).
  public var dataParallel: DataParallel { iteration.dataParallel }

  /// Builds the network and data streams from `settings.seed`.
  ///
  /// - Parameters:
  ///   - data: the training set (its classes fix the classifier).
  ///   - space: the candidate operations.
  ///   - dataParallel: the ranks that share each batch: every rank builds the same run and takes
  ///     its rows of every batch (``BatchShard``) and its part of the evaluation.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` for settings that cannot work.
  public init(
    settings: SearchSettings, data fullData: ImageDataset, space: SearchSpace = .darts,
    dataParallel: DataParallel = DataParallel()
  ) throws {
    var settings = settings
    settings.network.classes = fullData.classCount
    try settings.validate()
    if let problem = inputSizeProblem(height: fullData.height, width: fullData.width, stem: settings.network.stem) {
      throw SearchError.invalidConfiguration("\(fullData.name): \(problem)")
    }
    self.settings = settings
    var data = fullData
    if let subset = settings.subset {
      guard subset <= fullData.count else {
        throw SearchError.invalidSetting(
          "subset", "\(subset) exceeds the \(fullData.count) training images of \(fullData.name)")
      }
      data = fullData.subset(Array(0..<subset))
    }
    self.data = data
    iteration = try SearchIteration(settings: settings, space: space, dataParallel: dataParallel)
    var splitRng = SeededGenerator(seed: settings.seed &+ 0x5EA2C4)
    guard Int(settings.trainPortion * Double(data.count)) >= 1,
      Int(settings.trainPortion * Double(data.count)) < data.count
    else {
      throw SearchError.invalidSetting(
        "trainPortion", "\(settings.trainPortion) of \(data.count) images leaves one side of the split empty")
    }
    let split = searchSplit(count: data.count, trainPortion: settings.trainPortion, rng: &splitRng)
    for (images, what) in [(split.train.count, "search-train images"), (split.valid.count, "search-validation images")]
    {
      try checkShards(images: images, batchSize: settings.batchSize, ranks: dataParallel.size, what)
    }
    validIndices = split.valid
    let (rank, ranks) = (dataParallel.rank, dataParallel.size)
    trainLoader = BatchLoader(
      dataset: data, indices: split.train, batchSize: settings.batchSize,
      augment: true, seed: settings.seed &+ 1, rank: rank, ranks: ranks)
    archLoader = BatchLoader(
      dataset: data, indices: split.valid, batchSize: settings.batchSize,
      augment: true, seed: settings.seed &+ 2, rank: rank, ranks: ranks)
  }

  /// Whether every epoch has run.
  public var isFinished: Bool { nextEpoch >= settings.epochs }

  /// The learning rate of epoch `epoch` (``SearchSettings/learningRate(epoch:)``).
  public func learningRate(epoch: Int) -> Float { settings.learningRate(epoch: epoch) }

  /// Trains one epoch, evaluates, and returns its record.
  /// - Throws: ``SearchError/nonFiniteLoss(_:)`` when a loss becomes NaN or infinite (no update
  ///   is applied from that loss).
  @discardableResult
  public func runEpoch() throws -> EpochRecord {
    let epoch = nextEpoch
    // A stop requested during the previous epoch's writes ends the run before this one starts.
    if shouldStop?() == true { throw SearchError.interrupted(epoch: epoch, step: 0) }
    let lr = learningRate(epoch: epoch)
    weightOptimizer.learningRate = lr
    let archUpdates = epoch >= settings.warmupEpochs
    var archSteps = 0
    let memory = MemoryMeasurement()
    defer { memory.stop() }
    let start = Date()
    var (lossSum, correct, seen) = (0.0, 0, 0)
    var step = 0
    let steps = trainLoader.batchesPerEpoch
    network.train(true)
    while let batch = trainLoader.nextBatch() {
      step += 1
      let valid = settings.updatesArchitecture(epoch: epoch, step: step) ? LabeledBatch(archLoader.nextCycling()) : nil
      if valid != nil { archSteps += 1 }
      let result = try iteration.run(train: LabeledBatch(batch), valid: valid, epoch: epoch, step: step)
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
    try synchronizeRanks()
    let (validLoss, validAcc) = evaluate()
    guard validLoss.isFinite else {
      throw SearchError.nonFiniteLoss(
        NonFiniteLoss(phase: .evaluation, epoch: epoch, step: nil, loss: Float(validLoss)))
    }
    let record = EpochRecord(
      epoch: epoch, lr: Double(lr), trainLoss: lossSum / Double(max(seen, 1)),
      trainAcc: Double(correct) / Double(max(seen, 1)), validLoss: validLoss, validAcc: validAcc,
      seconds: Date().timeIntervalSince(start), imagesPerSecond: Double(seen) / trainSeconds,
      peakTensorBytes: memory.peakBytes, genotype: network.genotype().pythonDescription,
      archUpdates: archUpdates, archSteps: archSteps,
      cappedGenotype: settings.maxSkipConnect.map { network.genotype(maxSkipConnect: $0).pythonDescription },
      settingsChanged: settingsChanges.isEmpty ? nil : settingsChanges)
    settingsChanges = []
    history.append(record)
    architectureHistory.append(ArchitectureRecord(epoch: epoch, network: network))
    nextEpoch += 1
    onEpoch?(record)
    return record
  }

  /// Loss and accuracy on the whole search-validation split, in evaluation mode (running
  /// batch-norm statistics), without augmentation; data-parallel, each rank evaluates its part.
  public func evaluate() -> (loss: Double, accuracy: Double) {
    network.train(false)
    defer { network.train(true) }
    let result = evaluateClassifier(
      on: data, indices: validIndices, batchSize: settings.batchSize, seed: settings.seed, dataParallel: dataParallel
    ) { network($0) }
    // The ranks ran different numbers of forwards, each drawing channels when sampling is random.
    if let sampler = network.channelSampler {
      network.channelSampler?.state = dataParallel.broadcastFromFirstRank(sampler.state)
    }
    return result
  }

  /// Data-parallel, after an epoch's steps: gives every rank rank 0's batch-norm statistics
  /// (each rank updated them from its own rows), then checks that the parameters and α, β are
  /// the same on every rank.
  /// - Throws: ``SearchError/ranksDiverged(_:)``.
  private func synchronizeRanks() throws {
    dataParallel.broadcastFromFirstRank(network.statisticBuffers)
    try dataParallel.checkIdentical(network.weights + network.architectureParameters, what: "weights and α, β")
  }

  // MARK: - Checkpoints

  /// The checkpoint format tag stored in the metadata.
  public static let checkpointFormat = "pcdarts-swift-search-v1"

  /// The full state after the last completed epoch.
  public func checkpoint() -> SafeTensorsFile {
    func json<T: Encodable>(_ value: T) -> String { sortedJSON(value) }
    var metadata = [
      "format": Self.checkpointFormat,
      "settings": settings.json,
      "next_epoch": String(nextEpoch),
      "train_loader": json(trainLoader.epochState),
      "arch_loader": json(archLoader.epochState),
      "history": json(history),
      "architecture_history": json(architectureHistory),
      "genotype": network.genotype().pythonDescription,
    ]
    if let sampler = network.channelSampler { metadata["channel_sampler"] = json(sampler.state) }
    metadata["dataset"] = datasetIdentity
    return SafeTensorsFile(
      tensors: CheckpointTensors.collect(network: network, weightOptimizer: weightOptimizer, architect: architect),
      metadata: metadata)
  }

  /// Continues from a checkpoint written by ``checkpoint()`` for the same settings.
  /// - Throws: ``SearchError/checkpointMismatch(_:)`` naming what differs.
  public func restore(from file: SafeTensorsFile) throws {
    guard file.metadata["format"] == Self.checkpointFormat else {
      throw SearchError.checkpointMismatch(
        "format is \(file.metadata["format"] ?? "missing"), expected \(Self.checkpointFormat)")
    }
    let changes = try settings.changesOnResume(fromCheckpointSettings: file.metadata["settings"])
    let decoder = JSONDecoder()
    guard let epochText = file.metadata["next_epoch"], let epoch = Int(epochText),
      let trainState = file.metadata["train_loader"].flatMap({
        try? decoder.decode(BatchLoader.EpochState.self, from: Data($0.utf8))
      }),
      let archState = file.metadata["arch_loader"].flatMap({
        try? decoder.decode(BatchLoader.EpochState.self, from: Data($0.utf8))
      }),
      let records = file.metadata["history"].flatMap({ try? decoder.decode([EpochRecord].self, from: Data($0.utf8)) })
    else {
      throw SearchError.checkpointMismatch("its epoch, data-loader state or history is missing or unreadable")
    }
    let architecture =
      file.metadata["architecture_history"].flatMap {
        try? decoder.decode([ArchitectureRecord].self, from: Data($0.utf8))
      }
      ?? []
    guard epoch >= 1, epoch == records.count else {
      throw SearchError.checkpointMismatch(
        "its next epoch \(epoch) does not follow its history of \(records.count) epochs; the file was edited or damaged"
      )
    }
    do {
      try trainLoader.check(trainState)
      try archLoader.check(archState)
    } catch let error as DataError {
      throw SearchError.checkpointMismatch("its data-loader state does not fit this data: \(error)")
    }
    // Checkpoints from before the dataset was recorded lack it; the split sizes still guard them.
    if let saved = file.metadata["dataset"], saved != datasetIdentity {
      throw SearchError.checkpointMismatch(
        "it was written for \(saved), the data now is \(datasetIdentity); pass the checkpoint's dataset and data path or write to another folder"
      )
    }
    var samplerState: [UInt64]?
    if network.channelSampler != nil {
      guard let text = file.metadata["channel_sampler"],
        let state = try? decoder.decode([UInt64].self, from: Data(text.utf8)), state.count == 4
      else {
        throw SearchError.checkpointMismatch(
          "its channel-sampler state (random channel sampling) is missing or unreadable")
      }
      samplerState = state
    }
    try CheckpointTensors.restore(
      file.tensors, network: network, weightOptimizer: weightOptimizer, architect: architect)
    if let samplerState { network.channelSampler?.state = samplerState }
    try trainLoader.restore(trainState)
    try archLoader.restore(archState)
    nextEpoch = epoch
    history = records
    architectureHistory = architecture
    settingsChanges = changes
  }

  /// The data's name and size, as a checkpoint records it.
  private var datasetIdentity: String { "\(data.name) (\(data.count) training images)" }

  /// The settings that differ from the restored checkpoint's (those ``SearchSettings/changeableOnResume``
  /// allows), as "path: old → new"; the next epoch's record carries them.
  public private(set) var settingsChanges: [String] = []
}

/// The number of rows whose largest logit is at the label (first maximum wins ties).
func correctPredictions(_ logits: Tensor, _ labels: [Int32]) -> Int {
  let k = logits.shape[1]
  var hits = 0
  for (r, label) in labels.enumerated() {
    let row = logits.pointer + r * k
    var best = 0
    for j in 1..<k where row[j] > row[best] { best = j }
    if best == Int(label) { hits += 1 }
  }
  return hits
}

/// Mean cross-entropy and accuracy of `logits` over `indices` of `data` (all when nil), in
/// batches without augmentation and without recording a graph; the caller sets evaluation mode.
///
/// - Parameters:
///   - seed: fixes the order of the images (which changes only the rounding of the sums).
///   - dataParallel: the ranks that share the work: each evaluates its contiguous part of the
///     indices and the sums are added up, so every rank returns the result of all of them.
public func evaluateClassifier(
  on data: ImageDataset, indices: [Int]? = nil, batchSize: Int, seed: UInt64 = 0,
  dataParallel: DataParallel = DataParallel(), logits: (Tensor) -> Tensor
) -> (loss: Double, accuracy: Double) {
  let all = indices ?? Array(0..<data.count)
  let part = Array(all[dataParallel.shard(of: all.count).rows])
  var (lossSum, correct, seen) = (0.0, 0, 0)
  if !part.isEmpty {
    let loader = BatchLoader(dataset: data, indices: part, batchSize: batchSize, augment: false, seed: seed)
    withNoGrad {
      while let batch = loader.nextBatch() {
        let b = LabeledBatch(batch)
        let out = logits(b.images)
        lossSum += Double(crossEntropy(out, labels: b.labels).item) * Double(batch.count)
        correct += correctPredictions(out, b.labels)
        seen += batch.count
      }
    }
  }
  let sums = dataParallel.allReduce([lossSum, Double(correct), Double(seen)])
  return (sums[0] / max(sums[2], 1), sums[1] / max(sums[2], 1))
}

/// Checks that every batch of an epoch over `images` gives each of `ranks` ranks at least
/// `rowsPerRank` rows (the last batch holds the remainder; the smallest shard of n rows is ⌊n/ranks⌋).
///
/// - Parameters:
///   - what: the images, in the message ("search-train images").
///   - reason: why more than one row is needed, in the message.
/// - Throws: ``SearchError/invalidConfiguration(_:)`` saying what to change.
public func checkShards(
  images: Int, batchSize: Int, ranks: Int, rowsPerRank: Int = 1, _ what: String, reason: String? = nil
) throws {
  let last = images % batchSize == 0 ? min(batchSize, images) : images % batchSize
  guard last < ranks * rowsPerRank else { return }
  let sizes = "(\(images) \(what), batch size \(batchSize))"
  throw SearchError.invalidConfiguration(
    ranks == 1
      ? "a batch of \(last) \(what) is too small: \(reason ?? "it needs \(rowsPerRank)") \(sizes); "
        + "use another --batch-size or --subset"
      : "a batch of \(last) \(what) cannot be shared by \(ranks) ranks \(sizes): every rank needs at least "
        + "\(rowsPerRank)\(reason.map { " (\($0))" } ?? ""); use fewer ranks or another --batch-size or --subset")
}
