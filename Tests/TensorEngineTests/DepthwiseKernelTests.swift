// The depthwise kernels (stride 1 and 2 phase-split AVX2 paths, and the generic fallback) against
// a naive convolution (forward) and its naive adjoint (backward), on the four DARTS geometries and
// on sizes that exercise the 8-column blocks, the register tiles and the scalar tails.

import TestSupport
import XCTest

@testable import TensorEngine

final class DepthwiseKernelTests: XCTestCase {
  /// (kernel, padding, dilation): sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5.
  let dartsGeometries = [(3, 1, 1), (5, 2, 1), (3, 2, 2), (5, 4, 2)]
  /// Wide and odd planes; 8×8 and 5×5 give stride-2 outputs narrower than one vector. At stride 1
  /// the row bands (4 rows, 3 for k = 5, d = 2) leave 0 to 3 rows, and the widths 0 to 7 columns
  /// of a masked last block (ImageNet's 28 × 28, 14 × 14 and 7 × 7 among them).
  let sizes = [(37, 45), (33, 33), (32, 32), (8, 8), (5, 5), (7, 7), (14, 14), (28, 28), (6, 19)]

  /// The gradients of a depthwise convolution for output gradient g, by the naive adjoint: every
  /// (output, tap) pair adds its product back, accumulated in Double.
  func referenceGradients(
    x: [Float], weight: [Float], g: [Float], n: Int, c: Int, h: Int, w: Int,
    k: Int, stride s: Int, padding p: Int, dilation d: Int
  ) -> (dx: [Float], dw: [Float], db: [Float]) {
    let oh = (h + 2 * p - d * (k - 1) - 1) / s + 1
    let ow = (w + 2 * p - d * (k - 1) - 1) / s + 1
    var dx = [Double](repeating: 0, count: x.count)
    var dw = [Double](repeating: 0, count: weight.count)
    var db = [Double](repeating: 0, count: c)
    for sample in 0..<n {
      for ch in 0..<c {
        let plane = sample * c + ch
        for r in 0..<oh {
          for q in 0..<ow {
            let gv = Double(g[(plane * oh + r) * ow + q])
            db[ch] += gv
            for ki in 0..<k {
              for kj in 0..<k {
                let (i, j) = (r * s - p + ki * d, q * s - p + kj * d)
                guard i >= 0, i < h, j >= 0, j < w else { continue }
                let xi = (plane * h + i) * w + j, wi = (ch * k + ki) * k + kj
                dx[xi] += gv * Double(weight[wi])
                dw[wi] += gv * Double(x[xi])
              }
            }
          }
        }
      }
    }
    return (dx.map(Float.init), dw.map(Float.init), db.map(Float.init))
  }

  /// Forward, dx, dweight and dbias of one geometry against the naive references; then dx alone
  /// (frozen weight) and dweight alone (an input that needs no gradient).
  func check(
    _ what: String, c: Int, h: Int, w: Int, k: Int, stride s: Int, padding p: Int, dilation d: Int,
    seed: UInt64, file: StaticString = #filePath, line: UInt = #line
  ) {
    let n = 2
    let x = randomInput([n, c, h, w], seed: seed)
    let weight = randomInput([c, 1, k, k], seed: seed + 1, std: 0.5)
    let bias = randomInput([c], seed: seed + 2)
    let out = conv2d(x, weight: weight, bias: bias, stride: s, padding: p, dilation: d, groups: c)
    var expected = referenceConv2d(
      x: x.scalars, xShape: x.shape, weight: weight.scalars, wShape: weight.shape,
      stride: s, padding: p, dilation: d, groups: c)
    let ohw = out.shape[2] * out.shape[3]
    for i in expected.indices { expected[i] += bias.scalars[(i / ohw) % c] }
    assertClose(out.scalars, expected, tolerance: 1e-5, "\(what) forward", file: file, line: line)

    let g = randomInput(out.shape, seed: seed + 3)
    out.backward(gradient: g)
    let ref = referenceGradients(
      x: x.scalars, weight: weight.scalars, g: g.scalars, n: n, c: c, h: h, w: w,
      k: k, stride: s, padding: p, dilation: d)
    assertClose(x.grad?.scalars ?? [], ref.dx, tolerance: 1e-5, "\(what) dx", file: file, line: line)
    assertClose(weight.grad?.scalars ?? [], ref.dw, tolerance: 1e-5, "\(what) dweight", file: file, line: line)
    assertClose(bias.grad?.scalars ?? [], ref.db, tolerance: 1e-5, "\(what) dbias", file: file, line: line)

    x.zeroGrad()
    weight.requiresGrad = false
    conv2d(x, weight: weight, stride: s, padding: p, dilation: d, groups: c).backward(gradient: g)
    assertClose(x.grad?.scalars ?? [], ref.dx, tolerance: 1e-5, "\(what) dx, frozen weight", file: file, line: line)

    weight.requiresGrad = true
    let constant = Tensor(shape: x.shape, data: x.scalars)
    conv2d(constant, weight: weight, stride: s, padding: p, dilation: d, groups: c).backward(gradient: g)
    let twice = ref.dw.map { 2 * $0 }  // accumulated onto the first backward's
    assertClose(weight.grad?.scalars ?? [], twice, tolerance: 1e-5, "\(what) dweight only", file: file, line: line)
  }

  func testDartsGeometriesAtStrideOneAndTwo() {
    forEachKernelBuild { build in
      var seed: UInt64 = 100
      for (k, p, d) in dartsGeometries {
        for s in [1, 2] {
          for (h, w) in sizes {
            check(
              "\(build) k\(k) p\(p) d\(d) s\(s) \(h)×\(w)", c: 3, h: h, w: w, k: k, stride: s, padding: p,
              dilation: d, seed: seed)
            seed += 10
          }
        }
      }
    }
  }

  /// The banded stride-1 3 × 3 and (AVX-512 build) 5 × 5 forwards take correlate's products in
  /// correlate's order, so they must give the same bits (the architecture gradients of a trained
  /// network depend on them; see depthwise.c), on every band remainder and masked column block.
  func testBandedForwardMatchesCorrelateBitForBit() {
    var seed: UInt64 = 700
    for (k, p, d) in dartsGeometries {
      for (h, w) in sizes {
        let x = randomInput([2, 3, h, w], seed: seed)
        let weight = randomInput([3, 1, k, k], seed: seed + 1, std: 0.5)
        let bias = randomInput([3], seed: seed + 2)
        func forward(banded: Bool) -> [Float] {
          withBandedDepthwise(banded) {
            conv2d(x, weight: weight, bias: bias, padding: p, dilation: d, groups: 3).scalars
          }
        }
        let (banded, unbanded) = (forward(banded: true), forward(banded: false))
        XCTAssertEqual(banded.count, unbanded.count)
        let differing = zip(banded, unbanded).filter { $0.bitPattern != $1.bitPattern }.count
        XCTAssertEqual(differing, 0, "k\(k) d\(d) \(h)×\(w): outputs whose bits differ from correlate's")
        seed += 10
      }
    }
  }

  /// The AVX-512 build widens only loops whose every output keeps its own products in its own
  /// order, so it must give the AVX2 build's bits: the depthwise forward, input gradient and tap
  /// gradients (banded at stride 1) at both strides (planes narrower than 16 columns, 16-column blocks, masked tails, every band
  /// remainder), and the position-invariant product of the dense convolutions.
  func testAVX512BuildGivesTheAVX2BuildsBits() throws {
    try XCTSkipUnless(withKernelBuild(level: 2, { true }) ?? false, "this processor does not run AVX-512")
    /// How many of the values differ in their bits (the arrays are too long to print).
    func differing(_ a: [Float], _ b: [Float]) -> Int {
      a.count == b.count ? zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count : max(a.count, b.count)
    }
    var seed: UInt64 = 1_300
    let planes = [(37, 45), (33, 33), (32, 32), (16, 16), (19, 17), (8, 8), (28, 28), (6, 40)]
    for (k, p, d) in dartsGeometries {
      for s in [1, 2] {
        for (h, w) in planes {
          let x = randomInput([2, 3, h, w], seed: seed)
          let weight = randomInput([3, 1, k, k], seed: seed + 1, std: 0.5)
          let bias = randomInput([3], seed: seed + 2)
          let oh = (h + 2 * p - d * (k - 1) - 1) / s + 1, ow = (w + 2 * p - d * (k - 1) - 1) / s + 1
          let g = randomInput([2, 3, oh, ow], seed: seed + 3)
          func fresh(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, data: t.scalars, requiresGrad: true) }
          func pass() -> (y: [Float], dx: [Float], dtaps: [Float]) {
            let (input, taps) = (fresh(x), fresh(weight))
            let y = conv2d(input, weight: taps, bias: bias, stride: s, padding: p, dilation: d, groups: 3)
            y.backward(gradient: g)
            return (y.scalars, input.grad!.scalars, taps.grad!.scalars)
          }
          // The depthwise → 1×1 op with its ReLU fused into the split of x.
          let pointwise = randomInput([4, 3, 1, 1], seed: seed + 4, std: 0.5)
          let fusedGradient = randomInput([2, 4, oh, ow], seed: seed + 5)
          func fusedPass() -> (y: [Float], dx: [Float], dtaps: [Float]) {
            let (input, taps) = (fresh(x), fresh(weight))
            let y = depthwisePointwiseConv2d(
              input, depthwiseWeight: taps, pointwiseWeight: pointwise, stride: s, padding: p, dilation: d,
              reluInput: true)
            y.backward(gradient: fusedGradient)
            return (y.scalars, input.grad!.scalars, taps.grad!.scalars)
          }
          let what = "k\(k) d\(d) s\(s) \(h)×\(w)"
          for (op, run) in [("", pass), (" (fused ReLU → depthwise → 1×1)", fusedPass)] {
            let wide = withKernelBuild(level: 2, run)!, narrow = withKernelBuild(level: 1, run)!
            XCTAssertEqual(differing(wide.y, narrow.y), 0, "\(what)\(op): forward outputs whose bits differ")
            XCTAssertEqual(differing(wide.dx, narrow.dx), 0, "\(what)\(op): input-gradient values whose bits differ")
            XCTAssertEqual(differing(wide.dtaps, narrow.dtaps), 0, "\(what)\(op): tap gradients whose bits differ")
          }
          seed += 10
        }
      }
    }
    // The dense products: 12-row tiles and every smaller count (each its own instance), panels of
    // 32 positions and their remainders.
    let dense = [
      (16, 16, 32, 1), (36, 13, 11, 1), (5, 30, 9, 3), (48, 8, 7, 1), (3, 6, 15, 3), (4, 4, 32, 1), (7, 3, 9, 1),
      (6, 11, 16, 1), (2, 9, 12, 1), (4, 7, 10, 1),
    ]
    for (cin, cout, size, kernel) in dense {
      let x = randomInput([2, cin, size, size], seed: seed)
      let w = randomInput([cout, cin, kernel, kernel], seed: seed + 1)
      let g = randomInput([2, cout, size, size], seed: seed + 2)
      // The forward, then the weight gradient (pcd_matmul_nt_add: 4 × 8 tiles, the partial tiles
      // of 1 to 3 rows × 2 to 6 columns around them, an odd last column; lengths with and without
      // a remainder of 8).
      func pass() -> [Float] {
        let weight = Tensor(shape: w.shape, data: w.scalars, requiresGrad: true)
        let y = conv2d(x, weight: weight, padding: kernel / 2)
        y.backward(gradient: g)
        return y.scalars + weight.grad!.scalars
      }
      XCTAssertEqual(
        differing(withKernelBuild(level: 2, pass)!, withKernelBuild(level: 1, pass)!), 0,
        "\(cin) → \(cout), \(kernel)×\(kernel) on \(size)×\(size): outputs and weight gradients whose bits differ")
      seed += 10
    }
  }

  /// Geometries outside DARTS: a 1×1 kernel at stride 2, odd padding at stride 2 (the even and
  /// odd columns swap halves), padding beyond the kernel's reach, and the generic fallback
  /// (stride 3, a 9×9 kernel).
  func testOtherGeometries() {
    forEachKernelBuild { build in
      // (k, stride, padding, dilation, h, w)
      let cases = [
        (1, 2, 0, 1, 9, 20), (3, 2, 0, 1, 17, 40), (3, 2, 3, 1, 11, 19), (4, 2, 1, 3, 16, 35),
        (3, 1, 3, 1, 6, 21), (7, 2, 3, 1, 20, 33), (3, 3, 1, 1, 13, 50), (9, 1, 4, 1, 12, 30),
      ]
      for (i, t) in cases.enumerated() {
        let (k, s, p, d, h, w) = t
        check(
          "\(build) case \(t)", c: 2, h: h, w: w, k: k, stride: s, padding: p, dilation: d, seed: UInt64(900 + 10 * i))
      }
    }
  }
}
