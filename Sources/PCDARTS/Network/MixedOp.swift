// The partial-channel mixed op of PC-DARTS (Xu et al. 2020, §3.2). Legend: N batch, C channels
// on the edge, K the partial-channel factor, H×W the input plane, s the edge's stride.

import NeuralNetwork
import TensorEngine

/// One edge of a search cell: the softmax(α)-weighted sum of every candidate operation, applied
/// to the first C/K channels only; the other channels bypass the operations (through a 2×2 max
/// pool on stride-2 edges), then the two parts are concatenated and channel-shuffled with K
/// groups. With K = 1 this is DARTS's mixed op (no slicing, no shuffle).
public final class MixedOp: Module {
  /// One operation per primitive of the search space, built for C/K channels (`_ops.<i>`).
  public let ops: ModuleList<Layer>
  /// Which entries of ``ops`` run (all but `none`, which contributes exactly zero), and what each
  /// declares it offers for fusion (`nil`: it runs as a plain layer).
  private let active: [(index: Int, fusable: FusableCandidate?)]
  /// The primitives' names, for the attribution of their memory (``MemoryStats``).
  private let names: [String]
  /// C (the edge's channels), the stride (2 on a reduction cell's edges from its inputs, else 1)
  /// and K.
  public let channels: Int, stride: Int, partialChannels: Int

  /// - Precondition: `partialChannels` divides `channels`.
  public init(channels: Int, stride: Int, partialChannels k: Int, space: SearchSpace, rng: inout SeededGenerator) {
    precondition(k >= 1 && channels % k == 0, "MixedOp: K = \(k) must divide the \(channels) channels")
    (self.channels, self.stride, self.partialChannels) = (channels, stride, k)
    var made: [Layer] = []
    for primitive in space.primitives { made.append(primitive.make(channels / k, stride, &rng)) }
    ops = ModuleList(made)
    names = space.primitives.map { "forward: " + $0.name }
    active = space.primitives.indices.filter { space.primitives[$0].name != Primitive.noneName }
      .map { ($0, made[$0] as? FusableCandidate) }
  }

  /// `_ops`, the official attribute name.
  public override var children: [(String, Module)] { [("_ops", ops)] }

  /// - Parameters:
  ///   - x: (N, C, H, W).
  ///   - weights: (number of primitives), softmax(α) of this edge.
  /// - Returns: (N, C, H/s, W/s).
  public func callAsFunction(_ x: Tensor, weights: Tensor) -> Tensor {
    let mixed = processed(x, weights: weights)
    let k = partialChannels
    if k == 1 { return mixed }
    let p = channels / k
    if stride == 1 {
      return shuffledConcat(mixed, x, bChannels: p..<channels, groups: k)
    }
    let bypass = maxPool2d(sliceChannels(x, p..<channels), kernel: 2, stride: 2)
    return shuffledConcat(mixed, bypass, bChannels: 0..<bypass.shape[1], groups: k)
  }

  /// The weighted sum of the candidate operations on the first C/K channels, before the bypass
  /// channels join: what a cell hands to ``partialChannelSum(processed:inputs:strides:weights:indices:groups:)``.
  /// - Parameters:
  ///   - x: (N, C, H, W).
  ///   - weights: (number of primitives), softmax(α) of this edge.
  /// - Returns: (N, C/K, H/s, W/s).
  public func processed(_ x: Tensor, weights: Tensor) -> Tensor {
    precondition(x.rank == 4 && x.shape[1] == channels, "MixedOp: expects \(channels) channels, got input \(x.shape)")
    return processed(EdgeInput(x, partialChannels: partialChannels), weights: weights)
  }

  /// ``processed(_:weights:)`` on an input prepared once for every edge leaving the same node.
  /// - Precondition: `input` holds C/K channels.
  public func processed(_ input: EdgeInput, weights: Tensor) -> Tensor {
    precondition(
      input.part.shape[1] == channels / partialChannels,
      "MixedOp: expects \(channels / partialChannels) processed channels, got \(input.part.shape)")
    // A non-affine final batch norm is fused into the weighted sum (see FusableCandidate).
    var terms: [Tensor] = [], norms: [BatchNormState?] = []
    for (i, fusable) in active {
      let result = MemoryStats.attributing(to: names[i]) { fusable?.output(on: input) ?? .complete(ops[i](input.part)) }
      switch result {
      case .complete(let output):
        terms.append(output)
        norms.append(nil)
      case .beforeNorm(let output, let norm) where norm.weight == nil:
        terms.append(output)
        norms.append(norm.statisticsForForward())
      case .beforeNorm(let output, let norm):
        terms.append(norm(output))
        norms.append(nil)
      }
    }
    return MemoryStats.attributing(to: "forward: mixed-op sums") {
      normalizedWeightedSum(terms, norms: norms, training: isTraining, weights: weights, indices: active.map(\.index))
    }
  }
}
