// Engine.threadCount: any count gives the same result on every run, and counts agree closely.
// Engine.retainsFreedMemory: freed memory is reused without a page fault, however much was freed.
// Engine.blasCoreName: OpenBLAS runs the core OPENBLAS_CORETYPE names, else one with AVX2 + FMA
// kernels where the processor runs them.

import Foundation
import TensorEngine
import TestSupport
import XCTest
import _CKernels

final class EngineSettingsTests: XCTestCase {
  /// Forward and backward of conv → batch norm → ReLU → pool → linear on a fixed batch: the loss,
  /// then the gradients of the input and the weights, as one list of values.
  private func pass() -> [Float] {
    var rng = SeededGenerator(seed: 21)
    let x = Tensor.randomNormal([8, 3, 12, 12], using: &rng, requiresGrad: true)
    let w = Tensor.randomNormal([16, 3, 3, 3], std: 0.3, using: &rng, requiresGrad: true)
    let v = Tensor.randomNormal([5, 16], std: 0.3, using: &rng, requiresGrad: true)
    let state = BatchNormState(runningMean: Tensor(zeros: [16]), runningVar: Tensor(repeating: 1, shape: [16]))
    let y = batchNormReLU(conv2d(x, weight: w, padding: 1), weight: nil, bias: nil, state: state, training: true)
    let loss = crossEntropy(
      linear(globalAvgPool2d(maxPool2d(y, kernel: 3, stride: 2, padding: 1)), weight: v),
      labels: [0, 1, 2, 3, 4, 0, 1, 2])
    loss.backward()
    return [loss.item] + x.grad!.scalars + w.grad!.scalars + v.grad!.scalars
  }

  func testOpenBLASRunsTheNamedCoreOrOneWithAVX2WhereTheProcessorHasIt() {
    let core = Engine.blasCoreName.lowercased()
    if let named = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] {
      XCTAssertEqual(core, named.lowercased(), "OPENBLAS_CORETYPE=\(named) is the user's choice")
    } else if pcd_cpu_vector_level() >= 1 {
      XCTAssert(
        ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"].contains(core),
        "an AVX2 + FMA processor runs OpenBLAS's \(core) kernels")
    }
  }

  func testEveryThreadCountRepeatsItselfExactlyAndCountsAgree() {
    let original = Engine.threadCount
    defer { Engine.threadCount = original }
    var results: [[Float]] = []
    for threads in [1, 2, 3] {
      Engine.threadCount = threads
      XCTAssertEqual(Engine.threadCount, threads)
      let first = pass()
      XCTAssertEqual(first, pass(), "\(threads) threads: two runs differ")
      results.append(first)
    }
    for (i, r) in results.enumerated().dropFirst() {
      assertClose(r, results[0], tolerance: 1e-5, "\(i + 1) threads against 1")
    }
  }

  /// Minor page faults of this process so far.
  private func pageFaults() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_minflt
  }

  func testFreedMemoryIsReusedWithoutPageFaultsEvenAboveTwoGiB() {
    XCTAssertTrue(Engine.retainsFreedMemory, "the default")
    // 2.25 GiB in 9 tensors of 256 MiB, freed together: glibc's heap top then holds more than
    // the 2 GiB that an Int32 trim threshold allowed, and it used to be returned to the system, so
    // the next step faulted every page in again (589,824 faults of 4 KiB here).
    let (count, shape) = (9, [64, 1024, 1024])
    func touchAll() {
      let tensors = (0..<count).map { _ in Tensor(repeating: 1, shape: shape) }
      XCTAssertEqual(tensors.count, count)
    }
    touchAll()
    let before = pageFaults()
    touchAll()
    let faults = pageFaults() - before
    XCTAssertLessThan(faults, 1000, "the second allocation faulted \(faults) pages in again")
  }
}
