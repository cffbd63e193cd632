import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import OpAMPProtocol
import SwiftProtobuf

@testable import OpAMPServer

let testGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2)

struct TimedOut: Error {}

/// A raw HTTP/1.1 exchange over a real socket: sends the bytes, reads until the server closes.
struct RawHTTPResponse {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]

    static func exchange(port: Int, request: [UInt8]) async throws -> RawHTTPResponse {
        let collected = NIOLockedValueBox<[UInt8]>([])
        let done = testGroup.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: testGroup)
            .channelInitializer { channel in
                channel.pipeline.addHandler(CollectingHandler(collected: collected, done: done))
            }
            .connect(host: "127.0.0.1", port: port).get()
        var buffer = channel.allocator.buffer(capacity: request.count)
        buffer.writeBytes(request)
        try await channel.writeAndFlush(buffer)
        try await done.futureResult.get()
        return Self.parse(collected.withLockedValue { $0 })
    }

    static func parse(_ bytes: [UInt8]) -> RawHTTPResponse {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else {
            return RawHTTPResponse(status: 0, headers: [:], body: [])
        }
        let head = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let status = Int(head.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        var body = Array(bytes[(end + 4)...])
        if let length = headers["content-length"].flatMap(Int.init), body.count > length {
            body = Array(body.prefix(length))
        }
        return RawHTTPResponse(status: status, headers: headers, body: body)
    }

    static func post(port: Int, body: [UInt8], headers: [String: String] = [:], path: String = "/v1/opamp") async throws
        -> RawHTTPResponse
    {
        var text = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: \(body.count)\r\n"
        var all = headers
        if all["Content-Type"] == nil { all["Content-Type"] = "application/x-protobuf" }
        for (name, value) in all.sorted(by: { $0.key < $1.key }) { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        return try await self.exchange(port: port, request: Array(text.utf8) + body)
    }

    var serverMessage: OpAMP_ServerToAgent? { try? OpAMP_ServerToAgent(serializedBytes: self.body) }
}

private final class CollectingHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let collected: NIOLockedValueBox<[UInt8]>
    let done: EventLoopPromise<Void>

    init(collected: NIOLockedValueBox<[UInt8]>, done: EventLoopPromise<Void>) {
        self.collected = collected
        self.done = done
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        self.collected.withLockedValue { $0 += buffer.readableBytesView }
    }

    func channelInactive(context: ChannelHandlerContext) { self.done.succeed() }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.done.succeed()
        context.close(promise: nil)
    }
}

/// Frames received on a test connection, and whether it ended.
final class FrameInbox: Sendable {
    private let state = NIOLockedValueBox<(frames: [WebSocketFrame], closed: Bool)>(([], false))
    func append(_ frame: WebSocketFrame) { self.state.withLockedValue { $0.frames.append(frame) } }
    func close() { self.state.withLockedValue { $0.closed = true } }
    var isClosed: Bool { self.state.withLockedValue { $0.closed } }

    /// The next frame, or `nil` after the timeout or once closed with nothing left.
    func next(timeout: Duration) async -> WebSocketFrame? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let (frame, closed) = self.state.withLockedValue { state -> (WebSocketFrame?, Bool) in
                state.frames.isEmpty ? (nil, state.closed) : (state.frames.removeFirst(), false)
            }
            if let frame { return frame }
            if closed { return nil }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return nil
    }
}

/// A Swift OpAMP agent over a real WebSocket, as the fleet simulator and interop tests use it.
final class TestWebSocketAgent: Sendable {
    let channel: any Channel
    let inbox: FrameInbox

    private init(channel: any Channel, inbox: FrameInbox) {
        self.channel = channel
        self.inbox = inbox
    }

    /// Connects; `receiveBuffer` fixes the socket's receive buffer (the kernel otherwise grows it, up to 32 MiB
    /// here, once the agent reads fast: a test of a reader that stops reading needs to know what the kernel
    /// takes for it).
    static func connect(
        port: Int,
        path: String = "/v1/opamp",
        headers: [String: String] = [:],
        receiveBuffer: Int? = nil
    ) async throws -> TestWebSocketAgent {
        let inbox = FrameInbox()
        let upgraded = testGroup.next().makePromise(of: Void.self)
        var bootstrap = ClientBootstrap(group: testGroup)
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
        }
        let channel =
            try await bootstrap
            .channelInitializer { channel in
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 26) { channel, _ in
                    channel.pipeline.removeHandler(name: "upgrade-requester")
                        .flatMap { channel.pipeline.addHandler(FrameCollector(inbox: inbox)) }
                        .map { upgraded.succeed() }
                }
                let request = UpgradeRequester(path: path, headers: headers, failed: upgraded)
                return channel.pipeline.addHTTPClientHandlers(
                    withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                ).flatMap { channel.pipeline.addHandler(request, name: "upgrade-requester") }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await upgraded.futureResult.get()
        return TestWebSocketAgent(channel: channel, inbox: inbox)
    }

    func send(_ message: OpAMP_AgentToServer, withHeader: Bool = true) async throws {
        let body: [UInt8] = try message.serializedBytes()
        try await self.sendRaw(withHeader ? [0] + body : body)
    }

    func sendRaw(_ bytes: [UInt8], opcode: WebSocketOpcode = .binary) async throws {
        var buffer = self.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        let frame = WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: buffer)
        try await self.channel.writeAndFlush(frame)
    }

    /// The next frame from the server, or `nil` after the timeout or when the connection ended.
    func nextFrame(timeout: Duration = .seconds(5)) async -> WebSocketFrame? {
        await self.inbox.next(timeout: timeout)
    }

    /// The next server message.
    func receive(timeout: Duration = .seconds(5)) async throws -> OpAMP_ServerToAgent {
        while let frame = await self.nextFrame(timeout: timeout) {
            guard frame.opcode == .binary else { continue }
            return try WebSocketFraming.decodeServerMessage(Array(frame.unmaskedData.readableBytesView))
        }
        throw TimedOut()
    }

    func close() async {
        try? await self.channel.close()
    }
}

private final class FrameCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = WebSocketFrame
    let inbox: FrameInbox
    init(inbox: FrameInbox) { self.inbox = inbox }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { self.inbox.append(self.unwrapInboundIn(data)) }
    func channelInactive(context: ChannelHandlerContext) { self.inbox.close() }
}

/// Sends the upgrade request once connected; fails the promise when the server answers without upgrading.
private final class UpgradeRequester: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let path: String
    let headers: [String: String]
    let failed: EventLoopPromise<Void>

    init(path: String, headers: [String: String], failed: EventLoopPromise<Void>) {
        self.path = path
        self.headers = headers
        self.failed = failed
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders([("Host", "127.0.0.1"), ("Content-Length", "0")])
        for (name, value) in self.headers { headers.add(name: name, value: value) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: self.path, headers: headers)
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = self.unwrapInboundIn(data) {
            self.failed.fail(UpgradeRefused(status: Int(head.status.code)))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failed.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failed.fail(UpgradeRefused(status: 0))
        context.fireChannelInactive()
    }
}

struct UpgradeRefused: Error, Equatable {
    var status: Int
}
