// Pooling. Legend: N batch, C channels, H×W input, Ho×Wo output, K×K window, s stride, p padding.
// Output size (PyTorch, ceil_mode = false): Ho = ⌊(H + 2p − K) / s⌋ + 1.
//
// Direct kernels over (n, c) planes, spread across the cores. Max pooling saves no indices: its
// backward recomputes the arg-max from the input, which the graph keeps alive anyway (the
// same tensor feeds the other candidate operations of a mixed op).

/// Max pooling over K×K windows, like `torch.nn.functional.max_pool2d` (padding counts as −∞).
///
/// - Parameter x: (N, C, H, W).
/// - Returns: (N, C, Ho, Wo).
/// - Precondition: `padding ≤ kernel / 2` (PyTorch's rule) and a non-empty output.
public func maxPool2d(_ x: Tensor, kernel: Int, stride: Int, padding: Int = 0) -> Tensor {
  let geo = poolGeometry(x, kernel: kernel, stride: stride, padding: padding, op: "maxPool2d")
  let (n, c) = (x.shape[0], x.shape[1])
  let out = Tensor.uninitialized([n, c, geo.outH, geo.outW])
  poolPlanes(n * c, geo) { plane in
    maxPoolPlane(out: out.pointer + plane * geo.outH * geo.outW,
                 x: x.pointer + plane * geo.inH * geo.inW, dx: nil, dout: nil, geo: geo)
  }
  return record(out, inputs: [x]) { g in
    let dx = Tensor(zeros: x.shape)
    poolPlanes(n * c, geo) { plane in
      maxPoolPlane(out: nil, x: x.pointer + plane * geo.inH * geo.inW,
                   dx: dx.pointer + plane * geo.inH * geo.inW,
                   dout: g.pointer + plane * geo.outH * geo.outW, geo: geo)
    }
    return [dx]
  }
}

/// Average pooling over K×K windows, like `torch.nn.functional.avg_pool2d`.
///
/// With `countIncludePad` false (DARTS's setting) each output divides by the number of input
/// positions its window covers inside the image, so border outputs are true averages.
/// - Parameter x: (N, C, H, W).
/// - Returns: (N, C, Ho, Wo).
public func avgPool2d(
  _ x: Tensor, kernel: Int, stride: Int, padding: Int = 0, countIncludePad: Bool = false
) -> Tensor {
  let geo = poolGeometry(x, kernel: kernel, stride: stride, padding: padding, op: "avgPool2d")
  let (n, c) = (x.shape[0], x.shape[1])
  let out = Tensor.uninitialized([n, c, geo.outH, geo.outW])
  poolPlanes(n * c, geo) { plane in
    avgPoolPlane(out: out.pointer + plane * geo.outH * geo.outW,
                 x: x.pointer + plane * geo.inH * geo.inW, dx: nil, dout: nil,
                 geo: geo, countIncludePad: countIncludePad)
  }
  let shape = x.shape  // the backward needs only the shape: x itself is not kept
  return record(out, inputs: [x]) { g in
    let dx = Tensor(zeros: shape)
    poolPlanes(n * c, geo) { plane in
      avgPoolPlane(out: nil, x: nil, dx: dx.pointer + plane * geo.inH * geo.inW,
                   dout: g.pointer + plane * geo.outH * geo.outW,
                   geo: geo, countIncludePad: countIncludePad)
    }
    return [dx]
  }
}

/// Global average pooling: the mean of each (n, c) plane.
/// - Parameter x: (N, C, H, W).
/// - Returns: (N, C).
public func globalAvgPool2d(_ x: Tensor) -> Tensor {
  checkNCHW(x, "globalAvgPool2d")
  let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
  let out = Tensor.uninitialized([n, c])
  let scale = 1 / Float(hw)
  parallelFor(n * c, minChunk: 64) { plane in
    let src = x.pointer + plane * hw
    var sum: Float = 0
    for i in 0..<hw { sum += src[i] }
    out.pointer[plane] = sum * scale
  }
  let shape = x.shape
  return record(out, inputs: [x]) { g in
    let dx = Tensor.uninitialized(shape)
    parallelFor(n * c, minChunk: 64) { plane in
      (dx.pointer + plane * hw).update(repeating: g.pointer[plane] * scale, count: hw)
    }
    return [dx]
  }
}

private func poolGeometry(_ x: Tensor, kernel: Int, stride: Int, padding: Int, op: String) -> ConvGeometry {
  checkNCHW(x, op)
  precondition(kernel >= 1 && stride >= 1, "\(op): kernel \(kernel) and stride \(stride) must be ≥ 1")
  precondition(padding >= 0 && padding <= kernel / 2,
    "\(op): padding \(padding) must be between 0 and half the kernel \(kernel)")
  let geo = ConvGeometry(kernelH: kernel, kernelW: kernel, stride: stride, padding: padding,
                         dilation: 1, inH: x.shape[2], inW: x.shape[3])
  precondition(geo.outH > 0 && geo.outW > 0,
    "\(op): input \(x.shape) is too small for a \(kernel)×\(kernel) window with padding \(padding)")
  return geo
}

/// Spreads planes over the cores, keeping small jobs on one thread.
@inline(__always)
private func poolPlanes(_ planes: Int, _ geo: ConvGeometry, _ body: (Int) -> Void) {
  parallelFor(planes, minChunk: max(1, 4096 / max(geo.inH * geo.inW, 1)), body)
}

/// The clipped window [lo, hi) along one axis for output index `o`.
@inline(__always)
private func window(_ o: Int, _ geo: ConvGeometry, extent: Int) -> (Int, Int) {
  let start = o * geo.stride - geo.padding
  return (max(start, 0), min(start + geo.kernelH, extent))
}

/// Forward (when `out` is given) or backward (`dx += routed dout`) of max pooling on one plane.
@inline(__always)
private func maxPoolPlane(
  out: UnsafeMutablePointer<Float>?, x: UnsafePointer<Float>,
  dx: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>?, geo: ConvGeometry
) {
  let w = geo.inW
  for oh in 0..<geo.outH {
    let (h0, h1) = window(oh, geo, extent: geo.inH)
    for ow in 0..<geo.outW {
      let (w0, w1) = window(ow, geo, extent: geo.inW)
      // The first maximum in row-major window order wins ties, as in PyTorch.
      var best = -Float.infinity
      var at = h0 * w + w0
      for i in h0..<h1 {
        for j in w0..<w1 where x[i * w + j] > best {
          best = x[i * w + j]
          at = i * w + j
        }
      }
      if let out { out[oh * geo.outW + ow] = best }
      if let dx, let dout { dx[at] += dout[oh * geo.outW + ow] }
    }
  }
}

/// Forward (when `out` and `x` are given) or backward (`dx += dout / divisor`) of average pooling.
@inline(__always)
private func avgPoolPlane(
  out: UnsafeMutablePointer<Float>?, x: UnsafePointer<Float>?,
  dx: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>?,
  geo: ConvGeometry, countIncludePad: Bool
) {
  let w = geo.inW
  for oh in 0..<geo.outH {
    let (h0, h1) = window(oh, geo, extent: geo.inH)
    for ow in 0..<geo.outW {
      let (w0, w1) = window(ow, geo, extent: geo.inW)
      let divisor = countIncludePad
        ? Float(geo.kernelH * geo.kernelW) : Float((h1 - h0) * (w1 - w0))
      if let out, let x {
        var sum: Float = 0
        for i in h0..<h1 { for j in w0..<w1 { sum += x[i * w + j] } }
        out[oh * geo.outW + ow] = sum / divisor
      }
      if let dx, let dout {
        let share = dout[oh * geo.outW + ow] / divisor
        for i in h0..<h1 { for j in w0..<w1 { dx[i * w + j] += share } }
      }
    }
  }
}
