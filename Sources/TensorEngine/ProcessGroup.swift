// The processes of a data-parallel job, as the engine sees them: a rank, a size and the
// collective operations that combine buffers across the ranks. The engine itself uses one, the
// sums of a synchronised batch norm (``BatchNormState/group``); the search and the training
// loops average gradients through it. An implementation over MPI lives in its own library
// (MPIProcessGroup), so that nothing here links MPI; ``SingleProcess`` is the group of one.

/// The ranks of a data-parallel job and the collective operations among them.
///
/// Every rank must make the same sequence of collective calls with buffers of the same sizes;
/// a call returns when every rank has made it. Implementations must give every rank the same
/// bits, so that ranks that apply the same update stay identical.
public protocol ProcessGroup: AnyObject {
  /// This process's index, `0..<size`.
  var rank: Int { get }
  /// The number of processes.
  var size: Int { get }
  /// Replaces every element by its sum over the ranks.
  func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>)
  /// Replaces every element by its sum over the ranks.
  func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>)
  /// Replaces the bytes on every rank by those of rank `root`.
  func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int)
}

extension ProcessGroup {
  /// Sums `values` over the ranks.
  public func allReduceSum(_ values: [Double]) -> [Double] {
    var result = values
    result.withUnsafeMutableBufferPointer { allReduceSum($0) }
    return result
  }
}

/// The group of one process: every collective operation leaves its buffer as it is.
public final class SingleProcess: ProcessGroup {
  /// The one group of one process.
  public static let shared = SingleProcess()
  private init() {}
  /// 0.
  public var rank: Int { 0 }
  /// 1.
  public var size: Int { 1 }
  /// Leaves `values` unchanged.
  public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) {}
  /// Leaves `values` unchanged.
  public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) {}
  /// Leaves `bytes` unchanged.
  public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) {}
}
