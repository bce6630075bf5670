// The `search-cifar` command: the options, their defaults (the paper's settings), the console
// output and the exit codes. The executable only calls `SearchCommand.main`.
//
// Exit codes: 0 done; 1 data, file or numerical failure; 2 usage or configuration error.

import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine

/// The full PC-DARTS search as a command-line program.
public enum SearchCommand {
  /// Every option with its default; the defaults are the paper's CIFAR-10 search.
  public static let parser = CommandLineParser(
    commandName: "search-cifar",
    abstract:
      "PC-DARTS architecture search (Xu et al., ICLR 2020) on CIFAR-10, CIFAR-100, Fashion-MNIST or a folder of images.",
    options: [
      datasetOption, dataOption,
    ] + imageFolderOptions + [
      settingOption(
        "train_search_imagenet.py: a --dataset folder decoded per batch at 224 × 224, the three-convolution stem, "
          + "K 2, batch 1024, lr 0.5 after 5 warm-up epochs, arch lr 6e-3, architecture steps from epoch 35, "
          + "10% + 2.5% of each class"),
      .double(
        "train-subset-portion", default: 0.1, help: "--setting imagenet: share of each class that trains the weights"
      ) { $0 > 0 && $0 < 1 ? nil : "expected a share in (0, 1)" },
      .double(
        "arch-subset-portion", default: 0.025,
        help: "--setting imagenet: share of each class that trains the architecture"
      ) { $0 > 0 && $0 < 1 ? nil : "expected a share in (0, 1)" },
      .int(
        "lr-warmup-epochs", default: 0,
        help: "epochs of linear learning-rate warm-up, lr·(e+1)/N (--setting imagenet: 5 when the batch exceeds 256)"),
      .int("batch-size", default: 256, help: "images per batch"),
      .double("lr", default: 0.1, help: "initial weight learning rate (SGD)"),
      .double("lr-min", default: 0, help: "final learning rate of the cosine schedule"),
      .double("momentum", default: 0.9, help: "SGD momentum"),
      .double("weight-decay", default: 3e-4, help: "SGD weight decay"),
      .int("epochs", default: 50, help: "search epochs"),
      .int("warmup-epochs", default: 15, help: "epochs before architecture updates start"),
      .int("init-channels", default: 16, help: "channels of the first cells"),
      .int("layers", default: 8, help: "cells in the super-net"),
      .int("K", default: 4, help: "partial-channel factor: 1/K of the channels enter the operations (1 = DARTS)"),
      .double("grad-clip", default: 5, help: "gradient-norm clipping of the weights"),
      .double(
        "train-portion", default: 0.5, help: "share of the training set used for weights; the rest for the architecture"
      ),
      .double("arch-lr", default: 6e-4, help: "architecture learning rate (Adam)"),
      .double("arch-weight-decay", default: 1e-3, help: "architecture weight decay"),
      .flag("unrolled", help: "second-order (unrolled) architecture gradient"),
      .string(
        "channel-sampling", default: "shuffle",
        help:
          "shuffle (the paper: first C/K channels, then a channel shuffle) or random (a new random C/K per edge and step)"
      ) {
        ChannelSampling(rawValue: $0) == nil ? "expected shuffle or random" : nil
      },
      .int(
        "arch-update-every", default: 1,
        help: "an architecture step every N weight steps (the first of each epoch, then every Nth)"),
      .int(
        "max-skip-connect", default: -1,
        help:
          "at most this many skip_connect edges in the derived normal cell, recorded beside the raw genotype (-1 = no cap)"
      ),
      .int("seed", default: 2, help: "seed of every random choice") { $0 >= 0 ? nil : "expected a value ≥ 0" },
      .string("out", default: "runs/search", help: "output folder (log, genotypes, checkpoint, cell drawings)"),
      .flag("resume", help: "continue from the checkpoint in --out (from the start when it has none yet)"),
      .string(
        "report", default: "",
        help: "write report.html of the run folder DIR again from its files, then exit (no search)"),
      .flag("overwrite", help: "move the outputs of an earlier run in --out into --out/previous-<time> and start anew"),
      threadsOption, recomputeOption,
      .flag(
        "sync-bn",
        help: "under MPI: batch norms normalise over the global batch, all ranks' rows (default: each rank's rows)"),
      .int("subset", default: 0, help: "use only the first N training images (0 = all)") {
        $0 >= 0 ? nil : "expected a value ≥ 0"
      },
    ])

  /// The flag of each setting the options set (paths in ``SearchSettings``), so that a range
  /// error of the settings, which are validated in one place, names the flag the user typed.
  static let flagsOfSettings: [String: String] = [
    "batchSize": "--batch-size", "learningRate": "--lr", "learningRateMin": "--lr-min",
    "momentum": "--momentum", "weightDecay": "--weight-decay", "epochs": "--epochs",
    "warmupEpochs": "--warmup-epochs", "network.initChannels": "--init-channels",
    "network.layers": "--layers", "network.partialChannels": "--K", "gradClip": "--grad-clip",
    "trainPortion": "--train-portion", "architect.learningRate": "--arch-lr",
    "architect.weightDecay": "--arch-weight-decay", "seed": "--seed", "subset": "--subset",
    "archUpdateEvery": "--arch-update-every", "maxSkipConnect": "--max-skip-connect",
    "network.channelSampling": "--channel-sampling", "syncBatchNorm": "--sync-bn",
    "learningRateWarmupEpochs": "--lr-warmup-epochs",
  ]

  /// The values `--setting imagenet` gives the options not set on the command line
  /// (train_search_imagenet.py); `--image-size` and the normalisation are in ``imageNetFolder(_:)``.
  static let imageNetDefaults: [String: Double] = [
    "batch-size": 1024, "lr": 0.5, "arch-lr": 6e-3, "warmup-epochs": 35, "K": 2,
  ]

  /// The settings the options describe.
  public static func settings(from o: ParsedOptions) -> SearchSettings {
    var s = SearchSettings()
    let imageNet = isImageNetSetting(o)
    func value(_ name: String) -> Double? { imageNet && !o.isSet(name) ? imageNetDefaults[name] : nil }
    s.batchSize = value("batch-size").map { Int($0) } ?? o.int("batch-size")
    s.learningRate = Float(value("lr") ?? o.double("lr"))
    s.learningRateMin = Float(o.double("lr-min"))
    s.momentum = Float(o.double("momentum"))
    s.weightDecay = Float(o.double("weight-decay"))
    s.epochs = o.int("epochs")
    s.warmupEpochs = value("warmup-epochs").map { Int($0) } ?? o.int("warmup-epochs")
    s.network.initChannels = o.int("init-channels")
    s.network.layers = o.int("layers")
    s.network.partialChannels = value("K").map { Int($0) } ?? o.int("K")
    s.gradClip = Float(o.double("grad-clip"))
    s.trainPortion = o.double("train-portion")
    s.architect = ArchitectSettings(
      learningRate: Float(value("arch-lr") ?? o.double("arch-lr")),
      weightDecay: Float(o.double("arch-weight-decay")),
      unrolled: o.flag("unrolled"))
    s.seed = UInt64(o.int("seed"))
    s.subset = o.int("subset") > 0 ? o.int("subset") : nil
    s.network.channelSampling = ChannelSampling(rawValue: o.string("channel-sampling")) ?? .shuffle
    s.archUpdateEvery = o.int("arch-update-every")
    s.maxSkipConnect = o.int("max-skip-connect") == -1 ? nil : o.int("max-skip-connect")
    s.syncBatchNorm = o.flag("sync-bn")
    s.learningRateWarmupEpochs =
      imageNet && !o.isSet("lr-warmup-epochs") ? (s.batchSize > 256 ? 5 : 0) : o.int("lr-warmup-epochs")
    if imageNet {
      s.network.stem = .imagenet
      let (weights, architecture) = (o.double("train-subset-portion"), o.double("arch-subset-portion"))
      s.trainPortion = weights / (weights + architecture)
    }
    return s
  }

  /// The folder options of `--setting imagenet` (``imageNetFolderOptions(_:dataset:folder:colorJitter:)``).
  /// - Throws: as that does, and a usage failure for subset portions over 1.
  static func imageNetFolder(_ o: ParsedOptions, dataset: DatasetName, folder: ImageFolderOptions) throws
    -> ImageFolderOptions
  {
    guard o.double("train-subset-portion") + o.double("arch-subset-portion") <= 1 else {
      throw CommandFailure(
        message: "--train-subset-portion and --arch-subset-portion add up to more than 1", exitCode: 2)
    }
    return try imageNetFolderOptions(o, dataset: dataset, folder: folder, colorJitter: nil)
  }

  /// Runs the command with `arguments` (without the program name); returns the exit code.
  public static func main(_ arguments: [String]) -> Int32 {
    runCommand(parser, arguments, flags: flagsOfSettings) { try run($0, arguments: arguments) }
  }

  private static func run(_ options: ParsedOptions, arguments: [String]) throws {
    if !options.string("report").isEmpty {
      guard Launch.current.isFirstRank else { return }  // one writer under MPI
      _ = try RunReport(folder: URL(fileURLWithPath: options.string("report")))  // a run folder?
      let directory = try RunDirectory(options.string("report"))
      try directory.writeReport()
      print("wrote \(directory.url.appendingPathComponent("report.html").path)")
      return
    }
    // Under MPI every rank sets up; a failure on any rank ends every rank here, reported once.
    let (settings, directory, earlier, data, run, mpiLine) = try Launch.current.together {
      () throws -> (SearchSettings, RunDirectory?, [String], ImageDataset, SearchRun, String?) in
      applyThreads(options)
      let settings = Self.settings(from: options)
      try settings.validate()
      applyRecomputation(options, imageNetStem: settings.network.stem == .imagenet)
      var (dataset, path, folder) = try datasetOptions(options)
      if isImageNetSetting(options) { folder = try imageNetFolder(options, dataset: dataset, folder: folder) }
      try checkMemory(settings, batchFlag: "--batch-size", imageSide: folder.imageSize)
      let (directory, earlier) = try openRunDirectoryOnFirstRank(options, layout: .search)
      var data = try loadCommandData(dataset, from: path, train: true, folder: folder)
      if isImageNetSetting(options) {
        // The official search reads 10% and 2.5% of each class, prepared offline; the run's split
        // then divides their union in that ratio (settings.trainPortion).
        var rng = SeededGenerator(seed: settings.seed &+ 0x1A6E)
        let sample = classBalancedSample(
          labels: data.labels,
          portions: [options.double("train-subset-portion"), options.double("arch-subset-portion")], rng: &rng)
        data = data.subset(sample.flatMap { $0 })
      }
      let (dataParallel, mpiLine) = commandDataParallel(syncBatchNorm: settings.syncBatchNorm)
      let run = try SearchRun(settings: settings, data: data, dataParallel: dataParallel)
      return (settings, directory, earlier, data, run, mpiLine)
    }
    try startRun(
      in: directory, earlier: earlier, options, restore: { try run.restore(from: $0) },
      rewriteDerived: {
        try directory?.writeDerived(run)
        print("resumed at epoch \(run.nextEpoch) of \(settings.epochs) from \(directory?.checkpointURL.path ?? "")")
        for change in run.settingsChanges { print("  changed on resume: \(change)") }
      })
    print(
      "search-cifar: \(data.name), \(run.trainLoader.indices.count) search-train / \(run.validIndices.count) search-val images, "
        + (settings.network.stem == .imagenet ? "ImageNet stem, " : "")
        + "K=\(settings.network.partialChannels), \(settings.network.layers) cells of \(settings.network.initChannels) channels, "
        + "\(run.network.weightCount) weights, batch \(settings.batchSize), \(settings.epochs) epochs "
        + "(\(settings.warmupEpochs) warm-up), \(settings.architect.unrolled ? "second" : "first")-order")
    if let mpiLine { print(mpiLine) }
    try runEpochs(
      run, epochs: settings.epochs, command: "search-cifar", arguments: arguments, directory: directory,
      flags: flagsOfSettings, settingValue: settings.value(of:), write: { try directory?.writeEpoch($0) },
      report: { record in
        print(
          String(
            format:
              "epoch %d/%d  lr %.5f  train loss %.4f acc %.4f  valid loss %.4f acc %.4f  %.1fs  %.1f img/s  peak %@",
            record.epoch + 1, settings.epochs, record.lr, record.trainLoss, record.trainAcc,
            record.validLoss, record.validAcc, record.seconds, record.imagesPerSecond,
            formatBytes(record.peakTensorBytes)))
        print("  genotype = \(record.genotype)")
        if let capped = record.cappedGenotype, capped != record.genotype {
          print("  with at most \(settings.maxSkipConnect ?? 0) skip_connect: \(capped)")
        }
      })
    if let last = run.history.last {
      print("final genotype: \(last.genotype)")
      print(String(format: "final validation accuracy: %.4f", last.validAcc))
      if let directory { print("outputs in \(directory.url.path)") }
    }
  }
}
