import Foundation
import Logging
import NIOCore
import NIOWebSocket
import OpAMPProtocol
import SwiftProtobuf
import Synchronization

/// One agent's WebSocket: binary frames carry OpAMP messages (a `0x00` header byte, then protobuf).
/// Text frames are ignored; malformed messages get a BadRequest and the connection stays open.
final class WebSocketAgentHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let server: OpAMPServer
    private let connection: ConnectionID
    /// Who the upgrade request's credentials admitted: every message is checked against it.
    private let principal: AgentPrincipal
    private var closing = false
    /// Holds a connection slot and a registry entry (from `handlerAdded` until the connection closes).
    private var counted = false
    /// Whether a message arrived: a WebSocket that sends none within the HTTP idle timeout is closed, or
    /// upgrades alone could hold every connection slot (the sweep only sees agents that spoke).
    private(set) var spoke = false
    private var silence: Scheduled<Void>?
    /// Every message to the agent goes through it, in order (see ``AgentOutbox``).
    private var outbox: AgentOutbox?

    init(server: OpAMPServer, principal: AgentPrincipal) {
        self.server = server
        self.principal = principal
        self.connection = server.registry.newConnection()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // The upgrade completes after the 101 is written; by then the client may be gone (and the channel
        // closed by bytes it sent behind the request). Such a handler never sees channelInactive, so it must
        // take no slot and leave nothing in the registry.
        guard context.channel.isActive else { return }
        self.counted = true
        self.server.openConnections.wrappingAdd(1, ordering: .relaxed)
        let seconds = self.server.configuration.httpIdleTimeout
        self.silence = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(Int64(seconds))) {
            guard !self.spoke else { return }
            self.server.logger.debug("closing a WebSocket that sent no message", metadata: ["seconds": "\(seconds)"])
            self.close(context: context, code: .policyViolation)
        }
        let channel = context.channel
        let configuration = self.server.configuration
        let logger = self.server.logger
        let outbox = AgentOutbox(
            channel: channel,
            waitingConfigs: self.server.waitingConfigs,
            maxQueuedBytes: configuration.maxUnsentBytes,
            stalledAfter: .milliseconds(Int64(configuration.stalledWriteSeconds * 1000)),
            stop: { reason in
                // Not told with a close frame: it would wait behind what the agent does not read.
                logger.info("closing a WebSocket that stopped reading", metadata: ["reason": "\(reason)"])
                channel.close(promise: nil)
            }
        )
        self.outbox = outbox
        let bound = NIOLoopBound(outbox, eventLoop: channel.eventLoop)
        let sharedConfigs = self.server.sharedConfigs
        self.server.registry.attach(
            self.connection,
            pusher: { message in
                // Called from any thread, under the registry's lock: never write (or close) synchronously, which
                // could re-enter the registry from this channel's callbacks. Tasks run in the order queued, so
                // pushes keep the order of the changes that caused them.
                // Encoded here, on the caller's thread: the event loops only write.
                guard channel.isActive, let encoded = Self.encode(message, sharedConfigs, channel.allocator) else {
                    return false
                }
                channel.eventLoop.execute { bound.value.send(encoded.message, replaceable: encoded.replaceable) }
                return true
            },
            closer: { channel.eventLoop.execute { channel.close(promise: nil) } }
        )
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.release()
    }

    private func release() {
        self.silence?.cancel()
        self.silence = nil
        self.outbox?.discard()
        guard self.counted else { return }
        self.counted = false
        self.server.openConnections.wrappingSubtract(1, ordering: .relaxed)
        self.server.registry.connectionClosed(self.connection, reason: "connection closed")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A handler that never took a slot (added to a closed channel) handles nothing: frames replayed from
        // behind the upgrade request would otherwise bind an agent to a connection that is gone.
        guard self.counted else { return }
        let frame = self.unwrapInboundIn(data)
        switch frame.opcode {
        case .binary:
            self.spoke = true
            let bytes = Array(frame.unmaskedData.readableBytesView)
            let response: OpAMP_ServerToAgent
            do {
                let message = try WebSocketFraming.decodeAgentMessage(bytes)
                let handled = self.server.registry.process(
                    message,
                    connection: self.connection,
                    transport: .webSocket,
                    principal: self.principal
                )
                if let refusal = handled.refusal {
                    // Told why, then closed: a connection whose credential does not fit stays closed.
                    self.server.refused(refusal, channel: context.channel, counted: true)
                    self.send(handled.response, context: context)
                    self.close(context: context, code: .policyViolation)
                    return
                }
                response = handled.response
            } catch {
                response = AgentRegistry.badRequest("the frame is not an AgentToServer protobuf message")
            }
            self.send(response, context: context)
        case .text:
            self.server.logger.debug("ignoring a text frame; OpAMP uses binary frames")
        case .ping:
            var pong = frame
            pong.opcode = .pong
            pong.data = frame.unmaskedData
            pong.maskKey = nil
            context.writeAndFlush(self.wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            self.close(context: context, code: .normalClosure)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard self.counted else { return }
        if let aggregation = error as? NIOWebSocketFrameAggregator.Error, aggregation == .accumulatedFrameSizeIsTooLarge
        {
            self.close(context: context, code: .messageTooLarge)
            return
        }
        self.server.logger.debug("WebSocket error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// A response, after whatever waits for the agent already (a config pushed just before stays before it).
    private func send(_ message: OpAMP_ServerToAgent, context: ChannelHandlerContext) {
        guard let encoded = Self.encode(message, self.server.sharedConfigs, context.channel.allocator) else { return }
        self.outbox?.send(encoded.message, replaceable: encoded.replaceable)
    }

    /// A message as the outbox takes it: after the WebSocket header byte, a config many agents share encoded
    /// once (see ``SharedConfigs``); replaceable while it waits when it carries a config alone.
    private static func encode(
        _ message: OpAMP_ServerToAgent,
        _ sharedConfigs: SharedConfigs,
        _ allocator: ByteBufferAllocator
    ) -> (message: EncodedServerMessage, replaceable: Bool)? {
        guard let encoded = try? sharedConfigs.encode(message, leading: WebSocketFraming.header, allocator: allocator)
        else { return nil }
        return (encoded, message.isConfigOnly)
    }

    /// A close frame after whatever waits for the agent (a refusal's reason goes out first), then the end.
    private func close(context: ChannelHandlerContext, code: WebSocketErrorCode) {
        guard !self.closing else { return }
        self.closing = true
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        if let outbox = self.outbox {
            outbox.close(with: frame)
        } else {
            let channel = context.channel
            context.writeAndFlush(self.wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
