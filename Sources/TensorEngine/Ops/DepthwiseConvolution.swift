// Depthwise convolution (groups = C = O): the first half of DARTS's SepConv and DilConv.
// Legend: N batch, C channels, H×W input, Ho×Wo output, K×K kernel, s stride, d dilation,
// p padding. Output size as for any convolution (see `Convolution.swift`).
//
// sgemm is the wrong tool here (each output plane is a 1×K² by K²×HoWo product), so this is a
// direct kernel (`_CKernels`): each (n, c) plane is copied into a zero-padded scratch plane and
// correlated tap by tap with vectorised, bounds-free loops. Forward splits (n, c) planes over the cores;
// backward splits channels, so that each core owns its channels' weight gradients.

import _CKernels

/// Depthwise forward and the recording of its backward; `conv2d` routes here.
func depthwiseConv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, geometry geo: ConvGeometry) -> Tensor {
  let (n, c) = (x.shape[0], x.shape[1])
  let out = Tensor.uninitialized([n, c, geo.outH, geo.outW])
  depthwiseForward(out: out.pointer, x: x.pointer, weight: weight.pointer, bias: bias?.pointer,
                   n: n, c: c, geo: geo)
  return record(out, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
    let dx = x.requiresGrad ? Tensor(zeros: x.shape) : nil
    let dw = weight.requiresGrad ? Tensor(zeros: weight.shape) : nil
    let db = bias.map { _ in Tensor(zeros: [c]) }
    depthwiseBackward(dx: dx?.pointer, dweight: dw?.pointer, dbias: db?.pointer, dout: g.pointer,
                      x: x.pointer, weight: weight.pointer, n: n, c: c, geo: geo)
    return [dx, dw] + (db.map { [$0] } ?? [])
  }
}

/// out (N, C, Ho, Wo) = depthwise conv of x (N, C, H, W) with weight (C, 1, K, K), + bias (C).
func depthwiseForward(
  out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
  bias: UnsafePointer<Float>?, n: Int, c: Int, geo: ConvGeometry
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let kk = geo.kernelH * geo.kernelW
  parallelChunks(n * c) { lo, hi in
    let scratch = PaddedPlane(h: geo.inH, w: geo.inW, pad: geo.padding, fill: 0)
    for plane in lo..<hi {
      let ch = plane % c
      scratch.load(x + plane * hw)
      pcd_depthwise_forward(out + plane * ohw, scratch.pointer, weight + ch * kk, bias?[ch] ?? 0,
                            Int32(geo.kernelH), Int32(geo.stride), Int32(geo.dilation),
                            Int32(scratch.wp), Int32(geo.outH), Int32(geo.outW))
    }
  }
}

/// Accumulates (`+=`) the gradients of ``depthwiseForward``: dx (N, C, H, W), dweight (C, 1, K, K)
/// and dbias (C) from dout (N, C, Ho, Wo). Channels are split over the cores, so each core owns
/// its channels' weight gradients.
func depthwiseBackward(
  dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
  dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
  x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, c: Int, geo: ConvGeometry
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let kk = geo.kernelH * geo.kernelW
  // Stride 1 (and a padding no larger than the kernel's reach): the input gradient is the
  // forward kernel on the zero-padded output gradient with flipped taps, which vectorises like
  // the forward; stride 2 scatters through a padded plane instead.
  let flipPad = (geo.kernelH - 1) * geo.dilation - geo.padding
  let gather = geo.stride == 1 && flipPad >= 0 && geo.kernelH <= 7
  parallelChunks(c) { lo, hi in
    let xpad = PaddedPlane(h: geo.inH, w: geo.inW, pad: geo.padding, fill: 0)
    let gpad = dx != nil && gather ? PaddedPlane(h: geo.outH, w: geo.outW, pad: flipPad, fill: 0) : nil
    let dxpad = dx != nil && !gather ? PaddedPlane(h: geo.inH, w: geo.inW, pad: geo.padding, fill: 0) : nil
    // The kernel always accumulates tap gradients; discard them when not wanted.
    var unused = [Float](repeating: 0, count: kk)
    for ch in lo..<hi {
      for sample in 0..<n {
        let plane = sample * c + ch
        xpad.load(x + plane * hw)
        dxpad?.clear()
        // With the input gradient gathered separately, the tap pass is needed only for the
        // weight gradient (a frozen weight, as in an architecture step, skips it).
        if dweight != nil || dxpad != nil {
          unused.withUnsafeMutableBufferPointer { spare in
            pcd_depthwise_backward(dxpad?.pointer, dweight.map { $0 + ch * kk } ?? spare.baseAddress!,
                                   dout + plane * ohw, xpad.pointer, weight + ch * kk,
                                   Int32(geo.kernelH), Int32(geo.stride), Int32(geo.dilation),
                                   Int32(xpad.wp), Int32(geo.outH), Int32(geo.outW))
          }
        }
        if let gpad, let dx {
          gpad.load(dout + plane * ohw)
          pcd_depthwise_backward_input(dx + plane * hw, gpad.pointer, weight + ch * kk, Int32(geo.kernelH),
                                       Int32(geo.dilation), Int32(gpad.wp), Int32(geo.inH), Int32(geo.inW))
        }
        if let dxpad, let dx {
          let target = dx + plane * hw
          for r in 0..<geo.inH {
            let src = dxpad.pointer + (r + geo.padding) * dxpad.wp + geo.padding
            for q in 0..<geo.inW { target[r * geo.inW + q] += src[q] }
          }
        }
        if let dbias { dbias[ch] += sum(ohw, dout + plane * ohw) }
      }
    }
  }
}
