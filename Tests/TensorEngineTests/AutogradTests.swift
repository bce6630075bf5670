import Foundation
import TensorEngine
import TestSupport
import XCTest

final class AutogradTests: XCTestCase {
  func testForwardBackwardReturnsLiveBytesToStart() {
    let x = randomInput([4, 3, 8, 8], seed: 1)
    let w = randomInput([6, 3, 3, 3], seed: 2)
    let state = BatchNormState(runningMean: Tensor(zeros: [6]), runningVar: Tensor(repeating: 1, shape: [6]))
    // One warm-up pass allocates the leaves' gradients, which then stay.
    func pass() {
      let y = relu(batchNorm2d(conv2d(x, weight: w, padding: 1), weight: nil, bias: nil, state: state, training: true))
      let loss = crossEntropy(
        linear(
          globalAvgPool2d(maxPool2d(y, kernel: 3, stride: 2, padding: 1)),
          weight: Tensor(repeating: 0.1, shape: [5, 6])), labels: [0, 1, 2, 3])
      loss.backward()
    }
    pass()
    let before = MemoryStats.liveBytes
    let (_, memory) = MemoryStats.measure { pass() }
    XCTAssertEqual(MemoryStats.liveBytes, before, "every activation and graph node is released")
    XCTAssertEqual(memory.startBytes, before)
    // The peak held at least the conv output, BN output and ReLU output (3 × 4·6·8·8 floats).
    XCTAssertGreaterThanOrEqual(memory.growthBytes, 3 * 4 * 6 * 64 * 4)
  }

  func testNoGradRecordsNothing() {
    let x = randomInput([2, 3], seed: 3)
    let y = withNoGrad { softmax(x) }
    XCTAssertFalse(y.requiresGrad)
    XCTAssertTrue(softmax(x).requiresGrad)
  }

  func testGradientsAccumulateAcrossBackwardCalls() {
    let x = Tensor(shape: [2], data: [1, 2], requiresGrad: true)
    let w = Tensor(shape: [1], data: [3], requiresGrad: true)
    scale(x, byElementOf: w, at: 0).backward(gradient: Tensor(shape: [2], data: [1, 1]))
    scale(x, byElementOf: w, at: 0).backward(gradient: Tensor(shape: [2], data: [1, 1]))
    XCTAssertEqual(x.grad?.scalars, [6, 6])
    XCTAssertEqual(w.grad?.scalars, [6])
  }

  func testDiamondGraphSumsBothPaths() {
    // y = relu(x) used twice: d(sum(a + a))/dx = 2 where x > 0.
    let x = Tensor(shape: [3], data: [-1, 2, 3], requiresGrad: true)
    let a = relu(x)
    add(a, a).backward(gradient: Tensor(repeating: 1, shape: [3]))
    XCTAssertEqual(x.grad?.scalars, [0, 2, 2])
  }

  /// A client's op (plain import: public API only): 2·x[0..<2], whose backward adds into the first
  /// two elements of x's gradient through its accumulator instead of returning a full gradient.
  private func doubledHead(_ x: Tensor) -> Tensor {
    let out = Tensor(shape: [2], data: [2 * x.scalars[0], 2 * x.scalars[1]])
    return record(out, inputs: [x]) { [target = x.gradientAccumulator] g in
      guard let (dx, isFresh) = target?.buffer() else { return [nil] }
      if isFresh { dx.fill(0) }
      for i in 0..<2 { dx.pointer[i] += 2 * g.pointer[i] }
      return [nil]
    }
  }

  func testAnOpAddsIntoPartOfAnInputsGradientThroughItsAccumulator() {
    let ones = Tensor(repeating: 1, shape: [2])
    // A leaf whose only reader is the op: the buffer is fresh and the op zero-fills the rest.
    let leaf = Tensor(shape: [3], data: [1, -2, 3], requiresGrad: true)
    doubledHead(leaf).backward(gradient: ones)
    XCTAssertEqual(leaf.grad?.scalars, [2, 2, 0])
    // A second backward adds into the leaf's existing gradient.
    doubledHead(leaf).backward(gradient: ones)
    XCTAssertEqual(leaf.grad?.scalars, [4, 4, 0])
    // An op output read twice: once by the op, once by an add; both orders of arrival agree with
    // finite differences.
    let x = Tensor(shape: [3], data: [0.5, -1.5, 2.5], requiresGrad: true)
    checkGradients("accumulated head", inputs: [x]) { t in
      let r = scale(t[0], by: 3)
      return add(doubledHead(r), slice(r, 1..<3))
    }
    checkGradients("fresh head", inputs: [x]) { t in doubledHead(scale(t[0], by: 3)) }
    XCTAssertNil(Tensor(shape: [1], data: [1]).gradientAccumulator, "no accumulator without requiresGrad")
  }

  func testMemoryMeasurementsNestWithoutResettingEachOther() {
    let outer = MemoryMeasurement()
    var big: Tensor? = Tensor(zeros: [1 << 16])  // 256 KiB
    big = nil
    let (_, inner) = MemoryStats.measure { _ = Tensor(zeros: [1 << 10]) }
    XCTAssertNil(big)
    XCTAssertGreaterThanOrEqual(inner.growthBytes, 4 << 10)
    XCTAssertLessThan(inner.growthBytes, 1 << 18, "the inner measurement starts after the big tensor died")
    XCTAssertGreaterThanOrEqual(outer.growthBytes, 1 << 18, "the inner measurement did not reset the outer one")
    outer.stop()
    let stopped = outer.peakBytes
    _ = Tensor(zeros: [1 << 18])
    XCTAssertEqual(outer.peakBytes, stopped, "a stopped measurement keeps its figure")
    XCTAssertGreaterThanOrEqual(MemoryStats.peakBytes, stopped)
  }

  func testAPeakBreakdownAttributesTheBytesAliveAtThePeak() {
    let measurement = MemoryMeasurement(breakdown: true)
    var kept: [Tensor] = []
    MemoryStats.attributing(to: "test: a") {
      kept.append(Tensor(zeros: [1 << 14]))  // 64 KiB
      MemoryStats.attributing(to: "test: b") { kept.append(Tensor(zeros: [1 << 12])) }  // 16 KiB, innermost wins
      kept.append(Tensor(zeros: [1 << 12]))  // 16 KiB more of a
    }
    kept = []
    // Below the peak: changes nothing.
    MemoryStats.attributing(to: "test: b") { _ = Tensor(zeros: [1 << 10]) }
    measurement.stop()
    let parts = Dictionary(uniqueKeysWithValues: measurement.peakBreakdown.map { ($0.name, $0.bytes) })
    XCTAssertEqual(parts["test: a"], 80 << 10)
    XCTAssertEqual(parts["test: b"], 16 << 10)
    XCTAssertEqual(parts.values.reduce(0, +), measurement.peakBytes, "the parts add up to the peak")
    XCTAssertTrue(MemoryMeasurement().peakBreakdown.isEmpty, "no breakdown unless asked for")
  }

  func testGradModeBelongsToTheCallingThread() {
    let x = Tensor(shape: [2], data: [1, -1], requiresGrad: true)
    let inside = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
    let other = Thread {
      withNoGrad {
        inside.signal()
        done.wait()
      }
    }
    other.start()
    inside.wait()
    // Another thread is inside withNoGrad; this one still records.
    XCTAssertTrue(GradMode.isEnabled)
    XCTAssertTrue(relu(x).requiresGrad)
    done.signal()
    withNoGrad { XCTAssertFalse(relu(x).requiresGrad) }
    XCTAssertTrue(GradMode.isEnabled)
  }
}
