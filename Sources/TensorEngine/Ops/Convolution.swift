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
// The forward product and the input gradient's are `pcd_matmul_rows` (the latter on the
// transposed weight), which rounds alike at every position (sgemm does not); the weight
// gradient's, a reduction over positions, is `pcd_matmul_nt_add`. At these sizes (at most 144
// channels, one sample's positions) both beat OpenBLAS's sgemm, whose packing alone was a
// quarter of its time in a training step. Work is split over samples, at most
// Engine.threadCount chunks, single-threaded inside.
//
// With `reluInput` the convolution reads relu(x) without that tensor existing: each sample is
// rectified into the per-core scratch (or im2col rectifies as it copies) in both passes, and
// each sample's input gradient is masked where x ≤ 0 in a scratch before it reaches x's.

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
///   - reluInput: convolve relu(x) (torch.relu's values: NaN and −0 kept) without writing that
///     tensor: the ReLU before DARTS's 1×1 preprocessing convolutions. Values and the weight and
///     bias gradients equal `conv2d(relu(x), …)` bit for bit; x's gradient is relu's backward of
///     the convolution's, bit for bit where this is x's only reader (with several readers the
///     same sum, possibly added in another order). Not for depthwise convolutions (see
///     ``depthwisePointwiseConv2d(_:depthwiseWeight:pointwiseWeight:stride:padding:dilation:reluInput:)``).
/// - Returns: (N, O, Ho, Wo) with Ho = ⌊(H + 2·padding − dilation·(KH − 1) − 1) / stride⌋ + 1.
/// - Precondition: C and O are divisible by `groups`; the weight's shape matches; the output is
///   not empty.
public func conv2d(
  _ x: Tensor, weight: Tensor, bias: Tensor? = nil,
  stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1, reluInput: Bool = false
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

  let depthwise = groups == c && o == c
  precondition(
    !(depthwise && reluInput),
    "conv2d: reluInput is not supported for a depthwise convolution; apply relu first, or fuse it into the "
      + "following 1×1 convolution with depthwisePointwiseConv2d(_:…reluInput: true)")
  if depthwise {
    return depthwiseConv2d(x, weight: weight, bias: bias, geometry: geo)
  }
  let out = Tensor.uninitialized([n, o, geo.outH, geo.outW])
  convForward(
    out: out.pointer, x: x.pointer, reluInput: reluInput, weight: weight.pointer, bias: bias?.pointer,
    n: n, c: c, o: o, groups: groups, geo: geo)
  // x's gradient goes straight into its buffer: a cell output feeds two cells' preprocessing.
  let target = x.gradientAccumulator
  return record(out, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
    let dx = target?.buffer()
    let dw = weight.requiresGrad ? Tensor(zeros: weight.shape) : nil
    let db = bias.map { _ in Tensor(zeros: [o]) }
    convBackward(
      dx: dx?.buffer.pointer, addingToDx: dx.map { !$0.isFresh } ?? false, dweight: dw?.pointer,
      dbias: db?.pointer, dout: g.pointer, x: x.pointer, reluInput: reluInput, weight: weight.pointer,
      n: n, c: c, o: o, groups: groups, geo: geo)
    return [nil, dw] + (db.map { [$0] } ?? [])
  }
}

/// Whether the convolution can multiply the input planes directly (1×1, stride 1, no padding).
@inline(__always) private func isPointwise(_ geo: ConvGeometry) -> Bool {
  geo.kernelH == 1 && geo.kernelW == 1 && geo.stride == 1 && geo.padding == 0
}

/// out (N, O, Ho, Wo) = conv(x (N, C, H, W), or relu(x) with `reluInput`, weight (O, Cg, KH, KW))
/// + bias (O).
func convForward(
  out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, reluInput: Bool = false,
  weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, n: Int, c: Int, o: Int, groups: Int,
  geo: ConvGeometry
) {
  let (cg, og) = (c / groups, o / groups)
  let kk = geo.kernelH * geo.kernelW
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let direct = isPointwise(geo)
  OperationCounter.add(
    "conv2d",
    flops: 2 * n * o * cg * kk * ohw + (bias == nil ? 0 : n * o * ohw) + (reluInput ? n * c * hw : 0),
    elements: n * c * hw + o * cg * kk + n * o * ohw + (bias == nil ? 0 : o))
  // im2col columns, or for a direct product the rectified group when there is a ReLU.
  parallelChunks(n, scratch: direct ? (reluInput ? cg * hw : 0) : cg * kk * ohw) { lo, hi, scratch in
    for s in lo..<hi {
      for gi in 0..<groups {
        let b = convInput(x + (s * c + gi * cg) * hw, channels: cg, reluInput: reluInput, geo: geo, scratch: scratch)
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

/// The right operand of a convolution's product for one group of one sample's planes (`channels`
/// planes at `xg`): the planes themselves (1×1, stride 1, no padding), or their rectified copy
/// with `reluInput`, or their im2col columns, the copies written to `scratch`.
@inline(__always) private func convInput(
  _ xg: UnsafePointer<Float>, channels: Int, reluInput: Bool, geo: ConvGeometry,
  scratch: UnsafeMutablePointer<Float>
) -> UnsafePointer<Float> {
  if !isPointwise(geo) {
    im2col(col: scratch, x: xg, channels: channels, geo: geo, relu: reluInput)
  } else if reluInput {
    pcd_relu_forward(scratch, xg, channels * geo.inH * geo.inW)
  } else {
    return xg
  }
  return UnsafePointer(scratch)
}

/// The gradients of ``convForward`` from dout (N, O, Ho, Wo): dx (N, C, H, W) is written, or
/// added to with `addingToDx`, and with `reluInput` masked where x ≤ 0 first; dweight
/// (O, Cg, KH, KW) and dbias (O) are accumulated (`+=`). Any of the three may be `nil` when not
/// needed.
func convBackward(
  dx: UnsafeMutablePointer<Float>?, addingToDx: Bool = false, dweight: UnsafeMutablePointer<Float>?,
  dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
  x: UnsafePointer<Float>, reluInput: Bool = false, weight: UnsafePointer<Float>,
  n: Int, c: Int, o: Int, groups: Int, geo: ConvGeometry
) {
  let (cg, og) = (c / groups, o / groups)
  let kk = geo.kernelH * geo.kernelW
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let direct = isPointwise(geo)
  let wCount = o * cg * kk
  let adding = addingToDx && dx != nil
  let products = (dweight == nil ? 0 : 1) + (dx == nil ? 0 : 1)
  OperationCounter.add(
    "conv2d backward",
    flops: products * 2 * n * o * cg * kk * ohw + (dbias == nil ? 0 : n * o * ohw)
      + (reluInput ? (dweight == nil ? 0 : n * c * hw) + (dx == nil ? 0 : n * c * hw) : 0),
    elements: n * o * ohw + (dweight == nil ? 0 : n * c * hw + wCount)
      + (dx == nil ? 0 : wCount + n * c * hw * (adding ? 2 : 1) + (reluInput ? n * c * hw : 0))
      + (dbias == nil ? 0 : o))
  let chunks = min(Engine.threadCount, n)
  // One weight-gradient accumulator per chunk, summed at the end: samples run in parallel.
  let partial = dweight.map { _ in Storage(count: chunks * wCount, zeroed: true) }
  // Per chunk: the im2col columns (or the rectified planes of a direct product), then with
  // `reluInput` a group's input gradient before it is masked. Allocated before any chunk runs
  // (see parallelChunks(scratch:)).
  let inputCount = direct ? (reluInput ? cg * hw : 0) : cg * kk * ohw
  // A group's input gradient goes through a scratch when it is masked, or added from a direct
  // product.
  let maskedCount = dx != nil && (reluInput || (direct && adding)) ? cg * hw : 0
  let perChunk = inputCount + maskedCount
  let scratch = Storage(count: chunks * perChunk, zeroed: false)
  // The input gradient's product is the forward's kernel on the transposed weight, W_gᵀ (Cg·KK,
  // Og) per group: every value of dx (or dcol) is 0 + Σ_o W[o][i] · dout[o][p] in o order, one
  // FMA each, alike at every position, where sgemm's order depends on the position's place in
  // its tiles; and at these sizes (Og, Cg ≤ 144) the kernel is faster.
  let transposed = dx.map { _ in transposedWeight(weight, groups: groups, rows: og, columns: cg * kk) }
  WorkerPool.shared.run(chunks) { chunk in
    let lo = n * chunk / chunks, hi = n * (chunk + 1) / chunks
    let input = scratch.pointer + chunk * perChunk
    let unmasked = input + inputCount
    let dwAcc = partial.map { $0.pointer + chunk * wCount }
    for s in lo..<hi {
      for gi in 0..<groups {
        let xg = x + (s * c + gi * cg) * hw
        let dg = dout + (s * o + gi * og) * ohw
        if let dwAcc {
          // dW_g (Og, Cg·KK) += dout_g (Og, HoWo) · col (Cg·KK, HoWo)ᵀ
          let b = convInput(xg, channels: cg, reluInput: reluInput, geo: geo, scratch: input)
          pcd_matmul_nt_add(dwAcc + gi * og * cg * kk, dg, b, og, cg * kk, ohw, cg * kk)
        }
        guard let dx, let transposed else { continue }
        let dxg = dx + (s * c + gi * cg) * hw
        let wt = UnsafePointer(transposed.pointer + gi * og * cg * kk)
        if direct {
          // dx_g (Cg, HW) = W_gᵀ · dout_g, through the scratch when it is masked or added.
          let target = reluInput || adding ? unmasked : dxg
          pcd_matmul_rows(target, wt, dg, cg, og, hw)
          if !reluInput && adding { axpy(cg * hw, 1, target, dxg) }
        } else {
          // dcol (Cg·KK, HoWo) = W_gᵀ · dout_g, then scattered back onto the input grid (on
          // this core, while the sample's planes are in cache).
          pcd_matmul_rows(input, wt, dg, cg * kk, og, ohw)
          let target = reluInput ? unmasked : dxg
          if !adding || reluInput { target.update(repeating: 0, count: cg * hw) }
          col2im(dx: target, col: input, channels: cg, geo: geo)
        }
        if reluInput {
          if adding {
            pcd_relu_backward_add(dxg, unmasked, xg, cg * hw)
          } else {
            pcd_relu_backward(dxg, unmasked, xg, cg * hw)
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

/// Each group's (rows × columns) block of a convolution's weight, transposed: the left operand
/// of the input gradient's `pcd_matmul_rows`.
func transposedWeight(_ weight: UnsafePointer<Float>, groups: Int, rows: Int, columns: Int) -> Storage {
  let transposed = Storage(count: groups * rows * columns, zeroed: false)
  for gi in 0..<groups {
    let (w, t) = (weight + gi * rows * columns, transposed.pointer + gi * rows * columns)
    for q in 0..<rows {
      for i in 0..<columns { t[i * rows + q] = w[q * columns + i] }
    }
  }
  return transposed
}

/// Unfolds the receptive fields of one sample's `channels` planes into
/// col (channels·KH·KW, Ho·Wo); positions in the padding become 0. With `relu`, the columns of
/// relu(x) (as pcd_relu_forward computes it).
func im2col(
  col: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, channels: Int, geo: ConvGeometry, relu: Bool = false
) {
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
          if relu {
            // x < 0 ? 0 : x, torch.relu's values (NaN and −0 kept), as pcd_relu_forward.
            for q in cols {
              let v = src[q * geo.stride]
              dst[q] = v < 0 ? 0 : v
            }
          } else if geo.stride == 1 {
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
