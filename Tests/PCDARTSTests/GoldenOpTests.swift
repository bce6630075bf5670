// Every op, optimizer and schedule against PyTorch's values in Tests/Fixtures/ops.safetensors
// (written by scripts/make_fixtures.py with torch 1.13, seeded).
//
// Fixture conventions: tensor `<case>.<tensor>`; metadata `<case>` is a JSON object of the case's
// parameters with a `kind`. A gradient case holds its inputs, `out`, `grad_out` and
// `grad_<input>` for every input PyTorch differentiated. The test runs the engine op, calls
// `out.backward(gradient: grad_out)` and compares `out` and every `grad_<input>`.
//
// Coverage is enforced in two directions: every case in the file must have a kind that one of
// the family tests runs, and every tensor of a case must be read while it runs, so a fixture
// case or tensor added later cannot be skipped silently.
//
// Tolerances are relative to the largest expected magnitude (`assertClose`). The default 1e-5 is
// about 80 float32 ulps: the engine and PyTorch sum in different orders (im2col + sgemm vs
// MKL-DNN, Double per-channel statistics vs float), so bit equality is not expected.
import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine
import TestSupport
import XCTest

// MARK: - Fixture access (shared with GoldenNetworkTests)

/// A problem with a fixture file itself (not with the code under test).
struct FixtureError: Error, CustomStringConvertible {
  let description: String
}

/// A golden safetensors file from Tests/Fixtures, which records the tensors a test reads.
final class GoldenFixture {
  let file: SafeTensorsFile
  let fileName: String
  /// Names read through ``tensor(_:requiresGrad:)`` or ``integers(_:)``.
  private(set) var read: Set<String> = []

  init(_ fileName: String) throws {
    self.fileName = fileName
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("Fixtures").appendingPathComponent(fileName)
    file = try SafeTensorsFile.read(from: url)
  }

  var names: Set<String> { Set(file.tensors.keys) }

  func has(_ name: String) -> Bool { file.tensors[name] != nil }

  /// The named tensor as an engine tensor (I64 values converted to Float).
  func tensor(_ name: String, requiresGrad: Bool = false) throws -> Tensor {
    guard let stored = file.tensors[name] else {
      throw FixtureError(description: "\(fileName) has no tensor \(name)")
    }
    read.insert(name)
    let values = stored.floats ?? stored.int64s!.map { Float($0) }
    return Tensor(shape: stored.shape, data: values, requiresGrad: requiresGrad)
  }

  /// The named I64 tensor's values.
  func integers(_ name: String) throws -> [Int64] {
    guard let values = file.tensors[name]?.int64s else {
      throw FixtureError(description: "\(fileName) has no I64 tensor \(name)")
    }
    read.insert(name)
    return values
  }

  /// The raw metadata string.
  func metadataString(_ key: String) throws -> String {
    guard let text = file.metadata[key] else {
      throw FixtureError(description: "\(fileName) has no metadata \(key)")
    }
    return text
  }

  /// Metadata stored as a JSON value.
  func metadataJSON(_ key: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(metadataString(key).utf8), options: [.fragmentsAllowed])
  }

  /// Metadata stored as a JSON object.
  func parameters(_ key: String) throws -> CaseParameters {
    guard let object = try metadataJSON(key) as? [String: Any] else {
      throw FixtureError(description: "\(fileName): metadata \(key) is not a JSON object")
    }
    return CaseParameters(name: key, values: object)
  }
}

/// The JSON parameters of one fixture case, with typed accessors that name a missing key.
struct CaseParameters {
  let name: String
  let values: [String: Any]

  private func value<T>(_ key: String, as: T.Type) throws -> T {
    guard let v = values[key] as? T else {
      throw FixtureError(description: "case \(name): parameter \(key) missing or not \(T.self)")
    }
    return v
  }
  func int(_ key: String) throws -> Int { try value(key, as: Int.self) }
  func double(_ key: String) throws -> Double { try value(key, as: Double.self) }
  func float(_ key: String) throws -> Float { Float(try double(key)) }
  func bool(_ key: String) throws -> Bool { try value(key, as: Bool.self) }
  func string(_ key: String) throws -> String { try value(key, as: String.self) }
  func doubles(_ key: String) throws -> [Double] { try value(key, as: [Double].self) }
}

/// max|a − e| / max|e|, the quantity `assertClose` bounds (NaN counts as infinitely wrong).
func relativeError(_ actual: [Float], _ expected: [Float]) -> Double {
  guard actual.count == expected.count else { return .infinity }
  let scale = max(expected.map { Double(abs($0)) }.max() ?? 0, 1e-30)
  var worst = 0.0
  for (a, e) in zip(actual, expected) {
    let d = abs(Double(a) - Double(e))
    if !(d <= worst) { worst = d.isNaN ? .infinity : d }
  }
  return worst / scale
}

// MARK: - The tests

final class GoldenOpTests: XCTestCase {
  private var fixture: GoldenFixture!
  /// The relative error of every comparison of the current case, for the log line.
  private var errors: [(String, Double)] = []

  /// The kinds each family test runs; every case's `kind` must appear exactly once.
  private static let families: [String: [String]] = [
    "convolution": ["conv2d"],
    "batchNorm": ["batch_norm"],
    "pooling": ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"],
    "dense": ["linear", "softmax", "cross_entropy"],
    "channelShuffle": ["channel_shuffle"],
    "mixedOp": ["mixed_op"],
    "optimizers": ["sgd", "adam"],
    "schedules": ["cosine_annealing", "clip_grad_norm"],
  ]

  /// The cases this test suite was written against; the file may add more, never drop these.
  private static let expectedCases: Set<String> = [
    "conv.conv3x3_bias", "conv.conv3x3_s2", "conv.conv3x3_d2", "conv.conv3x3_g2",
    "conv.dw3_s1_d1", "conv.dw3_s2_d1", "conv.dw5_s1_d1", "conv.dw5_s2_d1", "conv.dw3_s1_d2",
    "conv.dw3_s2_d2", "conv.dw5_s1_d2", "conv.dw5_s2_d2", "conv.dw3_s2_d1_odd", "conv.conv1x1",
    "conv.conv1x1_s2", "conv.conv1x1_s2_odd",
    "bn.train_affine", "bn.train_noaffine", "bn.eval_affine",
    "pool.max3_s1_p1", "pool.max3_s2_p1", "pool.max3_s2_p1_even", "pool.avg3_s1_p1",
    "pool.avg3_s2_p1", "pool.avg3_s2_p1_even", "pool.max2_s2", "pool.max2_s2_odd", "pool.global_avg",
    "linear", "softmax.vector", "softmax.rows", "cross_entropy", "channel_shuffle",
    "mixed_op.K4_s1", "mixed_op.K4_s2", "mixed_op.K1_s2",
    "sgd", "adam", "cosine.eta0", "cosine.eta0_001", "clip",
  ]

  override func setUpWithError() throws {
    fixture = try GoldenFixture("ops.safetensors")
  }

  func testConvolution() throws { try runFamily("convolution") }
  func testBatchNorm() throws { try runFamily("batchNorm") }
  func testPooling() throws { try runFamily("pooling") }
  func testDense() throws { try runFamily("dense") }
  func testChannelShuffle() throws { try runFamily("channelShuffle") }
  func testMixedOp() throws { try runFamily("mixedOp") }
  func testOptimizers() throws { try runFamily("optimizers") }
  func testSchedules() throws { try runFamily("schedules") }

  /// The cases the family tests run together are exactly the cases in the file, and every tensor
  /// belongs to one of them.
  func testEveryFixtureCaseIsExercised() throws {
    let all = try allCases()
    XCTAssertTrue(
      Self.expectedCases.isSubset(of: all),
      "fixture lost cases: \(Self.expectedCases.subtracting(all).sorted())")
    var tested: [String] = []
    for family in Self.families.keys { tested += try cases(in: family) }
    XCTAssertEqual(tested.count, Set(tested).count, "a case is run by two families")
    XCTAssertEqual(Set(tested), all, "cases no family runs: \(all.subtracting(tested).sorted())")
    let orphans = fixture.names.filter { name in !all.contains { name.hasPrefix($0 + ".") } }
    XCTAssertEqual(orphans, [], "tensors outside every case")
    let kinds = Self.families.values.flatMap { $0 }
    XCTAssertEqual(kinds.count, Set(kinds).count, "a kind is listed in two families")
  }

  // MARK: - Case bookkeeping

  /// Every metadata key that describes a case (all but the generator note).
  private func allCases() throws -> Set<String> {
    Set(fixture.file.metadata.keys.filter { $0 != "generator" })
  }

  private func cases(in family: String) throws -> [String] {
    let kinds = Set(Self.families[family]!)
    return try allCases().sorted().filter { kinds.contains(try fixture.parameters($0).string("kind")) }
  }

  /// Runs every case of the family's kinds, then checks the case read all of its tensors.
  private func runFamily(_ family: String) throws {
    let names = try cases(in: family)
    XCTAssertFalse(names.isEmpty, "no fixture case for family \(family)")
    for name in names {
      errors = []
      let parameters = try fixture.parameters(name)
      try run(name, parameters)
      let unread = fixture.names.filter { $0.hasPrefix(name + ".") && !fixture.read.contains($0) }
      XCTAssertEqual(unread.sorted(), [], "\(name): fixture tensors the test did not check")
      let summary = errors.map { "\($0.0) \(String(format: "%.2e", $0.1))" }.joined(separator: ", ")
      print("golden \(name): max relative error \(summary)")
    }
  }

  private func run(_ name: String, _ p: CaseParameters) throws {
    switch try p.string("kind") {
    case "conv2d": try convolution(name, p)
    case "batch_norm": try batchNorm(name, p)
    case "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d": try pooling(name, p)
    case "linear":
      try gradientCase(name, inputs: ["x", "weight", "bias"]) {
        linear($0["x"]!, weight: $0["weight"]!, bias: $0["bias"])
      }
    case "softmax":
      XCTAssertEqual(try p.int("dim"), -1, name)
      try gradientCase(name, inputs: ["x"]) { softmax($0["x"]!) }
    case "cross_entropy":
      XCTAssertEqual(try p.string("reduction"), "mean", name)
      let labels = try fixture.integers(name + ".target").map { Int32($0) }
      // The engine returns a rank-0 loss, the fixture stores shape [1].
      try gradientCase(name, inputs: ["logits"]) { reshape(crossEntropy($0["logits"]!, labels: labels), [1]) }
    case "channel_shuffle":
      let groups = try p.int("groups")
      try gradientCase(name, inputs: ["x"]) { channelShuffle($0["x"]!, groups: groups) }
    case "mixed_op": try mixedOp(name, p)
    case "sgd", "adam": try optimizer(name, p)
    case "cosine_annealing": try cosine(name, p)
    case "clip_grad_norm": try clip(name, p)
    case let kind: XCTFail("\(name): no runner for kind \(kind)")
    }
  }

  // MARK: - The generic gradient check

  /// Compares `actual` with the fixture tensor `<name>.<key>` and records the error.
  private func compare(
    _ actual: Tensor, _ name: String, _ key: String, tolerance: Double = 1e-5,
    file: StaticString = #filePath, line: UInt = #line
  ) throws {
    let expected = try fixture.tensor(name + "." + key)
    errors.append((key, relativeError(actual.scalars, expected.scalars)))
    assertClose(actual, expected, tolerance: tolerance, "\(name).\(key)", file: file, line: line)
  }

  /// Runs `op` on the case's inputs (those present in the file among `inputs`), compares `out`,
  /// backpropagates `grad_out` and compares `grad_<input>` for every input that has one.
  ///
  /// Inputs with a stored gradient are leaves that require gradients; an input PyTorch did not
  /// differentiate must have no `grad_` entry, and one it did must receive a gradient here.
  /// - Returns: the input tensors by name, for checks after the backward pass.
  @discardableResult
  private func gradientCase(
    _ name: String, inputs: [String], tolerance: Double = 1e-5, _ op: ([String: Tensor]) throws -> Tensor
  ) throws -> [String: Tensor] {
    var tensors: [String: Tensor] = [:]
    for input in inputs where fixture.has("\(name).\(input)") {
      tensors[input] = try fixture.tensor("\(name).\(input)", requiresGrad: fixture.has("\(name).grad_\(input)"))
    }
    let out = try op(tensors)
    try compare(out, name, "out", tolerance: tolerance)
    out.backward(gradient: try fixture.tensor(name + ".grad_out"))
    for (input, t) in tensors.sorted(by: { $0.key < $1.key }) where t.requiresGrad {
      guard let grad = t.grad else {
        XCTFail("\(name): \(input) got no gradient")
        continue
      }
      try compare(grad, name, "grad_" + input, tolerance: tolerance)
    }
    return tensors
  }

  // MARK: - Families

  private func convolution(_ name: String, _ p: CaseParameters) throws {
    let (stride, padding, dilation, groups) = (
      try p.int("stride"), try p.int("padding"), try p.int("dilation"), try p.int("groups")
    )
    let inputs = ["x", "weight"] + (try p.bool("has_bias") ? ["bias"] : [])
    XCTAssertEqual(fixture.has(name + ".bias"), try p.bool("has_bias"), "\(name): has_bias")
    try gradientCase(name, inputs: inputs) { t in
      XCTAssertEqual(Array(t["weight"]!.shape[2...]), [try p.int("kernel_size"), try p.int("kernel_size")], name)
      return conv2d(
        t["x"]!, weight: t["weight"]!, bias: t["bias"], stride: stride, padding: padding,
        dilation: dilation, groups: groups)
    }
  }

  private func batchNorm(_ name: String, _ p: CaseParameters) throws {
    let training = try p.bool("training")
    let affine = try p.bool("affine")
    let channels = try fixture.tensor(name + ".x").shape[1]
    var state: BatchNormState
    if training {
      // PyTorch's fresh buffers: mean 0, variance 1 (the metadata says so).
      XCTAssertEqual(try p.string("running_init"), "mean 0, var 1", name)
      state = BatchNormState(
        runningMean: Tensor(zeros: [channels]), runningVar: Tensor(repeating: 1, shape: [channels]))
      state.momentum = try p.float("momentum")
    } else {
      state = BatchNormState(
        runningMean: try fixture.tensor(name + ".running_mean_in"),
        runningVar: try fixture.tensor(name + ".running_var_in"))
    }
    state.eps = try p.float("eps")
    let before = (state.runningMean.scalars, state.runningVar.scalars)
    let inputs = ["x"] + (affine ? ["weight", "bias"] : [])
    XCTAssertEqual(fixture.has(name + ".weight"), affine, "\(name): affine")
    try gradientCase(name, inputs: inputs) { t in
      batchNorm2d(t["x"]!, weight: t["weight"], bias: t["bias"], state: state, training: training)
    }
    if training {
      // One step of momentum from 0/1 with the unbiased batch variance.
      try compare(state.runningMean, name, "running_mean")
      try compare(state.runningVar, name, "running_var")
    } else {
      XCTAssertEqual(state.runningMean.scalars, before.0, "\(name): evaluation must not move running_mean")
      XCTAssertEqual(state.runningVar.scalars, before.1, "\(name): evaluation must not move running_var")
    }
  }

  private func pooling(_ name: String, _ p: CaseParameters) throws {
    switch try p.string("kind") {
    case "max_pool2d":
      let (k, s, pad) = (try p.int("kernel_size"), try p.int("stride"), try p.int("padding"))
      try gradientCase(name, inputs: ["x"]) { maxPool2d($0["x"]!, kernel: k, stride: s, padding: pad) }
    case "avg_pool2d":
      let (k, s, pad) = (try p.int("kernel_size"), try p.int("stride"), try p.int("padding"))
      let include = try p.bool("count_include_pad")
      try gradientCase(name, inputs: ["x"]) {
        avgPool2d($0["x"]!, kernel: k, stride: s, padding: pad, countIncludePad: include)
      }
    default:  // adaptive_avg_pool2d to 1×1: the engine returns (N, C), PyTorch (N, C, 1, 1).
      XCTAssertEqual(try p.int("output_size"), 1, name)
      try gradientCase(name, inputs: ["x"]) { t in
        let x = t["x"]!
        return reshape(globalAvgPool2d(x), [x.shape[0], x.shape[1], 1, 1])
      }
    }
  }

  /// One PC-DARTS edge with the official state loaded by name; also the running statistics the
  /// forward pass leaves behind.
  private func mixedOp(_ name: String, _ p: CaseParameters) throws {
    var rng = SeededGenerator(seed: 99)  // every weight is overwritten from the fixture
    let op = MixedOp(
      channels: try p.int("C"), stride: try p.int("stride"), partialChannels: try p.int("K"),
      space: .darts, rng: &rng)
    let prefix = try p.string("state_prefix")
    XCTAssertEqual(prefix, name + ".state.")
    let stored = Set(fixture.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
    let state = op.stateTensors()
    XCTAssertEqual(Set(state.map(\.0)), stored, "\(name): state names differ from the official MixedOp")
    for (key, t) in state {
      let value = try fixture.tensor(prefix + key)
      XCTAssertEqual(t.shape, value.shape, "\(name): \(key)")
      if t.shape == value.shape { t.assign(value) }
    }
    XCTAssertTrue(op.isTraining)
    try gradientCase(name, inputs: ["x", "weights"]) { op($0["x"]!, weights: $0["weights"]!) }
    let buffers = Dictionary(uniqueKeysWithValues: op.namedBuffers())
    let afterPrefix = name + ".after."
    let after = fixture.names.filter { $0.hasPrefix(afterPrefix) }.sorted()
    XCTAssertFalse(after.isEmpty, "\(name): no running statistics to check")
    for key in after {
      let buffer = String(key.dropFirst(afterPrefix.count))
      guard let t = buffers[buffer] else {
        XCTFail("\(name): no buffer \(buffer)")
        continue
      }
      try compare(t, name, "after." + buffer)
    }
  }

  /// Three steps from p0 with the stored gradients g1…g3, compared after each step with p1…p3.
  private func optimizer(_ name: String, _ p: CaseParameters) throws {
    let parameter = try fixture.tensor(name + ".p0", requiresGrad: true)
    let step: () -> Void
    if try p.string("kind") == "sgd" {
      XCTAssertEqual(try p.int("dampening"), 0, name)
      XCTAssertEqual(try p.bool("nesterov"), false, name)
      let sgd = SGD(
        parameters: [parameter], learningRate: try p.float("lr"), momentum: try p.float("momentum"),
        weightDecay: try p.float("weight_decay"))
      step = sgd.step
    } else {
      XCTAssertEqual(try p.bool("amsgrad"), false, name)
      XCTAssertEqual(try p.string("weight_decay_mode"), "L2 added to the gradient", name)
      let betas = try p.doubles("betas")
      let adam = Adam(
        parameters: [parameter], learningRate: try p.float("lr"), beta1: Float(betas[0]),
        beta2: Float(betas[1]), epsilon: try p.float("eps"), weightDecay: try p.float("weight_decay"))
      step = adam.step
    }
    for t in 1...3 {
      parameter.grad = try fixture.tensor("\(name).g\(t)")
      step()
      try compare(parameter, name, "p\(t)")
    }
  }

  private func cosine(_ name: String, _ p: CaseParameters) throws {
    let (total, epochs) = (try p.int("T_max"), try p.int("epochs"))
    let (initial, minimum) = (try p.float("base_lr"), try p.float("eta_min"))
    let lrs = (0..<epochs).map {
      cosineAnnealingLearningRate(epoch: $0, totalEpochs: total, initial: initial, minimum: minimum)
    }
    // Both sides evaluate the formula in double and round once to float32, so they agree to an ulp.
    try compare(Tensor(shape: [epochs], data: lrs), name, "lrs", tolerance: 1e-6)
  }

  private func clip(_ name: String, _ p: CaseParameters) throws {
    XCTAssertEqual(try p.int("norm_type"), 2, name)
    let gradients = [try fixture.tensor(name + ".g1"), try fixture.tensor(name + ".g2")]
    let parameters = gradients.map { Tensor(zeros: $0.shape, requiresGrad: true) }
    for (parameter, g) in zip(parameters, gradients) { parameter.grad = g }
    let norm = clipGradientNorm(parameters, maxNorm: try p.float("max_norm"))
    try compare(Tensor(shape: [1], data: [norm]), name, "total_norm")
    try compare(parameters[0].grad!, name, "g1_clipped")
    try compare(parameters[1].grad!, name, "g2_clipped")
  }
}
