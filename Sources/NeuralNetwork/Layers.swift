// The standard layers, with PyTorch's default initialisation so that a fresh model is
// distributed like a fresh PyTorch model.

import TensorEngine

/// 2-D convolution with a (O, C/groups, K, K) weight, like `torch.nn.Conv2d`.
///
/// Initialised as PyTorch does (`kaiming_uniform_(a=√5)`): weight and bias ~ U(−b, b) with
/// b = 1/√(C/groups · K²).
public final class Conv2d: Layer {
  /// (O, C/groups, K, K).
  public let weight: Tensor
  /// (O), or `nil`.
  public let bias: Tensor?
  /// The convolution's geometry (see ``conv2d(_:weight:bias:stride:padding:dilation:groups:)``).
  public let stride: Int, padding: Int, dilation: Int, groups: Int

  /// A convolution from `inChannels` to `outChannels` with a square `kernelSize` kernel.
  /// - Precondition: `groups` divides both channel counts.
  public init(
    inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
    dilation: Int = 1, groups: Int = 1, bias: Bool = false, rng: inout SeededGenerator
  ) {
    precondition(
      groups >= 1 && inChannels % groups == 0 && outChannels % groups == 0,
      "Conv2d: channels \(inChannels) → \(outChannels) must be divisible by groups \(groups)")
    let fanIn = inChannels / groups * kernelSize * kernelSize
    let bound = 1 / Float(fanIn).squareRoot()
    weight = Tensor.randomUniform(
      [outChannels, inChannels / groups, kernelSize, kernelSize], bound: bound, using: &rng,
      requiresGrad: true)
    self.bias = bias ? Tensor.randomUniform([outChannels], bound: bound, using: &rng, requiresGrad: true) : nil
    (self.stride, self.padding, self.dilation, self.groups) = (stride, padding, dilation, groups)
  }

  /// `weight`, then `bias` when present.
  public override var localParameters: [(String, Tensor)] {
    [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
  }

  /// (N, C, H, W) → (N, O, Ho, Wo).
  public override func callAsFunction(_ x: Tensor) -> Tensor {
    conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
  }

  /// Whether this is a depthwise convolution (groups = input channels = output channels), which
  /// ``conv2d(_:weight:bias:stride:padding:dilation:groups:reluInput:)`` runs as its own kernel.
  public var isDepthwise: Bool {
    let channels = weight.shape[1] * groups
    return groups == channels && weight.shape[0] == channels
  }

  /// `self(relu(x))` with the ReLU fused into the convolution
  /// (``conv2d(_:weight:bias:stride:padding:dilation:groups:reluInput:)``): no ReLU tensor is
  /// written, and values and gradients are those of the two layers. `nil` for a depthwise
  /// convolution, whose ReLU fuses only together with a following 1×1 one
  /// (``followedByPointwise(_:on:reluInput:)``).
  public func fusingReLU(_ x: Tensor) -> Tensor? {
    guard !isDepthwise else { return nil }
    return conv2d(
      x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups,
      reluInput: true)
  }

  /// `pointwise(self(x))` as one op that recomputes this layer's output in its backward pass
  /// instead of keeping it (``depthwisePointwiseConv2d(_:depthwiseWeight:pointwiseWeight:stride:padding:dilation:reluInput:)``),
  /// when this layer is a depthwise convolution and `pointwise` a 1×1 one, both without bias;
  /// `nil` otherwise. Values and gradients are the two layers', bit for bit. With `reluInput`,
  /// `pointwise(self(relu(x)))`, the ReLU fused in too.
  public func followedByPointwise(_ pointwise: Conv2d, on x: Tensor, reluInput: Bool = false) -> Tensor? {
    let c = weight.shape[0]
    guard bias == nil, pointwise.bias == nil, groups == c, weight.shape[1] == 1, x.rank == 4, x.shape[1] == c,
      pointwise.groups == 1, pointwise.stride == 1, pointwise.padding == 0, pointwise.weight.shape[1] == c,
      pointwise.weight.shape[2] == 1, pointwise.weight.shape[3] == 1
    else { return nil }
    return depthwisePointwiseConv2d(
      x, depthwiseWeight: weight, pointwiseWeight: pointwise.weight, stride: stride, padding: padding,
      dilation: dilation, reluInput: reluInput)
  }
}

/// Batch normalisation over (N, H, W), like `torch.nn.BatchNorm2d` (momentum 0.1, eps 1e-5).
public final class BatchNorm2d: Layer {
  /// (C) scale and shift, or `nil` when not affine.
  public let weight: Tensor?, bias: Tensor?
  /// (C) running statistics, updated in training mode.
  public let runningMean: Tensor, runningVar: Tensor
  /// Batches seen in training mode (a scalar; PyTorch's `num_batches_tracked`).
  public let numBatchesTracked: Tensor
  /// The weight of each new batch in the running statistics.
  public var momentum: Float = 0.1
  /// Added to the variance before the square root.
  public var eps: Float = 1e-5
  /// The ranks whose batches this layer normalises as one in training (`torch.nn.SyncBatchNorm`),
  /// or `nil` for this process's batch alone; ``Module/synchronizeBatchNorm(over:)`` sets it.
  public var group: ProcessGroup?

  /// - Parameters:
  ///   - channels: C.
  ///   - affine: whether the layer learns a scale (init 1) and shift (init 0).
  public init(channels: Int, affine: Bool = true) {
    weight = affine ? Tensor(repeating: 1, shape: [channels], requiresGrad: true) : nil
    bias = affine ? Tensor(zeros: [channels], requiresGrad: true) : nil
    runningMean = Tensor(zeros: [channels])
    runningVar = Tensor(repeating: 1, shape: [channels])
    numBatchesTracked = Tensor(zeros: [])
  }

  /// `weight` and `bias` when affine, else nothing.
  public override var localParameters: [(String, Tensor)] {
    guard let weight, let bias else { return [] }
    return [("weight", weight), ("bias", bias)]
  }

  /// PyTorch's buffer names: `running_mean`, `running_var`, `num_batches_tracked`.
  public override var localBuffers: [(String, Tensor)] {
    [("running_mean", runningMean), ("running_var", runningVar), ("num_batches_tracked", numBatchesTracked)]
  }

  /// Normalises (N, C, H, W) with batch statistics in training mode (updating the running
  /// ones), with the running statistics in evaluation mode.
  public override func callAsFunction(_ x: Tensor) -> Tensor {
    batchNorm2d(x, weight: weight, bias: bias, state: statisticsForForward(), training: isTraining)
  }

  /// ReLU of this layer's output, as one fused op (``batchNormReLU(_:weight:bias:state:training:)``).
  public func followedByReLU(_ x: Tensor) -> Tensor {
    batchNormReLU(x, weight: weight, bias: bias, state: statisticsForForward(), training: isTraining)
  }

  /// The statistics one forward pass normalises with, for ops that fuse this layer's
  /// normalisation into their own (``normalizedWeightedSum(_:norms:training:weights:indices:)``).
  /// Like a call of the layer, it counts the batch in training mode.
  public func statisticsForForward() -> BatchNormState {
    if isTraining { numBatchesTracked.pointer[0] += 1 }
    return BatchNormState(
      runningMean: runningMean, runningVar: runningVar, momentum: momentum, eps: eps, group: group)
  }
}

/// x · weightᵀ + bias, like `torch.nn.Linear`; initialised U(−b, b) with b = 1/√inFeatures.
public final class Linear: Layer {
  /// (O, F).
  public let weight: Tensor
  /// (O).
  public let bias: Tensor

  /// A layer from `inFeatures` to `outFeatures`, initialised from `rng`.
  public init(inFeatures: Int, outFeatures: Int, rng: inout SeededGenerator) {
    let bound = 1 / Float(inFeatures).squareRoot()
    weight = Tensor.randomUniform([outFeatures, inFeatures], bound: bound, using: &rng, requiresGrad: true)
    bias = Tensor.randomUniform([outFeatures], bound: bound, using: &rng, requiresGrad: true)
  }

  /// `weight`, `bias`.
  public override var localParameters: [(String, Tensor)] { [("weight", weight), ("bias", bias)] }

  /// (N, F) → (N, O).
  public override func callAsFunction(_ x: Tensor) -> Tensor { linear(x, weight: weight, bias: bias) }
}

/// max(x, 0).
public final class ReLU: Layer {
  /// A ReLU layer (no parameters).
  public override init() {}
  /// max(x, 0).
  public override func callAsFunction(_ x: Tensor) -> Tensor { relu(x) }
}

/// The input unchanged.
public final class Identity: Layer {
  /// An identity layer (no parameters).
  public override init() {}
  /// `x` itself.
  public override func callAsFunction(_ x: Tensor) -> Tensor { x }
}

/// Max pooling over K×K windows (see ``maxPool2d(_:kernel:stride:padding:)``).
public final class MaxPool2d: Layer {
  /// The window's size, step and zero padding.
  public let kernel: Int, stride: Int, padding: Int
  /// A K×K max pool with the given stride and padding.
  public init(kernel: Int, stride: Int, padding: Int = 0) {
    (self.kernel, self.stride, self.padding) = (kernel, stride, padding)
  }
  /// (N, C, H, W) → (N, C, Ho, Wo).
  public override func callAsFunction(_ x: Tensor) -> Tensor {
    maxPool2d(x, kernel: kernel, stride: stride, padding: padding)
  }
}

/// Average pooling over K×K windows (see ``avgPool2d(_:kernel:stride:padding:countIncludePad:)``).
public final class AvgPool2d: Layer {
  /// The window's size, step and padding, and whether padding counts in the divisor.
  public let kernel: Int, stride: Int, padding: Int, countIncludePad: Bool
  /// A K×K average pool (DARTS: `countIncludePad` false).
  public init(kernel: Int, stride: Int, padding: Int = 0, countIncludePad: Bool = false) {
    (self.kernel, self.stride, self.padding, self.countIncludePad) = (kernel, stride, padding, countIncludePad)
  }
  /// (N, C, H, W) → (N, C, Ho, Wo).
  public override func callAsFunction(_ x: Tensor) -> Tensor {
    avgPool2d(x, kernel: kernel, stride: stride, padding: padding, countIncludePad: countIncludePad)
  }
}
