// swift-tools-version:6.0
// A client of the pcdarts-swift package: it links the engine, the neural-network modules and the
// search as libraries and adds its own candidate operation, without editing the package. A second
// executable, APIGuide, is every snippet of docs/api-guide.md in order (generated from the guide
// by scripts/extract_api_guide.py), so the guide compiles against the public API only.
import PackageDescription

let libraries: [Target.Dependency] = [
  .product(name: "TensorEngine", package: "pcdarts-swift"),
  .product(name: "NeuralNetwork", package: "pcdarts-swift"),
  .product(name: "PCDARTS", package: "pcdarts-swift"),
]

let package = Package(
  name: "CustomPrimitive",
  dependencies: [
    // Named, so the product references below do not depend on the name of the clone's folder.
    .package(name: "pcdarts-swift", path: "../..")
  ],
  targets: [
    .executableTarget(name: "CustomPrimitive", dependencies: libraries),
    .executableTarget(name: "APIGuide", dependencies: libraries),
  ],
  swiftLanguageModes: [.v5]
)
