// The safetensors format (https://github.com/huggingface/safetensors), so checkpoints and
// searched weights open in PyTorch with `safetensors.torch.load_file`.
//
// Layout: an 8-byte little-endian UInt64 N, N bytes of JSON header, then the raw little-endian
// tensor data. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
// end]} (offsets relative to the first data byte) and may hold "__metadata__", a map of strings.
import Foundation

/// One tensor of a safetensors file: a shape and its elements in row-major order.
///
/// Floating-point tensors are held as `Float` (F64 is converted on reading) and integer tensors as
/// `Int64` (I32 is widened on reading); writing stores them as F32 and I64.
public struct SafeTensor: Equatable, Sendable {
  /// The element storage.
  public enum Storage: Equatable, Sendable {
    /// Floating-point elements (written as F32).
    case float([Float])
    /// Integer elements (written as I64).
    case int64([Int64])
  }

  /// Dimensions, outermost first; `[]` is a scalar with one element.
  public var shape: [Int]
  /// The elements, `shape.reduce(1, *)` of them.
  public var storage: Storage

  /// A floating-point tensor.
  ///
  /// - Parameters:
  ///   - shape: Dimensions, outermost first.
  ///   - floats: Elements in row-major order.
  /// - Precondition: `floats.count == shape.reduce(1, *)` and no dimension is negative.
  public init(shape: [Int], floats: [Float]) {
    SafeTensor.checkShape(shape, count: floats.count)
    self.shape = shape
    self.storage = .float(floats)
  }

  /// An integer tensor, for step counters, seeds and generator states.
  ///
  /// - Parameters:
  ///   - shape: Dimensions, outermost first.
  ///   - int64s: Elements in row-major order.
  /// - Precondition: `int64s.count == shape.reduce(1, *)` and no dimension is negative.
  public init(shape: [Int], int64s: [Int64]) {
    SafeTensor.checkShape(shape, count: int64s.count)
    self.shape = shape
    self.storage = .int64(int64s)
  }

  /// The elements if this is a floating-point tensor, else `nil`.
  public var floats: [Float]? {
    if case .float(let values) = storage { return values }
    return nil
  }

  /// The elements if this is an integer tensor, else `nil`.
  public var int64s: [Int64]? {
    if case .int64(let values) = storage { return values }
    return nil
  }

  /// Number of elements.
  public var count: Int {
    switch storage {
    case .float(let values): return values.count
    case .int64(let values): return values.count
    }
  }

  private static func checkShape(_ shape: [Int], count: Int) {
    precondition(shape.allSatisfy { $0 >= 0 }, "SafeTensor: negative dimension in shape \(shape)")
    precondition(
      shape.reduce(1, *) == count,
      "SafeTensor: shape \(shape) holds \(shape.reduce(1, *)) elements but \(count) were given")
  }
}

/// A problem reading or writing a safetensors file; the description names the file and the problem.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
  /// The file could not be opened or read.
  case unreadable(file: String, reason: String)
  /// The file is shorter than its 8-byte length prefix or the header that prefix announces.
  case truncatedHeader(file: String, fileSize: Int, headerLength: UInt64)
  /// The header is not a JSON object of the expected form.
  case badHeader(file: String, problem: String)
  /// A tensor's data offsets fall outside the data section or run backwards.
  case offsetsOutOfRange(file: String, tensor: String, begin: Int, end: Int, dataSize: Int)
  /// A dtype this reader does not handle.
  case unsupportedDType(file: String, tensor: String, dtype: String)
  /// A tensor's byte range does not match its shape and dtype.
  case sizeMismatch(file: String, tensor: String, shape: [Int], dtype: String, bytes: Int)
  /// Writing failed; the target file, if it existed, is unchanged.
  case writeFailed(file: String, reason: String)

  /// A message naming the file, the problem and what to do.
  /// The bytes of a tensor of `shape` and `dtype`, or nil when that overflows `Int`.
  private static func byteCount(_ shape: [Int], _ dtype: String) -> Int? {
    var total = SafeTensorsFile.elementSize(dtype) ?? 0
    for d in shape {
      let (product, overflow) = total.multipliedReportingOverflow(by: d)
      if overflow { return nil }
      total = product
    }
    return total
  }

  public var description: String {
    switch self {
    case .unreadable(let file, let reason):
      return "Cannot read safetensors file '\(file)': \(reason)."
    case .truncatedHeader(let file, let size, let length):
      return """
        '\(file)' is truncated or not a safetensors file: it has \(size) bytes but needs 8 + \
        \(length) for its header length prefix and header. Re-save or copy the file again.
        """
    case .badHeader(let file, let problem):
      return "'\(file)' has a malformed safetensors header: \(problem)."
    case .offsetsOutOfRange(let file, let tensor, let begin, let end, let dataSize):
      return """
        '\(file)': tensor '\(tensor)' has data_offsets [\(begin), \(end)] outside the \
        \(dataSize)-byte data section; the file is truncated or corrupt.
        """
    case .unsupportedDType(let file, let tensor, let dtype):
      return """
        '\(file)': tensor '\(tensor)' has dtype \(dtype); only F32, F64, I64 and I32 are \
        supported. Convert it in PyTorch (for example `t.float()`) before saving.
        """
    case .sizeMismatch(let file, let tensor, let shape, let dtype, let bytes):
      return """
        '\(file)': tensor '\(tensor)' of shape \(shape) and dtype \(dtype) needs \
        \(Self.byteCount(shape, dtype).map(String.init) ?? "more than \(Int.max)") bytes but its \
        data_offsets span \(bytes); the file is corrupt.
        """
    case .writeFailed(let file, let reason):
      return """
        Cannot write '\(file)': \(reason). Any previous file there is unchanged; check that the \
        directory exists, is writable and has free space.
        """
    }
  }
}

/// The contents of a safetensors file: named tensors and string metadata.
public struct SafeTensorsFile: Equatable, Sendable {
  /// Tensors by name.
  public var tensors: [String: SafeTensor]
  /// Free-form string pairs stored under `__metadata__` (for example the genotype or the step).
  public var metadata: [String: String]

  /// A file's contents.
  ///
  /// - Parameters:
  ///   - tensors: Tensors by name; no name may be `__metadata__`.
  ///   - metadata: String pairs for the header's `__metadata__`.
  public init(tensors: [String: SafeTensor] = [:], metadata: [String: String] = [:]) {
    self.tensors = tensors
    self.metadata = metadata
  }

  /// Bytes per element of the dtypes this reader supports.
  static func elementSize(_ dtype: String) -> Int? {
    switch dtype {
    case "F32", "I32": return 4
    case "F64", "I64": return 8
    default: return nil
    }
  }

  // MARK: - Reading

  /// Reads a safetensors file.
  ///
  /// - Parameter url: The file.
  /// - Returns: Its tensors (F32 and F64 as `Float`, I64 and I32 as `Int64`) and metadata.
  /// - Throws: ``SafeTensorsError`` naming the file: truncated header, bad JSON, offsets out of
  ///   range, unsupported dtype, or a byte range that does not match the shape.
  public static func read(from url: URL) throws -> SafeTensorsFile {
    let file = url.path
    let data: Data
    do {
      data = try Data(contentsOf: url, options: .mappedIfSafe)
    } catch {
      throw SafeTensorsError.unreadable(file: file, reason: error.localizedDescription)
    }
    return try data.withUnsafeBytes { try parse($0, file: file) }
  }

  /// Parses the bytes of a safetensors file read elsewhere (for example received from another
  /// process); `file` names it in error messages.
  /// - Throws: ``SafeTensorsError``, as ``read(from:)``.
  public static func parse(_ data: Data, file: String) throws -> SafeTensorsFile {
    try data.withUnsafeBytes { try parse($0, file: file) }
  }

  /// Parses the bytes of a safetensors file; `file` is used in error messages.
  static func parse(_ bytes: UnsafeRawBufferPointer, file: String) throws -> SafeTensorsFile {
    guard bytes.count >= 8 else {
      throw SafeTensorsError.truncatedHeader(file: file, fileSize: bytes.count, headerLength: 0)
    }
    let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
    guard headerLength <= UInt64(bytes.count - 8) else {
      throw SafeTensorsError.truncatedHeader(
        file: file, fileSize: bytes.count, headerLength: headerLength)
    }
    let headerEnd = 8 + Int(headerLength)
    let json = Data(bytes[8..<headerEnd])
    let object: Any
    do {
      object = try JSONSerialization.jsonObject(with: json)
    } catch {
      throw SafeTensorsError.badHeader(file: file, problem: "the header is not valid JSON")
    }
    guard let header = object as? [String: Any] else {
      throw SafeTensorsError.badHeader(file: file, problem: "the header is not a JSON object")
    }
    let dataSize = bytes.count - headerEnd
    let body = UnsafeRawBufferPointer(rebasing: bytes[headerEnd...])
    var result = SafeTensorsFile()
    for (name, entry) in header {
      if name == "__metadata__" {
        guard let metadata = entry as? [String: String] else {
          throw SafeTensorsError.badHeader(
            file: file, problem: "__metadata__ must map strings to strings")
        }
        result.metadata = metadata
        continue
      }
      result.tensors[name] = try parseTensor(
        name: name, entry: entry, body: body, dataSize: dataSize, file: file)
    }
    return result
  }

  private static func parseTensor(
    name: String, entry: Any, body: UnsafeRawBufferPointer, dataSize: Int, file: String
  ) throws -> SafeTensor {
    guard let fields = entry as? [String: Any], let dtype = fields["dtype"] as? String,
      let shapeValues = fields["shape"] as? [Any],
      let offsetValues = fields["data_offsets"] as? [Any]
    else {
      throw SafeTensorsError.badHeader(
        file: file, problem: "tensor '\(name)' needs \"dtype\", \"shape\" and \"data_offsets\"")
    }
    let shape = try shapeValues.map {
      try nonNegativeInt($0, what: "shape of '\(name)'", file: file)
    }
    let offsets = try offsetValues.map {
      try nonNegativeInt($0, what: "data_offsets of '\(name)'", file: file)
    }
    guard offsets.count == 2 else {
      throw SafeTensorsError.badHeader(
        file: file, problem: "data_offsets of '\(name)' must be [begin, end]")
    }
    let (begin, end) = (offsets[0], offsets[1])
    guard begin <= end && end <= dataSize else {
      throw SafeTensorsError.offsetsOutOfRange(
        file: file, tensor: name, begin: begin, end: end, dataSize: dataSize)
    }
    guard let size = elementSize(dtype) else {
      throw SafeTensorsError.unsupportedDType(file: file, tensor: name, dtype: dtype)
    }
    // Multiplying untrusted dimensions may overflow; an overflow cannot match the byte span.
    var count = 1
    var overflow = false
    for d in shape where !overflow { (count, overflow) = count.multipliedReportingOverflow(by: d) }
    guard !overflow, count.multipliedReportingOverflow(by: size) == (end - begin, false) else {
      throw SafeTensorsError.sizeMismatch(
        file: file, tensor: name, shape: shape, dtype: dtype, bytes: end - begin)
    }
    let raw = UnsafeRawBufferPointer(rebasing: body[begin..<end])
    switch dtype {
    case "F32":
      return SafeTensor(
        shape: shape,
        floats: (0..<count).map {
          Float(
            bitPattern: UInt32(
              littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
        })
    case "F64":
      return SafeTensor(
        shape: shape,
        floats: (0..<count).map {
          Float(
            Double(
              bitPattern: UInt64(
                littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))))
        })
    case "I64":
      return SafeTensor(
        shape: shape,
        int64s: (0..<count).map {
          Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))
        })
    default:  // "I32"
      return SafeTensor(
        shape: shape,
        int64s: (0..<count).map {
          Int64(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)))
        })
    }
  }

  private static func nonNegativeInt(_ value: Any, what: String, file: String) throws -> Int {
    // JSONSerialization yields NSNumber; reject fractions and negatives rather than truncate.
    if let number = value as? NSNumber, let int = Int(exactly: number.doubleValue), int >= 0,
      number.stringValue == String(int)
    {
      return int
    }
    throw SafeTensorsError.badHeader(
      file: file, problem: "\(what) must hold non-negative integers, found \(value)")
  }

  // MARK: - Writing

  /// The file's bytes: tensors in sorted-name order, F32 and I64 data, header padded with spaces
  /// to a multiple of 8 so the data section starts aligned. The same contents always give the
  /// same bytes.
  public func serialized() -> Data {
    precondition(
      tensors["__metadata__"] == nil, "SafeTensorsFile: '__metadata__' is reserved for the metadata"
    )
    var header = "{"
    var entries: [String] = []
    if !metadata.isEmpty {
      let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
      entries.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
    }
    var offset = 0
    let names = tensors.keys.sorted()
    for name in names {
      let tensor = tensors[name]!
      let (dtype, size) = tensor.floats != nil ? ("F32", 4) : ("I64", 8)
      let end = offset + tensor.count * size
      entries.append(
        "\(jsonString(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],"
          + "\"data_offsets\":[\(offset),\(end)]}")
      offset = end
    }
    header += entries.joined(separator: ",") + "}"
    var headerBytes = Array(header.utf8)
    while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

    var out = Data(capacity: 8 + headerBytes.count + offset)
    withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: headerBytes)
    for name in names {
      switch tensors[name]!.storage {
      case .float(let values):
        for v in values {
          withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) }
        }
      case .int64(let values):
        for v in values { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
      }
    }
    return out
  }

  /// Writes the file atomically: the bytes go to a temporary file in the same directory, which is
  /// flushed to disk and then renamed over `url`, so a crash leaves either the old file or the
  /// complete new one, never a partial file.
  ///
  /// - Parameter url: The target file; replaced if it exists.
  /// - Throws: ``SafeTensorsError/writeFailed(file:reason:)``; the target is then unchanged and
  ///   the temporary file removed.
  public func write(to url: URL) throws {
    try writeAtomically(serialized(), to: url)
  }
}

/// A JSON string literal for `text`, escaping quotes, backslashes and control characters.
private func jsonString(_ text: String) -> String {
  var out = "\""
  for scalar in text.unicodeScalars {
    switch scalar {
    case "\"": out += "\\\""
    case "\\": out += "\\\\"
    case "\n": out += "\\n"
    case "\r": out += "\\r"
    case "\t": out += "\\t"
    case _ where scalar.value < 0x20:
      out +=
        "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
        + String(scalar.value, radix: 16)
    default: out.unicodeScalars.append(scalar)
    }
  }
  return out + "\""
}
