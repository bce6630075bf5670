// Small vector kernels shared by the direct convolution, pooling and batch-norm loops. The
// element-wise maps call the C kernels' builds (AVX-512, AVX2, portable: this module is compiled
// for baseline x86-64, where SIMD8 is a pair of SSE registers); the sums stay in Swift, written
// with SIMD types: Swift does not reorder floating-point additions, so a plain dot-product loop
// stays scalar, and explicit 8-wide accumulators let it vectorise (their order is the sums' bits).

import _CKernels

/// y[i] += a · x[i] for i in 0..<n (``pcd_axpy``).
@inline(__always)
func axpy(_ n: Int, _ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
  pcd_axpy(y, x, a, n)
}

/// Σ x[i]·y[i] for i in 0..<n, with 8-wide partial sums.
@inline(__always)
func dot(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
  var i = 0
  var acc = SIMD8<Float>(repeating: 0)
  while i + 8 <= n {
    acc +=
      UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
      * UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
    i += 8
  }
  var total = acc.sum()
  while i < n {
    total += x[i] * y[i]
    i += 1
  }
  return total
}

/// Σ x[i] for i in 0..<n, with 8-wide partial sums.
@inline(__always)
func sum(_ n: Int, _ x: UnsafePointer<Float>) -> Float {
  var i = 0
  var acc = SIMD8<Float>(repeating: 0)
  while i + 8 <= n {
    acc += UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
    i += 8
  }
  var total = acc.sum()
  while i < n {
    total += x[i]
    i += 1
  }
  return total
}

/// y[i] = a · x[i] + b for i in 0..<n (``pcd_affine``).
@inline(__always)
func affine(_ n: Int, _ x: UnsafePointer<Float>, _ a: Float, _ b: Float, _ y: UnsafeMutablePointer<Float>) {
  pcd_affine(y, x, a, b, n)
}

/// out[i] = a · x[i] + b · y[i] + c for i in 0..<n, in one pass (``pcd_linear_combination``).
@inline(__always)
func linearCombination(
  _ n: Int, _ a: Float, _ x: UnsafePointer<Float>, _ b: Float, _ y: UnsafePointer<Float>, _ c: Float,
  _ out: UnsafeMutablePointer<Float>
) {
  pcd_linear_combination(out, x, y, a, b, c, n)
}
