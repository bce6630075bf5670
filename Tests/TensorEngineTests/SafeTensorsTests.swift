// The safetensors reader and writer: round trip, the exact bytes PyTorch's `load_file` expects,
// hand-written files with other dtypes, error messages, and the atomic write.
import Foundation
import TestSupport
import XCTest

@testable import TensorEngine

final class SafeTensorsTests: XCTestCase {
  private var directory: URL!

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("pcdarts-safetensors-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    chmod(directory.path, 0o755)
    try? FileManager.default.removeItem(at: directory)
  }

  private func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
  }

  /// A file built byte by byte: length prefix, `header` unpadded, then `body`.
  private func handWritten(header: String, body: [UInt8]) -> Data {
    Data(littleEndian(UInt64(header.utf8.count)) + Array(header.utf8) + body)
  }

  func testRoundTrip() throws {
    let original = SafeTensorsFile(
      tensors: [
        "cells.0.ops.3.weight": SafeTensor(shape: [2, 3], floats: [1, -2, 3.5, .pi, -0.0, 1e-30]),
        "alphas_normal": SafeTensor(shape: [14, 8], floats: (0..<112).map { Float($0) * 0.01 }),
        "step": SafeTensor(shape: [], int64s: [123_456_789_012]),
        "rng": SafeTensor(shape: [4], int64s: [-1, .max, .min, 0]),
        "empty": SafeTensor(shape: [0, 5], floats: []),
      ],
      metadata: ["genotype": "Genotype(normal=[(\"sep_conv_3x3\", 0)])", "note": "a\nb\\c\u{1}"])
    let url = directory.appendingPathComponent("weights.safetensors")
    try original.write(to: url)
    let read = try SafeTensorsFile.read(from: url)
    XCTAssertEqual(read, original)
    XCTAssertEqual(read.tensors["rng"]?.int64s, [-1, .max, .min, 0])
    XCTAssertNil(read.tensors["rng"]?.floats)
    XCTAssertEqual(read.tensors["cells.0.ops.3.weight"]?.floats?[3], .pi)
    XCTAssertEqual(read.tensors["cells.0.ops.3.weight"]?.shape, [2, 3])
    // Deterministic: writing the same contents again gives the same bytes.
    XCTAssertEqual(original.serialized(), try Data(contentsOf: url))
    XCTAssertEqual(original.serialized(), read.serialized())
  }

  func testExactByteLayoutOfATinyFile() throws {
    let file = SafeTensorsFile(
      tensors: [
        "b": SafeTensor(shape: [1], int64s: [7]),
        "a": SafeTensor(shape: [2], floats: [1, -2]),
      ],
      metadata: ["step": "12"])
    let bytes = [UInt8](file.serialized())
    let json =
      #"{"__metadata__":{"step":"12"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
      + #""b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}"#
    XCTAssertEqual(json.utf8.count, 137)
    // 137 bytes of JSON padded with 7 spaces to 144, a multiple of 8.
    XCTAssertEqual(Array(bytes[0..<8]), [144, 0, 0, 0, 0, 0, 0, 0])
    XCTAssertEqual(String(decoding: bytes[8..<152], as: UTF8.self), json + "       ")
    XCTAssertEqual(
      Array(bytes[152...]),
      [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0]  // 1.0f, -2.0f little-endian
        + [7, 0, 0, 0, 0, 0, 0, 0])
    XCTAssertEqual(bytes.count, 8 + 144 + 16)
  }

  func testReadsHandWrittenF64I64AndI32() throws {
    let header =
      #"{"x":{"dtype":"F64","shape":[2,1],"data_offsets":[0,16]},"#
      + #""n":{"dtype":"I64","shape":[],"data_offsets":[16,24]},"#
      + #""k":{"dtype":"I32","shape":[2],"data_offsets":[24,32]},"__metadata__":{"format":"pt"}}"#
    let body =
      littleEndian(0.5.bitPattern) + littleEndian((-1.25e10).bitPattern)
      + littleEndian(Int64(1) << 40) + littleEndian(Int32(-1)) + littleEndian(Int32(7))
    let url = directory.appendingPathComponent("hand.safetensors")
    try handWritten(header: header, body: body).write(to: url)
    let file = try SafeTensorsFile.read(from: url)
    XCTAssertEqual(file.metadata, ["format": "pt"])
    XCTAssertEqual(file.tensors["x"], SafeTensor(shape: [2, 1], floats: [0.5, -1.25e10]))
    XCTAssertEqual(file.tensors["n"], SafeTensor(shape: [], int64s: [1 << 40]))
    XCTAssertEqual(file.tensors["k"], SafeTensor(shape: [2], int64s: [-1, 7]))
  }

  func testTruncatedAndMalformedFiles() throws {
    let url = directory.appendingPathComponent("bad.safetensors")
    let good = SafeTensorsFile(tensors: ["w": SafeTensor(shape: [4], floats: [1, 2, 3, 4])])
      .serialized()

    try good.prefix(5).write(to: url)
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: url)) { error in
      XCTAssertEqual(error, .truncatedHeader(file: url.path, fileSize: 5, headerLength: 0))
    }
    try good.prefix(30).write(to: url)
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: url)) { error in
      guard case .truncatedHeader(let file, 30, let length) = error else {
        return XCTFail("\(error)")
      }
      XCTAssertEqual(file, url.path)
      XCTAssertEqual(length, UInt64(good.count - 16 - 8))
      XCTAssertTrue(error.description.contains("bad.safetensors"), error.description)
    }
    // Data cut short: the header is whole but the offsets point past the end.
    try good.dropLast(4).write(to: url)
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: url)) { error in
      XCTAssertEqual(
        error, .offsetsOutOfRange(file: url.path, tensor: "w", begin: 0, end: 16, dataSize: 12))
    }

    try handWritten(header: "{not json", body: []).write(to: url)
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: url)) { error in
      XCTAssertEqual(error, .badHeader(file: url.path, problem: "the header is not valid JSON"))
    }
    try handWritten(
      header: #"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#, body: [0, 0, 0, 0]
    )
    .write(to: url)
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: url)) { error in
      XCTAssertEqual(error, .unsupportedDType(file: url.path, tensor: "h", dtype: "F16"))
      XCTAssertTrue(error.description.contains("F32, F64, I64 and I32"), error.description)
    }
    try handWritten(
      header: #"{"m":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
      body: Array(repeating: 0, count: 8)
    ).write(to: url)
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: url)) { error in
      XCTAssertEqual(
        error, .sizeMismatch(file: url.path, tensor: "m", shape: [3], dtype: "F32", bytes: 8))
      XCTAssertTrue(error.description.contains("needs 12 bytes"), error.description)
    }
    try handWritten(
      header: #"{"m":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
      body: Array(repeating: 0, count: 8)
    ).write(to: url)
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: url)) { error in
      guard case .badHeader(_, let problem) = error else { return XCTFail("\(error)") }
      XCTAssertTrue(problem.contains("shape of 'm'"), problem)
    }
    let missing = directory.appendingPathComponent("missing.safetensors")
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: missing)) { error in
      guard case .unreadable(let file, _) = error else { return XCTFail("\(error)") }
      XCTAssertEqual(file, missing.path)
    }
  }

  /// The files in the test directory, to check that no temporary file is left behind.
  private func listing() throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
  }

  func testAShapeWhoseSizeOverflowsIsAnErrorWithAMessage() throws {
    let url = directory.appendingPathComponent("huge.safetensors")
    let header = #"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#
    try handWritten(header: header, body: Array(repeating: 0, count: 8)).write(to: url)
    assertThrows(SafeTensorsError.self, try SafeTensorsFile.read(from: url)) { error in
      XCTAssertTrue(error.description.contains("more than"), error.description)
    }
  }

  /// Random truncations, byte flips and header edits of a valid file: every one is read or
  /// refused with an error, none crashes the process.
  func testFuzzedFilesGiveAnErrorNeverACrash() throws {
    let valid = SafeTensorsFile(
      tensors: [
        "a": SafeTensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6]), "b": SafeTensor(shape: [], int64s: [7]),
      ], metadata: ["format": "x", "n": "3"]
    ).serialized()
    let headerLength = Int(valid.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    let header = String(decoding: valid[8..<8 + headerLength], as: UTF8.self)
    let url = directory.appendingPathComponent("fuzz.safetensors")
    var rng = SeededGenerator(seed: 99)
    var (read, refused) = (0, 0)
    let edits: [(String, String)] = [
      ("\"F32\"", "\"F16\""), ("[2,3]", "[-2,3]"), ("[2,3]", "[9223372036854775807,2]"), ("[2,3]", "[2.5,3]"),
      ("data_offsets", "data_offset"), ("\"shape\"", "\"shapes\""), ("[0,24]", "[24,0]"), ("[0,24]", "[0,99999999999]"),
      ("{", "["), ("}", ""), ("\"a\"", "\"__metadata__\""),
    ]
    for trial in 0..<400 {
      var bytes = [UInt8](valid)
      switch trial % 4 {
      case 0: bytes.removeLast(rng.nextInt(below: bytes.count))
      case 1:
        for _ in 0..<(1 + rng.nextInt(below: 4)) {
          bytes[rng.nextInt(below: bytes.count)] ^= UInt8(1 << rng.nextInt(below: 8))
        }
      case 2:
        let (from, to) = edits[rng.nextInt(below: edits.count)]
        let edited = Array(header.replacingOccurrences(of: from, with: to).utf8)
        bytes = littleEndian(UInt64(edited.count)) + edited + Array(valid[(8 + headerLength)...])
      default:
        // A length prefix that points anywhere.
        bytes.replaceSubrange(0..<8, with: littleEndian(UInt64(rng.next() >> UInt64(rng.nextInt(below: 64)))))
      }
      try Data(bytes).write(to: url)
      do {
        _ = try SafeTensorsFile.read(from: url)
        read += 1
      } catch is SafeTensorsError {
        refused += 1
      }
    }
    XCTAssertEqual(read + refused, 400)
    XCTAssertGreaterThan(refused, 300, "most mutations must be refused")
  }

  func testFailedWriteLeavesTheOldFileIntact() throws {
    let url = directory.appendingPathComponent("checkpoint.safetensors")
    let old = SafeTensorsFile(tensors: ["w": SafeTensor(shape: [1], floats: [1])])
    try old.write(to: url)
    let oldBytes = try Data(contentsOf: url)
    let new = SafeTensorsFile(tensors: ["w": SafeTensor(shape: [2], floats: [2, 3])])

    // A crash between the complete temporary file and the rename.
    struct Interrupted: Error {}
    XCTAssertThrowsError(
      try writeAtomically(new.serialized(), to: url, beforeRename: { throw Interrupted() }))
    XCTAssertEqual(try Data(contentsOf: url), oldBytes)
    XCTAssertEqual(try listing(), ["checkpoint.safetensors"])

    // The rename cannot replace a non-empty directory: the error names the target.
    let blocked = directory.appendingPathComponent("blocked")
    try FileManager.default.createDirectory(
      at: blocked.appendingPathComponent("inside"), withIntermediateDirectories: true)
    assertThrows(SafeTensorsError.self, try new.write(to: blocked)) { error in
      guard case .writeFailed(let file, let reason) = error else { return XCTFail("\(error)") }
      XCTAssertEqual(file, blocked.path)
      XCTAssertTrue(reason.hasPrefix("renaming the temporary file failed"), reason)
    }
    XCTAssertEqual(try listing(), ["blocked", "checkpoint.safetensors"])

    // Success replaces the file in one step.
    try new.write(to: url)
    XCTAssertEqual(try SafeTensorsFile.read(from: url), new)
  }

  func testWriteIntoReadOnlyDirectoryFailsAndKeepsTheOldFile() throws {
    // Root ignores directory permissions, so this case can only be exercised as another user;
    // testFailedWriteLeavesTheOldFileIntact covers the same guarantee for root.
    guard geteuid() != 0 else {
      throw XCTSkip("running as root: directory permissions do not apply")
    }
    let url = directory.appendingPathComponent("checkpoint.safetensors")
    try SafeTensorsFile(tensors: ["w": SafeTensor(shape: [1], floats: [1])]).write(to: url)
    let oldBytes = try Data(contentsOf: url)
    XCTAssertEqual(chmod(directory.path, 0o555), 0)
    let new = SafeTensorsFile(tensors: ["w": SafeTensor(shape: [1], floats: [5])])
    assertThrows(SafeTensorsError.self, try new.write(to: url)) { error in
      guard case .writeFailed(let file, let reason) = error else { return XCTFail("\(error)") }
      XCTAssertEqual(file, url.path)
      XCTAssertTrue(reason.contains("cannot create a temporary file"), reason)
    }
    XCTAssertEqual(try Data(contentsOf: url), oldBytes)
    XCTAssertEqual(try listing(), ["checkpoint.safetensors"])
  }
}
