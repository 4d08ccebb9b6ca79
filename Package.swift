// swift-tools-version: 6.1
// Fused scaled-dot-product attention for CPUs: a C kernel (FlashAttention-2 loop,
// OpenMP) under a Swift module with the four attention layers of Raschka ch. 3.
import PackageDescription

// OpenMP: the Swift toolchain's clang understands -fopenmp but ships no omp.h,
// so the kernel declares the few omp_* functions it calls itself, and links
// Debian's libomp (package libomp-dev, which provides libomp5.so).
let openMPCSettings: [CSetting] = [
    .unsafeFlags(["-fopenmp"], .when(platforms: [.linux])),
]
let openMPLinkerSettings: [LinkerSetting] = [
    .linkedLibrary("omp5", .when(platforms: [.linux])),
]

let package = Package(
    name: "Attention",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "Attention", targets: ["Attention"]),
        .library(name: "AttentionExamples", targets: ["AttentionExamples"]),
        .executable(name: "attention", targets: ["attention"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "CAttention",
            path: "CKernels",
            cSettings: openMPCSettings + [.headerSearchPath(".")],
            linkerSettings: openMPLinkerSettings
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
