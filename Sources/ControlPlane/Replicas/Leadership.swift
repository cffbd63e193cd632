import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import OpAMPServer
import ServiceLifecycle

/// What the database says about the lease when a replica asks for it.
public struct LeaseState: Sendable, Hashable {
    /// The replica holding the lease (`nil`: nobody, for example after a graceful release).
    public var holder: String?
    /// Increases with every change of holder: the fencing token.
    public var epoch: Int
    /// The holder's API address, where followers forward writes.
    public var holderAPI: String?
    /// Whether this very call took or renewed it (only then does the caller lead).
    public var held: Bool

    /// Creates a lease state.
    public init(holder: String?, epoch: Int, holderAPI: String?, held: Bool) {
        self.holder = holder
        self.epoch = epoch
        self.holderAPI = holderAPI
        self.held = held
    }
}

/// An agent as the replica it is connected to judged it, for the leader: its view, and the assignment the
/// judgement was made against (a judgement against an older assignment does not count).
public struct PublishedView: Sendable, Hashable, Codable {
    /// The engine's view of the agent.
    public var view: AgentView
    /// The assignment the replica judged the agent's progress against.
    public var assignment: Assignment?
    /// The replica the agent is connected to.
    public var replica: String
    /// What the leader needs to rotate the agent's certificate (nil: the replica checks no credentials).
    public var credentials: PublishedCredentials?

    /// Creates a published view.
    public init(view: AgentView, assignment: Assignment?, replica: String, credentials: PublishedCredentials? = nil) {
        self.view = view
        self.assignment = assignment
        self.replica = replica
        self.credentials = credentials
    }
}

/// An agent's credentials as the replica it is connected to sees them: what a certificate rotation run by the
/// leader looks at, and the certificate that replica offered when the leader asked it to.
public struct PublishedCredentials: Sendable, Hashable, Codable {
    /// It accepts OpAMP connection settings.
    public var acceptsConnectionSettings: Bool
    /// SHA-256 of the client certificate it connected with, and that certificate's validity.
    public var certificateFingerprint: String?
    /// Start of that certificate's validity.
    public var certificateNotBefore: Date?
    /// End of that certificate's validity.
    public var certificateNotAfter: Date?
    /// The connection settings hash it last reported, with the status and error.
    public var reportedSettingsHash: [UInt8]?
    /// Status of those settings.
    public var settingsStatus: RemoteConfigReport.State?
    /// Error for those settings.
    public var settingsError: String?
    /// The certificate this replica offered for a rotation (its id), when the leader asked it to.
    public var offer: DelegatedOffer?

    /// Creates the credentials part of a view.
    public init(
        acceptsConnectionSettings: Bool,
        certificateFingerprint: String? = nil,
        certificateNotBefore: Date? = nil,
        certificateNotAfter: Date? = nil,
        reportedSettingsHash: [UInt8]? = nil,
        settingsStatus: RemoteConfigReport.State? = nil,
        settingsError: String? = nil,
        offer: DelegatedOffer? = nil
    ) {
        self.acceptsConnectionSettings = acceptsConnectionSettings
        self.certificateFingerprint = certificateFingerprint
        self.certificateNotBefore = certificateNotBefore
        self.certificateNotAfter = certificateNotAfter
        self.reportedSettingsHash = reportedSettingsHash
        self.settingsStatus = settingsStatus
        self.settingsError = settingsError
        self.offer = offer
    }
}

/// A certificate a replica offered its agent on the leader's behalf.
public struct DelegatedOffer: Sendable, Hashable, Codable {
    /// The rotation it belongs to.
    public var rotation: Int
    /// The certificate's SHA-256 fingerprint.
    public var fingerprint: String
    /// The hash of the connection settings that carried it.
    public var settingsHash: [UInt8]
    /// Why the offer could not be sent (the agent is then skipped, as on the leader).
    public var problem: String?

    /// Creates an offer.
    public init(rotation: Int, fingerprint: String, settingsHash: [UInt8], problem: String? = nil) {
        self.rotation = rotation
        self.fingerprint = fingerprint
        self.settingsHash = settingsHash
        self.problem = problem
    }
}

/// What several policyd on one database share besides the store: the leader's lease, the agents each
/// replica sees, and the engine state as the leader last saved it. ``PostgresStore`` implements it.
public protocol ReplicaCoordination: Sendable {
    /// Takes the lease when it is free or expired, or renews it when `replica` holds it with `epoch`.
    /// Times are the database's own, so replicas' clocks do not matter.
    func acquireOrRenewLease(replica: String, epoch: Int?, leaseSeconds: Double, api: String?) throws -> LeaseState
    /// Gives the lease up (a graceful stop), so another replica takes over at once.
    func releaseLease(replica: String, epoch: Int) throws
    /// From now on, leader-only writes go through only while `replica` holds the lease with `epoch`
    /// (`nil`: none go through).
    func fence(replica: String, epoch: Int?)
    /// Says this replica is alive (the leader ignores agents of replicas that stopped saying so).
    func heartbeat(replica: String, api: String?) throws
    /// Publishes agents connected to `replica` whose view changed (a later write of the same agent, from any
    /// replica, replaces it), and withdraws those no longer connected here: `gone` holds their last views,
    /// marked disconnected, written only where this replica wrote them last (an agent that moved stays with
    /// its new replica). A withdrawn agent keeps its last report, so a leader that takes over later still
    /// counts the ring's grace period from when the agent was last seen.
    func publishViews(replica: String, changed: [PublishedView], gone: [PublishedView]) throws
    /// Removes views withdrawn more than `seconds` ago, and those of replicas silent that long.
    func pruneViews(olderThanSeconds seconds: Double) throws
    /// Views written or withdrawn since `cursor` was handed out (all when `nil`), and the cursor for the next
    /// read. In commit order: a write that took long to commit is read after it commits, never skipped.
    /// Withdrawn agents come disconnected (or, written by an older policyd, with no view); a view may come
    /// again unchanged.
    func publishedViews(after cursor: Int64?) throws -> (views: [(uid: String, view: PublishedView?)], cursor: Int64)
    /// Listens for news from the other replicas (LISTEN/NOTIFY), reconnecting after a loss: `handler` gets
    /// what happened and the sender's database time.
    func listen(_ handler: @escaping @Sendable (_ news: ReplicaNews, _ sentAt: Double?) -> Void)
    /// Agent records (as every replica records its agents) written since `cursor` was handed out (all when
    /// `nil`), and the cursor for the next read; in commit order, as ``publishedViews(after:)``.
    func agentRecords(after cursor: Int64?) throws -> (records: [AgentRecord], cursor: Int64)
    /// Replicas whose last heartbeat is at most `maxAgeSeconds` old.
    func liveReplicas(maxAgeSeconds: Double) throws -> Set<String>
    /// The engine state when it was saved after `generation` (all when `nil`), with its generation.
    func controlState(after generation: Int?) throws -> (state: ControlState, generation: Int)?
}

/// What a replica hears from the others.
public enum ReplicaNews: Sendable, Hashable {
    /// The leader saved the engine state.
    case stateSaved
    /// A replica published agent views.
    case viewsPublished
    /// Listening (again): news sent before may have been missed.
    case listening
}

/// This replica's role, as its elector last learned it.
public final class Leadership: Sendable {
    /// The role.
    public enum Role: Sendable, Hashable {
        /// Drives rollouts, holding the lease with this epoch.
        case leader(epoch: Int)
        /// Follows; the leader's API address when there is a leader.
        case follower(leaderAPI: String?)
    }

    /// This replica's name as people gave it (logs, metrics).
    public let name: String
    /// This process's identity in the lease and in published views: the name and a random suffix, so two
    /// processes given one name (a copied config, a pod restarted while the old one is cut off) never share
    /// an epoch.
    public let replica: String
    /// Where this replica's API is reached by the other replicas.
    public let api: String?
    /// Shared state with the other replicas.
    public let coordination: any ReplicaCoordination
    /// Lease timing.
    public let leaseSeconds: Double
    /// How often the lease is renewed (or tried for).
    public let retrySeconds: Double
    /// How long the leader goes on without a successful renewal before it steps down.
    public let renewDeadlineSeconds: Double
    /// Sends API writes to the leader while this replica follows.
    public let forwarding: HTTPClient
    private let state = NIOLockedValueBox<(role: Role, transitions: Int, renewedAt: ContinuousClock.Instant)>(
        (.follower(leaderAPI: nil), 0, .now)
    )

    /// Creates the leadership of one replica; it follows until its elector wins the lease.
    public init(
        replica: String,
        api: String?,
        coordination: any ReplicaCoordination,
        leaseSeconds: Double = 6,
        retrySeconds: Double = 1,
        renewDeadlineSeconds: Double = 4,
        forwarding: HTTPClient = .shared
    ) {
        precondition(leaseSeconds > renewDeadlineSeconds && renewDeadlineSeconds > retrySeconds * 1.2)
        self.name = replica
        self.replica = "\(replica)#\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        self.api = api
        self.coordination = coordination
        self.leaseSeconds = leaseSeconds
        self.retrySeconds = retrySeconds
        self.renewDeadlineSeconds = renewDeadlineSeconds
        self.forwarding = forwarding
    }

    /// The client a follower forwards API writes with: it trusts the system's roots and, when given, the CA
    /// that signed the replicas' API certificates (policyd's `--tls-ca`), so replicas with certificates from
    /// a private CA reach each other. A leader that cannot be reached fails the forward within 5 s (no
    /// connection retries), so the caller hears `leader_unreachable` at once. Shut it down when the replica
    /// stops (``stopForwarding()``).
    public static func forwardingClient(trustingPEM pem: String?) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let pem {
            tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))]
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// When the controller last finished a step (nil: not yet).
    private let lastStep = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
    /// When the elector last had an answer from the database (nil: not yet).
    private let lastAnswer = NIOLockedValueBox<ContinuousClock.Instant?>(nil)

    /// A replica whose database has not answered for this long is not ready (`/readyz`): it can neither
    /// follow the leader's state nor publish its agents, so a load balancer should send new agents elsewhere.
    public static let unreachableAfterSeconds = 10

    /// The elector had an answer from the database.
    func databaseAnswered() {
        self.lastAnswer.withLockedValue { $0 = .now }
    }

    /// Why this replica is not ready, or nil when it is: its database has not answered its elector yet, or
    /// not for ``unreachableAfterSeconds``.
    public var notReadyReason: String? {
        self.lastAnswer.withLockedValue { last in
            guard let last else { return "the database has not answered yet" }
            let silent = ContinuousClock.now - last
            guard silent >= .seconds(Self.unreachableAfterSeconds) else { return nil }
            return "the database has not answered for \(silent.components.seconds) s"
        }
    }

    /// The controller finished a step.
    func controllerStepped() {
        self.lastStep.withLockedValue { $0 = .now }
    }

    /// A controller that has not stepped for this long no longer keeps its replica's agents counted: they are
    /// connected, but nobody here judges them or pushes to them.
    static let stalledControllerSeconds = 30

    /// Whether this replica's heartbeat should go on: its controller steps (or has not started yet).
    var controllerAlive: Bool {
        self.lastStep.withLockedValue { last in
            last.map { ContinuousClock.now - $0 < .seconds(Self.stalledControllerSeconds) } ?? true
        }
    }

    /// Shuts the forwarding client down when it is this replica's own (after the API stopped).
    public func stopForwarding() async {
        guard self.forwarding !== HTTPClient.shared else { return }
        try? await self.forwarding.shutdown()
    }

    /// The current role. A leader whose last renewal is older than the renew deadline follows, whether or
    /// not its elector has noticed yet (a renewal may hang).
    public var role: Role {
        self.state.withLockedValue { state in
            if case .leader = state.role,
                ContinuousClock.now - state.renewedAt > .milliseconds(Int(self.renewDeadlineSeconds * 1000))
            {
                return .follower(leaderAPI: nil)
            }
            return state.role
        }
    }

    /// The epoch when leading.
    public var leaderEpoch: Int? {
        if case .leader(let epoch) = self.role { return epoch }
        return nil
    }

    /// News from the other replicas since the controller last asked: the state was saved, views were
    /// published (both set after a reconnection, as news may have been missed).
    private let news = NIOLockedValueBox<(state: Bool, views: Bool, lag: Double?)>((true, true, nil))

    /// Called by the listener.
    func heard(_ heard: ReplicaNews, sentAt: Double?) {
        let lag = sentAt.map { max(0, Date().timeIntervalSince1970 - $0) }
        self.news.withLockedValue { news in
            switch heard {
            case .stateSaved: news.state = true
            case .viewsPublished: news.views = true
            case .listening:
                news.state = true
                news.views = true
            }
            if let lag { news.lag = lag }
        }
    }

    /// Whether the state was saved since the last call (and clears it).
    func takeStateNews() -> Bool {
        self.news.withLockedValue { news in
            defer { news.state = false }
            return news.state
        }
    }

    /// Whether views were published since the last call (and clears it).
    func takeViewNews() -> Bool {
        self.news.withLockedValue { news in
            defer { news.views = false }
            return news.views
        }
    }

    /// How late the last notification arrived (the sender's database clock against this replica's).
    public var notificationLag: Double? { self.news.withLockedValue { $0.lag } }

    /// How many times this replica became leader.
    public var transitions: Int { self.state.withLockedValue { $0.transitions } }

    func set(_ role: Role, renewedAt: ContinuousClock.Instant = .now) {
        self.state.withLockedValue { state in
            if case .leader = role, state.role != role { state.transitions += 1 }
            state.role = role
            state.renewedAt = renewedAt
        }
    }

    /// The default replica name: the host name (``replica`` adds the per-process suffix).
    public static func defaultReplicaName() -> String { ProcessInfo.processInfo.hostName }
}

/// Keeps this replica's lease: renews it while leading, tries for it while following, and steps down when
/// a renewal has not succeeded within the deadline. Safety does not rest on this timing: every step the
/// leader saves checks the epoch in the database (``ReplicaCoordination/fence(replica:epoch:)``).
///
/// It runs on a thread of its own, not on Swift's shared executor: a controller step or a burst of API calls
/// that keeps those few threads busy (two on a two-core machine) must not delay a renewal past the lease.
public struct LeaderElector: Service {
    let leadership: Leadership
    let logger: Logger

    /// Creates the elector.
    public init(leadership: Leadership, logger: Logger = Logger(label: "tailplane.leader")) {
        self.leadership = leadership
        self.logger = logger
    }

    /// Runs until the service group shuts down (or the task is cancelled), then gives the lease up.
    public func run() async throws {
        let listening = self.leadership
        listening.coordination.listen { news, sentAt in listening.heard(news, sentAt: sentAt) }
        let stop = StopSignal()
        await cancelWhenGracefulShutdown {
            await withTaskCancellationHandler {
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    let thread = Thread {
                        self.loop(until: stop)
                        done.resume()
                    }
                    thread.name = "tailplane-elector"
                    thread.start()
                }
            } onCancel: {
                stop.raise()
            }
        }
    }

    /// Set once to stop the loop; wakes it from its wait between attempts.
    final class StopSignal: Sendable {
        private let raised = NIOLockedValueBox(false)
        private let wake = DispatchSemaphore(value: 0)

        func raise() {
            self.raised.withLockedValue { $0 = true }
            self.wake.signal()
        }

        var isRaised: Bool { self.raised.withLockedValue { $0 } }

        /// Waits until `deadline`, less if raised.
        func wait(until deadline: ContinuousClock.Instant) {
            let left = deadline - .now
            guard left > .zero else { return }
            let nanoseconds =
                Int(left.components.seconds) * 1_000_000_000 + Int(left.components.attoseconds / 1_000_000_000)
            _ = self.wake.wait(timeout: .now() + .nanoseconds(nanoseconds))
        }
    }

    /// The elector's loop, blocking, on its own thread.
    private func loop(until stop: StopSignal) {
        var epoch: Int?
        var lastRenewal = ContinuousClock.now
        var stalled = false
        var previous: ContinuousClock.Instant?
        let leadership = self.leadership
        while !stop.isRaised {
            // Taken before asking: a renewal counts from when it was asked for.
            let now = ContinuousClock.now
            if let previous, now - previous > .milliseconds(Int(leadership.retrySeconds * 1000) + 1000) {
                self.logger.warning("lease attempts ran late", metadata: ["interval": "\(now - previous)"])
            }
            previous = now
            var answered = false
            do {
                let lease = try leadership.coordination.acquireOrRenewLease(
                    replica: leadership.replica,
                    epoch: epoch,
                    leaseSeconds: leadership.leaseSeconds,
                    api: leadership.api
                )
                leadership.databaseAnswered()
                answered = true
                if lease.held {
                    if epoch != lease.epoch {
                        self.logger.notice("this replica leads", metadata: ["epoch": "\(lease.epoch)"])
                    }
                    epoch = lease.epoch
                    lastRenewal = now
                    leadership.set(.leader(epoch: lease.epoch), renewedAt: now)
                } else {
                    if epoch != nil {
                        self.logger.warning(
                            "another replica leads now",
                            metadata: ["leader": "\(lease.holder ?? "none")", "epoch": "\(lease.epoch)"]
                        )
                    }
                    epoch = nil
                    leadership.set(.follower(leaderAPI: lease.holder == nil ? nil : lease.holderAPI))
                }
            } catch {
                self.logger.warning("cannot reach the lease", metadata: ["error": "\(error)"])
                if epoch != nil, now - lastRenewal > .milliseconds(Int(leadership.renewDeadlineSeconds * 1000)) {
                    self.logger.error("the lease was not renewed in time: stepping down")
                    epoch = nil
                    leadership.set(.follower(leaderAPI: nil))
                }
            }
            // This replica is alive (its agents count for the leader): said here rather than from the
            // controller's step, so a step slowed by a burst of reconnecting agents does not make them look
            // gone. A database that cannot be reached was reported just above.
            if stop.isRaised { break }
            // Not after a failed attempt: the database did not answer, and a heartbeat waiting out its own
            // deadline would only put off the next attempt at the lease.
            if answered, leadership.controllerAlive {
                do {
                    try leadership.coordination.heartbeat(replica: leadership.replica, api: leadership.api)
                } catch {
                    self.logger.debug("cannot record this replica's heartbeat", metadata: ["error": "\(error)"])
                }
            } else if !leadership.controllerAlive, !stalled {
                self.logger.error(
                    "the controller has not stepped for \(Leadership.stalledControllerSeconds) s: no more heartbeats, so the leader counts this replica's agents as gone"
                )
            }
            stalled = !leadership.controllerAlive
            // The next attempt a retry period after this one began.
            stop.wait(until: now + .milliseconds(Int(leadership.retrySeconds * 1000)))
        }
        if let epoch {
            leadership.set(.follower(leaderAPI: nil))
            do {
                try leadership.coordination.releaseLease(replica: leadership.replica, epoch: epoch)
                self.logger.notice("lease released")
            } catch {
                self.logger.warning("cannot release the lease; it expires by itself", metadata: ["error": "\(error)"])
            }
        }
    }
}
