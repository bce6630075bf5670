import NeuralNetwork
import PCDARTS
import TensorEngine
import TestSupport
import XCTest

final class NetworkGradientTests: XCTestCase {
  func testArchitectureAndWeightGradientsMatchFiniteDifferences() throws {
    for k in [1, 2] {
      var rng = SeededGenerator(seed: 5)
      let net = try SearchNetwork(
        config: NetworkConfig(initChannels: 4, layers: 3, classes: 3, partialChannels: k, steps: 2, multiplier: 2),
        rng: &rng)
      for p in net.arch.all { for j in 0..<p.count { p.pointer[j] = 0.5 * rng.nextNormal() } }
      let x = Tensor.randomNormal([3, 3, 8, 8], using: &rng)
      // Float32 finite differences of a whole network with ReLU kinks agree to a few percent
      // only; exact agreement is checked against PyTorch's golden values (GoldenNetworkTests).
      let inputs = net.arch.all + [net.classifier.weight]
      checkGradients("network K=\(k)", inputs: inputs, step: 1e-2, tolerance: 0.1, maxChecks: 40) { _ in
        reshape(net.loss(x, labels: [0, 2, 1]), [1])
      }
    }
  }
}
