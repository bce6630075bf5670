// A small declarative command-line parser following swift-argument-parser's conventions (which
// cannot be fetched here): kebab-case long options, `--name value` or `--name=value`, boolean
// flags, help text and a default on every option, `--help` starting with `USAGE:`, one-line
// errors naming the flag, exit status 0 for help and 2 for usage errors.
//
// The logic lives in the library so it is unit-tested; the commands run it through `runCommand`
import Foundation
import PCDARTS

/// The type of value an option takes.
public enum OptionKind: Equatable, Sendable {
  /// A whole number, such as `--batch-size 64`.
  case int
  /// A finite number, such as `--lr 0.025` or `--lr 1e-3`.
  case double
  /// Any text, such as `--dataset cifar10`.
  case string
  /// A boolean switch without a value: present means `true`.
  case flag
  /// Comma-separated whole numbers, such as `--threads 1,2,4,8`; the empty string is the empty list.
  case intList
}

/// A parsed option value.
public enum OptionValue: Equatable, Sendable {
  /// The value of an ``OptionKind/int`` option.
  case int(Int)
  /// The value of an ``OptionKind/double`` option.
  case double(Double)
  /// The value of an ``OptionKind/string`` option.
  case string(String)
  /// The value of an ``OptionKind/flag`` option.
  case flag(Bool)
  /// The value of an ``OptionKind/intList`` option.
  case intList([Int])
}

/// The declaration of one option: its name, help, default and kind.
public struct OptionSpec: Sendable {
  /// The long name without dashes, in kebab-case (`batch-size` for `--batch-size`).
  public var name: String
  /// One line saying what the option does.
  public var help: String
  /// The default, written as on the command line (`"0.025"`, `"1,2,4"`; `"false"` for flags).
  public var defaultValue: String
  /// The type of value.
  public var kind: OptionKind
  /// Checks a parsed value: returns `nil` if it is acceptable, else the reason it is out of range
  /// (for example `"must be at least 1"`).
  public var validate: (@Sendable (OptionValue) -> String?)?

  /// Declares an option.
  ///
  /// - Parameters:
  ///   - name: Long name in kebab-case, without dashes; `help` is reserved.
  ///   - help: One line of help text.
  ///   - defaultValue: The default in command-line spelling; must parse as `kind` and pass
  ///     `validate`.
  ///   - kind: The type of value.
  ///   - validate: Optional range check returning the reason a value is rejected.
  public init(
    name: String, help: String, defaultValue: String, kind: OptionKind,
    validate: (@Sendable (OptionValue) -> String?)? = nil
  ) {
    self.name = name
    self.help = help
    self.defaultValue = defaultValue
    self.kind = kind
    self.validate = validate
  }

  /// An integer option.
  ///
  /// - Parameters:
  ///   - name: Long name in kebab-case.
  ///   - default: The default value.
  ///   - help: One line of help text.
  ///   - validate: Returns why a value is out of range, or `nil` to accept it.
  public static func int(
    _ name: String, default: Int, help: String, validate: (@Sendable (Int) -> String?)? = nil
  ) -> OptionSpec {
    OptionSpec(
      name: name, help: help, defaultValue: String(`default`), kind: .int,
      validate: validate.map { check in
        { @Sendable value in if case .int(let v) = value { check(v) } else { nil } }
      })
  }

  /// A floating-point option.
  ///
  /// - Parameters:
  ///   - name: Long name in kebab-case.
  ///   - default: The default value.
  ///   - help: One line of help text.
  ///   - validate: Returns why a value is out of range, or `nil` to accept it.
  public static func double(
    _ name: String, default: Double, help: String, validate: (@Sendable (Double) -> String?)? = nil
  ) -> OptionSpec {
    OptionSpec(
      name: name, help: help, defaultValue: String(`default`), kind: .double,
      validate: validate.map { check in
        { @Sendable value in if case .double(let v) = value { check(v) } else { nil } }
      })
  }

  /// A text option.
  ///
  /// - Parameters:
  ///   - name: Long name in kebab-case.
  ///   - default: The default value.
  ///   - help: One line of help text.
  ///   - validate: Returns why a value is not accepted, or `nil` to accept it.
  public static func string(
    _ name: String, default: String, help: String, validate: (@Sendable (String) -> String?)? = nil
  ) -> OptionSpec {
    OptionSpec(
      name: name, help: help, defaultValue: `default`, kind: .string,
      validate: validate.map { check in
        { @Sendable value in if case .string(let v) = value { check(v) } else { nil } }
      })
  }

  /// A boolean flag, `false` unless given.
  ///
  /// - Parameters:
  ///   - name: Long name in kebab-case.
  ///   - help: One line of help text.
  public static func flag(_ name: String, help: String) -> OptionSpec {
    OptionSpec(name: name, help: help, defaultValue: "false", kind: .flag)
  }

  /// A comma-separated integer list option.
  ///
  /// - Parameters:
  ///   - name: Long name in kebab-case.
  ///   - default: The default list.
  ///   - help: One line of help text.
  ///   - validate: Returns why a list is not accepted, or `nil` to accept it.
  public static func intList(
    _ name: String, default: [Int], help: String, validate: (@Sendable ([Int]) -> String?)? = nil
  ) -> OptionSpec {
    OptionSpec(
      name: name, help: help, defaultValue: `default`.map(String.init).joined(separator: ","),
      kind: .intList,
      validate: validate.map { check in
        { @Sendable value in if case .intList(let v) = value { check(v) } else { nil } }
      })
  }
}

/// A command-line usage problem, or a request for help.
public enum CommandLineError: Error, CustomStringConvertible, Equatable {
  /// `--help` or `-h` was given; the payload is the help text to print on stdout.
  case helpRequested(String)
  /// An option that is not declared.
  case unknownOption(String)
  /// An option that takes a value was last on the line or followed by another option.
  case missingValue(option: String)
  /// A value that does not parse as the option's kind.
  case invalidValue(option: String, value: String, expected: String)
  /// A value that parses but fails the option's validation.
  case outOfRange(option: String, value: String, reason: String)
  /// A flag given a value with `=`.
  case unexpectedValue(option: String, value: String)
  /// A word that is not an option; these programs take no positional arguments.
  case unexpectedArgument(String)

  /// One line naming the flag and the problem (the help text for ``helpRequested(_:)``).
  public var description: String {
    switch self {
    case .helpRequested(let help):
      return help
    case .unknownOption(let option):
      return "unknown option '\(option)'; see --help for the options"
    case .missingValue(let option):
      return "missing value for '\(option)'"
    case .invalidValue(let option, let value, let expected):
      return "bad value '\(value)' for '\(option)' (expected \(expected))"
    case .outOfRange(let option, let value, let reason):
      return "value '\(value)' for '\(option)' is out of range: \(reason)"
    case .unexpectedValue(let option, let value):
      return "flag '\(option)' takes no value, got '\(value)'"
    case .unexpectedArgument(let argument):
      return "unexpected argument '\(argument)'; options start with '--'"
    }
  }

  /// The process exit status for this outcome: 0 for help, 2 for usage errors (the convention of
  /// swift-argument-parser and most Unix tools).
  public var exitCode: Int32 {
    if case .helpRequested = self { return 0 }
    return 2
  }
}

/// The typed values of a parsed command line.
public struct ParsedOptions: Sendable {
  private let values: [String: OptionValue]
  private let explicit: Set<String>

  init(values: [String: OptionValue], explicit: Set<String>) {
    self.values = values
    self.explicit = explicit
  }

  /// Whether the option was given on the command line rather than taken from its default.
  ///
  /// - Parameter name: A declared option name, without dashes.
  public func isSet(_ name: String) -> Bool {
    _ = value(name)
    return explicit.contains(name)
  }

  /// The value of an ``OptionKind/int`` option.
  ///
  /// - Parameter name: The option name without dashes.
  /// - Precondition: the option is declared with kind `.int`.
  public func int(_ name: String) -> Int {
    guard case .int(let v) = value(name) else { kindMismatch(name, "int") }
    return v
  }

  /// The value of an ``OptionKind/double`` option.
  ///
  /// - Parameter name: The option name without dashes.
  /// - Precondition: the option is declared with kind `.double`.
  public func double(_ name: String) -> Double {
    guard case .double(let v) = value(name) else { kindMismatch(name, "double") }
    return v
  }

  /// The value of an ``OptionKind/string`` option.
  ///
  /// - Parameter name: The option name without dashes.
  /// - Precondition: the option is declared with kind `.string`.
  public func string(_ name: String) -> String {
    guard case .string(let v) = value(name) else { kindMismatch(name, "string") }
    return v
  }

  /// Whether an ``OptionKind/flag`` option was given.
  ///
  /// - Parameter name: The option name without dashes.
  /// - Precondition: the option is declared with kind `.flag`.
  public func flag(_ name: String) -> Bool {
    guard case .flag(let v) = value(name) else { kindMismatch(name, "flag") }
    return v
  }

  /// The value of an ``OptionKind/intList`` option.
  ///
  /// - Parameter name: The option name without dashes.
  /// - Precondition: the option is declared with kind `.intList`.
  public func intList(_ name: String) -> [Int] {
    guard case .intList(let v) = value(name) else { kindMismatch(name, "intList") }
    return v
  }

  private func value(_ name: String) -> OptionValue {
    guard let v = values[name] else {
      preconditionFailure(
        "ParsedOptions: no option '--\(name)' was declared; declare it in the parser")
    }
    return v
  }

  private func kindMismatch(_ name: String, _ asked: String) -> Never {
    preconditionFailure(
      "ParsedOptions: '--\(name)' holds \(values[name]!), read it with the getter of its kind, "
        + "not \(asked)(_:)")
  }
}

/// Parses `--name value` options declared up front, and writes the help text.
public final class CommandLineParser {
  /// The program name shown in `USAGE:`.
  public let commandName: String
  /// One or two sentences on what the program does, shown under the usage line.
  public let abstract: String
  /// The declared options, in help order.
  public let options: [OptionSpec]
  private let byName: [String: OptionSpec]

  /// Declares a program's options.
  ///
  /// - Parameters:
  ///   - commandName: The program name for `USAGE:`.
  ///   - abstract: What the program does.
  ///   - options: The options; names unique, kebab-case, not `help`; each default valid.
  /// - Precondition: the declarations are well formed (a programmer error otherwise).
  public init(commandName: String, abstract: String, options: [OptionSpec]) {
    self.commandName = commandName
    self.abstract = abstract
    self.options = options
    var byName: [String: OptionSpec] = [:]
    for option in options {
      // Kebab-case; a capital letter is allowed for names that are symbols in the paper (`--K`).
      let kebab =
        option.name.first.map { $0.isLetter } == true
        && option.name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" }
        && !option.name.hasSuffix("-") && !option.name.contains("--")
      precondition(
        kebab && option.name.allSatisfy(\.isASCII),
        "CommandLineParser: option name '\(option.name)' must be kebab-case like 'batch-size'")
      precondition(
        option.name != "help", "CommandLineParser: '--help' is built in; rename the option")
      precondition(
        byName[option.name] == nil, "CommandLineParser: option '--\(option.name)' is declared twice"
      )
      byName[option.name] = option
    }
    self.byName = byName
    // A default that does not parse is a bug in the program, caught at start-up.
    for option in options {
      do {
        _ = try CommandLineParser.convert(option.defaultValue, for: option)
      } catch {
        preconditionFailure("CommandLineParser: default of '--\(option.name)' is invalid: \(error)")
      }
    }
  }

  /// Parses the arguments after the program name.
  ///
  /// - Parameter args: Such as `["--lr", "0.1", "--unrolled"]` or `["--lr=0.1"]`.
  /// - Returns: Every declared option's value, from the arguments or its default; a repeated
  ///   option takes its last value.
  /// - Throws: ``CommandLineError/helpRequested(_:)`` for `--help` / `-h`, otherwise one of the
  ///   usage errors naming the flag.
  public func parse(_ args: [String]) throws -> ParsedOptions {
    if args.contains(where: { $0 == "--help" || $0 == "-h" }) {
      throw CommandLineError.helpRequested(helpText)
    }
    var values: [String: OptionValue] = [:]
    var explicit = Set<String>()
    var i = 0
    while i < args.count {
      let argument = args[i]
      i += 1
      guard argument.hasPrefix("--"), argument.count > 2 else {
        if argument.hasPrefix("-") && argument.count > 1 {
          throw CommandLineError.unknownOption(argument)
        }
        throw CommandLineError.unexpectedArgument(argument)
      }
      let body = argument.dropFirst(2)
      let name: String
      var inlineValue: String?
      if let equals = body.firstIndex(of: "=") {
        name = String(body[..<equals])
        inlineValue = String(body[body.index(after: equals)...])
      } else {
        name = String(body)
      }
      guard let option = byName[name] else {
        throw CommandLineError.unknownOption("--" + name)
      }
      let text: String
      if option.kind == .flag {
        if let inlineValue {
          throw CommandLineError.unexpectedValue(option: "--" + name, value: inlineValue)
        }
        text = "true"
      } else if let inlineValue {
        text = inlineValue
      } else {
        // The next word is the value unless it is another option; "-1" is a value.
        guard i < args.count, !looksLikeOption(args[i]) else {
          throw CommandLineError.missingValue(option: "--" + name)
        }
        text = args[i]
        i += 1
      }
      values[name] = try CommandLineParser.convert(text, for: option)
      explicit.insert(name)
    }
    for option in options where values[option.name] == nil {
      values[option.name] = try CommandLineParser.convert(option.defaultValue, for: option)
    }
    return ParsedOptions(values: values, explicit: explicit)
  }

  /// The `--help` text: `USAGE:`, the abstract, then every option with its help and default.
  public var helpText: String {
    var lines = ["USAGE: \(commandName) [<options>]", ""]
    if !abstract.isEmpty { lines += [abstract, ""] }
    lines.append("OPTIONS:")
    let column = 30
    func row(_ label: String, _ help: String) {
      let left = "  " + label
      if left.count + 2 <= column {
        lines.append(left + String(repeating: " ", count: column - left.count) + help)
      } else {
        // A long label gets its own line, as swift-argument-parser does.
        lines.append(left)
        lines.append(String(repeating: " ", count: column) + help)
      }
    }
    for option in options {
      let label = "--\(option.name)" + (option.kind == .flag ? "" : " \(placeholder(option.kind))")
      let shown = option.defaultValue.isEmpty ? "\"\"" : option.defaultValue
      row(label, "\(option.help) (default: \(shown))")
    }
    row("-h, --help", "Show help information.")
    return lines.joined(separator: "\n")
  }

  // MARK: - Implementation

  private func placeholder(_ kind: OptionKind) -> String {
    switch kind {
    case .int: return "<int>"
    case .double: return "<number>"
    case .string: return "<string>"
    case .flag: return ""
    case .intList: return "<int,...>"
    }
  }

  private func looksLikeOption(_ word: String) -> Bool {
    word.hasPrefix("-") && Double(word) == nil
  }

  /// Converts a command-line spelling to the option's kind and runs its validation.
  private static func convert(_ text: String, for option: OptionSpec) throws -> OptionValue {
    let flagName = "--" + option.name
    let value: OptionValue
    switch option.kind {
    case .int:
      guard let v = Int(text) else {
        throw CommandLineError.invalidValue(option: flagName, value: text, expected: "an integer")
      }
      value = .int(v)
    case .double:
      guard let v = Double(text), v.isFinite else {
        throw CommandLineError.invalidValue(option: flagName, value: text, expected: "a number")
      }
      value = .double(v)
    case .string:
      value = .string(text)
    case .flag:
      guard let v = Bool(text) else {
        throw CommandLineError.invalidValue(
          option: flagName, value: text, expected: "true or false")
      }
      value = .flag(v)
    case .intList:
      let parts = text.isEmpty ? [] : text.split(separator: ",", omittingEmptySubsequences: false)
      let numbers = parts.map { Int($0.trimmingCharacters(in: .whitespaces)) }
      guard numbers.allSatisfy({ $0 != nil }) else {
        throw CommandLineError.invalidValue(
          option: flagName, value: text, expected: "comma-separated integers like 1,2,4,8")
      }
      value = .intList(numbers.map { $0! })
    }
    if let reason = option.validate?(value) {
      throw CommandLineError.outOfRange(option: flagName, value: text, reason: reason)
    }
    return value
  }
}
