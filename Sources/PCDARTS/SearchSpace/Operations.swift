// The candidate operations of the DARTS search space (DARTS, Liu et al. 2019, operations.py),
// with the official attribute names so that state names match PyTorch's state_dict.
// Legend: C channels, s stride; all take and return (N, C, H, W), H and W divided by s.

import NeuralNetwork
import TensorEngine

/// A layer whose first step is ReLU of its input, so that a caller that already has that ReLU
/// (a cell shares each cell output's ReLU between its two readers) can skip it.
///
/// `callAsFunction(_:)` must equal `callAsFunction(afterReLU: relu(x))`.
public protocol ReLUFirstLayer: Layer {
  /// The layer applied to an input that has already gone through ReLU.
  func callAsFunction(afterReLU r: Tensor) -> Tensor
  /// Whether `callAsFunction(_:)` fuses its leading ReLU into its first op, so that no ReLU
  /// tensor is written: a caller then passes the raw input rather than sharing a ReLU tensor.
  var fusesLeadingReLU: Bool { get }
}

extension ReLUFirstLayer {
  public var fusesLeadingReLU: Bool { false }
}

/// What a candidate operation offers the mixed op that runs it, so that work shared by several
/// candidates is done once: the ReLU of the edge input (``EdgeInput/activated``, computed once
/// per node for every candidate that reads it) and a final non-affine batch norm, which the mixed
/// op fuses into its weighted sum (``normalizedWeightedSum(_:norms:training:weights:indices:)``)
/// instead of writing each normalised output and reading it again.
///
/// A candidate that does not conform runs as `layer(input.part)`. The contract, checked by a test
/// for every built-in primitive: `output(on: EdgeInput(x, …))` finished by the mixed op (the norm
/// of ``CandidateOutput/beforeNorm(_:norm:)`` applied) equals `callAsFunction(x)`.
public protocol FusableCandidate: Layer {
  /// This operation on an edge input: its output, or its output before its final batch norm.
  func output(on input: EdgeInput) -> CandidateOutput
}

/// A candidate operation's result as a mixed op receives it.
public enum CandidateOutput {
  /// The operation's output, (N, C, H/s, W/s).
  case complete(Tensor)
  /// The operation's output before its final batch norm `norm`, which the mixed op applies:
  /// fused with the weighted sum when `norm` is not affine, as a plain layer call otherwise.
  case beforeNorm(Tensor, norm: BatchNorm2d)
}

/// The layers after a leading ReLU of a Sequential.
private func applyAfterReLU(_ op: Sequential, _ r: Tensor) -> Tensor {
  op.apply(op.layers.dropFirst(), to: r)
}

/// The layers between the leading ReLU and the final batch norm of a Sequential.
private func applyBetweenReLUAndNorm(_ op: Sequential, _ r: Tensor) -> Tensor {
  op.apply(op.layers.dropFirst().dropLast(), to: r)
}

/// The layers before the final batch norm of `layer`'s Sequential on an edge input: through the
/// ReLU fused into the first op when the layer fuses it (no ReLU tensor), else on the edge's
/// shared ReLU.
private func applyBeforeNorm(_ layer: ReLUFirstLayer, _ op: Sequential, _ input: EdgeInput) -> Tensor {
  layer.fusesLeadingReLU
    ? op.apply(op.layers.dropLast(), to: input.part) : applyBetweenReLUAndNorm(op, input.activated)
}

/// ReLU → convolution → batch norm, as one `op` Sequential (names `op.1.weight`, `op.2.*`).
/// The ReLU runs fused into the convolution (``Conv2d/fusingReLU(_:)``) unless that is depthwise.
public final class ReLUConvBN: Layer, ReLUFirstLayer, FusableCandidate {
  /// Sequential(ReLU, Conv2d, BatchNorm2d).
  public let op: Sequential
  /// The last layer of `op`.
  private let outputNorm: BatchNorm2d
  /// Whether `op` runs its ReLU inside the convolution (every convolution but a depthwise one).
  public let fusesLeadingReLU: Bool

  /// - Parameters:
  ///   - inChannels, outChannels: C and C_out.
  ///   - kernelSize, stride, padding: of the convolution; output (N, C_out, H_out, W_out) with
  ///     H_out = ⌊(H + 2·padding − kernelSize)/stride⌋ + 1.
  ///   - affine: whether the batch norm learns a scale and shift (never in search cells).
  ///   - rng: draws the convolution's initial weights.
  public init(
    inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int, affine: Bool,
    rng: inout SeededGenerator
  ) {
    outputNorm = BatchNorm2d(channels: outChannels, affine: affine)
    let conv = Conv2d(
      inChannels: inChannels, outChannels: outChannels, kernelSize: kernelSize,
      stride: stride, padding: padding, rng: &rng)
    fusesLeadingReLU = !conv.isDepthwise
    op = Sequential([ReLU(), conv, outputNorm])
  }

  /// `op`, the official attribute name.
  public override var children: [(String, Module)] { [("op", op)] }
  /// (N, C, H, W) → (N, C_out, H_out, W_out), with H_out as in `init`.
  public override func callAsFunction(_ x: Tensor) -> Tensor { op(x) }
  /// The layers after the leading ReLU, applied to `r` = ReLU(x).
  public func callAsFunction(afterReLU r: Tensor) -> Tensor { applyAfterReLU(op, r) }
  /// The layers before the last batch norm, the ReLU fused when ``fusesLeadingReLU``.
  public func output(on input: EdgeInput) -> CandidateOutput {
    .beforeNorm(applyBeforeNorm(self, op, input), norm: outputNorm)
  }
}

/// Dilated depthwise-separable convolution: ReLU → depthwise K×K (dilation d) → 1×1 → BN.
public final class DilConv: Layer, ReLUFirstLayer, FusableCandidate {
  /// Sequential(ReLU, depthwise Conv2d, pointwise Conv2d, BatchNorm2d).
  public let op: Sequential
  /// The last layer of `op`.
  private let outputNorm: BatchNorm2d

  /// - Parameters:
  ///   - inChannels, outChannels: C and C_out.
  ///   - kernelSize, stride, padding, dilation: of the depthwise convolution; output
  ///     H_out = ⌊(H + 2·padding − dilation·(kernelSize − 1) − 1)/stride⌋ + 1.
  ///   - affine: whether the batch norm learns a scale and shift (never in search cells).
  ///   - rng: draws the convolutions' initial weights.
  public init(
    inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int, dilation: Int,
    affine: Bool, rng: inout SeededGenerator
  ) {
    outputNorm = BatchNorm2d(channels: outChannels, affine: affine)
    op = Sequential([
      ReLU(),
      Conv2d(
        inChannels: inChannels, outChannels: inChannels, kernelSize: kernelSize, stride: stride,
        padding: padding, dilation: dilation, groups: inChannels, rng: &rng),
      Conv2d(inChannels: inChannels, outChannels: outChannels, kernelSize: 1, rng: &rng),
      outputNorm,
    ])
  }

  /// `op`, the official attribute name.
  public override var children: [(String, Module)] { [("op", op)] }
  /// (N, C, H, W) → (N, C_out, H_out, W_out), with H_out as in `init`.
  public override func callAsFunction(_ x: Tensor) -> Tensor { op(x) }
  /// The layers after the leading ReLU, applied to `r` = ReLU(x).
  public func callAsFunction(afterReLU r: Tensor) -> Tensor { applyAfterReLU(op, r) }
  /// Whether `op` runs its ReLU → depthwise → 1×1 start as one op (``Sequential/apply(_:to:)``).
  public var fusesLeadingReLU: Bool { Engine.recomputesDepthwiseOutputs }
  /// The layers before the last batch norm, the ReLU fused when ``fusesLeadingReLU``.
  public func output(on input: EdgeInput) -> CandidateOutput {
    .beforeNorm(applyBeforeNorm(self, op, input), norm: outputNorm)
  }
}

/// Separable convolution applied twice, as DARTS defines it: (ReLU → depthwise K×K stride s →
/// 1×1 → BN) then (ReLU → depthwise K×K → 1×1 → BN), one 8-layer `op` Sequential.
public final class SepConv: Layer, ReLUFirstLayer, FusableCandidate {
  /// The eight layers; the depthwise weights are `op.1` and `op.5`.
  public let op: Sequential
  /// The last layer of `op`.
  private let outputNorm: BatchNorm2d

  /// - Parameters:
  ///   - inChannels, outChannels: C and C_out (the first half keeps C channels).
  ///   - kernelSize, stride, padding: of the first depthwise convolution (the second has
  ///     stride 1); output H_out = ⌊(H + 2·padding − kernelSize)/stride⌋ + 1.
  ///   - affine: whether the batch norms learn a scale and shift (never in search cells).
  ///   - rng: draws the convolutions' initial weights.
  public init(
    inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int, affine: Bool,
    rng: inout SeededGenerator
  ) {
    let c = inChannels
    outputNorm = BatchNorm2d(channels: outChannels, affine: affine)
    op = Sequential([
      ReLU(),
      Conv2d(
        inChannels: c, outChannels: c, kernelSize: kernelSize, stride: stride, padding: padding,
        groups: c, rng: &rng),
      Conv2d(inChannels: c, outChannels: c, kernelSize: 1, rng: &rng),
      BatchNorm2d(channels: c, affine: affine),
      ReLU(),
      Conv2d(
        inChannels: c, outChannels: c, kernelSize: kernelSize, stride: 1, padding: padding,
        groups: c, rng: &rng),
      Conv2d(inChannels: c, outChannels: outChannels, kernelSize: 1, rng: &rng),
      outputNorm,
    ])
  }

  /// `op`, the official attribute name.
  public override var children: [(String, Module)] { [("op", op)] }
  /// (N, C, H, W) → (N, C_out, H_out, W_out), with H_out as in `init`.
  public override func callAsFunction(_ x: Tensor) -> Tensor { op(x) }
  /// The layers after the leading ReLU, applied to `r` = ReLU(x).
  public func callAsFunction(afterReLU r: Tensor) -> Tensor { applyAfterReLU(op, r) }
  /// Whether `op` runs its ReLU → depthwise → 1×1 start as one op (``Sequential/apply(_:to:)``).
  public var fusesLeadingReLU: Bool { Engine.recomputesDepthwiseOutputs }
  /// The layers before the last batch norm, the ReLU fused when ``fusesLeadingReLU``.
  public func output(on input: EdgeInput) -> CandidateOutput {
    .beforeNorm(applyBeforeNorm(self, op, input), norm: outputNorm)
  }
}

/// Halves the resolution without losing half the pixels: ReLU, then two 1×1 stride-2
/// convolutions, one on x and one on x[:, :, 1:, 1:], concatenated and batch-normalised.
public final class FactorizedReduce: Layer, ReLUFirstLayer, FusableCandidate {
  /// The two 1×1 stride-2 convolutions (`conv_1`, `conv_2`), each to C_out/2 channels.
  public let conv1: Conv2d, conv2: Conv2d
  /// Batch norm of the concatenation.
  public let bn: BatchNorm2d

  /// A reduction from C = `inChannels` to C_out = `outChannels` channels at half resolution.
  /// - Precondition: `outChannels` is even.
  public init(inChannels: Int, outChannels: Int, affine: Bool, rng: inout SeededGenerator) {
    precondition(
      outChannels % 2 == 0,
      "FactorizedReduce: output channels \(outChannels) must be even (two halves are concatenated)")
    conv1 = Conv2d(inChannels: inChannels, outChannels: outChannels / 2, kernelSize: 1, stride: 2, rng: &rng)
    conv2 = Conv2d(inChannels: inChannels, outChannels: outChannels / 2, kernelSize: 1, stride: 2, rng: &rng)
    bn = BatchNorm2d(channels: outChannels, affine: affine)
  }

  /// `conv_1`, `conv_2`, `bn`, the official attribute names.
  public override var children: [(String, Module)] { [("conv_1", conv1), ("conv_2", conv2), ("bn", bn)] }

  /// (N, C, H, W) → (N, C_out, ⌈H/2⌉, ⌈W/2⌉); H and W must be even. The ReLU runs inside the
  /// two convolutions (``Conv2d/fusingReLU(_:)``): no ReLU tensor is written.
  public override func callAsFunction(_ x: Tensor) -> Tensor { bn(convolutions(relu: x)) }

  /// The two convolutions and the batch norm, applied to `r` = ReLU(x).
  public func callAsFunction(afterReLU r: Tensor) -> Tensor { bn(convolutions(r)) }

  /// Its ReLU fused into the convolutions, so callers pass the raw input.
  public var fusesLeadingReLU: Bool { true }

  /// The two convolutions on the input's ReLU, concatenated, before `bn`.
  public func output(on input: EdgeInput) -> CandidateOutput {
    .beforeNorm(convolutions(relu: input.part), norm: bn)
  }

  /// conv_1(r) and conv_2(r[:, :, 1:, 1:]), concatenated.
  private func convolutions(_ r: Tensor) -> Tensor {
    concatChannels([conv1(r), conv2(cropTopLeft(r, top: 1, left: 1))])
  }

  /// The same of relu(x), each convolution rectifying as it reads (relu and the crop commute).
  private func convolutions(relu x: Tensor) -> Tensor {
    func rectified(_ conv: Conv2d, _ x: Tensor) -> Tensor { conv.fusingReLU(x) ?? conv(relu(x)) }
    return concatChannels([rectified(conv1, x), rectified(conv2, cropTopLeft(x, top: 1, left: 1))])
  }
}

/// A pooling layer followed by a non-affine batch norm: how DARTS's mixed op wraps its pool
/// candidates (`nn.Sequential(pool, nn.BatchNorm2d(C, affine=False))`, whose state names `0`
/// and `1` it keeps).
public final class PoolBN: Layer, FusableCandidate {
  /// The max or average pool (`0`).
  public let pool: Layer
  /// The non-affine batch norm (`1`).
  public let bn: BatchNorm2d

  /// - Parameters:
  ///   - pool: a pooling layer, (N, C, H, W) → (N, C, H_out, W_out).
  ///   - channels: C.
  public init(_ pool: Layer, channels: Int) {
    self.pool = pool
    bn = BatchNorm2d(channels: channels, affine: false)
  }

  /// `0` and `1`, the names of the official Sequential.
  public override var children: [(String, Module)] { [("0", pool), ("1", bn)] }
  /// (N, C, H, W) → (N, C, H_out, W_out).
  public override func callAsFunction(_ x: Tensor) -> Tensor { bn(pool(x)) }
  /// The pool of the edge input, before `bn`.
  public func output(on input: EdgeInput) -> CandidateOutput { .beforeNorm(pool(input.part), norm: bn) }
}

/// DARTS's `none`: zeros of the output shape. Mixed ops skip it (it adds w·0 to the sum and
/// its weight's gradient ⟨g, 0⟩ = 0), but it stays a layer so that it can be used on its own.
public final class Zero: Layer {
  /// 1, or 2 to halve H and W.
  public let stride: Int
  /// A zero operation with stride 1 or 2.
  public init(stride: Int) { self.stride = stride }
  /// Zeros of shape (N, C, ⌈H/s⌉, ⌈W/s⌉) (no graph: the output is constant).
  public override func callAsFunction(_ x: Tensor) -> Tensor { zerosLike(x, stride: stride) }
}
