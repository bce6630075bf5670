// How a command was started: as one process, or as one rank of an MPI job (`mpirun -np N`).
// Under MPI every rank runs the whole command on its shard of each batch; rank 0 alone owns the
// output folder, prints and writes, and reads a checkpoint it then hands to the others, so the
// folder needs to exist only on rank 0's machine. The data must be readable on every machine.

import Foundation
import MPIProcessGroup
import PCDARTS
import TensorEngine

/// The process's place in the job.
final class Launch {
  /// The MPI job's ranks, when `mpirun` started the command.
  let mpi: MPIProcessGroup?

  /// The launch of this process: MPI is joined when `mpirun` started it, and never otherwise.
  nonisolated(unsafe) static let current = Launch()

  private init() {
    mpi = MPIProcessGroup.launchedByMPI ? MPIProcessGroup.initialize() : nil
    // Only rank 0 speaks on stdout; errors and warnings on stderr name their rank.
    if let mpi, mpi.rank != 0 { freopen("/dev/null", "w", stdout) }
  }

  /// The ranks (one process without MPI).
  var group: ProcessGroup { mpi ?? SingleProcess.shared }
  /// This process's rank, 0 without MPI.
  var rank: Int { group.rank }
  /// Whether this process writes the outputs and prints: rank 0.
  var isFirstRank: Bool { rank == 0 }
  /// Whether the job has more than one rank.
  var isDistributed: Bool { group.size > 1 }

  /// The engine threads a rank uses when `--threads` is 0: the cores shared among the ranks on
  /// this machine (Open MPI's `OMPI_COMM_WORLD_LOCAL_SIZE`), at least one.
  var defaultThreadCount: Int {
    guard let mpi else { return Engine.defaultThreadCount }
    let local = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? mpi.size
    return max(1, Engine.defaultThreadCount / max(local, 1))
  }

  /// Whether any rank asks for `flag` (every rank must ask at the same points).
  func any(_ flag: Bool) -> Bool {
    guard isDistributed else { return flag }
    return group.allReduceSum([flag ? 1 : 0])[0] > 0
  }

  /// Runs `body`, which makes no collective call, on every rank, then lets every rank know
  /// whether any failed: then each rank throws a ``SharedFailure``, which only the lowest failing
  /// rank prints, and the job ends normally.
  func together<T>(_ body: () throws -> T) throws -> T {
    let result = Result { try body() }
    guard isDistributed else { return try result.get() }
    var failed = [Double](repeating: 0, count: group.size)
    if case .failure = result { failed[rank] = 1 }
    failed = group.allReduceSum(failed)
    guard let first = failed.firstIndex(where: { $0 > 0 }) else { return try result.get() }
    if case .failure(let error) = result { throw SharedFailure(error: error, reportHere: rank == first) }
    throw SharedFailure(error: nil, reportHere: false)
  }

  /// Rank 0's file (or `nil`) on every rank: rank 0 calls `read`, the others receive its bytes.
  func fileOfFirstRank(_ read: () throws -> URL?) throws -> SafeTensorsFile? {
    var (bytes, name) = try together { () -> (Data, String) in
      guard isFirstRank, let url = try read() else { return (Data(), "") }
      do {
        return (try Data(contentsOf: url), url.path)
      } catch {
        throw SafeTensorsError.unreadable(file: url.path, reason: error.localizedDescription)
      }
    }
    if isDistributed {
      var length = [UInt64(bytes.count)]
      length.withUnsafeMutableBytes { group.broadcast($0, root: 0) }
      if !isFirstRank { bytes = Data(count: Int(length[0])) }
      bytes.withUnsafeMutableBytes { group.broadcast($0, root: 0) }
      if name.isEmpty { name = "rank 0's checkpoint" }
    }
    return bytes.isEmpty ? nil : try SafeTensorsFile.parse(bytes, file: name)
  }

  /// Ends the job after `error`: a failure every rank met together (bad options, a stop, a
  /// divergence the ranks agreed on) ends each rank normally; any other ends every rank at once
  /// (`MPI_Abort`), since the other ranks would wait for this one forever.
  func finish(after error: Error?, code: Int32) -> Int32 {
    guard let mpi else { return code }
    if let error, mpi.size > 1, !isShared(error) { mpi.abort(code: code) }
    mpi.finalize()
    return code
  }

  /// Errors that every rank raises at the same point.
  func isShared(_ error: Error) -> Bool {
    switch error {
    case is CommandLineError, is SharedFailure: return true
    case let failure as CommandFailure: return failure.shared
    case SearchError.interrupted, SearchError.nonFiniteLoss, SearchError.ranksDiverged, SearchError.checkpointMismatch:
      return true
    default: return false
    }
  }
}

/// A failure of one or more ranks that every rank learnt of (``Launch/together(_:)``).
struct SharedFailure: Error {
  /// This rank's error, `nil` when only other ranks failed.
  var error: Error?
  /// Whether this rank prints it: the lowest rank that failed.
  var reportHere: Bool
}
