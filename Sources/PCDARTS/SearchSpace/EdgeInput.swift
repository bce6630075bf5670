// What a candidate operation reads of its edge's input node. Legend: N batch, C the node's
// channels, K the partial-channel factor, H×W the plane.

import NeuralNetwork
import TensorEngine

/// What the candidate operations of an edge read from its input node: the first C/K channels and
/// their ReLU. Every edge leaving a node takes the same channels, so a cell builds this once per
/// node and shares it (one slice and one ReLU kept per node instead of per edge).
public final class EdgeInput {
  /// (N, C/K, H, W): the channels that go through the candidate operations.
  public let part: Tensor

  /// relu(part), computed the first time a candidate asks for it and shared from then on.
  public private(set) lazy var activated: Tensor = relu(part)

  /// - Parameters:
  ///   - x: the node, (N, C, H, W).
  ///   - k: K; with 1 the part is `x` itself.
  /// - Precondition: K divides C.
  public init(_ x: Tensor, partialChannels k: Int) {
    precondition(
      x.rank == 4 && k >= 1 && x.shape[1] % k == 0,
      "EdgeInput: K = \(k) must divide the channels of the (N, C, H, W) input \(x.shape)")
    part = k == 1 ? x : sliceChannels(x, 0..<x.shape[1] / k)
  }

  /// The input of an edge that processes `channels` of its node (random channel sampling).
  /// - Parameters:
  ///   - x: the node, (N, C, H, W).
  ///   - channels: distinct channels of x, in the order the candidates see them.
  public init(_ x: Tensor, channels: [Int]) {
    part = gatherChannels(x, channels)
  }
}
