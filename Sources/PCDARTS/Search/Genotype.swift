// The discrete architecture read off the continuous one (PC-DARTS model_search.py, genotype()).

import Foundation
import NeuralNetwork
import TensorEngine

/// One chosen edge of a cell: an operation applied to input node `input`.
public struct GenotypeEdge: Equatable, Hashable, Sendable {
  /// The primitive's name.
  public var op: String
  /// The input node: 0 and 1 are the cell inputs, 2… the intermediate nodes.
  public var input: Int
  /// An edge applying `op` to node `input`.
  public init(op: String, input: Int) { (self.op, self.input) = (op, input) }
}

/// A derived architecture, as DARTS's `Genotype` namedtuple: two edges per intermediate node for
/// the normal and the reduction cell, and the nodes the cell output concatenates.
public struct Genotype: Equatable, Sendable {
  /// Two edges per intermediate node of the normal cell, node by node.
  public var normal: [GenotypeEdge]
  /// The nodes the normal cell's output concatenates.
  public var normalConcat: [Int]
  /// Two edges per intermediate node of the reduction cell.
  public var reduce: [GenotypeEdge]
  /// The nodes the reduction cell's output concatenates.
  public var reduceConcat: [Int]

  /// A genotype from its four fields.
  public init(normal: [GenotypeEdge], normalConcat: [Int], reduce: [GenotypeEdge], reduceConcat: [Int]) {
    (self.normal, self.normalConcat, self.reduce, self.reduceConcat) = (normal, normalConcat, reduce, reduceConcat)
  }

  /// Derives the genotype from architecture weights, as PC-DARTS does: each edge's softmax(α)
  /// row is scaled by its edge-normalised β weight; each node keeps the two in-edges with the
  /// largest non-`none` weight (earlier edge first on ties, as Python's stable sort), each with
  /// its best non-`none` operation.
  ///
  /// - Parameters:
  ///   - opWeights: (E, P) softmax(α) per cell type.
  ///   - edgeWeights: (E) normalised β per cell type.
  public static func derive(
    normal: (opWeights: [[Float]], edgeWeights: [Float]),
    reduce: (opWeights: [[Float]], edgeWeights: [Float]),
    primitives: [String], steps: Int = 4, multiplier: Int = 4
  ) -> Genotype {
    let concat = Array((2 + steps - multiplier)..<(steps + 2))
    return Genotype(
      normal: parse(normal.opWeights, normal.edgeWeights, primitives, steps), normalConcat: concat,
      reduce: parse(reduce.opWeights, reduce.edgeWeights, primitives, steps), reduceConcat: concat)
  }

  private static func parse(_ w: [[Float]], _ edge: [Float], _ primitives: [String], _ steps: Int) -> [GenotypeEdge] {
    let none = primitives.firstIndex(of: Primitive.noneName)
    let candidates = primitives.indices.filter { $0 != none }
    var gene: [GenotypeEdge] = []
    var start = 0
    for node in 0..<steps {
      let inputs = node + 2
      func scaled(_ j: Int, _ k: Int) -> Float { w[start + j][k] * edge[start + j] }
      func best(_ j: Int) -> Int {
        candidates.max { a, b in scaled(j, a) < scaled(j, b) || (scaled(j, a) == scaled(j, b) && a > b) }!
      }
      let ranked = (0..<inputs).sorted { a, b in
        let (sa, sb) = (scaled(a, best(a)), scaled(b, best(b)))
        return sa > sb || (sa == sb && a < b)
      }
      for j in ranked.prefix(2) { gene.append(GenotypeEdge(op: primitives[best(j)], input: j)) }
      start += inputs
    }
    return gene
  }
}

extension SearchNetwork {
  /// The genotype of the current architecture parameters.
  public func genotype() -> Genotype {
    withNoGrad {
      func rows(_ t: Tensor) -> [[Float]] {
        let k = t.shape[1]
        return (0..<t.shape[0]).map { Array(t.scalars[$0 * k..<($0 + 1) * k]) }
      }
      return Genotype.derive(
        normal: (rows(softmax(arch.alphasNormal)), normalizedEdgeWeights(arch.betasNormal).scalars),
        reduce: (rows(softmax(arch.alphasReduce)), normalizedEdgeWeights(arch.betasReduce).scalars),
        primitives: space.names, steps: config.steps, multiplier: config.multiplier)
    }
  }
}

// MARK: - Text forms

extension Genotype {
  /// The DARTS Python form:
  /// `Genotype(normal=[('sep_conv_3x3', 1), …], normal_concat=range(2, 6), reduce=[…], reduce_concat=range(2, 6))`.
  public var pythonDescription: String {
    func edges(_ e: [GenotypeEdge]) -> String {
      "[" + e.map { "('\($0.op)', \($0.input))" }.joined(separator: ", ") + "]"
    }
    func concat(_ c: [Int]) -> String {
      if let first = c.first, c == Array(first..<first + c.count) { return "range(\(first), \(first + c.count))" }
      return "[" + c.map(String.init).joined(separator: ", ") + "]"
    }
    return "Genotype(normal=\(edges(normal)), normal_concat=\(concat(normalConcat)), "
      + "reduce=\(edges(reduce)), reduce_concat=\(concat(reduceConcat)))"
  }

  /// Parses the DARTS Python form written by ``pythonDescription`` (and by the official code).
  public init(pythonDescription text: String) throws {
    func fail(_ why: String) -> SearchError { .invalidGenotype("\(why) in \(text.prefix(80))…") }
    let s = text.trimmingCharacters(in: .whitespacesAndNewlines)
    guard s.hasPrefix("Genotype(") && s.hasSuffix(")") else { throw fail("expected Genotype(...)") }
    func field(_ name: String, until next: String?) throws -> String {
      guard let r = s.range(of: "\(name)=") else { throw fail("missing \(name)=") }
      let rest = s[r.upperBound...]
      let end = next.flatMap { rest.range(of: ", \($0)=")?.lowerBound } ?? rest.index(before: rest.endIndex)
      return String(rest[..<end])
    }
    func edges(_ body: String) throws -> [GenotypeEdge] {
      let pattern = try NSRegularExpression(pattern: #"\(\s*'([A-Za-z0-9_]+)'\s*,\s*(\d+)\s*\)"#)
      let ns = body as NSString
      let matches = pattern.matches(in: body, range: NSRange(location: 0, length: ns.length))
      guard body.hasPrefix("[") else { throw fail("edge list must start with [") }
      return matches.map {
        GenotypeEdge(op: ns.substring(with: $0.range(at: 1)), input: Int(ns.substring(with: $0.range(at: 2)))!)
      }
    }
    func concat(_ body: String) throws -> [Int] {
      let t = body.trimmingCharacters(in: .whitespaces)
      if t.hasPrefix("range(") {
        let nums = t.dropFirst(6).dropLast().split(separator: ",").compactMap {
          Int($0.trimmingCharacters(in: .whitespaces))
        }
        guard nums.count == 2, nums[0] < nums[1] else { throw fail("bad range \(t)") }
        return Array(nums[0]..<nums[1])
      }
      guard t.hasPrefix("[") else { throw fail("bad concat \(t)") }
      return t.dropFirst().dropLast().split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }
    self.init(
      normal: try edges(field("normal", until: "normal_concat")),
      normalConcat: try concat(field("normal_concat", until: "reduce")),
      reduce: try edges(field("reduce", until: "reduce_concat")),
      reduceConcat: try concat(field("reduce_concat", until: nil)))
  }

  /// The JSON form: `{"normal": [["sep_conv_3x3", 1], …], "normal_concat": [2, 3, 4, 5], "reduce": […], "reduce_concat": […]}`.
  public var jsonObject: [String: Any] {
    [
      "normal": normal.map { [$0.op, $0.input] as [Any] }, "normal_concat": normalConcat,
      "reduce": reduce.map { [$0.op, $0.input] as [Any] }, "reduce_concat": reduceConcat,
    ]
  }

  /// ``jsonObject`` serialised with sorted keys.
  public var jsonString: String {
    let data = try! JSONSerialization.data(withJSONObject: jsonObject, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
  }

  /// Parses the JSON form.
  public init(json text: String) throws {
    guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
      throw SearchError.invalidGenotype("not a JSON object: \(text.prefix(80))")
    }
    func edges(_ key: String) throws -> [GenotypeEdge] {
      guard let list = object[key] as? [[Any]] else { throw SearchError.invalidGenotype("missing list \"\(key)\"") }
      return try list.map { pair in
        guard pair.count == 2, let op = pair[0] as? String, let input = pair[1] as? Int else {
          throw SearchError.invalidGenotype("\"\(key)\" entries must be [\"op\", input]")
        }
        return GenotypeEdge(op: op, input: input)
      }
    }
    func ints(_ key: String) throws -> [Int] {
      guard let list = object[key] as? [Int] else { throw SearchError.invalidGenotype("missing list \"\(key)\"") }
      return list
    }
    self.init(
      normal: try edges("normal"), normalConcat: try ints("normal_concat"),
      reduce: try edges("reduce"), reduceConcat: try ints("reduce_concat"))
  }
}
