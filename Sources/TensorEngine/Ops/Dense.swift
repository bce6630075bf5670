// Fully connected layers, softmax and the classification loss. Legend: N rows (batch),
// F input features, O output features (classes).

import Foundation

/// x · weightᵀ + bias, like `torch.nn.functional.linear`.
/// - Parameters:
///   - x: (N, F).
///   - weight: (O, F).
///   - bias: optional (O).
/// - Returns: (N, O).
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
  precondition(
    x.rank == 2 && weight.rank == 2 && weight.shape[1] == x.shape[1],
    "linear: input \(x.shape) does not fit weight \(weight.shape) (expects (N, F) and (O, F))")
  let (n, f, o) = (x.shape[0], x.shape[1], weight.shape[0])
  if let bias { precondition(bias.shape == [o], "linear: bias must be [\(o)], got \(bias.shape)") }
  let out = Tensor.uninitialized([n, o])
  OperationCounter.add("linear", flops: 2 * n * f * o, elements: n * f + o * f + n * o)
  sgemm(
    transA: false, transB: true, m: n, n: o, k: f, alpha: 1, a: x.pointer, lda: f,
    b: weight.pointer, ldb: f, beta: 0, c: out.pointer, ldc: o)
  if let bias {
    for r in 0..<n { for j in 0..<o { out.pointer[r * o + j] += bias.pointer[j] } }
  }
  return record(out, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
    var dx: Tensor? = nil
    OperationCounter.add(
      "linear backward",
      flops: (x.requiresGrad ? 2 : 1) * 2 * n * f * o,
      elements: n * o + n * f + o * f + (x.requiresGrad ? o * f + n * f : 0))
    if x.requiresGrad {
      let t = Tensor.uninitialized(x.shape)  // (N, F) = g (N, O) · W (O, F)
      sgemm(
        transA: false, transB: false, m: n, n: f, k: o, alpha: 1, a: g.pointer, lda: o,
        b: weight.pointer, ldb: f, beta: 0, c: t.pointer, ldc: f)
      dx = t
    }
    let dw = Tensor.uninitialized(weight.shape)  // (O, F) = gᵀ (O, N) · x (N, F)
    sgemm(
      transA: true, transB: false, m: o, n: f, k: n, alpha: 1, a: g.pointer, lda: o,
      b: x.pointer, ldb: f, beta: 0, c: dw.pointer, ldc: f)
    var grads: [Tensor?] = [dx, dw]
    if bias != nil {
      let db = Tensor(zeros: [o])
      for r in 0..<n { for j in 0..<o { db.pointer[j] += g.pointer[r * o + j] } }
      grads.append(db)
    }
    return grads
  }
}

/// Softmax over the last axis of a vector (K) or of each row of a matrix (N, K).
public func softmax(_ x: Tensor) -> Tensor {
  precondition(x.rank == 1 || x.rank == 2, "softmax: needs a vector or a matrix, got \(x.shape)")
  let k = x.shape.last!
  let rows = x.count / max(k, 1)
  let out = Tensor.uninitialized(x.shape)
  for r in 0..<rows { softmaxRow(out.pointer + r * k, x.pointer + r * k, k) }
  let (saved, shape) = (out.storage, x.shape)
  return record(out, inputs: [x]) { g in
    // dx = y ⊙ (g − ⟨g, y⟩) per row.
    let dx = Tensor.uninitialized(shape)
    for r in 0..<rows {
      let (y, gr, d) = (saved.pointer + r * k, g.pointer + r * k, dx.pointer + r * k)
      var dot: Double = 0
      for i in 0..<k { dot += Double(gr[i] * y[i]) }
      for i in 0..<k { d[i] = y[i] * (gr[i] - Float(dot)) }
    }
    return [dx]
  }
}

/// Numerically stable softmax of one row of `k` values (max subtracted, sums in Double).
@inline(__always)
func softmaxRow(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ k: Int) {
  var top = -Float.infinity
  for i in 0..<k { top = max(top, src[i]) }
  var total: Double = 0
  for i in 0..<k {
    let e = Foundation.exp(Double(src[i] - top))
    dst[i] = Float(e)
    total += e
  }
  for i in 0..<k { dst[i] = Float(Double(dst[i]) / total) }
}

/// The mean cross-entropy of `logits` against integer class `labels`, like
/// `torch.nn.functional.cross_entropy` (reduction = mean).
///
/// With `labelSmoothing` ε > 0 the target of a row is (1 − ε)·onehot(label) + ε/O, the loss of
/// train_imagenet.py's `CrossEntropyLabelSmooth` (and of PyTorch's `label_smoothing=ε`):
/// (1 − ε)·(−log p_label) + ε·mean over the O classes of (−log p).
/// - Parameters:
///   - logits: (N, O).
///   - labels: N class indices in 0..<O.
///   - labelSmoothing: ε in [0, 1).
/// - Returns: a scalar tensor.
/// - Precondition: one label per row, each in 0..<O; ε in [0, 1).
public func crossEntropy(_ logits: Tensor, labels: [Int32], labelSmoothing: Float = 0) -> Tensor {
  precondition(
    logits.rank == 2 && logits.shape[0] == labels.count,
    "crossEntropy: logits \(logits.shape) need one label per row, got \(labels.count) labels")
  precondition(
    labelSmoothing >= 0 && labelSmoothing < 1, "crossEntropy: label smoothing \(labelSmoothing) is outside [0, 1)")
  let (n, k) = (logits.shape[0], logits.shape[1])
  for (r, label) in labels.enumerated() {
    precondition(label >= 0 && Int(label) < k, "crossEntropy: label \(label) of row \(r) is outside 0..<\(k)")
  }
  let probs = Storage(count: n * k, zeroed: false)
  var loss: Double = 0
  for r in 0..<n {
    softmaxRow(probs.pointer + r * k, logits.pointer + r * k, k)
    // log p computed from the logits (log-sum-exp), not from the rounded probability.
    let row = logits.pointer + r * k
    var top = -Float.infinity
    for i in 0..<k { top = max(top, row[i]) }
    var total: Double = 0
    for i in 0..<k { total += Foundation.exp(Double(row[i] - top)) }
    let logSum = Double(top) + Foundation.log(total)
    if labelSmoothing == 0 {
      loss += logSum - Double(row[Int(labels[r])])
    } else {
      var meanLogit: Double = 0
      for i in 0..<k { meanLogit += Double(row[i]) }
      meanLogit /= Double(k)
      let eps = Double(labelSmoothing)
      loss += (1 - eps) * (logSum - Double(row[Int(labels[r])])) + eps * (logSum - meanLogit)
    }
  }
  let out = Tensor(scalar: Float(loss / Double(n)))
  let shape = logits.shape
  return record(out, inputs: [logits]) { g in
    let dx = Tensor.uninitialized(shape)
    let s = g.pointer[0] / Float(n)
    // d/dlogit_i = p_i − target_i, target = (1 − ε)·onehot + ε/O.
    let (onLabel, uniform) = ((1 - labelSmoothing) * s, labelSmoothing / Float(k) * s)
    for r in 0..<n {
      for i in 0..<k { dx.pointer[r * k + i] = probs.pointer[r * k + i] * s - uniform }
      dx.pointer[r * k + Int(labels[r])] -= onLabel
    }
    return [dx]
  }
}
