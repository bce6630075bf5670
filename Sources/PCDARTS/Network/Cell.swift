// A search cell (DARTS §2.1 with PC-DARTS's edge normalisation, §3.3). Legend: N batch,
// C the cell's channels, H×W its input plane.

import NeuralNetwork
import TensorEngine

/// A DAG of two input nodes, `steps` intermediate nodes and one mixed op per edge i → j (i < j).
///
/// Node j = Σᵢ βⱼ,ᵢ · mixedopᵢⱼ(xᵢ), where βⱼ = softmax over node j's in-edge parameters (edge
/// normalisation); the output concatenates the last `multiplier` nodes.
public final class Cell: Module {
  /// Bring the two inputs to C channels: `preprocess0` is a FactorizedReduce when the previous
  /// cell reduced, a 1×1 ReLUConvBN otherwise; `preprocess1` is always a 1×1 ReLUConvBN. Both
  /// start with ReLU, which the ReLUConvBNs fuse into their convolutions.
  public let preprocess0: ReLUFirstLayer, preprocess1: ReLUFirstLayer
  /// One mixed op per edge, in the order (node 2: inputs 0, 1), (node 3: 0, 1, 2), …
  public let ops: ModuleList<MixedOp>
  /// Intermediate nodes, and how many of the last nodes the output concatenates.
  public let steps: Int, multiplier: Int
  /// Whether the cell halves H and W (stride 2 on the edges from its two inputs).
  public let reduction: Bool
  /// K of the cell's mixed ops.
  public let partialChannels: Int

  /// - Parameters:
  ///   - previousPrevious, previous: channels of the two inputs.
  ///   - channels: C, each node's channel count.
  ///   - reductionPrevious: whether the previous cell halved the resolution, in which case input 0
  ///     (from two cells back) is reduced by a FactorizedReduce.
  public init(
    steps: Int, multiplier: Int, previousPrevious: Int, previous: Int, channels: Int,
    reduction: Bool, reductionPrevious: Bool, partialChannels k: Int, space: SearchSpace,
    rng: inout SeededGenerator
  ) {
    preprocess0 =
      reductionPrevious
      ? FactorizedReduce(inChannels: previousPrevious, outChannels: channels, affine: false, rng: &rng)
      : ReLUConvBN(
        inChannels: previousPrevious, outChannels: channels, kernelSize: 1, stride: 1,
        padding: 0, affine: false, rng: &rng)
    preprocess1 = ReLUConvBN(
      inChannels: previous, outChannels: channels, kernelSize: 1, stride: 1,
      padding: 0, affine: false, rng: &rng)
    var edges: [MixedOp] = []
    for node in 0..<steps {
      for input in 0..<(2 + node) {
        let stride = reduction && input < 2 ? 2 : 1
        edges.append(MixedOp(channels: channels, stride: stride, partialChannels: k, space: space, rng: &rng))
      }
    }
    ops = ModuleList(edges)
    (self.steps, self.multiplier, self.reduction, self.partialChannels) = (steps, multiplier, reduction, k)
  }

  /// `preprocess0`, `preprocess1` and `_ops`, the official attribute names.
  public override var children: [(String, Module)] {
    [("preprocess0", preprocess0), ("preprocess1", preprocess1), ("_ops", ops)]
  }

  /// - Parameters:
  ///   - s0, s1: the outputs of the cells two back and one back, (N, ·, H, W). Their ReLUs are
  ///     never written: the 1×1 preprocessing convolutions rectify as they read.
  ///   - opWeights: (edges, primitives), softmax(α) row per edge.
  ///   - edgeWeights: (edges), the edge-normalised β weights.
  ///   - channelSubsets: per edge, the C/K channels of its input that go through its candidates
  ///     (``ChannelSampling/random``), or nil for the first C/K and a channel shuffle.
  /// - Returns: (N, multiplier·C, H/s, W/s).
  public func callAsFunction(
    _ s0: Tensor, _ s1: Tensor, opWeights: Tensor, edgeWeights: Tensor, channelSubsets: [[Int]]? = nil
  ) -> Tensor {
    var states = MemoryStats.attributing(to: "forward: preprocessing") { [preprocess0(s0), preprocess1(s1)] }
    // Each node's partial channels and their ReLU, shared by every edge that leaves it (with
    // random subsets, each edge has its own).
    var inputs: [EdgeInput] = []
    var edge = 0
    for _ in 0..<steps {
      let edges = edge..<edge + states.count
      let processed: [Tensor]
      if let channelSubsets {
        processed = zip(edges, states).map { e, h in
          ops[e].processed(EdgeInput(h, channels: channelSubsets[e]), weights: row(opWeights, e))
        }
      } else {
        for h in states.dropFirst(inputs.count) {
          inputs.append(
            MemoryStats.attributing(to: "forward: edge inputs") { EdgeInput(h, partialChannels: partialChannels) })
        }
        processed = zip(edges, inputs).map { e, input in ops[e].processed(input, weights: row(opWeights, e)) }
      }
      let sum = MemoryStats.attributing(to: "forward: node sums") { () -> Tensor in
        if partialChannels == 1 { return weightedSum(processed, weights: edgeWeights, indices: Array(edges)) }
        if let channelSubsets {
          return partialChannelSum(
            processed: processed, inputs: states, strides: edges.map { ops[$0].stride },
            weights: edgeWeights, indices: Array(edges), processedChannels: edges.map { channelSubsets[$0] })
        }
        // The bypass channels join inside the node sum, so no C-channel edge output is kept.
        return partialChannelSum(
          processed: processed, inputs: states, strides: edges.map { ops[$0].stride },
          weights: edgeWeights, indices: Array(edges), groups: partialChannels)
      }
      states.append(sum)
      edge += states.count - 1
    }
    return MemoryStats.attributing(to: "forward: cell outputs") { concatChannels(Array(states.suffix(multiplier))) }
  }
}

/// Row `i` of a matrix as a vector (differentiable).
func row(_ m: Tensor, _ i: Int) -> Tensor {
  reshape(slice(m, i..<i + 1), [m.shape[1]])
}
