// The registry of candidate operations a mixed op chooses among.

import NeuralNetwork
import TensorEngine

/// A named candidate operation: a factory for a layer on C channels with stride 1 or 2, in the
/// form a search cell's mixed op runs it and, optionally, in the form a discrete architecture
/// trains it (``EvaluationNetwork``).
public struct Primitive: Sendable {
  /// Builds an operation for `channels` channels and `stride` (1 or 2); the layer must map
  /// (N, C, H, W) to (N, C, ⌈H/stride⌉, ⌈W/stride⌉).
  public typealias Factory = @Sendable (_ channels: Int, _ stride: Int, _ rng: inout SeededGenerator) -> Layer

  /// The name used in genotypes (`sep_conv_3x3`).
  public let name: String
  /// The operation inside a mixed op of the super-net (DARTS and PC-DARTS model_search.py:
  /// batch norms without a learnt scale and shift, pools followed by such a batch norm).
  public let make: Factory
  /// The operation in a cell of a derived architecture (DARTS model.py: `OPS[name](C, stride,
  /// True)`, batch norms with a learnt scale and shift, plain pools), or `nil` when the primitive
  /// can only be searched over.
  public let makeForEvaluation: Factory?

  /// A candidate named `name`, built by `make` in the super-net and by `evaluation` in an
  /// evaluation network (`nil`: a genotype that selects it cannot be trained).
  public init(name: String, make: @escaping Factory, evaluation: Factory? = nil) {
    self.name = name
    self.make = make
    self.makeForEvaluation = evaluation
  }

  /// The name of DARTS's zero operation, which mixed ops skip and genotypes never select.
  public static let noneName = "none"
}

/// The ordered list of candidate operations; the order fixes the columns of the α matrices.
///
/// ``darts`` is the PC-DARTS/DARTS space. A tool adds its own candidate without editing this
/// package: `SearchSpace.darts.adding(Primitive(name: "conv_1x1", make: { c, s, rng in … }))`.
public struct SearchSpace: Sendable {
  /// The candidates, in α-column order.
  public private(set) var primitives: [Primitive]

  /// A space of `primitives`, in α-column order.
  /// - Precondition: names are unique and at least one candidate is not `none`.
  public init(_ primitives: [Primitive]) {
    let names = primitives.map(\.name)
    precondition(Set(names).count == names.count, "SearchSpace: duplicate primitive names in \(names)")
    precondition(
      names.contains { $0 != Primitive.noneName },
      "SearchSpace: needs at least one primitive besides '\(Primitive.noneName)'")
    self.primitives = primitives
  }

  /// The names, in α-column order.
  public var names: [String] { primitives.map(\.name) }
  /// The number of candidates (the α matrices' column count).
  public var count: Int { primitives.count }
  /// The α column of the zero op, if the space has one.
  public var noneIndex: Int? { names.firstIndex(of: Primitive.noneName) }

  /// The candidate named `name`, if the space has one.
  public func primitive(named name: String) -> Primitive? { primitives.first { $0.name == name } }

  /// How the candidate named `name` is built in an evaluation network.
  /// - Throws: ``SearchError/invalidGenotype(_:)`` when the space has no such candidate or it
  ///   has no evaluation form, naming the candidates that have one.
  public func evaluationFactory(for name: String) throws -> Primitive.Factory {
    guard let factory = primitive(named: name)?.makeForEvaluation else {
      throw SearchError.invalidGenotype(
        "the operation \(name) cannot be trained: the search space builds only "
          + primitives.filter { $0.makeForEvaluation != nil }.map(\.name).joined(separator: ", "))
    }
    return factory
  }

  /// A copy with `primitive` appended as the last α column.
  public func adding(_ primitive: Primitive) -> SearchSpace {
    SearchSpace(primitives + [primitive])
  }

  /// DARTS's eight candidates in the official order. In the super-net, pools are followed by a
  /// non-affine batch norm (PC-DARTS model_search.py) and every batch norm is non-affine; in an
  /// evaluation network (DARTS model.py) every batch norm is affine and pools stand alone.
  public static let darts = SearchSpace([
    Primitive(name: "none", make: { _, s, _ in Zero(stride: s) }, evaluation: { _, s, _ in Zero(stride: s) }),
    Primitive(
      name: "max_pool_3x3",
      make: { c, s, _ in PoolBN(MaxPool2d(kernel: 3, stride: s, padding: 1), channels: c) },
      evaluation: { _, s, _ in MaxPool2d(kernel: 3, stride: s, padding: 1) }),
    Primitive(
      name: "avg_pool_3x3",
      make: { c, s, _ in PoolBN(AvgPool2d(kernel: 3, stride: s, padding: 1, countIncludePad: false), channels: c) },
      evaluation: { _, s, _ in AvgPool2d(kernel: 3, stride: s, padding: 1, countIncludePad: false) }),
    dartsPrimitive("skip_connect") { c, s, affine, rng in
      s == 1 ? Identity() : FactorizedReduce(inChannels: c, outChannels: c, affine: affine, rng: &rng)
    },
    dartsPrimitive("sep_conv_3x3") { c, s, affine, rng in
      SepConv(inChannels: c, outChannels: c, kernelSize: 3, stride: s, padding: 1, affine: affine, rng: &rng)
    },
    dartsPrimitive("sep_conv_5x5") { c, s, affine, rng in
      SepConv(inChannels: c, outChannels: c, kernelSize: 5, stride: s, padding: 2, affine: affine, rng: &rng)
    },
    dartsPrimitive("dil_conv_3x3") { c, s, affine, rng in
      DilConv(
        inChannels: c, outChannels: c, kernelSize: 3, stride: s, padding: 2, dilation: 2, affine: affine, rng: &rng)
    },
    dartsPrimitive("dil_conv_5x5") { c, s, affine, rng in
      DilConv(
        inChannels: c, outChannels: c, kernelSize: 5, stride: s, padding: 4, dilation: 2, affine: affine, rng: &rng)
    },
  ])

  /// A DARTS operation whose two forms differ only in the batch norms' affine flag (DARTS
  /// operations.py: `OPS[name](C, stride, affine)`).
  private static func dartsPrimitive(
    _ name: String,
    _ build: @escaping @Sendable (_ channels: Int, _ stride: Int, _ affine: Bool, _ rng: inout SeededGenerator) -> Layer
  ) -> Primitive {
    Primitive(
      name: name, make: { c, s, rng in build(c, s, false, &rng) }, evaluation: { c, s, rng in build(c, s, true, &rng) })
  }
}
