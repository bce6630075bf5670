// Convolutions. Legend: N batch, C input channels, O output channels, H×W input size,
// Ho×Wo output size, KH×KW kernel, G groups, Cg = C/G and Og = O/G channels per group.
//
// Output size (PyTorch's Conv2d doc): Ho = ⌊(H + 2·padding − dilation·(KH − 1) − 1) / stride⌋ + 1.
//
// Three paths, chosen per call:
// - depthwise (G = C = O): a direct kernel (`DepthwiseConvolution.swift` over
//   `_CKernels/depthwise.c`), where sgemm would multiply 1×KK matrices;
// - 1×1, stride 1, no padding: the product straight on the input planes, no im2col copy;
// - everything else: im2col into a per-core scratch matrix, then the product.
// The forward product is `pcd_matmul_rows`, which rounds alike at every position (sgemm does
// not); the backward products are sgemm. Work is split over samples, at most
// Engine.threadCount chunks, single-threaded inside.

import _CKernels

/// The geometry of one 2-D convolution or pooling window.
public struct ConvGeometry: Equatable, Sendable {
  /// The kernel's height and width.
  public var kernelH: Int, kernelW: Int
  /// Step, zero padding on every side, and spacing of the kernel taps.
  public var stride: Int, padding: Int, dilation: Int
  /// The input plane's height and width.
  public var inH: Int, inW: Int

  /// Output height, PyTorch's formula.
  public var outH: Int { (inH + 2 * padding - dilation * (kernelH - 1) - 1) / stride + 1 }
  /// Output width, PyTorch's formula.
  public var outW: Int { (inW + 2 * padding - dilation * (kernelW - 1) - 1) / stride + 1 }

  /// The range of output columns `ow` whose input column `ow·stride − padding + k·dilation`
  /// lies inside `0..<inW` for kernel column `k`.
  @inline(__always) func validColumns(_ k: Int) -> Range<Int> {
    validRange(offset: k * dilation - padding, inExtent: inW, outExtent: outW)
  }

  /// The same for output rows and kernel row `k`.
  @inline(__always) func validRows(_ k: Int) -> Range<Int> {
    validRange(offset: k * dilation - padding, inExtent: inH, outExtent: outH)
  }

  @inline(__always) private func validRange(offset: Int, inExtent: Int, outExtent: Int) -> Range<Int> {
    // o·s + offset ≥ 0  ⇔  o ≥ ⌈−offset / s⌉;  o·s + offset ≤ inExtent − 1.
    let lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride
    let top = inExtent - 1 - offset
    let hi = top < 0 ? 0 : min(outExtent, top / stride + 1)
    return lo < hi ? lo..<hi : 0..<0
  }
}

/// 2-D convolution, like `torch.nn.functional.conv2d`.
///
/// - Parameters:
///   - x: input, (N, C, H, W).
///   - weight: (O, C/groups, KH, KW).
///   - bias: optional, (O).
/// - Returns: (N, O, Ho, Wo) with Ho = ⌊(H + 2·padding − dilation·(KH − 1) − 1) / stride⌋ + 1.
/// - Precondition: C and O are divisible by `groups`; the weight's shape matches; the output is
///   not empty.
public func conv2d(
  _ x: Tensor, weight: Tensor, bias: Tensor? = nil,
  stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1
) -> Tensor {
  checkNCHW(x, "conv2d")
  precondition(weight.rank == 4, "conv2d: weight must be (O, C/groups, KH, KW), got \(weight.shape)")
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  let o = weight.shape[0]
  precondition(
    groups >= 1 && c % groups == 0 && o % groups == 0,
    "conv2d: channels in \(c) and out \(o) must be divisible by groups \(groups)")
  precondition(
    weight.shape[1] == c / groups,
    "conv2d: weight \(weight.shape) does not fit input \(x.shape) with groups \(groups)")
  precondition(
    stride >= 1 && dilation >= 1 && padding >= 0,
    "conv2d: stride \(stride) and dilation \(dilation) must be ≥ 1, padding \(padding) ≥ 0")
  if let bias { precondition(bias.shape == [o], "conv2d: bias must be [\(o)], got \(bias.shape)") }
  let geo = ConvGeometry(
    kernelH: weight.shape[2], kernelW: weight.shape[3], stride: stride, padding: padding,
    dilation: dilation, inH: h, inW: w)
  precondition(
    geo.outH > 0 && geo.outW > 0,
    "conv2d: input \(x.shape) is too small for kernel \(weight.shape) with padding \(padding), dilation \(dilation)")

  if groups == c && o == c {
    return depthwiseConv2d(x, weight: weight, bias: bias, geometry: geo)
  }
  let out = Tensor.uninitialized([n, o, geo.outH, geo.outW])
  convForward(
    out: out.pointer, x: x.pointer, weight: weight.pointer, bias: bias?.pointer,
    n: n, c: c, o: o, groups: groups, geo: geo)
  return record(out, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
    let dx = x.requiresGrad ? Tensor.uninitialized(x.shape) : nil
    let dw = weight.requiresGrad ? Tensor(zeros: weight.shape) : nil
    let db = bias.map { _ in Tensor(zeros: [o]) }
    convBackward(
      dx: dx?.pointer, dweight: dw?.pointer, dbias: db?.pointer, dout: g.pointer,
      x: x.pointer, weight: weight.pointer, n: n, c: c, o: o, groups: groups, geo: geo)
    return [dx, dw] + (db.map { [$0] } ?? [])
  }
}

/// Whether the convolution can multiply the input planes directly (1×1, stride 1, no padding).
@inline(__always) private func isPointwise(_ geo: ConvGeometry) -> Bool {
  geo.kernelH == 1 && geo.kernelW == 1 && geo.stride == 1 && geo.padding == 0
}

/// out (N, O, Ho, Wo) = conv(x (N, C, H, W), weight (O, Cg, KH, KW)) + bias (O).
func convForward(
  out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
  bias: UnsafePointer<Float>?, n: Int, c: Int, o: Int, groups: Int, geo: ConvGeometry
) {
  let (cg, og) = (c / groups, o / groups)
  let kk = geo.kernelH * geo.kernelW
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let direct = isPointwise(geo)
  OperationCounter.add(
    "conv2d",
    flops: 2 * n * o * cg * kk * ohw + (bias == nil ? 0 : n * o * ohw),
    elements: n * c * hw + o * cg * kk + n * o * ohw + (bias == nil ? 0 : o))
  parallelChunks(n, scratch: direct ? 0 : cg * kk * ohw) { lo, hi, scratch in
    let col = direct ? nil : scratch
    for s in lo..<hi {
      for gi in 0..<groups {
        let xg = x + (s * c + gi * cg) * hw
        let b: UnsafePointer<Float>
        if let col {
          im2col(col: col, x: xg, channels: cg, geo: geo)
          b = UnsafePointer(col)
        } else {
          b = xg
        }
        // Not sgemm: its rounding depends on the position, and ties in the pools and ReLUs that
        // follow must be decided as in exact arithmetic (see _CKernels/matmul.c).
        pcd_matmul_rows(out + (s * o + gi * og) * ohw, weight + gi * og * cg * kk, b, og, cg * kk, ohw)
      }
      if let bias {
        for oc in 0..<o {
          let plane = out + (s * o + oc) * ohw
          let bv = bias[oc]
          for i in 0..<ohw { plane[i] += bv }
        }
      }
    }
  }
}

/// The gradients of ``convForward`` from dout (N, O, Ho, Wo): dx (N, C, H, W) is written,
/// dweight (O, Cg, KH, KW) and dbias (O) are accumulated (`+=`). Any of the three may be `nil`
/// when not needed.
func convBackward(
  dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
  dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
  x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
  n: Int, c: Int, o: Int, groups: Int, geo: ConvGeometry
) {
  let (cg, og) = (c / groups, o / groups)
  let kk = geo.kernelH * geo.kernelW
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let direct = isPointwise(geo)
  let wCount = o * cg * kk
  let products = (dweight == nil ? 0 : 1) + (dx == nil ? 0 : 1)
  OperationCounter.add(
    "conv2d backward",
    flops: products * 2 * n * o * cg * kk * ohw + (dbias == nil ? 0 : n * o * ohw),
    elements: n * o * ohw + (dweight == nil ? 0 : n * c * hw + wCount) + (dx == nil ? 0 : wCount + n * c * hw)
      + (dbias == nil ? 0 : o))
  let chunks = min(Engine.threadCount, n)
  // One weight-gradient accumulator per chunk, summed at the end: samples run in parallel.
  let partial = dweight.map { _ in Storage(count: chunks * wCount, zeroed: true) }
  // Each chunk's im2col columns, allocated before any chunk runs (see parallelChunks(scratch:)).
  let colCount = cg * kk * ohw
  let columns = direct ? nil : Storage(count: chunks * colCount, zeroed: false)
  WorkerPool.shared.run(chunks) { chunk in
    let lo = n * chunk / chunks, hi = n * (chunk + 1) / chunks
    let col = columns.map { $0.pointer + chunk * colCount }
    let dwAcc = partial.map { $0.pointer + chunk * wCount }
    for s in lo..<hi {
      for gi in 0..<groups {
        let xg = x + (s * c + gi * cg) * hw
        let dg = dout + (s * o + gi * og) * ohw
        let wg = weight + gi * og * cg * kk
        if let dwAcc {
          let b: UnsafePointer<Float>
          if let col {
            im2col(col: col, x: xg, channels: cg, geo: geo)
            b = UnsafePointer(col)
          } else {
            b = xg
          }
          // dW_g (Og, Cg·KK) += dout_g (Og, HoWo) · col (Cg·KK, HoWo)ᵀ
          sgemm(
            transA: false, transB: true, m: og, n: cg * kk, k: ohw,
            alpha: 1, a: dg, lda: ohw, b: b, ldb: ohw,
            beta: 1, c: dwAcc + gi * og * cg * kk, ldc: cg * kk)
        }
        if let dx {
          let dxg = dx + (s * c + gi * cg) * hw
          if let col {
            // dcol (Cg·KK, HoWo) = W_gᵀ · dout_g, then scattered back onto the input grid (on
            // this core, while the sample's planes are in cache).
            sgemm(
              transA: true, transB: false, m: cg * kk, n: ohw, k: og,
              alpha: 1, a: wg, lda: cg * kk, b: dg, ldb: ohw,
              beta: 0, c: col, ldc: ohw)
            dxg.update(repeating: 0, count: cg * hw)
            col2im(dx: dxg, col: col, channels: cg, geo: geo)
          } else {
            sgemm(
              transA: true, transB: false, m: cg, n: hw, k: og,
              alpha: 1, a: wg, lda: cg, b: dg, ldb: ohw,
              beta: 0, c: dxg, ldc: hw)
          }
        }
      }
    }
  }
  if let dweight, let partial {
    for chunk in 0..<chunks {
      let src = partial.pointer + chunk * wCount
      for i in 0..<wCount { dweight[i] += src[i] }
    }
  }
  if let dbias {
    for oc in 0..<o {
      var sum: Float = 0
      for s in 0..<n {
        let plane = dout + (s * o + oc) * ohw
        for i in 0..<ohw { sum += plane[i] }
      }
      dbias[oc] += sum
    }
  }
}

/// Unfolds the receptive fields of one sample's `channels` planes into
/// col (channels·KH·KW, Ho·Wo); positions in the padding become 0.
func im2col(col: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, channels: Int, geo: ConvGeometry) {
  let (oh, ow) = (geo.outH, geo.outW)
  let (h, w) = (geo.inH, geo.inW)
  var row = col
  for ch in 0..<channels {
    let plane = x + ch * h * w
    for ki in 0..<geo.kernelH {
      let rows = geo.validRows(ki)
      for kj in 0..<geo.kernelW {
        let cols = geo.validColumns(kj)
        let dj = kj * geo.dilation - geo.padding
        row.update(repeating: 0, count: oh * ow)
        for r in rows {
          let src = plane + (r * geo.stride + ki * geo.dilation - geo.padding) * w + dj
          let dst = row + r * ow
          if geo.stride == 1 {
            for q in cols { dst[q] = src[q] }
          } else {
            for q in cols { dst[q] = src[q * geo.stride] }
          }
        }
        row += oh * ow
      }
    }
  }
}

/// The adjoint of ``im2col(col:x:channels:geo:)``: adds every column entry back onto the input
/// position it was copied from.
func col2im(dx: UnsafeMutablePointer<Float>, col: UnsafePointer<Float>, channels: Int, geo: ConvGeometry) {
  let (oh, ow) = (geo.outH, geo.outW)
  let (h, w) = (geo.inH, geo.inW)
  var row = col
  for ch in 0..<channels {
    let plane = dx + ch * h * w
    for ki in 0..<geo.kernelH {
      let rows = geo.validRows(ki)
      for kj in 0..<geo.kernelW {
        let cols = geo.validColumns(kj)
        let dj = kj * geo.dilation - geo.padding
        for r in rows {
          let dst = plane + (r * geo.stride + ki * geo.dilation - geo.padding) * w + dj
          let src = row + r * ow
          if geo.stride == 1 {
            for q in cols { dst[q] += src[q] }
          } else {
            for q in cols { dst[q * geo.stride] += src[q] }
          }
        }
        row += oh * ow
      }
    }
  }
}
