// The registry of candidate operations a mixed op chooses among.

import NeuralNetwork
import TensorEngine

/// A named candidate operation: a factory for a layer on C channels with stride 1 or 2.
public struct Primitive: Sendable {
  /// The name used in genotypes (`sep_conv_3x3`).
  public let name: String
  /// Builds the operation for `channels` channels and `stride` (1 or 2); the layer must map
  /// (N, C, H, W) to (N, C, ⌈H/stride⌉, ⌈W/stride⌉).
  public let make: @Sendable (_ channels: Int, _ stride: Int, _ rng: inout SeededGenerator) -> Layer

  /// A candidate named `name` whose layers `make` builds.
  public init(
    name: String,
    make: @escaping @Sendable (_ channels: Int, _ stride: Int, _ rng: inout SeededGenerator) -> Layer
  ) {
    self.name = name
    self.make = make
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

  /// A copy with `primitive` appended as the last α column.
  public func adding(_ primitive: Primitive) -> SearchSpace {
    SearchSpace(primitives + [primitive])
  }

  /// DARTS's eight candidates in the official order. Pools are followed by a non-affine batch
  /// norm (PC-DARTS model_search.py); every batch norm in the search cells is non-affine.
  public static let darts = SearchSpace([
    Primitive(name: "none") { _, s, _ in Zero(stride: s) },
    Primitive(name: "max_pool_3x3") { c, s, _ in
      PoolBN(MaxPool2d(kernel: 3, stride: s, padding: 1), channels: c)
    },
    Primitive(name: "avg_pool_3x3") { c, s, _ in
      PoolBN(AvgPool2d(kernel: 3, stride: s, padding: 1, countIncludePad: false), channels: c)
    },
    Primitive(name: "skip_connect") { c, s, rng in
      s == 1 ? Identity() : FactorizedReduce(inChannels: c, outChannels: c, affine: false, rng: &rng)
    },
    Primitive(name: "sep_conv_3x3") { c, s, rng in
      SepConv(inChannels: c, outChannels: c, kernelSize: 3, stride: s, padding: 1, affine: false, rng: &rng)
    },
    Primitive(name: "sep_conv_5x5") { c, s, rng in
      SepConv(inChannels: c, outChannels: c, kernelSize: 5, stride: s, padding: 2, affine: false, rng: &rng)
    },
    Primitive(name: "dil_conv_3x3") { c, s, rng in
      DilConv(
        inChannels: c, outChannels: c, kernelSize: 3, stride: s, padding: 2, dilation: 2,
        affine: false, rng: &rng)
    },
    Primitive(name: "dil_conv_5x5") { c, s, rng in
      DilConv(
        inChannels: c, outChannels: c, kernelSize: 5, stride: s, padding: 4, dilation: 2,
        affine: false, rng: &rng)
    },
  ])
}
