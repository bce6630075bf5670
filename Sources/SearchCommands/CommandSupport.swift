// What both commands share: the progress bar, the mapping of errors to messages and exit codes,
// --threads, and byte formatting.

import Foundation
import PCDARTS
import TensorEngine

/// A one-line progress bar on stderr (redrawn in place on a terminal, a line per tenth of the
/// epoch otherwise, so logs stay short).
final class ProgressBar {
  let interactive: Bool
  private var lastTenth = -1

  init(interactive: Bool) { self.interactive = interactive }

  func update(_ p: StepProgress, epochs: Int) {
    let width = 24
    let filled = width * p.step / max(p.steps, 1)
    let eta = Int(p.epochSecondsLeft.rounded())
    let line = String(
      format: "epoch %d/%d [%@%@] %d/%d loss %.4f acc %.4f %.1f img/s ETA %d:%02d",
      p.epoch + 1, epochs, String(repeating: "#", count: filled),
      String(repeating: ".", count: width - filled), p.step, p.steps, p.trainLoss,
      p.trainAccuracy, p.imagesPerSecond, eta / 60, eta % 60)
    if interactive {
      FileHandle.standardError.write(Data(("\r" + line).utf8))
    } else {
      let tenth = 10 * p.step / max(p.steps, 1)
      if tenth != lastTenth {
        lastTenth = tenth
        FileHandle.standardError.write(Data((line + "\n").utf8))
      }
    }
  }

  func finish() {
    if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    lastTenth = -1
  }
}

/// Parses `arguments` with `parser` and runs `body`, turning the outcome into an exit code: 0 when
/// done (or after `--help`), 2 for usage and configuration errors, 1 for anything else. Every
/// error is one `error:` line on stderr.
///
/// - Parameter flags: the flag of each setting path, to name the flag in a setting's range error.
func runCommand(
  _ parser: CommandLineParser, _ arguments: [String], flags: [String: String] = [:],
  _ body: (ParsedOptions) throws -> Void
) -> Int32 {
  do {
    try body(try parser.parse(arguments))
    return 0
  } catch let error as CommandLineError {
    if case .helpRequested(let help) = error { print(help) } else { printError("\(error)") }
    return error.exitCode
  } catch let failure as CommandFailure {
    printError(failure.message)
    return failure.exitCode
  } catch SearchError.invalidSetting(let setting, let problem) {
    printError(flags[setting].map { "invalid \($0): \(problem)" } ?? "invalid setting \(setting): \(problem)")
    return 2
  } catch let error as SearchError {
    printError("\(error)")
    if case .invalidConfiguration = error { return 2 }
    return 1
  } catch {
    printError("\(error)")
    return 1
  }
}

/// SIGINT and SIGTERM turned into a request to stop at the next step boundary, while the
/// instance lives; a second signal ends the process at once. The default handlers come back
/// when it is released.
final class StopSignals: @unchecked Sendable {
  private let lock = NSLock()
  private var first: Int32?
  private var sources: [DispatchSourceSignal] = []

  init() {
    for number in [SIGINT, SIGTERM] {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler { [weak self] in self?.receive(number) }
      source.resume()
      sources.append(source)
    }
  }

  deinit {
    for source in sources { source.cancel() }
    signal(SIGINT, SIG_DFL)
    signal(SIGTERM, SIG_DFL)
  }

  /// The first signal received, if any.
  var received: Int32? {
    lock.lock()
    defer { lock.unlock() }
    return first
  }

  private func receive(_ number: Int32) {
    lock.lock()
    let again = first != nil
    if first == nil { first = number }
    lock.unlock()
    if again {
      // Every file is written atomically, so stopping now leaves no half-written output.
      FileHandle.standardError.write(Data("\nerror: stopped by a second signal\n".utf8))
      _exit(128 + number)
    }
    FileHandle.standardError.write(Data("\nstopping after this step (a second signal stops at once)\n".utf8))
  }
}

/// Refuses settings whose estimated peak memory exceeds this machine's physical memory, before
/// anything is allocated (``NetworkConfig/estimatedPeakTensorBytes(batchSize:)``).
func checkMemory(_ settings: SearchSettings, batchFlag: String) throws {
  let estimate = settings.network.estimatedPeakTensorBytes(batchSize: settings.batchSize)
  let physical = Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE)))
  guard physical > 0, estimate > physical else { return }
  func gib(_ bytes: Double) -> String { String(format: "%.1f GiB", bytes / 1_073_741_824) }
  throw CommandFailure(
    message: "this search would need about \(gib(estimate)) of memory (an estimate), more than the "
      + "\(gib(physical)) of this machine: lower \(batchFlag) (\(settings.batchSize)) or --init-channels "
      + "(\(settings.network.initChannels)), or raise --K (\(settings.network.partialChannels))",
    exitCode: 2)
}

/// A failure a command has already put into words, with its exit code.
struct CommandFailure: Error {
  /// The one-line message (without `error: `).
  var message: String
  /// 1 for a data, file or numerical failure, 2 for a usage or configuration error.
  var exitCode: Int32
}

/// `--threads`, shared by the commands: the engine's thread count (``Engine/threadCount``).
let threadsOption = OptionSpec.int(
  "threads", default: 0, help: "threads of the engine's loops (0 = one per core, \(Engine.defaultThreadCount) here)"
) { (0...Engine.maximumThreadCount).contains($0) ? nil : "expected 0 to \(Engine.maximumThreadCount)" }

/// Sets ``Engine/threadCount`` from `--threads` (0 keeps the default).
func applyThreads(_ options: ParsedOptions) {
  if options.int("threads") > 0 { Engine.threadCount = options.int("threads") }
}

/// Writes `message` to stderr as `error: message`.
func printError(_ message: String) {
  FileHandle.standardError.write(Data("error: \(message)\n".utf8))
}

/// Bytes in binary units (`12.3 MiB`).
public func formatBytes(_ bytes: Int) -> String {
  let units = ["B", "KiB", "MiB", "GiB", "TiB"]
  var value = Double(bytes)
  var unit = 0
  while value >= 1024 && unit < units.count - 1 {
    value /= 1024
    unit += 1
  }
  return String(format: unit == 0 ? "%.0f %@" : "%.1f %@", value, units[unit])
}
