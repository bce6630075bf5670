// Models as trees of modules whose parameters and buffers carry PyTorch's state_dict names
// (`cells.0._ops.3._ops.4.op.1.weight`), so checkpoints and golden fixtures line up name by name
// with the official code.

import TensorEngine

/// A node of a model: named parameters, buffers and child modules, like `torch.nn.Module`.
///
/// Subclasses override ``children``, ``localParameters`` and ``localBuffers``; the recursive
/// accessors walk the tree in registration order, as PyTorch does.
open class Module {
  /// Training mode (batch statistics) or evaluation mode (running statistics).
  public private(set) var isTraining = true

  /// A module in training mode.
  public init() {}

  /// The direct sub-modules with their attribute names.
  open var children: [(String, Module)] { [] }
  /// This module's own trainable tensors with their attribute names (e.g. `weight`, `bias`).
  open var localParameters: [(String, Tensor)] { [] }
  /// This module's own non-trainable state (e.g. `running_mean`).
  open var localBuffers: [(String, Tensor)] { [] }

  /// Every parameter of the tree with its dotted name, in registration order.
  public func namedParameters(prefix: String = "") -> [(String, Tensor)] {
    walk(prefix) { $0.localParameters }
  }

  /// Every buffer of the tree with its dotted name, in registration order.
  public func namedBuffers(prefix: String = "") -> [(String, Tensor)] {
    walk(prefix) { $0.localBuffers }
  }

  /// Every parameter of the tree, in registration order.
  public func parameters() -> [Tensor] { namedParameters().map { $0.1 } }

  /// This module and every module below it, in registration order (PyTorch's `modules()`).
  public func modules() -> [Module] { [self] + children.flatMap { $0.1.modules() } }

  /// Makes every batch norm of the tree normalise the batches of all ranks of `group` as one
  /// (PyTorch's `SyncBatchNorm.convert_sync_batchnorm`), or each process's own batch with `nil`.
  public func synchronizeBatchNorm(over group: ProcessGroup?) {
    for case let norm as BatchNorm2d in modules() { norm.group = group }
  }

  /// Parameters followed by buffers: what PyTorch's `state_dict()` holds.
  public func stateTensors(prefix: String = "") -> [(String, Tensor)] {
    namedParameters(prefix: prefix) + namedBuffers(prefix: prefix)
  }

  /// Switches the whole tree to training (`true`) or evaluation mode.
  public func train(_ on: Bool = true) {
    isTraining = on
    for (_, child) in children { child.train(on) }
  }

  /// Clears every parameter's gradient.
  public func zeroGrad() {
    for p in parameters() { p.zeroGrad() }
  }

  private func walk(_ prefix: String, _ local: (Module) -> [(String, Tensor)]) -> [(String, Tensor)] {
    var out = local(self).map { (prefix + $0.0, $0.1) }
    for (name, child) in children {
      out += child.walk(prefix + name + ".", local)
    }
    return out
  }
}

/// A module that maps one tensor to one tensor.
open class Layer: Module {
  /// Applies the layer to `x`.
  open func callAsFunction(_ x: Tensor) -> Tensor {
    fatalError("\(type(of: self)) must override callAsFunction(_:)")
  }
}

/// Layers applied in order, named `0`, `1`, … like `torch.nn.Sequential`.
public final class Sequential: Layer {
  /// The layers, first applied first.
  public let layers: [Layer]

  /// - Parameter layers: applied in order.
  public init(_ layers: [Layer]) {
    self.layers = layers
  }

  /// The layers named `0`, `1`, ….
  public override var children: [(String, Module)] {
    layers.enumerated().map { (String($0.offset), $0.element) }
  }

  /// The layers applied in order (see ``apply(_:to:)``).
  public override func callAsFunction(_ x: Tensor) -> Tensor { apply(layers[...], to: x) }

  /// Applies a run of this Sequential's layers in order; a batch norm directly followed by a
  /// ReLU runs as one fused op (``batchNormReLU(_:weight:bias:state:training:)``), and so does a
  /// depthwise convolution directly followed by a 1×1 one when ``Engine/recomputesDepthwiseOutputs``
  /// is set (``Conv2d/followedByPointwise(_:on:reluInput:)``, which keeps less for the backward
  /// pass), with a ReLU just before them too (no ReLU tensor is written). A ReLU directly
  /// followed by any other convolution runs as that convolution of the ReLU
  /// (``Conv2d/fusingReLU(_:)``), again without a ReLU tensor.
  public func apply(_ run: ArraySlice<Layer>, to x: Tensor) -> Tensor {
    var (out, i) = (x, run.startIndex)
    while i < run.endIndex {
      if let norm = run[i] as? BatchNorm2d, i + 1 < run.endIndex, run[i + 1] is ReLU {
        out = norm.followedByReLU(out)
        i += 2
      } else if let (fused, count) = depthwisePointwise(run[i...], on: out) {
        out = fused
        i += count
      } else if run[i] is ReLU, i + 1 < run.endIndex, let conv = run[i + 1] as? Conv2d,
        let fused = conv.fusingReLU(out)
      {
        out = fused
        i += 2
      } else {
        out = run[i](out)
        i += 1
      }
    }
    return out
  }

  /// The fused depthwise → 1×1 op at the start of `run`, with a leading ReLU when there is one,
  /// and the number of layers it replaces; nil when `run` does not start that way or
  /// ``Engine/recomputesDepthwiseOutputs`` is off.
  private func depthwisePointwise(_ run: ArraySlice<Layer>, on x: Tensor) -> (Tensor, Int)? {
    guard Engine.recomputesDepthwiseOutputs else { return nil }
    let start = run.startIndex
    let relu = run[start] is ReLU
    let first = start + (relu ? 1 : 0)
    guard first + 1 < run.endIndex, let depthwise = run[first] as? Conv2d, let pointwise = run[first + 1] as? Conv2d,
      let fused = depthwise.followedByPointwise(pointwise, on: x, reluInput: relu)
    else { return nil }
    return (fused, relu ? 3 : 2)
  }
}

/// A list of modules named `0`, `1`, … like `torch.nn.ModuleList`.
public final class ModuleList<Element: Module>: Module {
  /// The modules, in order.
  public let modules: [Element]

  /// A list of `modules`, named by position.
  public init(_ modules: [Element]) { self.modules = modules }

  /// The modules named `0`, `1`, ….
  public override var children: [(String, Module)] {
    modules.enumerated().map { (String($0.offset), $0.element) }
  }

  /// The module at position `i`.
  public subscript(i: Int) -> Element { modules[i] }
  /// The number of modules.
  public var count: Int { modules.count }
}
