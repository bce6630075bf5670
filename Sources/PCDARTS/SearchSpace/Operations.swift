// The candidate operations of the DARTS search space (DARTS, Liu et al. 2019, operations.py),
// with the official attribute names so that state names match PyTorch's state_dict.
// Legend: C channels, s stride; all take and return (N, C, H, W), H and W divided by s.

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

/// The layers after a leading ReLU of a Sequential.
private func applyAfterReLU(_ op: Sequential, _ r: Tensor) -> Tensor {
  op.layers.dropFirst().reduce(r) { $1($0) }
}

/// ReLU → convolution → batch norm, as one `op` Sequential (names `op.1.weight`, `op.2.*`).
public final class ReLUConvBN: Layer, ReLUFirstLayer {
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
}

/// Dilated depthwise-separable convolution: ReLU → depthwise K×K (dilation d) → 1×1 → BN.
public final class DilConv: Layer, ReLUFirstLayer {
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
}

/// Separable convolution applied twice, as DARTS defines it: (ReLU → depthwise K×K stride s →
/// 1×1 → BN) then (ReLU → depthwise K×K → 1×1 → BN), one 8-layer `op` Sequential.
public final class SepConv: Layer, ReLUFirstLayer {
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
}

/// Halves the resolution without losing half the pixels: ReLU, then two 1×1 stride-2
/// convolutions, one on x and one on x[:, :, 1:, 1:], concatenated and batch-normalised.
public final class FactorizedReduce: Layer, ReLUFirstLayer {
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
  public func callAsFunction(afterReLU r: Tensor) -> Tensor {
    bn(concatChannels([conv1(r), conv2(cropTopLeft(r, top: 1, left: 1))]))
  }
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
