// libFuzzer target: bytes from a client -> the OpAMP server's NIO pipeline (TLS aside) on an EmbeddedChannel:
// HTTP/1.1 parsing, gzip request bodies, the WebSocket upgrade, frames (fragmented, masked, control), the
// 0x00 header, size limits, and the agent registry behind them.
// Built by scripts/fuzz.sh (a package target only with TAILPLANE_FUZZ=1, never in a normal build).
//
// The first input byte sets how the rest is cut into reads (1 to 64 bytes, or all at once for 0), so the
// parsers see requests and frames split everywhere, and whether the server is at its connection limit.
// Messages are limited to 1 KiB, so the size limits are in reach. Beyond "no crash", it checks:
// - whatever the server writes starts as an HTTP/1.1 response;
// - the channel ends closed or still serving: on the idle timeout's event, a connection that never upgraded
//   is closed, and so is a WebSocket that never sent a message (nothing waits forever on a quiet client);
// - once the connection has closed, it holds no connection slot and no agent stays connected over it, and
//   the registry's connection bookkeeping is empty.
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import OpAMPProtocol
import Synchronization

@testable import OpAMPServer

/// `precondition` that keeps its message in optimized builds (the fuzzers are built with -O).
private func require(_ condition: Bool, _ message: @autoclosure () -> String = "") {
    if !condition { fatalError(message()) }
}

private func configuration(maxConnections: Int) -> OpAMPServerConfiguration {
    var configuration = OpAMPServerConfiguration()
    configuration.host = "127.0.0.1"
    // Small, so inputs of a few kilobytes reach the size limits (plain, gzip-inflated and WebSocket).
    configuration.maxMessageSize = 1024
    configuration.maxConnections = maxConnections
    configuration.httpIdleTimeout = 120
    configuration.threads = 1
    configuration.advertisedEndpoint = "ws://127.0.0.1:4320/v1/opamp"
    return configuration
}

/// One server as usual, and one at its connection limit (every request gets 503).
private let servers = [
    OpAMPServer(configuration: configuration(maxConnections: 20_000)),
    OpAMPServer(configuration: configuration(maxConnections: 0)),
]
private let debug = ProcessInfo.processInfo.environment["FUZZ_DEBUG"] != nil
private let peer = try! SocketAddress(ipAddress: "127.0.0.1", port: 40000)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOpAMPTransport(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    // Byte 0: the top bit picks the server, the rest the read size (0: everything in one read).
    let server = servers[Int(input[0] >> 7)]
    let configuration = server.configuration
    let step = (input[0] & 0x7F) % 65 == 0 ? size : Int((input[0] & 0x7F) % 65)
    let channel = EmbeddedChannel()
    let loop = channel.embeddedEventLoop
    do {
        try server.initialize(channel, configuration: configuration).wait()
        try channel.connect(to: peer).wait()
    } catch {
        fatalError("the pipeline did not come up: \(error)")
    }
    var written: [UInt8] = []
    func drain() {
        loop.run()
        while let part = try? channel.readOutbound(as: ByteBuffer.self) {
            written += part.readableBytesView
        }
    }
    var offset = 1
    while offset < size, channel.isActive {
        let end = min(size, offset + step)
        var chunk = channel.allocator.buffer(capacity: end - offset)
        chunk.writeBytes(UnsafeBufferPointer(rebasing: input[offset..<end]))
        offset = end
        do {
            try channel.writeInbound(chunk)
            // A socket read ends with readComplete (EmbeddedChannel leaves that to the caller); the idle
            // handler counts a connection as reading until then.
            channel.pipeline.fireChannelReadComplete()
        } catch {
            // An error that left the pipeline (a parse error after the response, say): the channel closes.
        }
        drain()
    }
    if !written.isEmpty {
        require(
            written.starts(with: Array("HTTP/1.1 ".utf8)),
            "the server wrote something that is not an HTTP response: \(Array(written.prefix(32)))"
        )
    }
    if debug { print(String(decoding: written.prefix(600), as: UTF8.self)) }
    let upgraded = written.starts(with: Array("HTTP/1.1 101".utf8))
    // A client that goes quiet: the idle timeout closes a connection that never became a WebSocket.
    // (IdleStateHandler measures time with the real clock, so the event is sent as it would send it.)
    channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
    drain()
    if !upgraded {
        require(!channel.isActive, "an HTTP connection is still open after the idle timeout")
    }
    // A WebSocket that never sends a message is closed after the same time (the loop's own clock).
    loop.advanceTime(by: .seconds(Int64(configuration.httpIdleTimeout) + 1))
    drain()
    if channel.isActive {
        let handler = try? channel.pipeline.syncOperations.handler(type: WebSocketAgentHandler.self)
        require(handler?.spoke == true, "a WebSocket that never sent a message is still open after the idle timeout")
    }
    // The client goes away (a WebSocket, or a connection the server kept open).
    _ = try? channel.finish(acceptAlreadyClosed: true)
    loop.run()
    let open = server.openConnections.load(ordering: .relaxed)
    require(open == 0, "\(open) connection slots held after the connection closed")
    for agent in server.registry.snapshot() {
        require(agent.transport != .webSocket, "agent \(agent.instanceUID) still connected over a closed socket")
    }
    let counts = server.registry.bookkeeping()
    for key in ["bindings", "owners", "connections"] {
        require(counts[key] == 0, "\(counts[key]!) \(key) left after the connection closed: \(counts)")
    }
    // Forget every agent, so runs do not pile up state.
    server.registry.sweep(httpTimeout: -1, webSocketTimeout: -1, forgetAfter: -1)
    return 0
}
