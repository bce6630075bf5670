// A tool that links the engine and the search as libraries: it adds its own candidate operation
// (`conv_1x1`) to the DARTS search space, builds a small PC-DARTS super-net over it, runs a few
// bi-level search steps on random data and prints the losses, the genotype and the peak memory.
//
// Legend: N batch, C channels, H×W the plane, s the edge's stride.

import NeuralNetwork
import PCDARTS
import TensorEngine

/// ReLU → 1×1 convolution (stride s) → non-affine batch norm: (N, C, H, W) → (N, C, ⌈H/s⌉, ⌈W/s⌉).
///
/// Conforming to `FusableCandidate` lets a mixed op hand it the ReLU of the edge input, which it
/// computes once for every candidate that reads it, and fold the final non-affine batch norm into
/// its weighted sum; `output(on:)` must equal `callAsFunction(_:)` once the norm is applied.
final class Conv1x1: Layer, FusableCandidate {
  /// Sequential(ReLU, Conv2d 1×1, BatchNorm2d): state names `op.1.weight`, `op.2.running_mean`, …
  let op: Sequential
  private let conv: Conv2d
  private let norm: BatchNorm2d

  init(channels: Int, stride: Int, rng: inout SeededGenerator) {
    // A 1×1 kernel with no padding: ⌊(H − 1)/s⌋ + 1 = ⌈H/s⌉ rows, as a reduction edge needs.
    conv = Conv2d(inChannels: channels, outChannels: channels, kernelSize: 1, stride: stride, rng: &rng)
    norm = BatchNorm2d(channels: channels, affine: false)
    op = Sequential([ReLU(), conv, norm])
  }

  override var children: [(String, Module)] { [("op", op)] }
  override func callAsFunction(_ x: Tensor) -> Tensor { op(x) }
  func output(on input: EdgeInput) -> CandidateOutput { .beforeNorm(conv(input.activated), norm: norm) }
}

// The DARTS space plus one column: α becomes (14, 9), conv_1x1 being column 8.
let space = SearchSpace.darts.adding(
  Primitive(name: "conv_1x1") { channels, stride, rng in
    Conv1x1(channels: channels, stride: stride, rng: &rng)
  })
print("search space:", space.names.joined(separator: ", "))

// The paper's search settings but for a 5-cell super-net with 8 initial channels; K = 2 sends
// half of each edge's channels through the candidate operations.
var settings = SearchSettings()
settings.network = NetworkConfig(initChannels: 8, layers: 5, classes: 10, partialChannels: 2)
settings.batchSize = 8
settings.seed = 7
// The network, SGD on the weights, Adam on α and β, and the search's iteration over them.
let search = try SearchIteration(settings: settings, space: space)
let network = search.network
print("weights: \(network.weightCount), alphas_normal: \(network.arch.alphasNormal.shape)")

/// A batch of N random 8×8 images (H and W must be divisible by 4) with random labels.
var rng = SeededGenerator(seed: 8)
func randomBatch(_ n: Int) -> LabeledBatch {
  LabeledBatch(
    images: Tensor.randomNormal([n, 3, 8, 8], using: &rng),
    labels: (0..<n).map { _ in Int32(rng.nextInt(below: settings.network.classes)) })
}

let memory = MemoryMeasurement()
for step in 1...3 {
  // Architecture step (Adam on α and β, validation loss), then weight step (SGD, training loss).
  let result = try search.run(train: randomBatch(8), valid: randomBatch(8), epoch: 0, step: step)
  print("step \(step): valid loss \(result.validLoss!), train loss \(result.trainLoss)")
}

print("genotype:", network.genotype().pythonDescription)
print("peak tensor bytes:", memory.peakBytes)
