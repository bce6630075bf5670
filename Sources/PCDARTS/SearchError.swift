// The one error type of the search layer. Its messages describe values and settings by their
// names in SearchSettings (`learningRate`, `network.partialChannels`); the commands map those
// names to their flags and the errors to exit codes.

/// Errors of the search layer; each description names the problem and what to do.
public enum SearchError: Error, CustomStringConvertible, Equatable {
  /// A setting out of its range, or settings that cannot work together.
  /// - Parameters:
  ///   - setting: the setting's path in ``SearchSettings``, such as `learningRate` or
  ///     `network.partialChannels`.
  ///   - problem: what is wrong with its value and what would work, naming the values.
  case invalidSetting(_ setting: String, _ problem: String)
  /// Anything else that makes a run impossible before it starts (an output folder that is a
  /// file, a checkpoint where none was expected).
  case invalidConfiguration(String)
  /// A checkpoint written for other settings, another network, or in another format.
  case checkpointMismatch(String)
  /// A loss became NaN or infinite; no update was applied from it.
  case nonFiniteLoss(NonFiniteLoss)
  /// Text that is not a genotype in DARTS or JSON form.
  case invalidGenotype(String)
  /// The run stopped at a step boundary because its ``SearchRun/shouldStop`` said so (a signal):
  /// nothing of the interrupted epoch was written.
  case interrupted(epoch: Int, step: Int)
  /// The ranks of a data-parallel run no longer hold the same parameters.
  case ranksDiverged(String)

  /// The message for the user: the kind of problem, then the details.
  public var description: String {
    switch self {
    case .invalidSetting(let setting, let problem): return "invalid setting \(setting): \(problem)"
    case .invalidConfiguration(let m): return "invalid configuration: \(m)"
    case .checkpointMismatch(let m): return "checkpoint does not match: \(m)"
    case .nonFiniteLoss(let loss): return "the loss is not finite: \(loss)"
    case .invalidGenotype(let m): return "invalid genotype: \(m)"
    case .interrupted(let epoch, let step):
      return "interrupted at step \(step) of epoch \(epoch) (0: before its first step)"
    case .ranksDiverged(let m): return "the ranks diverged: \(m)"
    }
  }
}

/// Where a loss stopped being finite, and the settings whose steps produced it.
public struct NonFiniteLoss: Equatable, Sendable, CustomStringConvertible {
  /// Which computation gave the loss.
  public enum Phase: String, Equatable, Sendable {
    /// The validation loss of an architecture step: α and β (or the weights before it) diverged.
    case architectureStep = "architecture step"
    /// The training loss of a weight step.
    case weightStep = "weight step"
    /// The evaluation after an epoch: the weights or the batch-norm statistics diverged.
    case evaluation = "evaluation"
  }

  /// The computation.
  public var phase: Phase
  /// The epoch (from 0) and, for steps, the 1-based step within it.
  public var epoch: Int, step: Int?
  /// The loss value.
  public var loss: Float
  /// The settings (paths in ``SearchSettings``) whose steps fed this loss, most likely cause first.
  public var settingsToLower: [String] {
    switch phase {
    case .architectureStep: return ["architect.learningRate", "learningRate"]
    case .weightStep: return ["learningRate", "gradClip"]
    case .evaluation: return ["learningRate"]
    }
  }

  /// "weight step 3 of epoch 0 gave a loss of nan".
  public var description: String {
    "\(phase.rawValue)\(step.map { " \($0)" } ?? "") of epoch \(epoch) gave a loss of \(loss)"
  }
}
