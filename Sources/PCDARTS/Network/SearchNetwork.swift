// The PC-DARTS super-net (model_search.py's Network). Legend: N batch, C initial channels,
// H×W the input image, E edges per cell (14 for 4 nodes), P primitives (8).

import Foundation
import NeuralNetwork
import TensorEngine

/// The stem that turns the image into the first cells' inputs.
public enum NetworkStem: String, Codable, Sendable, CaseIterable {
  /// model_search.py: a 3 × 3 convolution to 3C channels and a batch norm, at the image's size;
  /// both inputs of the first cell are its output.
  case cifar
  /// model_search_imagenet.py: `stem0` (3 × 3 convolutions with stride 2 to 3C/2 and to 3C
  /// channels, batch norms, a ReLU between) and `stem1` (ReLU, 3 × 3 convolution with stride 2,
  /// batch norm), so the first cell sees 1/8 of the image's side (224 → 28); its inputs are
  /// `stem0`'s output (at 1/4, reduced by the cell's FactorizedReduce) and `stem1`'s.
  case imagenet
}

extension NetworkStem {
  /// The stem's layers for `channels` output channels: CIFAR's `stem` (conv, batch norm) and no
  /// `stem1`, or ImageNet's `stem0` (conv stride 2 to channels/2, batch norm, ReLU, conv stride 2,
  /// batch norm) and `stem1` (ReLU, conv stride 2, batch norm), with the official layer indices.
  func makeLayers(inputChannels: Int, channels: Int, rng: inout SeededGenerator) -> (
    stem: Sequential, stem1: Sequential?
  ) {
    switch self {
    case .cifar:
      return (
        Sequential([
          Conv2d(inChannels: inputChannels, outChannels: channels, kernelSize: 3, padding: 1, rng: &rng),
          BatchNorm2d(channels: channels),
        ]), nil
      )
    case .imagenet:
      let half = channels / 2
      let stem0 = Sequential([
        Conv2d(inChannels: inputChannels, outChannels: half, kernelSize: 3, stride: 2, padding: 1, rng: &rng),
        BatchNorm2d(channels: half), ReLU(),
        Conv2d(inChannels: half, outChannels: channels, kernelSize: 3, stride: 2, padding: 1, rng: &rng),
        BatchNorm2d(channels: channels),
      ])
      let stem1 = Sequential([
        ReLU(),
        Conv2d(inChannels: channels, outChannels: channels, kernelSize: 3, stride: 2, padding: 1, rng: &rng),
        BatchNorm2d(channels: channels),
      ])
      return (stem0, stem1)
    }
  }
}

/// The first cell's two inputs: both the CIFAR stem's output, or ImageNet's stem0 and stem1
/// outputs.
func stemOutputs(_ x: Tensor, stem: Sequential, stem1: Sequential?) -> (Tensor, Tensor) {
  MemoryStats.attributing(to: "forward: stem") {
    let s0 = stem(x)
    return (s0, stem1.map { $0(s0) } ?? s0)
  }
}

/// The shape of a search network; the defaults are the paper's CIFAR-10 settings.
public struct NetworkConfig: Codable, Equatable, Sendable {
  /// C: channels of the first cells (the stem has 3·C).
  public var initChannels = 16
  /// Cells; the reduction cells sit at ⌊layers/3⌋ and ⌊2·layers/3⌋.
  public var layers = 8
  /// Output classes of the classifier (``SearchRun`` sets it from the dataset).
  public var classes = 10
  /// Intermediate nodes per cell.
  public var steps = 4
  /// How many of the last nodes the cell output concatenates.
  public var multiplier = 4
  /// The stem outputs `stemMultiplier`·C channels.
  public var stemMultiplier = 3
  /// K: 1/K of each edge's channels go through the candidate operations.
  public var partialChannels = 4
  /// Image channels (3; Fashion-MNIST is repeated to 3).
  public var inputChannels = 3
  /// How each edge picks the channels that go through its candidates.
  public var channelSampling = ChannelSampling.shuffle
  /// The stem: CIFAR's one convolution, or the ImageNet setting's three.
  public var stem = NetworkStem.cifar

  /// A configuration; each parameter sets the property of the same name.
  public init(
    initChannels: Int = 16, layers: Int = 8, classes: Int = 10, partialChannels: Int = 4,
    steps: Int = 4, multiplier: Int = 4, stemMultiplier: Int = 3
  ) {
    self.initChannels = initChannels
    self.layers = layers
    self.classes = classes
    self.partialChannels = partialChannels
    self.steps = steps
    self.multiplier = multiplier
    self.stemMultiplier = stemMultiplier
  }

  private enum CodingKeys: String, CodingKey {
    case initChannels, layers, classes, steps, multiplier, stemMultiplier, partialChannels, inputChannels
    case channelSampling, stem
  }

  /// Decodes a configuration; a field missing from the JSON (a checkpoint written before the
  /// field existed) keeps its default.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let d = NetworkConfig()
    initChannels = try c.decode(.initChannels, or: d.initChannels)
    layers = try c.decode(.layers, or: d.layers)
    classes = try c.decode(.classes, or: d.classes)
    steps = try c.decode(.steps, or: d.steps)
    multiplier = try c.decode(.multiplier, or: d.multiplier)
    stemMultiplier = try c.decode(.stemMultiplier, or: d.stemMultiplier)
    partialChannels = try c.decode(.partialChannels, or: d.partialChannels)
    inputChannels = try c.decode(.inputChannels, or: d.inputChannels)
    channelSampling = try c.decode(.channelSampling, or: d.channelSampling)
    stem = try c.decode(.stem, or: d.stem)
  }

  /// Edges per cell: 2 + 3 + … + (steps + 1).
  public var edgesPerCell: Int { (0..<steps).reduce(0) { $0 + 2 + $1 } }

  /// Whether cell `i` halves the resolution and doubles the channels.
  public func isReduction(_ i: Int) -> Bool { i == layers / 3 || i == 2 * layers / 3 }

  /// The channel count of every cell's nodes.
  public var cellChannels: [Int] {
    var c = initChannels
    return (0..<layers).map { i in
      if isReduction(i) { c *= 2 }
      return c
    }
  }

  /// Checks the configuration.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` for the first problem, naming the setting
  ///   (`network.<property>`), its value and what would work.
  public func validate() throws {
    func fail(_ setting: String, _ problem: String) throws {
      throw SearchError.invalidSetting("network." + setting, problem)
    }
    if initChannels < 1 || initChannels > 4096 { try fail("initChannels", "must lie in 1...4096, got \(initChannels)") }
    if layers < 3 || layers > 1000 {
      try fail("layers", "must lie in 3...1000 (the two reduction cells need room), got \(layers)")
    }
    if classes < 2 { try fail("classes", "the dataset needs at least 2 classes, got \(classes)") }
    if steps < 1 || steps > 16 { try fail("steps", "must lie in 1...16, got \(steps)") }
    if multiplier < 1 || multiplier > steps + 2 {
      try fail("multiplier", "must lie in 1...steps + 2 = \(steps + 2), got \(multiplier)")
    }
    if stemMultiplier < 1 || stemMultiplier > 16 {
      try fail("stemMultiplier", "must lie in 1...16, got \(stemMultiplier)")
    }
    if classes > 1_000_000 { try fail("classes", "must be at most 1000000, got \(classes)") }
    if partialChannels < 1 { try fail("partialChannels", "K must be at least 1, got \(partialChannels)") }
    for (i, c) in cellChannels.enumerated() {
      if c % partialChannels != 0 {
        try fail(
          "partialChannels",
          "K = \(partialChannels) does not divide the \(c) channels of cell \(i); "
            + "choose a K that divides \(c) (e.g. 1, 2 or 4) or other initial channels")
      }
      if isReduction(i) && (c / partialChannels) % 2 != 0 {
        try fail(
          "partialChannels",
          "cell \(i) is a reduction cell with \(c)/K = \(c / partialChannels) channels per op; "
            + "its skip_connect (FactorizedReduce) needs an even count: lower K or raise the initial channels")
      }
    }
  }
}

extension NetworkConfig {
  /// The weights of the super-net over DARTS's search space, counted from the shape alone (no
  /// network is built): what ``SearchNetwork/weightCount`` gives for ``SearchSpace/darts``.
  public var dartsWeightCount: Int {
    let stemChannels = stemMultiplier * initChannels
    var total = 0
    switch stem {
    case .cifar:
      total += 9 * inputChannels * stemChannels + 2 * stemChannels
    case .imagenet:
      let half = stemChannels / 2
      total += 9 * inputChannels * half + 2 * half + 9 * half * stemChannels + 2 * stemChannels
      total += 9 * stemChannels * stemChannels + 2 * stemChannels
    }
    var (previousPrevious, previous, c) = (stemMultiplier * initChannels, stemMultiplier * initChannels, initChannels)
    for i in 0..<layers {
      if isReduction(i) { c *= 2 }
      let p = c / partialChannels
      // The two 1×1 preprocessing convolutions (or FactorizedReduce: the same count), then per
      // edge the two separable convolutions (2·(K²p + p²) each), the two dilated ones
      // (K²p + p²) and, on stride-2 edges, skip_connect's FactorizedReduce (p²).
      total += (previousPrevious + previous) * c + edgesPerCell * (102 * p + 6 * p * p)
      if isReduction(i) { total += 2 * steps * p * p }
      (previousPrevious, previous) = (previous, multiplier * c)
    }
    return total + previous * classes + classes
  }

  /// An estimate of the peak tensor bytes of one search iteration at `batchSize` on 32×32
  /// images: the weights with their gradients and momentum, plus the activations, which grow
  /// with the batch and with each cell's channels × pixels and shrink with K as a + b/K. The
  /// constants come from `bench` (8 cells, 16 channels, batch 64, peak tensor bytes at K = 1, 2, 4,
  /// 8 within 3% of a + b/K): a = 56 and b = 1003 bytes per image, channel and pixel (at 70cabdf),
  /// a = 60 and b = 666 with `recomputesDepthwise` (``Engine/recomputesDepthwiseOutputs``); other
  /// shapes are extrapolated, so treat it as a guide to ±30%.
  /// `imageSide` is the input's height and width (32 for CIFAR); activations scale with its square.
  /// With the ImageNet stem the cells start at 1/8 of the side, and the stem's own maps (at 1/2,
  /// 1/4 and 1/8, about three float tensors each) are added.
  public func estimatedPeakTensorBytes(
    batchSize: Int, imageSide: Int = 32, recomputesDepthwise: Bool = Engine.recomputesDepthwiseOutputs
  ) -> Double {
    var (c, side, units) = (initChannels, imageSide, 0.0)
    var stemBytes = 0.0
    if stem == .imagenet {
      let (s, stemChannels) = (Double(imageSide), Double(stemMultiplier * initChannels))
      stemBytes =
        12
        * (stemChannels / 2 * (s / 2) * (s / 2) + stemChannels * (s / 4) * (s / 4) + stemChannels * (s / 8) * (s / 8))
      side = imageSide / 8
    }
    for i in 0..<layers {
      if isReduction(i) { (c, side) = (c * 2, side / 2) }
      units += Double(c) * Double(side * side)
    }
    let activations =
      Double(batchSize)
      * (units * (recomputesDepthwise ? 60 + 666 / Double(partialChannels) : 56 + 1003 / Double(partialChannels))
        + stemBytes)
    return activations + 12 * Double(dartsWeightCount)
  }
}

/// Why images of `height` × `width` cannot pass through the DARTS networks, or `nil` if they can.
///
/// The two reduction cells halve the feature maps, and their FactorizedReduce concatenates the
/// halves of an even side only (as in the official code), so both sides must be multiples of 4;
/// the ImageNet stem halves them three times before (and its first cell reduces the stem's
/// 1/4-size map again), so multiples of 32 there. The evaluation network's auxiliary head (5 × 5
/// pooling with stride 3, then a 2 × 2 convolution, to 1 × 1 for its 768-input classifier) takes
/// maps of 8 to 10 pixels a side after the reductions, so images of 32, 36 or 40; ImageNet's
/// (stride 2) 7 or 8, so images of 224 or 256.
public func inputSizeProblem(
  height: Int, width: Int, auxiliaryHead: Bool = false, stem: NetworkStem = .cifar
) -> String? {
  let factor = stem == .imagenet ? 32 : 4
  if height % factor != 0 || width % factor != 0 || height < factor || width < factor {
    return "images of \(height) × \(width) pixels cannot be halved by the "
      + (stem == .imagenet ? "ImageNet stem and the two reduction cells" : "two reduction cells")
      + ": use an image size that is a multiple of \(factor) (\(stem == .imagenet ? 224 : 32), say)"
  }
  guard auxiliaryHead else { return nil }
  // The image sides whose map after the reductions (a factor-th of the side) the head takes.
  let sides = AuxiliaryHead.inputSides(imagenet: stem == .imagenet).map { $0 * factor }
  if height < sides[0] || width < sides[0] {
    return "the auxiliary head needs images of at least \(sides[0]) × \(sides[0]) pixels, these are "
      + "\(height) × \(width): use a larger image size or no auxiliary head"
  }
  if !sides.contains(height) || !sides.contains(width) {
    let listed = sides.dropLast().map(String.init).joined(separator: ", ") + " or \(sides.last!)"
    return "the auxiliary head's 5 × 5 pooling and 2 × 2 convolution end at 1 × 1 only for images of \(listed) "
      + "pixels a side (as the official head's classifier expects), these are \(height) × \(width): "
      + "use one of those sizes or no auxiliary head"
  }
  return nil
}

/// How a mixed op picks the C/K channels of its edge input that go through its candidates.
public enum ChannelSampling: String, Codable, Sendable, CaseIterable {
  /// The first C/K channels; the candidates' output and the bypassed channels are then
  /// concatenated and channel-shuffled with K groups (PC-DARTS, the paper's setting).
  case shuffle
  /// A new random subset of C/K channels per edge and forward pass, drawn from the network's
  /// seeded ``SearchNetwork/channelSampler``; the processed channels return to their own
  /// positions and the others bypass in place, so no shuffle is needed. This is what the
  /// official `model_search_random.py` meant to do (its `random_shuffle` permutes a local copy
  /// and so never changes which channels are processed).
  case random
}

/// The architecture parameters: α (E, P) per cell type and β (E) per cell type.
public final class ArchitectureParameters {
  /// α of the normal and the reduction cells, (E, P): one row of operation logits per edge.
  public let alphasNormal: Tensor, alphasReduce: Tensor
  /// β of the normal and the reduction cells, (E): edge logits, normalised by a softmax over
  /// each node's in-edges.
  public let betasNormal: Tensor, betasReduce: Tensor

  /// Initialised as 1e-3 · N(0, 1), as the official code does.
  public init(edges: Int, primitives: Int, rng: inout SeededGenerator) {
    alphasNormal = Tensor.randomNormal([edges, primitives], std: 1e-3, using: &rng, requiresGrad: true)
    alphasReduce = Tensor.randomNormal([edges, primitives], std: 1e-3, using: &rng, requiresGrad: true)
    betasNormal = Tensor.randomNormal([edges], std: 1e-3, using: &rng, requiresGrad: true)
    betasReduce = Tensor.randomNormal([edges], std: 1e-3, using: &rng, requiresGrad: true)
  }

  /// The four tensors with their official names, in the official order.
  public var named: [(String, Tensor)] {
    [
      ("alphas_normal", alphasNormal), ("alphas_reduce", alphasReduce),
      ("betas_normal", betasNormal), ("betas_reduce", betasReduce),
    ]
  }

  /// The four tensors, in the official order.
  public var all: [Tensor] { named.map(\.1) }
}

/// The PC-DARTS search network: stem, `layers` search cells, global pooling, classifier.
public final class SearchNetwork: Module {
  /// The shape the network was built with.
  public let config: NetworkConfig
  /// The candidate operations, in α-column order.
  public let space: SearchSpace
  /// With the CIFAR stem: conv 3×3 (3 → 3C) and an affine batch norm (`stem.0`, `stem.1`). With
  /// the ImageNet stem its `stem0`: conv 3×3 stride 2 (3 → 3C/2), batch norm, ReLU, conv 3×3
  /// stride 2 (→ 3C), batch norm (`stem0.0`, `stem0.1`, `stem0.3`, `stem0.4`).
  public let stem: Sequential
  /// With the ImageNet stem: ReLU, conv 3×3 stride 2 (3C → 3C), batch norm (`stem1.1`, `stem1.2`);
  /// `nil` with the CIFAR stem.
  public let stem1: Sequential?
  /// The search cells (`cells.<i>`); reduction cells at ⌊layers/3⌋ and ⌊2·layers/3⌋.
  public let cells: ModuleList<Cell>
  /// Linear (multiplier·C of the last cell → classes) after global average pooling.
  public let classifier: Linear
  /// α and β; not module parameters, so ``parameters()`` (the weights) excludes them.
  public let arch: ArchitectureParameters
  /// With ``ChannelSampling/random`` (and K > 1): the generator every forward pass draws the
  /// edges' channel subsets from; its ``SeededGenerator/state`` goes into checkpoints, so a
  /// resumed run draws the same subsets. `nil` otherwise.
  public var channelSampler: SeededGenerator?

  /// Builds the network with weights and architecture parameters drawn from `rng`.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` when the configuration cannot work (K does
  ///   not fit the channels, say).
  public init(config: NetworkConfig, space: SearchSpace = .darts, rng: inout SeededGenerator) throws {
    try config.validate()
    self.config = config
    self.space = space
    let c = config.initChannels
    let stemChannels = config.stemMultiplier * c
    (stem, stem1) = config.stem.makeLayers(inputChannels: config.inputChannels, channels: stemChannels, rng: &rng)
    var (prevPrev, prev) = (stemChannels, stemChannels)
    // The ImageNet stem's first cell takes stem0's map at twice its side: a FactorizedReduce.
    var reductionPrev = config.stem == .imagenet
    var built: [Cell] = []
    for (i, channels) in config.cellChannels.enumerated() {
      let reduction = config.isReduction(i)
      built.append(
        Cell(
          steps: config.steps, multiplier: config.multiplier, previousPrevious: prevPrev, previous: prev,
          channels: channels, reduction: reduction, reductionPrevious: reductionPrev,
          partialChannels: config.partialChannels, space: space, rng: &rng))
      reductionPrev = reduction
      (prevPrev, prev) = (prev, config.multiplier * channels)
    }
    cells = ModuleList(built)
    classifier = Linear(inFeatures: prev, outFeatures: config.classes, rng: &rng)
    arch = ArchitectureParameters(edges: config.edgesPerCell, primitives: space.count, rng: &rng)
    // Drawn last, so the weights and α/β of a random-sampling network equal a shuffle one's.
    if config.channelSampling == .random && config.partialChannels > 1 {
      channelSampler = SeededGenerator(seed: rng.next())
    }
  }

  /// `stem` (or `stem0` and `stem1`), `cells` and `classifier`, the official attribute names.
  public override var children: [(String, Module)] {
    let stems: [(String, Module)] = stem1.map { [("stem0", stem), ("stem1", $0)] } ?? [("stem", stem)]
    return stems + [("cells", cells), ("classifier", classifier)]
  }

  /// The class scores of a batch.
  /// - Parameter x: (N, 3, H, W), H and W divisible by 4 (by 32 with the ImageNet stem).
  /// - Returns: (N, classes).
  public func callAsFunction(_ x: Tensor) -> Tensor {
    let opNormal = softmax(arch.alphasNormal)
    let opReduce = softmax(arch.alphasReduce)
    let edgeNormal = normalizedEdgeWeights(arch.betasNormal)
    let edgeReduce = normalizedEdgeWeights(arch.betasReduce)
    // The stem output feeds both inputs of cell 0; every cell output the two cells after it.
    var (s0, s1) = stemOutputs(x, stem: stem, stem1: stem1)
    var output = s1
    for cell in cells.modules {
      let (ops, edges) = cell.reduction ? (opReduce, edgeReduce) : (opNormal, edgeNormal)
      output = cell(s0, s1, opWeights: ops, edgeWeights: edges, channelSubsets: drawChannelSubsets(cell))
      (s0, s1) = (s1, output)
    }
    return classifier(globalAvgPool2d(output))
  }

  /// One random subset of C/K channels per edge of `cell` (sorted), or nil without random
  /// sampling.
  private func drawChannelSubsets(_ cell: Cell) -> [[Int]]? {
    guard var rng = channelSampler else { return nil }
    defer { channelSampler = rng }
    let c = cell.ops[0].channels
    let p = c / cell.partialChannels
    return (0..<cell.ops.count).map { _ in
      // A partial Fisher–Yates shuffle: the first P of a random permutation.
      var channels = Array(0..<c)
      for i in 0..<p { channels.swapAt(i, i + rng.nextInt(below: c - i)) }
      return channels[..<p].sorted()
    }
  }

  /// The mean cross-entropy of the network's predictions for a batch.
  public func loss(_ x: Tensor, labels: [Int32]) -> Tensor {
    crossEntropy(self(x), labels: labels)
  }

  /// β turned into edge weights: a softmax over each node's in-edges (node i has i + 2).
  public func normalizedEdgeWeights(_ betas: Tensor) -> Tensor {
    var parts: [Tensor] = []
    var start = 0
    for node in 0..<config.steps {
      parts.append(softmax(slice(betas, start..<start + node + 2)))
      start += node + 2
    }
    return concatRows(parts)
  }

  /// Runs `body` with the architecture parameters (α, β) frozen, so that the backward pass of a
  /// weight step spends no work on architecture gradients, which that step would not use; they
  /// require gradients again afterwards, even if `body` throws.
  ///
  /// The freeze is read when the graph is recorded, so the forward pass must run inside `body`.
  public func withFrozenArchitecture<T>(_ body: () throws -> T) rethrows -> T {
    for p in arch.all { p.requiresGrad = false }
    defer { for p in arch.all { p.requiresGrad = true } }
    return try body()
  }

  /// The number of weights (architecture parameters not counted), as PyTorch's
  /// `sum(p.numel() for p in model.parameters())`.
  public var weightCount: Int { parameters().reduce(0) { $0 + $1.count } }
}
