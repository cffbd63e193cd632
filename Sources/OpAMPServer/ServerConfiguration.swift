import Foundation
import NIOCore
import NIOSSL

/// Settings of the OpAMP endpoint.
public struct OpAMPServerConfiguration: Sendable {
    /// Address to bind.
    public var host: String = "0.0.0.0"
    /// Port (0 picks a free one; the bound port is reported by ``OpAMPServer/start()``).
    public var port: Int = 4320
    /// The one path served for both transports.
    public var path: String = "/v1/opamp"
    /// Largest message accepted, after decompression (HTTP 413, WebSocket close 1009 beyond it).
    public var maxMessageSize: Int = 64 * 1024 * 1024
    /// Most bytes of messages other than configs waiting for one WebSocket agent behind the one being sent
    /// (at most one config waits: a newer one replaces it): an agent with more waiting has stopped reading,
    /// and its connection is closed.
    public var maxUnsentBytes: Int = 16 * 1024 * 1024
    /// Most bytes of configs waiting for slow readers across all agents (each agent has at most one waiting,
    /// besides the one being sent; a config many agents wait for is encoded once and counted once). Past it,
    /// an agent that would make a config wait is closed instead, as one that stopped reading; it reconnects
    /// and gets the latest config in the first answer. This bounds the server's memory when ring changes go
    /// to thousands of load balancers that read slowly.
    public var maxWaitingConfigBytes: Int = 256 * 1024 * 1024
    /// Seconds a WebSocket agent may take no byte of a message (its socket full) before it counts as having
    /// stopped reading and its connection is closed. An agent that reads slowly but steadily is not closed,
    /// however large the message (a load balancer's config lists the whole ring: about 670 KB at 24,000
    /// samplers).
    public var stalledWriteSeconds: Double = 60
    /// Most connections held at once; beyond it new requests get 503 with `Retry-After`.
    public var maxConnections: Int = 20_000
    /// Seconds a refused client is asked to wait.
    public var retryAfterSeconds: Int = 30
    /// Bearer tokens accepted from agents; empty means no authentication. Ignored when ``access`` is set.
    public var agentTokens: Set<String> = []
    /// Who may connect and speak for which agent (tokens, certificates, revocations) and what happens to
    /// CSRs; nil: ``agentTokens`` decide.
    public var access: (any AgentAccessPolicy)?
    /// TLS for the port (HTTP and WebSocket alike); nil: plain text.
    public var tls: TLSConfiguration?
    /// CA certificates (PEM) that agents should trust for this server's certificate: sent as `ca_cert` with
    /// every certificate offered (the supervisor verifies the server with it after switching).
    public var serverCAPEM: String?
    /// Heartbeat interval offered to agents that report heartbeats (needs ``advertisedEndpoint``).
    public var heartbeatIntervalSeconds: UInt64 = 30
    /// The URL agents should use to reach this server (sent with the heartbeat offer). Without it no
    /// connection settings are offered, since a wrong endpoint would make agents reconnect elsewhere.
    public var advertisedEndpoint: String?
    /// An HTTP agent is offline after this long without a poll (at least three heartbeat intervals).
    public var httpOfflineAfter: TimeInterval = 90
    /// A WebSocket agent is offline (and its connection closed) after this long without a message
    /// (at least three heartbeat intervals; opamp-go sends one every 30 s by default).
    public var webSocketOfflineAfter: TimeInterval = 120
    /// Agents offline this long are forgotten (their state is dropped; the layer above sets their
    /// desired config again if they return).
    public var forgetOfflineAgentsAfter: TimeInterval = 24 * 3600
    /// Most agents remembered; beyond it the longest-offline ones are forgotten first.
    public var maxAgents: Int = 200_000
    /// A plain-HTTP connection that sends nothing for this many seconds is closed.
    public var httpIdleTimeout: Int = 120

    /// The HTTP offline limit, never below three offered heartbeat intervals.
    public var effectiveHTTPOfflineAfter: TimeInterval {
        max(self.httpOfflineAfter, 3 * TimeInterval(self.heartbeatIntervalSeconds))
    }

    /// The WebSocket offline limit, never below three offered heartbeat intervals plus a margin.
    public var effectiveWebSocketOfflineAfter: TimeInterval {
        max(self.webSocketOfflineAfter, 3 * TimeInterval(self.heartbeatIntervalSeconds) + 30)
    }
    /// Event loop threads (defaults to the number of cores).
    public var threads: Int = System.coreCount

    /// Defaults: port 4320, path /v1/opamp, 64 MiB messages, no authentication.
    public init() {}
}

extension OpAMPServerConfiguration {
    /// Files this process may keep open (`ulimit -n`), after raising its soft limit to the hard one as servers
    /// do; `nil` when the limit cannot be read. Every agent connection is one. Running out is not a refusal
    /// but a crash: on Linux, Dispatch stops the process when it cannot open the files it reads to size its
    /// thread pool.
    public static func raiseOpenFileLimit() -> Int? {
        var limit = rlimit()
        #if os(Linux)
            let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
            let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    /// Open files kept free of agent connections: the API's connections, the database, package files, logs.
    public static let reservedFiles = 1024

    /// The most agent connections a process with `openFiles` open files can hold and keep serving.
    public static func connectionCeiling(openFiles: Int) -> Int {
        max(1, openFiles - Self.reservedFiles)
    }
}
