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
  // x's gradient goes straight into its buffer (DARTS's ReLU output feeds four such convolutions).
  let target = x.gradientAccumulator
  return record(out, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
    let dx = target?.buffer()
    let dw = weight.requiresGrad ? Tensor(zeros: weight.shape) : nil
    let db = bias.map { _ in Tensor(zeros: [c]) }
    depthwiseBackward(
      dx: dx?.buffer.pointer, addingToDx: dx.map { !$0.isFresh } ?? false, dweight: dw?.pointer,
      dbias: db?.pointer, dout: g.pointer, x: x.pointer, weight: weight.pointer, n: n, c: c, geo: geo)
    return [nil, dw] + (db.map { [$0] } ?? [])
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
  OperationCounter.add(
    "depthwise conv2d",
    flops: 2 * n * c * kk * ohw + (bias == nil ? 0 : n * c * ohw),
    elements: n * c * hw + c * kk + n * c * ohw + (bias == nil ? 0 : c))
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
/// or added to with `addingToDx` (each plane computed in a per-core scratch plane and added while
/// it is in cache); dweight (C, 1, K, K) and dbias (C) are accumulated (`+=`); any of the three
/// may be `nil`. Channels are split over the cores, so each core owns its channels' weight
/// gradients.
func depthwiseBackward(
  dx: UnsafeMutablePointer<Float>?, addingToDx: Bool, dweight: UnsafeMutablePointer<Float>?,
  dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
  x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, c: Int, geo: ConvGeometry
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let kk = geo.kernelH * geo.kernelW
  let kg = kernelGeometry(geo)
  let products = (dweight == nil ? 0 : 1) + (dx == nil ? 0 : 1)
  let adding = addingToDx && dx != nil
  OperationCounter.add(
    "depthwise conv2d backward",
    flops: products * 2 * n * c * kk * ohw + (dbias == nil ? 0 : n * c * ohw) + (adding ? n * c * hw : 0),
    elements: n * c * ohw + (dweight == nil ? 0 : n * c * hw + c * kk)
      + (dx == nil ? 0 : c * kk + n * c * hw * (adding ? 2 : 1)) + (dbias == nil ? 0 : c))
  let kernelScratch = pcd_depthwise_scratch_count(kg)
  parallelChunks(c, scratch: kernelScratch + (adding ? hw : 0), zeroed: true) { lo, hi, scratch in
    let addend = scratch + kernelScratch  // the plane to add, when adding
    for ch in lo..<hi {
      for sample in 0..<n {
        let plane = sample * c + ch
        // A frozen weight (as in an architecture step) skips the tap pass.
        if dx != nil || dweight != nil {
          pcd_depthwise_backward(
            dx.map { adding ? addend : $0 + plane * hw }, dweight.map { $0 + ch * kk },
            dout + plane * ohw, x + plane * hw, weight + ch * kk, kg,
            scratch)
          if adding, let dx { axpy(hw, 1, addend, dx + plane * hw) }
        }
        if let dbias { dbias[ch] += sum(ohw, dout + plane * ohw) }
      }
    }
  }
}

// MARK: - Depthwise then pointwise, the depthwise output recomputed

/// A depthwise convolution followed by a 1×1 convolution (the two halves of DARTS's separable
/// and dilated convolutions), with the same values and gradients as
/// `conv2d(conv2d(x, weight: depthwiseWeight, …, groups: C), weight: pointwiseWeight)`, bit for
/// bit, but without keeping the depthwise output for the backward pass: it is recomputed there
/// from `x`, which the depthwise half keeps anyway. One (N, C, Ho, Wo) tensor less per pair is
/// alive between the forward and the backward pass, for one more depthwise forward pass.
///
/// With `reluInput` it convolves `relu(x)` (DARTS's ReLU before a separable or dilated
/// convolution) without writing that tensor: each plane is rectified as the kernels pad it, and in
/// the backward pass each plane of the input gradient is masked where x ≤ 0 as ``relu(_:)``'s
/// backward masks it, then written or added to x's gradient. Values equal
/// `depthwisePointwiseConv2d(relu(x), …)` bit for bit, and so does x's gradient where this is
/// x's only reader (with several readers the sum is the same but may be added in another order).
///
/// - Parameters:
///   - x: (N, C, H, W).
///   - depthwiseWeight: (C, 1, K, K).
///   - pointwiseWeight: (O, C, 1, 1).
///   - stride, padding, dilation: of the depthwise convolution.
///   - reluInput: convolve relu(x) instead of x.
/// - Returns: (N, O, Ho, Wo), Ho and Wo as for ``conv2d(_:weight:bias:stride:padding:dilation:groups:)``.
/// - Precondition: the weights' shapes fit `x`; the output is not empty.
public func depthwisePointwiseConv2d(
  _ x: Tensor, depthwiseWeight: Tensor, pointwiseWeight: Tensor, stride: Int = 1, padding: Int = 0,
  dilation: Int = 1, reluInput: Bool = false
) -> Tensor {
  checkNCHW(x, "depthwisePointwiseConv2d")
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  precondition(
    depthwiseWeight.rank == 4 && depthwiseWeight.shape[0] == c && depthwiseWeight.shape[1] == 1
      && depthwiseWeight.shape[2] == depthwiseWeight.shape[3],
    "depthwisePointwiseConv2d: depthwise weight \(depthwiseWeight.shape) does not fit input \(x.shape)")
  precondition(
    pointwiseWeight.rank == 4 && pointwiseWeight.shape[1] == c && pointwiseWeight.shape[2] == 1
      && pointwiseWeight.shape[3] == 1,
    "depthwisePointwiseConv2d: pointwise weight \(pointwiseWeight.shape) must be (O, \(c), 1, 1)")
  precondition(
    stride >= 1 && dilation >= 1 && padding >= 0,
    "depthwisePointwiseConv2d: stride \(stride) and dilation \(dilation) must be ≥ 1, padding \(padding) ≥ 0")
  let geo = ConvGeometry(
    kernelH: depthwiseWeight.shape[2], kernelW: depthwiseWeight.shape[3], stride: stride, padding: padding,
    dilation: dilation, inH: h, inW: w)
  precondition(geo.outH > 0 && geo.outW > 0, "depthwisePointwiseConv2d: input \(x.shape) too small for the kernel")
  let o = pointwiseWeight.shape[0]
  let out = Tensor.uninitialized([n, o, geo.outH, geo.outW])
  depthwisePointwiseForward(
    out: out.pointer, x: x.pointer, reluInput: reluInput, depthwiseWeight: depthwiseWeight.pointer,
    pointwiseWeight: pointwiseWeight.pointer, n: n, c: c, o: o, geo: geo)
  let target = x.gradientAccumulator  // x's gradient goes straight into its buffer, as above
  return record(out, inputs: [x, depthwiseWeight, pointwiseWeight]) { g in
    let dx = target?.buffer()
    let ddw = depthwiseWeight.requiresGrad ? Tensor(zeros: depthwiseWeight.shape) : nil
    let dpw = pointwiseWeight.requiresGrad ? Tensor(zeros: pointwiseWeight.shape) : nil
    depthwisePointwiseBackward(
      dx: dx?.buffer.pointer, addingToDx: dx.map { !$0.isFresh } ?? false, ddepthwise: ddw?.pointer,
      dpointwise: dpw?.pointer, dout: g.pointer, x: x.pointer, reluInput: reluInput,
      depthwiseWeight: depthwiseWeight.pointer, pointwiseWeight: pointwiseWeight.pointer, n: n, c: c, o: o,
      geo: geo)
    return [nil, ddw, dpw]
  }
}

// One sample at a time: its C depthwise planes go to a per-core scratch (C·Ho·Wo floats, in L2
// for DARTS's shapes), and the 1×1 product reads them from there. The depthwise output is never
// written to memory as a tensor, in either pass, and its gradient neither: at the training
// network's batch of 96 these tensors are 14 MB each and a round trip through DRAM cost more than
// the products themselves. Each plane and each sample goes through the same kernels in the same
// order as `depthwiseForward`, `convForward`, `convBackward` and `depthwiseBackward` would take
// them, so the values are theirs bit for bit (GradientCheckTests).

/// out (N, O, Ho, Wo) = pointwise (O, C) · depthwise(x (N, C, H, W), taps (C, 1, K, K)), of
/// relu(x) with `reluInput`.
func depthwisePointwiseForward(
  out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, reluInput: Bool,
  depthwiseWeight: UnsafePointer<Float>, pointwiseWeight: UnsafePointer<Float>, n: Int, c: Int, o: Int,
  geo: ConvGeometry
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let kk = geo.kernelH * geo.kernelW
  let kg = kernelGeometry(geo)
  // The two halves' counts, less the middle tensor's write and read.
  OperationCounter.add("depthwise conv2d", flops: 2 * n * c * kk * ohw, elements: n * c * hw + c * kk)
  OperationCounter.add("conv2d", flops: 2 * n * o * c * ohw, elements: o * c + n * o * ohw)
  let kernelScratch = pcd_depthwise_scratch_count(kg)
  parallelChunks(n, scratch: kernelScratch + c * ohw, zeroed: true) { lo, hi, scratch in
    let middle = scratch + kernelScratch
    for s in lo..<hi {
      for ch in 0..<c {
        // The split plane is the first of the kernel's scratch, as pcd_depthwise_forward keeps it.
        pcd_depthwise_split(scratch, x + (s * c + ch) * hw, reluInput ? 1 : 0, kg)
        pcd_depthwise_forward_split(middle + ch * ohw, scratch, depthwiseWeight + ch * kk, 0, kg)
      }
      pcd_matmul_rows(out + s * o * ohw, pointwiseWeight, middle, o, c, ohw)
    }
  }
}

/// The gradients of ``depthwisePointwiseForward`` from dout (N, O, Ho, Wo), recomputing each
/// sample's depthwise planes where a weight gradient reads them: dx (N, C, H, W) is written, or
/// added to with `addingToDx` (with `reluInput`, each plane masked where x ≤ 0 first);
/// ddepthwise (C, 1, K, K) and dpointwise (O, C) are accumulated (`+=`); any may be `nil`.
func depthwisePointwiseBackward(
  dx: UnsafeMutablePointer<Float>?, addingToDx: Bool, ddepthwise: UnsafeMutablePointer<Float>?,
  dpointwise: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>, x: UnsafePointer<Float>,
  reluInput: Bool, depthwiseWeight: UnsafePointer<Float>, pointwiseWeight: UnsafePointer<Float>,
  n: Int, c: Int, o: Int, geo: ConvGeometry
) {
  let (hw, ohw) = (geo.inH * geo.inW, geo.outH * geo.outW)
  let kk = geo.kernelH * geo.kernelW
  let kg = kernelGeometry(geo)
  let needsMiddleGradient = dx != nil || ddepthwise != nil
  guard needsMiddleGradient || dpointwise != nil else { return }
  let adding = addingToDx && dx != nil
  let depthwiseProducts = (ddepthwise == nil ? 0 : 1) + (dx == nil ? 0 : 1)
  // Only the weights' gradients read the recomputed planes: the pointwise gradient the depthwise
  // output, the tap gradients the split x. The input gradient needs neither (Wᵀ·dout, then the
  // depthwise adjoint of that, masked by x itself), so with frozen weights (the architecture step)
  // nothing is recomputed.
  let recomputesOutput = dpointwise != nil
  let splitsInput = recomputesOutput || ddepthwise != nil
  if recomputesOutput {
    OperationCounter.add("depthwise conv2d", flops: 2 * n * c * kk * ohw, elements: n * c * hw + c * kk)
  }
  OperationCounter.add(
    "conv2d backward",
    flops: ((dpointwise == nil ? 0 : 1) + (needsMiddleGradient ? 1 : 0)) * 2 * n * o * c * ohw,
    elements: n * o * ohw + (dpointwise == nil ? 0 : o * c) + (needsMiddleGradient ? o * c : 0))
  if needsMiddleGradient {
    OperationCounter.add(
      "depthwise conv2d backward",
      flops: depthwiseProducts * 2 * n * c * kk * ohw + (adding ? n * c * hw : 0),
      elements: (ddepthwise == nil ? 0 : n * c * hw + c * kk) + (dx == nil ? 0 : c * kk + n * c * hw * (adding ? 2 : 1))
    )
  }
  // Split as convBackward splits samples, with one pointwise-gradient accumulator per chunk summed
  // in chunk order at the end; the depthwise tap gradients go to one slot per sample, summed in
  // sample order, as depthwiseBackward adds them.
  let chunks = min(Engine.threadCount, n)
  let pointwiseCount = o * c
  let pointwisePartial = dpointwise.map { _ in Storage(count: chunks * pointwiseCount, zeroed: true) }
  let tapPartial = ddepthwise.map { _ in Storage(count: n * c * kk, zeroed: true) }
  // Each sample's C input planes are split (padded) once, for the recomputed forward and again
  // for the tap gradients, into C split planes per chunk; the recomputed depthwise output and the
  // middle gradient take C planes each, where they are needed.
  let (kernelScratch, splitCount) = (pcd_depthwise_scratch_count(kg), pcd_depthwise_split_count(kg))
  let splitFloats = splitsInput ? c * splitCount : 0
  let middleFloats = recomputesOutput ? c * ohw : 0, middleGradientFloats = needsMiddleGradient ? c * ohw : 0
  // A plane of dx goes through a scratch plane when it is added or masked.
  let viaScratch = dx != nil && (adding || reluInput)
  let perChunk = kernelScratch + splitFloats + middleFloats + middleGradientFloats + (viaScratch ? hw : 0)
  let scratch = Storage(count: chunks * perChunk, zeroed: true)
  // The pointwise weight transposed, Wᵀ (C, O), for the middle gradient's product.
  let transposed = needsMiddleGradient ? transposedWeight(pointwiseWeight, groups: 1, rows: o, columns: c) : nil
  WorkerPool.shared.run(chunks) { chunk in
    let lo = n * chunk / chunks, hi = n * (chunk + 1) / chunks
    let kernelPlanes = scratch.pointer + chunk * perChunk
    let splits = kernelPlanes + kernelScratch
    let middle = splits + splitFloats, middleGradient = middle + middleFloats
    let plane = middleGradient + middleGradientFloats  // a plane of dx, when it goes through scratch
    let dpwAcc = pointwisePartial.map { $0.pointer + chunk * pointwiseCount }
    for s in lo..<hi {
      let xs = x + s * c * hw, gs = dout + s * o * ohw
      for ch in 0..<c where splitsInput {
        pcd_depthwise_split(splits + ch * splitCount, xs + ch * hw, reluInput ? 1 : 0, kg)
        if recomputesOutput {
          pcd_depthwise_forward_split(middle + ch * ohw, splits + ch * splitCount, depthwiseWeight + ch * kk, 0, kg)
        }
      }
      if let dpwAcc {
        // dW (O, C) += dout_s (O, HoWo) · middle (C, HoWo)ᵀ
        pcd_matmul_nt_add(dpwAcc, gs, middle, o, c, ohw, c)
      }
      guard needsMiddleGradient, let transposed else { continue }
      // dmiddle (C, HoWo) = Wᵀ · dout_s, as convBackward's input gradient
      pcd_matmul_rows(middleGradient, transposed.pointer, gs, c, o, ohw)
      for ch in 0..<c {
        let index = s * c + ch
        pcd_depthwise_backward_split(
          dx.map { viaScratch ? plane : $0 + index * hw }, tapPartial.map { $0.pointer + index * kk },
          middleGradient + ch * ohw, splits + ch * splitCount, depthwiseWeight + ch * kk, kg, kernelPlanes)
        guard viaScratch, let dx else { continue }
        let (target, input) = (dx + index * hw, xs + ch * hw)
        switch (reluInput, adding) {
        case (true, false): pcd_relu_backward(target, plane, input, hw)
        case (true, true): pcd_relu_backward_add(target, plane, input, hw)
        default: axpy(hw, 1, plane, target)
        }
      }
    }
  }
  if let dpointwise, let pointwisePartial {
    for chunk in 0..<chunks {
      let src = pointwisePartial.pointer + chunk * pointwiseCount
      for i in 0..<pointwiseCount { dpointwise[i] += src[i] }
    }
  }
  if let ddepthwise, let tapPartial {
    for s in 0..<n {
      let src = tapPartial.pointer + s * c * kk
      for i in 0..<c * kk { ddepthwise[i] += src[i] }
    }
  }
}
