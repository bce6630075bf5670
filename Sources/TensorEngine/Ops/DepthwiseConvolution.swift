// Depthwise convolution (groups = C = O): the first half of DARTS's SepConv and DilConv.
// Legend: N batch, C channels, H×W input, Ho×Wo output, K×K kernel, s stride, d dilation,
// p padding. Output size as for any convolution (see `Convolution.swift`).
//
// sgemm is the wrong tool here (each output plane is a 1×K² by K²×HoWo product), so this is a
// direct kernel: for each kernel tap, one fused multiply-add over a contiguous span of an output
// row, which the compiler vectorises for stride 1. Forward splits (n, c) planes over the cores;
// backward splits channels, so that each core owns its channels' weight gradients.

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
  parallelFor(n * c) { plane in
    let ch = plane % c
    let dst = out + plane * ohw
    dst.update(repeating: bias?[ch] ?? 0, count: ohw)
    depthwisePlane(dst: dst, src: x + plane * hw, taps: weight + ch * kk, geo: geo)
  }
}

/// Adds the depthwise correlation of one input plane with `taps` (K×K) into `dst` (Ho×Wo).
@inline(__always)
private func depthwisePlane(
  dst: UnsafeMutablePointer<Float>, src: UnsafePointer<Float>, taps: UnsafePointer<Float>,
  geo: ConvGeometry
) {
  let (ow, w, s) = (geo.outW, geo.inW, geo.stride)
  for ki in 0..<geo.kernelH {
    let rows = geo.validRows(ki)
    for kj in 0..<geo.kernelW {
      let tap = taps[ki * geo.kernelW + kj]
      let cols = geo.validColumns(kj)
      if cols.isEmpty { continue }
      let dj = kj * geo.dilation - geo.padding
      for r in rows {
        let srow = src + (r * s + ki * geo.dilation - geo.padding) * w + dj
        let drow = dst + r * ow
        if s == 1 {
          for q in cols { drow[q] += tap * srow[q] }
        } else {
          for q in cols { drow[q] += tap * srow[q * s] }
        }
      }
    }
  }
}

/// Accumulates (`+=`) the gradients of ``depthwiseForward``: dx (N, C, H, W), dweight (C, 1, K, K)
/// and dbias (C) from dout (N, C, Ho, Wo).
func depthwiseBackward(
  dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
  dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
  x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, c: Int, geo: ConvGeometry
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let (ow, w, s, d) = (geo.outW, geo.inW, geo.stride, geo.dilation)
  let kk = geo.kernelH * geo.kernelW
  parallelFor(c) { ch in
    for sample in 0..<n {
      let plane = sample * c + ch
      let g = dout + plane * ohw
      let src = x + plane * hw
      let dsrc = dx.map { $0 + plane * hw }
      for ki in 0..<geo.kernelH {
        let rows = geo.validRows(ki)
        for kj in 0..<geo.kernelW {
          let cols = geo.validColumns(kj)
          if cols.isEmpty { continue }
          let tapIndex = ch * kk + ki * geo.kernelW + kj
          let tap = weight[tapIndex]
          let dj = kj * d - geo.padding
          var dtap: Float = 0
          for r in rows {
            let offset = (r * s + ki * d - geo.padding) * w + dj
            let grow = g + r * ow
            let srow = src + offset
            if s == 1 {
              for q in cols { dtap += grow[q] * srow[q] }
              if let dsrc {
                let drow = dsrc + offset
                for q in cols { drow[q] += tap * grow[q] }
              }
            } else {
              for q in cols { dtap += grow[q] * srow[q * s] }
              if let dsrc {
                let drow = dsrc + offset
                for q in cols { drow[q * s] += tap * grow[q] }
              }
            }
          }
          dweight?[tapIndex] += dtap
        }
      }
      if let dbias {
        var sum: Float = 0
        for i in 0..<ohw { sum += g[i] }
        dbias[ch] += sum
      }
    }
  }
}
