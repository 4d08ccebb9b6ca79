// swift-tools-version: 6.2
// Fused scaled-dot-product attention for CPUs: a C kernel (FlashAttention-2 loop,
// OpenMP or Dispatch) under a Swift module with the four attention layers of
// Raschka ch. 3.
//
// Tools version 6.2: SwiftPM accepts the C target's unsafe flags (-fopenmp, and
// -O2 in debug builds) from a dependency pinned by version only from 6.2 on, so
// consumers need Swift 6.2 or later.
import PackageDescription

// OpenMP (trait `OpenMP`, on by default; it applies on Linux only): the Swift
// toolchain's clang understands -fopenmp but ships no omp.h, so the kernel
// declares the few omp_* functions it calls itself, and links Debian's libomp
// (package libomp-dev, which provides libomp5.so; at run time libomp.so.5, from
// package libomp5). With the trait off the kernel compiles without OpenMP and
// Swift's Dispatch drives its plan of tasks: nothing needs libomp.
let openMP: BuildSettingCondition = .when(platforms: [.linux], traits: ["OpenMP"])

let kernelCSettings: [CSetting] = [
    .unsafeFlags(["-fopenmp"], openMP),
    .define("ATTN_WITH_OPENMP", openMP),
    // The kernel is the whole point of the package: debug builds of an app get
    // an optimised kernel too (SwiftPM's debug default, -O0, is ~55× slower).
    .unsafeFlags(["-O2"], .when(configuration: .debug)),
    .headerSearchPath("."),
]

let package = Package(
    name: "Attention",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "Attention", targets: ["Attention"]),
        .library(name: "AttentionExamples", targets: ["AttentionExamples"]),
        .executable(name: "attention", targets: ["attention"]),
    ],
    traits: [
        .trait(
            name: "OpenMP",
            description: "Drive the kernel with OpenMP threads on Linux (needs libomp: Debian's libomp-dev to build, libomp5 to run). Without it, Swift's Dispatch drives the same plan, with the same bits."
        ),
        .default(enabledTraits: ["OpenMP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "CAttention",
            path: "CKernels",
            cSettings: kernelCSettings,
            linkerSettings: [.linkedLibrary("omp5", openMP)]
        ),
        .target(
            name: "Attention",
            dependencies: ["CAttention"]
        ),
        .target(
            name: "AttentionExamples",
            dependencies: ["Attention"],
            resources: [.copy("Resources")]
        ),
        .executableTarget(
            name: "attention",
            dependencies: [
                "Attention",
                "AttentionExamples",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "AttentionTests",
            dependencies: ["Attention", "AttentionExamples", "CAttention"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
