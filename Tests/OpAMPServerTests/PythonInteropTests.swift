import Foundation
import OpAMPProtocol
import Testing

@testable import OpAMPServer

/// The real Python `opentelemetry-opamp-client` (Tests/Interop/requirements.txt) against our server on
/// 127.0.0.1 over plain HTTP: it must connect, receive a JSON remote config, apply it and report APPLIED.
@Suite(.serialized) struct PythonInteropTests {
    static let script = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Interop/python_agent.py")

    static func pythonClientInstalled() -> Bool {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import opentelemetry._opamp.agent"]
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return false }
        probe.waitUntilExit()
        return probe.terminationStatus == 0
    }

    @Test func pythonClientReceivesJSONConfigAndReportsApplied() async throws {
        try #require(
            Self.pythonClientInstalled(),
            "the Python OpAMP client is missing: pip install -r Tests/Interop/requirements.txt (.ci/run does)"
        )
        let (server, port) = try await startTestServer { $0.agentTokens = ["interop-token"] }
        defer { Task { await server.stop() } }
        let registry = server.registry

        // The Python client accepts remote config only as JSON.
        let body = Array(#"{"sampling": {"percentage": 25}}"#.utf8)
        let desired = RemoteConfig(
            files: ["sampling.json": ConfigFile(body: body, contentType: "application/json")],
            hash: Array("hash-of-v1".utf8)
        )
        let subscription = registry.subscribe()
        let watcher = Task {
            for await delivery in subscription {
                if case .event(let record) = delivery,
                    case .descriptionChanged(let uid, let description) = record.event,
                    description.identifying["service.name"] == "python-interop"
                {
                    registry.setDesiredConfig(desired, for: uid)
                }
            }
        }
        defer {
            watcher.cancel()
            subscription.cancel()
        }

        let applied = FileManager.default.temporaryDirectory.appendingPathComponent("applied-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: applied) }
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        python.arguments = [
            "python3", Self.script.path, "--endpoint", "http://127.0.0.1:\(port)/v1/opamp", "--applied", applied.path,
            "--seconds", "6", "--token", "interop-token",
        ]
        try python.run()

        var agent: AgentSnapshot?
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            agent = registry.snapshot().first { $0.description?.identifying["service.name"] == "python-interop" }
            if agent?.remoteConfigStatus?.state == .applied { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let recorded = try #require(agent, "the Python agent never connected")
        #expect(recorded.remoteConfigStatus == RemoteConfigReport(hash: desired.hash, state: .applied))
        #expect(recorded.transport == .http)
        #expect(
            recorded.capabilities == [
                .reportsStatus, .acceptsRemoteConfig, .reportsEffectiveConfig, .reportsRemoteConfig, .reportsHeartbeat,
            ]
        )
        #expect(recorded.description?.nonIdentifying["host.name"] == "interop-host")
        #expect(recorded.effectiveConfig?[""]?.contentType == "application/json")
        // What the agent applied is what the server sent.
        let appliedText = try String(contentsOf: applied, encoding: .utf8)
        #expect(appliedText == #"{"sampling.json": {"sampling": {"percentage": 25}}}"#)

        // On exit it says goodbye, and the server marks it offline.
        python.waitUntilExit()
        #expect(python.terminationStatus == 0)
        let offline = Date().addingTimeInterval(5)
        while registry.agent(recorded.instanceUID)?.connected == true, Date() < offline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(registry.agent(recorded.instanceUID)?.connected == false)
    }
}
