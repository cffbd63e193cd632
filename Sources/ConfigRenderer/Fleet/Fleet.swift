import Foundation
import PolicyEngine

/// Everything about a two-tier tail-sampling fleet that is not a sampling rule: which collector version
/// it runs, how agents are recognised per tier, how the load balancers reach the samplers, where kept
/// traces go, and how changes roll out. Read from `fleet.yaml` next to the policies (see docs/fleet.md);
/// every field has a default, so an empty file is a valid fleet.
public struct Fleet: Sendable, Hashable, Codable {
    /// The oldest otelcol-contrib version in the fleet; features it lacks are refused when rendering.
    public var collectorVersion: CollectorVersion = CollectorVersion(major: 0, minor: 150)
    /// Component type of the load-balancing exporter; by default `load_balancing` from v0.153, else `loadbalancing`.
    public var loadBalancingExporterType: String?
    /// How agents of the load-balancing tier are recognised.
    public var loadBalancingTier = TierMatch(attribute: "service.name", value: "otelcol-lb")
    /// How agents of the sampling tier are recognised.
    public var samplingTier = TierMatch(attribute: "service.name", value: "otelcol-sampler")
    /// The ring entry of one sampler, built from its attributes: `${host.name}:4317`.
    public var samplerEndpoint = EndpointTemplate(template: "${host.name}:4317")
    /// How the load balancers find samplers.
    public var resolver: Resolver = .static
    /// The load-balancing exporter's OTLP settings.
    public var loadBalancing = LoadBalancingSettings()
    /// Where kept traces go.
    public var backends: [Backend] = [Backend(name: "default", protocol: .otlp, endpoint: "backend:4317")]
    /// OTLP receivers on both tiers.
    public var receivers = Receivers()
    /// `memory_limiter` on both tiers.
    public var memoryLimiter = MemoryLimiter()
    /// `batch` on the sampling tier.
    public var batch = Batch()
    /// The collectors' own telemetry.
    public var telemetry = Telemetry()
    /// How the control plane rolls out a new version.
    public var rollout = RolloutStrategy()
    /// The packages (collector builds, add-ons) each tier should run, by name and version; `nil` for a tier
    /// the file does not mention (the control plane keeps what that tier runs).
    public var packages = PackagePins()

    /// The default fleet.
    public init() {}

    /// The exporter type to write for the load-balancing tier.
    public var effectiveLoadBalancingExporterType: String {
        self.loadBalancingExporterType
            ?? (self.collectorVersion >= CollectorVersion(major: 0, minor: 153) ? "load_balancing" : "loadbalancing")
    }
}

/// `packages:` in `fleet.yaml`: package name to version, per tier.
public struct PackagePins: Sendable, Hashable, Codable {
    /// The load-balancing tier's packages; `nil` when not declared.
    public var loadBalancing: [String: String]?
    /// The sampling tier's packages; `nil` when not declared.
    public var sampling: [String: String]?

    /// No packages declared.
    public init(loadBalancing: [String: String]? = nil, sampling: [String: String]? = nil) {
        self.loadBalancing = loadBalancing
        self.sampling = sampling
    }

    /// One tier's packages.
    public subscript(tier: Tier) -> [String: String]? {
        get { tier == .loadBalancing ? self.loadBalancing : self.sampling }
        set {
            if tier == .loadBalancing { self.loadBalancing = newValue } else { self.sampling = newValue }
        }
    }
}

/// An otelcol-contrib version, `0.130` (patch levels do not change config keys).
public struct CollectorVersion: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    /// Major version (0 for now).
    public var major: Int
    /// Minor version.
    public var minor: Int

    /// Creates a version.
    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// Parses `0.130`, `v0.130.0` or `0.130.1`.
    public init?(_ text: String) {
        let text = text.hasPrefix("v") ? String(text.dropFirst()) : text
        if text.isEmpty { return nil }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3, let major = Int(parts[0]), let minor = Int(parts[1]),
            parts.count == 2 || Int(parts[2]) != nil, major >= 0, minor >= 0
        else { return nil }
        self.init(major: major, minor: minor)
    }

    public static func < (lhs: CollectorVersion, rhs: CollectorVersion) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }

    public var description: String { "v\(self.major).\(self.minor)" }
}

/// An agent belongs to a tier when its AgentDescription attribute `attribute` equals `value`.
public struct TierMatch: Sendable, Hashable, Codable {
    /// Identifying or non-identifying attribute key, e.g. `service.name` or `tailplane.tier`.
    public var attribute: String
    /// The value that marks the tier.
    public var value: String

    /// Creates a matcher.
    public init(attribute: String, value: String) {
        self.attribute = attribute
        self.value = value
    }

    /// True when the attributes place the agent in this tier.
    public func matches(_ attributes: [String: String]) -> Bool {
        attributes[self.attribute] == self.value
    }
}

/// A template such as `${host.name}:4317` expanded from a sampler's attributes.
public struct EndpointTemplate: Sendable, Hashable, Codable {
    /// The template text.
    public var template: String

    /// Creates a template.
    public init(template: String) {
        self.template = template
    }

    /// The attribute names the template uses, in order.
    public var placeholders: [String] {
        Self.parse(self.template).compactMap { if case .placeholder(let name) = $0 { name } else { nil } }
    }

    /// Expands the template, or `nil` when an attribute is missing or empty.
    public func expand(_ attributes: [String: String]) -> String? {
        var out = ""
        for part in Self.parse(self.template) {
            switch part {
            case .text(let text): out += text
            case .placeholder(let name):
                guard let value = attributes[name], !value.isEmpty else { return nil }
                out += value
            }
        }
        return out
    }

    enum Part: Equatable {
        case text(String)
        case placeholder(String)
    }

    /// Splits `a${x}b` into parts; an unclosed `${` is kept as text (validation reports it).
    static func parse(_ template: String) -> [Part] {
        var parts: [Part] = []
        var rest = Substring(template)
        while let open = rest.range(of: "${") {
            if open.lowerBound > rest.startIndex { parts.append(.text(String(rest[..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].firstIndex(of: "}") else {
                parts.append(.text(String(rest[open.lowerBound...])))
                return parts
            }
            parts.append(.placeholder(String(rest[open.upperBound..<close])))
            rest = rest[rest.index(after: close)...]
        }
        if !rest.isEmpty { parts.append(.text(String(rest))) }
        return parts
    }
}

/// How the load-balancing exporter finds samplers.
public enum Resolver: Sendable, Hashable, Codable {
    /// The control plane writes the sampler list into every load balancer's config (same bytes everywhere).
    case `static`
    /// A/AAAA lookups of a hostname.
    case dns(DNSResolver)
    /// A Kubernetes service's endpoints.
    case k8s(KubernetesResolver)
}

/// `resolver.dns`.
public struct DNSResolver: Sendable, Hashable, Codable {
    /// The name to resolve.
    public var hostname: String
    /// Port appended to every address, if set.
    public var port: Int?
    /// Re-resolution interval in ms (collector default 5s).
    public var intervalMs: Int64?
    /// Lookup timeout in ms (collector default 1s).
    public var timeoutMs: Int64?

    /// Creates settings.
    public init(hostname: String, port: Int? = nil, intervalMs: Int64? = nil, timeoutMs: Int64? = nil) {
        self.hostname = hostname
        self.port = port
        self.intervalMs = intervalMs
        self.timeoutMs = timeoutMs
    }
}

/// `resolver.k8s`.
public struct KubernetesResolver: Sendable, Hashable, Codable {
    /// `name[.namespace]`.
    public var service: String
    /// Ports; one ring entry per address and port.
    public var ports: [Int]
    /// Watch timeout in ms.
    public var timeoutMs: Int64?
    /// Use pod host names (needs a headless Service that is the StatefulSet's serviceName).
    public var returnHostnames: Bool?

    /// Creates settings.
    public init(service: String, ports: [Int] = [4317], timeoutMs: Int64? = nil, returnHostnames: Bool? = nil) {
        self.service = service
        self.ports = ports
        self.timeoutMs = timeoutMs
        self.returnHostnames = returnHostnames
    }
}

/// TLS client settings (`configtls`). File paths are references, never key material.
public struct TLSSettings: Sendable, Hashable, Codable {
    /// Plain text (no TLS).
    public var insecure: Bool = false
    /// Skip server certificate verification.
    public var insecureSkipVerify: Bool?
    /// CA bundle path.
    public var caFile: String?
    /// Client certificate path (mTLS).
    public var certFile: String?
    /// Client key path (mTLS).
    public var keyFile: String?
    /// Server name override.
    public var serverNameOverride: String?

    /// Creates settings.
    public init(insecure: Bool = false) {
        self.insecure = insecure
    }
}

/// Exporter retry settings (`retry_on_failure`).
public struct RetrySettings: Sendable, Hashable, Codable {
    /// Retries on.
    public var enabled = true
    /// First back-off, ms.
    public var initialIntervalMs: Int64 = 5000
    /// Longest back-off, ms.
    public var maxIntervalMs: Int64 = 30_000
    /// Give up after, ms.
    public var maxElapsedTimeMs: Int64 = 300_000

    /// Defaults.
    public init() {}
}

/// Exporter queue settings (`sending_queue`).
public struct QueueSettings: Sendable, Hashable, Codable {
    /// Queue on.
    public var enabled = true
    /// Parallel senders.
    public var numConsumers = 10
    /// Batches held.
    public var queueSize = 5000

    /// Defaults.
    public init() {}
}

/// The load-balancing exporter's `protocol.otlp` settings.
public struct LoadBalancingSettings: Sendable, Hashable, Codable {
    /// Per-request timeout, ms.
    public var timeoutMs: Int64 = 10_000
    /// TLS to the samplers (plain text inside the cluster by default).
    public var tls = TLSSettings(insecure: true)
    /// `gzip`, `zstd`, `snappy` or `none`.
    public var compression: String?
    /// Retries.
    public var retry = RetrySettings()
    /// Queue.
    public var queue = QueueSettings()

    /// Defaults.
    public init() {}
}

/// A header value: an environment variable reference, or a literal for non-secret headers.
public enum HeaderValue: Sendable, Hashable, Codable {
    /// Rendered as `${env:NAME}`.
    case environment(String)
    /// Written as is (refused for headers that look like credentials).
    case literal(String)

    /// The rendered text. A literal has its `$` doubled, as every literal the renderer writes: the collector
    /// expands `${…}` in config values and reads `$$` as a plain `$`.
    public var rendered: String {
        switch self {
        case .environment(let name): "${env:\(name)}"
        case .literal(let value): value.replacingOccurrences(of: "$", with: "$$")
        }
    }
}

/// Exporter protocol of a backend.
public enum BackendProtocol: String, Sendable, Hashable, Codable, CaseIterable {
    /// OTLP over gRPC (`otlp` exporter).
    case otlp
    /// OTLP over HTTP (`otlphttp` exporter).
    case otlphttp

    /// The exporter's component type in a config for the given collector version.
    public func exporterType(for version: CollectorVersion) -> String {
        let current = version >= CollectorFeature.otlpExporterTypeNames
        switch self {
        case .otlp: return current ? "otlp_grpc" : "otlp"
        case .otlphttp: return current ? "otlp_http" : "otlphttp"
        }
    }
}

/// Where kept traces go.
public struct Backend: Sendable, Hashable, Codable {
    /// Used in the exporter id: `otlp/NAME`.
    public var name: String
    /// gRPC or HTTP.
    public var `protocol`: BackendProtocol
    /// `host:port` for gRPC, a URL for HTTP.
    public var endpoint: String
    /// TLS.
    public var tls = TLSSettings()
    /// Headers, sorted by name when rendered.
    public var headers: [String: HeaderValue] = [:]
    /// `gzip`, `zstd`, `snappy` or `none`.
    public var compression: String?
    /// Per-request timeout, ms.
    public var timeoutMs: Int64?
    /// Retries.
    public var retry = RetrySettings()
    /// Queue.
    public var queue = QueueSettings()

    /// Creates a backend.
    public init(name: String, protocol: BackendProtocol, endpoint: String) {
        self.name = name
        self.protocol = `protocol`
        self.endpoint = endpoint
    }

    /// The exporter id in a config for the given collector version: `otlp_grpc/NAME` or `otlp_http/NAME` from
    /// v0.144, `otlp/NAME` or `otlphttp/NAME` before (the old names still load later, with a warning).
    public func exporterID(for version: CollectorVersion) -> String {
        "\(self.protocol.exporterType(for: version))/\(self.name)"
    }
}

/// OTLP receiver endpoints on both tiers.
public struct Receivers: Sendable, Hashable, Codable {
    /// gRPC listen address.
    public var grpcEndpoint: String? = "0.0.0.0:4317"
    /// HTTP listen address.
    public var httpEndpoint: String? = "0.0.0.0:4318"
    /// Largest gRPC message accepted, in MiB.
    public var maxRecvMsgSizeMiB: Int?

    /// Defaults.
    public init() {}
}

/// `memory_limiter` settings.
public struct MemoryLimiter: Sendable, Hashable, Codable {
    /// Check interval, ms.
    public var checkIntervalMs: Int64 = 1000
    /// Hard limit as a share of available memory.
    public var limitPercentage = 80
    /// Spike allowance as a share of available memory.
    public var spikeLimitPercentage = 25

    /// Defaults.
    public init() {}
}

/// `batch` settings.
public struct Batch: Sendable, Hashable, Codable {
    /// Flush after, ms.
    public var timeoutMs: Int64 = 1000
    /// Target batch size in spans.
    public var sendBatchSize = 8192
    /// Upper bound on batch size, if set.
    public var sendBatchMaxSize: Int?

    /// Defaults.
    public init() {}
}

/// The collectors' own telemetry.
public struct Telemetry: Sendable, Hashable, Codable {
    /// `debug`, `info`, `warn` or `error`.
    public var logsLevel = "info"
    /// `none`, `basic`, `normal` or `detailed`.
    public var metricsLevel = "normal"
    /// Prometheus pull port for the collector's own metrics.
    public var metricsPort: Int? = 8888
    /// Where collectors push their own `metrics`, `traces` and `logs` (offered over OpAMP, not rendered).
    public var destinations: [String: TelemetryDestination] = [:]

    /// Defaults.
    public init() {}
}

/// An OTLP/HTTP destination for a collector's own telemetry. Headers given as `{env: NAME}` are read from
/// policyd's environment when offered, so the secret lives in one place and never in Git.
public struct TelemetryDestination: Sendable, Hashable, Codable {
    /// Full OTLP/HTTP URL, path included.
    public var endpoint: String
    /// Headers.
    public var headers: [String: HeaderValue] = [:]
    /// A CA file (PEM) on policyd's machine whose contents are sent for verifying the endpoint.
    public var caFile: String?
    /// Skip verifying the endpoint's certificate.
    public var insecureSkipVerify = false

    /// Creates a destination.
    public init(endpoint: String) {
        self.endpoint = endpoint
    }
}

/// How a new version reaches the fleet: stages gated on agents reporting APPLIED and healthy.
public struct RolloutStrategy: Sendable, Hashable, Codable {
    /// One stage of a rollout.
    public enum Stage: Sendable, Hashable, Codable {
        /// A fixed number of agents.
        case canary(Int)
        /// A share of the tier, in percent (the last stage is 100).
        case percent(Int)
    }

    /// Stages in order; the last one covers everything.
    public var stages: [Stage] = [.canary(1), .percent(25), .percent(100)]
    /// How long a stage must stay healthy before the next starts, ms.
    public var bakeTimeMs: Int64 = 300_000
    /// Most agents allowed to be failing or not yet applied at once.
    public var maxUnavailable = 1
    /// Roll back by itself when a stage fails.
    public var autoRollback = true
    /// A stage (one batch, or the bake) that makes no progress for this long fails, ms; `nil`: the
    /// control plane's default (10 min).
    public var stageTimeoutMs: Int64?
    /// Take each sampler out of the load balancers' ring before it gets a new config.
    public var drain = true

    /// Defaults.
    public init() {}
}
