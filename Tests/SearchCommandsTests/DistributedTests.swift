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

  /// Runs `program` with `arguments`, under `mpirun -np ranks` unless `ranks` is nil, or with one
  /// rank on each of `hosts` network namespaces (scripts/mpirun-netns.sh); returns the exit code,
  /// stdout and stderr.
  @discardableResult
  private func run(
    _ program: String, _ arguments: [String], ranks: Int?, hosts: Int? = nil
  ) throws -> (code: Int32, stdout: String, stderr: String) {
    let binary = products.appendingPathComponent(program)
    try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "no \(program) at \(binary.path)")
    let process = Process()
    if let hosts {
      let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/mpirun-netns.sh")
      process.executableURL = URL(fileURLWithPath: "/bin/bash")
      process.arguments = [script.path, String(hosts), "1", binary.path] + arguments
    } else if let ranks {
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
    let (out, err) = (
      scratch.appendingPathComponent("stdout-\(UUID())"), scratch.appendingPathComponent("stderr-\(UUID())")
    )
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
    process.waitUntilExit()
    return (
      process.terminationStatus, try String(contentsOf: out, encoding: .utf8),
      try String(contentsOf: err, encoding: .utf8)
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
    let loss = (
      try XCTUnwrap(reference.tensors["loss"]?.floats?[0]), try XCTUnwrap(distributed.tensors["loss"]?.floats?[0])
    )
    XCTAssertEqual(loss.0, loss.1, accuracy: 1e-6 * abs(loss.0))
    // Three search iterations later, every rank holds the same bits (the check also throws otherwise).
    let sums = try XCTUnwrap(distributed.tensors["checksums"]?.floats)
    XCTAssertEqual(sums.count, 2)
    XCTAssertEqual(sums[0], sums[1])
  }

  func testWithSyncBNTwoRanksComputeTheWholeBatchsLossAndGradients() throws {
    let (reference, distributed) = try checkGradients(syncBatchNorm: true)
    XCTAssertLessThan(try relativeDifference(reference, distributed, prefix: "grad."), 1e-6)
    let loss = (
      try XCTUnwrap(reference.tensors["loss"]?.floats?[0]), try XCTUnwrap(distributed.tensors["loss"]?.floats?[0])
    )
    XCTAssertEqual(loss.0, loss.1, accuracy: 1e-6 * abs(loss.0))
    // The second-order α/β gradient goes through three more backward passes, a virtual step and a
    // finite difference ((∇⁺ − ∇⁻)/2r with r = 0.01/‖v‖), which magnifies the sums' rounding, and
    // where a rounding decides a ReLU the other way in one of the perturbed passes, the kink: with
    // the input gradients' products on pcd_matmul_rows, one process with 2 engine threads instead
    // of 1 moves it by 2.2e-3 relative, as two ranks against one process did with banded depthwise
    // tap gradients or OpenBLAS's AVX-512 kernels (1.4e-5 and 1.9e-5 where nothing flipped). Half
    // the batch instead of the whole, which a rank computing its own shard's gradient would give,
    // moves it by 1.13: the bound lies between, a decade from each.
    XCTAssertLessThan(try relativeDifference(reference, distributed, prefix: "unrolled."), 2e-2)
  }

  func testRanksOnTwoHostsOfTheirOwnTalkOverTCPAndSumTheSameGradients() throws {
    // Two network namespaces with their own addresses, joined by veth pairs: the ranks reach
    // each other only over TCP, as on a cluster. Needs root and a kernel that allows namespaces.
    try XCTSkipUnless(
      FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
        || FileManager.default.isExecutableFile(atPath: "/sbin/ip"), "no ip (iproute2)")
    let (reference, distributed) = (scratch.appendingPathComponent("reference"), scratch.appendingPathComponent("tcp"))
    // Per-rank batch norms: a few all-reduce calls per step (synchronised ones make thousands of
    // small calls, each a round trip through the namespaces' TCP stacks: over a minute here).
    let single = try run("data-parallel-check", ["reference", reference.path], ranks: nil)
    XCTAssertEqual(single.code, 0, single.stderr)
    let hosts = try run("data-parallel-check", ["distributed", distributed.path], ranks: nil, hosts: 2)
    if hosts.code != 0 && hosts.stderr.contains("cannot create network namespaces") {
      throw XCTSkip("this machine does not allow network namespaces: \(hosts.stderr)")
    }
    XCTAssertEqual(hosts.code, 0, hosts.stderr)
    let (a, b) = (try SafeTensorsFile.read(from: reference), try SafeTensorsFile.read(from: distributed))
    XCTAssertLessThan(try relativeDifference(a, b, prefix: "grad."), 1e-6)
    let sums = try XCTUnwrap(b.tensors["checksums"]?.floats)
    XCTAssertEqual(sums.count, 2)
    XCTAssertEqual(sums[0], sums[1])
  }

  // MARK: - The commands under mpirun

  private func searchFlags(out: URL, epochs: Int = 2) -> [String] {
    [
      "--data", scratch.appendingPathComponent("data").path, "--subset", "16", "--layers", "3", "--init-channels", "4",
      "--K", "2", "--batch-size", "4", "--epochs", String(epochs), "--warmup-epochs", "1", "--sync-bn",
      "--out", out.path,
    ]
  }

  /// The numbers of two runs' log lines agree to `tolerance` (relative), their genotypes exactly.
  private func assertLogsAgree(_ a: URL, _ b: URL, keys: [String], tolerance: Double, _ what: String) throws {
    let (x, y) = (try logLines(a.path), try logLines(b.path))
    XCTAssertEqual(x.count, y.count, what)
    for (u, v) in zip(x, y) {
      for key in keys {
        let (p, q) = (try XCTUnwrap(u[key] as? Double, key), try XCTUnwrap(v[key] as? Double, key))
        XCTAssertEqual(p, q, accuracy: tolerance * max(abs(p), 1e-3), "\(what): \(key) of epoch \(u["epoch"] ?? "?")")
      }
      XCTAssertEqual(u["genotype"] as? String, v["genotype"] as? String, what)
    }
  }

  func testSearchOnTwoRanksWithSyncBNFollowsTheSingleProcessRun() throws {
    try writeCIFAR10(at: scratch.appendingPathComponent("data"))
    let (single, mpi) = (scratch.appendingPathComponent("single"), scratch.appendingPathComponent("mpi"))
    let one = try run("search-cifar", searchFlags(out: single), ranks: nil)
    XCTAssertEqual(one.code, 0, one.stderr)
    let two = try run("search-cifar", searchFlags(out: mpi), ranks: 2)
    XCTAssertEqual(two.code, 0, two.stderr)
    XCTAssertTrue(two.stdout.contains("MPI: 2 ranks"), two.stdout)
    // Rank 0 alone prints and writes.
    XCTAssertEqual(two.stdout.components(separatedBy: "final genotype").count, 2, two.stdout)
    for file in ["log.jsonl", "architecture.jsonl", "genotype.json", "checkpoint.safetensors", "report.html"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: mpi.appendingPathComponent(file).path), file)
    }
    // The same global batches and, with synchronised batch norms, the same gradients up to rounding.
    try assertLogsAgree(
      single, mpi, keys: ["train_loss", "train_acc", "valid_loss", "valid_acc"], tolerance: 1e-5, "2 ranks vs 1")
  }

  func testARunResumesOnAnotherNumberOfRanks() throws {
    try writeCIFAR10(at: scratch.appendingPathComponent("data"))
    let single = scratch.appendingPathComponent("single")
    XCTAssertEqual(try run("search-cifar", searchFlags(out: single), ranks: nil).code, 0)
    // 2 ranks then 1, and 1 then 2: each ends where the uninterrupted single process ends.
    for (first, second) in [(2, 1), (1, 2)] {
      let folder = scratch.appendingPathComponent("resumed-\(first)-\(second)")
      let start = try run("search-cifar", searchFlags(out: folder, epochs: 1), ranks: first == 1 ? nil : first)
      XCTAssertEqual(start.code, 0, start.stderr)
      let resumed = try run(
        "search-cifar", searchFlags(out: folder) + ["--resume"], ranks: second == 1 ? nil : second)
      XCTAssertEqual(resumed.code, 0, resumed.stderr)
      XCTAssertTrue(resumed.stdout.contains("resumed at epoch 1 of 2"), resumed.stdout)
      try assertLogsAgree(
        single, folder, keys: ["train_loss", "train_acc", "valid_loss", "valid_acc"], tolerance: 1e-5,
        "\(first) ranks, then \(second)")
    }
  }

  func testTrainingOnTwoRanksWithSyncBNFollowsTheSingleProcessRun() throws {
    try writeCIFAR10(at: scratch.appendingPathComponent("data"))
    func flags(_ out: URL) -> [String] {
      [
        "--genotype", "PC_DARTS_cifar", "--data", scratch.appendingPathComponent("data").path, "--subset", "8",
        "--layers", "3", "--init-channels", "4", "--batch-size", "4", "--epochs", "2", "--sync-bn", "--out", out.path,
      ]
    }
    let (single, mpi) = (scratch.appendingPathComponent("single"), scratch.appendingPathComponent("mpi"))
    let one = try run("train-cifar", flags(single), ranks: nil)
    XCTAssertEqual(one.code, 0, one.stderr)
    let two = try run("train-cifar", flags(mpi), ranks: 2)
    XCTAssertEqual(two.code, 0, two.stderr)
    for file in ["log.jsonl", "result.json", "weights.safetensors", "checkpoint.safetensors"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: mpi.appendingPathComponent(file).path), file)
    }
    // Drop-path (epoch 2) draws the masks of the whole batch on every rank. The auxiliary head's
    // last batch norm normalises 2 values per channel here, which magnifies rounding: 1.7e-5 measured.
    let (x, y) = (try logLines(single.path), try logLines(mpi.path))
    XCTAssertEqual(x.count, 2)
    XCTAssertEqual(y.count, 2)
    for (u, v) in zip(x, y) {
      for key in ["train_loss", "test_loss", "test_acc", "drop_path_prob"] {
        let (p, q) = (try XCTUnwrap(u[key] as? Double, key), try XCTUnwrap(v[key] as? Double, key))
        XCTAssertEqual(p, q, accuracy: 1e-4 * max(abs(p), 1e-3), key)
      }
    }
  }

  func testAKilledRankEndsTheJobAndTheLastCheckpointResumes() throws {
    try writeCIFAR10(at: scratch.appendingPathComponent("data"))
    let folder = scratch.appendingPathComponent("killed")
    let binary = products.appendingPathComponent("search-cifar")
    try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "no search-cifar")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: mpirun!)
    process.arguments = ["-np", "2", "--oversubscribe", binary.path] + searchFlags(out: folder, epochs: 3)
    var environment = ProcessInfo.processInfo.environment
    environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    process.environment = environment
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    // Once epoch 2 runs (epoch 1's checkpoint is written), kill one rank.
    var seen = Data()
    while !String(decoding: seen, as: UTF8.self).contains("epoch 2/3 [") {
      let chunk = errors.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      seen += chunk
    }
    let ranks = try childProcesses(of: process.processIdentifier)
    XCTAssertEqual(ranks.count, 2, "the ranks of mpirun \(process.processIdentifier)")
    kill(try XCTUnwrap(ranks.last), SIGKILL)
    seen += errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    XCTAssertNotEqual(process.terminationStatus, 0, String(decoding: seen, as: UTF8.self))
    // The last checkpoint is whole, and the run continues from it.
    XCTAssertEqual(try logLines(folder.path).count, 1)
    _ = try SafeTensorsFile.read(from: folder.appendingPathComponent("checkpoint.safetensors"))
    let resumed = try run("search-cifar", searchFlags(out: folder, epochs: 3) + ["--resume"], ranks: 2)
    XCTAssertEqual(resumed.code, 0, resumed.stderr)
    XCTAssertEqual(try logLines(folder.path).count, 3)
  }

  func testBadInputOnEveryRankIsReportedOnceAndEndsTheJobWithItsCode() throws {
    try writeCIFAR10(at: scratch.appendingPathComponent("data"))
    let folder = scratch.appendingPathComponent("bad")
    let result = try run("search-cifar", searchFlags(out: folder) + ["--layers", "2"], ranks: 2)
    XCTAssertEqual(result.code, 2, result.stderr)
    XCTAssertEqual(result.stderr.components(separatedBy: "error: invalid --layers").count, 2, result.stderr)
    XCTAssertFalse(result.stderr.contains("MPI_ABORT"), result.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("log.jsonl").path))
  }

  /// The pids whose parent is `pid` (from /proc).
  private func childProcesses(of pid: Int32) throws -> [Int32] {
    try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap(Int32.init).filter { child in
      guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
      else { return false }
      let fields = stat[stat.index(after: close)...].split(separator: " ")
      return fields.count > 1 && Int32(fields[1]) == pid
    }.sorted()
  }
}
