// Depthwise convolution (groups = C = O): the first half of DARTS's SepConv and DilConv.
// Legend: N batch, C channels, H×W input, Ho×Wo output, K×K kernel, s stride, d dilation,
// p padding. Output size as for any convolution (see `Convolution.swift`).
//
// sgemm is the wrong tool here (each output plane is a 1×K² by K²×HoWo product), so this is a
// direct kernel (`_CKernels`) per (n, c) plane, which pads (and for stride 2 splits into even and
// odd columns) each plane in a per-core scratch so its loops are unit-stride and bounds-free.
// Forward splits (n, c) planes over the cores; backward splits channels, so that each core owns
// its channels' weight gradients.

import _CKernels

/// Depthwise forward and the recording of its backward; `conv2d` routes here.
func depthwiseConv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, geometry geo: ConvGeometry) -> Tensor {
  let (n, c) = (x.shape[0], x.shape[1])
  let out = Tensor.uninitialized([n, c, geo.outH, geo.outW])
  depthwiseForward(
    out: out.pointer, x: x.pointer, weight: weight.pointer, bias: bias?.pointer,
    n: n, c: c, geo: geo)
  return record(out, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
    let dx = x.requiresGrad ? Tensor.uninitialized(x.shape) : nil
    let dw = weight.requiresGrad ? Tensor(zeros: weight.shape) : nil
    let db = bias.map { _ in Tensor(zeros: [c]) }
    depthwiseBackward(
      dx: dx?.pointer, dweight: dw?.pointer, dbias: db?.pointer, dout: g.pointer,
      x: x.pointer, weight: weight.pointer, n: n, c: c, geo: geo)
    return [dx, dw] + (db.map { [$0] } ?? [])
  }
}

/// The C kernels' view of a square depthwise geometry.
private func kernelGeometry(_ geo: ConvGeometry) -> pcd_depthwise_geometry {
  pcd_depthwise_geometry(
    k: Int32(geo.kernelH), stride: Int32(geo.stride), dilation: Int32(geo.dilation),
    padding: Int32(geo.padding), h: Int32(geo.inH), w: Int32(geo.inW))
}

/// out (N, C, Ho, Wo) = depthwise conv of x (N, C, H, W) with weight (C, 1, K, K), + bias (C).
func depthwiseForward(
  out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
  bias: UnsafePointer<Float>?, n: Int, c: Int, geo: ConvGeometry
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let kk = geo.kernelH * geo.kernelW
  let kg = kernelGeometry(geo)
  parallelChunks(n * c, scratch: pcd_depthwise_scratch_count(kg), zeroed: true) { lo, hi, scratch in
    for plane in lo..<hi {
      let ch = plane % c
      pcd_depthwise_forward(
        out + plane * ohw, x + plane * hw, weight + ch * kk, bias?[ch] ?? 0,
        kg, scratch)
    }
  }
}

/// The gradients of ``depthwiseForward`` from dout (N, C, Ho, Wo): dx (N, C, H, W) is written,
/// dweight (C, 1, K, K) and dbias (C) are accumulated (`+=`); any of them may be `nil`.
/// Channels are split over the cores, so each core owns its channels' weight gradients.
func depthwiseBackward(
  dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
  dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
  x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, c: Int, geo: ConvGeometry
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let kk = geo.kernelH * geo.kernelW
  let kg = kernelGeometry(geo)
  parallelChunks(c, scratch: pcd_depthwise_scratch_count(kg), zeroed: true) { lo, hi, scratch in
    for ch in lo..<hi {
      for sample in 0..<n {
        let plane = sample * c + ch
        // A frozen weight (as in an architecture step) skips the tap pass.
        if dx != nil || dweight != nil {
          pcd_depthwise_backward(
            dx.map { $0 + plane * hw }, dweight.map { $0 + ch * kk },
            dout + plane * ohw, x + plane * hw, weight + ch * kk, kg,
            scratch)
        }
        if let dbias { dbias[ch] += sum(ohw, dout + plane * ohw) }
      }
    }
  }
}
