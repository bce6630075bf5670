// The network a genotype is trained as from scratch (DARTS model.py's NetworkCIFAR, which the
// PC-DARTS train.py uses). Legend: N batch, C initial channels, H×W the input image (32×32).

import Foundation
import NeuralNetwork
import TensorEngine

/// The shape of an evaluation network; the defaults are the paper's CIFAR-10 evaluation.
public struct EvaluationConfig: Codable, Equatable, Sendable {
  /// C: channels of the first cells (the stem has 3·C).
  public var initChannels = 36
  /// Cells; the reduction cells sit at ⌊layers/3⌋ and ⌊2·layers/3⌋.
  public var layers = 20
  /// Output classes of the classifier (``TrainingRun`` sets it from the dataset).
  public var classes = 10
  /// Whether the auxiliary head (after cell ⌊2·layers/3⌋) is built and trained.
  public var auxiliary = true
  /// Image channels (3; Fashion-MNIST is repeated to 3).
  public var inputChannels = 3
  /// The stem: `NetworkCIFAR`'s convolution to 3·C channels, or `NetworkImageNet`'s three
  /// stride-2 convolutions (stem0 to C/2 and C, stem1 to C; 224 → 28) with the ImageNet
  /// auxiliary head.
  public var stem = NetworkStem.cifar

  /// A configuration; each parameter sets the property of the same name.
  public init(
    initChannels: Int = 36, layers: Int = 20, classes: Int = 10, auxiliary: Bool = true, stem: NetworkStem = .cifar
  ) {
    (self.initChannels, self.layers, self.classes, self.auxiliary) = (initChannels, layers, classes, auxiliary)
    self.stem = stem
  }

  private enum CodingKeys: String, CodingKey { case initChannels, layers, classes, auxiliary, inputChannels, stem }

  /// Decodes a configuration; a field missing from the JSON (a checkpoint written before the
  /// field existed) keeps its default.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let d = EvaluationConfig()
    initChannels = try c.decode(.initChannels, or: d.initChannels)
    layers = try c.decode(.layers, or: d.layers)
    classes = try c.decode(.classes, or: d.classes)
    auxiliary = try c.decode(.auxiliary, or: d.auxiliary)
    inputChannels = try c.decode(.inputChannels, or: d.inputChannels)
    stem = try c.decode(.stem, or: d.stem)
  }

  /// The CIFAR stem outputs 3·C channels, as in DARTS (the ImageNet stem C).
  public static let stemMultiplier = 3

  /// The channels of the stem's output: 3·C, or C with the ImageNet stem.
  public var stemChannels: Int { stem == .imagenet ? initChannels : EvaluationConfig.stemMultiplier * initChannels }

  /// Whether cell `i` halves the resolution and doubles the channels.
  public func isReduction(_ i: Int) -> Bool { i == layers / 3 || i == 2 * layers / 3 }

  /// The cell after which the auxiliary head reads (⌊2·layers/3⌋, the second reduction cell).
  public var auxiliaryCell: Int { 2 * layers / 3 }

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
    if classes < 2 || classes > 1_000_000 { try fail("classes", "must lie in 2...1000000, got \(classes)") }
  }
}

/// The auxiliary classifier of DARTS's CIFAR network (`AuxiliaryHeadCIFAR`), which reads the
/// 8×8 output of the second reduction cell: ReLU, 5×5 average pool with stride 3 (to 2×2), 1×1
/// convolution to 128 channels, batch norm, ReLU, 2×2 convolution to 768, batch norm, ReLU,
/// then a linear classifier. Its loss, weighted, joins the main loss in training only.
///
/// The ImageNet variant (`AuxiliaryHeadImageNet`) reads a 7×7 map: its pool has stride 2, and
/// the batch norm after the 768-channel convolution is left out, as in the paper's experiments
/// (the official code comments it out).
public final class AuxiliaryHead: Module {
  /// The eight layers (`features.0` … `features.7`; seven for the ImageNet variant).
  public let features: Sequential
  /// 768 → classes.
  public let classifier: Linear

  /// The stride of the head's 5×5 average pool: 3, or 2 in the ImageNet variant.
  static func poolStride(imagenet: Bool) -> Int { imagenet ? 2 : 3 }

  /// The sides of the maps the head takes: its pool and 2×2 convolution must end at 1×1, as its
  /// 768-input classifier expects, so 8...10 (7...8 for the ImageNet variant).
  static func inputSides(imagenet: Bool) -> ClosedRange<Int> {
    let stride = poolStride(imagenet: imagenet)
    return (5 + stride)...(5 + 2 * stride - 1)
  }

  /// A head on `channels` input channels for `classes` classes.
  public init(channels: Int, classes: Int, imagenet: Bool = false, rng: inout SeededGenerator) {
    let head: [Layer] = [
      ReLU(),
      AvgPool2d(kernel: 5, stride: AuxiliaryHead.poolStride(imagenet: imagenet), padding: 0, countIncludePad: false),
      Conv2d(inChannels: channels, outChannels: 128, kernelSize: 1, rng: &rng),
      BatchNorm2d(channels: 128),
      ReLU(),
      Conv2d(inChannels: 128, outChannels: 768, kernelSize: 2, rng: &rng),
    ]
    features = Sequential(head + (imagenet ? [] : [BatchNorm2d(channels: 768)]) + [ReLU()])
    classifier = Linear(inFeatures: 768, outFeatures: classes, rng: &rng)
  }

  /// `features`, `classifier`, the official attribute names.
  public override var children: [(String, Module)] { [("features", features), ("classifier", classifier)] }

  /// The head applied to x of shape (N, C, S, S), S in 8...10 (7...8 for the ImageNet variant;
  /// ``inputSizeProblem(height:width:auxiliaryHead:stem:)`` names the images that give those);
  /// returns (N, classes).
  public func callAsFunction(_ x: Tensor) -> Tensor {
    let f = features(x)
    precondition(
      f.shape[2] == 1 && f.shape[3] == 1,
      "AuxiliaryHead: expects maps of 8 to 10 pixels a side (a 32×32 image after two reductions; 7 or 8 for "
        + "ImageNet's), got \(x.shape)")
    return classifier(reshape(f, [f.shape[0], f.shape[1]]))
  }
}

/// A cell of a derived architecture (DARTS model.py's `Cell`): two preprocessed inputs, then
/// per intermediate node the sum of two chosen operations, each on an earlier node; the output
/// concatenates the nodes of `concat`.
public final class EvaluationCell: Module {
  /// Bring the two inputs to C channels: `preprocess0` is a FactorizedReduce when the previous
  /// cell reduced, a 1×1 ReLUConvBN otherwise; `preprocess1` is always a 1×1 ReLUConvBN (all
  /// with affine batch norms).
  public let preprocess0: ReLUFirstLayer, preprocess1: ReLUFirstLayer
  /// The chosen operations, two per node (`_ops`).
  public let ops: ModuleList<Layer>
  /// The node each operation reads (DARTS's `_indices`): 0 and 1 the inputs, 2… the nodes.
  public let inputs: [Int]
  /// The nodes the output concatenates.
  public let concat: [Int]
  /// Whether the cell halves H and W (stride 2 on the operations that read its inputs).
  public let reduction: Bool
  /// Per operation, whether drop-path applies to it (every operation but an identity).
  public let dropsPath: [Bool]

  /// The number of intermediate nodes.
  public var steps: Int { ops.count / 2 }

  /// - Parameters:
  ///   - edges: two per node, as in a genotype's `normal` or `reduce`.
  ///   - concat: the nodes the output concatenates.
  ///   - previousPrevious, previous: channels of the two inputs.
  ///   - channels: C, each node's channel count.
  ///   - reduction: whether this cell halves the resolution.
  ///   - reductionPrevious: whether the previous cell did, in which case input 0 is reduced by a
  ///     FactorizedReduce.
  ///   - space: where the operations' evaluation forms come from.
  /// - Throws: ``SearchError/invalidGenotype(_:)`` for an operation the space cannot build.
  public init(
    edges: [GenotypeEdge], concat: [Int], previousPrevious: Int, previous: Int, channels: Int, reduction: Bool,
    reductionPrevious: Bool, space: SearchSpace, rng: inout SeededGenerator
  ) throws {
    preprocess0 =
      reductionPrevious
      ? FactorizedReduce(inChannels: previousPrevious, outChannels: channels, affine: true, rng: &rng)
      : ReLUConvBN(
        inChannels: previousPrevious, outChannels: channels, kernelSize: 1, stride: 1, padding: 0, affine: true,
        rng: &rng)
    preprocess1 = ReLUConvBN(
      inChannels: previous, outChannels: channels, kernelSize: 1, stride: 1, padding: 0, affine: true, rng: &rng)
    var made: [Layer] = []
    for edge in edges {
      made.append(try space.evaluationFactory(for: edge.op)(channels, reduction && edge.input < 2 ? 2 : 1, &rng))
    }
    ops = ModuleList(made)
    inputs = edges.map(\.input)
    self.concat = concat
    self.reduction = reduction
    dropsPath = made.map { !($0 is Identity) }
  }

  /// `preprocess0`, `preprocess1` and `_ops`, the official attribute names.
  public override var children: [(String, Module)] {
    [("preprocess0", preprocess0), ("preprocess1", preprocess1), ("_ops", ops)]
  }

  /// The cell.
  ///
  /// - Parameters:
  ///   - s0, s1: the outputs of the cells two back and one back. Their ReLUs are never written:
  ///     the 1×1 preprocessing convolutions rectify as they read.
  ///   - pathScales: per operation, N drop-path factors (0 for a dropped sample, 1/keep for a
  ///     kept one), or `nil` for an operation that is not dropped; `nil` for none at all.
  /// - Returns: (N, concat.count·C, H/s, W/s).
  public func callAsFunction(_ s0: Tensor, _ s1: Tensor, pathScales: [[Float]?]? = nil) -> Tensor {
    var states = [preprocess0(s0), preprocess1(s1)]
    // ReLU of each node, computed once for every operation that starts with it, unless the
    // operation fuses its ReLU into its first convolution (then no ReLU tensor is written).
    var activated: [Tensor?] = [nil, nil]
    func apply(_ k: Int) -> Tensor {
      let j = inputs[k]
      guard let op = ops[k] as? ReLUFirstLayer, !op.fusesLeadingReLU else { return ops[k](states[j]) }
      if activated[j] == nil { activated[j] = relu(states[j]) }
      return op(afterReLU: activated[j]!)
    }
    for node in 0..<steps {
      let (a, b) = (apply(2 * node), apply(2 * node + 1))
      if let pathScales, pathScales[2 * node] != nil || pathScales[2 * node + 1] != nil {
        states.append(sum([a, b], sampleScales: [pathScales[2 * node], pathScales[2 * node + 1]]))
      } else {
        states.append(add(a, b))
      }
      activated.append(nil)
    }
    return concatChannels(concat.map { states[$0] })
  }
}

/// A derived architecture trained from scratch (DARTS model.py's `NetworkCIFAR`): a 3×3
/// convolution stem to 3·C channels with batch norm, `layers` cells built from a genotype
/// (reduction cells, which double the channels, at ⌊layers/3⌋ and ⌊2·layers/3⌋), global average
/// pooling and a linear classifier; optionally an auxiliary head after the second reduction
/// cell, and drop-path on every operation but the identities in training.
///
/// Parameter and buffer names are those of the official `state_dict` (`stem.0.weight`,
/// `cells.3._ops.1.op.1.weight`, `auxiliary_head.features.2.weight`, `classifier.weight`).
public final class EvaluationNetwork: Module {
  /// The shape.
  public let config: EvaluationConfig
  /// The architecture the cells are built from.
  public let genotype: Genotype
  /// 3×3 convolution (3 → 3·C) and batch norm; with the ImageNet stem its `stem0`: conv 3×3
  /// stride 2 (3 → C/2), batch norm, ReLU, conv 3×3 stride 2 (→ C), batch norm.
  public let stem: Sequential
  /// With the ImageNet stem: ReLU, conv 3×3 stride 2 (C → C), batch norm; `nil` otherwise.
  public let stem1: Sequential?
  /// The cells.
  public let cells: ModuleList<EvaluationCell>
  /// The auxiliary classifier, when ``EvaluationConfig/auxiliary`` is set.
  public let auxiliaryHead: AuxiliaryHead?
  /// Final cell's channels → classes.
  public let classifier: Linear

  /// The probability that a training forward pass drops an operation's output for a sample
  /// (DARTS's `drop_path_prob`; a training loop sets it per epoch). 0 turns drop-path off.
  public var dropPathProbability: Float = 0
  /// Draws the drop-path masks: for each cell, each operation that drop-path applies to (in
  /// order), one uniform per sample, kept when below 1 − ``dropPathProbability``.
  public var dropPathGenerator: SeededGenerator
  /// The rows of the global batch the next forward passes get (data parallelism): the generator
  /// draws a mask for every row of the global batch and this rank keeps its own, so the masks do
  /// not depend on the number of ranks. `nil`: the input is the whole batch.
  public var dropPathShard: BatchShard?
  /// Replaces the generator's masks when set: given the cell, the operation and the batch size,
  /// which samples keep the operation's output (tests use it to replay PyTorch's masks).
  public var dropPathMasks: ((_ cell: Int, _ op: Int, _ samples: Int) -> [Bool])?

  /// Builds the network from `genotype`, initialised from `rng` as PyTorch initialises layers.
  ///
  /// - Parameters:
  ///   - space: where the genotype's operations are built from (their evaluation forms).
  ///   - dropPathSeed: seeds ``dropPathGenerator``.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` for a bad configuration,
  ///   ``SearchError/invalidGenotype(_:)`` for a genotype these cells cannot be built from.
  public init(
    config: EvaluationConfig, genotype: Genotype, space: SearchSpace = .darts, dropPathSeed: UInt64 = 0,
    rng: inout SeededGenerator
  ) throws {
    try config.validate()
    try genotype.validate(space: space)
    self.config = config
    self.genotype = genotype
    dropPathGenerator = SeededGenerator(seed: dropPathSeed)
    let stemChannels = config.stemChannels
    (stem, stem1) = config.stem.makeLayers(inputChannels: config.inputChannels, channels: stemChannels, rng: &rng)
    var (previousPrevious, previous, c) = (stemChannels, stemChannels, config.initChannels)
    // NetworkImageNet's first cell reads stem0's map at twice its side: a FactorizedReduce.
    var reductionPrevious = config.stem == .imagenet
    var built: [EvaluationCell] = []
    var auxiliaryChannels = previous
    for i in 0..<config.layers {
      let reduction = config.isReduction(i)
      if reduction { c *= 2 }
      let cell = try EvaluationCell(
        edges: reduction ? genotype.reduce : genotype.normal,
        concat: reduction ? genotype.reduceConcat : genotype.normalConcat,
        previousPrevious: previousPrevious, previous: previous, channels: c, reduction: reduction,
        reductionPrevious: reductionPrevious, space: space, rng: &rng)
      built.append(cell)
      reductionPrevious = reduction
      (previousPrevious, previous) = (previous, cell.concat.count * c)
      if i == config.auxiliaryCell { auxiliaryChannels = previous }
    }
    cells = ModuleList(built)
    auxiliaryHead =
      config.auxiliary
      ? AuxiliaryHead(
        channels: auxiliaryChannels, classes: config.classes, imagenet: config.stem == .imagenet, rng: &rng) : nil
    classifier = Linear(inFeatures: previous, outFeatures: config.classes, rng: &rng)
  }

  /// `stem` (or `stem0`, `stem1`), `cells`, `auxiliary_head` (when built) and `classifier`, in
  /// the official order.
  public override var children: [(String, Module)] {
    let stems: [(String, Module)] = stem1.map { [("stem0", stem), ("stem1", $0)] } ?? [("stem", stem)]
    return stems + [("cells", cells)] + (auxiliaryHead.map { [("auxiliary_head", $0)] } ?? [])
      + [("classifier", classifier)]
  }

  /// The logits of a batch, and in training mode with an auxiliary head its logits too.
  /// - Parameter x: (N, 3, 32, 32) (N, 3, 224, 224 with the ImageNet stem).
  /// - Returns: (N, classes) each.
  public func callAsFunction(_ x: Tensor) -> (logits: Tensor, auxiliaryLogits: Tensor?) {
    // The CIFAR stem's output feeds both inputs of cell 0; every cell output the two cells after
    // it (and the auxiliary head).
    var (s0, s1) = stemOutputs(x, stem: stem, stem1: stem1)
    var output = s1
    var auxiliaryLogits: Tensor?
    let dropping = isTraining && dropPathProbability > 0
    for (i, cell) in cells.modules.enumerated() {
      output = cell(s0, s1, pathScales: dropping ? drawPathScales(cell: i, x.shape[0]) : nil)
      (s0, s1) = (s1, output)
      if i == config.auxiliaryCell, isTraining, let auxiliaryHead { auxiliaryLogits = auxiliaryHead(output) }
    }
    return (classifier(globalAvgPool2d(output)), auxiliaryLogits)
  }

  /// The training loss: cross-entropy of the logits plus `auxiliaryWeight` times that of the
  /// auxiliary logits when there are some (train.py's `loss += auxiliary_weight * loss_aux`),
  /// both with `labelSmoothing` (train_imagenet.py's `CrossEntropyLabelSmooth`, 0.1 there).
  public func loss(
    _ x: Tensor, labels: [Int32], auxiliaryWeight: Float, labelSmoothing: Float = 0
  ) -> (loss: Tensor, logits: Tensor) {
    let (logits, auxiliaryLogits) = self(x)
    var loss = crossEntropy(logits, labels: labels, labelSmoothing: labelSmoothing)
    if let auxiliaryLogits, auxiliaryWeight != 0 {
      loss = add(
        loss, scale(crossEntropy(auxiliaryLogits, labels: labels, labelSmoothing: labelSmoothing), by: auxiliaryWeight))
    }
    return (loss, logits)
  }

  /// The drop-path factors of one cell's operations: 0 for a dropped sample, 1/keep for a kept one.
  private func drawPathScales(cell: Int, _ samples: Int) -> [[Float]?] {
    let keep = 1 - dropPathProbability
    return cells[cell].dropsPath.enumerated().map { op, drops in
      guard drops else { return nil }
      let shard = dropPathShard ?? .whole(samples)
      precondition(shard.rows.count == samples, "dropPathShard: \(shard) for a batch of \(samples)")
      let kept =
        dropPathMasks?(cell, op, samples)
        ?? Array((0..<shard.globalCount).map { _ in Float(dropPathGenerator.nextUniform()) < keep }[shard.rows])
      precondition(kept.count == samples, "dropPathMasks: \(kept.count) values for \(samples) samples")
      return kept.map { $0 ? 1 / keep : 0 }
    }
  }

  /// The number of weights, the auxiliary head's included (what SGD updates).
  public var weightCount: Int { parameters().reduce(0) { $0 + $1.count } }

  /// The number of weights without the auxiliary head, as the official `count_parameters_in_MB`
  /// counts them (the head is dropped after training).
  public var weightCountExcludingAuxiliary: Int {
    namedParameters().filter { !$0.0.hasPrefix("auxiliary_head.") }.reduce(0) { $0 + $1.1.count }
  }
}

extension Genotype {
  /// Checks that cells can be built from the genotype: two edges per node in each cell, every
  /// edge reading an earlier node with an operation `space` can build for evaluation, and the
  /// concatenated nodes existing.
  /// - Throws: ``SearchError/invalidGenotype(_:)`` naming the problem.
  public func validate(space: SearchSpace = .darts) throws {
    for (name, edges, concat) in [("normal", normal, normalConcat), ("reduce", reduce, reduceConcat)] {
      guard !edges.isEmpty, edges.count % 2 == 0 else {
        throw SearchError.invalidGenotype("\(name) has \(edges.count) edges; it needs two per node")
      }
      for (k, edge) in edges.enumerated() {
        guard edge.input >= 0 && edge.input < 2 + k / 2 else {
          throw SearchError.invalidGenotype(
            "\(name) edge \(k) (\(edge.op), \(edge.input)) of node \(2 + k / 2) must read node 0...\(1 + k / 2)")
        }
        _ = try space.evaluationFactory(for: edge.op)
      }
      let nodes = 2 + edges.count / 2
      guard !concat.isEmpty, concat.allSatisfy({ (0..<nodes).contains($0) }) else {
        throw SearchError.invalidGenotype("\(name)_concat \(concat) must name nodes in 0...\(nodes - 1)")
      }
    }
  }
}
