// Reverse-mode automatic differentiation over a dynamic (define-by-run) graph.
//
// Each op that has an input requiring gradients attaches a `GradNode` to its output: the inputs
// and a closure that maps the output's gradient to the inputs' gradients. The closure captures
// exactly the activations its backward needs. `backward()` walks the graph in reverse
// topological order and drops every node as soon as it has run, so saved activations are freed
// the moment they are no longer needed (micrograd's idea, with memory discipline).

import Foundation

/// The record of one operation in the graph.
final class GradNode {
  /// The op's inputs that require gradients, in the order `backward` returns gradients.
  let inputs: [Tensor]
  /// Maps the gradient of the output to one gradient per input (`nil` = no contribution).
  let backward: (Tensor) -> [Tensor?]

  init(inputs: [Tensor], backward: @escaping (Tensor) -> [Tensor?]) {
    self.inputs = inputs
    self.backward = backward
  }
}

/// Whether operations record the graph. Off inside ``withNoGrad(_:)``.
public enum GradMode {
  nonisolated(unsafe) static var enabled = true

  /// True while operations record the graph for ``Tensor/backward()``.
  public static var isEnabled: Bool { enabled }
}

/// Runs `body` without recording the graph (PyTorch's `torch.no_grad()`): for evaluation and for
/// in-place parameter updates. No activation is saved for a backward pass.
public func withNoGrad<T>(_ body: () throws -> T) rethrows -> T {
  let previous = GradMode.enabled
  GradMode.enabled = false
  defer { GradMode.enabled = previous }
  return try body()
}

/// Attaches the graph record to an op's output when any of `inputs` requires gradients.
///
/// `backward` is called once with the output's gradient and returns one gradient per element of
/// `inputs` (the same order, including inputs that do not require gradients, which are ignored).
/// It is only built when needed, so ops pay nothing for the graph in no-grad mode.
@inline(__always)
func record(
  _ output: Tensor, inputs: [Tensor], backward: @autoclosure () -> ((Tensor) -> [Tensor?])
) -> Tensor {
  guard GradMode.enabled, inputs.contains(where: { $0.requiresGrad }) else { return output }
  output.requiresGrad = true
  let body = backward()
  let tracked = inputs.map { $0.requiresGrad }
  let kept = inputs.filter { $0.requiresGrad }
  output.node = GradNode(inputs: kept) { g in
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
    let order = topologicalOrder()
    accumulate(gradient.copy())
    for tensor in order.reversed() {
      guard let node = tensor.node, let g = tensor.pendingGrad else {
        tensor.node = nil
        tensor.pendingGrad = nil
        continue
      }
      // Drop the node and the pending gradient before running the inputs' updates, so that the
      // activations it saved die as soon as `grads` is consumed.
      tensor.node = nil
      tensor.pendingGrad = nil
      let grads = withNoGrad { node.backward(g) }
      // Gradients are accumulated in place later, so one buffer must not land in two places
      // (an add hands the same gradient to both of its inputs).
      var owned = Set<ObjectIdentifier>()
      for (input, grad) in zip(node.inputs, grads) {
        guard let grad else { continue }
        let unique = owned.insert(ObjectIdentifier(grad.storage)).inserted
        input.accumulate(unique ? grad : grad.copy())
      }
    }
  }

  /// Adds `g` to the pending gradient (inner node) or to ``grad`` (leaf).
  private func accumulate(_ g: Tensor) {
    checkSameShape(self, g, "gradient accumulation")
    if node == nil {
      if let existing = grad { addInPlace(existing, g) } else { grad = g.detached() }
    } else if let existing = pendingGrad {
      addInPlace(existing, g)
    } else {
      pendingGrad = g
    }
  }

  /// Tensors reachable through the graph, every tensor after all of its inputs.
  private func topologicalOrder() -> [Tensor] {
    var order: [Tensor] = []
    var visited = Set<ObjectIdentifier>()
    // Iterative DFS: a deep network would overflow the stack with recursion.
    var stack: [(Tensor, Bool)] = [(self, false)]
    while let (tensor, expanded) = stack.popLast() {
      if expanded {
        order.append(tensor)
        continue
      }
      guard visited.insert(ObjectIdentifier(tensor)).inserted else { continue }
      stack.append((tensor, true))
      for input in tensor.node?.inputs ?? [] where !visited.contains(ObjectIdentifier(input)) {
        stack.append((input, false))
      }
    }
    return order
  }

  /// Sets ``grad`` to `nil`.
  public func zeroGrad() { grad = nil }
}

/// `a += b`, element-wise, in place (no graph).
func addInPlace(_ a: Tensor, _ b: Tensor) {
  checkSameShape(a, b, "addInPlace")
  let n = a.count
  let pa = a.pointer
  let pb = b.pointer
  parallelChunks(n, minChunk: 1 << 16) { lo, hi in
    for i in lo..<hi { pa[i] += pb[i] }
  }
}
