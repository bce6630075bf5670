// swift-tools-version:6.0
// A client of the pcdarts-swift package: it links the engine and the search as libraries and
// adds its own candidate operation, without editing the package.
import PackageDescription

let package = Package(
  name: "CustomPrimitive",
  dependencies: [
    // Named, so the product references below do not depend on the name of the clone's folder.
    .package(name: "pcdarts-swift", path: "../..")
  ],
  targets: [
    .executableTarget(
      name: "CustomPrimitive",
      dependencies: [
        .product(name: "TensorEngine", package: "pcdarts-swift"),
        .product(name: "NeuralNetwork", package: "pcdarts-swift"),
        .product(name: "PCDARTS", package: "pcdarts-swift"),
      ])
  ],
  swiftLanguageModes: [.v5]
)
