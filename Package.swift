// swift-tools-version:6.1
import PackageDescription

let upcoming: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Tailplane",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PolicyEngine", targets: ["PolicyEngine"]),
        .library(name: "ConfigRenderer", targets: ["ConfigRenderer"]),
        .executable(name: "policyctl", targets: ["policyctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        // DSL -> checked IR, diagnostics, formatter. Pure: Foundation only, no I/O.
        .target(name: "PolicyEngine", swiftSettings: upcoming),
        // IR + fleet description -> collector YAML per tier + content hash. Pure.
        .target(
            name: "ConfigRenderer",
            dependencies: [
                "PolicyEngine",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "policyctl",
            dependencies: [
                "PolicyEngine",
                "ConfigRenderer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: upcoming
        ),
        // Benchmarks print figures; they are never run as tests.
        .executableTarget(name: "policy-bench", dependencies: ["PolicyEngine", "ConfigRenderer"], swiftSettings: upcoming),
        .testTarget(name: "PolicyEngineTests", dependencies: ["PolicyEngine"], swiftSettings: upcoming),
        .testTarget(
            name: "ConfigRendererTests",
            dependencies: ["ConfigRenderer", "PolicyEngine", .product(name: "Yams", package: "Yams")],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "PolicyctlTests",
            dependencies: ["policyctl", "PolicyEngine"],
            swiftSettings: upcoming
        ),
    ]
)
