// All randomness in the package comes from this one seeded generator, so that a seed fixes
// every weight, split, shuffle and augmentation, and a checkpoint can store the exact state.

import Foundation

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64.
///
/// Fast, statistically strong and with a 256-bit state that ``state`` exposes for checkpoints.
public struct SeededGenerator: RandomNumberGenerator, Sendable, Equatable {
  /// The four state words; assign a saved value to resume a stream exactly.
  public var state: [UInt64] {
    get { [s0, s1, s2, s3] }
    set {
      precondition(newValue.count == 4, "SeededGenerator: state needs 4 words, got \(newValue.count)")
      (s0, s1, s2, s3) = (newValue[0], newValue[1], newValue[2], newValue[3])
    }
  }

  private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

  /// A generator whose whole stream is fixed by `seed`.
  public init(seed: UInt64) {
    var x = seed
    func splitMix() -> UInt64 {
      x &+= 0x9E37_79B9_7F4A_7C15
      var z = x
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
    s0 = splitMix()
    s1 = splitMix()
    s2 = splitMix()
    s3 = splitMix()
  }

  /// The next 64 random bits.
  public mutating func next() -> UInt64 {
    let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
    let t = s1 << 17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << 45) | (s3 >> 19)
    return result
  }

  /// A uniform sample in [0, 1) with 24 random bits.
  public mutating func nextUniform() -> Float {
    Float(next() >> 40) * (1.0 / 16_777_216.0)
  }

  /// A standard normal sample (Box–Muller, computed in Double).
  public mutating func nextNormal() -> Float {
    let u1 = (Double(next() >> 11) + 1) * (1.0 / 9_007_199_254_740_993.0)  // (0, 1]
    let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
  }

  /// A uniform integer in `0..<bound`.
  public mutating func nextInt(below bound: Int) -> Int {
    precondition(bound > 0, "SeededGenerator.nextInt: bound must be positive, got \(bound)")
    return Int(next(upperBound: UInt64(bound)))
  }
}

@inline(__always) private func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Foundation.cos(x) }

extension Tensor {
  /// Samples from N(0, std²), like `std * torch.randn(shape)`.
  public static func randomNormal(
    _ shape: [Int], std: Float = 1, using rng: inout SeededGenerator, requiresGrad: Bool = false
  ) -> Tensor {
    let t = Tensor(zeros: shape, requiresGrad: requiresGrad)
    for i in 0..<t.count { t.pointer[i] = std * rng.nextNormal() }
    return t
  }

  /// Samples from U(-bound, bound), as PyTorch's default layer initialisation does.
  public static func randomUniform(
    _ shape: [Int], bound: Float, using rng: inout SeededGenerator, requiresGrad: Bool = false
  ) -> Tensor {
    let t = Tensor(zeros: shape, requiresGrad: requiresGrad)
    for i in 0..<t.count { t.pointer[i] = (2 * rng.nextUniform() - 1) * bound }
    return t
  }
}
