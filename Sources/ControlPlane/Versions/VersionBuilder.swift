import ConfigRenderer
import Crypto
import Foundation
import OpAMPServer
import PolicyEngine

/// A policy set compiled from an apply: what a version is made of, before it is stored.
public struct CompiledSet: Sendable {
    /// The sources, sorted by path.
    public var sources: [SourceText]
    /// `fleet.yaml` text.
    public var fleetText: String
    /// The checked IR.
    public var policySet: PolicySet
    /// The parsed fleet.
    public var fleet: Fleet
    /// The IR as JSON.
    public var irJSON: String
    /// SHA-256 over the sources and the fleet text.
    public var contentHash: String
    /// Compiler warnings.
    public var warnings: [Diagnostic]
    /// The packages each tier runs (`nil`: none managed).
    public var packages: VersionPackages? = nil

    /// The collector version a tier's configs are rendered for: its top-level package's version when it
    /// has one (the collector it will run), otherwise `collector.version` of `fleet.yaml`.
    public func collectorVersion(_ tier: AgentTier) -> CollectorVersion {
        self.packages?.renderVersion(tier) ?? self.fleet.collectorVersion
    }

    /// The fleet with the tier's collector version, as its configs are rendered.
    func fleet(for tier: AgentTier) -> Fleet {
        var fleet = self.fleet
        fleet.collectorVersion = self.collectorVersion(tier)
        return fleet
    }
}

/// Why an apply was refused: the compiler's diagnostics, the fleet description's, or the renderer's.
public struct ApplyRejection: Error, Sendable, Hashable, Codable {
    /// Policy diagnostics (the same codes, spans and suggestions `policyctl validate` prints).
    public var diagnostics: [Diagnostic]
    /// Fleet and render problems.
    public var fleetDiagnostics: [FleetDiagnostic]

    /// A one-paragraph summary.
    public var summary: String {
        let errors = self.diagnostics.filter { $0.severity == .error }
        let lines =
            errors.map { "\($0.file):\($0.start.line):\($0.start.column): \($0.message) [\($0.code.rawValue)]" }
            + self.fleetDiagnostics.map(\.description)
        return lines.joined(separator: "\n")
    }
}

/// Compiles and renders versions with the same PolicyEngine and ConfigRenderer as `policyctl`. Pure.
public enum VersionBuilder {
    /// Compiles sources and the fleet description; errors come back as diagnostics and nothing else happens.
    public static func compile(
        sources: [SourceText],
        fleet fleetText: String,
        packages: VersionPackages? = nil
    ) -> Result<CompiledSet, ApplyRejection> {
        let sorted = sources.sorted { $0.path < $1.path }
        guard !sorted.isEmpty else {
            return .failure(
                ApplyRejection(
                    diagnostics: [],
                    fleetDiagnostics: [
                        FleetDiagnostic(
                            code: .missingKey,
                            message: "the apply holds no .policy files",
                            suggestion: "send the directory with the policy set (`policyctl apply policies/`)"
                        )
                    ]
                )
            )
        }
        // Two files under one path would make every diagnostic and every stored source ambiguous.
        var seen = Set<String>()
        let repeated = sorted.map(\.path).filter { !seen.insert($0).inserted }
        if let path = repeated.first {
            return .failure(
                ApplyRejection(
                    diagnostics: [],
                    fleetDiagnostics: [
                        FleetDiagnostic(
                            code: .invalidValue,
                            message: "the apply holds two files named `\(path)`",
                            suggestion: "send each .policy file once, under a path of its own"
                        )
                    ]
                )
            )
        }
        let result = PolicyCompiler.compile(sorted.map { SourceFile(path: $0.path, text: $0.text) })
        let fleetResult = FleetParser.parse(fleetText, path: "fleet.yaml")
        var rejection = ApplyRejection(diagnostics: result.diagnostics, fleetDiagnostics: [])
        if case .failure(let problems) = fleetResult { rejection.fleetDiagnostics = problems.diagnostics }
        guard let policySet = result.policySet, !result.hasErrors, case .success(let fleet) = fleetResult else {
            return .failure(rejection)
        }
        let packages = packages.flatMap { $0.isEmpty ? nil : $0 }
        // Both tiers must render for some membership, each for the collector version it will run; a refusal (a
        // feature the collectors lack, a budget share that rounds to nothing) refuses the apply.
        let probe = Membership(samplers: ["probe:4317"], samplerCount: 1)
        for tier in [AgentTier.loadBalancing, .sampling] {
            // The collector the configs are rendered for, and, while a tier moves to another collector, the one
            // it moves to: the policies must run on both.
            var targets: [CollectorVersion] = []
            if let version = packages?.renderVersion(tier) { targets.append(version) }
            if let pinned = packages?.collector(tier).flatMap({ VersionPackages.collectorVersion($0.version) }),
                !targets.contains(pinned)
            {
                targets.append(pinned)
            }
            for target in targets.isEmpty ? [fleet.collectorVersion] : targets {
                var tierFleet = fleet
                tierFleet.collectorVersion = target
                let rendered = ConfigRenderer.render(
                    tier == .loadBalancing ? .loadBalancing : .sampling,
                    policySet: policySet,
                    fleet: tierFleet,
                    membership: probe
                )
                guard case .failure(let problems) = rendered else { continue }
                var diagnostics = problems.diagnostics
                if let collector = packages?.collector(tier) {
                    // Say which package set the version: the fix may be another collector, not other policies.
                    diagnostics = diagnostics.map { diagnostic in
                        var diagnostic = diagnostic
                        diagnostic.message =
                            "\(tier == .sampling ? "sampling" : "load-balancing") tier on \(collector.name) \(collector.version): "
                            + diagnostic.message
                        return diagnostic
                    }
                }
                rejection.fleetDiagnostics = diagnostics
                return .failure(rejection)
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let ir = (try? encoder.encode(policySet)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        var hasher = SHA256()
        for source in sorted {
            hasher.update(data: Array("file \(source.path.utf8.count):\(source.path)\n".utf8))
            hasher.update(data: Array("\(source.text.utf8.count):".utf8) + Array(source.text.utf8))
        }
        hasher.update(data: Array("fleet \(fleetText.utf8.count):".utf8) + Array(fleetText.utf8))
        if let packages {
            // Only when there are packages, so versions without any keep the hash they always had.
            for (tier, pins) in [("lb", packages.loadBalancing), ("sampling", packages.sampling)] {
                for pin in pins {
                    hasher.update(
                        data: Array(
                            "package \(tier) \(pin.name) \(pin.version) \(pin.kind.rawValue) \(pin.sha256)\n".utf8
                        )
                    )
                }
            }
            for (tier, version) in (packages.renderedFor ?? [:]).sorted(by: { $0.key < $1.key }) {
                hasher.update(data: Array("rendered-for \(tier) \(version)\n".utf8))
            }
        }
        let hash = Array(hasher.finalize()).hexString
        return .success(
            CompiledSet(
                sources: sorted,
                fleetText: fleetText,
                policySet: policySet,
                fleet: fleet,
                irJSON: ir,
                contentHash: hash,
                warnings: result.diagnostics.filter { $0.severity == .warning },
                packages: packages
            )
        )
    }

    /// Renders one tier of a compiled set for a ring and a sampler count.
    public static func render(
        _ set: CompiledSet,
        tier: AgentTier,
        ring: [String],
        samplerCount: Int
    ) -> Result<RenderedConfig, FleetProblems> {
        let membership = Membership(samplers: ring, samplerCount: max(1, samplerCount))
        return ConfigRenderer.render(
            tier == .loadBalancing ? .loadBalancing : .sampling,
            policySet: set.policySet,
            fleet: set.fleet(for: tier),
            membership: membership
        )
    }
}
