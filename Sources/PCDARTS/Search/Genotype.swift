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
  /// With `maxSkipConnect` set, the normal cell keeps at most that many `skip_connect` edges, as
  /// P-DARTS caps them against DARTS's collapse into parameter-free cells: while more remain,
  /// the weakest chosen `skip_connect` (smallest scaled weight; the later edge on ties) is ruled
  /// out on its edge and its node is derived again, so the node takes its next-best choice (the
  /// same input with another operation, or another input). The reduction cell, whose
  /// `skip_connect` is a FactorizedReduce with weights, is not capped.
  ///
  /// - Parameters:
  ///   - opWeights: (E, P) softmax(α) per cell type.
  ///   - edgeWeights: (E) normalised β per cell type.
  ///   - maxSkipConnect: the cap, or `nil` for none.
  /// - Precondition: `maxSkipConnect` is nil or ≥ 0.
  public static func derive(
    normal: (opWeights: [[Float]], edgeWeights: [Float]),
    reduce: (opWeights: [[Float]], edgeWeights: [Float]),
    primitives: [String], steps: Int = 4, multiplier: Int = 4, maxSkipConnect: Int? = nil
  ) -> Genotype {
    precondition((maxSkipConnect ?? 0) >= 0, "Genotype.derive: maxSkipConnect \(maxSkipConnect ?? 0) is negative")
    let concat = Array((2 + steps - multiplier)..<(steps + 2))
    var normalCell = CellWeights(opWeights: normal.opWeights, edgeWeights: normal.edgeWeights, primitives: primitives)
    let reduceCell = CellWeights(opWeights: reduce.opWeights, edgeWeights: reduce.edgeWeights, primitives: primitives)
    var normalGene = normalCell.parse(steps: steps)
    if let cap = maxSkipConnect, let skip = primitives.firstIndex(of: skipConnectName) {
      while true {
        let skips = normalGene.filter { $0.primitive == skip }
        guard skips.count > cap,
          let weakest = skips.min(by: { a, b in
            let (wa, wb) = (normalCell.scaled(a.edge, skip), normalCell.scaled(b.edge, skip))
            return wa < wb || (wa == wb && a.edge > b.edge)
          }),
          normalCell.exclude(edge: weakest.edge, primitive: skip)
        else { break }
        normalGene = normalCell.parse(steps: steps)
      }
    }
    func named(_ gene: [Chosen]) -> [GenotypeEdge] {
      gene.map { GenotypeEdge(op: primitives[$0.primitive], input: $0.input) }
    }
    return Genotype(
      normal: named(normalGene), normalConcat: concat, reduce: named(reduceCell.parse(steps: steps)),
      reduceConcat: concat)
  }

  /// The name of the parameter-free identity that ``derive(normal:reduce:primitives:steps:multiplier:maxSkipConnect:)`` can cap.
  public static let skipConnectName = "skip_connect"

  /// The number of `skip_connect` edges of the normal cell.
  public var normalSkipConnectCount: Int { normal.filter { $0.op == Genotype.skipConnectName }.count }

  /// One chosen edge while deriving: the global edge index, its input node and its primitive.
  private struct Chosen {
    var edge: Int, input: Int, primitive: Int
  }

  /// One cell type's weights and the (edge, primitive) choices ruled out.
  private struct CellWeights {
    let opWeights: [[Float]], edgeWeights: [Float]
    /// Per edge, the primitives it may still choose (all but `none` at first).
    var candidates: [[Int]]

    init(opWeights: [[Float]], edgeWeights: [Float], primitives: [String]) {
      (self.opWeights, self.edgeWeights) = (opWeights, edgeWeights)
      let none = primitives.firstIndex(of: Primitive.noneName)
      candidates = Array(repeating: primitives.indices.filter { $0 != none }, count: opWeights.count)
    }

    func scaled(_ edge: Int, _ k: Int) -> Float { opWeights[edge][k] * edgeWeights[edge] }

    /// Rules out `primitive` on `edge`; false when it is the edge's last candidate.
    mutating func exclude(edge: Int, primitive: Int) -> Bool {
      guard candidates[edge].count > 1 else { return false }
      candidates[edge].removeAll { $0 == primitive }
      return true
    }

    func parse(steps: Int) -> [Chosen] {
      var gene: [Chosen] = []
      var start = 0
      for node in 0..<steps {
        let inputs = node + 2
        func best(_ j: Int) -> Int {
          candidates[start + j].max { a, b in
            scaled(start + j, a) < scaled(start + j, b) || (scaled(start + j, a) == scaled(start + j, b) && a > b)
          }!
        }
        let ranked = (0..<inputs).sorted { a, b in
          let (sa, sb) = (scaled(start + a, best(a)), scaled(start + b, best(b)))
          return sa > sb || (sa == sb && a < b)
        }
        for j in ranked.prefix(2) { gene.append(Chosen(edge: start + j, input: j, primitive: best(j))) }
        start += inputs
      }
      return gene
    }
  }
}

extension SearchNetwork {
  /// The genotype of the current architecture parameters, with at most `maxSkipConnect`
  /// `skip_connect` edges in the normal cell when set (see
  /// ``Genotype/derive(normal:reduce:primitives:steps:multiplier:maxSkipConnect:)``).
  public func genotype(maxSkipConnect: Int? = nil) -> Genotype {
    let (normal, reduce) = architectureWeights()
    return Genotype.derive(
      normal: normal, reduce: reduce, primitives: space.names, steps: config.steps, multiplier: config.multiplier,
      maxSkipConnect: maxSkipConnect)
  }

  /// softmax(α) per edge, (E, P), and the edge-normalised β, (E), of each cell type: what the
  /// genotype is derived from.
  public func architectureWeights() -> (
    normal: (opWeights: [[Float]], edgeWeights: [Float]), reduce: (opWeights: [[Float]], edgeWeights: [Float])
  ) {
    withNoGrad {
      func rows(_ t: Tensor) -> [[Float]] {
        let k = t.shape[1]
        return (0..<t.shape[0]).map { Array(t.scalars[$0 * k..<($0 + 1) * k]) }
      }
      return (
        (rows(softmax(arch.alphasNormal)), normalizedEdgeWeights(arch.betasNormal).scalars),
        (rows(softmax(arch.alphasReduce)), normalizedEdgeWeights(arch.betasReduce).scalars)
      )
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

// MARK: - Published genotypes

extension Genotype {
  /// The architectures of the official genotypes.py (yuhuixu1993/PC-DARTS, after quark0/darts)
  /// that DARTS's search space can build, by their Python names: `PC_DARTS_cifar` (also
  /// `PCDARTS`, train.py's default `--arch`), `PC_DARTS_image`, `DARTS_V1` and `DARTS_V2`.
  public static let published: [String: Genotype] = {
    let texts = [
      "PC_DARTS_cifar":
        "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), "
        + "('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], "
        + "normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), "
        + "('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], "
        + "reduce_concat=range(2, 6))",
      "PC_DARTS_image":
        "Genotype(normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('skip_connect', 1), "
        + "('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 4)], "
        + "normal_concat=range(2, 6), reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 2), "
        + "('max_pool_3x3', 1), ('sep_conv_3x3', 2), ('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 3)], "
        + "reduce_concat=range(2, 6))",
      "DARTS_V1":
        "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), "
        + "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], "
        + "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
        + "('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], "
        + "reduce_concat=[2, 3, 4, 5])",
      "DARTS_V2":
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
        + "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
        + "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
        + "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
        + "reduce_concat=[2, 3, 4, 5])",
    ]
    var out = texts.mapValues { try! Genotype(pythonDescription: $0) }
    out["PCDARTS"] = out["PC_DARTS_cifar"]
    return out
  }()
}

// MARK: - Finding a genotype

extension Genotype {
  /// The genotype a user names: a name of ``published`` (`PC_DARTS_cifar`), a DARTS string
  /// (`Genotype(normal=[…], …)`), a search run's folder (its `genotype.json`), or a
  /// `genotype.json` / `genotype.txt` file. From a `genotype.json` with a skip_connect cap the
  /// capped genotype is taken (the one the search reports as its result).
  ///
  /// - Returns: the genotype and where it came from, in words.
  /// - Throws: ``SearchError/invalidGenotype(_:)`` naming what was tried.
  public static func resolve(_ argument: String) throws -> (genotype: Genotype, source: String) {
    if let known = published[argument] { return (known, "\(argument) of the official genotypes.py") }
    let trimmed = argument.trimmingCharacters(in: .whitespacesAndNewlines)
    if trimmed.hasPrefix("Genotype(") { return (try Genotype(pythonDescription: trimmed), "the command line") }
    var url = URL(fileURLWithPath: argument)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
      throw SearchError.invalidGenotype(
        "\(argument) is neither a known name (\(published.keys.sorted().joined(separator: ", "))), "
          + "a Genotype(...) string, nor an existing file or folder")
    }
    if isDirectory.boolValue {
      url = url.appendingPathComponent("genotype.json")
      guard FileManager.default.fileExists(atPath: url.path) else {
        throw SearchError.invalidGenotype(
          "the folder \(argument) holds no genotype.json; pass a search run's folder (after its first epoch) or a genotype file"
        )
      }
    }
    guard let data = FileManager.default.contents(atPath: url.path) else {
      throw SearchError.invalidGenotype("cannot read \(url.path)")
    }
    let text = String(decoding: data, as: UTF8.self)
    if text.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix("Genotype(") {
      return (try Genotype(pythonDescription: text), url.path)
    }
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
      throw SearchError.invalidGenotype("\(url.path) is neither JSON nor a Genotype(...) string")
    }
    if let capped = object["capped"] {
      let cappedData = try JSONSerialization.data(withJSONObject: capped)
      return (try Genotype(json: String(decoding: cappedData, as: UTF8.self)), url.path + " (capped)")
    }
    return (try Genotype(json: text), url.path)
  }
}
