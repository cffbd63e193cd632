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

    /// fuzz-opamp-transport: bytes a client sent (read 3 at a time), replayed into the server's pipeline on an
    /// EmbeddedChannel the way the fuzzer does. The connection closed but kept its slot.
    @Test func aClosedConnectionGivesItsSlotBack() throws {
        let input = Array(
            Data(
                base64Encoded:
                    "A0dFVCAvdjEvb3BhbXAgSFRUUC8xLjENCkhvc3Q6IHBvbGljeWQNClVwZ3JhZGU6IHdlYnNvY2tldA0KQ29ubiNlY3Rpb246IFVwZ3JhZJvyrsLC8vWzZWlvbjogVXBncmFkZQ0KU2VjLVdlYlNvY2tldC1LZXk6IGRHaGxJSE5oYlhCc1pTQnViMjVqWlE9PQ0KU2VjLVdlYlNvY2tldC1WZXJzaW9uOiAxMw0KDQoCijf6IT038DE8og2DA0dFVCAvdjEvb3BhbXAgSFRUUC8xLjENCkhvc3Q6IHBvbGljeWQNClVwZ3JhZGU6IHcW8C1OUohXVFSfD1NWl0QvJvAuUkOfTV5YlgxOVpdRUVKIKyE96VJYRYxxKYGA/gCsN/ohPQplIS8DrFmtnOBONxbwLU5SiFdUVJ8PU1aXRC8m8C5SQ59NXlj////KMy89/U4KU2VjLVdlYlNvY2tldC1LZXk6IGRHaGxJSE5oYlhCc1pTQnVIXlLUSFNEjkBTVJ8PVFPoJDc0Yg=="
            )!
        )
        var configuration = OpAMPServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.maxMessageSize = 64 * 1024
        configuration.threads = 1
        let server = OpAMPServer(configuration: configuration)
        defer { Task { await server.stop() } }
        let channel = EmbeddedChannel()
        try server.initialize(channel, configuration: configuration).wait()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        let step = Int(input[0] % 65)
        var offset = 1
        while offset < input.count, channel.isActive {
            let end = min(input.count, offset + step)
            try? channel.writeInbound(ByteBuffer(bytes: input[offset..<end]))
            channel.pipeline.fireChannelReadComplete()
            channel.embeddedEventLoop.run()
            offset = end
        }
        _ = try? channel.finish(acceptAlreadyClosed: true)
        channel.embeddedEventLoop.run()
        #expect(server.openConnections.load(ordering: .relaxed) == 0)
        #expect(server.registry.bookkeeping()["connections"] == 0)
    }
}
