import ConfigRenderer
import Foundation
import OpAMPServer

/// Which tier an agent belongs to, from the fleet description's `tiers` matchers.
public enum AgentTier: String, Sendable, Hashable, Codable, CaseIterable {
    /// Collectors with the load-balancing exporter.
    case loadBalancing = "lb"
    /// Collectors with the `tail_sampling` processor.
    case sampling
    /// Neither: listed, never sent anything.
    case unmanaged

    /// A managed tier as people write it: `sampling` (or `sampler`), `lb` (or `load-balancing`).
    public init?(name: String) {
        switch name.lowercased() {
        case "sampling", "sampler": self = .sampling
        case "lb", "load-balancing", "loadbalancing": self = .loadBalancing
        default: return nil
        }
    }
}

/// One policy file of a version, as applied.
public struct SourceText: Sendable, Hashable, Codable {
    /// The path as given (relative to the applied directory).
    public var path: String
    /// The file's text.
    public var text: String

    /// Creates a source.
    public init(path: String, text: String) {
        self.path = path
        self.text = text
    }
}

/// How a version's rollout ended.
public enum VersionOutcome: String, Sendable, Hashable, Codable {
    /// Stored; its rollout has not finished.
    case pending
    /// Rolled out to the whole fleet.
    case deployed
    /// Its rollout failed and was rolled back.
    case failed
    /// Its rollout was aborted.
    case aborted
    /// A newer version replaced it before its rollout finished.
    case superseded
}

/// An immutable, numbered policy-set version.
public struct PolicyVersion: Sendable, Hashable, Codable {
    /// 1, 2, 3, …
    public var number: Int
    /// SHA-256 over the sources and the fleet description: equal content, equal hash.
    public var contentHash: String
    /// The policy files.
    public var sources: [SourceText]
    /// `fleet.yaml` as applied.
    public var fleet: String
    /// The compiled IR as JSON.
    public var ir: String
    /// Who applied it (the API token's name, or what the client said).
    public var author: String
    /// Why.
    public var message: String
    /// The Git revision the sources came from, when given.
    public var gitRevision: String?
    /// When it was stored.
    public var createdAt: Date
    /// How its rollout ended.
    public var outcome: VersionOutcome
    /// Errors agents reported when it failed.
    public var failureReason: String?
    /// The packages each tier runs with this version, pinned to their content (`nil`: none managed).
    public var packages: VersionPackages?

    /// Creates a version record.
    public init(
        number: Int,
        contentHash: String,
        sources: [SourceText],
        fleet: String,
        ir: String,
        author: String,
        message: String,
        gitRevision: String?,
        createdAt: Date,
        outcome: VersionOutcome = .pending,
        failureReason: String? = nil,
        packages: VersionPackages? = nil
    ) {
        self.number = number
        self.contentHash = contentHash
        self.sources = sources
        self.fleet = fleet
        self.ir = ir
        self.author = author
        self.message = message
        self.gitRevision = gitRevision
        self.createdAt = createdAt
        self.outcome = outcome
        self.failureReason = failureReason
        self.packages = packages
    }
}

/// A package a version pins: name, version, kind and the exact content (a version is immutable, so it
/// names bytes, not only a version string).
public struct PinnedPackage: Sendable, Hashable, Codable {
    /// Package name.
    public var name: String
    /// Version as published.
    public var version: String
    /// Top-level (the collector) or add-on.
    public var kind: PackageKind
    /// SHA-256 of the file, hex.
    public var sha256: String

    /// Creates a pin.
    public init(name: String, version: String, kind: PackageKind, sha256: String) {
        self.name = name
        self.version = version
        self.kind = kind
        self.sha256 = sha256
    }
}

/// The packages of a version, per tier, sorted by name. A tier with none is not managed: its agents are
/// never offered packages.
public struct VersionPackages: Sendable, Hashable, Codable {
    /// The load-balancing tier's packages.
    public var loadBalancing: [PinnedPackage]
    /// The sampling tier's packages.
    public var sampling: [PinnedPackage]

    /// Tiers (`lb`, `sampling`) whose configs this version renders for another collector version than its
    /// top-level package's: a version that changes a tier's collector renders for the older of the two, so
    /// the config it sends starts on either binary while agents move over.
    public var renderedFor: [String: String]?

    /// Creates the packages of a version.
    public init(
        loadBalancing: [PinnedPackage] = [],
        sampling: [PinnedPackage] = [],
        renderedFor: [String: String]? = nil
    ) {
        self.loadBalancing = loadBalancing.sorted { $0.name < $1.name }
        self.sampling = sampling.sorted { $0.name < $1.name }
        self.renderedFor = renderedFor.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The collector version a tier's configs are rendered for, when its packages decide it.
    public func renderVersion(_ tier: AgentTier) -> CollectorVersion? {
        if let text = self.renderedFor?[tier.rawValue] { return Self.collectorVersion(text) }
        return self.collector(tier).flatMap { Self.collectorVersion($0.version) }
    }

    /// `0.152.0`, `v0.152.1`, `0.152.0-rc.1` or `0.152.0+acme` as a collector version (major and minor).
    public static func collectorVersion(_ text: String) -> CollectorVersion? {
        let release = text.split(whereSeparator: { $0 == "-" || $0 == "+" }).first.map(String.init) ?? text
        return CollectorVersion(release)
    }

    /// One tier's packages (none for unmanaged agents).
    public subscript(tier: AgentTier) -> [PinnedPackage] {
        switch tier {
        case .loadBalancing: self.loadBalancing
        case .sampling: self.sampling
        case .unmanaged: []
        }
    }

    /// No tier has packages.
    public var isEmpty: Bool { self.loadBalancing.isEmpty && self.sampling.isEmpty }

    /// The tier's collector (its top-level package), if it has one.
    public func collector(_ tier: AgentTier) -> PinnedPackage? {
        self[tier].first { $0.kind == .topLevel }
    }

    /// `name version` list for messages, such as `otelcol-contrib 0.150.0`.
    public func summary(_ tier: AgentTier) -> String {
        self[tier].map { "\($0.name) \($0.version)" }.joined(separator: ", ")
    }
}

/// A package in policyd's repository.
public struct PackageRecord: Sendable, Hashable, Codable {
    /// Package name (`otelcol-contrib`).
    public var name: String
    /// Version as published (`0.150.0`).
    public var version: String
    /// Top-level (a collector build) or add-on.
    public var kind: PackageKind
    /// File size in bytes.
    public var size: Int64
    /// SHA-256 of the file, hex: where it is stored and what agents check.
    public var sha256: String
    /// policyd's Ed25519 signature of the package statement, base64 (docs/packages.md).
    public var signature: String
    /// Who pushed it (the API token's name).
    public var uploader: String
    /// When.
    public var uploadedAt: Date

    /// Creates a record.
    public init(
        name: String,
        version: String,
        kind: PackageKind,
        size: Int64,
        sha256: String,
        signature: String,
        uploader: String,
        uploadedAt: Date
    ) {
        self.name = name
        self.version = version
        self.kind = kind
        self.size = size
        self.sha256 = sha256
        self.signature = signature
        self.uploader = uploader
        self.uploadedAt = uploadedAt
    }

    /// The pin a version keeps.
    public var pin: PinnedPackage {
        PinnedPackage(name: self.name, version: self.version, kind: self.kind, sha256: self.sha256)
    }
}

/// A rendered collector config kept with its version.
public struct RenderedRecord: Sendable, Hashable, Codable {
    /// Version number.
    public var version: Int
    /// Tier (`lb` or `sampling`).
    public var tier: AgentTier
    /// The sampler count it was rendered for.
    public var samplerCount: Int
    /// The ring it was rendered with (load-balancing tier).
    public var ringVersion: Int
    /// The config.
    public var yaml: String
    /// Its SHA-256.
    public var hash: String
}

/// The last known state of one agent, as the control plane stores and serves it.
public struct AgentRecord: Sendable, Hashable, Codable {
    /// Instance UID (canonical text form).
    public var instanceUID: String
    /// Tier from the fleet description.
    public var tier: AgentTier
    /// `websocket`, `http`, or `nil` when offline.
    public var transport: String?
    /// Connected now.
    public var connected: Bool
    /// Host name from the description.
    public var hostName: String?
    /// Ring entry (samplers).
    public var ringEntry: String?
    /// Version it should run.
    public var desiredVersion: Int?
    /// Hash of the config it should run.
    public var desiredHash: String?
    /// Hash it last reported.
    public var reportedHash: String?
    /// The version it runs, when its reported hash is one the control plane rendered.
    public var runningVersion: Int?
    /// `applied`, `applying`, `failed`, `pending`, `unverified` (no status reported: judged by health).
    public var configState: String
    /// The agent's error for the last config, if any.
    public var configError: String?
    /// Healthy, when reported.
    public var healthy: Bool?
    /// Last health error.
    public var healthError: String?
    /// In the ring now (samplers).
    public var inRing: Bool
    /// Last message time.
    public var lastSeen: Date
    /// The credential its latest message came with (`certificate:…`, `enrolment:…`, `shared-token`), never a secret.
    public var credential: String?
    /// SHA-256 of the client certificate it connected with, hex.
    public var certificateFingerprint: String?
    /// Connection settings: `offered` (not yet reported), `applying`, `applied`, `failed`; nil when none offered.
    public var connectionSettingsState: String?
    /// The agent's error for the offered connection settings.
    public var connectionSettingsError: String?
    /// The collector version it reports (`service.version` of its description).
    public var collectorVersion: String?
    /// Its packages: `installed`, `downloading 40%`, `installing`, `offered`, `failed`, or `upgrade by hand`
    /// (it does not accept packages); nil when its version manages no packages.
    public var packageState: String?
    /// The agent's error for the offered packages.
    public var packageError: String?
}

/// A ring change.
public struct RingRecord: Sendable, Hashable, Codable {
    /// Increases with every change.
    public var version: Int
    /// Sorted exact endpoint strings.
    public var members: [String]
    /// When it changed.
    public var changedAt: Date
    /// Why (`sampler joined`, `draining sampler-3`, …).
    public var reason: String
    /// Seconds until every connected load balancer reported it applied; `nil` until then.
    public var convergenceSeconds: Double?
}

/// One write through the API.
public struct AuditEntry: Sendable, Hashable, Codable {
    /// When.
    public var time: Date
    /// Who (token name).
    public var actor: String
    /// What (`apply`, `rollout.pause`, …).
    public var action: String
    /// Details (version numbers, outcome).
    public var detail: String
    /// From where (peer address).
    public var remote: String
}
