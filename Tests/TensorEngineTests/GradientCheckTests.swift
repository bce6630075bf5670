// Every op's backward against central finite differences (TestSupport.checkGradients), including
// the edge cases the DARTS search space exercises: stride 2, padding, dilation 2, groups,
// odd sizes and the 1:-slices of FactorizedReduce.

import TestSupport
import XCTest

@testable import TensorEngine

final class GradientCheckTests: XCTestCase {
  /// Values spread away from 0 and from each other, so ±step never crosses a ReLU kink or
  /// reorders a max-pool window.
  func spreadInput(_ shape: [Int], seed: UInt64) -> Tensor {
    let count = shape.reduce(1, *)
    var rng = SeededGenerator(seed: seed)
    var values = (0..<count).map { i -> Float in
      let magnitude = 0.1 + 0.05 * Float(i)
      return i % 2 == 0 ? magnitude : -magnitude
    }
    values.shuffle(using: &rng)
    return Tensor(shape: shape, data: values, requiresGrad: true)
  }

  func testConvolutionVariants() {
    // (name, C, O, H, W, kernel, stride, padding, dilation, groups, bias)
    let cases: [(String, Int, Int, Int, Int, Int, Int, Int, Int, Int, Bool)] = [
      ("3x3 pad 1 bias", 3, 4, 6, 5, 3, 1, 1, 1, 1, true),
      ("3x3 stride 2 odd", 2, 3, 7, 7, 3, 2, 1, 1, 1, false),
      ("3x3 dilation 2", 2, 3, 7, 6, 3, 1, 2, 2, 1, false),
      ("grouped 2", 4, 6, 5, 5, 3, 1, 1, 1, 2, true),
      ("1x1 direct", 3, 5, 4, 5, 1, 1, 0, 1, 1, false),
      ("1x1 stride 2", 3, 2, 7, 7, 1, 2, 0, 1, 1, false),
      ("depthwise 3 s1 d1", 3, 3, 6, 7, 3, 1, 1, 1, 3, false),
      ("depthwise 5 s2 d1", 3, 3, 9, 8, 5, 2, 2, 1, 3, false),
      ("depthwise 3 s1 d2", 2, 2, 7, 7, 3, 1, 2, 2, 2, false),
      ("depthwise 5 s2 d2", 2, 2, 9, 9, 5, 2, 4, 2, 2, true),
    ]
    for (i, c) in cases.enumerated() {
      let (name, cin, cout, h, w, k, s, p, d, g, hasBias) = c
      let x = randomInput([2, cin, h, w], seed: UInt64(10 + i))
      let weight = randomInput([cout, cin / g, k, k], seed: UInt64(30 + i), std: 0.5)
      let bias = hasBias ? randomInput([cout], seed: UInt64(50 + i)) : nil
      checkGradients("conv2d \(name)", inputs: [x, weight] + (bias.map { [$0] } ?? [])) { t in
        conv2d(t[0], weight: t[1], bias: hasBias ? t[2] : nil, stride: s, padding: p, dilation: d, groups: g)
      }
    }
  }

  /// Every convolution path against the naive reference, on rows wide enough (40, 70) for the
  /// vectorised kernels' 32- and 8-column blocks and their scalar tails, and the depthwise
  /// gradients of wide rows against finite differences.
  func testConvolutionPathsAgreeWithTheNaiveReferenceOnWideRows() {
    // (C, O, H, W, kernel, stride, padding, dilation, groups)
    let cases: [(Int, Int, Int, Int, Int, Int, Int, Int, Int)] = [
      (3, 3, 4, 40, 3, 1, 1, 1, 3), (3, 3, 5, 70, 5, 1, 2, 1, 3), (2, 2, 6, 40, 3, 1, 2, 2, 2),
      (2, 2, 9, 70, 5, 1, 4, 2, 2), (2, 2, 6, 41, 3, 2, 1, 1, 2), (2, 2, 9, 70, 5, 2, 4, 2, 2),
      (3, 4, 3, 40, 1, 1, 0, 1, 1), (4, 6, 3, 37, 3, 1, 1, 1, 2), (3, 2, 5, 40, 1, 2, 0, 1, 1),
    ]
    for (i, t) in cases.enumerated() {
      let (c, o, h, w, k, s, p, d, g) = t
      let x = randomInput([2, c, h, w], seed: UInt64(60 + i))
      let weight = randomInput([o, c / g, k, k], seed: UInt64(80 + i), std: 0.5)
      let fast = conv2d(x, weight: weight, stride: s, padding: p, dilation: d, groups: g)
      let reference = referenceConv2d(
        x: x.scalars, xShape: x.shape, weight: weight.scalars, wShape: weight.shape,
        stride: s, padding: p, dilation: d, groups: g)
      assertClose(fast.scalars, reference, tolerance: 1e-5, "conv case \(i) \(t)")
      if g == c && o == c {
        checkGradients("depthwise wide \(t)", inputs: [x, weight], maxChecks: 150) { v in
          conv2d(v[0], weight: v[1], stride: s, padding: p, dilation: d, groups: g)
        }
      }
    }
  }

  func testPools() {
    forEachKernelBuild { build in
      let x = spreadInput([2, 3, 7, 7], seed: 1)
      checkGradients("\(build) max 3x3 s1", inputs: [x]) { maxPool2d($0[0], kernel: 3, stride: 1, padding: 1) }
      checkGradients("\(build) max 3x3 s2", inputs: [x]) { maxPool2d($0[0], kernel: 3, stride: 2, padding: 1) }
      checkGradients("\(build) max 2x2 s2", inputs: [spreadInput([2, 2, 6, 6], seed: 2)]) {
        maxPool2d($0[0], kernel: 2, stride: 2)
      }
      checkGradients("\(build) avg 3x3 s1", inputs: [x]) { avgPool2d($0[0], kernel: 3, stride: 1, padding: 1) }
      checkGradients("\(build) avg 3x3 s2", inputs: [x]) { avgPool2d($0[0], kernel: 3, stride: 2, padding: 1) }
      checkGradients("\(build) global avg", inputs: [x]) { globalAvgPool2d($0[0]) }
    }
  }

  func testBatchNorm() {
    let x = randomInput([3, 2, 4, 5], seed: 3)
    let gamma = randomInput([2], seed: 4)
    let beta = randomInput([2], seed: 5)
    let state = BatchNormState(runningMean: Tensor(zeros: [2]), runningVar: Tensor(repeating: 1, shape: [2]))
    checkGradients("bn train affine", inputs: [x, gamma, beta], step: 1e-3, tolerance: 2e-2) {
      batchNorm2d($0[0], weight: $0[1], bias: $0[2], state: state, training: true)
    }
    checkGradients("bn train plain", inputs: [x], step: 1e-3, tolerance: 2e-2) {
      batchNorm2d($0[0], weight: nil, bias: nil, state: state, training: true)
    }
    checkGradients("bn eval affine", inputs: [x, gamma, beta]) {
      batchNorm2d($0[0], weight: $0[1], bias: $0[2], state: state, training: false)
    }
  }

  func testBatchNormReLU() {
    forEachKernelBuild { build in
      let x = randomInput([3, 2, 4, 5], seed: 60)
      let gamma = randomInput([2], seed: 61), beta = randomInput([2], seed: 62)
      let state = freshState(2)
      checkGradients("\(build) bn+relu train affine", inputs: [x, gamma, beta], step: 1e-3, tolerance: 2e-2) {
        batchNormReLU($0[0], weight: $0[1], bias: $0[2], state: state, training: true)
      }
      checkGradients("\(build) bn+relu train plain", inputs: [x], step: 1e-3, tolerance: 2e-2) {
        batchNormReLU($0[0], weight: nil, bias: nil, state: state, training: true)
      }
      checkGradients("\(build) bn+relu eval affine", inputs: [x, gamma, beta], step: 1e-3, tolerance: 2e-2) {
        batchNormReLU($0[0], weight: $0[1], bias: $0[2], state: state, training: false)
      }
      // Equal to the two ops in sequence, on planes of 6×7 (vector body and tail).
      for t in [gamma, beta] { t.zeroGrad() }
      for training in [true, false] {
        let wide = randomInput([3, 2, 6, 7], seed: 63, std: 2)
        let (fusedState, plainState) = (freshState(2), freshState(2))
        let fused = batchNormReLU(wide, weight: gamma, bias: beta, state: fusedState, training: training)
        let plain = relu(batchNorm2d(wide, weight: gamma, bias: beta, state: plainState, training: training))
        assertClose(fused, plain, tolerance: 1e-6, "\(build) forward, training \(training)")
        assertClose(fusedState.runningVar, plainState.runningVar, tolerance: 1e-6, "\(build) running variance")
        let projection = randomInput([3, 2, 6, 7], seed: 64)
        fused.backward(gradient: projection)
        let fusedGrads = [wide, gamma, beta].map { $0.grad! }
        for t in [wide, gamma, beta] { t.zeroGrad() }
        plain.backward(gradient: projection)
        for (k, t) in [wide, gamma, beta].enumerated() {
          assertClose(fusedGrads[k], t.grad!, tolerance: 1e-5, "\(build) gradient \(k), training \(training)")
        }
        for t in [wide, gamma, beta] { t.zeroGrad() }
      }
    }
  }

  func testDepthwiseThenPointwiseEqualsTheTwoConvolutionsBitForBitAndKeepsLess() {
    forEachKernelBuild { build in
      for (stride, padding, dilation, kernel) in [(1, 1, 1, 3), (2, 2, 1, 5), (1, 2, 2, 3), (2, 4, 2, 5)] {
        let x = randomInput([2, 4, 9, 8], seed: 70, std: 1)
        let dw = randomInput([4, 1, kernel, kernel], seed: 71), pw = randomInput([6, 4, 1, 1], seed: 72)
        for t in [x, dw, pw] { t.requiresGrad = true }
        let what = "\(build) stride \(stride) dilation \(dilation) kernel \(kernel)"
        checkGradients(what, inputs: [x, dw, pw]) {
          depthwisePointwiseConv2d(
            $0[0], depthwiseWeight: $0[1], pointwiseWeight: $0[2], stride: stride, padding: padding, dilation: dilation)
        }
        // Against the two convolutions: the same kernels in the same order, so equal bits.
        for t in [x, dw, pw] { t.zeroGrad() }
        let fused = depthwisePointwiseConv2d(
          x, depthwiseWeight: dw, pointwiseWeight: pw, stride: stride, padding: padding, dilation: dilation)
        let middle = conv2d(x, weight: dw, stride: stride, padding: padding, dilation: dilation, groups: 4)
        let plain = conv2d(middle, weight: pw)
        XCTAssertEqual(fused.scalars, plain.scalars, what)
        let projection = randomInput(fused.shape, seed: 73)
        fused.backward(gradient: projection)
        let fusedGrads = [x, dw, pw].map { $0.grad!.scalars }
        for t in [x, dw, pw] { t.zeroGrad() }
        plain.backward(gradient: projection)
        for (k, t) in [x, dw, pw].enumerated() {
          XCTAssertEqual(fusedGrads[k], t.grad!.scalars, "\(what): gradient \(k)")
        }
        for t in [x, dw, pw] { t.zeroGrad() }
      }
      // Between the forward and the backward pass it keeps x, not the depthwise output.
      let x = randomInput([2, 4, 16, 16], seed: 74)
      let dw = randomInput([4, 1, 3, 3], seed: 75), pw = randomInput([4, 4, 1, 1], seed: 76)
      for t in [x, dw, pw] { t.requiresGrad = true }
      let before = MemoryStats.liveBytes
      let fused = depthwisePointwiseConv2d(x, depthwiseWeight: dw, pointwiseWeight: pw, padding: 1)
      let keptFused = MemoryStats.liveBytes - before
      let plain = conv2d(conv2d(x, weight: dw, padding: 1, groups: 4), weight: pw)
      let keptPlain = MemoryStats.liveBytes - before - keptFused
      XCTAssertEqual(keptFused, fused.count * 4, "\(build): the output alone")
      XCTAssertEqual(keptPlain, 2 * plain.count * 4, "\(build): the output and the depthwise output")
    }
  }

  func testDepthwiseThenPointwiseThroughReLUEqualsReLUThenTheOpBitForBit() {
    forEachKernelBuild { build in
      for (stride, padding, dilation, kernel) in [(1, 1, 1, 3), (2, 2, 1, 5), (1, 2, 2, 3), (2, 4, 2, 5)] {
        // Half the inputs negative and none near 0, where the ReLU has its kink.
        let x = spreadInput([2, 4, 9, 8], seed: 80)
        let dw = randomInput([4, 1, kernel, kernel], seed: 81), pw = randomInput([6, 4, 1, 1], seed: 82)
        let what = "\(build) stride \(stride) dilation \(dilation) kernel \(kernel)"
        func op(_ input: Tensor, reluInput: Bool) -> Tensor {
          depthwisePointwiseConv2d(
            input, depthwiseWeight: dw, pointwiseWeight: pw, stride: stride, padding: padding, dilation: dilation,
            reluInput: reluInput)
        }
        checkGradients(what, inputs: [x, dw, pw]) {
          depthwisePointwiseConv2d(
            $0[0], depthwiseWeight: $0[1], pointwiseWeight: $0[2], stride: stride, padding: padding,
            dilation: dilation, reluInput: true)
        }
        // Against relu then the op, with x's gradient written (its only reader) and then added
        // (after another reader's): the same values in the same order, so equal bits.
        let projection = randomInput(op(x, reluInput: true).shape, seed: 83)
        var results: [[[Float]]] = []
        for fused in [true, false] {
          for t in [x, dw, pw] { t.zeroGrad() }
          let y = fused ? op(x, reluInput: true) : op(relu(x), reluInput: false)
          y.backward(gradient: projection)
          let written = [x, dw, pw].map { $0.grad!.scalars }
          x.zeroGrad()
          scale(x, by: 3).backward(gradient: Tensor(repeating: 1, shape: x.shape))
          (fused ? op(x, reluInput: true) : op(relu(x), reluInput: false)).backward(gradient: projection)
          results.append([y.scalars] + written + [x.grad!.scalars])
        }
        for (k, name) in ["output", "dx", "ddepthwise", "dpointwise", "dx added"].enumerated() {
          XCTAssertEqual(results[0][k], results[1][k], "\(what): \(name)")
        }
      }
    }
  }

  /// With both weights frozen (the architecture step) the fused op's backward recomputes no
  /// depthwise plane, as only the weights' gradients read them, and its input gradient keeps
  /// every bit; with one weight trainable it recomputes what that gradient reads.
  func testDepthwiseThenPointwiseWithFrozenWeightsRecomputesOnlyWhatTheirGradientsRead() {
    forEachKernelBuild { build in
      for (stride, padding, dilation, kernel) in [(1, 1, 1, 3), (2, 2, 1, 5), (1, 4, 2, 5)] {
        let x = spreadInput([2, 4, 9, 8], seed: 84)
        let dw = randomInput([4, 1, kernel, kernel], seed: 85), pw = randomInput([6, 4, 1, 1], seed: 86)
        let what = "\(build) stride \(stride) dilation \(dilation) kernel \(kernel)"
        let oh = (9 + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1
        let ow = (8 + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1
        let projection = randomInput([2, 6, oh, ow], seed: 87)
        let depthwiseFLOPs = Double(2 * 2 * 4 * kernel * kernel * oh * ow)
        // The input and tap gradients and the backward's counts with the given weights trainable.
        func backward(_ trainable: (depthwise: Bool, pointwise: Bool)) -> ([Float], [Float], OperationCounts) {
          let input = x.copy(requiresGrad: true)
          dw.requiresGrad = trainable.depthwise
          pw.requiresGrad = trainable.pointwise
          defer { (dw.requiresGrad, pw.requiresGrad) = (false, false) }
          let y = depthwisePointwiseConv2d(
            input, depthwiseWeight: dw, pointwiseWeight: pw, stride: stride, padding: padding, dilation: dilation,
            reluInput: true)
          let (_, counts) = OperationCounter.counting { y.backward(gradient: projection) }
          let taps = dw.grad?.scalars ?? []
          dw.zeroGrad()
          pw.zeroGrad()
          return (input.grad!.scalars, taps, counts)
        }
        let (trainedDx, trainedTaps, trained) = backward((true, true))
        let (frozenDx, _, frozen) = backward((false, false))
        let (_, taps, depthwiseOnly) = backward((true, false))
        XCTAssertEqual(frozenDx.map(\.bitPattern), trainedDx.map(\.bitPattern), "\(what): dx")
        XCTAssertEqual(taps.map(\.bitPattern), trainedTaps.map(\.bitPattern), "\(what): ddepthwise")
        XCTAssertEqual(trained.byOperation["depthwise conv2d"]?.flops, depthwiseFLOPs, "\(what): recomputed forward")
        XCTAssertNil(frozen.byOperation["depthwise conv2d"], "\(what): nothing recomputed with frozen weights")
        XCTAssertNil(depthwiseOnly.byOperation["depthwise conv2d"], "\(what): the tap gradients read the split x only")
      }
    }
  }

  func testConvolutionThroughReLUEqualsReLUThenTheConvolutionBitForBit() {
    forEachKernelBuild { build in
      // The direct 1×1 product, im2col (stride 2, a padded 3×3 with groups and a bias, a 2×2).
      for (kernel, stride, padding, groups, bias) in [
        (1, 1, 0, 1, false), (1, 2, 0, 1, false), (3, 1, 1, 2, true), (2, 1, 0, 1, false),
      ] {
        // Half the inputs negative and none near 0, where the ReLU has its kink.
        let x = spreadInput([2, 4, 9, 8], seed: 90)
        let w = randomInput([6, 4 / groups, kernel, kernel], seed: 91)
        let b = bias ? randomInput([6], seed: 92) : nil
        let what = "\(build) kernel \(kernel) stride \(stride) groups \(groups)"
        func op(_ input: Tensor, reluInput: Bool) -> Tensor {
          conv2d(input, weight: w, bias: b, stride: stride, padding: padding, groups: groups, reluInput: reluInput)
        }
        checkGradients(what, inputs: [x, w] + (b.map { [$0] } ?? [])) {
          conv2d(
            $0[0], weight: $0[1], bias: bias ? $0[2] : nil, stride: stride, padding: padding, groups: groups,
            reluInput: true)
        }
        // Against relu then the convolution, with x's gradient written (its only reader) and then
        // added (after another reader's): the same values in the same order, so equal bits.
        let parameters = [w] + (b.map { [$0] } ?? [])
        let projection = randomInput(op(x, reluInput: true).shape, seed: 93)
        var results: [[[Float]]] = []
        for fused in [true, false] {
          for t in [x] + parameters { t.zeroGrad() }
          let y = fused ? op(x, reluInput: true) : op(relu(x), reluInput: false)
          y.backward(gradient: projection)
          let written = ([x] + parameters).map { $0.grad!.scalars }
          x.zeroGrad()
          scale(x, by: 3).backward(gradient: Tensor(repeating: 1, shape: x.shape))
          (fused ? op(x, reluInput: true) : op(relu(x), reluInput: false)).backward(gradient: projection)
          results.append([y.scalars] + written + [x.grad!.scalars])
        }
        let names = ["output", "dx", "dweight"] + (bias ? ["dbias"] : []) + ["dx added"]
        for (k, name) in names.enumerated() {
          XCTAssertEqual(results[0][k], results[1][k], "\(what): \(name)")
        }
        XCTAssertTrue(results[0][1].contains(0) && results[0][1].contains { $0 != 0 }, "\(what): a masked dx")
      }
    }
  }

  func testNormalizedWeightedSumHasExactGradients() {
    // Two normalised terms and one identity term; 20 values per plane leave a vector tail.
    let xs = (0..<3).map { randomInput([3, 2, 4, 5], seed: 30 + UInt64($0)) }
    let w = randomInput([4], seed: 33)
    let norms = [freshState(2), nil, freshState(2)]
    checkGradients("normalized sum train", inputs: xs + [w], step: 1e-3, tolerance: 2e-2) {
      normalizedWeightedSum(Array($0[0..<3]), norms: norms, training: true, weights: $0[3], indices: [3, 0, 1])
    }
    let running = [
      BatchNormState(runningMean: randomInput([2], seed: 34), runningVar: Tensor(shape: [2], data: [0.5, 2])),
      nil, freshState(2),
    ]
    checkGradients("normalized sum eval", inputs: xs + [w]) {
      normalizedWeightedSum(Array($0[0..<3]), norms: running, training: false, weights: $0[3], indices: [3, 0, 1])
    }
  }

  func testNormalizedWeightedSumEqualsNormalisingEachTerm() {
    forEachKernelBuild { build in
      // Eight terms (more than one register group of the fused kernel) on planes of 6×7 values.
      for training in [true, false] {
        let xs = (0..<8).map { randomInput([3, 2, 6, 7], seed: 40 + UInt64($0), std: 2) }
        let w = randomInput([9], seed: 50)
        let indices = [8, 0, 1, 2, 3, 5, 6, 7]
        let normalised = Set([0, 2, 3, 5, 6, 7])
        let fusedNorms = (0..<8).map { normalised.contains($0) ? freshState(2) : nil }
        let plainNorms = (0..<8).map { normalised.contains($0) ? freshState(2) : nil }
        let fused = normalizedWeightedSum(xs, norms: fusedNorms, training: training, weights: w, indices: indices)
        let plain = weightedSum(
          zip(xs, plainNorms).map { x, norm in
            norm.map { batchNorm2d(x, weight: nil, bias: nil, state: $0, training: training) } ?? x
          }, weights: w, indices: indices)
        assertClose(fused, plain, tolerance: 1e-5, "\(build) forward, training \(training)")
        for case let (a?, b?) in zip(fusedNorms, plainNorms) {
          assertClose(a.runningMean, b.runningMean, tolerance: 1e-6, "\(build) running mean")
          assertClose(a.runningVar, b.runningVar, tolerance: 1e-6, "\(build) running variance")
        }
        let projection = randomInput([3, 2, 6, 7], seed: 51)
        fused.backward(gradient: projection)
        let fusedGrads = (xs + [w]).map { $0.grad! }
        for x in xs + [w] { x.zeroGrad() }
        plain.backward(gradient: projection)
        for (k, x) in (xs + [w]).enumerated() {
          assertClose(fusedGrads[k], x.grad!, tolerance: 1e-4, "\(build) gradient \(k), training \(training)")
        }
      }
    }
  }

  func testNormalizedWeightedSumAddsToTheGradientsOfInputsWithOtherReaders() {
    // x is an intermediate tensor read as a normalised term, as an identity term and by the sum
    // after it (a mixed op's edge input: read by several candidates and edges), so its terms'
    // gradients are added into a buffer that already holds another reader's; the leaf y's
    // gradient already holds a first backward pass's.
    for training in [true, false] {
      let x0 = randomInput([3, 2, 4, 5], seed: 60)
      let (y, z) = (randomInput([3, 2, 4, 5], seed: 61), randomInput([3, 2, 4, 5], seed: 62))
      let w = randomInput([4], seed: 63)
      let projection = randomInput([3, 2, 4, 5], seed: 64)
      func loss(fused: Bool) -> Tensor {
        let x = weightedSum([x0], weights: Tensor(shape: [1], data: [1.5]))
        let states = [BatchNormState?]([freshState(2), nil, nil, freshState(2)])
        let terms = [x, y, x, z]
        let sum =
          fused
          ? normalizedWeightedSum(terms, norms: states, training: training, weights: w)
          : weightedSum(
            zip(terms, states).map { t, state in
              state.map { batchNorm2d(t, weight: nil, bias: nil, state: $0, training: training) } ?? t
            }, weights: w)
        return weightedSum([sum, x], weights: Tensor(shape: [2], data: [1, -0.5]))
      }
      loss(fused: false).backward(gradient: projection)
      let plain = [x0, y, z, w].map { $0.grad!.scalars }
      loss(fused: true).backward(gradient: projection)  // adds to the leaves' gradients
      for (k, leaf) in [x0, y, z, w].enumerated() {
        let twice = Tensor(shape: leaf.shape, data: plain[k].map { 2 * $0 })
        assertClose(leaf.grad!, twice, tolerance: 1e-4, "gradient \(k), training \(training)")
      }
    }
  }

  private func freshState(_ channels: Int) -> BatchNormState {
    BatchNormState(runningMean: Tensor(zeros: [channels]), runningVar: Tensor(repeating: 1, shape: [channels]))
  }

  func testElementwiseAndWeightedSums() {
    let a = spreadInput([2, 3, 4, 4], seed: 6)
    let b = randomInput([2, 3, 4, 4], seed: 7)
    let c = randomInput([2, 3, 4, 4], seed: 8)
    let w = randomInput([5], seed: 9)
    checkGradients("relu", inputs: [a]) { relu($0[0]) }
    checkGradients("add", inputs: [b, c]) { add($0[0], $0[1]) }
    checkGradients("sum", inputs: [a, b, c]) { sum($0) }
    checkGradients("scale", inputs: [b]) { scale($0[0], by: -1.5) }
    checkGradients("weightedSum", inputs: [a, b, c, w]) {
      weightedSum([$0[0], $0[1], $0[2]], weights: $0[3], indices: [4, 0, 2])
    }
    checkGradients("scale by element", inputs: [b, w]) { scale($0[0], byElementOf: $0[1], at: 3) }
    // The same tensor twice: gradient contributions must add up, not overwrite.
    checkGradients("add x + x", inputs: [b]) { add($0[0], $0[0]) }
    // Drop-path's node sum: per-sample factors (dropped 0, kept 1/0.7), and a term left as it is.
    let scales: [[Float]?] = [[0, 1 / 0.7], nil, [1 / 0.7, 1 / 0.7]]
    checkGradients("sum with sample scales", inputs: [a, b, c]) { sum($0, sampleScales: scales) }
    checkGradients("sum with sample scales, x twice", inputs: [b]) {
      sum([$0[0], $0[0]], sampleScales: [[2, 0], nil])
    }
  }

  func testSumWithSampleScalesIsItsDefinition() {
    // y[n] = Σₜ fₜ[n]·xₜ[n], the per-sample scaled paths of DARTS's drop_path, summed.
    let (a, b) = (randomInput([3, 2, 3, 5], seed: 21), randomInput([3, 2, 3, 5], seed: 22))
    let factors: [Float] = [0, 1 / 0.7, 1 / 0.7]
    let y = sum([a, b], sampleScales: [factors, nil])
    let plane = 2 * 3 * 5
    var expected = [Float](repeating: 0, count: y.count)
    for i in 0..<y.count { expected[i] = a.scalars[i] * factors[i / plane] + b.scalars[i] }
    assertClose(y.scalars, expected, tolerance: 1e-7, "sum(_:sampleScales:)")
  }

  func testShapeOps() {
    let x = randomInput([2, 6, 5, 3], seed: 11)
    let y = randomInput([2, 2, 5, 3], seed: 12)
    checkGradients("concat", inputs: [x, y]) { concatChannels([$0[0], $0[1], $0[0]]) }
    checkGradients("slice channels", inputs: [x]) { sliceChannels($0[0], 1..<4) }
    checkGradients("shuffle 3", inputs: [x]) { channelShuffle($0[0], groups: 3) }
    checkGradients("crop 1:,1:", inputs: [x]) { cropTopLeft($0[0], top: 1, left: 1) }
    checkGradients("shuffledConcat", inputs: [y, x]) { shuffledConcat($0[0], $0[1], bChannels: 2..<6, groups: 3) }
    // The fused op equals its definition.
    let fused = shuffledConcat(y, x, bChannels: 2..<6, groups: 3)
    let reference = channelShuffle(concatChannels([y, sliceChannels(x, 2..<6)]), groups: 3)
    XCTAssertEqual(fused.scalars, reference.scalars)
    checkGradients("reshape", inputs: [x]) { reshape($0[0], [2, 90]) }
    let m = randomInput([4, 3], seed: 13)
    checkGradients("slice rows", inputs: [m]) { slice($0[0], 1..<3) }
    checkGradients("concat rows", inputs: [m]) { concatRows([slice($0[0], 2..<4), slice($0[0], 0..<1)]) }
  }

  func testGatherChannelsHasExactGradients() {
    let x = randomInput([2, 6, 3, 3], seed: 14)
    checkGradients("gather channels", inputs: [x]) { gatherChannels($0[0], [4, 0, 1, 5]) }
    // Read twice, so the second backward adds into the first's gradient.
    checkGradients("gather channels twice", inputs: [x]) { t in
      add(gatherChannels(t[0], [2, 3]), gatherChannels(relu(t[0]), [3, 5]))
    }
    assertClose(gatherChannels(x, [1, 2, 3]), sliceChannels(x, 1..<4), tolerance: 0, "a run of channels is a slice")
  }

  func testPartialChannelSumOfSampledChannelsKeepsThemInPlace() {
    forEachKernelBuild { build in
      // C = 6, P = 2: edges processing channels {1, 4}, {0, 5} (stride 1) and {2, 3} (stride 2).
      let channels = [[1, 4], [0, 5], [2, 3]]
      let inputs = [
        randomInput([2, 2, 4, 4], seed: 40), randomInput([2, 2, 4, 4], seed: 41), randomInput([2, 2, 4, 4], seed: 42),
        randomInput([2, 6, 4, 4], seed: 43), randomInput([2, 6, 4, 4], seed: 44), spreadInput([2, 6, 8, 8], seed: 45),
        randomInput([4], seed: 46),
      ]
      func fused(_ t: [Tensor]) -> Tensor {
        partialChannelSum(
          processed: [t[0], t[1], t[2]], inputs: [t[3], t[4], t[5]], strides: [1, 1, 2],
          weights: t[6], indices: [3, 1, 0], processedChannels: channels)
      }
      func reference(_ t: [Tensor]) -> Tensor {
        let edges = (0..<3).map { e -> Tensor in
          let rest = (0..<6).filter { !channels[e].contains($0) }
          let bypass =
            e == 2 ? maxPool2d(gatherChannels(t[5], rest), kernel: 2, stride: 2) : gatherChannels(t[3 + e], rest)
          // Channel o of the merge is processed channel j when o = channels[e][j], else bypass.
          let order = (0..<6).map { o in channels[e].firstIndex(of: o) ?? 2 + rest.firstIndex(of: o)! }
          return gatherChannels(concatChannels([t[e], bypass]), order)
        }
        return weightedSum(edges, weights: t[6], indices: [3, 1, 0])
      }
      assertClose(fused(inputs), reference(inputs), tolerance: 1e-6, "\(build) forward")
      checkGradients("\(build) sampled partialChannelSum", inputs: inputs, fused)
      assertSameGradients(fused, reference, inputs: inputs, projection: randomInput([2, 6, 4, 4], seed: 47), build)
    }
  }

  /// Checks that `f` and `reference` give every input the same gradient of ⟨output, projection⟩,
  /// and clears the gradients afterwards.
  private func assertSameGradients(
    _ f: ([Tensor]) -> Tensor, _ reference: ([Tensor]) -> Tensor, inputs: [Tensor], projection: Tensor,
    tolerance: Double = 1e-5, _ what: String, file: StaticString = #filePath, line: UInt = #line
  ) {
    for x in inputs { x.zeroGrad() }
    f(inputs).backward(gradient: projection)
    let grads = inputs.map { $0.grad!.scalars }
    for x in inputs { x.zeroGrad() }
    reference(inputs).backward(gradient: projection)
    for (i, x) in inputs.enumerated() {
      assertClose(grads[i], x.grad!.scalars, tolerance: tolerance, "\(what) gradient \(i)", file: file, line: line)
    }
    for x in inputs { x.zeroGrad() }
  }

  func testPartialChannelSumEqualsItsDefinitionAndHasExactGradients() {
    forEachKernelBuild { build in
      // Two edges at stride 1 and one at stride 2 into a node of C = 6 channels, K = 3 (P = 2).
      let x1 = randomInput([2, 6, 4, 4], seed: 20), x2 = randomInput([2, 6, 4, 4], seed: 21)
      let x3 = spreadInput([2, 6, 8, 8], seed: 22)
      let p1 = randomInput([2, 2, 4, 4], seed: 23), p2 = randomInput([2, 2, 4, 4], seed: 24)
      let p3 = randomInput([2, 2, 4, 4], seed: 25)
      let beta = randomInput([5], seed: 26)
      func fused(_ t: [Tensor]) -> Tensor {
        partialChannelSum(
          processed: [t[0], t[1], t[2]], inputs: [t[3], t[4], t[5]], strides: [1, 1, 2],
          weights: t[6], indices: [4, 0, 2], groups: 3)
      }
      func reference(_ t: [Tensor]) -> Tensor {
        let pooled = maxPool2d(sliceChannels(t[5], 2..<6), kernel: 2, stride: 2)
        let edges = [
          shuffledConcat(t[0], t[3], bChannels: 2..<6, groups: 3),
          shuffledConcat(t[1], t[4], bChannels: 2..<6, groups: 3),
          shuffledConcat(t[2], pooled, bChannels: 0..<4, groups: 3),
        ]
        return weightedSum(edges, weights: t[6], indices: [4, 0, 2])
      }
      let inputs = [p1, p2, p3, x1, x2, x3, beta]
      assertClose(fused(inputs), reference(inputs), tolerance: 1e-6, "\(build) forward")
      checkGradients("\(build) partialChannelSum", inputs: inputs, fused)
      // And the same gradients as the composition it replaces.
      assertSameGradients(
        fused, reference, inputs: inputs, projection: randomInput([2, 6, 4, 4], seed: 27), tolerance: 1e-6, build)
      // Inputs that are op outputs read by several ops, as the nodes of a cell: the later sum's
      // backward runs first and leaves a pending gradient on x, first and big, so the earlier sum
      // and the slices add into it in place (stride 1 and 2).
      func chained(_ t: [Tensor]) -> Tensor {
        let (x, big) = (scale(t[3], by: 1.5), scale(t[5], by: 0.5))
        let first = partialChannelSum(
          processed: [sliceChannels(x, 0..<2), t[0]], inputs: [x, big],
          strides: [1, 2], weights: t[6], indices: [0, 1], groups: 3)
        return partialChannelSum(
          processed: [sliceChannels(first, 0..<2), relu(sliceChannels(x, 2..<4)), t[1]],
          inputs: [first, x, big], strides: [1, 1, 2], weights: t[6],
          indices: [2, 3, 4], groups: 3)
      }
      checkGradients("\(build) chained partialChannelSums", inputs: [p1, p2, x1, x3, beta]) {
        chained([$0[0], $0[1], p3, $0[2], x2, $0[3], $0[4]])
      }
    }
  }

  func testDenseSoftmaxAndLoss() {
    let x = randomInput([3, 5], seed: 14)
    let w = randomInput([4, 5], seed: 15)
    let b = randomInput([4], seed: 16)
    checkGradients("linear", inputs: [x, w, b]) { linear($0[0], weight: $0[1], bias: $0[2]) }
    checkGradients("softmax rows", inputs: [x]) { softmax($0[0]) }
    checkGradients("softmax vector", inputs: [b]) { softmax($0[0]) }
    checkGradients("cross entropy", inputs: [x]) { crossEntropy($0[0], labels: [4, 0, 2]) }
    checkGradients("cross entropy, label smoothing 0.1", inputs: [x]) {
      crossEntropy($0[0], labels: [4, 0, 2], labelSmoothing: 0.1)
    }
  }

  /// train_imagenet.py's CrossEntropyLabelSmooth(ε = 0.1), the value PyTorch 1.13 gives for
  /// `F.cross_entropy(x, y, label_smoothing=0.1)` in float64.
  func testLabelSmoothingMatchesPyTorch() {
    let x = Tensor(shape: [2, 4], data: [0.5, -1.25, 2.0, 0.0, 1.5, 0.25, -0.75, 3.0])
    XCTAssertEqual(crossEntropy(x, labels: [2, 0], labelSmoothing: 0.1).item, 1.1618575851062556, accuracy: 1e-6)
    XCTAssertEqual(
      crossEntropy(x, labels: [2, 0], labelSmoothing: 0).item, crossEntropy(x, labels: [2, 0]).item)
  }

  func testZeroOpHasShapeAndNoGradient() {
    let x = randomInput([2, 3, 7, 6], seed: 17)
    XCTAssertEqual(zerosLike(x, stride: 1).shape, [2, 3, 7, 6])
    XCTAssertEqual(zerosLike(x, stride: 2).shape, [2, 3, 4, 3])
    XCTAssertEqual(zerosLike(x, stride: 2).scalars.max(), 0)
  }
}
