// SGD's virtual step (the second-order architecture gradient's w′) is its real step uncommitted.

import NeuralNetwork
import TensorEngine
import TestSupport
import XCTest

final class OptimizerTests: XCTestCase {
  func testAVirtualStepMovesTheParametersAsTheRealStepWithoutTouchingTheMomentum() {
    let p = Tensor(shape: [3], data: [1, -2, 0.5], requiresGrad: true)
    let sgd = SGD(parameters: [p], learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)
    // Step 1 creates the momentum buffer: buf = g + wd·p.
    p.grad = Tensor(shape: [3], data: [0.3, 0.1, -0.2])
    sgd.step()
    let buffer = sgd.momentumBuffers[0]!.scalars
    assertClose(buffer, [0.3 + 0.01, 0.1 - 0.02, -0.2 + 0.005], tolerance: 1e-6, "first buffer")
    let before = p.scalars
    let g = Tensor(shape: [3], data: [-0.4, 0.2, 0.7])
    sgd.step(gradients: [g], updatingState: false)
    let virtual = p.scalars
    // w′ = w − lr·(μ·buf + g + wd·w), and the buffer is unchanged.
    let gradient = g.scalars
    let expected: [Float] = (0..<3).map { i in
      let direction: Float = 0.9 * buffer[i] + gradient[i] + 0.01 * before[i]
      return before[i] - 0.1 * direction
    }
    assertClose(virtual, expected, tolerance: 1e-6, "virtual step")
    XCTAssertEqual(sgd.momentumBuffers[0]!.scalars, buffer, "the virtual step changed the momentum")
    // The real step from the same point lands on the same parameters and commits the buffer.
    p.assign(Tensor(shape: [3], data: before))
    p.grad = g
    sgd.step()
    XCTAssertEqual(p.scalars, virtual)
    XCTAssertNotEqual(sgd.momentumBuffers[0]!.scalars, buffer)
  }
}
