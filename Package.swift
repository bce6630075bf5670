// swift-tools-version:6.0
import PackageDescription

// The layers, each importing only the ones above it in this list (SwiftPM refuses any other
// import, because a target sees only the modules it depends on):
//   _CKernels       C kernels (private)
//   _CImageCodecs   JPEG and PNG decoding, Pillow's bilinear resize (private)
//   TensorEngine    tensors, autograd, ops, worker pool, BLAS, random numbers, safetensors
//   NeuralNetwork   Module, layers, optimizers, schedules, gradient clipping
//   PCDARTS         search space, super-net, architect, genotype, data, the search run
//   MPIProcessGroup the engine's ProcessGroup over MPI (only the commands link it)
//   SearchCommands  option parser and the search, train and bench commands (not a product)
//   search-cifar, train-cifar, bench   thin executables
let package = Package(
  name: "pcdarts-swift",
  products: [
    // MARK: - Public API
    .library(name: "TensorEngine", targets: ["TensorEngine"]),
    .library(name: "NeuralNetwork", targets: ["NeuralNetwork"]),
    .library(name: "PCDARTS", targets: ["PCDARTS"]),
    .library(name: "MPIProcessGroup", targets: ["MPIProcessGroup"]),
    .executable(name: "search-cifar", targets: ["search-cifar"]),
    .executable(name: "train-cifar", targets: ["train-cifar"]),
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
    .systemLibrary(
      name: "CJPEG", path: "Modules/CJPEG", pkgConfig: "libjpeg",
      providers: [.apt(["libjpeg62-turbo-dev"])]),
    .systemLibrary(
      name: "CPNG", path: "Modules/CPNG", pkgConfig: "libpng",
      providers: [.apt(["libpng-dev"])]),
    .systemLibrary(
      name: "CMPI", path: "Modules/CMPI", pkgConfig: "ompi-c",
      providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),

    // MARK: - Layers: engine, neural-network modules, the search
    .target(name: "TensorEngine", dependencies: ["COpenBLAS", "_CKernels"]),
    .target(name: "NeuralNetwork", dependencies: ["TensorEngine"]),
    .target(name: "PCDARTS", dependencies: ["NeuralNetwork", "TensorEngine", "CZlib", "_CImageCodecs"]),
    .target(name: "MPIProcessGroup", dependencies: ["TensorEngine", "CMPI"]),

    // MARK: - Implementation details
    .target(name: "_CKernels", path: "Sources/_CKernels"),
    .target(name: "_CImageCodecs", dependencies: ["CJPEG", "CPNG"], path: "Sources/_CImageCodecs"),
    .target(
      name: "SearchCommands", dependencies: ["PCDARTS", "NeuralNetwork", "TensorEngine", "MPIProcessGroup"]),

    // MARK: - Thin executables
    .executableTarget(name: "search-cifar", dependencies: ["SearchCommands"]),
    .executableTarget(name: "train-cifar", dependencies: ["SearchCommands"]),
    .executableTarget(name: "bench", dependencies: ["SearchCommands"]),

    // MARK: - Test helpers
    // Run by DistributedTests under `mpirun -np 2`: a data-parallel step's gradients.
    .executableTarget(
      name: "data-parallel-check", dependencies: ["PCDARTS", "NeuralNetwork", "TensorEngine", "MPIProcessGroup"],
      path: "Tests/DataParallelCheck"),

    // MARK: - Unit test bundles
    .target(name: "TestSupport", dependencies: ["TensorEngine"], path: "Tests/TestSupport"),
    .testTarget(name: "TensorEngineTests", dependencies: ["TensorEngine", "TestSupport"]),
    .testTarget(
      name: "NeuralNetworkTests", dependencies: ["NeuralNetwork", "TensorEngine", "TestSupport"]),
    .testTarget(
      name: "PCDARTSTests",
      dependencies: ["PCDARTS", "NeuralNetwork", "TensorEngine", "TestSupport", "CZlib"]),
    .testTarget(
      name: "SearchCommandsTests",
      dependencies: ["SearchCommands", "PCDARTS", "NeuralNetwork", "TensorEngine", "TestSupport"]),
  ],
  swiftLanguageModes: [.v5]
)
