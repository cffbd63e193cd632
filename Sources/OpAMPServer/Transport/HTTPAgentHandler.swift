import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPCompression
import NIOWebSocket
import OpAMPProtocol
import SwiftProtobuf
import Synchronization

/// Plain-HTTP OpAMP: one `POST` with an AgentToServer body, one ServerToAgent response. Also answers the
/// requests that are neither that nor a WebSocket upgrade (wrong path, credentials, method, overload).
final class HTTPAgentHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: OpAMPServer
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false
    private var counted = false
    /// An error response went out for this connection; nothing more is read or written.
    private var failed = false

    init(server: OpAMPServer) {
        self.server = server
    }

    func channelActive(context: ChannelHandlerContext) {
        self.counted = true
        self.server.openConnections.wrappingAdd(1, ordering: .relaxed)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // Upgraded to WebSocket: the WebSocket handler counts the connection from now on.
        self.release()
    }

    private func release() {
        if self.counted {
            self.counted = false
            self.server.openConnections.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.body = nil
            self.tooLarge = false
        case .body(var chunk):
            guard !self.tooLarge else { return }
            if (self.body?.readableBytes ?? 0) + chunk.readableBytes > self.server.configuration.maxMessageSize {
                self.tooLarge = true
                self.body = nil
                return
            }
            if self.body == nil {
                self.body = chunk
            } else {
                self.body!.writeBuffer(&chunk)
            }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            self.respond(to: head, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // A connection that sends nothing (before or between requests) gives its slot back.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let decompression = error as? NIOHTTPDecompression.DecompressionError {
            // The decompressor may report several errors for one body: answer once, then close.
            guard !self.failed else { return }
            self.failed = true
            self.head = nil
            self.body = nil
            let status: HTTPResponseStatus = decompression == .limit ? .payloadTooLarge : .badRequest
            let text =
                decompression == .limit
                ? "message larger than \(self.server.configuration.maxMessageSize) bytes after decompression"
                : "invalid gzip body"
            self.write(
                context: context,
                status: status,
                body: Array(text.utf8),
                contentType: "text/plain",
                keepAlive: false
            )
            return
        }
        if error is NIOWebSocketUpgradeError {
            // A refused upgrade: the request itself follows and gets its answer (401, 503, 400…).
            return
        }
        self.server.logger.debug("HTTP connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = head.isKeepAlive
        guard self.server.pathMatches(head.uri) else {
            return self.write(
                context: context,
                status: .notFound,
                body: Array("not found; OpAMP is served at \(self.server.configuration.path)\n".utf8),
                contentType: "text/plain",
                keepAlive: keepAlive
            )
        }
        let principal: AgentPrincipal
        switch self.server.authenticate(head.headers, channel: context.channel) {
        case .success(let admitted):
            principal = admitted
        case .failure(let refusal):
            self.server.refused(refusal, channel: context.channel)
            var headers = HTTPHeaders()
            headers.add(name: "WWW-Authenticate", value: "Bearer")
            return self.write(
                context: context,
                status: refusal.kind == "credentials" ? .unauthorized : .forbidden,
                body: Array("\(refusal.reason)\n".utf8),
                contentType: "text/plain",
                keepAlive: false,
                extra: headers
            )
        }
        if self.server.openConnections.load(ordering: .relaxed) > self.server.configuration.maxConnections {
            var headers = HTTPHeaders()
            headers.add(name: "Retry-After", value: String(self.server.configuration.retryAfterSeconds))
            return self.write(
                context: context,
                status: .serviceUnavailable,
                body: Array("server is at its connection limit\n".utf8),
                contentType: "text/plain",
                keepAlive: false,
                extra: headers
            )
        }
        if head.method == .GET, head.headers.contains(name: "upgrade"), OpAMPServer.hasBody(head.headers) {
            return self.write(
                context: context,
                status: .badRequest,
                body: Array("a WebSocket upgrade request has no body\n".utf8),
                contentType: "text/plain",
                keepAlive: false
            )
        }
        guard head.method == .POST, OpAMPServer.isProtobuf(head.headers) else {
            return self.write(
                context: context,
                status: .badRequest,
                body: Array("expected a WebSocket upgrade, or a POST with Content-Type: application/x-protobuf\n".utf8),
                contentType: "text/plain",
                keepAlive: keepAlive
            )
        }
        guard !self.tooLarge else {
            self.tooLarge = false
            return self.write(
                context: context,
                status: .payloadTooLarge,
                body: Array("message larger than \(self.server.configuration.maxMessageSize) bytes\n".utf8),
                contentType: "text/plain",
                keepAlive: false
            )
        }
        let bytes = self.body.map { Array($0.readableBytesView) } ?? []
        self.body = nil
        let response: OpAMP_ServerToAgent
        var status = HTTPResponseStatus.ok
        do {
            let message = try OpAMP_AgentToServer(serializedBytes: bytes)
            let connection = self.server.registry.newConnection()
            let handled = self.server.registry.process(
                message,
                connection: connection,
                transport: .http,
                principal: principal
            )
            response = handled.response
            if let refusal = handled.refusal {
                self.server.refused(refusal, channel: context.channel, counted: true)
                status = .forbidden
            } else if response.hasErrorResponse {
                status = .badRequest
            }
        } catch {
            response = AgentRegistry.badRequest("the body is not an AgentToServer protobuf message: \(error)")
            status = .badRequest
        }
        // A remote config goes out from the server's one encoding of it (see ``SharedConfigs``).
        let encoded =
            (try? self.server.sharedConfigs.encode(response, allocator: context.channel.allocator))
            ?? EncodedServerMessage(head: context.channel.allocator.buffer(capacity: 0), config: nil)
        self.write(
            context: context,
            status: status,
            parts: [encoded.head] + (encoded.config.map { [$0.bytes] } ?? []),
            contentType: "application/x-protobuf",
            keepAlive: keepAlive && status != .forbidden
        )
    }

    private func write(
        context: ChannelHandlerContext,
        status: HTTPResponseStatus,
        body: [UInt8],
        contentType: String,
        keepAlive: Bool,
        extra: HTTPHeaders = HTTPHeaders()
    ) {
        var buffer = context.channel.allocator.buffer(capacity: body.count)
        buffer.writeBytes(body)
        self.write(
            context: context,
            status: status,
            parts: [buffer],
            contentType: contentType,
            keepAlive: keepAlive,
            extra: extra
        )
    }

    /// A response whose body is `parts` in order (written as they are: a shared config is not copied).
    private func write(
        context: ChannelHandlerContext,
        status: HTTPResponseStatus,
        parts: [ByteBuffer],
        contentType: String,
        keepAlive: Bool,
        extra: HTTPHeaders = HTTPHeaders()
    ) {
        var headers = extra
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(parts.reduce(0) { $0 + $1.readableBytes }))
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        for part in parts where part.readableBytes > 0 {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(part))), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            let channel = context.channel
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
