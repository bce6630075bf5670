// data-parallel-check: the gradients of a data-parallel step, for DistributedTests.
//
//   data-parallel-check reference OUT [--sync-bn]         one process, no MPI: the expected values
//   mpirun -np 2 data-parallel-check distributed OUT [--sync-bn]   the same step on 2 ranks
// (--threads N: engine threads, 1 by default; another count changes the sums' rounding.)
//
// Both build the same small super-net (K = 2) and the same global batch of 8 images, and write
// (rank 0) the weights' and α/β's gradients and the loss to OUT:
// - reference, per-rank batch norms: Σᵣ shareᵣ · ∇L(shard r), each shard normalised on its own,
//   computed shard after shard in one process; with --sync-bn: ∇L of the whole batch.
// - distributed: each rank's shard, then DataParallel's bucketed all-reduce.
// With --sync-bn both also write the second-order α/β gradient (the architect's unrolled step).
// The distributed run then takes three search iterations and writes every rank's checksum of
// the weights and α/β, which must agree.

import Foundation
import MPIProcessGroup
import NeuralNetwork
import PCDARTS
import TensorEngine

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count >= 2, ["reference", "distributed"].contains(arguments[0]) else {
  FileHandle.standardError.write(Data("usage: data-parallel-check reference|distributed OUT [--sync-bn]\n".utf8))
  exit(2)
}
let distributed = arguments[0] == "distributed"
let out = URL(fileURLWithPath: arguments[1])
let syncBatchNorm = arguments.contains("--sync-bn")
let ranks = 2
Engine.threadCount = arguments.firstIndex(of: "--threads").map { Int(arguments[$0 + 1])! } ?? 1

let group: ProcessGroup = distributed ? MPIProcessGroup.initialize() : SingleProcess.shared
guard !distributed || group.size == ranks else {
  FileHandle.standardError.write(Data("data-parallel-check: run under mpirun -np \(ranks)\n".utf8))
  exit(2)
}
let dataParallel = DataParallel(group: group, bucketMiB: 0.01)  // several buckets even for a tiny net

var settings = SearchSettings()
settings.network.initChannels = 4
settings.network.layers = 3
settings.network.partialChannels = 2
settings.batchSize = 8
settings.syncBatchNorm = syncBatchNorm
settings.architect.unrolled = true
let iteration = try SearchIteration(settings: settings, dataParallel: dataParallel)
let network = iteration.network

/// A seeded global batch of 8 images; `shard` picks the rows.
func batch(seed: UInt64, shard: BatchShard) -> LabeledBatch {
  var rng = SeededGenerator(seed: seed)
  let images = Tensor(shape: [8, 3, 32, 32], data: (0..<8 * 3 * 32 * 32).map { _ in Float(rng.nextUniform()) * 2 - 1 })
  return LabeledBatch(images: images, labels: (0..<8).map { _ in Int32(rng.nextInt(below: 10)) }).rows(of: shard)
}

let tensors = network.weights + network.architectureParameters
let architectureNames = ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"]
let names = network.namedParameters().map(\.0) + architectureNames
var results: [String: SafeTensor] = [:]
func save(_ prefix: String, _ values: [Tensor], names: [String] = names) {
  for (name, t) in zip(names, values) {
    results[prefix + name] = SafeTensor(
      shape: t.shape, floats: t.grad?.scalars ?? Array(repeating: 0, count: t.count))
  }
}

// First-order gradients of the weights and α/β on one global batch.
network.train(true)
var loss = 0.0
if distributed {
  let b = batch(seed: 1, shard: dataParallel.shard(of: 8))
  let l = network.loss(b)
  l.backward(shareOf: b.shard)
  loss = dataParallel.allReduceGradients(tensors, scalars: [Double(l.item) * Double(b.shard.rows.count)])[0] / 8
} else if syncBatchNorm {
  let l = network.loss(batch(seed: 1, shard: .whole(8)))
  l.backward()
  loss = Double(l.item)
} else {
  for r in 0..<ranks {  // the leaves' gradients accumulate over the shards
    let b = batch(seed: 1, shard: BatchShard(rank: r, of: ranks, count: 8))
    let l = network.loss(b)
    l.backward(shareOf: b.shard)
    loss += Double(l.item) * Double(b.shard.share)
  }
}
save("grad.", tensors)
results["loss"] = SafeTensor(shape: [], floats: [Float(loss)])
for t in tensors { t.zeroGrad() }

// The second-order α/β gradient: only synchronised batch norms make it the whole batch's.
if syncBatchNorm {
  let shard = distributed ? dataParallel.shard(of: 8) : .whole(8)
  iteration.architect.unrolledGradients(
    train: batch(seed: 2, shard: shard), valid: batch(seed: 3, shard: shard), weightOptimizer: iteration.weightOptimizer
  )
  save("unrolled.", network.architectureParameters, names: architectureNames)
}

// Three search iterations, then every rank's checksum of the weights and α/β.
if distributed {
  for step in 1...3 {
    let shard = dataParallel.shard(of: 8)
    try iteration.run(
      train: batch(seed: 10 + UInt64(step), shard: shard), valid: batch(seed: 20 + UInt64(step), shard: shard),
      epoch: 0, step: step)
  }
  var sums = [Double](repeating: 0, count: ranks)
  sums[group.rank] = Double(
    tensors.reduce(0.0) { total, t in (0..<t.count).reduce(total) { $0 + Double(t.pointer[$1]) } })
  sums = dataParallel.allReduce(sums)
  results["checksums"] = SafeTensor(shape: [ranks], floats: sums.map(Float.init))
  try dataParallel.checkIdentical(tensors, what: "weights and α, β")
}

if group.rank == 0 { try SafeTensorsFile(tensors: results).write(to: out) }
if distributed { (group as? MPIProcessGroup)?.finalize() }
