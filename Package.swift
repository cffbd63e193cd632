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
        .library(name: "OpAMPProtocol", targets: ["OpAMPProtocol"]),
        .executable(name: "policyctl", targets: ["policyctl"]),
        .executable(name: "policyd", targets: ["policyd"]),
        .executable(name: "opamp-fleet", targets: ["opamp-fleet"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
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
        // OpAMP messages generated from proto/ (generated code committed) and WebSocket framing.
        .target(
            name: "OpAMPProtocol",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: upcoming
        ),
        // TLS material from files (reloaded when they change), the built-in CA, agent certificates and CSR
        // checks, bearer secrets. No policies, no store.
        .target(
            name: "Credentials",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "OpAMPProtocol",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: upcoming
        ),
        // OpAMP transports (HTTP and WebSocket on one port), agent sessions, registry, config delivery.
        // Knows nothing about policies.
        .target(
            name: "OpAMPServer",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "OpAMPProtocol",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPCompression", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: upcoming
        ),
        // Versions, the store (GRDB for SQLite, postgres-nio for PostgreSQL), the rollout engine (pure), the ring, the controller and the HTTP API.
        .target(
            name: "ControlPlane",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "PolicyEngine",
                "ConfigRenderer",
                "OpAMPServer",
                "Credentials",
                "PolicyTesting",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
            ],
            // The web console's templates, stylesheet and script, compiled into the binary.
            resources: [
                "layout.mustache", "fleet.mustache", "fleet-summary.mustache", "agent.mustache",
                "diff-section.mustache", "policies.mustache", "versions.mustache", "packages.mustache",
                "version-diff.mustache",
                "rollout.mustache", "rollout-progress.mustache", "login.mustache", "error.mustache", "message.mustache",
                "console.css", "console.js",
            ].map { .embedInCode("Console/Resources/\($0)") },
            swiftSettings: upcoming
        ),
        // The system zlib (gzip trace files); swift-nio-extras links the same library.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // glibc's allocator settings (mallopt), set once at start by the long-running executables.
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
        // Decision simulation around the pure evaluator: trace files (OTLP JSON, gzip, streamed), rule tests,
        // estimates and their reports, synthetic traces.
        .target(
            name: "PolicyTesting",
            dependencies: [
                "PolicyEngine", "CZlib", .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "policyctl",
            dependencies: [
                "PolicyEngine",
                "ConfigRenderer",
                "PolicyTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "policyd",
            dependencies: [
                "CMalloc",
                "OpAMPServer",
                "Credentials",
                .product(name: "Yams", package: "Yams"),
                "ControlPlane",
                "FleetSimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: upcoming
        ),
        // Simulated collectors over real OpAMP connections (the demo, benchmarks and interop tests use it).
        .target(
            name: "FleetSimulator",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "OpAMPProtocol",
                "Credentials",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "opamp-fleet",
            dependencies: [
                "FleetSimulator", "CMalloc", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: upcoming
        ),
        // Benchmarks print figures; they are never run as tests.
        .executableTarget(
            name: "opamp-bench",
            dependencies: ["OpAMPServer", "OpAMPProtocol", .product(name: "Logging", package: "swift-log")],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "control-bench",
            dependencies: [
                "ControlPlane", "OpAMPServer", "FleetSimulator",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "package-bench",
            dependencies: [
                "ControlPlane", "OpAMPServer", "CMalloc",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "store-bench",
            dependencies: [
                "ControlPlane",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "ha-bench",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "credentials-bench",
            dependencies: [
                "ControlPlane", "Credentials", "OpAMPServer", "OpAMPProtocol", "FleetSimulator",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "simulate-bench",
            dependencies: ["PolicyEngine", "PolicyTesting"],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "policy-bench",
            dependencies: ["PolicyEngine", "ConfigRenderer"],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "PolicyEngineTests",
            dependencies: ["PolicyEngine"],
            exclude: ["Golden"],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "ConfigRendererTests",
            dependencies: ["ConfigRenderer", "PolicyEngine", .product(name: "Yams", package: "Yams")],
            exclude: ["Golden"],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "OpAMPServerTests",
            dependencies: [
                "OpAMPServer", "OpAMPProtocol", "FleetSimulator",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "ControlPlaneTests",
            dependencies: [
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                "ControlPlane", "OpAMPServer", "FleetSimulator", "PolicyEngine", "ConfigRenderer", "Credentials",
                "OpAMPProtocol", "PolicyTesting",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "CredentialsTests",
            dependencies: [
                "Credentials", "OpAMPProtocol",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "PolicyTestingTests",
            dependencies: ["PolicyTesting", "PolicyEngine"],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "PolicyctlTests",
            dependencies: ["policyctl", "PolicyEngine"],
            swiftSettings: upcoming
        ),
    ]
)

// Coverage-guided fuzzers (docs/fuzzing.md). They exist only when TAILPLANE_FUZZ=1, so the normal build and
// CI's test build never compile them; scripts/fuzz.sh builds them with libFuzzer and AddressSanitizer into
// .build-fuzz/. Each folder under Fuzz/ holds the target's source, its seed corpus and its dictionary.
if Context.environment["TAILPLANE_FUZZ"] == "1" {
    func fuzzer(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
        .executableTarget(
            name: "fuzz-\(name)",
            dependencies: dependencies,
            path: "Fuzz/\(name)",
            exclude: ["corpus", "dictionary.txt"],
            swiftSettings: upcoming
        )
    }
    package.targets += [
        fuzzer("policy-compiler", ["PolicyEngine"]),
        fuzzer("fleet-render", ["ConfigRenderer", "PolicyEngine", .product(name: "Yams", package: "Yams")]),
        fuzzer(
            "opamp-session",
            [
                "OpAMPServer", "OpAMPProtocol", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        fuzzer(
            "opamp-transport",
            [
                "OpAMPServer", "OpAMPProtocol", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        fuzzer("otlp-json", ["PolicyEngine", "PolicyTesting"]),
        fuzzer(
            "api-apply",
            ["ControlPlane", "ConfigRenderer", "PolicyEngine", .product(name: "Yams", package: "Yams")]
        ),
        fuzzer(
            "csr",
            [
                "Credentials", "OpAMPProtocol", .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
    ]
}
