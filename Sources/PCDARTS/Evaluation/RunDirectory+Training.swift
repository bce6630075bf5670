// The output folder of a training run:
//
//   log.jsonl                one JSON object per completed epoch (TrainingEpochRecord)
//   checkpoint.safetensors   weights, SGD momentum, data-loader and drop-path state, history
//   weights.safetensors      the weights and buffers alone, under the official state_dict names
//   genotype.json, .txt      the genotype trained (JSON and DARTS string)
//   result.json              once the last epoch is done: the final test error and the best

import Foundation
import TensorEngine

extension RunDirectory.Layout {
  /// What a training run writes.
  public static let training = RunDirectory.Layout(files: [
    "log.jsonl", "checkpoint.safetensors", "weights.safetensors", "genotype.json", "genotype.txt", "result.json",
  ])
}

extension RunDirectory {
  /// Writes the state after an epoch: the checkpoint first (the epoch's commit point), then what
  /// is derived from it (see ``writeDerived(_:)-(TrainingRun)``).
  public func writeEpoch(_ run: TrainingRun) throws {
    try writeAtomically(run.checkpoint().serialized(), to: checkpointURL)
    try writeDerived(run)
  }

  /// Rewrites everything derived from the run's state after its last completed epoch: the log,
  /// the weights, the genotype files, and the result once the run is finished (a result of an
  /// earlier, longer schedule is removed).
  public func writeDerived(_ run: TrainingRun) throws {
    try write(run.history.map(\.jsonLine).joined(separator: "\n") + (run.history.isEmpty ? "" : "\n"), to: logURL)
    try write(run.genotype.jsonString + "\n", to: url.appendingPathComponent("genotype.json"))
    try write(run.genotype.pythonDescription + "\n", to: url.appendingPathComponent("genotype.txt"))
    guard run.nextEpoch > 0 else { return }
    try writeAtomically(run.weights().serialized(), to: url.appendingPathComponent("weights.safetensors"))
    let resultURL = url.appendingPathComponent("result.json")
    if let result = run.result {
      try write(sortedJSON(result) + "\n", to: resultURL)
    } else if FileManager.default.fileExists(atPath: resultURL.path) {
      try FileManager.default.removeItem(at: resultURL)
    }
  }
}
