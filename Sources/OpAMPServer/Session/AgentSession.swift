import Crypto
import Foundation
import OpAMPProtocol

/// The OpAMP protocol logic for one agent, as a pure state machine: it takes a decoded message and
/// returns the response and the events to publish. No I/O, no clocks (time is passed in), no locks.
struct AgentSession {
    private(set) var snapshot: AgentSnapshot
    /// The UID exactly as the agent sends it (16 bytes, or a legacy 26-byte ULID), echoed in pushes.
    private(set) var wireUID: Data
    /// The config the layer above wants the agent to run.
    private(set) var desired: RemoteConfig?
    /// The hash last sent on the current connection (for agents that do not report status).
    private var sentOnConnection: [UInt8]?
    /// The agent failed `desired` (so it is not resent until `desired` changes).
    private var rejected = false
    /// ReportFullState was asked for and not yet answered: do not ask again (no loops). Counts the messages
    /// seen since asking; after a few without an answer the request is taken as lost.
    private var awaitingFullState: Int?
    /// The agent has answered a ReportFullState on this connection: what it still omits, it does not have.
    private var answeredFullState = false
    private var haveSequence = false
    /// A command waiting for the next response.
    private var pendingCommand: AgentCommand?
    /// Connection settings waiting for the next response (HTTP agents).
    private var pendingOffer: OpAMPConnectionOffer?
    /// Where the agent should send its own telemetry, the hash last sent on this connection, and what it was
    /// last given (kept across connections, as the supervisor keeps it: a kind no longer wanted is withdrawn).
    private var desiredTelemetry: TelemetryOffer?
    private var telemetrySent: [UInt8]?
    private var telemetryDelivered: TelemetryOffer?
    /// The server's heartbeat offer (interval and endpoint), from the last message's context.
    private var heartbeat: (intervalSeconds: UInt64, endpoint: String)?
    /// The available-components hash the full list was last asked for (asked once per hash).
    private var requestedComponents: [UInt8]?
    /// The packages the layer above wants the agent to have, and the offer's hash last sent on this
    /// connection (for agents that do not report package statuses).
    private(set) var desiredPackages: PackageOffer?
    private var packagesSentOnConnection: [UInt8]?

    /// Messages without an answer to a ReportFullState request before it is taken as lost.
    static let fullStateWait = 3

    init(instanceUID: InstanceUID, wireUID: Data? = nil, now: Date) {
        self.wireUID = wireUID ?? Data(instanceUID.bytes)
        self.snapshot = AgentSnapshot(
            instanceUID: instanceUID,
            capabilities: [],
            transport: nil,
            lastSeen: now,
            sequenceNum: 0
        )
    }

    /// What the server adds to responses.
    struct Context {
        var serverCapabilities: ServerCapabilities
        /// Offered to agents that report heartbeats: interval and the endpoint they should use.
        var heartbeat: (intervalSeconds: UInt64, endpoint: String)?
        var now: Date
        /// Component lists already known, by available-components hash (shared by all agents).
        var knownComponents: [[UInt8]: Set<String>] = [:]
        /// Connection settings carrying the certificate signed for this message's CSR.
        var issuedCertificate: OpAMPConnectionOffer?
    }

    struct Output {
        var response: OpAMP_ServerToAgent
        var events: [AgentEvent]
        /// The agent asked for a new instance UID (the registry assigns and re-keys).
        var wantsNewInstanceUID: Bool
        /// The agent said goodbye.
        var disconnecting: Bool
        /// A component list the agent sent, to remember by hash.
        var learnedComponents: (hash: [UInt8], names: Set<String>)?
    }

    // MARK: Connection lifecycle

    /// A new connection (WebSocket) or the first poll after being offline (HTTP).
    mutating func connected(_ transport: TransportKind, now: Date) -> [AgentEvent] {
        let wasConnected = self.snapshot.transport != nil
        self.snapshot.transport = transport
        self.snapshot.connectedSince = now
        self.sentOnConnection = nil
        self.telemetrySent = nil
        self.packagesSentOnConnection = nil
        // A new connection may be a restarted agent: what it lacked before proves nothing now.
        self.answeredFullState = false
        self.awaitingFullState = nil
        return wasConnected ? [] : [.connected(self.snapshot.instanceUID, transport)]
    }

    mutating func disconnected(reason: String) -> [AgentEvent] {
        guard self.snapshot.transport != nil else { return [] }
        self.snapshot.transport = nil
        self.snapshot.connectedSince = nil
        self.snapshot.healthySince = nil  // offline time is not healthy time
        self.sentOnConnection = nil
        return [.disconnected(self.snapshot.instanceUID, reason: reason)]
    }

    // MARK: Messages

    mutating func receive(_ message: OpAMP_AgentToServer, firstOnConnection: Bool, context: Context) -> Output {
        var events: [AgentEvent] = []
        let uid = self.snapshot.instanceUID
        let capabilities = AgentCapabilities(rawValue: message.capabilities)
        self.snapshot.capabilities = capabilities
        self.wireUID = message.instanceUid
        self.snapshot.lastSeen = context.now

        // Status compression: detect missing state before absorbing this message.
        let gap = self.haveSequence && message.sequenceNum != self.snapshot.sequenceNum &+ 1
        let lacking =
            (self.snapshot.description == nil && !message.hasAgentDescription)
            || (capabilities.contains(.reportsEffectiveConfig) && self.snapshot.effectiveConfig == nil
                && !message.hasEffectiveConfig)
            || (capabilities.contains(.reportsRemoteConfig) && self.snapshot.remoteConfigStatus == nil
                && !message.hasRemoteConfigStatus)
            || (capabilities.contains(.reportsHealth) && self.snapshot.health == nil && !message.hasHealth)
            || (capabilities.contains(.reportsPackageStatuses) && self.snapshot.packageStatuses == nil
                && !message.hasPackageStatuses)
        let compressed =
            !message.hasAgentDescription
            || (capabilities.contains(.reportsEffectiveConfig) && !message.hasEffectiveConfig)
            || (capabilities.contains(.reportsRemoteConfig) && !message.hasRemoteConfigStatus)
            || (capabilities.contains(.reportsHealth) && !message.hasHealth)
            || (capabilities.contains(.reportsPackageStatuses) && !message.hasPackageStatuses)
        var requestFullState = false
        if let waited = self.awaitingFullState {
            // A full report always carries the agent description; a message without one was on its way
            // before the agent saw the request. After a few such messages the request is taken as lost.
            if message.hasAgentDescription {
                self.awaitingFullState = nil
                self.answeredFullState = true
            } else if waited >= Self.fullStateWait {
                self.awaitingFullState = nil
            } else {
                self.awaitingFullState = waited + 1
            }
        } else if (lacking && !self.answeredFullState) || (gap && compressed) {
            requestFullState = true
            self.awaitingFullState = 0
        }
        self.snapshot.sequenceNum = message.sequenceNum
        self.haveSequence = true

        if message.hasAgentDescription {
            let description = ProtobufConversion.description(message.agentDescription)
            if description != self.snapshot.description {
                self.snapshot.description = description
                events.append(.descriptionChanged(uid, description))
            }
        }
        if message.hasHealth {
            let health = ProtobufConversion.health(message.health)
            if !health.healthy {
                self.snapshot.healthySince = nil
            } else if self.snapshot.healthySince == nil {
                self.snapshot.healthySince = context.now
            }
            if health != self.snapshot.health {
                self.snapshot.health = health
                events.append(.healthChanged(uid, health))
            }
        }
        if message.hasEffectiveConfig {
            var files = ProtobufConversion.files(message.effectiveConfig.configMap)
            if files != self.snapshot.effectiveConfig {
                // The very config it was sent (an agent that reports what it applied, as opamp-go agents and the
                // fleet simulator do): hold that one copy, shared with every agent sent it. A supervisor reports
                // its merged config instead (its own sections added), which is kept as reported.
                if let desired = self.desired?.files, desired == files { files = desired }
                self.snapshot.effectiveConfig = files
                events.append(.effectiveConfigChanged(uid, files))
            }
        }
        var learned: (hash: [UInt8], names: Set<String>)?
        var requestComponents = false
        if message.hasAvailableComponents {
            let hash = [UInt8](message.availableComponents.hash)
            self.snapshot.availableComponentsHash = hash
            if !message.availableComponents.components.isEmpty {
                let names = ProtobufConversion.components(message.availableComponents)
                self.snapshot.availableComponents = names
                learned = (hash, names)
            } else if let known = context.knownComponents[hash] {
                self.snapshot.availableComponents = known
            } else if capabilities.contains(.reportsAvailableComponents), self.requestedComponents != hash {
                // Only the hash arrived and nobody has sent this list yet: ask once.
                self.requestedComponents = hash
                requestComponents = true
            }
        }
        if message.hasRemoteConfigStatus {
            events += self.absorb(ProtobufConversion.report(message.remoteConfigStatus), now: context.now)
        }
        if message.hasPackageStatuses {
            let statuses = PackageStatuses(message.packageStatuses)
            if statuses != self.snapshot.packageStatuses {
                self.snapshot.packageStatuses = statuses
                events.append(.packageStatusesChanged(uid, statuses))
            }
        }
        if message.hasConnectionSettingsStatus {
            let status = message.connectionSettingsStatus
            var settings = self.snapshot.connectionSettings
            settings.reportedHash = [UInt8](status.lastConnectionSettingsHash)
            settings.status =
                switch status.status {
                case .applied: .applied
                case .applying: .applying
                case .failed: .failed
                default: .unset
                }
            settings.errorMessage = status.errorMessage.isEmpty ? nil : status.errorMessage
            if settings != self.snapshot.connectionSettings {
                self.snapshot.connectionSettings = settings
                events.append(.connectionSettingsChanged(uid, settings))
            }
        }

        var response = OpAMP_ServerToAgent()
        response.instanceUid = message.instanceUid
        // Required on the first response of a connection; harmless (and needed for HTTP) on every one.
        response.capabilities = context.serverCapabilities.rawValue
        if requestFullState {
            response.flags |= UInt64(OpAMP_ServerToAgentFlags.reportFullState.rawValue)
        }
        if requestComponents {
            response.flags |= UInt64(OpAMP_ServerToAgentFlags.reportAvailableComponents.rawValue)
        }
        if let config = self.configToSend() {
            response.remoteConfig = ProtobufConversion.remoteConfig(config)
            self.sentOnConnection = config.hash
        }
        if let offer = self.packagesToSend() {
            response.packagesAvailable = offer.message
            self.packagesSentOnConnection = offer.allPackagesHash
        }
        self.heartbeat = context.heartbeat
        if let issued = context.issuedCertificate {
            // The answer to this message's CSR first (a queued offer waits for the next poll): the signed
            // certificate, without a private key.
            response.connectionSettings = Self.connectionSettings(issued)
            events += self.recordOffer(issued, hash: [UInt8](response.connectionSettings.hash), now: context.now)
        } else if let offer = self.pendingOffer, capabilities.contains(.acceptsOpAMPConnectionSettings) {
            response.connectionSettings = Self.connectionSettings(offer)
            self.pendingOffer = nil
        } else if let (settings, offer) = self.telemetryToSend() {
            response.connectionSettings = settings
            self.markTelemetrySent(settings, offer)
            events += self.recordOffer(offer, hash: [UInt8](settings.hash), now: context.now)
        } else if firstOnConnection, let heartbeat = context.heartbeat, capabilities.contains(.reportsHeartbeat),
            !capabilities.contains(.acceptsOpAMPConnectionSettings),
            context.serverCapabilities.contains(.offersConnectionSettings)
        {
            // Only to agents that take just the interval from it: an agent that accepts OpAMP connection
            // settings would apply the whole offer (dropping its headers) and reconnect.
            response.connectionSettings = Self.heartbeatOffer(heartbeat)
        }
        let carriesOtherItems =
            response.flags != 0 || response.hasRemoteConfig || response.hasConnectionSettings
            || response.hasPackagesAvailable
            || (message.flags & UInt64(OpAMP_AgentToServerFlags.requestInstanceUid.rawValue) != 0)
        if let command = self.pendingCommand, capabilities.contains(.acceptsRestartCommand), !carriesOtherItems {
            // A command travels alone: opamp-go ignores everything else in a message with a command.
            switch command {
            case .restart: response.command.type = .restart
            }
            self.pendingCommand = nil
        }
        let wantsNewUID = message.flags & UInt64(OpAMP_AgentToServerFlags.requestInstanceUid.rawValue) != 0
        return Output(
            response: response,
            events: events,
            wantsNewInstanceUID: wantsNewUID,
            disconnecting: message.hasAgentDisconnect,
            learnedComponents: learned
        )
    }

    /// Records a remote config status and detects rejection and the supervisor's automatic rollback.
    private mutating func absorb(_ report: RemoteConfigReport, now: Date) -> [AgentEvent] {
        let uid = self.snapshot.instanceUID
        let previous = self.snapshot.remoteConfigStatus
        guard report != previous else { return [] }
        self.snapshot.remoteConfigStatus = report
        self.snapshot.remoteConfigStatusSince = now
        var events: [AgentEvent] = [.remoteConfigStatusChanged(uid, report)]
        guard let desired = self.desired else { return events }
        if report.state == .applied, report.hash == desired.hash {
            // It runs the desired config after all (a retry that worked, or a fixed environment).
            self.rejected = false
            self.snapshot.rejectedConfigHash = nil
        } else if report.state == .failed, report.hash == desired.hash, !self.rejected {
            self.rejected = true
            self.snapshot.rejectedConfigHash = desired.hash
            events.append(
                .remoteConfigRejected(uid, hash: desired.hash, errorMessage: report.errorMessage, rolledBack: false)
            )
        } else if report.state == .applied, report.hash != desired.hash, previous?.state == .failed,
            previous?.hash == desired.hash
        {
            // FAILED(new) then APPLIED(old): the supervisor rolled back by itself.
            events.append(
                .remoteConfigRejected(
                    uid,
                    hash: desired.hash,
                    errorMessage: previous?.errorMessage ?? "",
                    rolledBack: true
                )
            )
        }
        return events
    }

    /// The config to include in the next response, if any.
    private func configToSend() -> RemoteConfig? {
        guard let desired = self.desired, self.snapshot.capabilities.contains(.acceptsRemoteConfig), !self.rejected
        else {
            return nil
        }
        if self.snapshot.capabilities.contains(.reportsRemoteConfig), let reported = self.snapshot.remoteConfigStatus {
            // Resend exactly when the agent's last hash differs, whatever the status.
            return reported.hash == desired.hash ? nil : desired
        }
        // No status to go by: send once per connection.
        return self.sentOnConnection == desired.hash ? nil : desired
    }

    /// The package offer to include in the next response, if any: when the agent's last report names
    /// another offer (or, for agents that report no package statuses, once per connection).
    private func packagesToSend() -> PackageOffer? {
        guard let desired = self.desiredPackages, self.snapshot.capabilities.contains(.acceptsPackages) else {
            return nil
        }
        let hash = desired.allPackagesHash
        if self.snapshot.capabilities.contains(.reportsPackageStatuses), let reported = self.snapshot.packageStatuses {
            return reported.serverProvidedAllPackagesHash == hash ? nil : desired
        }
        return self.packagesSentOnConnection == hash ? nil : desired
    }

    // MARK: Requests from the layer above

    /// Sets the packages the agent should have. Returns a message to push now (for WebSocket agents) when
    /// one is due; agents without AcceptsPackages are never offered packages.
    mutating func setPackages(_ offer: PackageOffer?) -> OpAMP_ServerToAgent? {
        guard offer != self.desiredPackages else { return nil }
        self.desiredPackages = offer
        self.snapshot.desiredPackagesHash = offer?.allPackagesHash
        guard self.snapshot.transport == .webSocket, let offer = self.packagesToSend() else { return nil }
        self.packagesSentOnConnection = offer.allPackagesHash
        return self.push { $0.packagesAvailable = offer.message }
    }

    /// Sets the desired config. Returns a message to push now (for WebSocket agents) when one is due.
    mutating func setDesired(_ config: RemoteConfig?) -> OpAMP_ServerToAgent? {
        guard config != self.desired else { return nil }
        self.desired = config
        // It may run this config already (it reported it before it was desired here, as after a reconnect to
        // another replica): share the desired copy (see the effective config in `process`).
        if let files = config?.files, self.snapshot.effectiveConfig == files { self.snapshot.effectiveConfig = files }
        self.rejected = false
        self.snapshot.desiredConfigHash = config?.hash
        self.snapshot.rejectedConfigHash = nil
        // Only WebSocket agents can be pushed to; HTTP agents get it with their next poll.
        guard self.snapshot.transport == .webSocket, let config = self.configToSend() else { return nil }
        self.sentOnConnection = config.hash
        return self.push { $0.remoteConfig = ProtobufConversion.remoteConfig(config) }
    }

    /// A server-initiated message to this agent.
    private func push(_ fill: (inout OpAMP_ServerToAgent) -> Void) -> OpAMP_ServerToAgent {
        var message = OpAMP_ServerToAgent()
        message.instanceUid = self.wireUID
        fill(&message)
        return message
    }

    /// Queues a command; returns it as a message to push now when the agent accepts it.
    mutating func send(_ command: AgentCommand) -> OpAMP_ServerToAgent? {
        guard self.snapshot.capabilities.contains(.acceptsRestartCommand) else { return nil }
        if self.snapshot.transport == .webSocket {
            return self.push { message in
                switch command {
                case .restart: message.command.type = .restart
                }
            }
        }
        self.pendingCommand = command
        return nil
    }

    /// Offers new OpAMP connection settings; returns a message to push now for WebSocket agents, and the
    /// event recording the offer.
    mutating func offer(_ offer: OpAMPConnectionOffer, now: Date) -> (push: OpAMP_ServerToAgent?, events: [AgentEvent])
    {
        guard self.snapshot.capabilities.contains(.acceptsOpAMPConnectionSettings) else { return (nil, []) }
        let settings = Self.connectionSettings(offer)
        let events = self.recordOffer(offer, hash: [UInt8](settings.hash), now: now)
        if self.snapshot.transport == .webSocket {
            return (self.push { $0.connectionSettings = settings }, events)
        }
        self.pendingOffer = offer
        return (nil, events)
    }

    /// Sets where the agent should send its own telemetry; returns a message to push now (WebSocket) and the
    /// event recording the offer.
    mutating func setTelemetry(_ offer: TelemetryOffer?, now: Date) -> (
        push: OpAMP_ServerToAgent?, events: [AgentEvent]
    ) {
        guard offer != self.desiredTelemetry else { return (nil, []) }
        self.desiredTelemetry = offer
        self.snapshot.desiredTelemetry = offer
        guard self.snapshot.transport == .webSocket, let (settings, sent) = self.telemetryToSend() else {
            return (nil, [])
        }
        self.markTelemetrySent(settings, sent)
        return (
            self.push { $0.connectionSettings = settings },
            self.recordOffer(sent, hash: [UInt8](settings.hash), now: now)
        )
    }

    /// The telemetry settings to send, when they differ from what this connection got: the kinds the agent
    /// reports; a kind it was given before and should no longer have, withdrawn with an empty endpoint; and,
    /// for agents that take only the heartbeat interval from connection settings, that interval in the same
    /// offer (a later offer replaces an earlier one, so the two travel together).
    private func telemetryToSend() -> (OpAMP_ConnectionSettingsOffers, TelemetryOffer)? {
        let desired = self.desiredTelemetry ?? TelemetryOffer()
        let delivered = self.telemetryDelivered ?? TelemetryOffer()
        let capabilities = self.snapshot.capabilities
        let withdrawn = TelemetryOffer.Destination(endpoint: "")
        var offer = TelemetryOffer()
        if capabilities.contains(.reportsOwnMetrics) {
            offer.metrics = desired.metrics ?? (delivered.metrics != nil ? withdrawn : nil)
        }
        if capabilities.contains(.reportsOwnTraces) {
            offer.traces = desired.traces ?? (delivered.traces != nil ? withdrawn : nil)
        }
        if capabilities.contains(.reportsOwnLogs) {
            offer.logs = desired.logs ?? (delivered.logs != nil ? withdrawn : nil)
        }
        guard offer.metrics != nil || offer.traces != nil || offer.logs != nil else { return nil }
        var heartbeat: (intervalSeconds: UInt64, endpoint: String)?
        if capabilities.contains(.reportsHeartbeat), !capabilities.contains(.acceptsOpAMPConnectionSettings) {
            heartbeat = self.heartbeat
        }
        let settings = Self.telemetrySettings(offer, heartbeat: heartbeat)
        return self.telemetrySent == [UInt8](settings.hash) ? nil : (settings, offer)
    }

    /// Records telemetry settings as sent on this connection and given to the agent.
    private mutating func markTelemetrySent(_ settings: OpAMP_ConnectionSettingsOffers, _ offer: TelemetryOffer) {
        self.telemetrySent = [UInt8](settings.hash)
        let kinds = [offer.metrics, offer.traces, offer.logs].compactMap { $0 }
        // Once every kind given is withdrawn, nothing is left to withdraw.
        self.telemetryDelivered = kinds.allSatisfy { $0.endpoint.isEmpty } ? nil : offer
    }

    static func telemetrySettings(
        _ offer: TelemetryOffer,
        heartbeat: (intervalSeconds: UInt64, endpoint: String)? = nil
    ) -> OpAMP_ConnectionSettingsOffers {
        var offers = OpAMP_ConnectionSettingsOffers()
        var hasher = SHA256Hasher()
        if let heartbeat {
            let opamp = Self.heartbeatOffer(heartbeat)
            offers.opamp = opamp.opamp
            hasher.add([3] + [UInt8](opamp.hash))
        }
        func settings(_ destination: TelemetryOffer.Destination, tag: UInt8) -> OpAMP_TelemetryConnectionSettings {
            var settings = OpAMP_TelemetryConnectionSettings()
            settings.destinationEndpoint = destination.endpoint
            hasher.add([tag] + Array(destination.endpoint.utf8))
            for name in destination.headers.keys.sorted() {
                var header = OpAMP_Header()
                header.key = name
                header.value = destination.headers[name]!
                settings.headers.headers.append(header)
                hasher.add([0] + Array(name.utf8) + [0] + Array(header.value.utf8))
            }
            if let ca = destination.caPEM {
                settings.tls.caPemContents = ca
                hasher.add([1] + Array(ca.utf8))
            }
            if destination.insecureSkipVerify {
                settings.tls.insecureSkipVerify = true
                hasher.add([2])
            }
            return settings
        }
        if let metrics = offer.metrics { offers.ownMetrics = settings(metrics, tag: 0x10) }
        if let traces = offer.traces { offers.ownTraces = settings(traces, tag: 0x11) }
        if let logs = offer.logs { offers.ownLogs = settings(logs, tag: 0x12) }
        offers.hash = Data(hasher.finish())
        return offers
    }

    /// Records connection settings (an OpAMP offer or a telemetry offer) as offered, for status tracking.
    private mutating func recordOffer(_ offer: some CustomStringConvertible, hash: [UInt8], now: Date) -> [AgentEvent] {
        var settings = self.snapshot.connectionSettings
        settings.offeredHash = hash
        settings.offeredAt = now
        settings.offeredSummary = offer.description
        self.snapshot.connectionSettings = settings
        return [.connectionSettingsChanged(self.snapshot.instanceUID, settings)]
    }

    static func connectionSettings(_ offer: OpAMPConnectionOffer) -> OpAMP_ConnectionSettingsOffers {
        var offers = OpAMP_ConnectionSettingsOffers()
        var opamp = OpAMP_OpAMPConnectionSettings()
        opamp.destinationEndpoint = offer.endpoint
        opamp.heartbeatIntervalSeconds = max(1, offer.heartbeatIntervalSeconds)
        // The hash covers everything offered, so any change (a new certificate too) is a new offer.
        var hasher = SHA256Hasher()
        hasher.add(Array(offer.endpoint.utf8))
        hasher.add(withUnsafeBytes(of: opamp.heartbeatIntervalSeconds.bigEndian) { Array($0) })
        for name in offer.headers.keys.sorted() {
            var header = OpAMP_Header()
            header.key = name
            header.value = offer.headers[name]!
            opamp.headers.headers.append(header)
            hasher.add([0] + Array(name.utf8) + [0] + Array(header.value.utf8))
        }
        if let certificate = offer.certificate {
            opamp.certificate.cert = Data(certificate.certificatePEM.utf8)
            opamp.certificate.caCert = Data(certificate.caCertificatePEM.utf8)
            if let key = certificate.privateKeyPEM { opamp.certificate.privateKey = Data(key.utf8) }
            hasher.add([1] + Array(certificate.certificatePEM.utf8) + [0] + Array(certificate.caCertificatePEM.utf8))
        }
        if let serverCA = offer.serverCAPEM {
            opamp.tls.caPemContents = serverCA
            hasher.add([2] + Array(serverCA.utf8))
        }
        offers.opamp = opamp
        offers.hash = Data(hasher.finish())
        return offers
    }

    /// Records who the latest message came from.
    mutating func notePrincipal(_ principal: AgentPrincipal) {
        if self.snapshot.principal != principal { self.snapshot.principal = principal }
    }

    /// Moves the state to a new UID (after `new_instance_uid`).
    mutating func rekey(to uid: InstanceUID) {
        self.snapshot.instanceUID = uid
        self.wireUID = Data(uid.bytes)
    }

    static func heartbeatOffer(_ heartbeat: (intervalSeconds: UInt64, endpoint: String))
        -> OpAMP_ConnectionSettingsOffers
    {
        self.connectionSettings(
            OpAMPConnectionOffer(endpoint: heartbeat.endpoint, heartbeatIntervalSeconds: heartbeat.intervalSeconds)
        )
    }
}

/// SHA-256 over a sequence of byte runs (connection settings hashes).
struct SHA256Hasher {
    private var hasher = SHA256()

    mutating func add(_ bytes: [UInt8]) {
        self.hasher.update(data: bytes)
    }

    func finish() -> [UInt8] {
        Array(self.hasher.finalize())
    }
}
