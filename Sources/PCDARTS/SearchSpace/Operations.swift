// The candidate operations of the DARTS search space (DARTS, Liu et al. 2019, operations.py),
// with the official attribute names so that state names match PyTorch's state_dict.
// Legend: C channels, s stride; all take and return (N, C, H, W), H and W divided by s.

import NeuralNetwork
import TensorEngine

/// A candidate operation whose first step is ReLU of its input.
///
/// DARTS's separable and dilated convolutions (and FactorizedReduce) all begin with ReLU(x) of
/// the same edge input; a mixed op computes that ReLU once and hands it to each of them through
/// ``callAsFunction(afterReLU:)``, which saves three activations per edge in time and memory.
/// `callAsFunction(_:)` must equal `callAsFunction(afterReLU: relu(x))`.
public protocol ReLUFirstLayer: Layer {
  /// The operation applied to an input that has already gone through ReLU.
  func callAsFunction(afterReLU r: Tensor) -> Tensor
}

/// A candidate operation whose last step is a batch norm.
///
/// A mixed op hands such a candidate's output *before* that batch norm to
/// ``normalizedWeightedSum(_:norms:training:weights:indices:)``, which normalises, weights and
/// sums every candidate in one pass forward and one back, instead of writing each normalised
/// output and reading it again. Six of DARTS's seven non-zero candidates end this way.
/// `callAsFunction(_:)` must equal `outputNorm(beforeOutputNorm(input))`.
public protocol NormalizedOutputLayer: Layer {
  /// The final batch norm (fused only when it is not affine, as in every search cell).
  var outputNorm: BatchNorm2d { get }
  /// The operation up to its final batch norm, on an edge input (a ``ReLUFirstLayer`` reads
  /// its ``EdgeInput/activated``).
  func beforeOutputNorm(_ input: EdgeInput) -> Tensor
}

/// The layers after a leading ReLU of a Sequential.
private func applyAfterReLU(_ op: Sequential, _ r: Tensor) -> Tensor {
  op.apply(op.layers.dropFirst(), to: r)
}

/// The layers between the leading ReLU and the final batch norm of a Sequential.
private func applyBetweenReLUAndNorm(_ op: Sequential, _ r: Tensor) -> Tensor {
  op.apply(op.layers.dropFirst().dropLast(), to: r)
}

/// A Sequential's last layer, which the initialisers make a batch norm.
private func finalNorm(_ op: Sequential) -> BatchNorm2d {
  op.layers.last as! BatchNorm2d
}

/// ReLU → convolution → batch norm, as one `op` Sequential (names `op.1.weight`, `op.2.*`).
public final class ReLUConvBN: Layer, ReLUFirstLayer, NormalizedOutputLayer {
  /// Sequential(ReLU, Conv2d, BatchNorm2d).
  public let op: Sequential

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
    op = Sequential([
      ReLU(),
      Conv2d(inChannels: inChannels, outChannels: outChannels, kernelSize: kernelSize,
             stride: stride, padding: padding, rng: &rng),
      BatchNorm2d(channels: outChannels, affine: affine),
    ])
  }

  /// `op`, the official attribute name.
  public override var children: [(String, Module)] { [("op", op)] }
  /// (N, C, H, W) → (N, C_out, H_out, W_out), with H_out as in `init`.
  public override func callAsFunction(_ x: Tensor) -> Tensor { op(x) }
  /// The layers after the leading ReLU, applied to `r` = ReLU(x).
  public func callAsFunction(afterReLU r: Tensor) -> Tensor { applyAfterReLU(op, r) }
  /// The last batch norm of `op`.
  public var outputNorm: BatchNorm2d { finalNorm(op) }
  /// The layers between the leading ReLU and the last batch norm, on the input's ReLU.
  public func beforeOutputNorm(_ input: EdgeInput) -> Tensor { applyBetweenReLUAndNorm(op, input.activated!) }
}

/// Dilated depthwise-separable convolution: ReLU → depthwise K×K (dilation d) → 1×1 → BN.
public final class DilConv: Layer, ReLUFirstLayer, NormalizedOutputLayer {
  /// Sequential(ReLU, depthwise Conv2d, pointwise Conv2d, BatchNorm2d).
  public let op: Sequential

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
    op = Sequential([
      ReLU(),
      Conv2d(inChannels: inChannels, outChannels: inChannels, kernelSize: kernelSize, stride: stride,
             padding: padding, dilation: dilation, groups: inChannels, rng: &rng),
      Conv2d(inChannels: inChannels, outChannels: outChannels, kernelSize: 1, rng: &rng),
      BatchNorm2d(channels: outChannels, affine: affine),
    ])
  }

  /// `op`, the official attribute name.
  public override var children: [(String, Module)] { [("op", op)] }
  /// (N, C, H, W) → (N, C_out, H_out, W_out), with H_out as in `init`.
  public override func callAsFunction(_ x: Tensor) -> Tensor { op(x) }
  /// The layers after the leading ReLU, applied to `r` = ReLU(x).
  public func callAsFunction(afterReLU r: Tensor) -> Tensor { applyAfterReLU(op, r) }
  /// The last batch norm of `op`.
  public var outputNorm: BatchNorm2d { finalNorm(op) }
  /// The layers between the leading ReLU and the last batch norm, on the input's ReLU.
  public func beforeOutputNorm(_ input: EdgeInput) -> Tensor { applyBetweenReLUAndNorm(op, input.activated!) }
}

/// Separable convolution applied twice, as DARTS defines it: (ReLU → depthwise K×K stride s →
/// 1×1 → BN) then (ReLU → depthwise K×K → 1×1 → BN), one 8-layer `op` Sequential.
public final class SepConv: Layer, ReLUFirstLayer, NormalizedOutputLayer {
  /// The eight layers; the depthwise weights are `op.1` and `op.5`.
  public let op: Sequential

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
    op = Sequential([
      ReLU(),
      Conv2d(inChannels: c, outChannels: c, kernelSize: kernelSize, stride: stride, padding: padding,
             groups: c, rng: &rng),
      Conv2d(inChannels: c, outChannels: c, kernelSize: 1, rng: &rng),
      BatchNorm2d(channels: c, affine: affine),
      ReLU(),
      Conv2d(inChannels: c, outChannels: c, kernelSize: kernelSize, stride: 1, padding: padding,
             groups: c, rng: &rng),
      Conv2d(inChannels: c, outChannels: outChannels, kernelSize: 1, rng: &rng),
      BatchNorm2d(channels: outChannels, affine: affine),
    ])
  }

  /// `op`, the official attribute name.
  public override var children: [(String, Module)] { [("op", op)] }
  /// (N, C, H, W) → (N, C_out, H_out, W_out), with H_out as in `init`.
  public override func callAsFunction(_ x: Tensor) -> Tensor { op(x) }
  /// The layers after the leading ReLU, applied to `r` = ReLU(x).
  public func callAsFunction(afterReLU r: Tensor) -> Tensor { applyAfterReLU(op, r) }
  /// The last batch norm of `op`.
  public var outputNorm: BatchNorm2d { finalNorm(op) }
  /// The layers between the leading ReLU and the last batch norm, on the input's ReLU.
  public func beforeOutputNorm(_ input: EdgeInput) -> Tensor { applyBetweenReLUAndNorm(op, input.activated!) }
}

/// Halves the resolution without losing half the pixels: ReLU, then two 1×1 stride-2
/// convolutions, one on x and one on x[:, :, 1:, 1:], concatenated and batch-normalised.
public final class FactorizedReduce: Layer, ReLUFirstLayer, NormalizedOutputLayer {
  /// The two 1×1 stride-2 convolutions (`conv_1`, `conv_2`), each to C_out/2 channels.
  public let conv1: Conv2d, conv2: Conv2d
  /// Batch norm of the concatenation.
  public let bn: BatchNorm2d

  /// A reduction from C = `inChannels` to C_out = `outChannels` channels at half resolution.
  /// - Precondition: `outChannels` is even.
  public init(inChannels: Int, outChannels: Int, affine: Bool, rng: inout SeededGenerator) {
    precondition(outChannels % 2 == 0,
      "FactorizedReduce: output channels \(outChannels) must be even (two halves are concatenated)")
    conv1 = Conv2d(inChannels: inChannels, outChannels: outChannels / 2, kernelSize: 1, stride: 2, rng: &rng)
    conv2 = Conv2d(inChannels: inChannels, outChannels: outChannels / 2, kernelSize: 1, stride: 2, rng: &rng)
    bn = BatchNorm2d(channels: outChannels, affine: affine)
  }

  /// `conv_1`, `conv_2`, `bn`, the official attribute names.
  public override var children: [(String, Module)] { [("conv_1", conv1), ("conv_2", conv2), ("bn", bn)] }

  /// (N, C, H, W) → (N, C_out, ⌈H/2⌉, ⌈W/2⌉); H and W must be even.
  public override func callAsFunction(_ x: Tensor) -> Tensor { self(afterReLU: relu(x)) }

  /// The two convolutions and the batch norm, applied to `r` = ReLU(x).
  public func callAsFunction(afterReLU r: Tensor) -> Tensor { bn(convolutions(r)) }

  /// `bn`.
  public var outputNorm: BatchNorm2d { bn }
  /// The two convolutions on the input's ReLU, concatenated.
  public func beforeOutputNorm(_ input: EdgeInput) -> Tensor { convolutions(input.activated!) }

  private func convolutions(_ r: Tensor) -> Tensor {
    concatChannels([conv1(r), conv2(cropTopLeft(r, top: 1, left: 1))])
  }
}

/// A pooling layer followed by a non-affine batch norm: how DARTS's mixed op wraps its pool
/// candidates (`nn.Sequential(pool, nn.BatchNorm2d(C, affine=False))`, whose state names `0`
/// and `1` it keeps).
public final class PoolBN: Layer, NormalizedOutputLayer {
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
  /// `bn`.
  public var outputNorm: BatchNorm2d { bn }
  /// The pool of the edge input.
  public func beforeOutputNorm(_ input: EdgeInput) -> Tensor { pool(input.part) }
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
