import Foundation
import Hummingbird
import Metrics
import NIOConcurrencyHelpers
import Prometheus

/// The control plane's own metrics, made through swift-metrics with a Prometheus factory of its own (not
/// the process-wide `MetricsSystem`, so several control planes can live in one test process), served at
/// `/metrics` in the Prometheus text format.
public final class ControlPlaneMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let agentGauges = NIOLockedValueBox<[String: Metrics.Gauge]>([:])
    private let timers = NIOLockedValueBox<[String: Metrics.Timer]>([:])
    let ringSize: Metrics.Gauge
    let ringConvergence: Metrics.Gauge
    let rolloutStage: Metrics.Gauge
    let rolloutActive: Metrics.Gauge
    /// With several replicas: 1 while this one leads, the lease epoch it knows, times it became leader.
    let leader: Metrics.Gauge
    let leaderEpoch: Metrics.Gauge
    let leaderTransitions: Metrics.Gauge
    /// How late the last LISTEN/NOTIFY news from another replica arrived.
    let notificationLag: Metrics.Gauge
    /// Replicas seen alive (a heartbeat in the last 10 s), this one included.
    let replicasLive: Metrics.Gauge
    let applyDuration: Metrics.Timer
    /// Console sign-ins accepted and refused (a wrong token): `tailplane_console_logins_total{outcome}`.
    let consoleLoginsAccepted: Metrics.Counter
    let consoleLoginsRefused: Metrics.Counter

    /// Creates the metrics.
    public init() {
        var factory = PrometheusMetricsFactory(registry: self.registry)
        let seconds: [Duration] = [
            .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        factory.defaultDurationHistogramBuckets = seconds
        self.factory = factory
        self.ringSize = Metrics.Gauge(label: "tailplane_ring_size", factory: factory)
        self.ringConvergence = Metrics.Gauge(label: "tailplane_ring_convergence_seconds", factory: factory)
        self.rolloutStage = Metrics.Gauge(label: "tailplane_rollout_stage", factory: factory)
        self.rolloutActive = Metrics.Gauge(label: "tailplane_rollout_active", factory: factory)
        self.leader = Metrics.Gauge(label: "tailplane_leader", factory: factory)
        self.leaderEpoch = Metrics.Gauge(label: "tailplane_leader_epoch", factory: factory)
        self.leaderTransitions = Metrics.Gauge(label: "tailplane_leader_transitions", factory: factory)
        self.notificationLag = Metrics.Gauge(label: "tailplane_notification_lag_seconds", factory: factory)
        self.replicasLive = Metrics.Gauge(label: "tailplane_replicas_live", factory: factory)
        self.applyDuration = Metrics.Timer(label: "tailplane_apply_duration_seconds", factory: factory)
        self.consoleLoginsAccepted = Metrics.Counter(
            label: "tailplane_console_logins_total",
            dimensions: [("outcome", "accepted")],
            factory: factory
        )
        self.consoleLoginsRefused = Metrics.Counter(
            label: "tailplane_console_logins_total",
            dimensions: [("outcome", "refused")],
            factory: factory
        )
    }

    /// Counts a console sign-in.
    func consoleLogin(accepted: Bool) {
        (accepted ? self.consoleLoginsAccepted : self.consoleLoginsRefused).increment()
    }

    /// Agents by tier and config state; states that disappeared go to 0.
    func recordAgents(_ counts: [String: Int]) {
        self.agentGauges.withLockedValue { gauges in
            for key in Set(gauges.keys).union(counts.keys) {
                let gauge =
                    gauges[key]
                    ?? {
                        let parts = key.split(separator: "|", maxSplits: 1).map(String.init)
                        let made = Metrics.Gauge(
                            label: "tailplane_agents",
                            dimensions: [("tier", parts[0]), ("state", parts.count > 1 ? parts[1] : "")],
                            factory: self.factory
                        )
                        gauges[key] = made
                        return made
                    }()
                gauge.record(counts[key] ?? 0)
            }
        }
    }

    private let refusals = NIOLockedValueBox<[String: (counter: Metrics.Counter, total: Int)]>([:])

    /// Agent connections and messages refused for their credentials, by kind (the OpAMP server's running
    /// totals; counters advance by the difference).
    func recordRefusals(_ totals: [String: Int]) {
        self.refusals.withLockedValue { counters in
            for (kind, total) in totals {
                let entry =
                    counters[kind]
                    ?? (
                        Metrics.Counter(
                            label: "tailplane_agent_refusals_total",
                            dimensions: [("kind", kind)],
                            factory: self.factory
                        ), 0
                    )
                if total > entry.total { entry.counter.increment(by: total - entry.total) }
                counters[kind] = (entry.counter, max(total, entry.total))
            }
        }
    }

    /// API latency by method, route and status class.
    func recordRequest(method: String, route: String, status: Int, duration: Duration) {
        let key = "\(method) \(route) \(status / 100)xx"
        let timer = self.timers.withLockedValue { timers in
            if let timer = timers[key] { return timer }
            let made = Metrics.Timer(
                label: "tailplane_api_request_duration_seconds",
                dimensions: [("method", method), ("route", route), ("status", "\(status / 100)xx")],
                factory: self.factory
            )
            timers[key] = made
            return made
        }
        timer.record(duration: duration)
    }

    /// This replica does not lead (its lease lapsed or went to another): `tailplane_leader` says 0.
    func recordNotLeading() {
        self.leader.record(0)
    }

    /// The Prometheus text exposition.
    public func exposition() -> String {
        self.registry.emitToString()
    }
}

/// Times every API request into ``ControlPlaneMetrics``.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ControlPlaneMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            self.metrics.recordRequest(
                method: request.method.rawValue,
                route: context.endpointPath ?? "unmatched",
                status: Int(response.status.code),
                duration: ContinuousClock.now - start
            )
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            self.metrics.recordRequest(
                method: request.method.rawValue,
                route: context.endpointPath ?? "unmatched",
                status: Int(status),
                duration: ContinuousClock.now - start
            )
            throw error
        }
    }
}
