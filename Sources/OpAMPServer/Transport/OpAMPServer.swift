import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPCompression
import NIOPosix
import NIOSSL
import NIOWebSocket
import OpAMPProtocol
import ServiceLifecycle
import Synchronization

/// The OpAMP server: WebSocket and plain HTTP on one port, built on SwiftNIO channel handlers.
///
/// `Content-Type: application/x-protobuf` requests are plain-HTTP OpAMP; anything else on the path is a
/// WebSocket upgrade. The protocol itself lives in ``AgentRegistry``; this type only moves bytes.
public final class OpAMPServer: Service, Sendable {
    /// The agents, their state and the API for the layer above.
    public let registry: AgentRegistry
    let configuration: OpAMPServerConfiguration
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    private let sslContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    let openConnections = Atomic<Int>(0)
    /// Configs waiting for slow readers across every connection.
    let waitingConfigs: WaitingConfigs
    /// Each distinct remote config, encoded once for every agent it goes to.
    let sharedConfigs = SharedConfigs()

    /// Creates a server; nothing is bound until ``start()`` or ``run()``.
    public init(configuration: OpAMPServerConfiguration, logger: Logger = Logger(label: "tailplane.opamp")) {
        self.configuration = configuration
        self.waitingConfigs = WaitingConfigs(limit: configuration.maxWaitingConfigBytes)
        self.logger = logger
        let heartbeat = configuration.advertisedEndpoint.map {
            (intervalSeconds: configuration.heartbeatIntervalSeconds, endpoint: $0)
        }
        self.registry = AgentRegistry(
            heartbeat: heartbeat,
            access: configuration.access ?? SharedTokenAccess(tokens: configuration.agentTokens),
            serverCAPEM: configuration.serverCAPEM
        )
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
    }

    /// Binds the port and starts accepting agents. Returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        let configuration = self.configuration
        let server = self
        if let tls = configuration.tls {
            self.sslContext.withLockedValue { $0 = nil }
            let context = try NIOSSLContext(configuration: tls)
            self.sslContext.withLockedValue { $0 = context }
        } else if !Self.isLoopback(configuration.host) {
            self.logger.warning(
                "OpAMP listens in plain text on a non-loopback address: agent tokens and configs cross the network unencrypted; give --tls-cert and --tls-key",
                metadata: ["address": "\(configuration.host)"]
            )
        }
        let bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
            .childChannelInitializer { channel in
                server.initialize(channel, configuration: configuration)
            }
        let channel = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
        self.channel.withLockedValue { $0 = channel }
        let port = channel.localAddress?.port ?? configuration.port
        self.logger.info(
            "OpAMP server listening",
            metadata: [
                "address": "\(configuration.host):\(port)", "path": "\(configuration.path)",
                "tls": "\(configuration.tls != nil)",
            ]
        )
        return port
    }

    /// Stops accepting connections, closes every agent connection and releases the event loops.
    /// The server cannot be started again.
    public func stop() async {
        let channel = self.channel.withLockedValue { channel -> (any Channel)? in
            defer { channel = nil }
            return channel
        }
        try? await channel?.close()
        try? await self.group.shutdownGracefully()
    }

    /// Runs until cancelled or until graceful shutdown, sweeping silent agents offline meanwhile.
    public func run() async throws {
        if self.channel.withLockedValue({ $0 == nil }) { try await self.start() }
        // On graceful shutdown (SIGTERM via ServiceGroup) the sweep loop is cancelled; then the listener and
        // every connection close.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(5))
                self.registry.sweep(
                    httpTimeout: self.configuration.effectiveHTTPOfflineAfter,
                    webSocketTimeout: self.configuration.effectiveWebSocketOfflineAfter,
                    forgetAfter: self.configuration.forgetOfflineAgentsAfter,
                    maximumAgents: self.configuration.maxAgents
                )
            }
        }
        await self.stop()
        self.logger.info("OpAMP server stopped")
    }

    // MARK: Pipeline

    /// Sets up one accepted connection's pipeline (internal: the transport fuzzer drives it on an EmbeddedChannel).
    func initialize(_ channel: any Channel, configuration: OpAMPServerConfiguration) -> EventLoopFuture<Void> {
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: min(configuration.maxMessageSize, Int(UInt32.max)),
            automaticErrorHandling: true,
            shouldUpgrade: { channel, head in
                channel.eventLoop.makeSucceededFuture(self.acceptsUpgrade(head, channel: channel) ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { channel, head in
                // Runs on the channel's event loop. The plain-HTTP handlers must be gone before the first
                // WebSocket frame moves.
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    pipeline.removeHandler(name: Self.compressorName, promise: nil)
                    pipeline.removeHandler(name: Self.decompressorName, promise: nil)
                    pipeline.removeHandler(name: Self.httpHandlerName, promise: nil)
                    pipeline.removeHandler(name: Self.idleName, promise: nil)
                    try pipeline.addHandler(
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0,
                            maxAccumulatedFrameCount: 1 << 16,
                            maxAccumulatedFrameSize: configuration.maxMessageSize
                        )
                    )
                    // Authenticated again here (a memory lookup): the upgrade callback cannot hand it over.
                    switch self.authenticate(head.headers, channel: channel) {
                    case .success(let principal):
                        try pipeline.addHandler(WebSocketAgentHandler(server: self, principal: principal))
                    case .failure(let refusal):
                        // Revoked between the two looks.
                        self.refused(refusal, channel: channel)
                        channel.close(promise: nil)
                    }
                }
            }
        )
        let sslContext = self.sslContext.withLockedValue { $0 }
        return channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            if let sslContext {
                try pipeline.addHandler(NIOSSLServerHandler(context: sslContext), name: Self.tlsName)
            }
            try pipeline.configureHTTPServerPipeline(
                withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }),
                withErrorHandling: true
            )
            try pipeline.addHandler(
                IdleStateHandler(readTimeout: .seconds(Int64(configuration.httpIdleTimeout))),
                name: Self.idleName,
                position: sslContext == nil ? .first : .after(try pipeline.handler(type: NIOSSLServerHandler.self))
            )
            try pipeline.addHandler(HTTPResponseCompressor(), name: Self.compressorName)
            try pipeline.addHandler(
                NIOHTTPRequestDecompressor(limit: .size(configuration.maxMessageSize)),
                name: Self.decompressorName
            )
            try pipeline.addHandler(HTTPAgentHandler(server: self), name: Self.httpHandlerName)
        }
    }

    static let compressorName = "opamp.http.compressor"
    static let decompressorName = "opamp.http.decompressor"
    static let httpHandlerName = "opamp.http"
    static let idleName = "opamp.http.idle"
    static let tlsName = "opamp.tls"

    static func isLoopback(_ host: String) -> Bool {
        ["127.0.0.1", "::1", "localhost"].contains(host) || host.hasPrefix("127.")
    }

    /// An upgrade is accepted on the path, with valid credentials, when not overloaded, and only for
    /// requests that are not plain-HTTP OpAMP. A refused upgrade is answered (and logged) by the HTTP handler.
    ///
    /// A handshake with a body is refused: NIO's upgrade handler waits for the end of the request, holding a
    /// closure that references itself, and when that end never comes (the client closes mid-body) the handler,
    /// its context and the whole pipeline are never freed (found by fuzz-opamp-transport under LeakSanitizer).
    /// A WebSocket handshake is a GET without a body (RFC 6455 §4.1); no OpAMP client sends one.
    func acceptsUpgrade(_ head: HTTPRequestHead, channel: any Channel) -> Bool {
        guard head.method == .GET, self.pathMatches(head.uri), !Self.isProtobuf(head.headers),
            !Self.hasBody(head.headers),
            self.openConnections.load(ordering: .relaxed) <= self.configuration.maxConnections
        else { return false }
        if case .success = self.authenticate(head.headers, channel: channel) { return true }
        return false
    }

    func pathMatches(_ uri: String) -> Bool {
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        return path == self.configuration.path
    }

    /// Whether a request announces a body (`Transfer-Encoding`, or a `Content-Length` other than 0).
    static func hasBody(_ headers: HTTPHeaders) -> Bool {
        if headers.contains(name: "transfer-encoding") { return true }
        return headers[canonicalForm: "content-length"].contains { $0.trimmingCharacters(in: .whitespaces) != "0" }
    }

    static func isProtobuf(_ headers: HTTPHeaders) -> Bool {
        headers.first(name: "content-type")?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces)
            .lowercased()
            == "application/x-protobuf"
    }

    /// Runs a request's credentials (bearer token, TLS client certificate) through the access policy. Call on
    /// the channel's event loop.
    func authenticate(_ headers: HTTPHeaders, channel: any Channel) -> Result<AgentPrincipal, AccessRefusal> {
        var credentials = AgentCredentials(remoteAddress: channel.remoteAddress?.description)
        if let value = headers.first(name: "authorization") {
            let parts = value.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                credentials.bearerToken = String(parts[1]).trimmingCharacters(in: .whitespaces)
            }
        }
        if let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let certificate = handler.peerCertificate
        {
            credentials.clientCertificate = try? certificate.toDERBytes()
        }
        return self.registry.access.authenticate(credentials)
    }

    /// Logs and counts a refusal: once per refused connection, request or message, never with a secret.
    func refused(_ refusal: AccessRefusal, channel: any Channel, counted: Bool = false) {
        if !counted { self.registry.count(refusal) }
        self.logger.warning(
            "agent refused",
            metadata: [
                "kind": "\(refusal.kind)", "reason": "\(refusal.reason)",
                "remote": "\(channel.remoteAddress?.description ?? "?")",
            ]
        )
    }
}
