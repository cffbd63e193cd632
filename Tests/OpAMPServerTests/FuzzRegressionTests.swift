import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
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
            _ = try? channel.writeInbound(ByteBuffer(bytes: input[offset..<end]))
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
        let upgrade = Self.upgradeRequest()
        let quiet = try self.replay([0] + Array(upgrade.utf8), idle: 60)
        #expect(quiet.wasOpen)
        let (server, wasOpen) = try self.replay([0] + Array(upgrade.utf8), idle: 121)
        defer { Task { await server.stop() } }
        #expect(!wasOpen)
        #expect(server.openConnections.load(ordering: .relaxed) == 0)
        Task { await quiet.server.stop() }
    }

    /// fuzz-opamp-session: an agent connected over WebSocket, and a request over HTTP with its UID that asks
    /// for a new one. The agent was renamed while its socket stayed bound to the old UID, so the old UID had a
    /// socket and no agent, and the agent on the socket was shown offline.
    @Test func anHTTPCloneAskingForANewUIDLeavesTheWebSocketAgentAlone() throws {
        let registry = AgentRegistry(clock: TestClock().function)
        let ws = registry.newConnection()
        registry.attach(ws, pusher: { _ in true })
        _ = registry.handle(fullState(uid(83)), connection: ws, transport: .webSocket)
        let desired = config("sampling v1")
        registry.setDesiredConfig(desired, for: uid(83))
        var clone = heartbeat(uid(83), seq: 5)
        clone.flags = UInt64(OpAMP_AgentToServerFlags.requestInstanceUid.rawValue)
        let response = registry.handle(clone, connection: registry.newConnection(), transport: .http)
        let fresh = try #require(InstanceUID(wire: response.agentIdentification.newInstanceUid))
        #expect(fresh != uid(83))
        #expect(registry.agent(uid(83))?.connected == true)
        #expect(registry.agent(uid(83))?.transport == .webSocket)
        #expect(registry.agent(fresh)?.transport == .http)
        // The clone runs what the agent it was cloned from runs, and goes on under its new UID.
        #expect(registry.agent(fresh)?.desiredConfigHash == desired.hash)
        _ = registry.handle(heartbeat(fresh, seq: 6), connection: registry.newConnection(), transport: .http)
        #expect(registry.agent(fresh)?.connected == true)
        #expect(registry.consistencyProblem() == nil)
        // The agent on the socket goes on as before.
        _ = registry.handle(heartbeat(uid(83), seq: 1), connection: ws, transport: .webSocket)
        #expect(registry.agent(uid(83))?.connected == true)
        #expect(registry.consistencyProblem() == nil)
    }

    /// Review of the fix above: the same clone over a WebSocket of its own took the identity over (the owner's
    /// socket was closed and its agent, with its config, renamed to the clone's new UID).
    @Test func aWebSocketCloneAskingForANewUIDDoesNotTakeTheIdentityOver() throws {
        let registry = AgentRegistry(clock: TestClock().function)
        let owner = registry.newConnection()
        let closed = NIOLockedValueBox(false)
        registry.attach(owner, pusher: { _ in true }, closer: { closed.withLockedValue { $0 = true } })
        _ = registry.handle(fullState(uid(84)), connection: owner, transport: .webSocket)
        let desired = config("sampling v2")
        registry.setDesiredConfig(desired, for: uid(84))
        let newcomer = registry.newConnection()
        registry.attach(newcomer, pusher: { _ in true })
        var clone = fullState(uid(84))
        clone.flags = UInt64(OpAMP_AgentToServerFlags.requestInstanceUid.rawValue)
        let response = registry.handle(clone, connection: newcomer, transport: .webSocket)
        let fresh = try #require(InstanceUID(wire: response.agentIdentification.newInstanceUid))
        #expect(fresh != uid(84))
        #expect(!closed.withLockedValue { $0 })
        #expect(registry.agent(uid(84))?.connected == true)
        #expect(registry.agent(fresh)?.connected == true)
        #expect(registry.agent(fresh)?.desiredConfigHash == desired.hash)
        // Both sockets go on: the owner as before, the clone (still sending the old UID until it adopts the
        // new one) mapped to its own agent.
        _ = registry.handle(heartbeat(uid(84), seq: 1), connection: owner, transport: .webSocket)
        _ = registry.handle(heartbeat(uid(84), seq: 1), connection: newcomer, transport: .webSocket)
        #expect(registry.agent(uid(84))?.sequenceNum == 1)
        #expect(registry.consistencyProblem() == nil)
    }

    /// `hasBody` over the ways a request announces (or does not announce) a body.
    @Test(arguments: [
        ([("Content-Length", "5")], true), ([("Content-Length", "0")], false),
        ([("Transfer-Encoding", "chunked")], true),
        ([("Content-Length", " 0 ")], false), ([("Content-Length", "0"), ("Content-Length", "3")], true),
        ([(String, String)](), false),
    ])
    func whichRequestsHaveABody(headers: [(String, String)], expected: Bool) {
        #expect(OpAMPServer.hasBody(HTTPHeaders(headers)) == expected)
    }

    /// fuzz-opamp-transport under LeakSanitizer: an upgrade request with a body that never ends (chunked,
    /// here). NIO's upgrade handler waited for the end holding a closure over itself, so when the client left,
    /// the handler, its context and the pipeline were never freed: a few kilobytes per connection, for good.
    /// Upgrades with a body are now refused; the request gets an HTTP answer or the idle timeout.
    @Test func anUpgradeWithAnUnfinishedBodyIsFreedWhenTheClientLeaves() throws {
        let head = Self.upgradeRequest(bodyHeader: "Transfer-Encoding: chunked") + "5\r\nhel"
        let server = OpAMPServer(configuration: Self.embedded)
        defer { Task { await server.stop() } }
        weak var upgradeHandler: HTTPServerUpgradeHandler?
        do {
            let channel = try Self.connection(to: server)
            upgradeHandler = try channel.pipeline.syncOperations.handler(type: HTTPServerUpgradeHandler.self)
            #expect(upgradeHandler != nil)
            try channel.writeInbound(ByteBuffer(string: head))
            channel.embeddedEventLoop.run()
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)  // no 101
            _ = try? channel.finish(acceptAlreadyClosed: true)
            channel.embeddedEventLoop.run()
        }
        #expect(upgradeHandler == nil, "the upgrade handler outlived its connection")
        #expect(server.openConnections.load(ordering: .relaxed) == 0)
    }

    /// A WebSocket upgrade request for /v1/opamp, with one more header line if given.
    private static func upgradeRequest(bodyHeader: String? = nil) -> String {
        "GET /v1/opamp HTTP/1.1\r\nHost: policyd\r\n" + (bodyHeader.map { $0 + "\r\n" } ?? "")
            + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            + "Sec-WebSocket-Version: 13\r\n\r\n"
    }

    private static var embedded: OpAMPServerConfiguration {
        var configuration = OpAMPServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.threads = 1
        return configuration
    }

    /// A connection to `server` on an EmbeddedChannel, its pipeline set up as for an accepted socket.
    private static func connection(to server: OpAMPServer) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try server.initialize(channel, configuration: server.configuration).wait()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        return channel
    }

    /// The same request with its body complete is answered, not upgraded.
    @Test func anUpgradeRequestWithABodyGetsBadRequest() throws {
        let request = Self.upgradeRequest(bodyHeader: "Content-Length: 5") + "hello"
        let server = OpAMPServer(configuration: Self.embedded)
        defer { Task { await server.stop() } }
        let channel = try Self.connection(to: server)
        try channel.writeInbound(ByteBuffer(string: request))
        channel.embeddedEventLoop.run()
        var written = ""
        while let part = try channel.readOutbound(as: ByteBuffer.self) { written += String(buffer: part) }
        #expect(written.hasPrefix("HTTP/1.1 400"))
        #expect(written.contains("a WebSocket upgrade request has no body"))
        _ = try? channel.finish(acceptAlreadyClosed: true)
        // The control: the same request without its body is upgraded, so the refusal above is the body's.
        let bodiless = try Self.connection(to: server)
        try bodiless.writeInbound(
            ByteBuffer(string: Self.upgradeRequest())
        )
        bodiless.embeddedEventLoop.run()
        let answer = try bodiless.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } ?? ""
        #expect(answer.hasPrefix("HTTP/1.1 101"))
        _ = try? bodiless.finish(acceptAlreadyClosed: true)
    }
}
