import Foundation
import NIOCore
import NIOEmbedded
import OpAMPProtocol
import Synchronization
import Testing

@testable import OpAMPServer

/// Inputs the fuzzers (Fuzz/, docs/fuzzing.md) found, replayed: each failed before its fix.
@Suite struct OpAMPFuzzRegressionTests {
    /// fuzz-opamp-session: a WebSocket that spoke for one agent starts speaking for another. The first agent
    /// stayed "connected" with no connection behind it until the sweep noticed, minutes later.
    @Test func aWebSocketThatSpeaksForAnotherAgentDisconnectsTheFirst() {
        let registry = AgentRegistry(clock: TestClock().function)
        let ws = registry.newConnection()
        registry.attach(ws, pusher: { _ in true })
        _ = registry.handle(fullState(uid(80)), connection: ws, transport: .webSocket)
        _ = registry.handle(fullState(uid(81)), connection: ws, transport: .webSocket)
        #expect(registry.agent(uid(80))?.connected == false)
        #expect(registry.agent(uid(81))?.connected == true)
        // Back to the first, then the agent says goodbye and the socket closes: nobody is left connected.
        var bye = heartbeat(uid(80), seq: 1)
        bye.agentDisconnect = OpAMP_AgentDisconnect()
        _ = registry.handle(bye, connection: ws, transport: .webSocket)
        registry.connectionClosed(ws, reason: "closed")
        #expect(registry.snapshot().allSatisfy { !$0.connected })
        #expect(registry.bookkeeping()["bindings"] == 0 && registry.bookkeeping()["owners"] == 0)
    }

    /// Review of the session fuzzer: an agent connected over WebSocket that says goodbye over plain HTTP was
    /// shown offline while its socket kept talking, and stayed offline.
    @Test func aGoodbyeOverHTTPReleasesTheAgentsWebSocket() {
        let registry = AgentRegistry(clock: TestClock().function)
        let ws = registry.newConnection()
        registry.attach(ws, pusher: { _ in true })
        _ = registry.handle(fullState(uid(82)), connection: ws, transport: .webSocket)
        var bye = heartbeat(uid(82), seq: 1)
        bye.agentDisconnect = OpAMP_AgentDisconnect()
        _ = registry.handle(bye, connection: registry.newConnection(), transport: .http)
        #expect(registry.agent(uid(82))?.connected == false)
        #expect(registry.consistencyProblem() == nil)
        _ = registry.handle(heartbeat(uid(82), seq: 2), connection: ws, transport: .webSocket)
        #expect(registry.agent(uid(82))?.connected == true)
        #expect(registry.consistencyProblem() == nil)
    }

    /// Replays client bytes into the server's pipeline on an EmbeddedChannel the way fuzz-opamp-transport does
    /// (byte 0: the read size, 0 for everything at once), then lets `idle` of the loop's time pass and closes.
    private func replay(_ input: [UInt8], idle: Int64 = 0) throws -> (server: OpAMPServer, wasOpen: Bool) {
        var configuration = OpAMPServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.maxMessageSize = 64 * 1024
        configuration.threads = 1
        let server = OpAMPServer(configuration: configuration)
        let channel = EmbeddedChannel()
        try server.initialize(channel, configuration: configuration).wait()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        let step = input[0] % 65 == 0 ? input.count : Int(input[0] % 65)
        var offset = 1
        while offset < input.count, channel.isActive {
            let end = min(input.count, offset + step)
            try? channel.writeInbound(ByteBuffer(bytes: input[offset..<end]))
            channel.pipeline.fireChannelReadComplete()
            channel.embeddedEventLoop.run()
            offset = end
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(idle))
        let wasOpen = channel.isActive
        _ = try? channel.finish(acceptAlreadyClosed: true)
        channel.embeddedEventLoop.run()
        return (server, wasOpen)
    }

    /// fuzz-opamp-transport: the bytes (read 3 at a time) break the HTTP parser behind an upgrade request, so
    /// the upgrade completes on a closed channel. The WebSocket handler took a slot and a registry entry that
    /// were never given back; enough of those and every agent gets 503.
    @Test func aClosedConnectionGivesItsSlotBack() throws {
        let input = Array(
            Data(
                base64Encoded:
                    "A0dFVCAvdjEvb3BhbXAgSFRUUC8xLjENCkhvc3Q6IHBvbGljeWQNClVwZ3JhZGU6IHdlYnNvY2tldA0KQ29ubiNlY3Rpb246IFVwZ3JhZJvyrsLC8vWzZWlvbjogVXBncmFkZQ0KU2VjLVdlYlNvY2tldC1LZXk6IGRHaGxJSE5oYlhCc1pTQnViMjVqWlE9PQ0KU2VjLVdlYlNvY2tldC1WZXJzaW9uOiAxMw0KDQoCijf6IT038DE8og2DA0dFVCAvdjEvb3BhbXAgSFRUUC8xLjENCkhvc3Q6IHBvbGljeWQNClVwZ3JhZGU6IHcW8C1OUohXVFSfD1NWl0QvJvAuUkOfTV5YlgxOVpdRUVKIKyE96VJYRYxxKYGA/gCsN/ohPQplIS8DrFmtnOBONxbwLU5SiFdUVJ8PU1aXRC8m8C5SQ59NXlj////KMy89/U4KU2VjLVdlYlNvY2tldC1LZXk6IGRHaGxJSE5oYlhCc1pTQnVIXlLUSFNEjkBTVJ8PVFPoJDc0Yg=="
            )!
        )
        let (server, _) = try self.replay(input)
        defer { Task { await server.stop() } }
        #expect(server.openConnections.load(ordering: .relaxed) == 0)
        #expect(server.registry.bookkeeping()["connections"] == 0)
    }

    /// Review of the transport fuzzer: a WebSocket that upgrades and never sends a message held its slot for as
    /// long as the client liked (the idle timer goes with the HTTP handlers, and the sweep sees only agents).
    @Test func aWebSocketThatNeverSpeaksIsClosedAfterTheIdleTimeout() throws {
        let upgrade =
            "GET /v1/opamp HTTP/1.1\r\nHost: policyd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        let quiet = try self.replay([0] + Array(upgrade.utf8), idle: 60)
        #expect(quiet.wasOpen)
        let (server, wasOpen) = try self.replay([0] + Array(upgrade.utf8), idle: 121)
        defer { Task { await server.stop() } }
        #expect(!wasOpen)
        #expect(server.openConnections.load(ordering: .relaxed) == 0)
        Task { await quiet.server.stop() }
    }
}
