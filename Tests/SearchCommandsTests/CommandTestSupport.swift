// What the end-to-end tests of the commands share: a tiny CIFAR-10 in the official binary layout,
// a command run in-process with its stderr captured, and readers of a run folder's files.
import Foundation
import TensorEngine
import XCTest

/// Writes `cifar-10-batches-bin` under `folder`: 10 records per training file, 4 in the test file
/// (records of 1 label byte and 3072 pixel bytes, from a seeded generator).
func writeCIFAR10(at folder: URL, seed: UInt64 = 11) throws {
  let bin = folder.appendingPathComponent("cifar-10-batches-bin")
  try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
  var rng = SeededGenerator(seed: seed)
  for (name, records) in (1...5).map({ ("data_batch_\($0).bin", 10) }) + [("test_batch.bin", 4)] {
    var bytes: [UInt8] = []
    for _ in 0..<records {
      bytes.append(UInt8(rng.nextInt(below: 10)))
      for _ in 0..<3072 { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }
    }
    try Data(bytes).write(to: bin.appendingPathComponent(name))
  }
}

/// Runs a command's `main` with stderr redirected to a file under `scratch`; returns the exit
/// code and what it wrote to stderr.
func runCapturingStderr(
  _ main: ([String]) -> Int32, _ arguments: [String], scratch: URL
) throws -> (code: Int32, stderr: String) {
  let (code, text) = try capturingOutput(of: STDERR_FILENO, scratch: scratch) { main(arguments) }
  return (code, text)
}

/// Runs `body` with the file descriptor `fd` (stdout or stderr) redirected to a file under
/// `scratch`; returns its result and what it wrote there.
func capturingOutput(
  of fd: Int32, scratch: URL, _ body: () -> Int32
) throws -> (code: Int32, output: String) {
  let capture = scratch.appendingPathComponent("output-\(UUID().uuidString).txt")
  FileManager.default.createFile(atPath: capture.path, contents: nil)
  let handle = try FileHandle(forWritingTo: capture)
  fflush(stdout)
  fflush(stderr)
  let saved = dup(fd)
  dup2(handle.fileDescriptor, fd)
  let code = body()
  fflush(stdout)
  fflush(stderr)
  dup2(saved, fd)
  close(saved)
  try handle.close()
  let text = try String(contentsOf: capture, encoding: .utf8)
  try FileManager.default.removeItem(at: capture)
  return (code, text)
}

/// Every file and folder under `folder` with its bytes (folders map to empty data).
func snapshot(_ folder: String) throws -> [String: Data] {
  var out: [String: Data] = [:]
  let fm = FileManager.default
  for relative in try fm.subpathsOfDirectory(atPath: folder) {
    var isDirectory: ObjCBool = false
    let path = folder + "/" + relative
    _ = fm.fileExists(atPath: path, isDirectory: &isDirectory)
    out[relative + (isDirectory.boolValue ? "/" : "")] =
      isDirectory.boolValue ? Data() : try Data(contentsOf: URL(fileURLWithPath: path))
  }
  return out
}

/// The lines of log.jsonl as JSON objects.
func logLines(_ folder: String) throws -> [[String: Any]] {
  let text = try String(contentsOfFile: folder + "/log.jsonl", encoding: .utf8)
  return try text.split(separator: "\n").map {
    try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any], "log line \($0)")
  }
}

/// A log line without the fields that legitimately differ between runs: the timings. (The peak
/// tensor bytes stay: every chunk's scratch of a parallel loop is allocated before the loop, so
/// the peak does not depend on which chunks ran at the same time.)
func deterministicPart(_ line: [String: Any]) -> NSDictionary {
  var copy = line
  copy["seconds"] = nil
  copy["images_per_second"] = nil
  return copy as NSDictionary
}

/// The text of the file `name` in `folder`.
func readText(_ folder: String, _ name: String) throws -> String {
  try String(contentsOfFile: folder + "/" + name, encoding: .utf8)
}
