import Foundation
import NIOCore
import NIOWebSocket
import OpAMPProtocol
import SwiftProtobuf
import Synchronization
import Testing

@testable import OpAMPServer

/// The server on a real socket on 127.0.0.1, with real HTTP and WebSocket clients.
@Suite(.serialized) struct TransportTests {
    static func server(_ adjust: (inout OpAMPServerConfiguration) -> Void = { _ in }) async throws -> (OpAMPServer, Int)
    {
        try await startTestServer(adjust)
    }

    static func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
        try Self.pipe(bytes, through: ["/bin/gzip", "-c"])
    }

    static func gunzip(_ bytes: [UInt8]) throws -> [UInt8] {
        try Self.pipe(bytes, through: ["/bin/gzip", "-dc"])
    }

    static func pipe(_ bytes: [UInt8], through command: [String]) throws -> [UInt8] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(bytes))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return [UInt8](data)
    }

    // MARK: Plain HTTP

    @Test func httpPollRoundTrip() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        let response = try await RawHTTPResponse.post(port: port, body: try fullState(uid(1)).serializedBytes())
        #expect(response.status == 200)
        #expect(response.headers["content-type"] == "application/x-protobuf")
        let message = try #require(response.serverMessage)
        #expect(message.instanceUid == Data(uid(1).bytes))
        #expect(message.capabilities & ServerCapabilities.acceptsStatus.rawValue != 0)
        #expect(server.registry.agent(uid(1))?.transport == .http)
        #expect(server.registry.agent(uid(1))?.description?.identifying["service.name"] == "otelcol-sampler")
    }

    @Test func gzipBothWays() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        let body = try Self.gzip(try fullState(uid(2)).serializedBytes())
        let response = try await RawHTTPResponse.post(
            port: port,
            body: body,
            headers: ["Content-Encoding": "gzip", "Accept-Encoding": "gzip"]
        )
        #expect(response.status == 200)
        #expect(response.headers["content-encoding"] == "gzip")
        let message = try OpAMP_ServerToAgent(serializedBytes: try Self.gunzip(response.body))
        #expect(message.instanceUid == Data(uid(2).bytes))
    }

    @Test func httpAgentsGetConfigOnTheNextPoll() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        _ = try await RawHTTPResponse.post(port: port, body: try fullState(uid(3)).serializedBytes())
        server.registry.setDesiredConfig(config("exporters: {}"), for: uid(3))
        let poll = try await RawHTTPResponse.post(port: port, body: try heartbeat(uid(3), seq: 1).serializedBytes())
        #expect(poll.serverMessage?.remoteConfig.configHash == Data(config("exporters: {}").hash))
        #expect(poll.serverMessage?.remoteConfig.config.configMap[""]?.body == Data("exporters: {}".utf8))
        #expect(poll.headers["content-length"] == String(poll.body.count))
        let applied = status(uid(3), seq: 2, hash: config("exporters: {}").hash, .applied)
        let ack = try await RawHTTPResponse.post(port: port, body: try applied.serializedBytes())
        #expect(ack.serverMessage?.hasRemoteConfig == false)
        #expect(server.registry.agent(uid(3))?.remoteConfigStatus?.state == .applied)
    }

    @Test(arguments: [
        ("text/plain", 400), ("application/json", 400), ("application/x-protobuf", 400),
    ])
    func badHTTPRequestsGetClearStatuses(contentType: String, expected: Int) async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        let response = try await RawHTTPResponse.post(
            port: port,
            body: [0xFF, 0x01, 0x02, 0x99],
            headers: ["Content-Type": contentType]
        )
        #expect(response.status == expected)
        if contentType == "application/x-protobuf" {
            #expect(response.serverMessage?.errorResponse.type == .badRequest)
        }
        // The server keeps serving.
        #expect(try await RawHTTPResponse.post(port: port, body: try fullState(uid(4)).serializedBytes()).status == 200)
    }

    @Test func wrongPathAndMethod() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        #expect(try await RawHTTPResponse.post(port: port, body: [], path: "/v1/other").status == 404)
        let get = try await RawHTTPResponse.exchange(
            port: port,
            request: Array("GET /v1/opamp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
        )
        #expect(get.status == 400)
    }

    @Test func oversizedAndCompressedBombsAreRefused() async throws {
        let (server, port) = try await Self.server { $0.maxMessageSize = 64 * 1024 }
        defer { Task { await server.stop() } }
        let big = [UInt8](repeating: 0x41, count: 200 * 1024)
        #expect(try await RawHTTPResponse.post(port: port, body: big).status == 413)
        // 10 MB of zeros gzip to ~10 KB: under the limit on the wire, far over it inflated.
        let bomb = try Self.gzip([UInt8](repeating: 0, count: 10 * 1024 * 1024))
        #expect(bomb.count < 64 * 1024)
        #expect(
            try await RawHTTPResponse.post(port: port, body: bomb, headers: ["Content-Encoding": "gzip"]).status == 413
        )
        #expect(try await RawHTTPResponse.post(port: port, body: try fullState(uid(5)).serializedBytes()).status == 200)
    }

    @Test func bearerTokensAreRequiredWhenConfigured() async throws {
        let (server, port) = try await Self.server { $0.agentTokens = ["s3cret"] }
        defer { Task { await server.stop() } }
        let body: [UInt8] = try fullState(uid(6)).serializedBytes()
        #expect(try await RawHTTPResponse.post(port: port, body: body).status == 401)
        #expect(
            try await RawHTTPResponse.post(port: port, body: body, headers: ["Authorization": "Bearer nope"]).status
                == 401
        )
        #expect(
            try await RawHTTPResponse.post(port: port, body: body, headers: ["Authorization": "Bearer s3cret"]).status
                == 200
        )
        let upgrade =
            "GET /v1/opamp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        let refused = try await RawHTTPResponse.exchange(port: port, request: Array(upgrade.utf8))
        #expect(refused.status == 401)
        #expect(refused.headers["www-authenticate"] == "Bearer")
        await #expect(throws: UpgradeRefused.self) { _ = try await TestWebSocketAgent.connect(port: port) }
        let agent = try await TestWebSocketAgent.connect(port: port, headers: ["Authorization": "Bearer s3cret"])
        try await agent.send(fullState(uid(7)))
        #expect(try await agent.receive().instanceUid == Data(uid(7).bytes))
        await agent.close()
    }

    @Test func overloadGets503WithRetryAfter() async throws {
        let (server, port) = try await Self.server { $0.maxConnections = 2 }
        defer { Task { await server.stop() } }
        let first = try await TestWebSocketAgent.connect(port: port)
        let second = try await TestWebSocketAgent.connect(port: port)
        try await Task.sleep(for: .milliseconds(50))
        let refused = try await RawHTTPResponse.post(port: port, body: try fullState(uid(8)).serializedBytes())
        #expect(refused.status == 503)
        #expect(refused.headers["retry-after"] == "30")
        await first.close()
        await second.close()
    }

    // MARK: WebSocket

    @Test func webSocketWithAndWithoutHeaderByte() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        let agent = try await TestWebSocketAgent.connect(port: port)
        try await agent.send(fullState(uid(10)))
        let frame = try #require(await agent.nextFrame())
        #expect(frame.opcode == .binary)
        #expect(frame.unmaskedData.readableBytesView.first == 0x00)
        let first = try WebSocketFraming.decodeServerMessage(Array(frame.unmaskedData.readableBytesView))
        #expect(first.capabilities != 0)
        try await agent.send(heartbeat(uid(10), seq: 1), withHeader: false)
        #expect(try await agent.receive().instanceUid == Data(uid(10).bytes))
        #expect(server.registry.agent(uid(10))?.transport == .webSocket)
        await agent.close()
        let deadline = Date().addingTimeInterval(5)
        while server.registry.agent(uid(10))?.connected == true, Date() < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(server.registry.agent(uid(10))?.connected == false)
    }

    @Test func configIsPushedAndStatusRecorded() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        let agent = try await TestWebSocketAgent.connect(port: port)
        try await agent.send(fullState(uid(11)))
        _ = try await agent.receive()
        let desired = config("processors: {tail_sampling: {}}")
        server.registry.setDesiredConfig(desired, for: uid(11))
        let push = try await agent.receive()
        #expect(push.remoteConfig.configHash == Data(desired.hash))
        #expect(push.remoteConfig.config.configMap[""]?.body == Data(desired.files[""]!.body))
        try await agent.send(status(uid(11), seq: 1, hash: desired.hash, .applying))
        _ = try await agent.receive()
        try await agent.send(status(uid(11), seq: 2, hash: desired.hash, .applied))
        let ack = try await agent.receive()
        #expect(!ack.hasRemoteConfig)
        #expect(
            server.registry.agent(uid(11))?.remoteConfigStatus
                == RemoteConfigReport(hash: desired.hash, state: .applied)
        )
        await agent.close()
    }

    @Test func reconnectWithMinimalMessageAndUIDChange() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        var agent = try await TestWebSocketAgent.connect(port: port)
        try await agent.send(fullState(uid(12), seq: 0))
        _ = try await agent.receive()
        await agent.close()
        // Reconnect (same process): only uid, continuing seq, capabilities.
        agent = try await TestWebSocketAgent.connect(port: port)
        try await agent.send(heartbeat(uid(12), seq: 1))
        let response = try await agent.receive()
        #expect(!response.asksForFullState)
        // Ask for a new identity, then use it.
        var request = heartbeat(uid(12), seq: 2)
        request.flags = UInt64(OpAMP_AgentToServerFlags.requestInstanceUid.rawValue)
        try await agent.send(request)
        let assigned = try #require(InstanceUID(bytes: try await agent.receive().agentIdentification.newInstanceUid))
        try await agent.send(heartbeat(assigned, seq: 3))
        let next = try await agent.receive()
        #expect(next.instanceUid == Data(assigned.bytes))
        #expect(!next.asksForFullState)
        #expect(server.registry.agent(assigned)?.connected == true)
        #expect(server.registry.agent(uid(12)) == nil)
        await agent.close()
    }

    @Test func malformedFramesGetBadRequestAndTheConnectionStaysOpen() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        let agent = try await TestWebSocketAgent.connect(port: port)
        let healthy = try await TestWebSocketAgent.connect(port: port)
        var generator = SystemRandomNumberGenerator()
        var truncated: [UInt8] = try fullState(uid(13)).serializedBytes()
        truncated.removeLast(5)
        var shortUID = fullState(uid(13))
        shortUID.instanceUid = Data([1, 2, 3])
        let inputs: [[UInt8]] = [
            (0..<64).map { _ in UInt8.random(in: 0...255, using: &generator) },
            [0x00] + truncated,
            [0x00] + (try shortUID.serializedBytes()),
            [0x00, 0xFF, 0xFF, 0xFF],
        ]
        for input in inputs {
            try await agent.sendRaw(input)
            let response = try await agent.receive()
            #expect(response.errorResponse.type == .badRequest)
        }
        // Text frames are ignored.
        try await agent.sendRaw(Array("hello".utf8), opcode: .text)
        // A 26-byte ULID is accepted.
        var ulid = fullState(uid(13))
        ulid.instanceUid = Data("01ARZ3NDEKTSV4RRFFQ69G5FAV".utf8)
        try await agent.send(ulid)
        let accepted = try await agent.receive()
        #expect(!accepted.hasErrorResponse)
        #expect(accepted.instanceUid == Data("01ARZ3NDEKTSV4RRFFQ69G5FAV".utf8))
        // Everyone else is unaffected.
        try await healthy.send(fullState(uid(14)))
        #expect(try await healthy.receive().instanceUid == Data(uid(14).bytes))
        await agent.close()
        await healthy.close()
    }

    @Test func oversizedFramesCloseWith1009() async throws {
        let (server, port) = try await Self.server { $0.maxMessageSize = 16 * 1024 }
        defer { Task { await server.stop() } }
        let agent = try await TestWebSocketAgent.connect(port: port)
        try await agent.sendRaw([0x00] + [UInt8](repeating: 0x0A, count: 64 * 1024))
        var closeCode: WebSocketErrorCode?
        while let frame = await agent.nextFrame() {
            if frame.opcode == .connectionClose {
                var data = frame.unmaskedData
                closeCode = data.readWebSocketErrorCode()
                break
            }
        }
        #expect(closeCode == .messageTooLarge)
        let other = try await TestWebSocketAgent.connect(port: port)
        try await other.send(fullState(uid(15)))
        #expect(try await other.receive().instanceUid == Data(uid(15).bytes))
        await other.close()
    }

    @Test func aThousandLiveAgentsWithOneUIDGetDistinctIdentities() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        var agents: [TestWebSocketAgent] = []
        var assigned = Set<InstanceUID>()
        // Cloned machines with one hard-coded UID, each talking as a collector does.
        for index in 0..<1000 {
            let agent = try await TestWebSocketAgent.connect(port: port)
            // Each clone has its own message history, so its own sequence number.
            let sequence = UInt64(100 + 7 * index)
            try await agent.send(fullState(uid(16), seq: sequence))
            let response = try await agent.receive()
            if index < 2 {
                // The first; then the second takes the identity over (it could be the first, reconnecting).
                #expect(!response.hasAgentIdentification)
                try await agent.send(heartbeat(uid(16), seq: sequence + 1))
                _ = try await agent.receive()
            } else if let fresh = InstanceUID(bytes: response.agentIdentification.newInstanceUid) {
                assigned.insert(fresh)
            }
            agents.append(agent)
        }
        // The first was closed when the second took over; reconnecting, it proves two were alive at once.
        let deadline = Date().addingTimeInterval(5)
        while !agents[0].inbox.isClosed, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(agents[0].inbox.isClosed)
        let again = try await TestWebSocketAgent.connect(port: port)
        try await again.send(fullState(uid(16), seq: 101))
        if let fresh = InstanceUID(bytes: try await again.receive().agentIdentification.newInstanceUid) {
            assigned.insert(fresh)
        }
        #expect(assigned.count == 999)
        #expect(!assigned.contains(uid(16)))
        #expect(server.registry.connectedCount == 1000)
        for agent in agents.dropFirst() + [again] { await agent.close() }
    }

    /// Configs larger than a socket holds, pushed one after another (a load balancer's ring, then two ring
    /// changes): an agent that reads late stays connected and gets the first and the latest, the one between
    /// replaced while it waited; an agent that takes nothing is closed after `stalledWriteSeconds`.
    @Test func configsWaitingForASlowReaderAreReplacedByNewerOnes() async throws {
        let (server, port) = try await Self.server { $0.stalledWriteSeconds = 2 }
        defer { Task { await server.stop() } }
        let large = Self.largeConfig
        let slow = try await TestWebSocketAgent.connect(port: port, receiveBuffer: Self.slowReceiveBuffer)
        try await slow.send(fullState(uid(19)))
        _ = try await slow.receive()
        try await slow.channel.setOption(.autoRead, value: false).get()
        for n in 1...3 { server.registry.setDesiredConfig(large(n), for: uid(19)) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(server.registry.agent(uid(19))?.connected == true)
        try await slow.channel.setOption(.autoRead, value: true).get()
        var received: [Data] = []
        while received.last != Data(large(3).hash) {
            received.append(try await slow.receive(timeout: .seconds(20)).remoteConfig.configHash)
        }
        #expect(received == [Data(large(1).hash), Data(large(3).hash)], "the second, replaced, never goes out")
        try await slow.send(heartbeat(uid(19), seq: 1))
        _ = try await slow.receive()
        #expect(server.registry.agent(uid(19))?.connected == true)

        // Again with the agent's own messages in between (each answered): the waiting config is still replaced,
        // wherever it waits, so a slow reader never holds more than one.
        try await slow.channel.setOption(.autoRead, value: false).get()
        server.registry.setDesiredConfig(large(4), for: uid(19))
        server.registry.setDesiredConfig(large(5), for: uid(19))
        for seq in 2...4 { try await slow.send(heartbeat(uid(19), seq: UInt64(seq))) }
        server.registry.setDesiredConfig(large(6), for: uid(19))
        try await Task.sleep(for: .milliseconds(300))
        try await slow.channel.setOption(.autoRead, value: true).get()
        var configs: [Data] = []
        var others = 0
        while configs.last != Data(large(6).hash) {
            let message = try await slow.receive(timeout: .seconds(20))
            if message.hasRemoteConfig { configs.append(message.remoteConfig.configHash) } else { others += 1 }
        }
        #expect(configs.first == Data(large(4).hash))
        #expect(!configs.contains(Data(large(5).hash)), "replaced while waiting behind responses")
        #expect(others <= 3)

        let stuck = try await TestWebSocketAgent.connect(port: port, receiveBuffer: Self.slowReceiveBuffer)
        try await stuck.send(fullState(uid(20)))
        _ = try await stuck.receive()
        try await stuck.channel.setOption(.autoRead, value: false).get()
        server.registry.setDesiredConfig(large(1), for: uid(20))
        var closed = false
        for _ in 0..<100 where !closed {
            closed = server.registry.agent(uid(20))?.connected == false
            if !closed { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(closed, "an agent that takes nothing for 2 s is closed")
        #expect(server.registry.agent(uid(19))?.connected == true, "the slow reader is not")
        await stuck.close()
        await slow.close()
    }

    /// Configs waiting for slow readers share one budget across the server: past it, an agent that would make
    /// one wait is closed (it reconnects and gets the latest config), and the budget is given back.
    @Test func waitingConfigsShareOneBudget() async throws {
        let (server, agents) = try await Self.slowReaders(2, from: 30)
        defer { Task { await server.stop() } }
        let large = Self.largeConfig
        func connected(_ n: Int) -> Bool { server.registry.agent(uid(UInt64(30 + n)))?.connected == true }
        func settle() async throws { try await Task.sleep(for: .milliseconds(500)) }
        // Each is sent one config; the first makes a second one wait (8 MiB of the 12 allowed).
        for n in 0..<2 { server.registry.setDesiredConfig(large(1), for: uid(UInt64(30 + n))) }
        server.registry.setDesiredConfig(large(2), for: uid(30))
        try await settle()
        #expect(connected(0) && connected(1))
        #expect(server.waitingConfigs.bytes > 8 << 20)
        // A newer config replaces the waiting one within the budget; the other agent's would pass it.
        server.registry.setDesiredConfig(large(3), for: uid(30))
        server.registry.setDesiredConfig(large(2), for: uid(31))
        var closed = false
        for _ in 0..<100 where !closed {
            closed = !connected(1)
            if !closed { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(closed, "past the budget")
        #expect(connected(0))
        await agents[0].close()
        var released = false
        for _ in 0..<100 where !released {
            released = server.waitingConfigs.bytes == 0
            if !released { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(released, "a closed connection gives its waiting config back")
        await agents[1].close()
    }

    /// A ring change waiting for many slow load balancers is held once: within a budget smaller than two copies,
    /// every one stays connected and gets the whole config, byte for byte.
    @Test func aConfigWaitingForManyAgentsIsHeldOnce() async throws {
        let (server, agents) = try await Self.slowReaders(4, from: 40)
        defer { Task { await server.stop() } }
        let large = Self.largeConfig
        // Each is sent the first config (in flight: its socket fills), then the ring change waits for all four.
        for n in 1...2 {
            let configs: [InstanceUID: RemoteConfig?] = Dictionary(
                uniqueKeysWithValues: (0..<4).map { (uid(UInt64(40 + $0)), large(n)) }
            )
            server.registry.setDesiredConfig(configs)
        }
        let size = try SharedConfigs().encode(
            OpAMP_ServerToAgent.with { $0.remoteConfig = ProtobufConversion.remoteConfig(large(2)) }
        ).count
        var held = 0
        for _ in 0..<100 where held < size {
            try await Task.sleep(for: .milliseconds(50))
            held = server.waitingConfigs.bytes
        }
        try await Task.sleep(for: .milliseconds(200))
        held = server.waitingConfigs.bytes
        #expect(held >= size && held < size + 4096, "four agents wait for one copy (\(held) bytes)")
        for n in 0..<4 { #expect(server.registry.agent(uid(UInt64(40 + n)))?.connected == true) }
        for agent in agents {
            try await agent.channel.setOption(.autoRead, value: true).get()
            for n in 1...2 {
                let message = try await agent.receive(timeout: .seconds(20))
                #expect(message.remoteConfig.configHash == Data(large(n).hash))
                #expect(message.remoteConfig.config.configMap[""]?.body == Data(large(n).files[""]!.body))
            }
        }
        #expect(server.waitingConfigs.bytes == 0)
        for agent in agents { await agent.close() }
    }

    /// A server whose waiting configs may hold 12 MiB, and `count` agents (UIDs from `first`) that connected,
    /// were answered and then stopped reading.
    static func slowReaders(_ count: Int, from first: UInt64) async throws -> (OpAMPServer, [TestWebSocketAgent]) {
        let (server, port) = try await Self.server {
            $0.maxWaitingConfigBytes = 12 << 20
            $0.stalledWriteSeconds = 30
        }
        var agents: [TestWebSocketAgent] = []
        for n in 0..<count {
            let agent = try await TestWebSocketAgent.connect(port: port, receiveBuffer: Self.slowReceiveBuffer)
            try await agent.send(fullState(uid(first + UInt64(n))))
            _ = try await agent.receive()
            try await agent.channel.setOption(.autoRead, value: false).get()
            agents.append(agent)
        }
        return (server, agents)
    }

    /// The receive buffer of agents that stop reading: with the server's send buffer (4 MiB at most here), less
    /// than one large config, so a config being written stays in flight.
    static let slowReceiveBuffer = 256 << 10

    /// A config of 8 MiB (a ring far larger than any real one), more than the kernel holds for a socket whose
    /// reader does not read (about 4 MiB here), told apart by `n`.
    static func largeConfig(_ n: Int) -> RemoteConfig {
        RemoteConfig(
            files: ["": ConfigFile(body: Array("# push \(n)\n\(Self.ring)".utf8), contentType: "text/yaml")],
            hash: Array("push \(n)".utf8)
        )
    }
    static let ring = String(repeating: "- sampler-00000:4317\n", count: (8 << 20) / 21)

    @Test func aClientThatNeverReadsOnlyHurtsItself() async throws {
        let (server, port) = try await Self.server()
        defer { Task { await server.stop() } }
        let healthy = try await TestWebSocketAgent.connect(port: port)
        // It speaks first: a WebSocket silent for the idle timeout is closed, and the flood below can take
        // minutes under ThreadSanitizer.
        try await healthy.send(fullState(uid(18)))
        #expect(try await healthy.receive().instanceUid == Data(uid(18).bytes))
        // A raw socket that upgrades and then floods messages without ever reading.
        let greedy = try await TestWebSocketAgent.connect(port: port)
        try await greedy.channel.setOption(.autoRead, value: false).get()
        var big = fullState(uid(17))
        big.agentDescription.nonIdentifyingAttributes = (0..<200).map { index in
            var pair = OpAMP_KeyValue()
            pair.key = "k\(index)"
            pair.value.stringValue = String(repeating: "x", count: 100)
            return pair
        }
        for seq in 0..<3000 {
            big.sequenceNum = UInt64(seq)
            if (try? await greedy.send(big)) == nil { break }
        }
        try await healthy.send(heartbeat(uid(18), seq: 1))
        #expect(try await healthy.receive().instanceUid == Data(uid(18).bytes))
        await greedy.close()
        await healthy.close()
    }
}
