// Atomic file replacement, shared by the safetensors writer and every output of a run.

import Foundation

/// Writes `bytes` to `url` through a temporary file in the same folder, fsync and rename, so that
/// a crash or a full disk leaves either the old file or the complete new one, never a part.
///
/// - Parameters:
///   - bytes: the whole new content.
///   - url: the target file; replaced if it exists.
///   - beforeRename: runs after the temporary file is complete and synced; tests use it to
///     fail at the last moment and check that the target is untouched.
/// - Throws: ``SafeTensorsError/writeFailed(file:reason:)`` naming the file and the system's
///   reason; the target is then unchanged and the temporary file removed.
public func writeAtomically(_ bytes: Data, to url: URL, beforeRename: (() throws -> Void)? = nil) throws {
  let target = url.path
  let directory = url.deletingLastPathComponent().path
  func failure(_ what: String) -> SafeTensorsError {
    .writeFailed(file: target, reason: "\(what): \(String(cString: strerror(errno)))")
  }
  // Same directory as the target: rename(2) is only atomic within one file system.
  let temporary =
    "\(directory)/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
  let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
  guard fd >= 0 else { throw failure("cannot create a temporary file in '\(directory)'") }
  var renamed = false
  defer { if !renamed { unlink(temporary) } }
  do {
    defer { close(fd) }
    try bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
      var written = 0
      while written < raw.count {
        let n = Foundation.write(fd, raw.baseAddress! + written, raw.count - written)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw failure("writing the temporary file failed") }
        written += n
      }
    }
    // Without fsync the rename could reach the disk before the data does.
    guard fsync(fd) == 0 else { throw failure("fsync of the temporary file failed") }
  }
  do {
    try beforeRename?()
  } catch let error as SafeTensorsError {
    throw error
  } catch {
    throw SafeTensorsError.writeFailed(file: target, reason: "\(error)")
  }
  guard rename(temporary, target) == 0 else { throw failure("renaming the temporary file failed") }
  renamed = true
  // Make the rename itself durable; a failure here leaves a complete file, so it is not an error.
  let dirFD = open(directory, O_RDONLY)
  if dirFD >= 0 {
    fsync(dirFD)
    close(dirFD)
  }
}
