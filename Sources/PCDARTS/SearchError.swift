// The one error type of the search layer; the commands map it to messages and exit codes.

/// Errors of the search layer; each description names the problem and what to do.
public enum SearchError: Error, CustomStringConvertible, Equatable {
  /// Settings or a network shape that cannot work.
  case invalidConfiguration(String)
  /// A checkpoint written for other settings, another network, or in another format.
  case checkpointMismatch(String)
  /// A loss became NaN or infinite.
  case nonFiniteLoss(String)
  /// Text that is not a genotype in DARTS or JSON form.
  case invalidGenotype(String)

  /// The message for the user: the kind of problem, then the details.
  public var description: String {
    switch self {
    case .invalidConfiguration(let m): return "invalid configuration: \(m)"
    case .checkpointMismatch(let m): return "checkpoint does not match: \(m)"
    case .nonFiniteLoss(let m): return "the loss is not finite: \(m)"
    case .invalidGenotype(let m): return "invalid genotype: \(m)"
    }
  }
}
