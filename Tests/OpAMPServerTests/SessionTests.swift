import Foundation
import NIOConcurrencyHelpers
import OpAMPProtocol
import Testing

@testable import OpAMPServer

/// The protocol logic, without sockets: one registry, messages in, responses and events out.
@Suite struct SessionTests {
    let clock = TestClock()

    func registry(heartbeat: (UInt64, String)? = nil) -> AgentRegistry {
        AgentRegistry(heartbeat: heartbeat.map { (intervalSeconds: $0.0, endpoint: $0.1) }, clock: self.clock.function)
    }

    @Test func everyResponseEchoesTheUIDAndCarriesCapabilities() {
        let registry = self.registry()
        let connection = registry.newConnection()
        let response = registry.handle(fullState(uid(1)), connection: connection, transport: .webSocket)
        #expect(response.instanceUid == Data(uid(1).bytes))
        #expect(response.capabilities & ServerCapabilities.acceptsStatus.rawValue != 0)
        #expect(!response.asksForFullState)
        #expect(!response.hasErrorResponse)
        let next = registry.handle(heartbeat(uid(1), seq: 1), connection: connection, transport: .webSocket)
        #expect(next.instanceUid == Data(uid(1).bytes))
        #expect(!next.asksForFullState)
    }

    @Test func unknownAgentsWithoutStateAreAskedForItOnce() {
        let registry = self.registry()
        let connection = registry.newConnection()
        // A reconnecting agent sends a minimal message; the server has no state for it.
        let first = registry.handle(heartbeat(uid(2), seq: 41), connection: connection, transport: .webSocket)
        #expect(first.asksForFullState)
        let full = registry.handle(fullState(uid(2), seq: 42), connection: connection, transport: .webSocket)
        #expect(!full.asksForFullState)
        let after = registry.handle(heartbeat(uid(2), seq: 43), connection: connection, transport: .webSocket)
        #expect(!after.asksForFullState)
    }

    @Test func sequenceGapsWithCompressedStatusAskForFullState() {
        let registry = self.registry()
        let connection = registry.newConnection()
        _ = registry.handle(fullState(uid(3), seq: 0), connection: connection, transport: .webSocket)
        _ = registry.handle(heartbeat(uid(3), seq: 1), connection: connection, transport: .webSocket)
        let gap = registry.handle(heartbeat(uid(3), seq: 7), connection: connection, transport: .webSocket)
        #expect(gap.asksForFullState)
        // A gap in a message that carries everything is harmless.
        let fullGap = registry.handle(fullState(uid(3), seq: 20), connection: connection, transport: .webSocket)
        #expect(!fullGap.asksForFullState)
    }

    @Test func neverLoopsOnFieldsTheAgentDoesNotHave() {
        // Claims ReportsEffectiveConfig but never sends one (the Python client before the distro sets it).
        let registry = self.registry()
        let connection = registry.newConnection()
        var message = fullState(uid(4), capabilities: [.reportsStatus, .reportsEffectiveConfig])
        message.clearEffectiveConfig()
        var asked = 0
        for seq in 0..<10 {
            message.sequenceNum = UInt64(seq)
            if registry.handle(message, connection: connection, transport: .http).asksForFullState { asked += 1 }
        }
        #expect(asked == 1)
    }

    /// A reported effective config equal to the desired one is held as that one copy (shared by every agent
    /// sent it), whether it arrives after the config was desired or before (an agent that moved replicas).
    @Test func anEffectiveConfigEqualToTheDesiredOneIsHeldOnce() {
        let registry = self.registry()
        let desired = RemoteConfig(
            files: [
                "": ConfigFile(
                    body: Array(String(repeating: "- sampler:4317\n", count: 1000).utf8),
                    contentType: "text/yaml"
                )
            ],
            hash: Array("ring".utf8)
        )
        func shared(_ bytes: [UInt8]?, _ other: [UInt8]) -> Bool {
            guard let bytes else { return false }
            return bytes.withUnsafeBytes { one in other.withUnsafeBytes { one.baseAddress == $0.baseAddress } }
        }
        func reporting(_ id: InstanceUID, _ text: [UInt8], seq: UInt64) -> OpAMP_AgentToServer {
            var message = heartbeat(id, seq: seq)
            var file = OpAMP_AgentConfigFile()
            file.body = Data(text)
            file.contentType = "text/yaml"
            message.effectiveConfig.configMap.configMap[""] = file
            return message
        }
        let body = desired.files[""]!.body
        // Desired first, then reported.
        let first = registry.newConnection()
        _ = registry.handle(fullState(uid(41)), connection: first, transport: .webSocket)
        registry.setDesiredConfig(desired, for: uid(41))
        _ = registry.handle(reporting(uid(41), body, seq: 1), connection: first, transport: .webSocket)
        #expect(shared(registry.agent(uid(41))?.effectiveConfig?[""]?.body, body))
        // Reported first, then desired.
        let second = registry.newConnection()
        _ = registry.handle(fullState(uid(42)), connection: second, transport: .webSocket)
        _ = registry.handle(reporting(uid(42), body, seq: 1), connection: second, transport: .webSocket)
        #expect(!shared(registry.agent(uid(42))?.effectiveConfig?[""]?.body, body))
        registry.setDesiredConfig(desired, for: uid(42))
        #expect(shared(registry.agent(uid(42))?.effectiveConfig?[""]?.body, body))
        // Another config is kept as reported.
        let other = Array("receivers: {}\n".utf8)
        _ = registry.handle(reporting(uid(41), other, seq: 2), connection: first, transport: .webSocket)
        #expect(registry.agent(uid(41))?.effectiveConfig?[""]?.body == other)
    }

    @Test func remoteConfigIsResentExactlyWhenTheReportedHashDiffers() {
        let registry = self.registry()
        let connection = registry.newConnection()
        _ = registry.handle(fullState(uid(5)), connection: connection, transport: .http)
        let desired = config("v2")
        registry.setDesiredConfig(desired, for: uid(5))
        // Reported hash (none yet, status UNSET with empty hash) differs: send.
        let poll = registry.handle(heartbeat(uid(5), seq: 1), connection: connection, transport: .http)
        #expect(poll.hasRemoteConfig)
        #expect(poll.remoteConfig.configHash == Data(desired.hash))
        #expect(poll.remoteConfig.config.configMap[""]?.contentType == "text/yaml")
        // APPLYING with the desired hash: do not resend.
        let applying = registry.handle(
            status(uid(5), seq: 2, hash: desired.hash, .applying),
            connection: connection,
            transport: .http
        )
        #expect(!applying.hasRemoteConfig)
        let applied = registry.handle(
            status(uid(5), seq: 3, hash: desired.hash, .applied),
            connection: connection,
            transport: .http
        )
        #expect(!applied.hasRemoteConfig)
        // Another hash, whatever the status, means resend.
        let other = registry.handle(
            status(uid(5), seq: 4, hash: [9, 9], .applied),
            connection: connection,
            transport: .http
        )
        #expect(other.hasRemoteConfig)
        #expect(registry.agent(uid(5))?.remoteConfigStatus?.hash == [9, 9])
    }

    @Test func failedConfigIsReportedAndNotResentForever() async {
        let registry = self.registry()
        let log = EventLog(registry)
        let connection = registry.newConnection()
        let old = config("v1")
        _ = registry.handle(
            status(uid(6), seq: 0, hash: old.hash, .applied),
            connection: connection,
            transport: .webSocket
        )
        _ = registry.handle(fullState(uid(6), seq: 1), connection: connection, transport: .webSocket)
        let new = config("v2-bad")
        registry.setDesiredConfig(new, for: uid(6))
        let failed = registry.handle(
            status(uid(6), seq: 2, hash: new.hash, .failed, error: "unknown key"),
            connection: connection,
            transport: .webSocket
        )
        #expect(!failed.hasRemoteConfig)
        // The supervisor rolls back and reports the old config as applied.
        let rolledBack = registry.handle(
            status(uid(6), seq: 3, hash: old.hash, .applied),
            connection: connection,
            transport: .webSocket
        )
        #expect(!rolledBack.hasRemoteConfig)
        for seq in 4..<8 {
            #expect(
                !registry.handle(heartbeat(uid(6), seq: UInt64(seq)), connection: connection, transport: .webSocket)
                    .hasRemoteConfig
            )
        }
        #expect(registry.agent(uid(6))?.rejectedConfigHash == new.hash)
        let seen = await log.wait { events in
            events.contains(
                .remoteConfigRejected(uid(6), hash: new.hash, errorMessage: "unknown key", rolledBack: false)
            )
                && events.contains(
                    .remoteConfigRejected(uid(6), hash: new.hash, errorMessage: "unknown key", rolledBack: true)
                )
        }
        #expect(seen)
        // A new desired config is delivered again.
        let fixed = config("v3")
        registry.setDesiredConfig(fixed, for: uid(6))
        #expect(
            registry.handle(heartbeat(uid(6), seq: 8), connection: connection, transport: .webSocket).hasRemoteConfig
        )
    }

    @Test func configGoesOnlyToAgentsThatAcceptIt() {
        let registry = self.registry()
        let connection = registry.newConnection()
        let extensionCapabilities: AgentCapabilities = [.reportsStatus, .reportsEffectiveConfig, .reportsHealth]
        _ = registry.handle(
            fullState(uid(7), capabilities: extensionCapabilities),
            connection: connection,
            transport: .webSocket
        )
        registry.setDesiredConfig(config("v1"), for: uid(7))
        #expect(
            !registry.handle(
                heartbeat(uid(7), seq: 1, capabilities: extensionCapabilities),
                connection: connection,
                transport: .webSocket
            ).hasRemoteConfig
        )
    }

    @Test func agentsWithoutStatusReportsGetTheConfigOncePerConnection() {
        let registry = self.registry()
        let capabilities: AgentCapabilities = [.reportsStatus, .acceptsRemoteConfig]
        let first = registry.newConnection()
        _ = registry.handle(fullState(uid(8), capabilities: capabilities), connection: first, transport: .webSocket)
        registry.setDesiredConfig(config("v1"), for: uid(8))
        #expect(
            registry.handle(
                heartbeat(uid(8), seq: 1, capabilities: capabilities),
                connection: first,
                transport: .webSocket
            ).hasRemoteConfig == false
        )
        registry.connectionClosed(first, reason: "test")
        let second = registry.newConnection()
        #expect(
            registry.handle(
                heartbeat(uid(8), seq: 2, capabilities: capabilities),
                connection: second,
                transport: .webSocket
            ).hasRemoteConfig
        )
        #expect(
            !registry.handle(
                heartbeat(uid(8), seq: 3, capabilities: capabilities),
                connection: second,
                transport: .webSocket
            ).hasRemoteConfig
        )
    }

    @Test func requestInstanceUIDAssignsAUUIDv7AndMovesTheState() async {
        let registry = self.registry()
        let log = EventLog(registry)
        let connection = registry.newConnection()
        var message = fullState(uid(9))
        message.flags = UInt64(OpAMP_AgentToServerFlags.requestInstanceUid.rawValue)
        let response = registry.handle(message, connection: connection, transport: .webSocket)
        #expect(response.instanceUid == Data(uid(9).bytes))
        let assigned = InstanceUID(bytes: response.agentIdentification.newInstanceUid)
        #expect(response.agentIdentification.newInstanceUid.count == 16)
        #expect(assigned != nil && assigned != uid(9))
        #expect(response.agentIdentification.newInstanceUid[6] >> 4 == 7)  // UUID version 7
        #expect(response.agentIdentification.newInstanceUid[8] >> 6 == 2)  // RFC 4122 variant
        #expect(registry.agent(uid(9)) == nil)
        #expect(registry.agent(assigned!)?.description?.identifying["service.name"] == "otelcol-sampler")
        #expect(await log.wait { $0.contains(.instanceUIDReassigned(old: uid(9), new: assigned!)) })
    }

    @Test func theSameUIDOnTwoLiveConnectionsGetsANewOneOnceBothProveAlive() {
        let registry = self.registry()
        let closed = NIOLockedValueBox<Set<Int>>([])
        let connections = (0..<3).map { index in
            let connection = registry.newConnection()
            registry.attach(
                connection,
                pusher: { _ in true },
                closer: { closed.withLockedValue { _ = $0.insert(index) } }
            )
            return connection
        }
        _ = registry.handle(fullState(uid(10)), connection: connections[0], transport: .webSocket)
        // A second connection with the same UID while the first is open: the newer one wins, the old is closed.
        let takeover = registry.handle(fullState(uid(10)), connection: connections[1], transport: .webSocket)
        #expect(!takeover.hasAgentIdentification)
        #expect(closed.withLockedValue { $0 } == [0])
        _ = registry.handle(heartbeat(uid(10), seq: 1), connection: connections[1], transport: .webSocket)
        // The displaced agent comes back while the new owner is alive and talking: two agents share the UID.
        let response = registry.handle(fullState(uid(10), seq: 30), connection: connections[2], transport: .webSocket)
        let assigned = InstanceUID(bytes: response.agentIdentification.newInstanceUid)
        #expect(assigned != nil && assigned != uid(10))
        #expect(registry.snapshot().count == 2)
        #expect(closed.withLockedValue { $0 } == [0])
        // The owner keeps its identity.
        #expect(
            !registry.handle(heartbeat(uid(10), seq: 2), connection: connections[1], transport: .webSocket)
                .hasAgentIdentification
        )
    }

    @Test func legacyULIDsAreAcceptedAndBadUIDsGetBadRequest() {
        let registry = self.registry()
        let connection = registry.newConnection()
        var ulid = fullState(uid(11))
        ulid.instanceUid = Data("01ARZ3NDEKTSV4RRFFQ69G5FAV".utf8)
        let accepted = registry.handle(ulid, connection: connection, transport: .http)
        #expect(!accepted.hasErrorResponse)
        #expect(registry.agent(InstanceUID(wire: Array("01ARZ3NDEKTSV4RRFFQ69G5FAV".utf8))!) != nil)
        var short = fullState(uid(12))
        short.instanceUid = Data([1, 2, 3])
        let rejected = registry.handle(short, connection: connection, transport: .http)
        #expect(rejected.errorResponse.type == .badRequest)
        #expect(rejected.errorResponse.errorMessage.contains("16 bytes"))
    }

    @Test func heartbeatOfferIsValidForTheSupervisor() {
        let registry = self.registry(heartbeat: (30, "ws://policyd:4320/v1/opamp"))
        let connection = registry.newConnection()
        let response = registry.handle(fullState(uid(13)), connection: connection, transport: .webSocket)
        #expect(response.hasConnectionSettings)
        #expect(response.connectionSettings.opamp.heartbeatIntervalSeconds == 30)
        #expect(response.connectionSettings.opamp.destinationEndpoint == "ws://policyd:4320/v1/opamp")
        #expect(!response.connectionSettings.hash.isEmpty)
        // Only on the first response, and only to agents that report heartbeats.
        #expect(
            !registry.handle(heartbeat(uid(13), seq: 1), connection: connection, transport: .webSocket)
                .hasConnectionSettings
        )
        let other = registry.newConnection()
        let quiet = registry.handle(
            fullState(uid(14), capabilities: [.reportsStatus]),
            connection: other,
            transport: .webSocket
        )
        #expect(!quiet.hasConnectionSettings)
        #expect(AgentSession.heartbeatOffer((30, "x")).hash == AgentSession.heartbeatOffer((30, "x")).hash)
    }

    @Test func disconnectsAndSilenceMarkAgentsOffline() async {
        let registry = self.registry()
        let log = EventLog(registry)
        let ws = registry.newConnection()
        var goodbye = heartbeat(uid(15), seq: 1)
        _ = registry.handle(fullState(uid(15)), connection: ws, transport: .webSocket)
        goodbye.agentDisconnect = OpAMP_AgentDisconnect()
        _ = registry.handle(goodbye, connection: ws, transport: .webSocket)
        #expect(registry.agent(uid(15))?.connected == false)
        let http = registry.newConnection()
        _ = registry.handle(fullState(uid(16)), connection: http, transport: .http)
        #expect(registry.agent(uid(16))?.connected == true)
        self.clock.advance(100)
        registry.sweep(httpTimeout: 90, webSocketTimeout: 120)
        #expect(registry.agent(uid(16))?.connected == false)
        #expect(
            await log.wait { events in
                events.contains { if case .disconnected(uid(16), _) = $0 { true } else { false } }
            }
        )
        // The next poll brings it back.
        _ = registry.handle(heartbeat(uid(16), seq: 1), connection: registry.newConnection(), transport: .http)
        #expect(registry.agent(uid(16))?.connected == true)
    }

    @Test func restartCommandsOnlyForAgentsThatAcceptThem() {
        let registry = self.registry()
        let pushed = PushLog()
        let ws = registry.newConnection()
        registry.attach(ws) { message in pushed.append(message) }
        _ = registry.handle(fullState(uid(17)), connection: ws, transport: .webSocket)
        #expect(!registry.send(.restart, to: uid(17)))
        let capable = collectorCapabilities.union(.acceptsRestartCommand)
        _ = registry.handle(fullState(uid(17), seq: 1, capabilities: capable), connection: ws, transport: .webSocket)
        #expect(registry.send(.restart, to: uid(17)))
        #expect(pushed.all.last?.hasCommand == true)
        // HTTP: queued for the next poll.
        let http = registry.newConnection()
        _ = registry.handle(fullState(uid(18), capabilities: capable), connection: http, transport: .http)
        #expect(registry.send(.restart, to: uid(18)))
        #expect(
            registry.handle(heartbeat(uid(18), seq: 1, capabilities: capable), connection: http, transport: .http)
                .command.type == .restart
        )
    }

    @Test func webSocketAgentsGetNewConfigPushedAtOnce() {
        let registry = self.registry()
        let pushed = PushLog()
        let ws = registry.newConnection()
        registry.attach(ws) { message in pushed.append(message) }
        _ = registry.handle(fullState(uid(19)), connection: ws, transport: .webSocket)
        registry.setDesiredConfig(config("v1"), for: uid(19))
        #expect(pushed.all.count == 1)
        #expect(pushed.all.first?.remoteConfig.configHash == Data(config("v1").hash))
        #expect(pushed.all.first?.instanceUid == Data(uid(19).bytes))
        registry.setDesiredConfig(config("v1"), for: uid(19))
        #expect(pushed.all.count == 1)
    }
}

final class PushLog: Sendable {
    private let messages = NIOLockedValueBox<[OpAMP_ServerToAgent]>([])
    func append(_ message: OpAMP_ServerToAgent) -> Bool {
        self.messages.withLockedValue { $0.append(message) }
        return true
    }
    var all: [OpAMP_ServerToAgent] { self.messages.withLockedValue { $0 } }
}

@Suite struct ConnectionSettingsTests {
    @Test func offersGoOnlyToAgentsThatAcceptThemAndAreValid() {
        let registry = AgentRegistry()
        let pushed = PushLog()
        let ws = registry.newConnection()
        registry.attach(ws) { pushed.append($0) }
        _ = registry.handle(fullState(uid(30)), connection: ws, transport: .webSocket)
        let offer = OpAMPConnectionOffer(
            endpoint: "wss://policyd.example:4320/v1/opamp",
            headers: ["Authorization": "Bearer t2"],
            heartbeatIntervalSeconds: 15
        )
        #expect(
            registry.offerConnectionSettings(offer, to: uid(30))
                == "the agent does not accept OpAMP connection settings"
        )
        let accepting = collectorCapabilities.union(.acceptsOpAMPConnectionSettings)
        _ = registry.handle(fullState(uid(30), seq: 1, capabilities: accepting), connection: ws, transport: .webSocket)
        #expect(
            registry.offerConnectionSettings(
                OpAMPConnectionOffer(endpoint: "", heartbeatIntervalSeconds: 15),
                to: uid(30)
            ) != nil
        )
        #expect(
            registry.offerConnectionSettings(
                OpAMPConnectionOffer(endpoint: offer.endpoint, heartbeatIntervalSeconds: 0),
                to: uid(30)
            ) != nil
        )
        #expect(registry.offerConnectionSettings(offer, to: uid(30)) == nil)
        let message = pushed.all.last
        #expect(message?.connectionSettings.opamp.destinationEndpoint == offer.endpoint)
        #expect(message?.connectionSettings.opamp.heartbeatIntervalSeconds == 15)
        #expect(message?.connectionSettings.opamp.headers.headers.first?.value == "Bearer t2")
        #expect(message?.connectionSettings.hash.isEmpty == false)
        // HTTP: on the next poll.
        let http = registry.newConnection()
        _ = registry.handle(fullState(uid(31), capabilities: accepting), connection: http, transport: .http)
        #expect(registry.offerConnectionSettings(offer, to: uid(31)) == nil)
        #expect(
            registry.handle(heartbeat(uid(31), seq: 1, capabilities: accepting), connection: http, transport: .http)
                .hasConnectionSettings
        )
    }
}

@Suite struct AvailableComponentsTests {
    func components(_ hash: [UInt8], full: Bool) -> OpAMP_AvailableComponents {
        var available = OpAMP_AvailableComponents()
        available.hash = Data(hash)
        if full {
            var processors = OpAMP_ComponentDetails()
            processors.subComponentMap["tail_sampling"] = OpAMP_ComponentDetails()
            processors.subComponentMap["batch"] = OpAMP_ComponentDetails()
            var exporters = OpAMP_ComponentDetails()
            exporters.subComponentMap["loadbalancing"] = OpAMP_ComponentDetails()
            available.components = ["processors": processors, "exporters": exporters]
        }
        return available
    }

    @Test func unknownHashesAreAskedForOnceAndSharedByHash() {
        let registry = AgentRegistry()
        let capabilities = collectorCapabilities.union(.reportsAvailableComponents)
        let connection = registry.newConnection()
        var first = fullState(uid(40), capabilities: capabilities)
        first.availableComponents = self.components([7, 7], full: false)
        let ask = registry.handle(first, connection: connection, transport: .webSocket)
        #expect(ask.flags & UInt64(OpAMP_ServerToAgentFlags.reportAvailableComponents.rawValue) != 0)
        var again = heartbeat(uid(40), seq: 1, capabilities: capabilities)
        again.availableComponents = self.components([7, 7], full: false)
        #expect(registry.handle(again, connection: connection, transport: .webSocket).flags == 0)
        var answer = heartbeat(uid(40), seq: 2, capabilities: capabilities)
        answer.availableComponents = self.components([7, 7], full: true)
        _ = registry.handle(answer, connection: connection, transport: .webSocket)
        #expect(
            registry.agent(uid(40))?.availableComponents == [
                "processors/tail_sampling", "processors/batch", "exporters/loadbalancing",
            ]
        )
        // Another agent with the same build only sends the hash and is not asked.
        let other = registry.newConnection()
        var second = fullState(uid(41), capabilities: capabilities)
        second.availableComponents = self.components([7, 7], full: false)
        let response = registry.handle(second, connection: other, transport: .webSocket)
        #expect(response.flags & UInt64(OpAMP_ServerToAgentFlags.reportAvailableComponents.rawValue) == 0)
        #expect(registry.agent(uid(41))?.availableComponents?.contains("processors/tail_sampling") == true)
    }
}

/// Own-telemetry offers as opamp-go and the supervisor read them.
@Suite struct TelemetrySettingsTests {
    let clock = TestClock()
    let capabilities: AgentCapabilities = [.reportsStatus, .reportsOwnMetrics, .reportsHeartbeat, .reportsHealth]

    @Test func theHeartbeatIntervalTravelsWithTelemetryAndAWithdrawnKindGetsAnEmptyEndpoint() {
        let registry = AgentRegistry(
            heartbeat: (intervalSeconds: 20, endpoint: "wss://policyd/v1/opamp"),
            clock: self.clock.function
        )
        let first = registry.newConnection()
        _ = registry.handle(fullState(uid(1), capabilities: self.capabilities), connection: first, transport: .http)
        let metrics = TelemetryOffer.Destination(endpoint: "https://otel:4318/v1/metrics", headers: ["X-Team": "sre"])
        registry.setDesiredTelemetry([uid(1): TelemetryOffer(metrics: metrics, logs: metrics)])
        let offered = registry.handle(
            heartbeat(uid(1), seq: 1, capabilities: self.capabilities),
            connection: registry.newConnection(),
            transport: .http
        )
        // Only the kind it reports; the interval in the same offer, since a later offer replaces it.
        #expect(offered.connectionSettings.ownMetrics.destinationEndpoint == "https://otel:4318/v1/metrics")
        #expect(!offered.connectionSettings.hasOwnLogs)
        #expect(offered.connectionSettings.opamp.heartbeatIntervalSeconds == 20)
        #expect(!offered.connectionSettings.hash.isEmpty)
        // Sent once.
        let again = registry.handle(
            heartbeat(uid(1), seq: 2, capabilities: self.capabilities),
            connection: registry.newConnection(),
            transport: .http
        )
        #expect(!again.hasConnectionSettings)
        // Removed: withdrawn with an empty endpoint, and then nothing more.
        registry.setDesiredTelemetry([uid(1): nil])
        let withdrawn = registry.handle(
            heartbeat(uid(1), seq: 3, capabilities: self.capabilities),
            connection: registry.newConnection(),
            transport: .http
        )
        #expect(withdrawn.connectionSettings.hasOwnMetrics)
        #expect(withdrawn.connectionSettings.ownMetrics.destinationEndpoint.isEmpty)
        #expect(withdrawn.connectionSettings.hash != offered.connectionSettings.hash)
        let quiet = registry.handle(
            heartbeat(uid(1), seq: 4, capabilities: self.capabilities),
            connection: registry.newConnection(),
            transport: .http
        )
        #expect(!quiet.hasConnectionSettings)
    }

    @Test func aCSRFromAnAgentThatCannotReceiveTheCertificateIsRefusedAndErrorsCarryNothingElse() {
        let registry = AgentRegistry(
            heartbeat: (intervalSeconds: 20, endpoint: "wss://policyd/v1/opamp"),
            clock: self.clock.function
        )
        var message = fullState(uid(2), capabilities: self.capabilities)
        message.connectionSettingsRequest.opamp.certificateRequest.csr = Data(
            "-----BEGIN CERTIFICATE REQUEST-----".utf8
        )
        let response = registry.handle(message, connection: registry.newConnection(), transport: .http)
        #expect(response.errorResponse.type == .badRequest)
        #expect(response.errorResponse.errorMessage.contains("AcceptsOpAMPConnectionSettings"))
        #expect(response.capabilities == 0)
        #expect(registry.agent(uid(2)) == nil)
    }
}
