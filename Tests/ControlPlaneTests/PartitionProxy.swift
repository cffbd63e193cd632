import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP relay in front of PostgreSQL that a test cuts the way a network does: no error and no close, bytes
/// simply stop arriving. ``partition()`` holds every byte of every connection (new ones included) until
/// ``heal()``; ``abandon()`` holds the connections open now for good while new ones pass, as when the database
/// failed over to another host and the old address went silent. Held bytes stay in the kernel's buffers:
/// neither side can tell.
final class PartitionProxy: Sendable {
    /// The port to connect to instead of the server's.
    let port: Int
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let server: any Channel
    private let state = NIOLockedValueBox(State())

    private struct Link {
        var client: any Channel
        var upstream: any Channel
        var abandoned = false
    }

    private struct State {
        var partitioned = false
        var links: [Link] = []
    }

    /// Relays to `targetPort` on 127.0.0.1.
    init(targetPort: Int) throws {
        let state = self.state
        let group = self.group
        self.server = try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { client in
                ClientBootstrap(group: client.eventLoop)
                    .channelOption(.autoRead, value: false)
                    .channelInitializer { upstream in
                        upstream.eventLoop.makeCompletedFuture {
                            try upstream.pipeline.syncOperations.addHandler(Relay(to: client))
                        }
                    }
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMapThrowing { upstream in
                        try client.pipeline.syncOperations.addHandler(Relay(to: upstream))
                        let flowing = state.withLockedValue { state in
                            state.links.append(Link(client: client, upstream: upstream))
                            return !state.partitioned
                        }
                        if flowing { Self.flow([client, upstream], true) }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        self.port = self.server.localAddress?.port ?? 0
    }

    /// Holds every byte both ways, on connections open now and those made until ``heal()``.
    func partition() {
        self.state.withLockedValue { state in
            state.partitioned = true
            for link in state.links { Self.flow([link.client, link.upstream], false) }
        }
    }

    /// Delivers what was held and relays again (not on abandoned connections).
    func heal() {
        self.state.withLockedValue { state in
            state.partitioned = false
            for link in state.links where !link.abandoned { Self.flow([link.client, link.upstream], true) }
        }
    }

    /// Holds the connections open now for good; new connections pass.
    func abandon() {
        self.state.withLockedValue { state in
            for index in state.links.indices {
                state.links[index].abandoned = true
                Self.flow([state.links[index].client, state.links[index].upstream], false)
            }
        }
    }

    /// Closes everything.
    func close() {
        let links = self.state.withLockedValue { $0.links }
        for link in links {
            link.client.close(promise: nil)
            link.upstream.close(promise: nil)
        }
        try? self.server.close().wait()
        try? self.group.syncShutdownGracefully()
    }

    private static func flow(_ channels: [any Channel], _ on: Bool) {
        for channel in channels { channel.setOption(.autoRead, value: on).whenComplete { _ in } }
    }

    /// Writes what one side sends to the other, and closes the other when one closes.
    private final class Relay: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let peer: any Channel

        init(to peer: any Channel) { self.peer = peer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.peer.writeAndFlush(self.unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.peer.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
