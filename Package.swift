// swift-tools-version:6.0
import PackageDescription

let package = Package(
  name: "pcdarts-swift",
  products: [
    // MARK: - Public API
    .library(name: "TensorEngine", targets: ["TensorEngine"]),
    .library(name: "PCDARTS", targets: ["PCDARTS"]),
    .executable(name: "search-cifar", targets: ["search-cifar"]),
    .executable(name: "bench", targets: ["bench"]),
  ],
  targets: [
    // MARK: - System libraries (Debian packages)
    .systemLibrary(
      name: "COpenBLAS", path: "Modules/COpenBLAS", pkgConfig: "openblas",
      providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
    .systemLibrary(
      name: "CZlib", path: "Modules/CZlib", pkgConfig: "zlib",
      providers: [.apt(["zlib1g-dev"])]),

    // MARK: - Layers: engine, then the search
    .target(name: "TensorEngine", dependencies: ["COpenBLAS", "_CKernels"]),

    // MARK: - Implementation details
    .target(name: "_CKernels", path: "Sources/_CKernels"),
    .target(name: "PCDARTS", dependencies: ["TensorEngine", "CZlib"]),

    // MARK: - Thin executables
    .executableTarget(name: "search-cifar", dependencies: ["PCDARTS"]),
    .executableTarget(name: "bench", dependencies: ["PCDARTS"]),

    // MARK: - Unit test bundles
    .target(name: "TestSupport", dependencies: ["TensorEngine"], path: "Tests/TestSupport"),
    .testTarget(name: "TensorEngineTests", dependencies: ["TensorEngine", "TestSupport"]),
    .testTarget(name: "PCDARTSTests", dependencies: ["PCDARTS", "TensorEngine", "TestSupport"]),
  ],
  swiftLanguageModes: [.v5]
)
