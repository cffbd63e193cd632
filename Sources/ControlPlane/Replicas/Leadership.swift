import Foundation
import Logging
import NIOConcurrencyHelpers
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

    /// Creates a published view.
    public init(view: AgentView, assignment: Assignment?, replica: String) {
        self.view = view
        self.assignment = assignment
        self.replica = replica
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
    /// replica, replaces it), and withdraws those no longer connected here (only where this replica wrote
    /// them last: an agent that moved stays with its new replica).
    func publishViews(replica: String, changed: [PublishedView], gone: [String]) throws
    /// Views written or withdrawn since `cursor` was handed out (all when `nil`), and the cursor for the next
    /// read. In commit order: a write that took long to commit is read after it commits, never skipped.
    /// Withdrawn agents come with no view; a view may come again unchanged.
    func publishedViews(after cursor: Int64?) throws -> (views: [(uid: String, view: PublishedView?)], cursor: Int64)
    /// Listens for news from the other replicas (LISTEN/NOTIFY), reconnecting after a loss: `handler` gets
    /// what happened and the sender's database time.
    func listen(_ handler: @escaping @Sendable (_ news: ReplicaNews, _ sentAt: Double?) -> Void)
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
        renewDeadlineSeconds: Double = 4
    ) {
        precondition(leaseSeconds > renewDeadlineSeconds && renewDeadlineSeconds > retrySeconds * 1.2)
        self.name = replica
        self.replica = "\(replica)#\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        self.api = api
        self.coordination = coordination
        self.leaseSeconds = leaseSeconds
        self.retrySeconds = retrySeconds
        self.renewDeadlineSeconds = renewDeadlineSeconds
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
public struct LeaderElector: Service {
    let leadership: Leadership
    let logger: Logger

    /// Creates the elector.
    public init(leadership: Leadership, logger: Logger = Logger(label: "tailplane.leader")) {
        self.leadership = leadership
        self.logger = logger
    }

    /// Runs until the service group shuts down, then gives the lease up.
    public func run() async throws {
        let listening = self.leadership
        listening.coordination.listen { news, sentAt in listening.heard(news, sentAt: sentAt) }
        var epoch: Int?
        var lastRenewal = ContinuousClock.now
        let leadership = self.leadership
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            // Taken before asking: a renewal counts from when it was asked for.
            let now = ContinuousClock.now
            do {
                let lease = try leadership.coordination.acquireOrRenewLease(
                    replica: leadership.replica,
                    epoch: epoch,
                    leaseSeconds: leadership.leaseSeconds,
                    api: leadership.api
                )
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
            try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: .milliseconds(Int(leadership.retrySeconds * 1000)))
            }
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
