import FleetSimulator
import Foundation
import OpAMPProtocol
import Testing

@testable import OpAMPServer

/// The fleet simulator against the real server: both transports, config rollout, a failing config,
/// dropped and restored connections.
@Suite(.serialized) struct FleetSimulatorTests {
    @Test(arguments: [FleetOptions.Transport.webSocket, .http])
    func simulatedFleetAppliesConfigsAndReportsFailures(transport: FleetOptions.Transport) async throws {
        let (server, port) = try await startTestServer()
        defer { Task { await server.stop() } }
        let registry = server.registry
        let log = EventLog(registry)

        var options = FleetOptions()
        options.port = port
        options.transport = transport
        options.agents = 40
        options.heartbeatSeconds = 1
        options.applyDelay = .milliseconds(20)
        options.threads = 1
        let runner = FleetRunner(options: options)
        let task = Task { try await runner.run() }
        defer {
            task.cancel()
            Task { await runner.shutdown() }
        }
        let deadline = Date().addingTimeInterval(15)
        while registry.connectedCount < 40, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(registry.connectedCount == 40)
        let agents = registry.snapshot()
        let lbs = agents.filter { $0.description?.identifying["service.name"] == "otelcol-lb" }
        #expect(lbs.count == 8)
        #expect(agents.allSatisfy { $0.description?.nonIdentifying["tailplane.tier"] != nil })
        #expect(
            agents.allSatisfy {
                $0.capabilities.contains([.acceptsRemoteConfig, .reportsRemoteConfig, .reportsHealth])
            }
        )

        let good = config("exporters: {otlp: {}}")
        let bad = config("exporters: {tailplane-fail: {}}")
        var desired: [InstanceUID: RemoteConfig?] = [:]
        for (index, agent) in agents.enumerated() { desired[agent.instanceUID] = index == 0 ? bad : good }
        registry.setDesiredConfig(desired)
        let converged = Date().addingTimeInterval(15)
        while Date() < converged {
            let states = registry.snapshot()
            if states.filter({ $0.remoteConfigStatus?.state == .applied && $0.remoteConfigStatus?.hash == good.hash })
                .count == 39,
                states.contains(where: { $0.rejectedConfigHash == bad.hash })
            {
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let states = registry.snapshot()
        #expect(
            states.filter { $0.remoteConfigStatus == RemoteConfigReport(hash: good.hash, state: .applied) }.count == 39
        )
        let failed = try #require(states.first { $0.instanceUID == agents[0].instanceUID })
        #expect(failed.remoteConfigStatus?.state == .failed)
        #expect(failed.health?.healthy == false)
        #expect(
            await log.wait { events in
                events.contains {
                    if case .remoteConfigRejected(agents[0].instanceUID, _, _, false) = $0 { true } else { false }
                }
            }
        )
        // Applied configs show up as the agents' effective config.
        #expect(
            states.first { $0.instanceUID == agents[1].instanceUID }?.effectiveConfig?[""]?.body == good.files[""]?.body
        )
    }

    @Test func droppedWebSocketsComeBackWithoutAFullStateRequest() async throws {
        let (server, port) = try await startTestServer()
        defer { Task { await server.stop() } }
        var options = FleetOptions()
        options.port = port
        options.agents = 20
        options.threads = 1
        options.churnShare = 0.5
        options.churnInterval = .milliseconds(300)
        options.reconnectDelay = .milliseconds(100)
        let runner = FleetRunner(options: options)
        let task = Task { try await runner.run() }
        try await Task.sleep(for: .seconds(2))
        task.cancel()
        #expect(runner.statistics.reconnects > 0)
        // Every agent is known once: reconnects kept their identity.
        #expect(server.registry.snapshot().count == 20)
        await runner.shutdown()
    }
}
