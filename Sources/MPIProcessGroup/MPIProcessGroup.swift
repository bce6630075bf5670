// Data parallelism across processes and machines with MPI (Debian's Open MPI): the
// ``ProcessGroup`` of the ranks `mpirun` started. A library client that does not run under MPI
// neither imports nor links this module.

import CMPI
import Foundation
import TensorEngine

/// The ranks of `MPI_COMM_WORLD` as a ``ProcessGroup``.
///
/// Start the program with `mpirun -np N program …`; ``launchedByMPI`` tells whether it was, and
/// ``initialize()`` joins the job (once per process, from the thread that makes every later call).
public final class MPIProcessGroup: ProcessGroup {
  /// This process's rank in `MPI_COMM_WORLD`.
  public let rank: Int
  /// The number of ranks in `MPI_COMM_WORLD`.
  public let size: Int
  /// The name of the machine this rank runs on (`MPI_Get_processor_name`).
  public let processorName: String

  /// Whether `mpirun` (or another launcher of Open MPI or MPICH) started this process, from the
  /// variables it sets; a program started without one runs without MPI.
  public static var launchedByMPI: Bool {
    let environment = ProcessInfo.processInfo.environment
    return ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"].contains { environment[$0] != nil }
  }

  nonisolated(unsafe) private static var joined: MPIProcessGroup?

  /// Joins the MPI job (`MPI_Init_thread`, serialised calls); later calls return the same group.
  /// The worker threads of the engine never call MPI: every collective call comes from the
  /// thread that runs the training loop.
  public static func initialize() -> MPIProcessGroup {
    if let joined { return joined }
    var provided: Int32 = 0
    MPI_Init_thread(nil, nil, Int32(MPI_THREAD_SERIALIZED), &provided)
    var (rank, size): (Int32, Int32) = (0, 0)
    MPI_Comm_rank(pcd_mpi_comm_world(), &rank)
    MPI_Comm_size(pcd_mpi_comm_world(), &size)
    var name = [CChar](repeating: 0, count: Int(MPI_MAX_PROCESSOR_NAME) + 1)
    var length: Int32 = 0
    MPI_Get_processor_name(&name, &length)
    let group = MPIProcessGroup(rank: Int(rank), size: Int(size), processorName: String(cString: name))
    joined = group
    return group
  }

  private init(rank: Int, size: Int, processorName: String) {
    (self.rank, self.size, self.processorName) = (rank, size, processorName)
  }

  /// `MPI_Allreduce` with `MPI_SUM`, in place, in calls of at most 2³¹ − 1 elements.
  public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
    allReduce(values, pcd_mpi_float())
  }

  /// `MPI_Allreduce` with `MPI_SUM`, in place, in calls of at most 2³¹ − 1 elements.
  public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) {
    allReduce(values, pcd_mpi_double())
  }

  /// `MPI_Bcast` of the bytes from `root`.
  public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) {
    guard let base = bytes.baseAddress else { return }
    var offset = 0
    while offset < bytes.count {
      let count = min(bytes.count - offset, Int(Int32.max))
      MPI_Bcast(base + offset, Int32(count), pcd_mpi_byte(), Int32(root), pcd_mpi_comm_world())
      offset += count
    }
  }

  /// Ends every rank of the job (`MPI_Abort`) with `code`: what a rank does when it alone has
  /// met an error, so that the others do not wait for it forever.
  public func abort(code: Int32) -> Never {
    MPI_Abort(pcd_mpi_comm_world(), code)
    exit(code)
  }

  /// Leaves the job (`MPI_Finalize`); call once, after the last collective call.
  public func finalize() {
    MPI_Finalize()
  }

  private func allReduce<T>(_ values: UnsafeMutableBufferPointer<T>, _ type: MPI_Datatype?) {
    guard let base = values.baseAddress else { return }
    var offset = 0
    while offset < values.count {
      let count = min(values.count - offset, Int(Int32.max))
      MPI_Allreduce(pcd_mpi_in_place(), base + offset, Int32(count), type, pcd_mpi_sum(), pcd_mpi_comm_world())
      offset += count
    }
  }
}
