import AsyncHTTPClient
import Credentials
import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import OpAMPProtocol
import SwiftProtobuf
import Synchronization

/// Counters shared by every simulated agent.
public final class FleetStatistics: Sendable {
    let connectedCount = Atomic<Int>(0)
    let appliedCount = Atomic<Int>(0)
    let failedCount = Atomic<Int>(0)
    let sentCount = Atomic<Int>(0)
    let receivedCount = Atomic<Int>(0)
    let reconnectCount = Atomic<Int>(0)
    let downloadCount = Atomic<Int>(0)
    let downloadedByteCount = Atomic<Int>(0)
    let resumeCount = Atomic<Int>(0)

    /// Package downloads finished (verified or not), bytes received, and range requests that resumed one.
    public var downloads: Int { self.downloadCount.load(ordering: .relaxed) }
    public var downloadedBytes: Int { self.downloadedByteCount.load(ordering: .relaxed) }
    public var resumes: Int { self.resumeCount.load(ordering: .relaxed) }

    /// Agents connected now.
    public var connected: Int { self.connectedCount.load(ordering: .relaxed) }
    /// APPLIED reports sent.
    public var applied: Int { self.appliedCount.load(ordering: .relaxed) }
    /// FAILED reports sent.
    public var failed: Int { self.failedCount.load(ordering: .relaxed) }
    /// Messages sent and received.
    public var sent: Int { self.sentCount.load(ordering: .relaxed) }
    public var received: Int { self.receivedCount.load(ordering: .relaxed) }
    /// Reconnections after a dropped connection.
    public var reconnects: Int { self.reconnectCount.load(ordering: .relaxed) }

    func counted(_ message: OpAMP_AgentToServer) {
        self.sentCount.wrappingAdd(1, ordering: .relaxed)
        guard message.hasRemoteConfigStatus else { return }
        switch message.remoteConfigStatus.status {
        case .applied: self.appliedCount.wrappingAdd(1, ordering: .relaxed)
        case .failed: self.failedCount.wrappingAdd(1, ordering: .relaxed)
        default: break
        }
    }
}

/// Options of a simulated fleet.
public struct FleetOptions: Sendable {
    /// How agents talk to the server.
    public enum Transport: String, Sendable, CaseIterable {
        case webSocket = "ws"
        case http
    }

    public var host = "127.0.0.1"
    public var port = 4320
    public var path = "/v1/opamp"
    public var transport = Transport.webSocket
    /// Number of agents.
    public var agents = 100
    /// Share of agents in the load-balancing tier (the rest are samplers).
    public var loadBalancerShare = 0.2
    /// New connections per second while ramping up.
    public var connectRate = 2000
    /// Bearer token, if the server needs one.
    public var token: String?
    /// Config apply time.
    public var applyDelay: Duration = .milliseconds(100)
    /// A config containing this text fails.
    public var failMarker = "tailplane-fail"
    /// Heartbeat / poll interval.
    public var heartbeatSeconds: UInt64 = 30
    /// Every `churnInterval`, drop this share of connections (they come back after `reconnectDelay`).
    public var churnShare = 0.0
    public var churnInterval: Duration = .seconds(10)
    public var reconnectDelay: Duration = .seconds(1)
    /// Event loop threads.
    public var threads = 2
    /// The first host number (`sampler-00007`): a second fleet in one test gets names of its own.
    public var firstIndex = 0
    /// Agents report remote config status (the supervisor's `reports_remote_config`; off there by default).
    public var reportsRemoteConfig = true
    /// Agents roll back by themselves after a failed config, like a supervisor with its rollback on.
    public var supervisorRollback = false
    /// Connect over TLS, trusting these CA certificates (PEM) for the server's certificate.
    public var tlsTrustRootsPEM: String?
    /// Agents accept OpAMP connection settings and report their status (offered certificates are used).
    public var acceptsConnectionSettings = false
    /// Agents without a client certificate send a CSR after connecting (the client-initiated flow).
    public var requestCertificates = false
    /// Agents accept packages and report their statuses (download, verify, install, new `service.version`).
    public var acceptsPackages = false
    /// The package signing key agents pin (PEM, `policyctl packages signing-key`); nil: not checked.
    public var packageSigningKeyPEM: String?
    /// Package versions whose install fails, and top-level versions agents turn unhealthy on.
    public var failingPackageVersions: Set<String> = []
    public var unhealthyPackageVersions: Set<String> = []
    /// Cut each first download after this many bytes and resume it with a range request.
    public var interruptDownloadsAfterBytes: Int64?
    /// The collector version agents start with (`service.version`).
    public var collectorVersion = "0.150.0"
    /// Several servers on `host` (replicas behind one address): agent `i` connects to `ports[i % count]`
    /// first, and to the next one after a connection attempt fails, keeping its identity. Empty: `port` only.
    public var ports: [Int] = []

    public init() {}
}

/// Runs N simulated collectors in one process over real connections.
public final class FleetRunner: Sendable {
    public let options: FleetOptions
    public let statistics = FleetStatistics()
    let group: MultiThreadedEventLoopGroup
    let slots: [AgentSlot]
    let stopping = Atomic<Bool>(false)
    /// Downloads packages (created with the first one).
    let http = NIOLockedValueBox<HTTPClient?>(nil)

    public init(options: FleetOptions) {
        self.options = options
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.threads))
        let signingKey = options.packageSigningKeyPEM.flatMap { try? PackageSignature.publicKey(pem: $0) }
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let lbCount = Int((Double(options.agents) * options.loadBalancerShare).rounded())
        self.slots = (0..<options.agents).map { index in
            let isLB = index < lbCount
            var profile = AgentProfile(
                serviceName: isLB ? "otelcol-lb" : "otelcol-sampler",
                tier: isLB ? "lb" : "sampling",
                hostName: String(format: "%@-%05d", isLB ? "lb" : "sampler", options.firstIndex + index),
                version: options.collectorVersion,
                capabilities: (options.reportsRemoteConfig
                    ? AgentProfile.supervisorCapabilities : AgentProfile.supervisorCapabilities & ~0x1000)
                    | (options.acceptsConnectionSettings ? AgentProfile.connectionSettingsCapabilities : 0)
                    | (options.acceptsPackages ? AgentProfile.packageCapabilities : 0),
                applyDelay: options.applyDelay,
                failMarker: options.failMarker,
                heartbeatSeconds: options.heartbeatSeconds
            )
            profile.rollsBackOnFailure = options.supervisorRollback
            profile.packageSigningKey = signingKey
            profile.failingPackageVersions = options.failingPackageVersions
            profile.unhealthyPackageVersions = options.unhealthyPackageVersions
            profile.interruptDownloadsAfterBytes = options.interruptDownloadsAfterBytes
            return AgentSlot(
                agent: SimulatedAgent(profile: profile, uid: .version7(unixMilliseconds: now)),
                server: index
            )
        }
    }

    /// Connects every agent (at `connectRate` per second), then keeps them running until cancelled.
    public func run() async throws {
        let batch = max(1, self.options.connectRate / 20)
        for start in stride(from: 0, to: self.slots.count, by: batch) {
            for index in start..<min(start + batch, self.slots.count) {
                self.connect(self.slots[index])
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        try await withTaskCancellationHandler {
            while !Task.isCancelled {
                if self.options.churnShare > 0 {
                    try await Task.sleep(for: self.options.churnInterval)
                    self.churn()
                } else {
                    try await Task.sleep(for: .seconds(1))
                }
            }
        } onCancel: {
            self.stopping.store(true, ordering: .relaxed)
        }
    }

    /// Every simulated agent's state now.
    public func agents() -> [SimulatedAgent] {
        self.slots.map { $0.state.withLockedValue { $0 } }
    }

    /// Closes every connection and the event loops.
    public func shutdown() async {
        self.stopping.store(true, ordering: .relaxed)
        for slot in self.slots { slot.close() }
        if let http = self.http.withLockedValue({ client in
            defer { client = nil }; return client
        }) {
            try? await http.shutdown()
        }
        try? await self.group.shutdownGracefully()
    }

    // MARK: Package downloads

    private func httpClient() -> HTTPClient {
        self.http.withLockedValue { client in
            if let client { return client }
            var configuration = HTTPClient.Configuration()
            configuration.timeout.connect = .seconds(10)
            // Every agent downloads at once, as separate collectors would (the default pool keeps 8 per host).
            configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = max(8, self.options.agents)
            if let roots = self.options.tlsTrustRootsPEM,
                let certificates = try? NIOSSLCertificate.fromPEMBytes(Array(roots.utf8))
            {
                var tls = TLSConfiguration.makeClientConfiguration()
                tls.trustRoots = .certificates(certificates)
                tls.certificateVerification = .noHostnameVerification
                configuration.tlsConfiguration = tls
            }
            let made = HTTPClient(eventLoopGroup: self.group, configuration: configuration)
            client = made
            return made
        }
    }

    /// Downloads a package in the background, hashing as it goes (nothing is kept in memory); an interrupted
    /// download resumes with a range request from where it stopped. The agent then verifies and installs.
    func download(_ download: PackageDownload, for slot: AgentSlot) {
        let client = self.httpClient()
        Task {
            let outcome = await Self.fetch(download, client: client, slot: slot)
            self.statistics.downloadCount.wrappingAdd(1, ordering: .relaxed)
            self.statistics.downloadedByteCount.wrappingAdd(Int(outcome.bytes), ordering: .relaxed)
            self.statistics.resumeCount.wrappingAdd(outcome.resumes, ordering: .relaxed)
            let actions = slot.state.withLockedValue { $0.downloaded(download, outcome: outcome) }
            slot.perform(actions)
        }
    }

    private struct Interrupted: Error {}

    static func fetch(_ download: PackageDownload, client: HTTPClient, slot: AgentSlot) async -> DownloadOutcome {
        var hasher = SHA256()
        var received: Int64 = 0
        var resumes = 0
        var cut = download.interruptAfterBytes
        var failures = 0
        var reported = 0
        while true {
            var request = HTTPClientRequest(url: download.url)
            for (name, value) in download.headers { request.headers.add(name: name, value: value) }
            if received > 0 { request.headers.add(name: "Range", value: "bytes=\(received)-") }
            do {
                let response = try await client.execute(request, timeout: .minutes(10))
                let code = Int(response.status.code)
                guard code == 200 || (received > 0 && code == 206) else {
                    return DownloadOutcome(sha256: nil, bytes: received, resumes: resumes, error: "HTTP \(code)")
                }
                if received > 0, code == 200 {
                    // The server sent the whole file again: start over.
                    hasher = SHA256()
                    received = 0
                }
                let length = response.headers.first(name: "Content-Length").flatMap(Int64.init)
                let total = length.map { $0 + received }
                for try await chunk in response.body {
                    chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                    received += Int64(chunk.readableBytes)
                    if let total, total > 0 {
                        let percent = Int(Double(received) / Double(total) * 100)
                        if percent / 25 > reported / 25, percent < 100 {
                            reported = percent
                            slot.perform(
                                slot.state.withLockedValue { $0.downloading(download, percent: Double(percent)) }
                            )
                        }
                    }
                    if let limit = cut, received >= limit {
                        cut = nil
                        throw Interrupted()
                    }
                }
                return DownloadOutcome(sha256: Array(hasher.finalize()), bytes: received, resumes: resumes)
            } catch is Interrupted {
                resumes += 1
            } catch {
                // Retried for about 20 seconds (a server that restarts comes back), resuming where it stopped.
                failures += 1
                if failures >= 20 {
                    return DownloadOutcome(sha256: nil, bytes: received, resumes: resumes, error: "\(error)")
                }
                resumes += received > 0 ? 1 : 0
                try? await Task.sleep(for: .milliseconds(min(200 * failures, 1000)))
            }
        }
    }

    private func churn() {
        var random = SystemRandomNumberGenerator()
        for slot in self.slots where Double.random(in: 0..<1, using: &random) < self.options.churnShare {
            slot.close()
        }
    }

    func connect(_ slot: AgentSlot) {
        guard !self.stopping.load(ordering: .relaxed) else { return }
        let options = self.options
        let runner = self
        let tls: NIOSSLContext?
        do {
            tls = try slot.tlsContext(options: options)
        } catch {
            self.reconnectLater(slot)
            return
        }
        let bootstrap = ClientBootstrap(group: self.group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: nil)) }
                    switch options.transport {
                    case .webSocket:
                        let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 26) { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                let pipeline = channel.pipeline.syncOperations
                                pipeline.removeHandler(name: "fleet.upgrade", promise: nil)
                                try pipeline.addHandler(WebSocketAgentConnection(slot: slot, runner: runner))
                            }
                        }
                        try pipeline.addHTTPClientHandlers(
                            withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                        )
                        try pipeline.addHandler(UpgradeRequest(options: options), name: "fleet.upgrade")
                    case .http:
                        try pipeline.addHTTPClientHandlers()
                        try pipeline.addHandler(HTTPAgentConnection(slot: slot, runner: runner))
                    }
                }
            }
        let ports = options.ports
        let port = ports.isEmpty ? options.port : ports[slot.server.withLockedValue { $0 } % ports.count]
        bootstrap.connect(host: options.host, port: port).whenComplete { result in
            switch result {
            case .success(let channel):
                slot.attach(channel)
                channel.closeFuture.whenComplete { _ in runner.reconnectLater(slot) }
            case .failure:
                // Behind several servers, the next one.
                slot.server.withLockedValue { $0 += 1 }
                runner.reconnectLater(slot)
            }
        }
    }

    func reconnectLater(_ slot: AgentSlot) {
        guard !self.stopping.load(ordering: .relaxed) else { return }
        let delay = TimeAmount.nanoseconds(
            Int64(self.options.reconnectDelay.components.seconds) * 1_000_000_000 + self.options.reconnectDelay
                .components.attoseconds / 1_000_000_000
        )
        self.group.next().scheduleTask(in: delay) {
            self.statistics.reconnectCount.wrappingAdd(1, ordering: .relaxed)
            self.connect(slot)
        }
    }
}

/// One agent's state across reconnects, and its current channel.
final class AgentSlot: Sendable {
    let state: NIOLockedValueBox<SimulatedAgent>
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)

    /// The TLS context for the credential it was made with (remade when the agent's certificate changes).
    private let tls = NIOLockedValueBox<(credential: ClientCredential?, context: NIOSSLContext)?>(nil)

    /// Which of several servers it connects to (``FleetOptions/ports``).
    let server: NIOLockedValueBox<Int>

    init(agent: SimulatedAgent, server: Int = 0) {
        self.state = NIOLockedValueBox(agent)
        self.server = NIOLockedValueBox(server)
    }

    /// The TLS client context for the agent's current certificate; nil without TLS.
    func tlsContext(options: FleetOptions) throws -> NIOSSLContext? {
        guard let configured = options.tlsTrustRootsPEM else { return nil }
        let credential = self.state.withLockedValue { $0.credential }
        // Connections made with an offered certificate trust what the offer said, as the supervisor does.
        let roots = credential?.trustPEM ?? configured
        if let cached = self.tls.withLockedValue({ $0 }), cached.credential == credential { return cached.context }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(roots.utf8)))
        configuration.certificateVerification = .noHostnameVerification
        if let credential {
            configuration.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(credential.certificatePEM.utf8))
                .map { .certificate($0) }
            configuration.privateKey = .privateKey(
                try NIOSSLPrivateKey(bytes: Array(credential.privateKeyPEM.utf8), format: .pem)
            )
        }
        let context = try NIOSSLContext(configuration: configuration)
        self.tls.withLockedValue { $0 = (credential, context) }
        return context
    }

    /// Sends messages from outside a connection handler (a download that finished) on the current connection.
    private let outbox = NIOLockedValueBox<(@Sendable ([SimulatedAgent.Action]) -> Void)?>(nil)

    func setOutbox(_ outbox: (@Sendable ([SimulatedAgent.Action]) -> Void)?) {
        self.outbox.withLockedValue { $0 = outbox }
    }

    /// Performs actions on the current connection; without one they are dropped (the agent's state keeps
    /// what they reported, and it reports it again when it reconnects).
    func perform(_ actions: [SimulatedAgent.Action]) {
        guard !actions.isEmpty, let outbox = self.outbox.withLockedValue({ $0 }) else { return }
        outbox(actions)
    }

    func attach(_ channel: any Channel) { self.channel.withLockedValue { $0 = channel } }
    func close() { self.channel.withLockedValue { $0 }?.close(promise: nil) }
}

extension Duration {
    var timeAmount: TimeAmount {
        .nanoseconds(Int64(self.components.seconds) * 1_000_000_000 + self.components.attoseconds / 1_000_000_000)
    }
}

/// Sends the WebSocket upgrade request once connected.
final class UpgradeRequest: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let options: FleetOptions

    init(options: FleetOptions) { self.options = options }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders([("Host", "\(self.options.host):\(self.options.port)"), ("Content-Length", "0")])
        if let token = self.options.token { headers.add(name: "Authorization", value: "Bearer \(token)") }
        context.write(
            self.wrapOutboundOut(
                .head(HTTPRequestHead(version: .http1_1, method: .GET, uri: self.options.path, headers: headers))
            ),
            promise: nil
        )
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A response without an upgrade (401, 503…): drop the connection and retry later.
        context.close(promise: nil)
    }
}

/// A simulated agent on a WebSocket.
final class WebSocketAgentConnection: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    let slot: AgentSlot
    let runner: FleetRunner
    private var heartbeat: RepeatedTask?

    init(slot: AgentSlot, runner: FleetRunner) {
        self.slot = slot
        self.runner = runner
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.runner.statistics.connectedCount.wrappingAdd(1, ordering: .relaxed)
        let first = self.slot.state.withLockedValue { $0.connected() }
        self.send(first, context: context)
        if self.runner.options.requestCertificates,
            let request = self.slot.state.withLockedValue({ agent in
                agent.credential == nil ? try? agent.certificateRequest() : nil
            })
        {
            self.send(request, context: context)
        }
        let seconds = Int64(self.slot.state.withLockedValue { $0.profile.heartbeatSeconds })
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        self.slot.setOutbox { actions in
            eventLoop.execute {
                let (handler, context) = loopBound.value
                if context.channel.isActive { handler.perform(actions, context: context) }
            }
        }
        self.heartbeat = context.eventLoop.scheduleRepeatedTask(
            initialDelay: .seconds(seconds),
            delay: .seconds(seconds)
        ) { _ in
            let (handler, context) = loopBound.value
            handler.send(handler.slot.state.withLockedValue { $0.heartbeat() }, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.slot.setOutbox(nil)
        self.heartbeat?.cancel()
        self.runner.statistics.connectedCount.wrappingSubtract(1, ordering: .relaxed)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        guard frame.opcode == .binary,
            let message = try? WebSocketFraming.decodeServerMessage(Array(frame.unmaskedData.readableBytesView))
        else {
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        }
        self.runner.statistics.receivedCount.wrappingAdd(1, ordering: .relaxed)
        self.perform(self.slot.state.withLockedValue { $0.receive(message) }, context: context)
    }

    func perform(_ actions: [SimulatedAgent.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let outgoing):
                self.send(outgoing, context: context)
            case .sendLater(let outgoing, let delay):
                later(delay, context: context) { self.send(outgoing, context: context) }
            case .reconnect:
                // After what was sent before it is flushed.
                context.channel.flush()
                context.close(promise: nil)
                return
            case .download(let download):
                self.runner.download(download, for: self.slot)
            }
        }
    }

    func send(_ message: OpAMP_AgentToServer, context: ChannelHandlerContext) {
        var message = message
        self.slot.state.withLockedValue { $0.stamp(&message) }
        guard let bytes = try? WebSocketFraming.encode(message) else { return }
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        self.runner.statistics.counted(message)
        context.writeAndFlush(
            self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: buffer)),
            promise: nil
        )
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A simulated agent polling over plain HTTP on a keep-alive connection.
final class HTTPAgentConnection: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let slot: AgentSlot
    let runner: FleetRunner
    private var queue: [OpAMP_AgentToServer] = []
    private var inFlight = false
    private var body: ByteBuffer?
    private var poll: Scheduled<Void>?

    init(slot: AgentSlot, runner: FleetRunner) {
        self.slot = slot
        self.runner = runner
    }

    func channelActive(context: ChannelHandlerContext) {
        self.runner.statistics.connectedCount.wrappingAdd(1, ordering: .relaxed)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        self.slot.setOutbox { actions in
            eventLoop.execute {
                let (handler, context) = loopBound.value
                guard context.channel.isActive else { return }
                handler.perform(actions, context: context)
                handler.pump(context: context)
            }
        }
        self.enqueue(self.slot.state.withLockedValue { $0.connected() }, context: context)
        context.fireChannelActive()
    }

    /// Queues what the actions send (HTTP sends one request at a time).
    func perform(_ actions: [SimulatedAgent.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let outgoing): self.queue.append(outgoing)
            case .sendLater(let outgoing, let delay):
                later(delay, context: context) { self.enqueue(outgoing, context: context) }
            case .reconnect:
                // HTTP: the next request goes out on a new connection with the new certificate, and carries the
                // status (APPLIED) the reconnect produces.
                self.queue.removeAll()
                context.close(promise: nil)
                return
            case .download(let download):
                self.runner.download(download, for: self.slot)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.slot.setOutbox(nil)
        self.poll?.cancel()
        self.runner.statistics.connectedCount.wrappingSubtract(1, ordering: .relaxed)
        context.fireChannelInactive()
    }

    private func enqueue(_ message: OpAMP_AgentToServer, context: ChannelHandlerContext) {
        self.queue.append(message)
        self.pump(context: context)
    }

    func pump(context: ChannelHandlerContext) {
        guard !self.inFlight, !self.queue.isEmpty else { return }
        self.poll?.cancel()
        var message = self.queue.removeFirst()
        self.slot.state.withLockedValue { $0.stamp(&message) }
        guard let bytes: [UInt8] = try? message.serializedBytes() else { return }
        self.inFlight = true
        self.runner.statistics.counted(message)
        let options = self.runner.options
        var headers = HTTPHeaders([
            ("Host", "\(options.host):\(options.port)"), ("Content-Type", "application/x-protobuf"),
            ("Content-Length", String(bytes.count)),
        ])
        if let token = options.token { headers.add(name: "Authorization", value: "Bearer \(token)") }
        context.write(
            self.wrapOutboundOut(
                .head(HTTPRequestHead(version: .http1_1, method: .POST, uri: options.path, headers: headers))
            ),
            promise: nil
        )
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            if head.status != .ok && head.status != .badRequest { context.close(promise: nil) }
            self.body = nil
        case .body(var chunk):
            if self.body == nil { self.body = chunk } else { self.body!.writeBuffer(&chunk) }
        case .end:
            self.inFlight = false
            let bytes = self.body.map { Array($0.readableBytesView) } ?? []
            self.body = nil
            if let message = try? OpAMP_ServerToAgent(serializedBytes: bytes) {
                self.runner.statistics.receivedCount.wrappingAdd(1, ordering: .relaxed)
                self.perform(self.slot.state.withLockedValue { $0.receive(message) }, context: context)
                if !context.channel.isActive { return }
            }
            if self.queue.isEmpty {
                let seconds = Int64(self.slot.state.withLockedValue { $0.profile.heartbeatSeconds })
                let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                self.poll = context.eventLoop.scheduleTask(in: .seconds(seconds)) {
                    let (handler, context) = loopBound.value
                    handler.enqueue(handler.slot.state.withLockedValue { $0.heartbeat() }, context: context)
                }
            }
            self.pump(context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Runs `action` on the context's event loop after `delay`, if the channel is still open.
func later(_ delay: Duration, context: ChannelHandlerContext, _ action: @escaping () -> Void) {
    let loopBound = NIOLoopBound((context, action), eventLoop: context.eventLoop)
    context.eventLoop.scheduleTask(in: delay.timeAmount) {
        let (context, action) = loopBound.value
        if context.channel.isActive { action() }
    }
}
