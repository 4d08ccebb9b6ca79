// swift-tools-version: 6.1
// The cost of the attention weights against a forward call, in one run:
//   cd scripts/weights-cost && swift run -c release weights-cost [threads]
// prints forward, weights (the float32 path) and the oracle's weights in ms and
// their ratios to the forward call, for PyTorch's benchmark shapes.
import Foundation
import PackageDescription

// A path dependency's identity is its directory's name: that of this checkout.
let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "weights-cost",
    platforms: [.macOS(.v13)],
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(name: "weights-cost", dependencies: [.product(name: "Attention", package: checkout)]),
    ]
)
