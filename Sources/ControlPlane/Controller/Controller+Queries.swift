import ConfigRenderer
import Foundation
import OpAMPProtocol
import OpAMPServer
import PolicyEngine
import PolicyTesting

/// One component's health, flattened: `pipeline:traces/receiver:otlp`.
public struct ComponentHealthRecord: Sendable, Hashable, Codable {
    /// The path of names from the agent down to the component, joined with `/`.
    public var path: String
    /// Healthy or not.
    public var healthy: Bool
    /// The component's status text.
    public var status: String
    /// Its last error.
    public var lastError: String
}

/// Everything known about one agent: its record, what it said about itself, and the config it reports next
/// to the one it should run.
public struct AgentDetail: Sendable, Hashable, Codable {
    /// The summary the agent list shows.
    public var agent: AgentRecord
    /// Identifying attributes from its description (`service.name`, `service.instance.id`, …).
    public var identifyingAttributes: [String: String]
    /// Non-identifying attributes (`host.name`, `os.type`, …).
    public var nonIdentifyingAttributes: [String: String]
    /// Capabilities it declared, by name.
    public var capabilities: [String]
    /// When its current connection began.
    public var connectedSince: Date?
    /// Since when it has been healthy without interruption.
    public var healthySince: Date?
    /// When its remote config status last changed.
    public var remoteConfigStatusSince: Date?
    /// Its health status text.
    public var healthStatus: String?
    /// Components' health, flattened, unhealthy first.
    public var components: [ComponentHealthRecord]
    /// The effective config it reports, one entry per file (`nil`: it never reported one).
    public var effectiveConfig: [SourceText]?
    /// The config it should run (`nil`: none assigned yet, or unmanaged).
    public var desiredConfig: String?
}

/// What compiling a policy set without storing it found: every diagnostic, and each tier's config as it
/// would be rendered for the fleet as it stands.
public struct ValidationReport: Sendable, Hashable, Codable {
    /// The set compiles and renders: an apply would be accepted (unless a rollout is in the way).
    public var valid: Bool
    /// Compiler errors and warnings, in file order.
    public var diagnostics: [Diagnostic]
    /// `fleet.yaml` and render problems and warnings.
    public var fleetDiagnostics: [FleetDiagnostic]
    /// The content hash an apply would store (when valid).
    public var contentHash: String?
    /// Each tier's rendered config (when valid).
    public var rendered: [RenderedTier]

    /// One tier's config.
    public struct RenderedTier: Sendable, Hashable, Codable {
        /// `lb` or `sampling`.
        public var tier: AgentTier
        /// The config.
        public var yaml: String
        /// Its SHA-256.
        public var hash: String
    }
}

extension Controller {
    /// One agent in full, by instance UID (canonical text), or `nil` when the server does not know it.
    public func agentDetail(_ uid: String) -> AgentDetail? {
        guard let instanceUID = InstanceUID(uuidString: uid), let snapshot = self.registry.agent(instanceUID) else {
            return nil
        }
        let state = self.view(snapshot, fleet: self.tieringFleet(), now: self.clock())
        var components: [ComponentHealthRecord] = []
        func flatten(_ health: AgentHealth, path: String) {
            for (name, component) in health.components {
                let here = path.isEmpty ? name : "\(path)/\(name)"
                components.append(
                    ComponentHealthRecord(
                        path: here,
                        healthy: component.healthy,
                        status: component.status,
                        lastError: component.lastError
                    )
                )
                flatten(component, path: here)
            }
        }
        if let health = snapshot.health { flatten(health, path: "") }
        components.sort { ($0.healthy ? 1 : 0, $0.path) < ($1.healthy ? 1 : 0, $1.path) }
        return AgentDetail(
            agent: self.record(state),
            identifyingAttributes: snapshot.description?.identifying ?? [:],
            nonIdentifyingAttributes: snapshot.description?.nonIdentifying ?? [:],
            capabilities: snapshot.capabilities.names,
            connectedSince: snapshot.connectedSince,
            healthySince: snapshot.healthySince,
            remoteConfigStatusSince: snapshot.remoteConfigStatusSince,
            healthStatus: snapshot.health.flatMap { $0.status.isEmpty ? nil : $0.status },
            components: components,
            effectiveConfig: snapshot.effectiveConfig.map { files in
                files.keys.sorted().map { name in
                    SourceText(path: name, text: String(decoding: files[name]?.body ?? [], as: UTF8.self))
                }
            },
            desiredConfig: state.desired?.yaml
        )
    }

    /// Compiles a policy set and renders both tiers for the fleet as it stands (the current ring and sampler
    /// count), storing nothing: what the console's editor shows as you type. The work happens off the
    /// controller, which only lends the ring and the sampler count, so editors never hold up rollouts.
    public nonisolated func validate(sources: [SourceText], fleet: String) async -> ValidationReport {
        let ring = await self.state.ring.members
        switch VersionBuilder.compile(sources: sources, fleet: fleet) {
        case .failure(let rejection):
            return ValidationReport(
                valid: false,
                diagnostics: rejection.diagnostics,
                fleetDiagnostics: rejection.fleetDiagnostics,
                contentHash: nil,
                rendered: []
            )
        case .success(let set):
            let count = await self.samplerCount(fleet: set.fleet)
            var rendered: [ValidationReport.RenderedTier] = []
            var fleetDiagnostics: [FleetDiagnostic] = []
            for tier in [AgentTier.loadBalancing, .sampling] {
                var ring = tier == .loadBalancing ? ring : []
                if tier == .loadBalancing && ring.isEmpty {
                    // No sampler yet: an apply is still accepted (load balancers get their config when samplers
                    // join), so show the config with a placeholder member rather than an error.
                    ring = ["sampler-placeholder:4317"]
                    fleetDiagnostics.append(
                        FleetDiagnostic(
                            code: .noSamplers,
                            message:
                                "no sampler is in the ring yet: the load-balancing config is shown with the placeholder member `sampler-placeholder:4317`",
                            severity: .warning
                        )
                    )
                }
                switch VersionBuilder.render(set, tier: tier, ring: ring, samplerCount: count) {
                case .success(let config):
                    rendered.append(.init(tier: tier, yaml: config.yaml, hash: config.hash))
                    fleetDiagnostics += config.warnings
                case .failure(let problems):
                    fleetDiagnostics += problems.diagnostics
                }
            }
            let failed = fleetDiagnostics.contains { $0.severity == .error }
            return ValidationReport(
                valid: !failed,
                diagnostics: set.warnings,
                fleetDiagnostics: fleetDiagnostics,
                contentHash: failed ? nil : set.contentHash,
                rendered: failed ? [] : rendered
            )
        }
    }
}

/// What a policy set keeps of a trace sample, next to what the fleet's current version keeps of it.
public struct EstimateReport: Sendable, Hashable, Codable {
    /// The version compared with (`nil`: no version yet, so no "before").
    public var currentVersion: Int?
    /// The current version's estimate.
    public var before: Estimate?
    /// The estimate of the sources sent.
    public var after: Estimate
    /// Spans that arrived after their trace was decided (they count for nothing, as in the collector).
    public var lateSpans: Int
}

extension Controller {
    /// Runs the sources sent and the current version over a trace sample (OTLP/JSON: one document, or one per
    /// line), with the ring's sampler count, storing nothing. The simulation runs off the controller.
    public nonisolated func estimate(
        sources: [SourceText],
        fleet: String,
        traces: String
    ) async throws(ControlPlaneError) -> EstimateReport {
        let after: CompiledSet
        switch VersionBuilder.compile(sources: sources, fleet: fleet) {
        case .success(let set): after = set
        case .failure(let rejection): throw .rejected(rejection)
        }
        let current = await self.state.current
        let before: CompiledSet?
        do {
            if let current { before = try await self.compiledSet(current) } else { before = nil }
        } catch {
            throw .store("\(error)")
        }
        let samplers = max(1, await self.state.ring.members.count)
        let options = SimulationOptions(samplers: samplers, collectorMinorVersion: after.fleet.collectorVersion.minor)
        var estimator = Estimator([after.policySet] + (before.map { [$0.policySet] } ?? []), options: options)
        var assembler = estimator.assembler()
        // One document, or JSON lines (as the collector's file exporter writes them).
        let text = traces.trimmingCharacters(in: .whitespacesAndNewlines)
        let documents = text.hasPrefix("{") && !text.contains("}\n{") ? [Substring(text)] : text.split(separator: "\n")
        for (index, document) in documents.enumerated() where !document.allSatisfy(\.isWhitespace) {
            do {
                for batch in try OTLPJSON.decode(Data(document.utf8)) { assembler.add(batch) }
            } catch {
                throw .badRequest(
                    "the trace sample is not OTLP/JSON" + (documents.count > 1 ? " (line \(index + 1))" : "")
                        + ": \(error.message)"
                )
            }
            for ready in assembler.releaseDue() { estimator.add(ready.trace, decisionTime: ready.decisionTime) }
        }
        for ready in assembler.finish() { estimator.add(ready.trace, decisionTime: ready.decisionTime) }
        guard estimator.estimates[0].traces > 0 else {
            throw .badRequest("the trace sample holds no spans")
        }
        return EstimateReport(
            currentVersion: before == nil ? nil : current,
            before: estimator.estimates.count > 1 ? estimator.estimates[1] : nil,
            after: estimator.estimates[0],
            lateSpans: assembler.lateSpans
        )
    }
}
