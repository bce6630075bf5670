// Reverse-mode automatic differentiation over a dynamic (define-by-run) graph.
//
// Each op that has an input requiring gradients attaches a `GradNode` to its output: the inputs
// and a closure that maps the output's gradient to the inputs' gradients. The closure captures
// exactly the activations its backward needs. `backward()` walks the graph in reverse
// topological order and drops every node as soon as it has run, so saved activations are freed
// the moment they are no longer needed (micrograd's idea, with memory discipline).

import Foundation
import _CKernels

/// The record of one operation in the graph.
///
/// A node points at its inputs' nodes (or, for leaves, at the leaf tensors), never at
/// intermediate tensors: an activation stays alive only if some backward closure captured it
/// because it needs its values. The concatenation feeding a channel shuffle, for example, is
/// freed as soon as the shuffle has read it.
final class GradNode {
  /// Where each differentiable input's gradient goes, in the order `backward` returns them.
  var edges: [GradEdge]
  /// Maps the gradient of the output to one gradient per edge (`nil` = no contribution).
  var backward: ((Tensor) -> [Tensor?])?
  /// The gradient flowing into the output during a backward pass. It belongs to the graph alone
  /// (`backward(gradient:)` copies any buffer it would hand to two places), which is what lets
  /// ``GradientAccumulator`` give it to an op to add into.
  var pendingGrad: Tensor?
  /// The output's shape, to check incoming gradients.
  let shape: [Int]

  init(edges: [GradEdge], shape: [Int], backward: @escaping (Tensor) -> [Tensor?]) {
    self.edges = edges
    self.shape = shape
    self.backward = backward
  }

  /// Adds `g` to the pending gradient.
  func accumulate(_ g: Tensor) {
    precondition(g.shape == shape, "autograd: gradient of shape \(g.shape) for an output of shape \(shape)")
    if let existing = pendingGrad { addInPlace(existing, g) } else { pendingGrad = g }
  }
}

/// The destination of one input's gradient.
enum GradEdge {
  /// An op's output: the gradient continues through its node.
  case node(GradNode)
  /// A leaf: the gradient accumulates in its `grad`.
  case leaf(Tensor)
}

/// Whether operations record the graph: on by default, off inside ``withNoGrad(_:)``.
///
/// The mode belongs to the calling thread, as PyTorch's does: a `withNoGrad` on one thread (an
/// evaluation, say) does not stop another thread from recording.
public enum GradMode {
  /// True while operations on the calling thread record the graph for ``Tensor/backward()``.
  public static var isEnabled: Bool { pcd_grad_enabled() != 0 }
}

/// Runs `body` without recording the graph on the calling thread (PyTorch's `torch.no_grad()`):
/// for evaluation and for in-place parameter updates. No activation is saved for a backward pass.
public func withNoGrad<T>(_ body: () throws -> T) rethrows -> T {
  let previous = pcd_set_grad_enabled(0)
  defer { pcd_set_grad_enabled(previous) }
  return try body()
}

/// Attaches the graph record to an op's output when any of `inputs` requires gradients: the
/// one way an op, in this module or a client's, joins autograd.
///
/// `backward` is called once with the output's gradient and returns one gradient per element of
/// `inputs` (the same order, including inputs that do not require gradients, whose entries are
/// ignored), or `nil` for an input that gets no contribution or whose contribution the op has
/// already added through its ``GradientAccumulator``. It is only built when needed, so ops pay
/// nothing for the graph in no-grad mode. The closure must capture only what its gradient
/// formula reads: every captured tensor stays alive until the backward pass has run.
///
/// - Parameters:
///   - output: the op's result, computed without autograd.
///   - inputs: the op's tensor inputs.
///   - backward: builds the map from the output's gradient to the inputs' gradients.
/// - Returns: `output`, now recorded when some input requires gradients.
@inline(__always)
public func record(
  _ output: Tensor, inputs: [Tensor], backward: @autoclosure () -> ((Tensor) -> [Tensor?])
) -> Tensor {
  guard GradMode.isEnabled, inputs.contains(where: { $0.requiresGrad }) else { return output }
  output.requiresGrad = true
  let body = backward()
  let tracked = inputs.map { $0.requiresGrad }
  let edges = inputs.filter { $0.requiresGrad }.map { x -> GradEdge in
    x.node.map { .node($0) } ?? .leaf(x)
  }
  output.node = GradNode(edges: edges, shape: output.shape) { g in
    let all = body(g)
    precondition(all.count == tracked.count, "autograd: backward returned \(all.count) gradients")
    return zip(all, tracked).compactMap { $1 ? .some($0) : nil }
  }
  return output
}

extension Tensor {
  /// Computes the gradient of this scalar with respect to every leaf that requires gradients
  /// and adds it to the leaf's ``grad``. The graph is freed as it is walked.
  ///
  /// - Precondition: the tensor has one element and requires gradients.
  public func backward() {
    precondition(count == 1, "backward: needs a scalar, got a tensor of shape \(shape)")
    precondition(requiresGrad, "backward: the tensor does not require gradients")
    backward(gradient: Tensor(repeating: 1, shape: shape))
  }

  /// Backpropagates `gradient` (the gradient of some scalar with respect to this tensor).
  /// - Precondition: `gradient` has this tensor's shape.
  public func backward(gradient: Tensor) {
    checkSameShape(self, gradient, "backward")
    guard let root = node else {
      if requiresGrad { accumulateLeafGradient(gradient.copy()) }
      return
    }
    let order = topologicalOrder(from: root)
    root.accumulate(gradient.copy())
    for current in order.reversed() {
      let g = current.pendingGrad
      let body = current.backward
      let edges = current.edges
      // Drop the closure (and the activations it captured) and the links before the inputs'
      // updates run: each saved tensor dies as soon as its last user is done.
      current.pendingGrad = nil
      current.backward = nil
      current.edges = []
      guard let g, let body else { continue }
      let grads = MemoryStats.attributing(to: "backward: gradients") { withNoGrad { body(g) } }
      // Gradients are accumulated in place later, so one buffer must not land in two places
      // (an add hands the same gradient to both of its inputs).
      var owned = Set<ObjectIdentifier>()
      for (edge, grad) in zip(edges, grads) {
        guard let grad else { continue }
        let unique = owned.insert(ObjectIdentifier(grad.storage)).inserted
        let value = unique ? grad : grad.copy()
        switch edge {
        case .node(let n): n.accumulate(value)
        case .leaf(let t): t.accumulateLeafGradient(value)
        }
      }
    }
    node = nil
  }

  private func accumulateLeafGradient(_ g: Tensor) {
    checkSameShape(self, g, "gradient accumulation")
    if let existing = grad { addInPlace(existing, g) } else { grad = g.detached() }
  }

  /// Nodes reachable from `root`, every node after all of its inputs' nodes.
  private func topologicalOrder(from root: GradNode) -> [GradNode] {
    var order: [GradNode] = []
    var visited = Set<ObjectIdentifier>()
    // Iterative DFS: a deep network would overflow the stack with recursion.
    var stack: [(GradNode, Bool)] = [(root, false)]
    while let (current, expanded) = stack.popLast() {
      if expanded {
        order.append(current)
        continue
      }
      guard visited.insert(ObjectIdentifier(current)).inserted else { continue }
      stack.append((current, true))
      for case .node(let input) in current.edges where !visited.contains(ObjectIdentifier(input)) {
        stack.append((input, false))
      }
    }
    return order
  }

  /// Sets ``grad`` to `nil`.
  public func zeroGrad() { grad = nil }
}

/// Where one input's gradient accumulates during a backward pass, for an op whose gradient
/// covers only part of that input (some of its channels, say): instead of returning a zero-filled
/// full-size gradient for the graph to add, the op adds its part into the input's gradient in
/// place and returns `nil` for that input from its backward closure.
///
/// Take the accumulator when recording (``Tensor/gradientAccumulator``) and call ``buffer()``
/// inside the backward closure. It holds the input's graph record, not the input's values, so
/// capturing it keeps no activation alive.
public struct GradientAccumulator {
  fileprivate let edge: GradEdge
  /// The shape of the input, and so of its gradient.
  public let shape: [Int]

  /// The input's gradient buffer, to add this op's contribution into in place.
  ///
  /// Call it only inside a backward closure, at most once per input and call, and return `nil`
  /// for the input. The buffer belongs to the graph: read and write it only during that call.
  ///
  /// - Returns: `buffer`, of ``shape``; `isFresh` is false when it already holds the gradient
  ///   from other readers of the input (add into it), true when this op's contribution is the
  ///   first: the elements are then undefined, and the op must write every one of them (its part,
  ///   and zeros elsewhere).
  public func buffer() -> (buffer: Tensor, isFresh: Bool) {
    switch edge {
    case .node(let node):
      if let pending = node.pendingGrad { return (pending, false) }
      let fresh = Tensor.uninitialized(shape)
      node.pendingGrad = fresh
      return (fresh, true)
    case .leaf(let leaf):
      if let grad = leaf.grad { return (grad, false) }
      let fresh = Tensor.uninitialized(shape)
      leaf.grad = fresh
      return (fresh, true)
    }
  }
}

extension Tensor {
  /// The handle through which an op's backward adds into part of this tensor's gradient (see
  /// ``GradientAccumulator``), or `nil` when the tensor does not require gradients.
  public var gradientAccumulator: GradientAccumulator? {
    guard requiresGrad else { return nil }
    return GradientAccumulator(edge: node.map { .node($0) } ?? .leaf(self), shape: shape)
  }
}

/// `a += b`, element-wise, in place (no graph); counted as the op `countedAs` (autograd adding a
/// second reader's gradient into the first's, unless an op's forward pass calls it).
func addInPlace(_ a: Tensor, _ b: Tensor, countedAs name: String = "gradient accumulation") {
  checkSameShape(a, b, "addInPlace")
  let n = a.count
  let pa = a.pointer
  let pb = b.pointer
  OperationCounter.add(name, flops: n, elements: 3 * n)
  parallelChunks(n, minChunk: 1 << 16) { lo, hi in
    axpy(hi - lo, 1, pb + lo, pa + lo)
  }
}
