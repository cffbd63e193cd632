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
        .executable(name: "policyctl", targets: ["policyctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2")
    ],
    targets: [
        // DSL -> checked IR, diagnostics, formatter. Pure: Foundation only, no I/O.
        .target(name: "PolicyEngine", swiftSettings: upcoming),
        .executableTarget(
            name: "policyctl",
            dependencies: [
                "PolicyEngine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: upcoming
        ),
        // Benchmarks print figures; they are never run as tests.
        .executableTarget(name: "policy-bench", dependencies: ["PolicyEngine"], swiftSettings: upcoming),
        .testTarget(name: "PolicyEngineTests", dependencies: ["PolicyEngine"], swiftSettings: upcoming),
        .testTarget(
            name: "PolicyctlTests",
            dependencies: ["policyctl", "PolicyEngine"],
            swiftSettings: upcoming
        ),
    ]
)
