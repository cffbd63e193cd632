import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import OpAMPServer
import ServiceLifecycle

/// The control plane as a service: the controller's loop and the HTTP API, over an OpAMP server's
/// registry and a store. Stops on graceful shutdown after the current step (a step's store write is never
/// cut in half).
public final class ControlPlaneServer: Service, Sendable {
    /// The controller (apply, rollouts, queries).
    public let controller: Controller
    /// The store.
    public let store: any ControlPlaneStore
    let api: ControlPlaneAPI
    let host: String
    let port: Int
    let tls: TLSConfiguration?
    let logger: Logger
    private let bound = NIOLockedValueBox<(port: Int?, waiters: [CheckedContinuation<Int, Never>])>((nil, []))

    /// Creates the service; nothing listens until ``run()``.
    public init(
        store: any ControlPlaneStore,
        registry: AgentRegistry,
        options: ControlPlaneOptions = ControlPlaneOptions(),
        tokens: [APIToken] = [],
        host: String = "127.0.0.1",
        port: Int = 4321,
        tls: TLSConfiguration? = nil,
        access: AgentAccess? = nil,
        packages: PackageRepository? = nil,
        leadership: Leadership? = nil,
        logger: Logger = Logger(label: "tailplane.control")
    ) throws {
        self.store = store
        self.controller = try Controller(
            store: store,
            registry: registry,
            options: options,
            logger: logger,
            access: access,
            packages: packages,
            leadership: leadership
        )
        self.api = ControlPlaneAPI(
            controller: self.controller,
            store: store,
            tokens: tokens,
            secureCookies: tls != nil
        )
        self.host = host
        self.port = port
        self.tls = tls
        self.logger = logger
    }

    /// `http(s)://HOST:PORT` for an address others can use: nil for a wildcard host (it names no host to reach)
    /// or port 0 (not known before listening). An IPv6 address is bracketed.
    public static func url(host: String, port: Int, tls: Bool) -> String? {
        guard port != 0, !["0.0.0.0", "::", ""].contains(host) else { return nil }
        return "\(tls ? "https" : "http")://\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }

    /// Every API route as `METHOD /path/{parameter}`.
    public func routes() -> [String] { self.api.routes() }

    /// The API port once it listens.
    public func apiPort() async -> Int {
        await withCheckedContinuation { continuation in
            let ready = self.bound.withLockedValue { state -> Int? in
                if let port = state.port { return port }
                state.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    private func listening(_ port: Int) {
        let waiters = self.bound.withLockedValue { state -> [CheckedContinuation<Int, Never>] in
            state.port = port
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
    }

    /// Serves the API and steps the controller until cancelled or shut down gracefully.
    public func run() async throws {
        let server: HTTPServerBuilder
        if let tls = self.tls {
            server = try .tls(.http1(), tlsConfiguration: tls)
        } else {
            server = .http1()
            if !["127.0.0.1", "::1", "localhost"].contains(self.host) {
                self.logger.warning(
                    "the API listens in plain text on a non-loopback address: API tokens cross the network unencrypted; give --tls-cert and --tls-key",
                    metadata: ["address": "\(self.host)"]
                )
            }
        }
        let controller = self.controller
        let app = Application(
            router: self.api.router(),
            server: server,
            configuration: .init(address: .hostname(self.host, port: self.port), serverName: "policyd"),
            onServerRunning: { [self] channel in
                let port = channel.localAddress?.port ?? self.port
                self.logger.info("API listening", metadata: ["address": "\(self.host):\(port)"])
                self.listening(port)
                if controller.packages != nil {
                    // Agents download packages from the API. A wildcard address names no host they can reach:
                    // then only --package-base-url tells them.
                    if let base = Self.url(host: self.host, port: port, tls: self.tls != nil) {
                        Task { await controller.setPackageBaseURL(base) }
                    }
                }
            },
            logger: self.logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await cancelWhenGracefulShutdown { await controller.run() }
            }
            group.addTask { try await app.runService() }
            // Both end on graceful shutdown; if either fails, leaving the loop cancels the other.
            for try await _ in group {}
        }
    }
}
