// Checkpoints as safetensors files that PyTorch users open with `safetensors.torch.load_file`,
// for the search (SearchRun) and for training a genotype (TrainingRun).
//
// Names:
// - weights and batch-norm buffers under the official state_dict names (`stem.0.weight`,
//   `cells.0._ops.3._ops.4.op.1.weight`, …; `num_batches_tracked` as I64);
// - `alphas_normal`, `alphas_reduce`, `betas_normal`, `betas_reduce`;
// - optimizer state under `optimizer.`: `optimizer.sgd.momentum_buffer.<weight name>`,
//   `optimizer.adam.exp_avg.<arch name>`, `optimizer.adam.exp_avg_sq.<arch name>` and
//   `optimizer.adam.step` (I64);
// - everything else (epoch, settings, data-loader and generator states) as JSON strings in the
//   `__metadata__` map.

import Foundation
import NeuralNetwork
import TensorEngine

/// The tensors a checkpoint holds: a model's state (and any other named tensors, such as the
/// architecture parameters), optionally with the momentum buffers of an SGD over the model's
/// parameters and the moments of an Adam over some of the named tensors.
public struct CheckpointLayout {
  /// Every state tensor by its checkpoint name: parameters, buffers, architecture parameters.
  public var state: [(String, Tensor)]
  /// The SGD whose momentum buffers are saved, with the names of its parameters in its order.
  public var sgd: (parameterNames: [String], optimizer: SGD)?
  /// The Adam whose moments and step are saved, with the names of its parameters in its order.
  public var adam: (parameterNames: [String], optimizer: Adam)?
  /// Whether a file must hold the optimizers' state; when false, `optimizer.` entries of a file
  /// are ignored on restore (a network loaded for evaluation from a training checkpoint).
  public var requiresOptimizerState: Bool

  /// A layout of `state` and the optimizers given; optimizer state is required when every
  /// optimizer the run has is given (`requiresOptimizerState`).
  public init(
    state: [(String, Tensor)], sgd: (parameterNames: [String], optimizer: SGD)? = nil,
    adam: (parameterNames: [String], optimizer: Adam)? = nil, requiresOptimizerState: Bool
  ) {
    (self.state, self.sgd, self.adam, self.requiresOptimizerState) = (state, sgd, adam, requiresOptimizerState)
  }
}

/// The tensor part of a checkpoint, with name-by-name checking on load.
public enum CheckpointTensors {
  /// The prefix of optimizer state entries.
  public static let optimizerPrefix = "optimizer."

  /// Every tensor of the search network, its architecture and the two optimizers, by checkpoint name.
  public static func collect(network: SearchNetwork, weightOptimizer: SGD?, architect: Architect?) -> [String:
    SafeTensor]
  {
    collect(layout(network: network, weightOptimizer: weightOptimizer, architect: architect))
  }

  /// Loads the tensors of `file` into the search network and optimizers (see ``restore(_:into:)``).
  public static func restore(
    _ tensors: [String: SafeTensor], network: SearchNetwork, weightOptimizer: SGD?, architect: Architect?
  ) throws {
    try restore(tensors, into: layout(network: network, weightOptimizer: weightOptimizer, architect: architect))
  }

  /// What a search checkpoint holds.
  private static func layout(network: SearchNetwork, weightOptimizer: SGD?, architect: Architect?) -> CheckpointLayout {
    CheckpointLayout(
      state: network.stateTensors() + network.arch.named,
      sgd: weightOptimizer.map { (network.namedParameters().map(\.0), $0) },
      adam: architect.map { (network.arch.named.map(\.0), $0.optimizer) },
      requiresOptimizerState: weightOptimizer != nil && architect != nil)
  }

  /// Every tensor of `layout`, by checkpoint name.
  public static func collect(_ layout: CheckpointLayout) -> [String: SafeTensor] {
    var out: [String: SafeTensor] = [:]
    for (name, t) in layout.state {
      out[name] = safeTensor(name, t)
    }
    if let (names, sgd) = layout.sgd {
      for (name, buffer) in zip(names, sgd.momentumBuffers) {
        if let buffer { out[optimizerPrefix + "sgd.momentum_buffer." + name] = safeTensor(name, buffer) }
      }
    }
    if let (names, adam) = layout.adam {
      for (i, name) in names.enumerated() {
        out[optimizerPrefix + "adam.exp_avg." + name] = safeTensor(name, adam.firstMoments[i])
        out[optimizerPrefix + "adam.exp_avg_sq." + name] = safeTensor(name, adam.secondMoments[i])
      }
      out[optimizerPrefix + "adam.step"] = SafeTensor(shape: [], int64s: [Int64(adam.stepCount)])
    }
    return out
  }

  /// Loads `tensors` into the tensors and optimizers of `layout`.
  ///
  /// - Throws: ``SearchError/checkpointMismatch(_:)`` naming the first missing, unexpected,
  ///   mis-shaped or non-finite tensor; nothing is modified unless every check passes.
  public static func restore(_ tensors: [String: SafeTensor], into layout: CheckpointLayout) throws {
    // Everything is checked before anything is written: names, shapes, finiteness, adam.step.
    var targets: [(name: String, shape: [Int])] = layout.state.map { ($0.0, $0.1.shape) }
    var destinations: [String: () -> Tensor] = [:]
    for (name, t) in layout.state { destinations[name] = { t } }
    var expected = Set(targets.map(\.name))
    if let (parameterNames, sgd) = layout.sgd {
      // Momentum buffers exist once SGD has stepped; a checkpoint has all of them or none.
      let names = parameterNames.map { optimizerPrefix + "sgd.momentum_buffer." + $0 }
      if names.contains(where: { tensors[$0] != nil }) {
        for (i, (key, p)) in zip(names, sgd.parameters).enumerated() {
          targets.append((key, p.shape))
          destinations[key] = {
            let buffer = sgd.momentumBuffers[i] ?? Tensor(zeros: p.shape)
            sgd.momentumBuffers[i] = buffer
            return buffer
          }
        }
        expected.formUnion(names)
      }
    }
    if let (parameterNames, adam) = layout.adam {
      for (i, (name, p)) in zip(parameterNames, adam.parameters).enumerated() {
        for (key, moment) in [
          (optimizerPrefix + "adam.exp_avg." + name, adam.firstMoments[i]),
          (optimizerPrefix + "adam.exp_avg_sq." + name, adam.secondMoments[i]),
        ] {
          targets.append((key, p.shape))
          destinations[key] = { moment }
          expected.insert(key)
        }
      }
      expected.insert(optimizerPrefix + "adam.step")
    }
    if let missing = targets.map(\.name).first(where: { tensors[$0] == nil }) {
      throw SearchError.checkpointMismatch(
        "tensor \(missing) is missing; the checkpoint was written for a different network")
    }
    if let extra = tensors.keys.sorted().first(where: {
      !expected.contains($0) && (layout.requiresOptimizerState || !$0.hasPrefix(optimizerPrefix))
    }) {
      throw SearchError.checkpointMismatch(
        "unexpected tensor \(extra); the checkpoint was written for a different network")
    }
    for (name, shape) in targets {
      let stored = tensors[name]!
      guard stored.shape == shape else {
        throw SearchError.checkpointMismatch(
          "tensor \(name) has shape \(stored.shape) in the file, the network expects \(shape)")
      }
      if let floats = stored.floats, let bad = floats.firstIndex(where: { !$0.isFinite }) {
        throw SearchError.checkpointMismatch(
          "tensor \(name) holds a non-finite value (\(floats[bad]) at element \(bad)): the run had diverged "
            + "when it was saved; resume from an earlier copy of the checkpoint or start again")
      }
    }
    var step: Int64?
    if layout.adam != nil {
      guard let value = tensors[optimizerPrefix + "adam.step"]?.int64s?.first, value >= 0 else {
        throw SearchError.checkpointMismatch("tensor \(optimizerPrefix)adam.step is missing, negative or not I64")
      }
      step = value
    }
    for (name, _) in targets {
      let stored = tensors[name]!
      let values = stored.floats ?? stored.int64s!.map(Float.init)
      let t = destinations[name]!()
      values.withUnsafeBufferPointer { t.pointer.update(from: $0.baseAddress!, count: t.count) }
    }
    if let (_, adam) = layout.adam, let step { adam.stepCount = Int(step) }
  }

  private static func safeTensor(_ name: String, _ t: Tensor) -> SafeTensor {
    if name.hasSuffix("num_batches_tracked") {
      return SafeTensor(shape: t.shape, int64s: t.scalars.map { Int64($0) })
    }
    return SafeTensor(shape: t.shape, floats: t.scalars)
  }
}
