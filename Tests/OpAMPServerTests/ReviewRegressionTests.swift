import FleetSimulator
import Foundation
import NIOCore
import OpAMPProtocol
import SwiftProtobuf
import Testing

@testable import OpAMPServer

/// Cases found in review of the OpAMP server, each reproduced first.
@Suite(.serialized) struct OpAMPReviewRegressionTests {
    let clock = TestClock()

    @Test(arguments: [true, false])
    func brokenGzipBodiesGetOneAnswerAndTheServerLives(withTokens: Bool) async throws {
        let (server, port) = try await startTestServer { if withTokens { $0.agentTokens = ["t"] } }
        defer { Task { await server.stop() } }
        for _ in 0..<3 {
            let response = try await RawHTTPResponse.post(
                port: port,
                body: Array("hello".utf8),
                headers: ["Content-Encoding": "gzip"]
            )
            #expect(response.status == 400 || response.status == 401)
        }
        let headers = withTokens ? ["Authorization": "Bearer t"] : [:]
        #expect(
            try await RawHTTPResponse.post(port: port, body: try fullState(uid(50)).serializedBytes(), headers: headers)
                .status == 200
        )
    }

    @Test func heartbeatOffersSkipAgentsThatWouldReconnectAndComeOncePerHTTPVisit() {
        let registry = AgentRegistry(
            heartbeat: (intervalSeconds: 30, endpoint: "ws://policyd:4320/v1/opamp"),
            clock: self.clock.function
        )
        let accepting = collectorCapabilities.union(.acceptsOpAMPConnectionSettings)
        let ws = registry.newConnection()
        #expect(
            !registry.handle(fullState(uid(51), capabilities: accepting), connection: ws, transport: .webSocket)
                .hasConnectionSettings
        )
        let first = registry.handle(fullState(uid(52)), connection: registry.newConnection(), transport: .http)
        #expect(first.hasConnectionSettings)
        for seq in 1..<4 {
            #expect(
                !registry.handle(
                    heartbeat(uid(52), seq: UInt64(seq)),
                    connection: registry.newConnection(),
                    transport: .http
                ).hasConnectionSettings
            )
        }
    }

    @Test func httpAgentsWithoutStatusGetTheConfigOnce() {
        let registry = AgentRegistry(clock: self.clock.function)
        let capabilities: AgentCapabilities = [.reportsStatus, .acceptsRemoteConfig, .reportsHeartbeat]
        _ = registry.handle(
            fullState(uid(53), capabilities: capabilities),
            connection: registry.newConnection(),
            transport: .http
        )
        registry.setDesiredConfig(config("v1"), for: uid(53))
        var deliveries = 0
        for seq in 1..<6 {
            let poll = registry.handle(
                heartbeat(uid(53), seq: UInt64(seq), capabilities: capabilities),
                connection: registry.newConnection(),
                transport: .http
            )
            if poll.hasRemoteConfig { deliveries += 1 }
        }
        #expect(deliveries == 1)
    }

    @Test func commandsTravelAlone() {
        let registry = AgentRegistry(clock: self.clock.function)
        let capabilities = collectorCapabilities.union(.acceptsRestartCommand)
        _ = registry.handle(
            fullState(uid(54), capabilities: capabilities),
            connection: registry.newConnection(),
            transport: .http
        )
        registry.setDesiredConfig(config("v1"), for: uid(54))
        #expect(registry.send(.restart, to: uid(54)))
        let first = registry.handle(
            heartbeat(uid(54), seq: 1, capabilities: capabilities),
            connection: registry.newConnection(),
            transport: .http
        )
        #expect(first.hasRemoteConfig && !first.hasCommand)
        let applied = status(uid(54), seq: 2, hash: config("v1").hash, .applied)
        var message = applied
        message.capabilities = capabilities.rawValue
        let second = registry.handle(message, connection: registry.newConnection(), transport: .http)
        #expect(second.hasCommand && !second.hasRemoteConfig && second.flags == 0)
    }

    @Test func silentAndLongGoneAgentsAreForgotten() {
        let registry = AgentRegistry(clock: self.clock.function)
        for n in 60..<70 {
            _ = registry.handle(fullState(uid(UInt64(n))), connection: registry.newConnection(), transport: .http)
        }
        self.clock.advance(100)
        _ = registry.handle(heartbeat(uid(60), seq: 1), connection: registry.newConnection(), transport: .http)
        registry.sweep(httpTimeout: 90, webSocketTimeout: 120, forgetAfter: 3600, maximumAgents: 5)
        #expect(registry.snapshot().count == 5)
        #expect(registry.agent(uid(60))?.connected == true)
        self.clock.advance(4000)
        registry.sweep(httpTimeout: 90, webSocketTimeout: 120, forgetAfter: 3600)
        #expect(registry.snapshot().isEmpty)
    }

    @Test func idleConnectionsAndSilentWebSocketsAreClosed() async throws {
        let (server, port) = try await startTestServer { $0.httpIdleTimeout = 1 }
        defer { Task { await server.stop() } }
        // A TCP connection that never sends a request is closed after the idle timeout.
        let started = Date()
        let idle = try await RawHTTPResponse.exchange(port: port, request: [])
        #expect(idle.status == 0)
        #expect(Date().timeIntervalSince(started) < 10)
        // A WebSocket whose agent went silent is closed by the sweep.
        let agent = try await TestWebSocketAgent.connect(port: port)
        try await agent.send(fullState(uid(70)))
        _ = try await agent.receive()
        server.registry.sweep(httpTimeout: 90, webSocketTimeout: -1)
        let deadline = Date().addingTimeInterval(5)
        while !agent.inbox.isClosed, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(agent.inbox.isClosed)
        #expect(server.registry.agent(uid(70))?.connected == false)
    }

    @Test func aReconnectOverAHalfOpenSocketKeepsItsIdentity() async throws {
        let (server, port) = try await startTestServer()
        defer { Task { await server.stop() } }
        let old = try await TestWebSocketAgent.connect(port: port)
        try await old.send(fullState(uid(71), seq: 0))
        _ = try await old.receive()
        let new = try await TestWebSocketAgent.connect(port: port)
        try await new.send(heartbeat(uid(71), seq: 1))
        let response = try await new.receive()
        #expect(!response.hasAgentIdentification)
        let deadline = Date().addingTimeInterval(5)
        while !old.inbox.isClosed, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(old.inbox.isClosed)
        #expect(server.registry.agent(uid(71))?.connected == true)
        await new.close()
    }

    @Test func pushesEchoALegacyULIDAsSent() {
        let registry = AgentRegistry(clock: self.clock.function)
        let pushed = PushLog()
        let ws = registry.newConnection()
        registry.attach(ws, pusher: { pushed.append($0) })
        var message = fullState(uid(72))
        let ulid = Data("01ARZ3NDEKTSV4RRFFQ69G5FAV".utf8)
        message.instanceUid = ulid
        _ = registry.handle(message, connection: ws, transport: .webSocket)
        registry.setDesiredConfig(config("v1"), for: InstanceUID(wire: ulid)!)
        #expect(pushed.all.last?.instanceUid == ulid)
    }

    @Test func theSimulatorNumbersMessagesWhenSent() {
        var agent = SimulatedAgent(
            profile: AgentProfile(serviceName: "otelcol-sampler", tier: "sampling", hostName: "h"),
            uid: uid(73)
        )
        var first = agent.connected()
        agent.stamp(&first)
        var push = OpAMP_ServerToAgent()
        push.remoteConfig.configHash = Data([1])
        push.remoteConfig.config.configMap[""] = OpAMP_AgentConfigFile()
        let actions = agent.receive(push)
        var numbers: [UInt64] = [first.sequenceNum]
        for action in actions {
            switch action {
            case .send(var message), .sendLater(var message, _):
                agent.stamp(&message)
                numbers.append(message.sequenceNum)
            case .reconnect:
                Issue.record("a config push does not make the agent reconnect")
            case .download:
                Issue.record("a config push downloads nothing")
            }
        }
        #expect(numbers == [0, 1, 2])
        // A reconnect carries the status that may have changed while away.
        let reconnect = agent.connected()
        #expect(reconnect.remoteConfigStatus.status == .applied)
        #expect(!reconnect.hasAgentDescription)
    }
}
