import ConfigRenderer
import Foundation
import Logging
import Metrics
import OpAMPProtocol
import OpAMPServer
import PolicyEngine
import ServiceLifecycle

/// The I/O around the rollout engine: reads what agents report from the OpAMP registry, steps the engine,
/// saves the state before anything is sent (so a crash loses nothing decided), and sets every agent's
/// desired config from its assignment. Level-triggered: each tick compares what every agent should run
/// with what the registry holds and fixes the difference, so a restart resumes where the state stood.
public actor Controller {
    let store: any ControlPlaneStore
    let registry: AgentRegistry
    let options: ControlPlaneOptions
    let engine: RolloutEngine
    let logger: Logger
    let clock: @Sendable () -> Date
    /// Credentials and revocations (nil: the OpAMP server's own token check).
    public nonisolated let access: AgentAccess?
    /// The control plane's metrics (`/metrics`).
    public nonisolated let metrics = ControlPlaneMetrics()
    private var lastMetrics = Date.distantPast
    /// A sampler count different from the one rendered, and since when.
    private var countSeen: (count: Int, since: Date)?
    private var lastRecount = Date.distantPast
    /// Telemetry offers by version.
    private var telemetryOffers: [Int: TelemetryOffer?] = [:]
    /// When certificates were last checked for renewal.
    var lastRenewalCheck = Date.distantPast
    /// The package repository (nil: packages are not managed).
    public nonisolated let packages: PackageRepository?
    /// The address agents download packages from (policyd's API as they reach it).
    var packageBaseURL: String?
    /// Package offers by version and tier.
    var packageOffers: [String: PackageWant] = [:]
    /// When each agent first reported every offered package installed (its collector version is checked
    /// against the package a little later: the collector restarts on the new binary first).
    var installedAt: [String: (hash: [UInt8], at: Date)] = [:]

    /// Several policyd on one database (nil: this one is alone and always steps).
    public nonisolated let leadership: Leadership?
    /// The epoch this controller last took over with (nil while following).
    private var ledEpoch: Int?
    /// Where the time of the current step goes (logged when the step is slow).
    private var laps = StepLaps()
    /// Whether the store refuses leader-only writes because this replica follows.
    private var fencedAsFollower = false
    /// While following: the generation of the state followed (nil: read it whole).
    private var followedGeneration: Int?
    /// The views this replica last published.
    private var published: [String: PublishedView] = [:]
    /// While following: certificates this replica offered its agents because the leader's rotation asked it
    /// to (or why the offer could not be sent), published so the leader can follow them.
    var delegatedOffers: [String: DelegatedOffer] = [:]
    /// Agents other replicas published, as judged at the last read (a quiet replica's as disconnected);
    /// every view read, withdrawn ones disconnected; the cursor of the next read.
    private var remote: [String: PublishedView] = [:]
    private var remoteCache: [String: PublishedView] = [:]
    private var remoteCursor: Int64?
    /// Replicas with a heartbeat in the last ``replicaMaxAge`` seconds (this one included), as last read.
    private var liveReplicaCount: Int?
    /// Agent records as every replica wrote them (those of other replicas' agents are shown), read only
    /// as they change.
    private var otherRecords: [String: AgentRecord] = [:]
    private var recordCursor: Int64?
    private var lastViewRead = Date.distantPast
    private var lastViewPrune = Date.distantPast
    private var lastStatePoll = Date.distantPast
    private var lastSecurityReload = Date.distantPast

    private(set) var state: ControlState
    private var sets: [Int: CompiledSet] = [:]
    private var renders: [RenderKey: Rendered] = [:]
    private var versionOfHash: [String: Int] = [:]
    /// When each agent's desired config was last changed (judging agents that report no status).
    private var sentAt: [String: Date] = [:]
    private var renderProblems: Set<RenderKey> = []
    private var storedLoadBalancer: Set<Int> = []
    private var recorded: [String: AgentRecord] = [:]
    /// The last tick's agent views, and their records once a query asked for them: the API and the console
    /// read these instead of judging every agent again (with 10,000 agents that is most of a request's time).
    private var lastViews: (at: Date, views: [AgentState], records: [AgentRecord]?)?
    private var ringSet: (version: Int, members: Set<String>)?
    private var lastRecord = Date.distantPast
    private var recent: [(sequence: Int, event: EngineEvent)] = []
    private var sequence = 0

    /// A rendered config is identified by version, tier, ring version (load balancers) and sampler count.
    struct RenderKey: Hashable {
        var version: Int
        var tier: AgentTier
        var ring: Int
        var samplerCount: Int
    }
    /// When this controller started: agents it had assignments for count as last seen then, so a restart
    /// does not empty the ring before they reconnect.
    private var startedAt: Date
    /// What the store knew of each agent at start or takeover (tier, ring entry, name), for agents connected
    /// nowhere yet; read when first needed (nil: not read since).
    private var known: [String: AgentRecord]?

    struct Rendered {
        var config: RemoteConfig
        var hash: String
        /// ``hash`` as bytes, as the OpAMP config hash.
        var hashBytes: [UInt8] { self.config.hash }
        var yaml: String
        var warnings: [FleetDiagnostic]
    }

    /// Loads the saved state (or starts empty).
    public init(
        store: any ControlPlaneStore,
        registry: AgentRegistry,
        options: ControlPlaneOptions = ControlPlaneOptions(),
        logger: Logger = Logger(label: "tailplane.control"),
        access: AgentAccess? = nil,
        packages: PackageRepository? = nil,
        leadership: Leadership? = nil,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        self.store = store
        self.leadership = leadership
        self.access = access
        self.packages = packages
        self.packageBaseURL = options.packageBaseURL
        self.registry = registry
        self.options = options
        self.engine = RolloutEngine(ringLeaveGraceSeconds: options.ringLeaveGraceSeconds)
        self.logger = logger
        self.clock = clock
        let now = clock()
        self.startedAt = now
        self.state = try store.loadControlState() ?? ControlState(now: now)
        if var rollout = self.state.rollout, !rollout.phase.isTerminal {
            // Time spent down does not count against the stage.
            rollout.progressAt = now
            self.state.rollout = rollout
            logger.info(
                "resuming rollout",
                metadata: ["rollout": "\(rollout.id)", "to": "\(rollout.to)", "phase": "\(rollout.phase.rawValue)"]
            )
        }
    }

    // MARK: Loop

    /// Steps every `tickInterval` until cancelled.
    public func run() async {
        while !Task.isCancelled {
            self.tick()
            try? await Task.sleep(for: self.options.tickInterval)
        }
    }

    /// One look at the fleet: step the engine, save, push.
    public func tick() {
        self.laps = StepLaps()
        defer {
            self.leadership?.controllerStepped()
            if let slow = self.laps.slow(over: .seconds(2)) {
                self.logger.notice("slow step: rollouts and ring changes wait meanwhile", metadata: ["took": "\(slow)"])
            }
        }
        let now = self.clock()
        let snapshot = self.registry.snapshot()
        let fleet = self.tieringFleet()
        self.laps.mark("snapshot")
        if let access = self.access {
            access.setTieringFleet(fleet)
            do {
                try access.flush()
            } catch {
                self.logger.warning("cannot save security records; retried next tick", metadata: ["error": "\(error)"])
            }
            // Several replicas: what the others stored (a revocation on any replica holds on every one).
            if self.leadership != nil, now.timeIntervalSince(self.lastSecurityReload) >= 2 {
                do {
                    let news = try access.reload()
                    for uid in news.revoked {
                        if let instance = InstanceUID(uuidString: uid) {
                            self.registry.disconnect(instance, reason: "credentials revoked")
                        }
                    }
                    // Approved through the API (on the leader) for an agent that sent its request here.
                    for (uid, certificate) in news.approved {
                        guard let instance = InstanceUID(uuidString: uid), self.registry.agent(instance) != nil
                        else { continue }
                        guard let offer = self.registry.certificateOffer(certificate) else { continue }
                        let problem = self.registry.offerConnectionSettings(offer, to: instance)
                        self.logger.info(
                            "certificate approved on another replica: \(problem ?? "offered to the agent")",
                            metadata: ["agent": "\(uid)"]
                        )
                    }
                    self.lastSecurityReload = now
                } catch {
                    self.logger.warning("cannot read security records", metadata: ["error": "\(error)"])
                }
            }
        }
        self.laps.mark("security")
        // When this step took over (its end logs how long taking over and the first step took).
        var tookOverAt: ContinuousClock.Instant?
        if let leadership = self.leadership {
            switch leadership.role {
            case .follower:
                self.follow(snapshot, fleet: fleet, replica: leadership.replica, now: now)
                return
            case .leader(let epoch):
                if self.ledEpoch != epoch {
                    let start = ContinuousClock.now
                    guard self.takeOver(epoch: epoch, now: now) else { return }
                    tookOverAt = start
                    self.lastMetrics = .distantPast
                    // Leading from here (the state read, the epoch fenced): said at once, not after this first
                    // step, which at tens of thousands of agents takes seconds.
                    self.metrics.leader.record(1)
                    self.laps.mark("take over")
                }
            }
        }
        self.maybeRecount(now: now)
        let views = snapshot.map { self.view($0, fleet: fleet, now: now) }
        self.laps.mark("views")
        let remote = self.remoteViews(now: now)
        self.laps.mark("remote views")
        // One entry per agent: an agent that moved to another replica is judged there, and this replica's stale
        // session does not count; connected on both (a half-open session), the fresher report wins; connected
        // nowhere, the later report.
        func remoteWins(_ other: PublishedView, here: (connected: Bool, lastSeen: Date)?) -> Bool {
            guard let here else { return true }
            switch (here.connected, other.view.connected) {
            case (true, false): return false
            case (false, true): return true
            default: return other.view.lastSeen > here.lastSeen
            }
        }
        let here = Dictionary(
            views.lazy.map { ($0.view.uid, (connected: $0.view.connected, lastSeen: $0.view.lastSeen)) },
            uniquingKeysWith: { first, _ in first }
        )
        func elsewhere(_ uid: String) -> Bool {
            remote[uid].map { remoteWins($0, here: here[uid]) } ?? false
        }
        let local = views.map(\.view).filter { !elsewhere($0.uid) }
        let present = snapshot.filter { !elsewhere($0.instanceUID.description) }
        let others = remote.values.filter { remoteWins($0, here: here[$0.view.uid]) }
        let before = self.state
        let events = self.engine.step(
            &self.state,
            view: local + others.map(\.view) + self.absent(present, also: Set(remote.keys), now: now),
            now: now
        )
        self.laps.mark("engine")
        self.commit(before: before, events: events)
        self.laps.mark("save")
        self.push(views, now: now)
        self.laps.mark("push")
        // The other replicas show the leader's agents too.
        if let leadership = self.leadership {
            self.publish(views, replica: leadership.replica, now: now)
            self.pruneViews(now: now)
            self.laps.mark("publish")
        }
        self.stepRotation(snapshot, fleet: fleet, now: now)
        self.recordAgents(views, now: now)
        self.laps.mark("records")
        self.updateMetrics(views, now: now)
        self.lastViews = (now, views, nil)
        if let start = tookOverAt {
            self.logger.notice(
                "leading: took over and stepped in \(ContinuousClock.now - start)",
                metadata: ["agents": "\(views.count) here, \(remote.count) on other replicas"]
            )
        }
    }

    private func updateMetrics(_ views: [AgentState], now: Date) {
        guard now.timeIntervalSince(self.lastMetrics) >= 1 else { return }
        self.lastMetrics = now
        var counts: [String: Int] = [:]
        for agent in views {
            let state = agent.view.tier == .unmanaged ? "unmanaged" : agent.configState
            counts["\(agent.view.tier.rawValue)|\(state)", default: 0] += 1
        }
        self.metrics.recordAgents(counts)
        self.metrics.recordRefusals(self.registry.refusalCounts().byKind)
        self.metrics.ringSize.record(self.state.ring.members.count)
        if let converged = self.state.ring.convergedAt {
            self.metrics.ringConvergence.record(converged.timeIntervalSince(self.state.ring.changedAt))
        }
        let active = self.state.rollout.flatMap { $0.phase.isTerminal ? nil : $0 }
        self.metrics.rolloutActive.record(active == nil ? 0 : 1)
        self.metrics.rolloutStage.record(active.map { $0.stageIndex + 1 } ?? 0)
        if let leadership = self.leadership {
            // Leading means this controller took over (not only that its elector holds the lease).
            self.metrics.leader.record(self.ledEpoch != nil && self.ledEpoch == leadership.leaderEpoch ? 1 : 0)
            self.metrics.leaderEpoch.record(leadership.leaderEpoch ?? self.ledEpoch ?? 0)
            self.metrics.leaderTransitions.record(leadership.transitions)
            if let lag = leadership.notificationLag { self.metrics.notificationLag.record(lag) }
            if let live = self.liveReplicaCount { self.metrics.replicasLive.record(live) }
        }
    }

    /// Agents with an assignment that the OpAMP server does not know (yet): after a restart they count as
    /// seen at start, so the ring keeps them for its grace period and a load balancer holds convergence up
    /// until it reconnects or goes stale. Those still absent ten minutes after start are forgotten.
    private func absent(_ snapshot: [AgentSnapshot], also elsewhere: Set<String> = [], now: Date) -> [AgentView] {
        let present = Set(snapshot.map { $0.instanceUID.description }).union(elsewhere)
        var views: [AgentView] = []
        let forget = now.timeIntervalSince(self.startedAt) > 600
        // What the store knew of them, read once when first needed (not at every takeover: with several
        // replicas the agents of one that died come with their published views, and reading every record
        // takes seconds at tens of thousands of agents).
        if self.known == nil, self.state.assignments.keys.contains(where: { !present.contains($0) }) {
            do {
                self.known = Dictionary(
                    (try self.store.agents()).map { ($0.instanceUID, $0) },
                    uniquingKeysWith: { first, _ in first }
                )
            } catch {
                self.logger.warning("cannot read agent records; retried next step", metadata: ["error": "\(error)"])
            }
        }
        for (uid, assignment) in self.state.assignments where !present.contains(uid) {
            if forget, self.state.heldOut[uid] == nil, self.state.rollout?.batch.contains(uid) != true {
                self.state.assignments[uid] = nil
                self.sentAt[uid] = nil
                self.recorded[uid] = nil
                continue
            }
            let record = self.known?[uid]
            views.append(
                AgentView(
                    name: record?.hostName,
                    uid: uid,
                    tier: assignment.ring != nil ? .loadBalancing : .sampling,
                    connected: false,
                    lastSeen: max(self.startedAt, record?.lastSeen ?? self.startedAt),
                    ringEntry: record?.ringEntry,
                    progress: .applied,
                    healthy: true
                )
            )
        }
        return views
    }

    // MARK: Several replicas

    /// A follower: the leader's last saved state, this replica's agents judged against it, given their
    /// configs, and published for the leader.
    private func follow(_ snapshot: [AgentSnapshot], fleet: Fleet, replica: String, now: Date) {
        if self.ledEpoch != nil || !self.fencedAsFollower {
            // Leader-only writes are refused from now on, in the database too.
            self.leadership?.coordination.fence(replica: replica, epoch: nil)
            self.fencedAsFollower = true
            self.ledEpoch = nil
            self.followedGeneration = nil
        }
        // Read when the leader said it saved (NOTIFY), and once a second anyway (the safety net).
        let due = self.leadership?.takeStateNews() == true || now.timeIntervalSince(self.lastStatePoll) >= 1
        do {
            if due, let coordination = self.leadership?.coordination,
                let saved = try coordination.controlState(after: self.followedGeneration)
            {
                self.state = saved.state
                self.followedGeneration = saved.generation
            }
            if due { self.lastStatePoll = now }
        } catch {
            self.logger.warning("cannot read the leader's state", metadata: ["error": "\(error)"])
        }
        self.laps.mark("state")
        let views = snapshot.map { self.view($0, fleet: fleet, now: now) }
        self.laps.mark("views")
        self.push(views, now: now)
        self.laps.mark("push")
        self.offerDelegatedCertificates(snapshot, fleet: fleet, replica: replica, now: now)
        self.publish(views, replica: replica, now: now)
        self.laps.mark("publish")
        // The other replicas' agents, kept nearly current here too (every few seconds, only what changed), so
        // that taking over reads only the last few seconds' views, not every one (seconds at tens of thousands
        // of agents). Not at every step: in a rollout every view changes, and each replica would decode them
        // all every second. The API reads what is new when asked.
        if now.timeIntervalSince(self.lastViewRead) >= Self.followerViewReadSeconds { _ = self.remoteViews(now: now) }
        self.laps.mark("remote views")
        self.recordAgents(views, now: now)
        self.laps.mark("records")
        self.updateMetrics(views, now: now)
        self.lastViews = (now, views, nil)
    }

    /// Publishes connected agents whose view changed and withdraws those no longer connected here (the
    /// elector says this replica is alive).
    private func publish(_ views: [AgentState], replica: String, now: Date) {
        guard let leadership = self.leadership else { return }
        var changed: [PublishedView] = []
        var current: [String: PublishedView] = [:]
        for agent in views where agent.view.connected {
            let view = PublishedView(
                view: agent.view,
                assignment: self.state.assignments[agent.view.uid],
                replica: replica,
                credentials: self.publishedCredentials(agent.snapshot)
            )
            current[agent.view.uid] = view
            if self.published[agent.view.uid] != view { changed.append(view) }
        }
        // Withdrawn with the last report made here, so whoever leads counts the agent's absence from then.
        let gone = self.published.values.filter { current[$0.view.uid] == nil }.map { last in
            var withdrawn = last
            withdrawn.view.connected = false
            return withdrawn
        }
        do {
            try leadership.coordination.publishViews(replica: replica, changed: changed, gone: gone)
            self.published = current
        } catch {
            self.logger.warning("cannot publish agent views", metadata: ["error": "\(error)"])
        }
    }

    /// The leader removes views nobody needs any more (withdrawn, or of replicas gone) once a minute.
    private func pruneViews(now: Date) {
        guard let leadership = self.leadership, now.timeIntervalSince(self.lastViewPrune) >= 60 else { return }
        self.lastViewPrune = now
        do {
            try leadership.coordination.pruneViews(olderThanSeconds: Self.remoteForgetSeconds)
        } catch {
            self.logger.warning("cannot prune agent views", metadata: ["error": "\(error)"])
        }
    }

    /// How often a follower reads the views other replicas published (only those written since).
    static let followerViewReadSeconds = 5.0
    /// A replica without a heartbeat for this long has lost its agents.
    static let replicaMaxAge = 10.0
    /// Another replica's agent disconnected this long ago is no longer followed through its view.
    static let remoteForgetSeconds = 3600.0

    /// Agents connected to other replicas, judged there, kept up to date by reading only the views committed
    /// since the last read (in commit order, so a write that took long to commit is not missed).
    /// For the leader, a judgement made against another assignment than its own (the follower has not read
    /// the latest state yet) counts as pending.
    func remoteViews(now: Date) -> [String: PublishedView] {
        guard let leadership = self.leadership else { return [:] }
        // Read when a replica said it published (NOTIFY), and once a second anyway (heartbeats expire).
        guard leadership.takeViewNews() || now.timeIntervalSince(self.lastViewRead) >= 1 else { return self.remote }
        self.lastViewRead = now
        do {
            let read = try leadership.coordination.publishedViews(after: self.remoteCursor)
            for (uid, view) in read.views {
                if let view {
                    // A withdrawn view comes disconnected, with its last report: the ring's grace period counts
                    // from then, as for an agent of this replica (not from when this replica took over).
                    self.remoteCache[uid] = view
                } else if var last = self.remoteCache[uid] {
                    // Withdrawn by an older policyd (no view): disconnected since the last report read.
                    last.view.connected = false
                    self.remoteCache[uid] = last
                }
            }
            self.remoteCursor = read.cursor
            let live = try leadership.coordination.liveReplicas(maxAgeSeconds: Self.replicaMaxAge)
            self.liveReplicaCount = live.count
            var views: [String: PublishedView] = [:]
            for (uid, cached) in self.remoteCache {
                var entry = cached
                // This replica's own agents come from its registry: their views are not kept.
                guard entry.replica != leadership.replica else {
                    self.remoteCache[uid] = nil
                    continue
                }
                // A replica that went quiet: its agents are disconnected since their last report there.
                if !live.contains(entry.replica) { entry.view.connected = false }
                // Long gone: left to the agent records, as this replica's own agents are.
                if !entry.view.connected, now.timeIntervalSince(entry.view.lastSeen) > Self.remoteForgetSeconds {
                    self.remoteCache[uid] = nil
                    continue
                }
                if entry.assignment != self.state.assignments[uid] { entry.view.progress = .pending }
                views[uid] = entry
            }
            self.remote = views
        } catch {
            // Keep the last known views for this step rather than take every remote agent for gone.
            self.logger.warning("cannot read other replicas' agents", metadata: ["error": "\(error)"])
        }
        return self.remote
    }

    /// The replica became leader: the state as the last leader saved it, and the rollout resumed where it
    /// stood (time spent without a leader does not count against the stage).
    private func takeOver(epoch: Int, now: Date) -> Bool {
        guard let leadership = self.leadership else { return false }
        do {
            // The epoch this state is built under is the one every write of this leader carries.
            leadership.coordination.fence(replica: leadership.replica, epoch: epoch)
            self.fencedAsFollower = false
            // Agents connected nowhere count as seen now, with what the store knows of them then (read when
            // first needed), so the ring keeps them for its grace period while they reconnect. Those of a
            // replica that died come with their published views, as last reported there.
            self.known = nil
            self.startedAt = now
            if var loaded = try self.store.loadControlState() {
                if var rollout = loaded.rollout, !rollout.phase.isTerminal {
                    rollout.progressAt = now
                    loaded.rollout = rollout
                    self.logger.notice(
                        "taking over rollout \(rollout.id)",
                        metadata: ["epoch": "\(epoch)", "phase": "\(rollout.phase.rawValue)"]
                    )
                }
                self.state = loaded
            }
            self.ledEpoch = epoch
            self.followedGeneration = nil
            return true
        } catch {
            leadership.coordination.fence(replica: leadership.replica, epoch: nil)
            self.logger.error("cannot read the state to take over; retried", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// With several replicas, only the leader changes the engine state (its API forwards writes there).
    func requireLeading() throws(ControlPlaneError) {
        guard let leadership = self.leadership, self.ledEpoch == nil || leadership.leaderEpoch != self.ledEpoch else {
            return
        }
        if case .follower(let api?) = leadership.role {
            throw .leadershipMoved(
                "this replica (\(leadership.replica)) stopped driving rollouts as the request came; nothing was done: retry (the leader is at \(api))"
            )
        }
        throw .leadershipMoved("no replica drives rollouts right now; nothing was done: retry in a few seconds")
    }

    /// Saves the state if it changed; on failure the step is undone (nothing is pushed that is not stored).
    /// A replica that does not lead never saves (the database would refuse it too: fencing).
    @discardableResult
    private func commit(before: ControlState, events: [EngineEvent]) -> Bool {
        guard self.state != before || !events.isEmpty else { return true }
        if let leadership = self.leadership, self.ledEpoch == nil || leadership.leaderEpoch != self.ledEpoch {
            self.logger.warning("not the leader: the step is not saved")
            self.state = before
            return false
        }
        do {
            try self.store.saveControlState(self.state, events: events)
        } catch {
            self.logger.error("cannot save the control state; the step is retried", metadata: ["error": "\(error)"])
            self.state = before
            return false
        }
        for event in events {
            self.sequence += 1
            self.recent.append((self.sequence, event))
            self.logger.info("\(event.message)")
            if event.kind == .rolloutEnded, let id = event.rollout, let rollout = self.state.rollout, rollout.id == id {
                self.recordOutcome(rollout)
            }
        }
        if self.recent.count > 10_000 { self.recent.removeFirst(self.recent.count - 10_000) }
        return true
    }

    private func recordOutcome(_ rollout: Rollout) {
        guard rollout.from != rollout.to else { return }  // a re-render for the sampler count
        let outcome: VersionOutcome
        switch rollout.phase {
        case .succeeded: outcome = .deployed
        case .rolledBack, .failed: outcome = .failed
        case .aborted: outcome = .aborted
        case .superseded: outcome = .superseded
        case .progressing, .paused: return
        }
        try? self.store.setOutcome(of: rollout.to, outcome, reason: rollout.failure)
    }

    // MARK: Views

    struct AgentState {
        var view: AgentView
        var snapshot: AgentSnapshot
        var desired: Rendered?
        var configState: String
        var configError: String?
        /// The packages it should have, and how it stands with them (nil: none managed).
        var packageOffer: PackageOffer?
        var packageState: String?
        var packageError: String?
    }

    /// The fleet description that sorts agents into tiers: the newest version's.
    func tieringFleet() -> Fleet {
        self.targetVersion().flatMap { try? self.compiledSet($0).fleet } ?? Fleet()
    }

    /// The version the fleet is rolling out to (a rollback's target too), or else the one it runs.
    public func targetVersion() -> Int? {
        self.state.rollout.map { $0.phase.isTerminal ? (self.state.current ?? $0.to) : $0.to } ?? self.state.current
    }

    func tier(
        of snapshot: AgentSnapshot,
        fleet: Fleet,
        attributes known: [String: String]? = nil
    ) -> AgentTier {
        // An agent that cannot take a remote config (the supervisor's default) cannot be managed.
        guard snapshot.capabilities.contains(.acceptsRemoteConfig) else { return .unmanaged }
        let attributes = known ?? snapshot.description?.attributes ?? [:]
        if fleet.samplingTier.matches(attributes) { return .sampling }
        if fleet.loadBalancingTier.matches(attributes) { return .loadBalancing }
        return .unmanaged
    }

    func view(_ snapshot: AgentSnapshot, fleet: Fleet, now: Date) -> AgentState {
        let uid = snapshot.instanceUID.description
        let attributes = snapshot.description?.attributes ?? [:]
        let tier = self.tier(of: snapshot, fleet: fleet, attributes: attributes)
        let healthy = snapshot.health?.healthy ?? true
        let entry = tier == .sampling ? fleet.samplerEndpoint.expand(attributes) : nil
        var progress = ConfigProgress.pending
        var configState = snapshot.connected ? "pending" : "offline"
        var configError: String?
        var desired: Rendered?
        if let assignment = self.state.assignments[uid], tier != .unmanaged {
            desired = self.rendered(assignment, tier: tier)
            if let desired {
                let wanted = desired.hashBytes
                if snapshot.capabilities.contains(.reportsRemoteConfig) {
                    if let status = snapshot.remoteConfigStatus, status.hash == wanted {
                        switch status.state {
                        case .applied: progress = .applied
                        case .applying: progress = .applying
                        case .failed: progress = .failed(status.errorMessage)
                        case .unset: progress = .pending
                        }
                        configError = status.errorMessage.isEmpty ? nil : status.errorMessage
                    } else if snapshot.rejectedConfigHash == wanted {
                        // FAILED, then APPLIED with the old hash: the supervisor rolled back by itself.
                        let message = snapshot.remoteConfigStatus?.errorMessage ?? ""
                        progress = .failed(
                            "the agent rolled back to its previous config" + (message.isEmpty ? "" : ": \(message)")
                        )
                        configError = message
                    }
                    configState = Self.describe(progress)
                } else if snapshot.desiredConfigHash == wanted, let sent = self.sentAt[uid],
                    now.timeIntervalSince(sent) >= self.options.unverifiedAfterSeconds
                {
                    // No status reports (the supervisor's default): judged by health a while after the config
                    // went out, and said so.
                    if healthy {
                        progress = .applied
                        configState = "unverified"
                    } else {
                        let error = snapshot.health?.lastError ?? ""
                        progress = .failed("unhealthy after its config was sent" + (error.isEmpty ? "" : ": \(error)"))
                        configState = "failed"
                        configError = error.isEmpty ? nil : error
                    }
                }
            }
            if !snapshot.connected { configState = "offline" }
        }
        var packageOffer: PackageOffer?
        var packageState: String?
        var packageError: String?
        if let assignment = self.state.assignments[uid], tier != .unmanaged {
            switch self.packageWant(version: assignment.version, tier: tier) {
            case .none: break
            case .offer(let offer):
                packageOffer = offer
                let judged = self.packageProgress(snapshot, offer: offer, now: now)
                packageState = judged.state
                packageError = judged.error
                progress = Self.combine(progress, judged.progress)
                if case .failed = judged.progress, snapshot.connected { configState = "failed" }
            case .unavailable(let reason):
                if snapshot.capabilities.contains(.acceptsPackages) {
                    // Never judged done without its packages.
                    packageState = "waiting"
                    packageError = reason
                    progress = Self.combine(progress, .pending)
                } else {
                    // Never offered anything anyway: judged on the collector it reports.
                    let collector = (try? self.compiledSet(assignment.version))?.packages?.collector(tier)
                    packageState = "upgrade by hand"
                    progress = Self.combine(progress, self.byHand(snapshot, collector: collector?.version))
                }
            }
        }
        return AgentState(
            view: AgentView(
                name: attributes["host.name"],
                uid: uid,
                tier: tier,
                connected: snapshot.connected,
                lastSeen: snapshot.lastSeen,
                ringEntry: entry,
                progress: progress,
                healthy: healthy
            ),
            snapshot: snapshot,
            desired: desired,
            configState: configState,
            configError: configError,
            packageOffer: packageOffer,
            packageState: packageState,
            packageError: packageError
        )
    }

    private static func describe(_ progress: ConfigProgress) -> String {
        switch progress {
        case .pending: "pending"
        case .applying: "applying"
        case .applied: "applied"
        case .failed: "failed"
        }
    }

    // MARK: Pushing

    /// Sets the desired config of every agent whose assignment (after the step) differs from what the
    /// registry holds.
    private func push(_ views: [AgentState], now: Date) {
        var changes: [InstanceUID: RemoteConfig?] = [:]
        for agent in views where agent.view.tier != .unmanaged {
            guard let assignment = self.state.assignments[agent.view.uid],
                let desired = self.rendered(assignment, tier: agent.view.tier)
            else { continue }
            if agent.snapshot.desiredConfigHash != desired.hashBytes {
                changes[agent.snapshot.instanceUID] = desired.config
                self.sentAt[agent.view.uid] = now
            }
        }
        if !changes.isEmpty { self.registry.setDesiredConfig(changes) }
        // Telemetry destinations follow the version an agent is assigned, so they move stage by stage too.
        var telemetry: [InstanceUID: TelemetryOffer?] = [:]
        for agent in views where agent.view.tier != .unmanaged {
            guard let assignment = self.state.assignments[agent.view.uid] else { continue }
            let offer = self.telemetryOffer(version: assignment.version)
            // Compared with what the registry holds, so an agent it forgot and relearned gets the offer again.
            if agent.snapshot.desiredTelemetry != offer { telemetry[agent.snapshot.instanceUID] = offer }
        }
        if !telemetry.isEmpty { self.registry.setDesiredTelemetry(telemetry) }
        // Packages follow the assigned version too: an upgrade moves stage by stage, and a rollback to the
        // previous version offers the previous packages again (the downgrade).
        var packages: [InstanceUID: PackageOffer?] = [:]
        for agent in views where agent.view.tier != .unmanaged {
            // Packages that cannot be offered yet leave whatever the agent was offered before.
            guard self.state.assignments[agent.view.uid] != nil, agent.packageState != "waiting" else { continue }
            if agent.snapshot.desiredPackagesHash != agent.packageOffer?.allPackagesHash {
                packages[agent.snapshot.instanceUID] = agent.packageOffer
            }
        }
        if !packages.isEmpty { self.registry.setDesiredPackages(packages) }
    }

    /// The telemetry offer of a version's fleet, with `{env: NAME}` headers and CA files read now; nil when the
    /// fleet names no destination or one cannot be read (logged once).
    private func telemetryOffer(version: Int) -> TelemetryOffer? {
        if let cached = self.telemetryOffers[version] { return cached }
        guard let set = try? self.compiledSet(version), !set.fleet.telemetry.destinations.isEmpty else {
            self.telemetryOffers[version] = .some(nil)
            return nil
        }
        do {
            let offer = try Self.telemetryOffer(set.fleet)
            self.telemetryOffers[version] = offer
            return offer
        } catch {
            self.logger.error(
                "version's telemetry destinations cannot be offered",
                metadata: ["version": "\(version)", "error": "\(error.message)"]
            )
            self.telemetryOffers[version] = .some(nil)
            return nil
        }
    }

    /// Builds the offer from a fleet: environment variables and CA files are read from policyd's machine.
    static func telemetryOffer(_ fleet: Fleet, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(ControlPlaneError) -> TelemetryOffer
    {
        var offer = TelemetryOffer()
        for (kind, destination) in fleet.telemetry.destinations {
            var headers: [String: String] = [:]
            for (name, value) in destination.headers {
                switch value {
                case .literal(let text): headers[name] = text
                case .environment(let variable):
                    guard let text = environment[variable] else {
                        throw .badRequest(
                            "telemetry.destinations.\(kind).headers.\(name) reads environment variable \(variable), which policyd does not have; set it where policyd runs"
                        )
                    }
                    headers[name] = text
                }
            }
            var caPEM: String?
            if let file = destination.caFile {
                guard let text = try? String(contentsOfFile: file, encoding: .utf8), text.contains("BEGIN CERTIFICATE")
                else {
                    throw .badRequest(
                        "telemetry.destinations.\(kind).ca_file: cannot read a PEM certificate from \(file) on policyd's machine"
                    )
                }
                caPEM = text
            }
            let target = TelemetryOffer.Destination(
                endpoint: destination.endpoint,
                headers: headers,
                caPEM: caPEM,
                insecureSkipVerify: destination.insecureSkipVerify
            )
            switch kind {
            case "metrics": offer.metrics = target
            case "traces": offer.traces = target
            default: offer.logs = target
            }
        }
        return offer
    }

    // MARK: Rendering

    func compiledSet(_ number: Int) throws -> CompiledSet {
        if let set = self.sets[number] { return set }
        guard let version = try self.store.version(number) else {
            throw ControlPlaneError.notFound("no version \(number)")
        }
        switch VersionBuilder.compile(sources: version.sources, fleet: version.fleet, packages: version.packages) {
        case .success(let set):
            self.sets[number] = set
            return set
        case .failure(let rejection):
            throw ControlPlaneError.store("stored version \(number) no longer compiles: \(rejection.summary)")
        }
    }

    private func rendered(_ assignment: Assignment, tier: AgentTier) -> Rendered? {
        let key = RenderKey(
            version: assignment.version,
            tier: tier,
            ring: tier == .loadBalancing ? self.state.ring.version : 0,
            samplerCount: tier == .sampling ? (assignment.samplerCount ?? self.state.samplerCount) : 0
        )
        if let cached = self.renders[key] { return cached }
        if self.renderProblems.contains(key) { return nil }  // failed before: do not retry every tick
        guard let set = try? self.compiledSet(assignment.version) else { return nil }
        let ring = tier == .loadBalancing ? self.state.ring.members : []
        switch VersionBuilder.render(set, tier: tier, ring: ring, samplerCount: max(1, key.samplerCount)) {
        case .success(let config):
            let remote = RemoteConfig(
                files: ["collector.yaml": ConfigFile(body: Array(config.yaml.utf8), contentType: "text/yaml")],
                hash: Array(hexBytes: config.hash)
            )
            let rendered = Rendered(config: remote, hash: config.hash, yaml: config.yaml, warnings: config.warnings)
            if self.renders.count > 64 { self.renders.removeAll() }
            self.renders[key] = rendered
            if self.versionOfHash.count > 10_000 { self.versionOfHash.removeAll() }
            self.versionOfHash[config.hash] = assignment.version
            // Kept: every sampling render, and a version's first load-balancer render (every ring change
            // renders the load balancers again; those differ only in the ring, which the ring history keeps).
            let stored = tier == .sampling || !self.storedLoadBalancer.contains(assignment.version)
            if tier == .loadBalancing { self.storedLoadBalancer.insert(assignment.version) }
            if stored {
                try? self.store.saveRendered([
                    RenderedRecord(
                        version: assignment.version,
                        tier: tier,
                        samplerCount: key.samplerCount,
                        ringVersion: tier == .loadBalancing ? self.state.ring.version : 0,
                        yaml: config.yaml,
                        hash: config.hash
                    )
                ])
            }
            return rendered
        case .failure(let problems):
            if self.renderProblems.count > 1000 { self.renderProblems.removeAll() }
            if self.renderProblems.insert(key).inserted {
                self.logger.warning(
                    "cannot render a config; agents keep what they run",
                    metadata: [
                        "version": "\(assignment.version)", "tier": "\(tier.rawValue)", "problem": "\(problems)",
                    ]
                )
            }
            return nil
        }
    }

    // MARK: Agent records

    private func recordAgents(_ views: [AgentState], now: Date) {
        guard now.timeIntervalSince(self.lastRecord) >= 2 else { return }
        self.lastRecord = now
        var changed: [AgentRecord] = []
        for agent in views {
            let record = self.record(agent)
            if self.recorded[record.instanceUID] != record {
                self.recorded[record.instanceUID] = record
                changed.append(record)
            }
        }
        do {
            try self.store.recordAgents(changed)
        } catch {
            self.logger.warning("cannot record agent state", metadata: ["error": "\(error)"])
        }
    }

    func record(_ agent: AgentState) -> AgentRecord {
        let snapshot = agent.snapshot
        let reported = snapshot.remoteConfigStatus.map { $0.hash.hexString }
        return AgentRecord(
            instanceUID: agent.view.uid,
            tier: agent.view.tier,
            transport: snapshot.transport?.rawValue,
            connected: snapshot.connected,
            hostName: snapshot.description?.attributes["host.name"],
            ringEntry: agent.view.ringEntry,
            desiredVersion: self.state.assignments[agent.view.uid]?.version,
            desiredHash: agent.desired?.hash,
            reportedHash: reported,
            runningVersion: reported.flatMap { self.versionOfHash[$0] },
            configState: agent.view.tier == .unmanaged ? "unmanaged" : agent.configState,
            configError: agent.configError,
            healthy: snapshot.health?.healthy,
            healthError: snapshot.health.flatMap { $0.lastError.isEmpty ? nil : $0.lastError },
            inRing: agent.view.ringEntry.map { self.ringMembers().contains($0) } ?? false,
            lastSeen: snapshot.lastSeen,
            credential: snapshot.principal?.name,
            certificateFingerprint: snapshot.principal?.certificateFingerprint,
            connectionSettingsState: Self.connectionSettingsState(snapshot.connectionSettings),
            connectionSettingsError: snapshot.connectionSettings.errorMessage,
            collectorVersion: snapshot.description?.attributes["service.version"],
            packageState: agent.packageState,
            packageError: agent.packageError
        )
    }

    /// The ring's members as a set, kept until the ring changes: a record asks for every agent, and a ring
    /// of 8,000 samplers searched as a list made each call to ``agents()`` take a second.
    private func ringMembers() -> Set<String> {
        let ring = self.state.ring
        if let cached = self.ringSet, cached.version == ring.version, cached.members.count == ring.members.count {
            return cached.members
        }
        let members = Set(ring.members)
        self.ringSet = (ring.version, members)
        return members
    }

    /// A stored version, read for a write: a store that fails fails the write (read as missing, an apply
    /// would lose the packages the version pins).
    func storedVersion(_ number: Int?) throws(ControlPlaneError) -> PolicyVersion? {
        guard let number else { return nil }
        do {
            return try self.store.version(number)
        } catch {
            throw .store("cannot read version \(number): \(error)")
        }
    }

    /// A leader-only write the store failed: refused by the fence (this replica lost the lease meanwhile, and
    /// the write was rolled back) it may be sent again, to the new leader; otherwise a store error.
    /// - Parameter version: a version an earlier write of the same request stored, whose rollout this one was
    ///   to start. It stays, pending and never rolled out; the request sent again stores and rolls out another.
    static func writeFailure(_ error: any Error, after version: Int? = nil) -> ControlPlaneError {
        guard let error = error as? StoreError, error.fenced else { return .store("\(error)") }
        let done =
            version.map {
                "version \($0) was stored but its rollout not started (sent again, the request stores a new version and rolls it out)"
            } ?? "nothing was stored"
        return .leadershipMoved(
            "this replica lost the lead while making the change and \(done): retry in a few seconds (\(error))"
        )
    }

    /// How an agent stands with the connection settings last offered to it.
    static func connectionSettingsState(_ settings: ConnectionSettingsState) -> String? {
        guard let offered = settings.offeredHash else { return settings.status.map(\.rawValue) }
        guard settings.reportedHash == offered, let status = settings.status, status != .unset else { return "offered" }
        return status.rawValue
    }

    // MARK: Commands

    /// Compiles, stores and starts rolling out a policy set (see ``ApplyRequest``).
    public func apply(_ request: ApplyRequest, actor: String, remote: String) throws(ControlPlaneError) -> ApplyResult {
        try self.apply(request, actor: actor, remote: remote, packages: nil)
    }

    /// An apply; `packages` replaces what `fleet.yaml` and the current version say (a package rollout).
    func apply(_ request: ApplyRequest, actor: String, remote: String, packages: VersionPackages?)
        throws(ControlPlaneError) -> ApplyResult
    {
        try self.requireLeading()
        let started = ContinuousClock.now
        defer { self.metrics.applyDuration.record(duration: ContinuousClock.now - started) }
        let active = self.state.rollout.flatMap { $0.phase.isTerminal ? nil : $0 }
        // While a rollout rolls back, the fleet is going back to its `from`: inherit from that, not the failure.
        let target = (active?.rollingBack == true ? active?.from : active?.to) ?? self.state.current
        let targetVersion = try self.storedVersion(target)
        let base = targetVersion?.packages
        let pins = try self.packages(fleet: request.fleet, override: packages, base: base)
        let compiled: CompiledSet
        switch VersionBuilder.compile(sources: request.sources, fleet: request.fleet, packages: pins) {
        case .success(let set): compiled = set
        case .failure(let rejection): throw .rejected(rejection)
        }
        try self.checkBehaviourChanges(from: base, to: pins, set: compiled, accepted: request.acceptChanges ?? [])
        let targetHash = targetVersion?.contentHash
        let tiers = self.changedTiers(from: target, to: compiled)
        let renderWarnings = try self.renderCheck(compiled)
        // A destination whose header or CA file policyd cannot read is refused now, not at offer time.
        if !compiled.fleet.telemetry.destinations.isEmpty { _ = try Self.telemetryOffer(compiled.fleet) }
        if targetHash == compiled.contentHash, let target {
            return ApplyResult(
                result: "unchanged",
                version: target,
                rollout: active?.id,
                tiers: [],
                warnings: compiled.warnings,
                renderWarnings: renderWarnings
            )
        }
        let latest: Int
        do {
            latest = try self.store.versions(limit: 1).first?.number ?? 0
        } catch {
            throw .store("\(error)")
        }
        if request.dryRun != true, let active, request.supersede != true {
            throw .conflict(
                "rollout \(active.id) (version \(active.from.map(String.init) ?? "none") -> \(active.to)) is \(active.phase.rawValue); wait for it, abort it, or apply with --supersede"
            )
        }
        if request.dryRun == true {
            return ApplyResult(
                result: "dry_run",
                version: latest + 1,
                rollout: nil,
                tiers: tiers,
                warnings: compiled.warnings,
                renderWarnings: renderWarnings
            )
        }
        let version: PolicyVersion
        do {
            version = try self.store.appendVersion(
                VersionDraft(
                    contentHash: compiled.contentHash,
                    sources: compiled.sources,
                    fleet: compiled.fleetText,
                    ir: compiled.irJSON,
                    author: request.author ?? actor,
                    message: request.message ?? "",
                    gitRevision: request.gitRevision,
                    createdAt: self.clock(),
                    packages: compiled.packages
                )
            )
        } catch {
            throw Self.writeFailure(error)
        }
        self.sets[version.number] = compiled
        let rollout = try self.startRollout(to: version.number, set: compiled, tiers: tiers, newVersion: true)
        self.audit(
            actor: actor,
            action: "apply",
            detail: "version \(version.number), rollout \(rollout)",
            remote: remote
        )
        return ApplyResult(
            result: "created",
            version: version.number,
            rollout: rollout,
            tiers: tiers,
            warnings: compiled.warnings,
            renderWarnings: renderWarnings
        )
    }

    /// Rolls the fleet back to an earlier version; itself a staged rollout.
    public func rollback(to number: Int, actor: String, remote: String) throws(ControlPlaneError) -> Int {
        try self.requireLeading()
        let set: CompiledSet
        do {
            set = try self.compiledSet(number)
        } catch let error as ControlPlaneError {
            throw error
        } catch {
            throw .store("\(error)")
        }
        if let active = self.state.rollout, !active.phase.isTerminal {
            throw .conflict(
                "rollout \(active.id) is \(active.phase.rawValue); abort it first (it rolls back by itself)"
            )
        }
        if self.state.current == number { throw .conflict("the fleet already runs version \(number)") }
        let tiers = self.changedTiers(from: self.state.current, to: set)
        let id = try self.startRollout(to: number, set: set, tiers: tiers)
        self.audit(actor: actor, action: "rollback", detail: "to version \(number), rollout \(id)", remote: remote)
        return id
    }

    /// Pause, resume or abort the active rollout.
    public func command(_ command: RolloutEngine.Command, actor: String, remote: String) throws(ControlPlaneError)
        -> Rollout
    {
        try self.requireLeading()
        let before = self.state
        let now = self.clock()
        let events: [EngineEvent]
        do {
            events = try self.engine.command(command, &self.state, now: now)
        } catch {
            throw .conflict(error.message)
        }
        guard self.commit(before: before, events: events) else {
            throw .store("cannot save the rollout; nothing changed, try again")
        }
        self.audit(
            actor: actor,
            action: "rollout.\(command.rawValue)",
            detail: "rollout \(self.state.rollout?.id ?? 0)",
            remote: remote
        )
        return self.state.rollout!
    }

    private func startRollout(
        to number: Int,
        set: CompiledSet,
        tiers: [AgentTier],
        samplerCount: Int? = nil,
        autoRollback: Bool? = nil,
        preface: [EngineEvent] = [],
        newVersion: Bool = false
    ) throws(ControlPlaneError) -> Int {
        let strategy = set.fleet.rollout
        let plan = RolloutPlan(
            stages: strategy.stages.map { stage in
                switch stage {
                case .canary(let count): .canary(count)
                case .percent(let percent): .percent(percent)
                }
            },
            maxUnavailable: max(1, strategy.maxUnavailable),
            bakeSeconds: self.options.bakeSecondsOverride ?? Double(strategy.bakeTimeMs) / 1000,
            stageTimeoutSeconds: strategy.stageTimeoutMs.map { Double($0) / 1000 } ?? self.options.stageTimeoutSeconds,
            drain: self.options.drain && strategy.drain,
            settleSeconds: self.options.settleSecondsOverride
                ?? Double(set.policySet.settings.decisionWaitMs ?? 30_000) / 1000 + 3,
            tiers: tiers,
            autoRollback: autoRollback ?? strategy.autoRollback
        )
        let before = self.state
        let events =
            preface
            + self.engine.start(
                &self.state,
                version: number,
                plan: plan,
                samplerCount: samplerCount ?? self.samplerCount(fleet: set.fleet),
                now: self.clock()
            )
        for event in events where event.kind == .rolloutEnded {
            if let id = event.rollout, let old = try? self.store.rollout(id) {
                try? self.store.setOutcome(of: old.to, .superseded, reason: "superseded by version \(number)")
            }
        }
        do {
            try self.store.saveControlState(self.state, events: events)
        } catch {
            self.state = before
            throw Self.writeFailure(error, after: newVersion ? number : nil)
        }
        for event in events {
            self.sequence += 1
            self.recent.append((self.sequence, event))
            self.logger.info("\(event.message)")
        }
        return self.state.rollout!.id
    }

    /// The number of samplers that share fleet-wide limits: the ring, or before there is one, the connected
    /// samplers, on every replica.
    func samplerCount(fleet: Fleet) -> Int {
        if !self.state.ring.members.isEmpty { return self.state.ring.members.count }
        var samplers = Set(
            self.registry.snapshot().lazy.filter { $0.connected && self.tier(of: $0, fleet: fleet) == .sampling }
                .map(\.instanceUID.description)
        )
        for (uid, entry) in self.remote where entry.view.connected && entry.view.tier == .sampling {
            samplers.insert(uid)
        }
        return max(1, samplers.count)
    }

    /// When the number of samplers has changed and stayed changed for a while, re-render the sampling tier's
    /// fleet-wide limits and budgets for it, drain-aware like any rollout; at most once per
    /// `recountMinimumIntervalSeconds`, and never during a rollout (the count is fixed when one starts).
    private func maybeRecount(now: Date) {
        guard let current = self.state.current, self.state.rollout?.phase.isTerminal ?? true else {
            self.countSeen = nil
            return
        }
        let count = max(1, self.state.ring.members.count)
        guard !self.state.ring.members.isEmpty, count != self.state.samplerCount else {
            self.countSeen = nil
            return
        }
        guard let seen = self.countSeen, seen.count == count else {
            self.countSeen = (count, now)
            return
        }
        guard now.timeIntervalSince(seen.since) >= self.options.recountCoalesceSeconds,
            now.timeIntervalSince(self.lastRecount) >= self.options.recountMinimumIntervalSeconds,
            let set = try? self.compiledSet(current)
        else { return }
        let old = self.state.samplerCount
        let before = VersionBuilder.render(set, tier: .sampling, ring: [], samplerCount: old)
        let after = VersionBuilder.render(set, tier: .sampling, ring: [], samplerCount: count)
        if case .failure(let problems) = after {
            // For example a budget share that rounds to nothing on this many samplers: keep the old configs.
            self.lastRecount = now
            self.countSeen = nil
            self.logger.error(
                "cannot re-render for the new sampler count; samplers keep their configs",
                metadata: ["samplers": "\(count)", "problem": "\(problems)"]
            )
            return
        }
        if case .success(let a) = before, case .success(let b) = after, a.hash == b.hash {
            // Nothing in the policies depends on the count: no sampler needs a new config.
            let previous = self.state
            self.state.samplerCount = count
            self.commit(before: previous, events: [])
            return
        }
        self.lastRecount = now
        self.countSeen = nil
        let preface = EngineEvent(
            kind: .rolloutStarted,
            message:
                "the sampling tier has \(count) samplers instead of \(old): fleet-wide limits and budgets are re-rendered for \(count) and rolled out drain-aware",
            time: now
        )
        do {
            _ = try self.startRollout(
                to: current,
                set: set,
                tiers: [.sampling],
                samplerCount: count,
                autoRollback: false,
                preface: [preface]
            )
        } catch {
            self.logger.error(
                "cannot start the re-render for the sampler count",
                metadata: ["error": "\(error.message)"]
            )
        }
    }

    /// Tiers whose rendered config differs between two versions (for the current ring and sampler count).
    private func changedTiers(from: Int?, to set: CompiledSet) -> [AgentTier] {
        guard let from, let old = try? self.compiledSet(from) else { return [.sampling, .loadBalancing] }
        let ring = self.state.ring.members.isEmpty ? ["probe:4317"] : self.state.ring.members
        // A new telemetry destination restarts every collector (the supervisor rewrites its config): both tiers.
        if old.fleet.telemetry.destinations != set.fleet.telemetry.destinations { return [.sampling, .loadBalancing] }
        return [AgentTier.sampling, .loadBalancing].filter { tier in
            // New packages restart the collector like a new config (on the new binary).
            if (old.packages?[tier] ?? []) != (set.packages?[tier] ?? []) { return true }
            let before = VersionBuilder.render(old, tier: tier, ring: ring, samplerCount: self.state.samplerCount)
            let after = VersionBuilder.render(set, tier: tier, ring: ring, samplerCount: self.state.samplerCount)
            switch (before, after) {
            case (.success(let a), .success(let b)): return a.hash != b.hash
            default: return true
            }
        }
    }

    /// Renders the sampling tier for the fleet's real sampler count: a budget share that rounds to nothing on
    /// this many samplers refuses the apply (the compiler alone cannot know the count). Returns the warnings.
    private func renderCheck(_ set: CompiledSet) throws(ControlPlaneError) -> [FleetDiagnostic] {
        let count = self.samplerCount(fleet: set.fleet)
        switch VersionBuilder.render(set, tier: .sampling, ring: [], samplerCount: count) {
        case .success(let config): return config.warnings
        case .failure(let problems):
            throw .rejected(ApplyRejection(diagnostics: [], fleetDiagnostics: problems.diagnostics))
        }
    }

    func audit(actor: String, action: String, detail: String, remote: String) {
        do {
            try self.store.appendAudit(
                AuditEntry(time: self.clock(), actor: actor, action: action, detail: detail, remote: remote)
            )
        } catch {
            self.logger.error("cannot write the audit log", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Queries

    /// The active rollout, or the last one.
    public func currentRollout() throws -> RolloutReport? {
        guard let rollout = self.state.rollout else { return nil }
        return RolloutReport(rollout: rollout, events: try self.store.events(ofRollout: rollout.id))
    }

    /// One rollout with its steps.
    public func rollout(_ id: Int) throws -> RolloutReport? {
        if let rollout = self.state.rollout, rollout.id == id {
            return RolloutReport(rollout: rollout, events: try self.store.events(ofRollout: id))
        }
        guard let rollout = try self.store.rollout(id) else { return nil }
        return RolloutReport(rollout: rollout, events: try self.store.events(ofRollout: id))
    }

    /// Events after a sequence number (for watchers), with the last sequence number.
    public func events(after: Int) -> (events: [EngineEvent], last: Int) {
        (self.recent.filter { $0.sequence > after }.map(\.event), self.sequence)
    }

    /// Every agent's state, as of the controller's last look at the fleet (at most two ticks ago; judged
    /// afresh when the controller is not stepping).
    public func agents() -> [AgentRecord] {
        let now = self.clock()
        let tick =
            Double(self.options.tickInterval.components.seconds)
            + Double(self.options.tickInterval.components.attoseconds) / 1e18
        if let last = self.lastViews, now.timeIntervalSince(last.at) <= max(0.5, 2 * tick) {
            if let records = last.records { return records }
            let records = self.withOtherReplicas(last.views.map(self.record))
            self.lastViews?.records = records
            return records
        }
        let fleet = self.tieringFleet()
        return self.withOtherReplicas(
            self.registry.snapshot().map { self.record(self.view($0, fleet: fleet, now: now)) }
        )
    }

    /// With several replicas: this one's agents, and those connected to the others as they last recorded
    /// them.
    private func withOtherReplicas(_ local: [AgentRecord]) -> [AgentRecord] {
        guard self.leadership != nil else { return local }
        let published = self.remoteViews(now: self.clock())
        guard !published.isEmpty, let coordination = self.leadership?.coordination else { return local }
        let here = local.filter { $0.connected || published[$0.instanceUID] == nil }
        let mine = Set(here.map(\.instanceUID))
        // The records written since the last read only (every record at tens of thousands of agents takes
        // seconds, and this replica's steps wait meanwhile); the last ones read are kept on failure.
        do {
            let read = try coordination.agentRecords(after: self.recordCursor)
            for record in read.records { self.otherRecords[record.instanceUID] = record }
            self.recordCursor = read.cursor
        } catch {
            self.logger.warning("cannot read other replicas' agent records", metadata: ["error": "\(error)"])
        }
        // The record another replica last wrote, connected only while that replica says so (one that died
        // left its agents recorded as connected).
        let others = published.compactMap { uid, view -> AgentRecord? in
            guard !mine.contains(uid), var record = self.otherRecords[uid] else { return nil }
            record.connected = record.connected && view.view.connected
            return record
        }
        return (here + others).sorted { $0.instanceUID < $1.instanceUID }
    }

    /// Counts, convergence and the ring.
    public func summary() throws -> FleetSummary {
        try self.summary(of: self.agents())
    }

    /// Every agent and the summary of the same look at the fleet (what the console's fleet page shows).
    public func fleet() throws -> (agents: [AgentRecord], summary: FleetSummary) {
        let agents = self.agents()
        return (agents, try self.summary(of: agents))
    }

    private func summary(of agents: [AgentRecord]) throws -> FleetSummary {
        var byTier: [String: Int] = [:]
        var byState: [String: Int] = [:]
        for agent in agents {
            byTier[agent.tier.rawValue, default: 0] += 1
            byState[agent.configState, default: 0] += 1
        }
        let managed = agents.filter { $0.tier != .unmanaged && $0.connected }
        let converged = managed.filter { $0.desiredHash != nil && $0.desiredHash == $0.reportedHash }.count
        let history = try self.store.ringHistory(limit: 20)
        let ring = RingRecord(
            version: self.state.ring.version,
            members: self.state.ring.members,
            changedAt: self.state.ring.changedAt,
            reason: history.first { $0.version == self.state.ring.version }?.reason ?? "",
            convergenceSeconds: self.state.ring.convergedAt.map { $0.timeIntervalSince(self.state.ring.changedAt) }
        )
        let active = self.state.rollout.flatMap { $0.phase.isTerminal ? nil : $0 }
        return FleetSummary(
            currentVersion: self.state.current,
            rollout: active?.id,
            rolloutPhase: active?.phase,
            agentsByTier: byTier,
            agentsByState: byState,
            convergedShare: managed.isEmpty ? 1 : Double(converged) / Double(managed.count),
            ring: ring,
            lastRingConvergenceSeconds: history.first { $0.convergenceSeconds != nil }?.convergenceSeconds
        )
    }
}

extension Array where Element == UInt8 {
    /// Bytes from lower-case hex (pairs that are not hex are skipped).
    init(hexBytes text: String) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count / 2)
        var iterator = text.utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            func value(_ c: UInt8) -> UInt8? {
                switch c {
                case 48...57: c - 48
                case 97...102: c - 87
                case 65...70: c - 55
                default: nil
                }
            }
            if let h = value(high), let l = value(low) { bytes.append(h << 4 | l) }
        }
        self = bytes
    }

    /// Lower-case hex.
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(self.count * 2)
        for byte in self {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Where a controller step spends its time, phase by phase.
struct StepLaps {
    private let start = ContinuousClock.now
    private var last = ContinuousClock.now
    private var phases: [(String, Duration)] = []

    /// The phase named ended now.
    mutating func mark(_ phase: String) {
        let now = ContinuousClock.now
        self.phases.append((phase, now - self.last))
        self.last = now
    }

    /// The whole step and its phases over 10 ms, when it took longer than `limit`.
    func slow(over limit: Duration) -> String? {
        let total = ContinuousClock.now - self.start
        guard total > limit else { return nil }
        func ms(_ duration: Duration) -> Int {
            Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
        }
        let phases = self.phases.filter { ms($0.1) >= 10 }.map { "\($0.0) \(ms($0.1))" }
        return "\(ms(total)) ms (\(phases.joined(separator: ", ")))"
    }
}
