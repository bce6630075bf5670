// What the settings of a run (a search, a training) share: one JSON form, stored in checkpoints,
// and the comparison by dotted path that a resume makes against it.

import Foundation

/// The settings of a run: encoded as a JSON object in its checkpoint, compared setting by
/// setting on resume, where only ``changeableOnResume`` may differ.
public protocol RunSettings: Codable, Equatable, Sendable {
  /// The settings (dotted paths) a resumed run may change; every other one defines the run.
  static var changeableOnResume: Set<String> { get }
  /// Checks every range.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` naming the setting by its path.
  func validate() throws
}

extension RunSettings {
  /// The settings as a JSON object with sorted keys (stored in checkpoints and compared on resume).
  public var json: String { sortedJSON(self) }

  /// The value of the setting at `path` (`learningRate`, `network.layers`) as JSON writes it, or
  /// `nil` for an unknown or unset path.
  public func value(of path: String) -> String? { flattened[path] }

  /// The fields in which `self` and `other` differ, as "name: a vs b".
  public func differences(from other: Self) -> [String] {
    differingSettings(from: other).map { "\($0.path): \($0.mine) vs \($0.theirs)" }
  }

  /// The fields in which `self` and `other` differ: each path with both values as JSON writes
  /// them ("unset" for a missing optional), sorted by path.
  public func differingSettings(from other: Self) -> [(path: String, mine: String, theirs: String)] {
    let (a, b) = (flattened, other.flattened)
    return Set(a.keys).union(b.keys).sorted().compactMap { key in
      a[key] == b[key] ? nil : (key, a[key] ?? "unset", b[key] ?? "unset")
    }
  }

  /// The settings of a checkpoint's metadata, checked against these: only
  /// ``changeableOnResume`` may differ.
  /// - Returns: the changes, as "path: old → new", for the next log record.
  /// - Throws: ``SearchError/checkpointMismatch(_:)`` for missing or unreadable settings, or
  ///   for a setting that defines the run.
  public func changesOnResume(fromCheckpointSettings text: String?) throws -> [String] {
    guard let text, let saved = try? JSONDecoder().decode(Self.self, from: Data(text.utf8)) else {
      throw SearchError.checkpointMismatch("its settings are missing or unreadable")
    }
    let differing = saved.differingSettings(from: self)
    let defining = differing.filter { !Self.changeableOnResume.contains($0.path) }
    guard defining.isEmpty else {
      throw SearchError.checkpointMismatch(
        "it was written with other settings (checkpoint vs now: "
          + defining.map { "\($0.path): \($0.mine) vs \($0.theirs)" }.joined(separator: "; ") + "); "
          + "these define the run and cannot change on resume: rerun with the checkpoint's settings or write to another folder"
      )
    }
    return differing.map { "\($0.path): \($0.mine) → \($0.theirs)" }
  }

  /// Every setting as (path, value as JSON writes it), sorted by path.
  public var flatList: [(String, String)] { flattened.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }

  /// Every setting by its dotted path, its value as JSON writes it.
  private var flattened: [String: String] {
    let object = try! JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
    var out: [String: String] = [:]
    func walk(_ prefix: String, _ value: Any) {
      if let dict = value as? [String: Any] {
        for (k, v) in dict { walk(prefix.isEmpty ? k : prefix + "." + k, v) }
      } else {
        out[prefix] = "\(value)"
      }
    }
    walk("", object)
    return out
  }
}

/// `value` as JSON with sorted keys.
func sortedJSON<T: Encodable>(_ value: T) -> String {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.sortedKeys]
  return String(decoding: try! encoder.encode(value), as: UTF8.self)
}
