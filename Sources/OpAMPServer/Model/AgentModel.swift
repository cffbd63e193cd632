import Foundation
import OpAMPProtocol

/// The capability bits an agent reports (`AgentCapabilities`), re-read from every message.
public struct AgentCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let reportsStatus = Self(rawValue: 0x1)
    public static let acceptsRemoteConfig = Self(rawValue: 0x2)
    public static let reportsEffectiveConfig = Self(rawValue: 0x4)
    public static let acceptsPackages = Self(rawValue: 0x8)
    public static let reportsPackageStatuses = Self(rawValue: 0x10)
    public static let reportsOwnTraces = Self(rawValue: 0x20)
    public static let reportsOwnMetrics = Self(rawValue: 0x40)
    public static let reportsOwnLogs = Self(rawValue: 0x80)
    public static let acceptsOpAMPConnectionSettings = Self(rawValue: 0x100)
    public static let acceptsOtherConnectionSettings = Self(rawValue: 0x200)
    public static let acceptsRestartCommand = Self(rawValue: 0x400)
    public static let reportsHealth = Self(rawValue: 0x800)
    public static let reportsRemoteConfig = Self(rawValue: 0x1000)
    public static let reportsHeartbeat = Self(rawValue: 0x2000)
    public static let reportsAvailableComponents = Self(rawValue: 0x4000)
    public static let reportsConnectionSettingsStatus = Self(rawValue: 0x8000)
}

extension AgentCapabilities {
    /// The capabilities as the specification names them (`AcceptsRemoteConfig`, …), in bit order.
    public var names: [String] {
        let all: [(AgentCapabilities, String)] = [
            (.reportsStatus, "ReportsStatus"), (.acceptsRemoteConfig, "AcceptsRemoteConfig"),
            (.reportsEffectiveConfig, "ReportsEffectiveConfig"), (.acceptsPackages, "AcceptsPackages"),
            (.reportsPackageStatuses, "ReportsPackageStatuses"), (.reportsOwnTraces, "ReportsOwnTraces"),
            (.reportsOwnMetrics, "ReportsOwnMetrics"), (.reportsOwnLogs, "ReportsOwnLogs"),
            (.acceptsOpAMPConnectionSettings, "AcceptsOpAMPConnectionSettings"),
            (.acceptsOtherConnectionSettings, "AcceptsOtherConnectionSettings"),
            (.acceptsRestartCommand, "AcceptsRestartCommand"), (.reportsHealth, "ReportsHealth"),
            (.reportsRemoteConfig, "ReportsRemoteConfig"), (.reportsHeartbeat, "ReportsHeartbeat"),
            (.reportsAvailableComponents, "ReportsAvailableComponents"),
            (.reportsConnectionSettingsStatus, "ReportsConnectionSettingsStatus"),
        ]
        return all.filter { self.contains($0.0) }.map(\.1)
    }
}

/// The capabilities this server offers (`ServerCapabilities`).
struct ServerCapabilities: OptionSet, Sendable, Hashable {
    let rawValue: UInt64
    init(rawValue: UInt64) { self.rawValue = rawValue }

    static let acceptsStatus = Self(rawValue: 0x1)
    static let offersRemoteConfig = Self(rawValue: 0x2)
    static let acceptsEffectiveConfig = Self(rawValue: 0x4)
    static let offersPackages = Self(rawValue: 0x8)
    static let acceptsPackagesStatus = Self(rawValue: 0x10)
    static let offersConnectionSettings = Self(rawValue: 0x20)
    static let acceptsConnectionSettingsRequest = Self(rawValue: 0x40)

    /// What Tailplane's server does.
    static let tailplane: Self = [
        .acceptsStatus, .offersRemoteConfig, .acceptsEffectiveConfig, .offersPackages, .acceptsPackagesStatus,
        .offersConnectionSettings, .acceptsConnectionSettingsRequest,
    ]
}

/// How an agent is connected.
public enum TransportKind: String, Sendable, Hashable, Codable {
    case webSocket = "websocket"
    case http
}

/// One file of a config map.
public struct ConfigFile: Sendable, Hashable {
    /// The file's bytes.
    public var body: [UInt8]
    /// MIME type, e.g. `text/yaml` or `application/json`; may be empty.
    public var contentType: String

    /// Creates a file.
    public init(body: [UInt8], contentType: String) {
        self.body = body
        self.contentType = contentType
    }
}

/// A remote config to deliver: named files and the hash that identifies them.
public struct RemoteConfig: Sendable, Hashable {
    /// Files by name (`""` for a single unnamed file).
    public var files: [String: ConfigFile]
    /// The config hash agents report back; deterministic and collision-resistant (the caller's content hash).
    public var hash: [UInt8]

    /// Creates a config.
    public init(files: [String: ConfigFile], hash: [UInt8]) {
        self.files = files
        self.hash = hash
    }
}

/// What an agent says about the last remote config it received.
public struct RemoteConfigReport: Sendable, Hashable {
    /// The state, as the agent reports it.
    public enum State: String, Sendable, Hashable, Codable {
        case unset, applying, applied, failed
    }

    /// Hash of the config the report is about.
    public var hash: [UInt8]
    /// Its state.
    public var state: State
    /// Why it failed, if it did.
    public var errorMessage: String

    /// Creates a report.
    public init(hash: [UInt8], state: State, errorMessage: String = "") {
        self.hash = hash
        self.state = state
        self.errorMessage = errorMessage
    }
}

/// The agent's AgentDescription with values rendered as strings.
public struct AgentDescription: Sendable, Hashable {
    /// Identifying attributes (service.name, service.instance.id, …).
    public var identifying: [String: String] { didSet { self.attributes = Self.merged(self) } }
    /// Non-identifying attributes (host.name, os.type, …).
    public var nonIdentifying: [String: String] { didSet { self.attributes = Self.merged(self) } }
    /// Both sets merged; identifying attributes win. Kept, not computed on each read: the control plane reads
    /// it for every agent on every tick.
    public private(set) var attributes: [String: String] = [:]

    /// Creates a description.
    public init(identifying: [String: String] = [:], nonIdentifying: [String: String] = [:]) {
        self.identifying = identifying
        self.nonIdentifying = nonIdentifying
        self.attributes = Self.merged(self)
    }

    private static func merged(_ description: Self) -> [String: String] {
        description.nonIdentifying.merging(description.identifying) { _, identifying in identifying }
    }
}

/// ComponentHealth, recursively.
public struct AgentHealth: Sendable, Hashable {
    /// Healthy or not.
    public var healthy: Bool
    /// Last error text.
    public var lastError: String
    /// Agent-specific status text.
    public var status: String
    /// Start time, Unix nanoseconds (0 if not running).
    public var startTimeUnixNano: UInt64
    /// Health of sub-components by name.
    public var components: [String: AgentHealth]

    /// Creates a health report.
    public init(
        healthy: Bool,
        lastError: String = "",
        status: String = "",
        startTimeUnixNano: UInt64 = 0,
        components: [String: AgentHealth] = [:]
    ) {
        self.healthy = healthy
        self.lastError = lastError
        self.status = status
        self.startTimeUnixNano = startTimeUnixNano
        self.components = components
    }
}

/// Everything the server knows about one agent.
public struct AgentSnapshot: Sendable, Hashable {
    /// The agent's instance UID.
    public var instanceUID: InstanceUID
    /// Capabilities from its latest message.
    public var capabilities: AgentCapabilities
    /// Its description, once reported.
    public var description: AgentDescription?
    /// Its health, once reported.
    public var health: AgentHealth?
    /// Its effective config, once reported.
    public var effectiveConfig: [String: ConfigFile]?
    /// Its latest remote config status.
    public var remoteConfigStatus: RemoteConfigReport?
    /// The hash of its available components.
    public var availableComponentsHash: [UInt8]?
    /// The components its build contains, as `kind/type` (`processors/tail_sampling`), once known.
    public var availableComponents: Set<String>?
    /// Connected now, and how.
    public var transport: TransportKind?
    /// When it last sent anything.
    public var lastSeen: Date
    /// Its latest sequence number.
    public var sequenceNum: UInt64
    /// The config the layer above wants it to run.
    public var desiredConfigHash: [UInt8]?
    /// Set when the agent failed the desired config (and perhaps rolled back by itself); cleared by a new
    /// desired config or by a later APPLIED report for the desired hash.
    public var rejectedConfigHash: [UInt8]?
    /// When the current connection began (`nil` while offline). For HTTP: the first poll after being offline.
    public var connectedSince: Date?
    /// When ``remoteConfigStatus`` last changed (hash, state or error).
    public var remoteConfigStatusSince: Date?
    /// Since when the agent has reported itself healthy without interruption (`nil` while unhealthy or
    /// before any health report): the "healthy since" a bake time is measured from.
    public var healthySince: Date?

    /// Connection settings offered to it and what it reported about them.
    public var connectionSettings = ConnectionSettingsState()
    /// Who its latest message came from, as the connection's credentials established.
    public var principal: AgentPrincipal?
    /// Where the layer above wants it to send its own telemetry.
    public var desiredTelemetry: TelemetryOffer?
    /// The packages the layer above wants it to have (`all_packages_hash`); nil when none are managed.
    public var desiredPackagesHash: [UInt8]?
    /// What it last reported about its packages.
    public var packageStatuses: PackageStatuses?

    /// True while a connection is open (WebSocket) or polls arrive in time (HTTP).
    public var connected: Bool { self.transport != nil }
}

/// One event and when the server saw it happen (the registry's clock).
public struct AgentEventRecord: Sendable, Hashable {
    /// When it happened.
    public var time: Date
    /// What happened.
    public var event: AgentEvent

    /// Creates a record.
    public init(time: Date, event: AgentEvent) {
        self.time = time
        self.event = event
    }
}

/// What an ``AgentEventSubscription`` delivers.
public enum AgentEventDelivery: Sendable, Hashable {
    /// The next event, in order per agent.
    case event(AgentEventRecord)
    /// The subscriber fell behind and `missed` events were dropped (the buffered ones with them): rebuild
    /// from ``AgentRegistry/snapshot()`` and go on reading. Comes before any event published after the loss.
    case overflow(missed: Int)
}

/// What happens to agents, for the layer above.
public enum AgentEvent: Sendable, Hashable {
    case connected(InstanceUID, TransportKind)
    case disconnected(InstanceUID, reason: String)
    case descriptionChanged(InstanceUID, AgentDescription)
    case healthChanged(InstanceUID, AgentHealth)
    case effectiveConfigChanged(InstanceUID, [String: ConfigFile])
    case remoteConfigStatusChanged(InstanceUID, RemoteConfigReport)
    /// The agent failed the desired config; `rolledBack` when it then reported APPLIED for an older one
    /// (the supervisor's automatic rollback). The server stops resending that config.
    case remoteConfigRejected(InstanceUID, hash: [UInt8], errorMessage: String, rolledBack: Bool)
    /// The server gave the agent a new instance UID.
    case instanceUIDReassigned(old: InstanceUID, new: InstanceUID)
    /// Connection settings were offered to the agent, or it reported on them.
    case connectionSettingsChanged(InstanceUID, ConnectionSettingsState)
    /// The agent reported on its packages (downloading, installed, failed).
    case packageStatusesChanged(InstanceUID, PackageStatuses)

    /// The agent the event is about.
    public var instanceUID: InstanceUID {
        switch self {
        case .connected(let uid, _), .disconnected(let uid, _), .descriptionChanged(let uid, _),
            .healthChanged(let uid, _),
            .effectiveConfigChanged(let uid, _), .remoteConfigStatusChanged(let uid, _),
            .remoteConfigRejected(let uid, _, _, _), .connectionSettingsChanged(let uid, _),
            .packageStatusesChanged(let uid, _):
            uid
        case .instanceUIDReassigned(_, let new): new
        }
    }
}

/// Commands the server can send to agents that accept them.
public enum AgentCommand: Sendable, Hashable {
    case restart
}

/// New OpAMP connection settings for an agent: where to connect, which headers to send, how often to
/// send heartbeats. Only agents with AcceptsOpAMPConnectionSettings receive them.
public struct OpAMPConnectionOffer: Sendable, Hashable, CustomStringConvertible {
    /// A non-empty ws://, wss://, http:// or https:// URL.
    public var endpoint: String
    /// Headers to send (for example a new bearer token).
    public var headers: [String: String]
    /// Heartbeat (and HTTP polling) interval; always positive (an interval of 0 took HTTP supervisors
    /// offline permanently before contrib PR #50305).
    public var heartbeatIntervalSeconds: UInt64
    /// The client certificate to connect with (and the CA that signed it); without one, opamp-go agents
    /// stop presenting a client certificate.
    public var certificate: OfferedCertificate?
    /// CA certificates (PEM) the agent should trust for the server's own certificate (`tls.ca_pem_contents`).
    public var serverCAPEM: String?

    /// Creates an offer.
    public init(
        endpoint: String,
        headers: [String: String] = [:],
        heartbeatIntervalSeconds: UInt64 = 30,
        certificate: OfferedCertificate? = nil,
        serverCAPEM: String? = nil
    ) {
        self.endpoint = endpoint
        self.headers = headers
        self.heartbeatIntervalSeconds = heartbeatIntervalSeconds
        self.certificate = certificate
        self.serverCAPEM = serverCAPEM
    }

    /// The endpoint and interval only: headers and keys are secrets.
    public var description: String {
        "OpAMPConnectionOffer(endpoint: \(self.endpoint), heartbeat: \(self.heartbeatIntervalSeconds)s, headers: \(self.headers.keys.sorted()), certificate: \(self.certificate != nil))"
    }

    /// The `ConnectionSettingsOffers.hash` this offer goes out with (what the agent reports back).
    public var settingsHash: [UInt8] { [UInt8](AgentSession.connectionSettings(self).hash) }

    /// Why the offer cannot be sent, if it cannot.
    public var problem: String? {
        let schemes = ["ws://", "wss://", "http://", "https://"]
        if !schemes.contains(where: { self.endpoint.lowercased().hasPrefix($0) }) || self.endpoint.count < 8 {
            return "the endpoint must be a ws://, wss://, http:// or https:// URL"
        }
        if self.heartbeatIntervalSeconds == 0 { return "the heartbeat interval must be positive" }
        return nil
    }
}

/// A client certificate offered in connection settings (`TLSCertificate`): PEM certificate, the private key
/// when the server made the key pair (never for a signed CSR), and the CA certificate.
public struct OfferedCertificate: Sendable, Hashable, CustomStringConvertible {
    /// The certificate, PEM.
    public var certificatePEM: String
    /// The private key, PEM; nil in the CSR flow. Never logged.
    public var privateKeyPEM: String?
    /// The CA certificate, PEM.
    public var caCertificatePEM: String

    /// Creates an offered certificate.
    public init(certificatePEM: String, privateKeyPEM: String?, caCertificatePEM: String) {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        self.caCertificatePEM = caCertificatePEM
    }

    /// Says whether a key is included, never the key.
    public var description: String { "OfferedCertificate(privateKey: \(self.privateKeyPEM != nil))" }
}

/// An agent's connection settings as the server offered them and as the agent reported them.
public struct ConnectionSettingsState: Sendable, Hashable {
    /// Hash of the latest offer sent (or queued) to the agent.
    public var offeredHash: [UInt8]?
    /// When it was offered.
    public var offeredAt: Date?
    /// What the offer held, for display: endpoint, header names, whether a certificate was in it.
    public var offeredSummary: String?
    /// The hash the agent last reported (`connection_settings_status.last_connection_settings_hash`).
    public var reportedHash: [UInt8]?
    /// Its reported status.
    public var status: RemoteConfigReport.State?
    /// Its error message, when it failed them.
    public var errorMessage: String?

    /// Nothing offered, nothing reported.
    public init() {}
}

/// Where an agent should send its own telemetry (`own_metrics`, `own_traces`, `own_logs`): each kind goes
/// only to agents that report it (ReportsOwnMetrics…).
public struct TelemetryOffer: Sendable, Hashable, CustomStringConvertible {
    /// One destination: a full OTLP/HTTP URL with its headers and TLS settings.
    public struct Destination: Sendable, Hashable {
        /// The OTLP/HTTP URL, path included (`https://otel.example:4318/v1/metrics`).
        public var endpoint: String
        /// Headers to send (values may be secrets: never logged).
        public var headers: [String: String]
        /// CA certificates (PEM) to trust for the endpoint.
        public var caPEM: String?
        /// Skip verifying the endpoint's certificate.
        public var insecureSkipVerify: Bool

        /// Creates a destination.
        public init(
            endpoint: String,
            headers: [String: String] = [:],
            caPEM: String? = nil,
            insecureSkipVerify: Bool = false
        ) {
            self.endpoint = endpoint
            self.headers = headers
            self.caPEM = caPEM
            self.insecureSkipVerify = insecureSkipVerify
        }
    }

    /// Own metrics.
    public var metrics: Destination?
    /// Own traces.
    public var traces: Destination?
    /// Own logs.
    public var logs: Destination?

    /// Creates an offer.
    public init(metrics: Destination? = nil, traces: Destination? = nil, logs: Destination? = nil) {
        self.metrics = metrics
        self.traces = traces
        self.logs = logs
    }

    /// Endpoints and header names only.
    public var description: String {
        let parts: [(String, Destination?)] = [("metrics", self.metrics), ("traces", self.traces), ("logs", self.logs)]
        return "TelemetryOffer("
            + parts.compactMap { name, destination in
                destination.map { "\(name): \($0.endpoint) headers \($0.headers.keys.sorted())" }
            }.joined(separator: ", ") + ")"
    }
}
