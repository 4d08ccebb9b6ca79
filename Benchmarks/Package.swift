// swift-tools-version: 6.1
// Benchmarks of the Attention library with ordo-one/benchmark (its former name:
// package-benchmark). A package of its own, so the root build, tests and CI never
// build it. Run from this folder: `swift package benchmark` (README.md).
import PackageDescription

// SwiftPM names a `.package(path:)` dependency after its folder, not after the
// `name:` in its manifest, and the folder of a checkout varies (a clone, a
// worktree, CI's copy), so the root package's identity is read off the path.
let rootPackage = String(Context.packageDirectory.split(separator: "/").dropLast().last ?? "Attention")

let package = Package(
    name: "AttentionBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(path: ".."),
        // Only the MallocInterposer trait (malloc counts and bytes): the default
        // RuntimeInterposer trait (ARC counts on Linux with Swift 6.3) would pull in
        // ordo-one/swift-runtime-interposer, which these benchmarks do not measure.
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "AttentionBenchmarks",
            dependencies: [
                .product(name: "Attention", package: rootPackage),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/AttentionBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
