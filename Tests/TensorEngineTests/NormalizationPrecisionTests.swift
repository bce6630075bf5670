// Batch-norm gradients of inputs whose mean dwarfs their spread, as a trained network's feature
// maps have (a pool of ReLU outputs, a convolution of them). The gradients of γ and of a mixed
// op's weights are Σ g·x̂ = Σ g·(x − μ)/σ per channel; summed as Σ g·x − μ·Σ g they cancel, and
// Float's rounding of the two sums comes back magnified by |μ|/σ. PyTorch's kernel centres the
// sum, and so must ours. The references are the same sums in Double on the same Float inputs.
// Layout: (N, C, H, W).

import TestSupport
import XCTest

@testable import TensorEngine

final class NormalizationPrecisionTests: XCTestCase {
  private let shape = [4, 3, 9, 9]  // planes of 81: the kernels' vector body and their tail
  private let offset: Float = 500  // |μ|/σ: rounding of Σ g·x alone would be 500× too coarse

  /// Per plane: offset + c (channel c) plus deviations ±vₖ in pairs and one 0, vₖ ~ N(0, 1)
  /// rounded to 1/64, so that every value and every partial sum is exact in Float and the batch
  /// mean is offset + c exactly: the engine's Float mean is the true one, and what remains is
  /// the rounding of the gradient sums themselves.
  private func offsetInput(seed: UInt64) -> Tensor {
    var rng = SeededGenerator(seed: seed)
    let (planes, hw) = (shape[0] * shape[1], shape[2] * shape[3])
    let x = Tensor(zeros: shape, requiresGrad: true)
    for plane in 0..<planes {
      let mean = offset + Float(plane % shape[1])
      let v = (0..<hw / 2).map { _ in (rng.nextNormal() * 64).rounded() / 64 }
      var values = [mean] + v.map { mean + $0 } + v.map { mean - $0 }
      values.shuffle(using: &rng)
      for (i, value) in values.enumerated() { x.pointer[plane * hw + i] = value }
    }
    return x
  }

  /// Per channel Σ g·(x − mean)/√(var + ε) in Double, with the batch's mean and biased variance;
  /// g is zeroed where `mask` is ≤ 0 when given (a ReLU after the batch norm).
  private func referenceSumGXhat(_ x: Tensor, _ g: Tensor, mask: Tensor? = nil, eps: Double = 1e-5) -> [Double] {
    let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
    return (0..<c).map { ch in
      let values = (0..<n).flatMap { s in (0..<hw).map { (s * c + ch) * hw + $0 } }
      let mean = values.reduce(0.0) { $0 + Double(x.pointer[$1]) } / Double(values.count)
      let variance = values.reduce(0.0) { $0 + pow(Double(x.pointer[$1]) - mean, 2) } / Double(values.count)
      return values.reduce(0.0) { sum, i in
        let gi = mask.map { $0.pointer[i] > 0 } == false ? 0 : Double(g.pointer[i])
        return sum + gi * (Double(x.pointer[i]) - mean) / (variance + eps).squareRoot()
      }
    }
  }

  private func freshState() -> BatchNormState {
    BatchNormState(runningMean: Tensor(zeros: [shape[1]]), runningVar: Tensor(repeating: 1, shape: [shape[1]]))
  }

  /// The largest difference between `values` and `reference`, relative to the largest reference.
  private func relativeError(_ values: [Float], _ reference: [Double]) -> Double {
    let largest = reference.map(abs).max() ?? 0
    return zip(values, reference).map { abs(Double($0) - $1) }.max()! / largest
  }

  func testTheAffineBatchNormsWeightGradientIsCentred() {
    forEachKernelBuild { build in
      let x = offsetInput(seed: 1)
      let gamma = Tensor(repeating: 1, shape: [shape[1]], requiresGrad: true)
      let beta = Tensor(zeros: [shape[1]], requiresGrad: true)
      let g = randomInput(shape, seed: 2)
      batchNorm2d(x, weight: gamma, bias: beta, state: freshState(), training: true).backward(gradient: g)
      let error = relativeError(
        Array(UnsafeBufferPointer(start: gamma.grad!.pointer, count: shape[1])),
        referenceSumGXhat(x, g))
      print("precision \(build) dγ of batchNorm2d: relative error \(error)")
      XCTAssertLessThan(error, 2e-6, "\(build): dγ of batchNorm2d, relative to the largest")
    }
  }

  func testTheBatchNormReLUsWeightGradientIsCentred() {
    forEachKernelBuild { build in
      let x = offsetInput(seed: 3)
      let gamma = Tensor(repeating: 1, shape: [shape[1]], requiresGrad: true)
      let beta = Tensor(zeros: [shape[1]], requiresGrad: true)
      let g = randomInput(shape, seed: 4)
      let out = batchNormReLU(x, weight: gamma, bias: beta, state: freshState(), training: true)
      out.backward(gradient: g)
      let error = relativeError(
        Array(UnsafeBufferPointer(start: gamma.grad!.pointer, count: shape[1])),
        referenceSumGXhat(x, g, mask: out))
      print("precision \(build) dγ of batchNormReLU: relative error \(error)")
      XCTAssertLessThan(error, 2e-6, "\(build): dγ of batchNormReLU, relative to the largest")
    }
  }

  func testTheMixedOpWeightsGradientIsCentred() {
    forEachKernelBuild { build in
      // Two normalised terms (a mixed op's candidates before their final batch norm) and an
      // identity term; ∂/∂wₜ = Σ g·x̂ₜ over every channel.
      let xs = [offsetInput(seed: 5), offsetInput(seed: 6), randomInput(shape, seed: 7)]
      let weights = Tensor(repeating: 0.5, shape: [3], requiresGrad: true)
      let g = randomInput(shape, seed: 8)
      normalizedWeightedSum(xs, norms: [freshState(), freshState(), nil], training: true, weights: weights)
        .backward(gradient: g)
      let reference = [
        referenceSumGXhat(xs[0], g).reduce(0, +), referenceSumGXhat(xs[1], g).reduce(0, +),
        (0..<xs[2].count).reduce(0.0) { $0 + Double(g.pointer[$1]) * Double(xs[2].pointer[$1]) },
      ]
      let error = relativeError(Array(UnsafeBufferPointer(start: weights.grad!.pointer, count: 3)), reference)
      print("precision \(build) d/dw of normalizedWeightedSum: relative error \(error)")
      XCTAssertLessThan(error, 2e-6, "\(build): d/dw of normalizedWeightedSum, relative to the largest")
    }
  }
}
