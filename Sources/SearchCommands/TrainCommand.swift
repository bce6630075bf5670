// The `train-cifar` command: a genotype trained from scratch and its test error (the official
// PC-DARTS train.py with --auxiliary --cutout), and `--evaluate`, a trained network's test
// accuracy (test.py). The executable only calls `TrainCommand.main`.
//
// Exit codes: 0 done; 1 data, file or numerical failure; 2 usage or configuration error.

import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine

/// Training a found architecture from scratch as a command-line program.
public enum TrainCommand {
  /// Every option with its default; the defaults are the paper's CIFAR-10 evaluation.
  public static let parser = CommandLineParser(
    commandName: "train-cifar",
    abstract:
      "Trains a genotype from scratch (DARTS's evaluation network) and reports its test error, as PC-DARTS's train.py.",
    options: [
      .string(
        "genotype", default: "",
        help:
          "the architecture: a search run's folder, its genotype.json, a Genotype(...) string, or PC_DARTS_cifar, "
          + "PC_DARTS_image, DARTS_V1, DARTS_V2"),
      datasetOption, dataOption,
    ] + imageFolderOptions + [
      settingOption(
        "train_imagenet.py: NetworkImageNet, 14 cells of 48 channels, on a --dataset folder decoded per batch at "
          + "224 × 224 with colour jitter, batch 1024, lr 0.5 decaying linearly after 5 warm-up epochs, weight "
          + "decay 3e-5, 250 epochs, label smoothing 0.1, no cutout, no drop-path"),
      .string("lr-schedule", default: "cosine", help: "cosine (train.py) or linear (train_imagenet.py)") {
        TrainingSettings.LearningRateSchedule(rawValue: $0) == nil ? "expected cosine or linear" : nil
      },
      .int("lr-warmup-epochs", default: 0, help: "epochs of linear learning-rate warm-up, lr·(e+1)/N"),
      .int("batch-size", default: 96, help: "images per batch"),
      .double("lr", default: 0.025, help: "initial learning rate (SGD)"),
      .double("lr-min", default: 0, help: "final learning rate of the cosine schedule"),
      .double("momentum", default: 0.9, help: "SGD momentum"),
      .double("weight-decay", default: 3e-4, help: "SGD weight decay"),
      .int("epochs", default: 600, help: "training epochs"),
      .int("init-channels", default: 36, help: "channels of the first cells"),
      .int("layers", default: 20, help: "cells of the network"),
      .flag("auxiliary", help: "train.py's spelling, accepted as is: the auxiliary head is on unless --no-auxiliary"),
      .flag("no-auxiliary", help: "train without the auxiliary head"),
      .double("auxiliary-weight", default: 0.4, help: "weight of the auxiliary loss"),
      .double(
        "label-smoothing", default: 0,
        help: "ε of the label-smoothed cross-entropy of both losses (train_imagenet.py: 0.1)"),
      .flag("cutout", help: "train.py's spelling, accepted as is: cutout is on unless --no-cutout"),
      .flag("no-cutout", help: "no cutout"),
      .int("cutout-length", default: 16, help: "side of the cutout square"),
      .double("drop-path-prob", default: 0.3, help: "drop-path probability of the last epoch (a linear ramp from 0)"),
      .double("grad-clip", default: 5, help: "gradient-norm clipping"),
      .int("seed", default: 0, help: "seed of every random choice") { $0 >= 0 ? nil : "expected a value ≥ 0" },
      .string("out", default: "runs/train", help: "output folder (log, checkpoint, weights, result)"),
      .flag("resume", help: "continue from the checkpoint in --out (from the start when it has none yet)"),
      .flag("overwrite", help: "move the outputs of an earlier run in --out into --out/previous-<time> and start anew"),
      .string(
        "evaluate", default: "",
        help: "print the test accuracy of a trained checkpoint or weights file, then exit (no training)"),
      threadsOption, recomputeOption,
      .flag(
        "sync-bn",
        help: "under MPI: batch norms normalise over the global batch, all ranks' rows (default: each rank's rows)"),
      .int("subset", default: 0, help: "train on only the first N training images (0 = all)") {
        $0 >= 0 ? nil : "expected a value ≥ 0"
      },
      .int("test-subset", default: 0, help: "test on only the first N test images (0 = all)") {
        $0 >= 0 ? nil : "expected a value ≥ 0"
      },
    ])

  /// The flag of each setting the options set (paths in ``TrainingSettings``).
  static let flagsOfSettings: [String: String] = [
    "batchSize": "--batch-size", "learningRate": "--lr", "learningRateMin": "--lr-min", "momentum": "--momentum",
    "weightDecay": "--weight-decay", "epochs": "--epochs", "network.initChannels": "--init-channels",
    "network.layers": "--layers", "auxiliaryWeight": "--auxiliary-weight", "labelSmoothing": "--label-smoothing",
    "cutoutLength": "--cutout-length",
    "dropPathProbability": "--drop-path-prob", "gradClip": "--grad-clip", "seed": "--seed", "subset": "--subset",
    "testSubset": "--test-subset", "syncBatchNorm": "--sync-bn", "learningRateSchedule": "--lr-schedule",
    "learningRateWarmupEpochs": "--lr-warmup-epochs",
  ]

  /// The values `--setting imagenet` gives the options not set on the command line (train_imagenet.py).
  static let imageNetDefaults: [String: Double] = [
    "batch-size": 1024, "lr": 0.5, "weight-decay": 3e-5, "epochs": 250, "init-channels": 48, "layers": 14,
    "drop-path-prob": 0, "label-smoothing": 0.1,
  ]

  /// The settings the options describe.
  /// - Throws: ``CommandFailure`` when a switch and its `--no-` form are both given.
  public static func settings(from o: ParsedOptions) throws -> TrainingSettings {
    for name in ["auxiliary", "cutout"] where o.flag(name) && o.flag("no-" + name) {
      throw CommandFailure(message: "--\(name) and --no-\(name) contradict each other: pass one", exitCode: 2)
    }
    var s = TrainingSettings()
    let imageNet = isImageNetSetting(o)
    func double(_ name: String) -> Double {
      imageNet && !o.isSet(name) ? imageNetDefaults[name] ?? o.double(name) : o.double(name)
    }
    func int(_ name: String) -> Int {
      imageNet && !o.isSet(name) ? imageNetDefaults[name].map { Int($0) } ?? o.int(name) : o.int(name)
    }
    s.batchSize = int("batch-size")
    s.learningRate = Float(double("lr"))
    s.learningRateMin = Float(o.double("lr-min"))
    s.momentum = Float(o.double("momentum"))
    s.weightDecay = Float(double("weight-decay"))
    s.epochs = int("epochs")
    s.network.initChannels = int("init-channels")
    s.network.layers = int("layers")
    s.network.auxiliary = !o.flag("no-auxiliary")
    s.auxiliaryWeight = Float(o.double("auxiliary-weight"))
    s.labelSmoothing = Float(double("label-smoothing"))
    // The ImageNet setting has no cutout unless --cutout asks for it.
    s.cutoutLength = o.flag("no-cutout") || (imageNet && !o.flag("cutout")) ? nil : o.int("cutout-length")
    s.dropPathProbability = Float(double("drop-path-prob"))
    s.gradClip = Float(o.double("grad-clip"))
    s.seed = UInt64(o.int("seed"))
    s.subset = o.int("subset") > 0 ? o.int("subset") : nil
    s.testSubset = o.int("test-subset") > 0 ? o.int("test-subset") : nil
    s.syncBatchNorm = o.flag("sync-bn")
    s.learningRateSchedule =
      imageNet && !o.isSet("lr-schedule")
      ? .linear : TrainingSettings.LearningRateSchedule(rawValue: o.string("lr-schedule"))!
    s.learningRateWarmupEpochs =
      imageNet && !o.isSet("lr-warmup-epochs") ? (s.batchSize > 256 ? 5 : 0) : o.int("lr-warmup-epochs")
    if imageNet { s.network.stem = .imagenet }
    return s
  }

  /// Runs the command with `arguments` (without the program name); returns the exit code.
  public static func main(_ arguments: [String]) -> Int32 {
    runCommand(parser, arguments, flags: flagsOfSettings) { try run($0, arguments: arguments) }
  }

  private static func run(_ options: ParsedOptions, arguments: [String]) throws {
    applyThreads(options)
    if !options.string("evaluate").isEmpty { return try evaluate(options) }
    // Under MPI every rank sets up; a failure on any rank ends every rank here, reported once.
    let (settings, genotype, source, directory, earlier, trainData, run, mpiLine) = try Launch.current.together {
      () throws -> (TrainingSettings, Genotype, String, RunDirectory?, [String], ImageDataset, TrainingRun, String?) in
      guard !options.string("genotype").isEmpty else {
        throw CommandFailure(
          message: "pass --genotype: a search run's folder, a genotype.json, a Genotype(...) string, or one of "
            + Genotype.published.keys.sorted().joined(separator: ", "),
          exitCode: 2)
      }
      let settings = try Self.settings(from: options)
      try settings.validate()
      applyRecomputation(options, imageNetStem: isImageNetSetting(options))
      let (genotype, source) = try Genotype.resolve(options.string("genotype"))
      try genotype.validate()
      let (directory, earlier) = try openRunDirectoryOnFirstRank(options, layout: .training)
      var (dataset, path, folder) = try datasetOptions(options)
      if isImageNetSetting(options) {
        folder = try imageNetFolderOptions(options, dataset: dataset, folder: folder, colorJitter: .imageNet)
      }
      let trainData = try loadCommandData(dataset, from: path, train: true, folder: folder)
      var testFolder = folder  // tested with the training images' normalisation
      (testFolder.mean, testFolder.std) = (trainData.mean, trainData.std)
      let testData = try loadCommandData(dataset, from: path, train: false, folder: testFolder)
      let (dataParallel, mpiLine) = commandDataParallel(syncBatchNorm: settings.syncBatchNorm)
      let run = try TrainingRun(
        settings: settings, genotype: genotype, trainData: trainData, testData: testData, dataParallel: dataParallel)
      return (settings, genotype, source, directory, earlier, trainData, run, mpiLine)
    }
    try startRun(
      in: directory, earlier: earlier, options, restore: { try run.restore(from: $0) },
      rewriteDerived: {
        try directory?.writeDerived(run)
        print("resumed at epoch \(run.nextEpoch) of \(settings.epochs) from \(directory?.checkpointURL.path ?? "")")
        for change in run.settingsChanges { print("  changed on resume: \(change)") }
      })
    let network = run.network
    print("genotype = \(genotype.pythonDescription) (from \(source))")
    print(
      "train-cifar: \(trainData.name), \(run.trainData.count) training / \(run.testData.count) test images, "
        + "\(settings.network.layers) cells of \(settings.network.initChannels) channels, "
        + String(format: "param size = %.6fMB", Double(network.weightCountExcludingAuxiliary) / 1e6)
        + " (\(network.weightCount) weights with the auxiliary head), batch \(settings.batchSize), \(settings.epochs) epochs, "
        + "auxiliary \(settings.network.auxiliary ? "\(settings.auxiliaryWeight)" : "off"), "
        + "cutout \(settings.cutoutLength.map(String.init) ?? "off"), drop-path \(settings.dropPathProbability)")
    if let mpiLine { print(mpiLine) }
    try runEpochs(
      run, epochs: settings.epochs, command: "train-cifar", arguments: arguments, directory: directory,
      flags: flagsOfSettings, settingValue: settings.value(of:), write: { try directory?.writeEpoch($0) },
      report: { record in
        print(
          String(
            format:
              "epoch %d/%d  lr %.5f  drop-path %.3f  train loss %.4f acc %.4f  test loss %.4f acc %.4f (best %.4f)  %.1fs  %.1f img/s  peak %@",
            record.epoch + 1, settings.epochs, record.lr, record.dropPathProbability, record.trainLoss, record.trainAcc,
            record.testLoss, record.testAcc, record.bestTestAcc, record.seconds, record.imagesPerSecond,
            formatBytes(record.peakTensorBytes)))
      })
    if let result = run.result {
      print(
        String(
          format: "test error %.2f%% (accuracy %.4f) after %d epochs; best epoch %d: %.4f", result.testError * 100,
          result.testAcc, result.epochs, result.bestEpoch + 1, result.bestTestAcc))
      if let directory { print("outputs in \(directory.url.path)") }
    }
  }

  /// `--evaluate FILE`: the test accuracy of the network a training checkpoint or weights file
  /// holds (test.py), on `--dataset`'s test set.
  private static func evaluate(_ options: ParsedOptions) throws {
    let (network, settings, testData) = try Launch.current.together {
      () throws -> (EvaluationNetwork, TrainingSettings, ImageDataset) in
      let path = options.string("evaluate")
      guard FileManager.default.fileExists(atPath: path) else {
        throw CommandFailure(
          message:
            "--evaluate \(path): no such file; pass a checkpoint.safetensors or weights.safetensors of train-cifar",
          exitCode: 1)
      }
      let (network, settings) = try EvaluationNetwork.load(from: SafeTensorsFile.read(from: URL(fileURLWithPath: path)))
      var (dataset, dataPath, folder) = try datasetOptions(options)
      if isImageNetSetting(options) {
        folder = try imageNetFolderOptions(options, dataset: dataset, folder: folder, colorJitter: nil)
      }
      var testData = try loadCommandData(dataset, from: dataPath, train: false, folder: folder)
      guard testData.classCount == network.config.classes else {
        throw CommandFailure(
          message: "\(path) classifies \(network.config.classes) classes, the test set of \(testData.name) has "
            + "\(testData.classCount): pass the --dataset it was trained on",
          exitCode: 2)
      }
      if options.int("test-subset") > 0 {
        testData = testData.subset(Array(0..<min(options.int("test-subset"), testData.count)))
      }
      return (network, settings, testData)
    }
    let (loss, accuracy) = evaluateClassifier(
      on: testData, batchSize: settings.batchSize, dataParallel: DataParallel(group: Launch.current.group)
    ) { network($0).logits }
    print("genotype = \(network.genotype.pythonDescription)")
    print(String(format: "param size = %.6fMB", Double(network.weightCountExcludingAuxiliary) / 1e6))
    print(
      String(
        format: "test_acc %.4f  test_loss %.4f  test error %.2f%% (%d images of %@)", accuracy, loss,
        (1 - accuracy) * 100, testData.count, testData.name))
  }
}
