// Pooling. Legend: N batch, C channels, H×W input, Ho×Wo output, K×K window, s stride, p padding.
// Output size (PyTorch, ceil_mode = false): Ho = ⌊(H + 2p − K) / s⌋ + 1.
//
// Direct kernels (`_CKernels`) over padded (n, c) planes, spread across the cores. The backward
// gathers rather than scatters: each input sums the gradients of the windows covering it, which
// vectorises like the forward and writes dx once. Max pooling saves no indices: its backward
// recomputes each window's arg-max from the input, which the graph keeps alive anyway (the
// same tensor feeds the other candidate operations of a mixed op).

import _CKernels

/// Max pooling over K×K windows, like `torch.nn.functional.max_pool2d` (padding counts as −∞).
///
/// - Parameter x: (N, C, H, W).
/// - Returns: (N, C, Ho, Wo).
/// - Precondition: `padding ≤ kernel / 2` (PyTorch's rule) and a non-empty output.
public func maxPool2d(_ x: Tensor, kernel: Int, stride: Int, padding: Int = 0) -> Tensor {
  let geo = poolGeometry(x, kernel: kernel, stride: stride, padding: padding, op: "maxPool2d")
  let planes = x.shape[0] * x.shape[1]
  let out = Tensor.uninitialized([x.shape[0], x.shape[1], geo.outH, geo.outW])
  poolForward(out: out.pointer, x: x.pointer, planes: planes, geo: geo, isMax: true, scale: nil)
  let target = x.gradientAccumulator  // x's gradient goes straight into its buffer
  return record(out, inputs: [x]) { g in
    guard let (dx, isFresh) = target?.buffer() else { return [nil] }
    poolBackward(
      dx: dx.pointer, adding: !isFresh, dout: g.pointer, x: x.pointer, planes: planes, geo: geo, scale: nil)
    return [nil]
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
  let planes = x.shape[0] * x.shape[1]
  let scale = averageScale(geo, countIncludePad: countIncludePad)
  let out = Tensor.uninitialized([x.shape[0], x.shape[1], geo.outH, geo.outW])
  poolForward(out: out.pointer, x: x.pointer, planes: planes, geo: geo, isMax: false, scale: scale.pointer)
  // The backward needs only x's gradient buffer (DARTS's edge input has other readers, whose
  // gradients it adds to): x itself is not kept.
  let target = x.gradientAccumulator
  return record(out, inputs: [x]) { g in
    guard let (dx, isFresh) = target?.buffer() else { return [nil] }
    poolBackward(
      dx: dx.pointer, adding: !isFresh, dout: g.pointer, x: nil, planes: planes, geo: geo, scale: scale.pointer)
    return [nil]
  }
}

/// 1 / (the number of positions each window averages), one value per output position.
private func averageScale(_ geo: ConvGeometry, countIncludePad: Bool) -> Storage {
  let scale = Storage(count: geo.outH * geo.outW, zeroed: false)
  for oh in 0..<geo.outH {
    for ow in 0..<geo.outW {
      let (h0, h1) = window(oh, geo, extent: geo.inH)
      let (w0, w1) = window(ow, geo, extent: geo.inW)
      let count = countIncludePad ? geo.kernelH * geo.kernelW : (h1 - h0) * (w1 - w0)
      scale.pointer[oh * geo.outW + ow] = 1 / Float(count)
    }
  }
  return scale
}

/// Pools (N·C) planes through padded scratch planes (−∞ border for max, 0 for sums).
private func poolForward(
  out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, planes: Int, geo: ConvGeometry,
  isMax: Bool, scale: UnsafePointer<Float>?
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  // One comparison or addition per tap (and the average's scaling, about one more per output).
  OperationCounter.add(
    isMax ? "maxPool2d" : "avgPool2d", flops: planes * ohw * geo.kernelH * geo.kernelW, elements: planes * (hw + ohw))
  parallelChunks(planes, minChunk: max(1, 2048 / max(hw, 1))) { lo, hi in
    let scratch = PaddedPlane(h: geo.inH, w: geo.inW, pad: geo.padding, fill: isMax ? -.infinity : 0)
    for plane in lo..<hi {
      scratch.load(x + plane * hw)
      pcd_pool_forward(
        out + plane * ohw, scratch.pointer, scale, isMax, Int32(geo.kernelH),
        Int32(geo.stride), Int32(scratch.wp), Int32(geo.outH), Int32(geo.outW))
    }
  }
}

/// The adjoint of ``poolForward``: max pooling when `x` is given (the arg-max is recomputed
/// from it), sum pooling scaled by `scale` otherwise. Overwrites dx, or adds to it (`adding`).
///
/// Each input gathers its outputs' gradients through scratch planes with a border (g, 0 on
/// the border, and for max pooling each output's winning tap, −1 on the border), so dx is
/// written directly; when adding, each plane is gathered into a per-core plane first and added
/// while it is in cache.
private func poolBackward(
  dx: UnsafeMutablePointer<Float>, adding: Bool, dout: UnsafePointer<Float>, x: UnsafePointer<Float>?,
  planes: Int, geo: ConvGeometry, scale: UnsafePointer<Float>?
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let (k, stride, pad) = (Int32(geo.kernelH), Int32(geo.stride), Int32(geo.padding))
  let border = Int(pcd_pool_gather_border(k, stride, pad))
  // Max pooling finds each window's winner again (one comparison per tap) before the gather.
  OperationCounter.add(
    x == nil ? "avgPool2d backward" : "maxPool2d backward",
    flops: planes * ohw * geo.kernelH * geo.kernelW * (x == nil ? 1 : 2) + (adding ? planes * hw : 0),
    elements: planes * (ohw + hw * (adding ? 2 : 1) + (x == nil ? 0 : hw)))
  parallelChunks(planes, minChunk: max(1, 2048 / max(hw, 1)), scratch: adding ? hw : 0) { lo, hi, sum in
    let xpad = x.map { _ in PaddedPlane(h: geo.inH, w: geo.inW, pad: geo.padding, fill: -.infinity) }
    let codes = x.map { _ in PaddedPlane(h: geo.outH, w: geo.outW, pad: border, fill: -1) }
    let gpad = PaddedPlane(h: geo.outH, w: geo.outW, pad: border, fill: 0)
    for plane in lo..<hi {
      if let x, let xpad { xpad.load(x + plane * hw) }
      pcd_pool_backward(
        adding ? sum : dx + plane * hw, codes?.pointer, gpad.pointer, dout + plane * ohw, scale,
        xpad?.pointer, k, stride, pad, Int32(geo.inH), Int32(geo.inW))
      if adding { axpy(hw, 1, sum, dx + plane * hw) }
    }
  }
}

/// Per-core scratch for the 2×2 stride-2 max pool of single planes, as PC-DARTS's bypass
/// channels take it on stride-2 edges (``partialChannelSum(processed:inputs:strides:weights:indices:groups:)``
/// pools one plane at a time, inside its own loops). No padding, so planes are read in place.
struct MaxPool2x2Scratch {
  let oh: Int, ow: Int
  private let codes: PaddedPlane, gpad: PaddedPlane
  private static let (k, stride): (Int32, Int32) = (2, 2)

  /// Scratch for planes of 2·oh × 2·ow inputs.
  init(oh: Int, ow: Int) {
    (self.oh, self.ow) = (oh, ow)
    let border = Int(pcd_pool_gather_border(Self.k, Self.stride, 0))
    codes = PaddedPlane(h: oh, w: ow, pad: border, fill: -1)
    gpad = PaddedPlane(h: oh, w: ow, pad: border, fill: 0)
  }

  /// out (oh × ow) = the 2×2 max pool of x (2·oh × 2·ow).
  @inline(__always) func forward(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
    pcd_pool_forward(out, x, nil, true, Self.k, Self.stride, Int32(2 * ow), Int32(oh), Int32(ow))
  }

  /// Writes dx (2·oh × 2·ow): each g (oh × ow) routed to its window's first maximum in x.
  @inline(__always) func backward(
    _ g: UnsafePointer<Float>, x: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>
  ) {
    pcd_pool_backward(
      dx, codes.pointer, gpad.pointer, g, nil, x, Self.k, Self.stride, 0,
      Int32(2 * oh), Int32(2 * ow))
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
  OperationCounter.add("globalAvgPool2d", flops: x.count, elements: x.count + n * c)
  parallelFor(n * c, minChunk: 64) { plane in
    let src = x.pointer + plane * hw
    var sum: Float = 0
    for i in 0..<hw { sum += src[i] }
    out.pointer[plane] = sum * scale
  }
  let shape = x.shape
  return record(out, inputs: [x]) { g in
    let dx = Tensor.uninitialized(shape)
    OperationCounter.add("globalAvgPool2d backward", flops: n * c, elements: n * c + dx.count)
    parallelFor(n * c, minChunk: 64) { plane in
      (dx.pointer + plane * hw).update(repeating: g.pointer[plane] * scale, count: hw)
    }
    return [dx]
  }
}

private func poolGeometry(_ x: Tensor, kernel: Int, stride: Int, padding: Int, op: String) -> ConvGeometry {
  checkNCHW(x, op)
  precondition(kernel >= 1 && stride >= 1, "\(op): kernel \(kernel) and stride \(stride) must be ≥ 1")
  precondition(
    padding >= 0 && padding <= kernel / 2,
    "\(op): padding \(padding) must be between 0 and half the kernel \(kernel)")
  let geo = ConvGeometry(
    kernelH: kernel, kernelW: kernel, stride: stride, padding: padding,
    dilation: 1, inH: x.shape[2], inW: x.shape[3])
  precondition(
    geo.outH > 0 && geo.outW > 0,
    "\(op): input \(x.shape) is too small for a \(kernel)×\(kernel) window with padding \(padding)")
  return geo
}

/// The clipped window [lo, hi) along one axis for output index `o`.
@inline(__always)
private func window(_ o: Int, _ geo: ConvGeometry, extent: Int) -> (Int, Int) {
  let start = o * geo.stride - geo.padding
  return (max(start, 0), min(start + geo.kernelH, extent))
}
