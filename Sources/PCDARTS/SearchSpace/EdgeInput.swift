// What a candidate operation reads of its edge's input node. Legend: N batch, C the node's
// channels, K the partial-channel factor, H×W the plane.

import NeuralNetwork
import TensorEngine

/// What the candidate operations of an edge read from its input node: the first C/K channels and
/// their ReLU. Every edge leaving a node takes the same channels, so a cell computes this once
/// per node and shares it (one slice and one ReLU kept per node instead of per edge).
public struct EdgeInput {
  /// (N, C/K, H, W): the channels that go through the candidate operations.
  public let part: Tensor
  /// relu(part), or nil when no candidate starts with ReLU.
  public let activated: Tensor?

  /// - Parameters:
  ///   - x: the node, (N, C, H, W).
  ///   - k: K; with 1 the part is `x` itself.
  ///   - activate: whether to compute the ReLU.
  public init(_ x: Tensor, partialChannels k: Int, activate: Bool) {
    part = k == 1 ? x : sliceChannels(x, 0..<x.shape[1] / k)
    activated = activate ? relu(part) : nil
  }
}
