// The command-line parser: both value spellings, flags, lists, defaults, help and every error.
import NeuralNetwork
import PCDARTS
import TensorEngine
import XCTest

@testable import SearchCommands

final class CommandLineOptionsTests: XCTestCase {
  private func makeParser() -> CommandLineParser {
    CommandLineParser(
      commandName: "search-cifar",
      abstract: "Searches a PC-DARTS cell.",
      options: [
        .int("batch-size", default: 64, help: "Images per batch.") {
          $0 >= 1 ? nil : "must be at least 1"
        },
        .double("lr", default: 0.1, help: "Weight learning rate.") {
          $0 > 0 ? nil : "must be positive"
        },
        .string("dataset", default: "cifar10", help: "Dataset name.") {
          ["cifar10", "fashion-mnist"].contains($0) ? nil : "must be cifar10 or fashion-mnist"
        },
        .string("data", default: "", help: "Data folder."),
        .flag("unrolled", help: "Use the second-order architecture gradient."),
        .intList("threads", default: [1, 2], help: "Thread counts to benchmark."),
        .double("weight-decay-of-the-architecture-parameters", default: 1e-3, help: "Long name."),
      ])
  }

  private func assertError(
    _ args: [String], _ expected: CommandLineError, message: String,
    file: StaticString = #filePath, line: UInt = #line
  ) {
    XCTAssertThrowsError(try makeParser().parse(args), file: file, line: line) { error in
      XCTAssertEqual(error as? CommandLineError, expected, file: file, line: line)
      XCTAssertEqual("\(error)", message, file: file, line: line)
      XCTAssertEqual((error as? CommandLineError)?.exitCode, 2, file: file, line: line)
    }
  }

  func testDefaultsWhenNothingIsGiven() throws {
    let options = try makeParser().parse([])
    XCTAssertEqual(options.int("batch-size"), 64)
    XCTAssertEqual(options.double("lr"), 0.1)
    XCTAssertEqual(options.string("dataset"), "cifar10")
    XCTAssertEqual(options.string("data"), "")
    XCTAssertFalse(options.flag("unrolled"))
    XCTAssertEqual(options.intList("threads"), [1, 2])
    XCTAssertEqual(options.double("weight-decay-of-the-architecture-parameters"), 0.001)
    XCTAssertFalse(options.isSet("lr"))
  }

  func testBothValueSpellingsFlagsAndLists() throws {
    let options = try makeParser().parse([
      "--batch-size", "256", "--lr=1e-3", "--unrolled", "--threads", "1,2,4,8",
      "--dataset=fashion-mnist", "--data", "/tmp/x=y",
    ])
    XCTAssertEqual(options.int("batch-size"), 256)
    XCTAssertEqual(options.double("lr"), 0.001)
    XCTAssertTrue(options.flag("unrolled"))
    XCTAssertEqual(options.intList("threads"), [1, 2, 4, 8])
    XCTAssertEqual(options.string("dataset"), "fashion-mnist")
    XCTAssertEqual(options.string("data"), "/tmp/x=y")
    XCTAssertTrue(options.isSet("lr"))
    XCTAssertFalse(options.isSet("weight-decay-of-the-architecture-parameters"))

    // The last of a repeated option wins; a negative number is a value, not an option;
    // `--name=` gives the empty value.
    let more = try makeParser().parse([
      "--batch-size", "3", "--batch-size=5", "--threads", " 3, -1 ", "--data=",
    ])
    XCTAssertEqual(more.int("batch-size"), 5)
    XCTAssertEqual(more.intList("threads"), [3, -1])
    XCTAssertEqual(more.string("data"), "")
    XCTAssertEqual(try makeParser().parse(["--threads="]).intList("threads"), [])
  }

  func testHelpStartsWithUsageAndListsEveryOptionWithItsDefault() {
    for flag in ["--help", "-h"] {
      XCTAssertThrowsError(try makeParser().parse(["--lr", "0.5", flag])) { error in
        guard case .helpRequested(let help) = error as? CommandLineError else {
          return XCTFail("expected helpRequested, got \(error)")
        }
        XCTAssertEqual((error as? CommandLineError)?.exitCode, 0)
        XCTAssertTrue(help.hasPrefix("USAGE: search-cifar"), help)
        XCTAssertTrue(help.contains("Searches a PC-DARTS cell."))
        let lines = help.split(separator: "\n").map(String.init)
        func line(_ prefix: String) -> String? {
          lines.first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(prefix) }
        }
        XCTAssertEqual(
          line("--batch-size"),
          "  --batch-size <int>          Images per batch. (default: 64)")
        XCTAssertEqual(
          line("--lr"), "  --lr <number>               Weight learning rate. (default: 0.1)")
        XCTAssertEqual(
          line("--threads"),
          "  --threads <int,...>         Thread counts to benchmark. (default: 1,2)")
        XCTAssertEqual(
          line("--unrolled"),
          "  --unrolled                  Use the second-order architecture gradient. (default: false)"
        )
        XCTAssertEqual(
          line("--data "), "  --data <string>             Data folder. (default: \"\")")
        XCTAssertEqual(line("--dataset")?.hasSuffix("Dataset name. (default: cifar10)"), true)
        // A label too long for the column puts its help on the next line.
        let long = lines.firstIndex { $0.contains("--weight-decay-of-the-architecture-parameters") }
        XCTAssertEqual(
          long.map { lines[$0] }, "  --weight-decay-of-the-architecture-parameters <number>")
        XCTAssertEqual(
          long.map { lines[$0 + 1] },
          String(repeating: " ", count: 30) + "Long name. (default: 0.001)")
        XCTAssertEqual(line("-h, --help")?.hasSuffix("Show help information."), true)
      }
    }
  }

  func testUnknownOption() {
    assertError(
      ["--foo"], .unknownOption("--foo"),
      message: "unknown option '--foo'; see --help for the options")
    assertError(
      ["--foo=3"], .unknownOption("--foo"),
      message: "unknown option '--foo'; see --help for the options")
    assertError(
      ["-x"], .unknownOption("-x"),
      message: "unknown option '-x'; see --help for the options")
    assertError(
      ["cifar10"], .unexpectedArgument("cifar10"),
      message: "unexpected argument 'cifar10'; options start with '--'")
  }

  func testMissingValue() {
    assertError(["--lr"], .missingValue(option: "--lr"), message: "missing value for '--lr'")
    assertError(
      ["--lr", "--unrolled"], .missingValue(option: "--lr"),
      message: "missing value for '--lr'")
  }

  func testBadValues() {
    assertError(
      ["--lr", "abc"], .invalidValue(option: "--lr", value: "abc", expected: "a number"),
      message: "bad value 'abc' for '--lr' (expected a number)")
    assertError(
      ["--lr=nan"], .invalidValue(option: "--lr", value: "nan", expected: "a number"),
      message: "bad value 'nan' for '--lr' (expected a number)")
    assertError(
      ["--batch-size", "6.5"],
      .invalidValue(option: "--batch-size", value: "6.5", expected: "an integer"),
      message: "bad value '6.5' for '--batch-size' (expected an integer)")
    assertError(
      ["--threads", "1,,4"],
      .invalidValue(
        option: "--threads", value: "1,,4", expected: "comma-separated integers like 1,2,4,8"),
      message:
        "bad value '1,,4' for '--threads' (expected comma-separated integers like 1,2,4,8)")
    assertError(
      ["--unrolled=yes"], .unexpectedValue(option: "--unrolled", value: "yes"),
      message: "flag '--unrolled' takes no value, got 'yes'")
  }

  func testValidationRejectsOutOfRangeValues() {
    assertError(
      ["--batch-size", "0"],
      .outOfRange(option: "--batch-size", value: "0", reason: "must be at least 1"),
      message: "value '0' for '--batch-size' is out of range: must be at least 1")
    assertError(
      ["--lr", "-0.5"], .outOfRange(option: "--lr", value: "-0.5", reason: "must be positive"),
      message: "value '-0.5' for '--lr' is out of range: must be positive")
    assertError(
      ["--dataset", "mnist"],
      .outOfRange(option: "--dataset", value: "mnist", reason: "must be cifar10 or fashion-mnist"),
      message:
        "value 'mnist' for '--dataset' is out of range: must be cifar10 or fashion-mnist")
    XCTAssertEqual(try makeParser().parse(["--batch-size", "1"]).int("batch-size"), 1)
  }

  func testRecomputationAutoIsOnWhereBenchMeasuredItNoSlower() throws {
    let saved = Engine.recomputesDepthwiseOutputs
    defer { Engine.recomputesDepthwiseOutputs = saved }
    func chosen(_ arguments: [String], imageNetStem: Bool) throws -> Bool {
      Engine.recomputesDepthwiseOutputs = !Engine.recomputesDepthwiseOutputs  // so that a no-op shows
      applyRecomputation(
        try TrainCommand.parser.parse(["--genotype", "DARTS_V2"] + arguments), imageNetStem: imageNetStem)
      return Engine.recomputesDepthwiseOutputs
    }
    XCTAssertTrue(try chosen([], imageNetStem: false), "the CIFAR stem: search at every K, evaluation")
    XCTAssertFalse(try chosen([], imageNetStem: true), "the ImageNet stem")
    XCTAssertFalse(try chosen(["--recompute-depthwise", "off"], imageNetStem: false))
    XCTAssertTrue(try chosen(["--recompute-depthwise", "on"], imageNetStem: true))
  }
}
