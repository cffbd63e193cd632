import Credentials
import Crypto
import Foundation
import OpAMPProtocol
import SwiftASN1
import X509

/// How one simulated collector behaves.
public struct AgentProfile: Sendable {
    /// `otelcol-lb` or `otelcol-sampler` (the `service.name` the fleet description matches on).
    public var serviceName: String
    /// The value of the `tailplane.tier` attribute.
    public var tier: String
    /// Host name reported in the description.
    public var hostName: String
    /// Collector version reported in the description.
    public var version: String
    /// Capabilities like the opampsupervisor's with remote config enabled.
    public var capabilities: UInt64
    /// How long applying a config takes.
    public var applyDelay: Duration
    /// A config whose body contains this text fails to apply.
    public var failMarker: String
    /// Seconds between heartbeats (or polls over HTTP).
    public var heartbeatSeconds: UInt64
    /// Like the opampsupervisor with its own rollback (contrib PR #47853): after FAILED it restores the last
    /// config that worked and reports APPLIED with that config's hash.
    public var rollsBackOnFailure = false
    /// The public key package signatures must verify with (pinned); nil: signatures are not checked.
    public var packageSigningKey: Curve25519.Signing.PublicKey?
    /// Package versions whose install fails (the installer exits with an error).
    public var failingPackageVersions: Set<String> = []
    /// Top-level package versions the collector turns unhealthy on once installed.
    public var unhealthyPackageVersions: Set<String> = []
    /// Cut the first download of each package after this many bytes, then resume it with a range request.
    public var interruptDownloadsAfterBytes: Int64?

    /// AcceptsPackages and ReportsPackageStatuses.
    public static let packageCapabilities: UInt64 = 0x8 | 0x10

    /// Accepts packages (downloads, verifies and installs what the server offers).
    public var acceptsPackages: Bool { self.capabilities & 0x8 != 0 }

    /// Accepts OpAMP connection settings and reports their status (the supervisor's
    /// `accepts_opamp_connection_settings`): an offered certificate makes it reconnect with it.
    public var acceptsConnectionSettings: Bool { self.capabilities & 0x100 != 0 }

    /// AcceptsOpAMPConnectionSettings and ReportsConnectionSettingsStatus.
    public static let connectionSettingsCapabilities: UInt64 = 0x100 | 0x8000

    /// Reports remote config status (the supervisor's `reports_remote_config`, off by default there).
    public var reportsRemoteConfig: Bool { self.capabilities & 0x1000 != 0 }

    /// The supervisor's defaults plus accepts/reports remote config and restart: 0x3C47.
    public static let supervisorCapabilities: UInt64 = 0x1 | 0x2 | 0x4 | 0x40 | 0x400 | 0x800 | 0x1000 | 0x2000

    /// Creates a profile.
    public init(
        serviceName: String,
        tier: String,
        hostName: String,
        version: String = "0.150.0",
        capabilities: UInt64 = Self.supervisorCapabilities,
        applyDelay: Duration = .milliseconds(100),
        failMarker: String = "tailplane-fail",
        heartbeatSeconds: UInt64 = 30
    ) {
        self.serviceName = serviceName
        self.tier = tier
        self.hostName = hostName
        self.version = version
        self.capabilities = capabilities
        self.applyDelay = applyDelay
        self.failMarker = failMarker
        self.heartbeatSeconds = heartbeatSeconds
    }
}

/// The protocol behaviour of one simulated collector, as a pure state machine: messages in, actions out.
/// Transports (WebSocket or HTTP) perform the actions.
public struct SimulatedAgent: Sendable {
    /// What the transport should do next.
    public enum Action: Sendable {
        case send(OpAMP_AgentToServer)
        case sendLater(OpAMP_AgentToServer, after: Duration)
        /// Close the connection and connect again (new connection settings: with ``credential``).
        case reconnect
        /// Download a package (the transport reports back through ``downloaded(_:outcome:)``).
        case download(PackageDownload)
    }

    public private(set) var uid: InstanceUID
    public private(set) var profile: AgentProfile
    /// Where it sends its own telemetry, by kind (`metrics`, `traces`, `logs`), as offered.
    public private(set) var ownTelemetry: [String: TelemetryDestination] = [:]
    /// The client certificate it connects with (offered by the server, or signed for its CSR).
    public private(set) var credential: ClientCredential?
    /// The key of a CSR sent and not yet answered.
    private var requestKeyPEM: String?
    /// Hash of the last connection settings processed (opamp-go skips an offer with the same hash).
    private var processedSettingsHash: Data?
    /// Connection settings status to report on the next connection (APPLIED once reconnected with them).
    private var settingsStatus: OpAMP_ConnectionSettingsStatus?
    private var sequence: UInt64 = 0
    private var remoteStatus = OpAMP_RemoteConfigStatus()
    private var effective = OpAMP_AgentConfigMap()
    private var healthy = true
    private var lastError = ""
    private var startTime: UInt64
    private var connectedBefore = false
    /// The last config that applied, and its hash (what a supervisor rolls back to).
    private var lastGood: (hash: Data, config: OpAMP_AgentConfigMap)?
    /// What it reports about its packages, and what it has installed (version and `PackageAvailable.hash`).
    private var packageStatuses = OpAMP_PackageStatuses()
    public private(set) var installedPackages: [String: (version: String, hash: Data)] = [:]
    /// False while it runs a package version that makes it unhealthy.
    private var packageHealthy = true
    private var packageError = ""

    /// Creates an agent with a fresh UUIDv7.
    public init(profile: AgentProfile, uid: InstanceUID) {
        self.profile = profile
        self.uid = uid
        self.startTime = UInt64(Date().timeIntervalSince1970 * 1e9)
        var file = OpAMP_AgentConfigFile()
        file.body = Data("receivers: {otlp: {}}\n".utf8)
        self.effective.configMap[""] = file
    }

    /// A message with the agent's capabilities; UID and sequence number are set by ``stamp(_:)`` when it
    /// is actually sent, so delayed messages keep the sequence in sending order, as opamp-go does.
    private func next() -> OpAMP_AgentToServer {
        var message = OpAMP_AgentToServer()
        message.capabilities = self.profile.capabilities
        return message
    }

    /// Sets the UID and the next sequence number on a message about to be sent.
    public mutating func stamp(_ message: inout OpAMP_AgentToServer) {
        message.instanceUid = Data(self.uid.bytes)
        message.sequenceNum = self.sequence
        self.sequence &+= 1
    }

    private func attribute(_ key: String, _ value: String) -> OpAMP_KeyValue {
        var pair = OpAMP_KeyValue()
        pair.key = key
        pair.value.stringValue = value
        return pair
    }

    /// Everything: description, health, effective config, remote config status.
    public func fullState() -> OpAMP_AgentToServer {
        var message = self.next()
        message.agentDescription.identifyingAttributes = [
            self.attribute("service.name", self.profile.serviceName),
            self.attribute("service.instance.id", self.uid.description),
            self.attribute("service.version", self.profile.version),
        ]
        message.agentDescription.nonIdentifyingAttributes = [
            self.attribute("host.name", self.profile.hostName),
            self.attribute("os.type", "linux"),
            self.attribute("tailplane.tier", self.profile.tier),
        ]
        message.health = self.health()
        message.effectiveConfig.configMap = self.effective
        if self.profile.reportsRemoteConfig { message.remoteConfigStatus = self.remoteStatus }
        if self.profile.acceptsPackages { message.packageStatuses = self.packageStatuses }
        return message
    }

    private func health() -> OpAMP_ComponentHealth {
        var health = OpAMP_ComponentHealth()
        let healthy = self.healthy && self.packageHealthy
        health.healthy = healthy
        health.lastError = self.lastError.isEmpty ? self.packageError : self.lastError
        health.startTimeUnixNano = self.startTime
        health.status = healthy ? "StatusOK" : "StatusFatalError"
        return health
    }

    /// The first message on a connection: everything the first time; on a reconnect what opamp-go sends
    /// (uid, sequence, capabilities) plus the status that may have changed while disconnected.
    public mutating func connected() -> OpAMP_AgentToServer {
        defer { self.connectedBefore = true }
        if var status = self.settingsStatus, status.status == .applying {
            // Reconnected with the offered settings: they work.
            status.status = .applied
            self.settingsStatus = status
        }
        guard self.connectedBefore else {
            var message = self.fullState()
            if let status = self.settingsStatus { message.connectionSettingsStatus = status }
            return message
        }
        var message = self.next()
        if let status = self.settingsStatus { message.connectionSettingsStatus = status }
        if self.profile.reportsRemoteConfig { message.remoteConfigStatus = self.remoteStatus }
        if self.profile.acceptsPackages { message.packageStatuses = self.packageStatuses }
        message.health = self.health()
        return message
    }

    /// A heartbeat (or an HTTP poll).
    public func heartbeat() -> OpAMP_AgentToServer { self.next() }

    /// Reacts to a server message.
    public mutating func receive(_ message: OpAMP_ServerToAgent) -> [Action] {
        if message.hasErrorResponse { return [] }
        var actions: [Action] = []
        if message.hasAgentIdentification, let fresh = InstanceUID(bytes: message.agentIdentification.newInstanceUid) {
            self.uid = fresh
        }
        if message.hasConnectionSettings, message.connectionSettings.opamp.heartbeatIntervalSeconds > 0 {
            self.profile.heartbeatSeconds = message.connectionSettings.opamp.heartbeatIntervalSeconds
        }
        if message.hasConnectionSettings, message.connectionSettings.hasOpamp, self.profile.acceptsConnectionSettings {
            actions += self.applyConnectionSettings(message.connectionSettings)
        } else if message.hasConnectionSettings {
            actions += self.applyTelemetrySettings(message.connectionSettings)
        }
        if message.hasRemoteConfig {
            let hash = message.remoteConfig.configHash
            var applying = self.next()
            self.remoteStatus.lastRemoteConfigHash = hash
            self.remoteStatus.status = .applying
            self.remoteStatus.errorMessage = ""
            if self.profile.reportsRemoteConfig {
                applying.remoteConfigStatus = self.remoteStatus
                actions.append(.send(applying))
            }
            let bodies = message.remoteConfig.config.configMap.values.map(\.body)
            let fails = bodies.contains { String(decoding: $0, as: UTF8.self).contains(self.profile.failMarker) }
            var done = self.next()
            if fails {
                self.remoteStatus.status = .failed
                self.remoteStatus.errorMessage =
                    "collector exited: invalid configuration (contains \(self.profile.failMarker))"
                self.healthy = false
                self.lastError = self.remoteStatus.errorMessage
            } else {
                self.remoteStatus.status = .applied
                self.effective = message.remoteConfig.config
                self.lastGood = (hash, message.remoteConfig.config)
                self.healthy = true
                self.lastError = ""
                done.effectiveConfig.configMap = self.effective
            }
            if self.profile.reportsRemoteConfig { done.remoteConfigStatus = self.remoteStatus }
            done.health = self.health()
            actions.append(.sendLater(done, after: self.profile.applyDelay))
            if fails, self.profile.rollsBackOnFailure, let good = self.lastGood {
                // The supervisor restores the last good config and reports APPLIED with its hash.
                self.remoteStatus.status = .applied
                self.remoteStatus.lastRemoteConfigHash = good.hash
                self.effective = good.config
                self.healthy = true
                self.lastError = ""
                var restored = self.next()
                if self.profile.reportsRemoteConfig { restored.remoteConfigStatus = self.remoteStatus }
                restored.effectiveConfig.configMap = self.effective
                restored.health = self.health()
                actions.append(.sendLater(restored, after: self.profile.applyDelay * 2))
            }
        }
        if message.hasPackagesAvailable, self.profile.acceptsPackages {
            actions += self.offered(message.packagesAvailable)
        }
        if message.hasCommand, message.command.type == .restart {
            self.startTime = UInt64(Date().timeIntervalSince1970 * 1e9)
            var restarted = self.next()
            restarted.health = self.health()
            actions.append(.sendLater(restarted, after: .milliseconds(50)))
        }
        if message.flags & UInt64(OpAMP_ServerToAgentFlags.reportFullState.rawValue) != 0 {
            actions.append(.send(self.fullState()))
        }
        return actions
    }

    /// Like the supervisor: an offer with a new hash is processed once; a certificate in it (with its key, or
    /// for the key of the CSR sent) makes the agent report APPLYING, reconnect with it, and report APPLIED
    /// from the new connection. An offer it cannot use is reported FAILED and changes nothing.
    private mutating func applyConnectionSettings(_ offer: OpAMP_ConnectionSettingsOffers) -> [Action] {
        guard offer.hash.isEmpty || offer.hash != self.processedSettingsHash else { return [] }
        self.processedSettingsHash = offer.hash
        var status = OpAMP_ConnectionSettingsStatus()
        status.lastConnectionSettingsHash = offer.hash
        let opamp = offer.opamp
        var report = self.next()
        guard !opamp.destinationEndpoint.isEmpty else {
            status.status = .failed
            status.errorMessage = "invalid connection settings: empty destination_endpoint"
            self.settingsStatus = status
            report.connectionSettingsStatus = status
            return [.send(report)]
        }
        guard opamp.hasCertificate, !opamp.certificate.cert.isEmpty else {
            status.status = .applied
            self.settingsStatus = status
            report.connectionSettingsStatus = status
            return [.send(report)]
        }
        let key =
            opamp.certificate.privateKey.isEmpty
            ? self.requestKeyPEM : String(decoding: opamp.certificate.privateKey, as: UTF8.self)
        guard let key else {
            status.status = .failed
            status.errorMessage = "a certificate was offered without a private key and no CSR is outstanding"
            self.settingsStatus = status
            report.connectionSettingsStatus = status
            return [.send(report)]
        }
        self.requestKeyPEM = nil
        // Like the supervisor: `ca_cert` becomes the trust for the server on the new connection (and nothing
        // else does), so an offer without the server's CA locks the agent out.
        let trust =
            String(decoding: opamp.certificate.caCert, as: UTF8.self)
            + (opamp.tls.caPemContents.isEmpty ? "" : "\n" + opamp.tls.caPemContents)
        self.credential = ClientCredential(
            certificatePEM: String(decoding: opamp.certificate.cert, as: UTF8.self),
            privateKeyPEM: key,
            trustPEM: trust.contains("BEGIN CERTIFICATE") ? trust : nil
        )
        status.status = .applying
        self.settingsStatus = status
        report.connectionSettingsStatus = status
        return [.send(report), .reconnect]
    }

    /// Like the supervisor: `own_metrics`, `own_traces` and `own_logs` offers become the collector's telemetry
    /// exporters (it restarts), reported APPLIED with the offer's hash.
    private mutating func applyTelemetrySettings(_ offer: OpAMP_ConnectionSettingsOffers) -> [Action] {
        guard offer.hasOwnMetrics || offer.hasOwnTraces || offer.hasOwnLogs else { return [] }
        guard offer.hash.isEmpty || offer.hash != self.processedSettingsHash else { return [] }
        self.processedSettingsHash = offer.hash
        func destination(_ settings: OpAMP_TelemetryConnectionSettings) -> TelemetryDestination {
            TelemetryDestination(
                endpoint: settings.destinationEndpoint,
                headers: Dictionary(
                    settings.headers.headers.map { ($0.key, $0.value) },
                    uniquingKeysWith: { _, last in last }
                )
            )
        }
        // An empty endpoint withdraws that kind.
        for (kind, present, settings) in [
            ("metrics", offer.hasOwnMetrics, offer.ownMetrics), ("traces", offer.hasOwnTraces, offer.ownTraces),
            ("logs", offer.hasOwnLogs, offer.ownLogs),
        ] where present {
            self.ownTelemetry[kind] = settings.destinationEndpoint.isEmpty ? nil : destination(settings)
        }
        var status = OpAMP_ConnectionSettingsStatus()
        status.lastConnectionSettingsHash = offer.hash
        status.status = .applied
        self.settingsStatus = status
        self.startTime = UInt64(Date().timeIntervalSince1970 * 1e9)
        var report = self.next()
        report.connectionSettingsStatus = status
        report.health = self.health()
        return [.sendLater(report, after: self.profile.applyDelay)]
    }

    /// A message asking for a client certificate: a new ECDSA P-256 key and a CSR naming this agent's UID.
    public mutating func certificateRequest() throws -> OpAMP_AgentToServer {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(self.uid.description) }
        let request = try CertificateSigningRequest(
            version: .v1,
            subject: name,
            privateKey: Certificate.PrivateKey(key),
            attributes: CertificateSigningRequest.Attributes()
        )
        self.requestKeyPEM = key.pemRepresentation
        var message = self.next()
        message.connectionSettingsRequest.opamp.certificateRequest.csr = Data(
            try request.serializeAsPEM().pemString.utf8
        )
        return message
    }

    /// Starts with a client certificate (one issued beforehand).
    public mutating func use(_ credential: ClientCredential?) {
        self.credential = credential
    }

    // MARK: Packages

    /// Like an opamp-go PackagesStateProvider: an offer with a new `all_packages_hash` is compared package by
    /// package (`hash`); what differs is downloaded, verified and installed, and reported at every step.
    private mutating func offered(_ offer: OpAMP_PackagesAvailable) -> [Action] {
        guard offer.allPackagesHash != self.packageStatuses.serverProvidedAllPackagesHash else { return [] }
        var statuses = OpAMP_PackageStatuses()
        statuses.serverProvidedAllPackagesHash = offer.allPackagesHash
        var actions: [Action] = []
        for name in offer.packages.keys.sorted() {
            let package = offer.packages[name]!
            var status = OpAMP_PackageStatus()
            status.name = name
            status.serverOfferedVersion = package.version
            status.serverOfferedHash = package.hash
            if let have = self.installedPackages[name] {
                status.agentHasVersion = have.version
                status.agentHasHash = have.hash
            }
            if self.installedPackages[name]?.hash == package.hash {
                status.status = .installed
            } else {
                status.status = .downloading
                status.downloadDetails.downloadPercent = 0
                actions.append(
                    .download(
                        PackageDownload(
                            name: name,
                            version: package.version,
                            topLevel: package.type == .topLevel,
                            url: package.file.downloadURL,
                            headers: Dictionary(
                                package.file.headers.headers.map { ($0.key, $0.value) },
                                uniquingKeysWith: { _, last in last }
                            ),
                            contentHash: [UInt8](package.file.contentHash),
                            signature: [UInt8](package.file.signature),
                            hash: package.hash,
                            offer: offer.allPackagesHash,
                            interruptAfterBytes: self.profile.interruptDownloadsAfterBytes
                        )
                    )
                )
            }
            statuses.packages[name] = status
        }
        self.packageStatuses = statuses
        var report = self.next()
        report.packageStatuses = statuses
        return [.send(report)] + actions
    }

    /// Download progress of a package of the current offer.
    public mutating func downloading(_ download: PackageDownload, percent: Double) -> [Action] {
        guard self.isCurrent(download), var status = self.packageStatuses.packages[download.name] else { return [] }
        status.status = .downloading
        status.downloadDetails.downloadPercent = percent
        self.packageStatuses.packages[download.name] = status
        var report = self.next()
        report.packageStatuses = self.packageStatuses
        return [.send(report)]
    }

    /// A download ended: verify the content hash and the signature, then install (or report why not).
    public mutating func downloaded(_ download: PackageDownload, outcome: DownloadOutcome) -> [Action] {
        guard self.isCurrent(download), var status = self.packageStatuses.packages[download.name] else { return [] }
        var problem: String?
        if let error = outcome.error {
            problem = "download failed: \(error)"
        } else if outcome.sha256 != download.contentHash {
            problem =
                "content hash mismatch: the file's SHA-256 is \(Self.hex(outcome.sha256 ?? [])), the offer says \(Self.hex(download.contentHash))"
        } else if let key = self.profile.packageSigningKey,
            !PackageSignature.verify(
                download.signature,
                name: download.name,
                version: download.version,
                kind: download.topLevel ? "top-level" : "addon",
                sha256: download.contentHash,
                publicKey: key
            )
        {
            problem = "the signature does not verify with the pinned package key"
        } else if self.profile.failingPackageVersions.contains(download.version) {
            problem = "installer exited with status 1"
        }
        if let problem {
            status.status = .installFailed
            status.errorMessage = problem
            status.clearDownloadDetails()
            self.packageStatuses.packages[download.name] = status
            var report = self.next()
            report.packageStatuses = self.packageStatuses
            return [.send(report)]
        }
        status.status = .installing
        status.clearDownloadDetails()
        self.packageStatuses.packages[download.name] = status
        var installing = self.next()
        installing.packageStatuses = self.packageStatuses
        // Installed: the collector restarts on the new binary, with the new version in its description.
        status.status = .installed
        status.agentHasVersion = download.version
        status.agentHasHash = download.hash
        status.errorMessage = ""
        self.packageStatuses.packages[download.name] = status
        self.installedPackages[download.name] = (download.version, download.hash)
        var done = self.next()
        if download.topLevel {
            self.profile.version = download.version
            self.startTime = UInt64(Date().timeIntervalSince1970 * 1e9)
            let unhealthy = self.profile.unhealthyPackageVersions.contains(download.version)
            self.packageHealthy = !unhealthy
            self.packageError =
                unhealthy ? "collector \(download.version) keeps crashing: tail_sampling failed to start" : ""
            done.agentDescription = self.fullState().agentDescription
            done.health = self.health()
        }
        done.packageStatuses = self.packageStatuses
        return [.send(installing), .sendLater(done, after: self.profile.applyDelay)]
    }

    private func isCurrent(_ download: PackageDownload) -> Bool {
        self.packageStatuses.serverProvidedAllPackagesHash == download.offer
            && self.packageStatuses.packages[download.name]?.serverOfferedHash == download.hash
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// The status last reported for connection settings.
    public var connectionSettingsStatus: OpAMP_ConnectionSettingsStatus? { self.settingsStatus }
}

/// A package to download, from an offer.
public struct PackageDownload: Sendable, Hashable {
    public var name: String
    public var version: String
    public var topLevel: Bool
    public var url: String
    /// Headers to send (the download token: never log them).
    public var headers: [String: String]
    public var contentHash: [UInt8]
    public var signature: [UInt8]
    /// `PackageAvailable.hash`, and the offer's `all_packages_hash`.
    public var hash: Data
    public var offer: Data
    /// Cut the first attempt after this many bytes (then resume with a range request).
    public var interruptAfterBytes: Int64?
}

/// How a download ended.
public struct DownloadOutcome: Sendable, Hashable {
    /// SHA-256 of what was received (nil when it failed).
    public var sha256: [UInt8]?
    /// Bytes received, and range requests used to resume.
    public var bytes: Int64
    public var resumes: Int
    /// Why it failed.
    public var error: String?

    /// Creates an outcome.
    public init(sha256: [UInt8]?, bytes: Int64, resumes: Int = 0, error: String? = nil) {
        self.sha256 = sha256
        self.bytes = bytes
        self.resumes = resumes
        self.error = error
    }
}

/// A client certificate and its private key, PEM. Carries a secret: never log it.
public struct ClientCredential: Sendable, Hashable {
    /// The certificate (leaf first, then any chain).
    public var certificatePEM: String
    /// Its private key.
    public var privateKeyPEM: String
    /// The CA certificates to verify the server with on connections made with it (the offer's `ca_cert`).
    public var trustPEM: String?

    /// Creates a credential.
    public init(certificatePEM: String, privateKeyPEM: String, trustPEM: String? = nil) {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        self.trustPEM = trustPEM
    }
}

/// A telemetry destination a simulated collector was given. Headers may hold secrets: never log them.
public struct TelemetryDestination: Sendable, Hashable {
    /// The OTLP/HTTP URL.
    public var endpoint: String
    /// Headers.
    public var headers: [String: String]
}
