// What the two kinds of run (a search, the training of a genotype) offer the loop that drives
// them epoch by epoch: a command, or a client's own driver.

/// A run made of epochs: it reports each step, stops at a step boundary when asked, and knows
/// where it is. ``SearchRun`` and ``TrainingRun`` are the two.
public protocol EpochRun: AnyObject {
  /// The summary of one epoch (a line of the run's `log.jsonl`).
  associatedtype Record
  /// Whether every epoch has run.
  var isFinished: Bool { get }
  /// The next epoch to run (0-based): the number of epochs completed.
  var nextEpoch: Int { get }
  /// Called after every step.
  var onStep: ((StepProgress) -> Void)? { get set }
  /// Asked before an epoch and after every step: `true` ends the epoch with
  /// ``SearchError/interrupted(epoch:step:)`` before anything of it is recorded.
  var shouldStop: (() -> Bool)? { get set }
  /// Runs the next epoch and returns its record.
  func runEpoch() throws -> Record
}

extension SearchRun: EpochRun {}
extension TrainingRun: EpochRun {}
