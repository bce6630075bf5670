// Data parallelism under MPI, run as the commands are run: `mpirun -np 2` on this machine (as
// root Open MPI needs OMPI_ALLOW_RUN_AS_ROOT and its confirmation, which these tests set for the
// processes they start). The gradients come from data-parallel-check (Tests/DataParallelCheck),
// the runs from the built search-cifar and train-cifar.
import Foundation
import TensorEngine
import XCTest

final class DistributedTests: XCTestCase {
  /// The folder of the built executables, beside this test bundle.
  private let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
  private var scratch: URL!

  override func setUpWithError() throws {
    try XCTSkipUnless(mpirun != nil, "no mpirun (Debian's openmpi-bin)")
    scratch = FileManager.default.temporaryDirectory.appendingPathComponent("distributed-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    if let scratch { try? FileManager.default.removeItem(at: scratch) }
  }

  private var mpirun: String? {
    ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
  }

  /// Runs `program` with `arguments`, under `mpirun -np ranks` unless `ranks` is nil; returns the
  /// exit code, stdout and stderr.
  @discardableResult
  private func run(
    _ program: String, _ arguments: [String], ranks: Int?
  ) throws -> (code: Int32, stdout: String, stderr: String) {
    let binary = products.appendingPathComponent(program)
    try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "no \(program) at \(binary.path)")
    let process = Process()
    if let ranks {
      process.executableURL = URL(fileURLWithPath: mpirun!)
      process.arguments = ["-np", String(ranks), "--oversubscribe", binary.path] + arguments
    } else {
      process.executableURL = binary
      process.arguments = arguments
    }
    var environment = ProcessInfo.processInfo.environment
    environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    process.environment = environment
    let (out, err) = (scratch.appendingPathComponent("stdout-\(UUID())"), scratch.appendingPathComponent("stderr-\(UUID())"))
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
    process.waitUntilExit()
    return (
      process.terminationStatus, try String(contentsOf: out, encoding: .utf8), try String(contentsOf: err, encoding: .utf8)
    )
  }

  /// The largest difference between two files' tensors named with `prefix`, relative to the
  /// largest value of the first file's.
  private func relativeDifference(_ a: SafeTensorsFile, _ b: SafeTensorsFile, prefix: String) throws -> Double {
    let names = a.tensors.keys.filter { $0.hasPrefix(prefix) }.sorted()
    XCTAssertFalse(names.isEmpty, "no tensors named \(prefix)…")
    var (difference, largest) = (0.0, 0.0)
    for name in names {
      let x = try XCTUnwrap(a.tensors[name]?.floats, name)
      let y = try XCTUnwrap(b.tensors[name]?.floats, "\(name) is missing from the distributed run")
      XCTAssertEqual(x.count, y.count, name)
      for (u, v) in zip(x, y) {
        difference = max(difference, Double(abs(u - v)))
        largest = max(largest, Double(abs(u)))
      }
    }
    XCTAssertGreaterThan(largest, 0, "the gradients named \(prefix)… are all zero")
    return difference / largest
  }

  private func checkGradients(syncBatchNorm: Bool) throws -> (SafeTensorsFile, SafeTensorsFile) {
    let flags = syncBatchNorm ? ["--sync-bn"] : []
    let (reference, distributed) = (scratch.appendingPathComponent("reference"), scratch.appendingPathComponent("mpi"))
    let single = try run("data-parallel-check", ["reference", reference.path] + flags, ranks: nil)
    XCTAssertEqual(single.code, 0, single.stderr)
    let mpi = try run("data-parallel-check", ["distributed", distributed.path] + flags, ranks: 2)
    XCTAssertEqual(mpi.code, 0, mpi.stderr)
    return (try SafeTensorsFile.read(from: reference), try SafeTensorsFile.read(from: distributed))
  }

  func testTwoRanksSumTheShareWeightedGradientsOfTheirShards() throws {
    let (reference, distributed) = try checkGradients(syncBatchNorm: false)
    // The weights' and α/β's gradients, each rank's batch norms on its own rows.
    XCTAssertLessThan(try relativeDifference(reference, distributed, prefix: "grad."), 1e-6)
    let loss = (try XCTUnwrap(reference.tensors["loss"]?.floats?[0]), try XCTUnwrap(distributed.tensors["loss"]?.floats?[0]))
    XCTAssertEqual(loss.0, loss.1, accuracy: 1e-6 * abs(loss.0))
    // Three search iterations later, every rank holds the same bits (the check also throws otherwise).
    let sums = try XCTUnwrap(distributed.tensors["checksums"]?.floats)
    XCTAssertEqual(sums.count, 2)
    XCTAssertEqual(sums[0], sums[1])
  }

  func testWithSyncBNTwoRanksComputeTheWholeBatchsLossAndGradients() throws {
    let (reference, distributed) = try checkGradients(syncBatchNorm: true)
    XCTAssertLessThan(try relativeDifference(reference, distributed, prefix: "grad."), 1e-6)
    let loss = (try XCTUnwrap(reference.tensors["loss"]?.floats?[0]), try XCTUnwrap(distributed.tensors["loss"]?.floats?[0]))
    XCTAssertEqual(loss.0, loss.1, accuracy: 1e-6 * abs(loss.0))
    // The second-order α/β gradient goes through three more backward passes, a virtual step and a
    // finite difference ((∇⁺ − ∇⁻)/2r with r = 0.01/‖v‖), which magnifies the sums' rounding: one
    // process with 2 engine threads instead of 1 moves it by 1.4e-5 relative (2 ranks: 1.9e-5).
    XCTAssertLessThan(try relativeDifference(reference, distributed, prefix: "unrolled."), 5e-5)
  }
}
