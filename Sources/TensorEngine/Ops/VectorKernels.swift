// Small vector kernels shared by the direct convolution and pooling loops, written with SIMD
// types: Swift does not reorder floating-point additions, so a plain dot-product loop stays
// scalar; explicit 8-wide accumulators let it vectorise.

/// y[i] += a · x[i] for i in 0..<n.
@inline(__always)
func axpy(_ n: Int, _ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
  var i = 0
  let av = SIMD8<Float>(repeating: a)
  while i + 8 <= n {
    let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
    let yv = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(y + i).storeBytes(of: yv + av * xv, as: SIMD8<Float>.self)
    i += 8
  }
  while i < n {
    y[i] += a * x[i]
    i += 1
  }
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

/// y[i] = a · x[i] + b for i in 0..<n.
@inline(__always)
func affine(_ n: Int, _ x: UnsafePointer<Float>, _ a: Float, _ b: Float, _ y: UnsafeMutablePointer<Float>) {
  var i = 0
  let (av, bv) = (SIMD8<Float>(repeating: a), SIMD8<Float>(repeating: b))
  while i + 8 <= n {
    let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(y + i).storeBytes(of: xv * av + bv, as: SIMD8<Float>.self)
    i += 8
  }
  while i < n {
    y[i] = x[i] * a + b
    i += 1
  }
}

/// out[i] = a · x[i] + b · y[i] + c for i in 0..<n, in one pass.
@inline(__always)
func linearCombination(
  _ n: Int, _ a: Float, _ x: UnsafePointer<Float>, _ b: Float, _ y: UnsafePointer<Float>, _ c: Float,
  _ out: UnsafeMutablePointer<Float>
) {
  var i = 0
  let (av, bv, cv) = (SIMD8<Float>(repeating: a), SIMD8<Float>(repeating: b), SIMD8<Float>(repeating: c))
  while i + 8 <= n {
    let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
    let yv = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(out + i).storeBytes(of: av * xv + bv * yv + cv, as: SIMD8<Float>.self)
    i += 8
  }
  while i < n {
    out[i] = a * x[i] + b * y[i] + c
    i += 1
  }
}
