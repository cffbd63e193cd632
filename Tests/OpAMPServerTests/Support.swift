import Foundation
import NIOConcurrencyHelpers
import OpAMPProtocol

@testable import OpAMPServer

/// A clock tests move by hand.
final class TestClock: Sendable {
    private let now = NIOLockedValueBox(Date(timeIntervalSince1970: 1_800_000_000))
    var date: Date { self.now.withLockedValue { $0 } }
    func advance(_ seconds: TimeInterval) { self.now.withLockedValue { $0 += seconds } }
    var function: @Sendable () -> Date { { self.date } }
}

/// Collects events from a registry subscription as they arrive.
final class EventLog: Sendable {
    private let records = NIOLockedValueBox<[AgentEventRecord]>([])
    private let overflows = NIOLockedValueBox(0)
    init(_ registry: AgentRegistry, bufferLimit: Int = 100_000) {
        let subscription = registry.subscribe(bufferLimit: bufferLimit)
        Task { [self] in
            for await delivery in subscription {
                switch delivery {
                case .event(let record): self.records.withLockedValue { $0.append(record) }
                case .overflow: self.overflows.withLockedValue { $0 += 1 }
                }
            }
        }
    }
    var all: [AgentEvent] { self.records.withLockedValue { $0.map(\.event) } }
    var timed: [AgentEventRecord] { self.records.withLockedValue { $0 } }

    /// Waits (briefly) until a predicate holds over the events seen so far.
    func wait(timeout: TimeInterval = 5, until predicate: ([AgentEvent]) -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if predicate(self.all) { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return predicate(self.all)
    }
}

let collectorCapabilities: AgentCapabilities = [
    .reportsStatus, .acceptsRemoteConfig, .reportsEffectiveConfig, .reportsHealth, .reportsRemoteConfig,
    .reportsHeartbeat,
]

func uid(_ n: UInt64) -> InstanceUID { InstanceUID(high: 0x0190_0000_0000_7000, low: 0x8000_0000_0000_0000 | n) }

/// A full-state message such as a collector's first.
func fullState(
    _ id: InstanceUID,
    seq: UInt64 = 0,
    capabilities: AgentCapabilities = collectorCapabilities,
    name: String = "otelcol-sampler"
) -> OpAMP_AgentToServer {
    var message = OpAMP_AgentToServer()
    message.instanceUid = Data(id.bytes)
    message.sequenceNum = seq
    message.capabilities = capabilities.rawValue
    var attribute = OpAMP_KeyValue()
    attribute.key = "service.name"
    attribute.value.stringValue = name
    message.agentDescription.identifyingAttributes = [attribute]
    if capabilities.contains(.reportsHealth) { message.health.healthy = true }
    if capabilities.contains(.reportsEffectiveConfig) {
        var file = OpAMP_AgentConfigFile()
        file.body = Data("receivers: {}".utf8)
        message.effectiveConfig.configMap.configMap[""] = file
    }
    if capabilities.contains(.reportsRemoteConfig) { message.remoteConfigStatus.status = .unset }
    return message
}

/// A heartbeat: uid, sequence number and capabilities only.
func heartbeat(_ id: InstanceUID, seq: UInt64, capabilities: AgentCapabilities = collectorCapabilities)
    -> OpAMP_AgentToServer
{
    var message = OpAMP_AgentToServer()
    message.instanceUid = Data(id.bytes)
    message.sequenceNum = seq
    message.capabilities = capabilities.rawValue
    return message
}

func status(_ id: InstanceUID, seq: UInt64, hash: [UInt8], _ state: OpAMP_RemoteConfigStatuses, error: String = "")
    -> OpAMP_AgentToServer
{
    var message = heartbeat(id, seq: seq)
    message.remoteConfigStatus.lastRemoteConfigHash = Data(hash)
    message.remoteConfigStatus.status = state
    message.remoteConfigStatus.errorMessage = error
    return message
}

func config(_ text: String) -> RemoteConfig {
    RemoteConfig(
        files: ["": ConfigFile(body: Array(text.utf8), contentType: "text/yaml")],
        hash: Array(text.utf8.prefix(8)) + [UInt8(text.count)]
    )
}

extension OpAMP_ServerToAgent {
    var asksForFullState: Bool { self.flags & UInt64(OpAMP_ServerToAgentFlags.reportFullState.rawValue) != 0 }
}

/// A server on 127.0.0.1 with a free port and one event-loop thread.
func startTestServer(_ adjust: (inout OpAMPServerConfiguration) -> Void = { _ in }) async throws -> (OpAMPServer, Int) {
    var configuration = OpAMPServerConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = 0
    configuration.threads = 1
    adjust(&configuration)
    let server = OpAMPServer(configuration: configuration)
    let port = try await server.start()
    return (server, port)
}
