import Foundation

/// Something the engine decided, for the rollout's step log, the event stream and the store.
public struct EngineEvent: Sendable, Hashable, Codable {
    /// What it is about.
    public enum Kind: String, Sendable, Hashable, Codable {
        case rolloutStarted = "rollout_started"
        case stageStarted = "stage_started"
        case agentStep = "agent_step"
        case stagePassed = "stage_passed"
        case rolloutFailed = "rollout_failed"
        case rolloutEnded = "rollout_ended"
        case rolloutPaused = "rollout_paused"
        case rolloutResumed = "rollout_resumed"
        case ringChanged = "ring_changed"
        case ringConverged = "ring_converged"
    }

    /// Kind.
    public var kind: Kind
    /// A sentence for people.
    public var message: String
    /// The rollout it belongs to.
    public var rollout: Int?
    /// The agent it is about.
    public var agent: String?
    /// When.
    public var time: Date

    /// Creates an event.
    public init(kind: Kind, message: String, rollout: Int? = nil, agent: String? = nil, time: Date) {
        self.kind = kind
        self.message = message
        self.rollout = rollout
        self.agent = agent
        self.time = time
    }
}

/// The rollout and ring logic as a pure state machine: ``step(_:view:now:)`` takes the state, what every
/// agent reports and the time, and changes the state (assignments, ring, rollout). No I/O, no clock: the
/// controller persists the state after each step and pushes the configs the assignments call for.
public struct RolloutEngine: Sendable {
    /// A sampler that disconnects stays in the ring this long before it leaves.
    public var ringLeaveGraceSeconds: Double

    /// Creates an engine.
    public init(ringLeaveGraceSeconds: Double = 30) {
        self.ringLeaveGraceSeconds = ringLeaveGraceSeconds
    }

    // MARK: Commands

    /// Starts a rollout to `version` with `plan`. A rollout in progress is superseded: its samplers are let
    /// back into the ring and the new one starts from the same stable version.
    public func start(
        _ state: inout ControlState,
        version: Int,
        plan: RolloutPlan,
        samplerCount: Int,
        now: Date
    ) -> [EngineEvent] {
        var events: [EngineEvent] = []
        var from = state.current
        var alsoServing: [Int] = []
        if var active = state.rollout, !active.phase.isTerminal {
            active.phase = .superseded
            active.endedAt = now
            from = active.from
            // Its samplers keep serving on the version they run until the new rollout reaches them.
            alsoServing = (active.alsoServing + [active.to]).filter { $0 != version }
            state.rollout = active
            state.heldOut = [:]
            events.append(
                EngineEvent(
                    kind: .rolloutEnded,
                    message: "rollout \(active.id) superseded by version \(version)",
                    rollout: active.id,
                    time: now
                )
            )
        }
        state.samplerCount = max(1, samplerCount)
        var rollout = Rollout(
            id: state.nextRolloutID,
            from: from,
            to: version,
            phase: .progressing,
            plan: plan,
            stageStartedAt: now,
            startedAt: now
        )
        rollout.alsoServing = alsoServing
        rollout.progressAt = now
        state.nextRolloutID += 1
        state.rollout = rollout
        let tiers = plan.tiers.map(\.rawValue).joined(separator: " then ")
        events.append(
            EngineEvent(
                kind: .rolloutStarted,
                message:
                    "rollout \(rollout.id): version \(from.map(String.init) ?? "none") -> \(version) (\(tiers.isEmpty ? "no config changes" : tiers))",
                rollout: rollout.id,
                time: now
            )
        )
        return events
    }

    /// Why a command does not fit the rollout's phase.
    public struct CommandRefused: Error, Sendable, Hashable {
        /// Sentence naming the phase.
        public var message: String
    }

    /// Pause (between batches), resume, or abort (roll back what was touched).
    public enum Command: String, Sendable, Hashable, Codable {
        case pause, resume, abort
    }

    /// Applies a command to the active rollout.
    public func command(_ command: Command, _ state: inout ControlState, now: Date) throws(CommandRefused)
        -> [EngineEvent]
    {
        guard var rollout = state.rollout, !rollout.phase.isTerminal else {
            throw CommandRefused(
                message: "no rollout is in progress"
                    + (state.rollout.map { " (rollout \($0.id) is \($0.phase.rawValue))" } ?? "")
            )
        }
        defer { state.rollout = rollout }
        switch command {
        case .pause:
            if rollout.phase == .paused || rollout.pauseRequested { return [] }
            if rollout.rollingBack {
                throw CommandRefused(message: "rollout \(rollout.id) is rolling back and cannot be paused")
            }
            rollout.pauseRequested = true
            return [
                EngineEvent(
                    kind: .rolloutPaused,
                    message: "rollout \(rollout.id): pause requested; it stops after the current batch",
                    rollout: rollout.id,
                    time: now
                )
            ]
        case .resume:
            guard rollout.phase == .paused || rollout.pauseRequested else { return [] }
            rollout.pauseRequested = false
            rollout.phase = .progressing
            rollout.progressAt = now  // a paused stage gets its full time again
            return [
                EngineEvent(
                    kind: .rolloutResumed,
                    message: "rollout \(rollout.id) resumed",
                    rollout: rollout.id,
                    time: now
                )
            ]
        case .abort:
            if rollout.aborted || rollout.rollingBack { return [] }
            rollout.aborted = true
            rollout.pauseRequested = false
            rollout.phase = .progressing
            return self.fail(&rollout, &state, reason: "aborted by request", now: now)
        }
    }

    // MARK: Step

    /// What one step knows besides the state.
    struct Tick {
        var agents: [String: AgentView]
        var now: Date
        /// Every load balancer that routes (connected, or seen in the last few minutes) runs the current ring.
        var converged: Bool
        var ring: Set<String>
    }

    /// A load balancer silent longer than this no longer holds up ring convergence (it routes nothing, or
    /// gets the current ring the moment it reconnects, before it routes again).
    public var staleLoadBalancerSeconds: Double = 300

    /// Advances everything one step: ring convergence, the rollout, agents that joined or lag behind, the
    /// ring membership, and the ring embedded in every load balancer's assignment.
    public func step(_ state: inout ControlState, view: [AgentView], now: Date) -> [EngineEvent] {
        var events: [EngineEvent] = []
        let agents = Dictionary(view.map { ($0.uid, $0) }, uniquingKeysWith: { first, _ in first })

        // 1. Does every load balancer run the current ring? (Judged on the assignments the view was built for.)
        let converged = self.ringApplied(state, agents, now: now)
        if converged, state.ring.convergedAt == nil, state.ring.version > 0 {
            state.ring.convergedAt = now
            let seconds = now.timeIntervalSince(state.ring.changedAt)
            let routing = agents.values.filter {
                $0.tier == .loadBalancing && $0.connected && state.assignments[$0.uid] != nil
            }.count
            events.append(
                EngineEvent(
                    kind: .ringConverged,
                    message: routing == 0
                        ? "ring \(state.ring.version) (\(state.ring.members.count) samplers): no load balancer has a config yet"
                        : "all \(routing) load balancers run ring \(state.ring.version) (\(state.ring.members.count) samplers) after \(String(format: "%.2f", seconds))s",
                    time: now
                )
            )
        }
        let tick = Tick(agents: agents, now: now, converged: converged, ring: Set(state.ring.members))

        // 2. The rollout.
        if var rollout = state.rollout, rollout.phase == .progressing {
            events += self.advance(&rollout, &state, tick)
            state.rollout = rollout
        }

        // 3. Agents without an assignment, and agents behind when no rollout is active.
        events += self.assignOthers(&state, view, tick)

        // 4. The ring: samplers that are up, applied and healthy, minus those held out.
        events += self.maintainRing(&state, agents, converged: converged, now: now)

        // 5. Every load balancer with a config routes by the current ring.
        for agent in view where agent.tier == .loadBalancing {
            if var assignment = state.assignments[agent.uid], assignment.ring != state.ring.version {
                assignment.ring = state.ring.version
                state.assignments[agent.uid] = assignment
            }
        }
        return events
    }

    // MARK: Ring

    /// True when every load balancer that may be routing runs the current ring: connected ones, and those
    /// seen recently (a load balancer that lost its OpAMP connection still routes by the ring it has).
    private func ringApplied(_ state: ControlState, _ agents: [String: AgentView], now: Date) -> Bool {
        for (uid, assignment) in state.assignments where assignment.ring != nil {
            guard let agent = agents[uid], agent.tier == .loadBalancing else { continue }
            if !agent.connected, now.timeIntervalSince(agent.lastSeen) > self.staleLoadBalancerSeconds { continue }
            guard agent.connected, assignment.ring == state.ring.version, agent.progress == .applied else {
                return false
            }
        }
        return true
    }

    /// Versions a sampler may run and be in the ring with.
    private func servingVersions(_ state: ControlState) -> Set<Int> {
        var versions = Set<Int>()
        if let current = state.current { versions.insert(current) }
        if let rollout = state.rollout, !rollout.phase.isTerminal {
            if let from = rollout.from { versions.insert(from) }
            // While rolling back too: samplers on the new version leave the ring only by being drained.
            versions.insert(rollout.to)
            versions.formUnion(rollout.alsoServing)
        }
        return versions
    }

    private func maintainRing(
        _ state: inout ControlState,
        _ agents: [String: AgentView],
        converged: Bool,
        now: Date
    ) -> [EngineEvent] {
        let serving = self.servingVersions(state)
        let current = Set(state.ring.members)
        var members = Set<String>()
        for agent in agents.values where agent.tier == .sampling {
            guard let entry = agent.ringEntry, state.heldOut[agent.uid] == nil,
                let assignment = state.assignments[agent.uid], serving.contains(assignment.version)
            else { continue }
            let up =
                agent.connected
                || (current.contains(entry) && now.timeIntervalSince(agent.lastSeen) < self.ringLeaveGraceSeconds)
            if up, agent.progress == .applied, agent.healthy { members.insert(entry) }
        }
        state.leftRing = state.leftRing.filter { now.timeIntervalSince($0.value) < 3600 }
        guard members != current else { return [] }
        // Never an empty ring: the load balancers could not even be given a config for it, so the ring could
        // never converge and no sampler could join again (every sampler restarting at once, without drain, for
        // a package install). The last members stay until one is ready, except samplers held out to be drained:
        // they must leave, or they could never be updated.
        if members.isEmpty {
            let held = Set(state.heldOut.keys.compactMap { agents[$0]?.ringEntry })
            let survivors = current.subtracting(held)
            guard !survivors.isEmpty, survivors != current else { return [] }
            members = survivors
        }
        // Joins wait until the load balancers run the current ring, so samplers that become ready together
        // join in one change (each change rewrites every load balancer's config). Departures go out at once.
        // An empty ring (none yet) has nothing to wait for.
        if !converged, current.isSubset(of: members), !current.isEmpty { return [] }
        let sorted = members.sorted()
        let joined = sorted.filter { !current.contains($0) }
        let left = state.ring.members.filter { !members.contains($0) }
        for entry in left { state.leftRing[entry] = now }
        state.ring.version += 1
        state.ring.members = sorted
        state.ring.changedAt = now
        state.ring.convergedAt = nil
        var parts: [String] = []
        // A few names, then a count: a fleet starting up joins thousands of samplers in one change, and this
        // text goes into the ring history, the event stream and the console.
        func names(_ entries: [String]) -> String {
            let shown = entries.prefix(5).joined(separator: ", ")
            return entries.count > 5 ? "\(shown) and \(entries.count - 5) more" : shown
        }
        if !joined.isEmpty { parts.append("joined: " + names(joined)) }
        if !left.isEmpty { parts.append("left: " + names(left)) }
        return [
            EngineEvent(
                kind: .ringChanged,
                message: "ring \(state.ring.version): \(sorted.count) samplers (\(parts.joined(separator: "; ")))",
                rollout: state.rollout.flatMap { $0.phase.isTerminal ? nil : $0.id },
                time: now
            )
        ]
    }

    /// Whether a sampler outside the ring may get a new config now: every routing load balancer runs a ring
    /// without it, and if it left the ring recently, its traces have had `settle` seconds to be decided since.
    private func drained(_ agent: AgentView, _ state: ControlState, _ tick: Tick, settle: Double) -> Bool {
        guard let entry = agent.ringEntry else { return true }
        guard !tick.ring.contains(entry), tick.converged else { return false }
        guard let left = state.leftRing[entry] else { return true }
        let since = max(left, state.ring.convergedAt ?? state.ring.changedAt)
        return tick.now.timeIntervalSince(since) >= settle
    }

    /// Samplers of a batch that may leave the ring together: never all of it (with nowhere to route, the
    /// load balancers could not even be given a ring). Returns the batch members to keep for later.
    private func capped(_ batch: [String], _ state: ControlState, _ tick: Tick) -> (now: [String], later: [String]) {
        var inRing = 0
        var now: [String] = []
        var later: [String] = []
        for uid in batch {
            if let entry = tick.agents[uid]?.ringEntry, tick.ring.contains(entry) {
                if inRing + 1 >= tick.ring.count, tick.ring.count > 1 {
                    later.append(uid)
                    continue
                }
                inRing += 1
            }
            now.append(uid)
        }
        return (now, later)
    }

    // MARK: Agents outside the rollout

    private func assignment(for tier: AgentTier, version: Int, _ state: ControlState) -> Assignment {
        tier == .loadBalancing
            ? Assignment(version: version, ring: state.ring.version)
            : Assignment(version: version, samplerCount: state.samplerCount)
    }

    private func assignOthers(_ state: inout ControlState, _ view: [AgentView], _ tick: Tick) -> [EngineEvent] {
        let active = state.rollout.flatMap { $0.phase.isTerminal ? nil : $0 }
        // During a rollout a newcomer gets the stable version (the new one once its stage comes); without a
        // stable version it waits for the rollout.
        let target = active.map { $0.from } ?? state.current
        guard let target else { return [] }
        var events: [EngineEvent] = []
        let settle = state.rollout?.plan.settleSeconds ?? 33
        var draining = state.heldOut.count
        let limit = max(1, state.rollout?.plan.maxUnavailable ?? 1)
        for agent in view where agent.tier != .unmanaged && agent.connected {
            guard let assignment = state.assignments[agent.uid] else {
                state.assignments[agent.uid] = self.assignment(for: agent.tier, version: target, state)
                events.append(
                    EngineEvent(
                        kind: .agentStep,
                        message: "\(agent.name) (\(agent.tier.rawValue)) joined: gets version \(target)",
                        agent: agent.uid,
                        time: tick.now
                    )
                )
                continue
            }
            // Catch up when no rollout is active: agents that were offline when their turn came, or joined
            // while it ran. A sampler in the ring leaves it first, like any drain, a few at a time.
            guard active == nil else { continue }
            if assignment.version == target {
                if state.heldOut[agent.uid] != nil, agent.progress == .applied, agent.healthy {
                    state.heldOut[agent.uid] = nil
                }
                continue
            }
            if agent.tier == .sampling {
                if state.heldOut[agent.uid] == nil, let entry = agent.ringEntry, tick.ring.contains(entry),
                    tick.ring.count > 1,
                    // One member not held out stays in the ring, as in a rollout's batches.
                    tick.ring.subtracting(state.heldOut.keys.compactMap { tick.agents[$0]?.ringEntry }).count > 1
                {
                    guard draining < limit else { continue }
                    state.heldOut[agent.uid] = tick.now
                    draining += 1
                    events.append(
                        EngineEvent(
                            kind: .agentStep,
                            message: "draining \(agent.name) to catch up with version \(target)",
                            agent: agent.uid,
                            time: tick.now
                        )
                    )
                    continue
                }
                let alone = agent.ringEntry.map { tick.ring == [$0] } ?? false
                guard alone || self.drained(agent, state, tick, settle: settle) else { continue }
            }
            state.assignments[agent.uid] = self.assignment(for: agent.tier, version: target, state)
            events.append(
                EngineEvent(
                    kind: .agentStep,
                    message: "\(agent.name) catches up: version \(assignment.version) -> \(target)",
                    agent: agent.uid,
                    time: tick.now
                )
            )
        }
        return events
    }

    // MARK: Rollout progress

    private func event(_ rollout: Rollout, _ kind: EngineEvent.Kind, _ message: String, agent: String? = nil, now: Date)
        -> EngineEvent
    {
        EngineEvent(
            kind: kind,
            message: "rollout \(rollout.id): " + message,
            rollout: rollout.id,
            agent: agent,
            time: now
        )
    }

    private func timedOut(_ rollout: Rollout, _ now: Date) -> Bool {
        now.timeIntervalSince(rollout.progressAt ?? rollout.stageStartedAt) > rollout.plan.stageTimeoutSeconds
    }

    private func advance(_ rollout: inout Rollout, _ state: inout ControlState, _ tick: Tick) -> [EngineEvent] {
        let now = tick.now
        let agents = tick.agents
        var events: [EngineEvent] = []
        if rollout.rollingBack { return self.advanceRollback(&rollout, &state, tick) }
        guard let tier = rollout.tier else { return self.succeed(&rollout, &state, now: now) }

        // Stage membership, frozen at stage start.
        if !rollout.stageOpen {
            let members = self.stageMembers(rollout, state, agents, tier: tier)
            rollout.members = members
            rollout.stageOpen = true
            rollout.stageStartedAt = now
            rollout.progressAt = now
            for uid in members where rollout.steps[uid] == nil { rollout.steps[uid] = .waiting }
            events.append(
                self.event(
                    rollout,
                    .stageStarted,
                    "\(tier.rawValue) stage \(rollout.stageIndex + 1)/\(rollout.plan.stages.count): \(members.count) agent\(members.count == 1 ? "" : "s")",
                    now: now
                )
            )
        }
        if self.timedOut(rollout, now) {
            return events
                + self.fail(
                    &rollout,
                    &state,
                    reason:
                        "\(tier.rawValue) stage \(rollout.stageIndex + 1) made no progress for \(Int(rollout.plan.stageTimeoutSeconds))s",
                    now: now
                )
        }
        // Anything touched that failed or turned unhealthy fails the rollout, whatever stage it was in.
        for uid in rollout.touched where rollout.steps[uid] == .applying || rollout.steps[uid] == .done {
            guard let agent = agents[uid], state.assignments[uid]?.version == rollout.to else { continue }
            if case .failed(let message) = agent.progress {
                rollout.steps[uid] = .failed
                return events
                    + self.fail(
                        &rollout,
                        &state,
                        reason: "\(Self.full(uid, agents)) failed version \(rollout.to): \(message)",
                        now: now
                    )
            }
            if agent.progress == .applied, !agent.healthy, agent.connected {
                rollout.steps[uid] = .failed
                return events
                    + self.fail(
                        &rollout,
                        &state,
                        reason: "\(Self.full(uid, agents)) turned unhealthy on version \(rollout.to)",
                        now: now
                    )
            }
        }

        if !rollout.batch.isEmpty {
            return events + self.advanceBatch(&rollout, &state, tick, target: rollout.to)
        }
        let waiting = rollout.members.filter { rollout.steps[$0] == .waiting }
        if !waiting.isEmpty {
            if rollout.pauseRequested {
                rollout.phase = .paused
                rollout.pauseRequested = false
                return events + [self.event(rollout, .rolloutPaused, "paused", now: now)]
            }
            var batch: [String] = []
            for uid in waiting where batch.count < max(1, rollout.plan.maxUnavailable) {
                guard let agent = agents[uid], agent.connected else {
                    rollout.steps[uid] = .skipped
                    events.append(
                        self.event(
                            rollout,
                            .agentStep,
                            "\(Self.name(uid, agents)) is offline: skipped, it catches up when it returns",
                            agent: uid,
                            now: now
                        )
                    )
                    continue
                }
                batch.append(uid)
            }
            let (ready, later) = rollout.plan.drain ? self.capped(batch, state, tick) : (batch, [])
            _ = later  // stays waiting for the next batch
            guard !ready.isEmpty else { return events }
            rollout.batch = ready
            rollout.progressAt = now
            return events + self.beginBatch(&rollout, &state, tick, target: rollout.to)
        }

        // Every member handled: bake (a stage that had no members has nothing to bake), then the next stage.
        if rollout.bakeStartedAt == nil, !rollout.members.isEmpty {
            rollout.bakeStartedAt = now
            rollout.progressAt = now
            return events
        }
        if let bake = rollout.bakeStartedAt, now.timeIntervalSince(bake) < rollout.plan.bakeSeconds { return events }
        events.append(
            self.event(
                rollout,
                .stagePassed,
                rollout.members.isEmpty
                    ? "\(tier.rawValue) stage \(rollout.stageIndex + 1) had nobody left to update"
                    : "\(tier.rawValue) stage \(rollout.stageIndex + 1) passed (healthy for \(String(format: "%g", rollout.plan.bakeSeconds))s)",
                now: now
            )
        )
        rollout.members = []
        rollout.stageOpen = false
        rollout.bakeStartedAt = nil
        rollout.stageIndex += 1
        if rollout.stageIndex >= rollout.plan.stages.count || self.everyoneTouched(rollout, agents, tier: tier) {
            rollout.stageIndex = 0
            rollout.tierIndex += 1
            if rollout.tier == nil { events += self.succeed(&rollout, &state, now: now) }
        }
        return events
    }

    private func everyoneTouched(_ rollout: Rollout, _ agents: [String: AgentView], tier: AgentTier) -> Bool {
        agents.values.filter { $0.tier == tier && $0.connected }.allSatisfy { rollout.steps[$0.uid] != nil }
    }

    /// Members of a stage: the agents of the tier not yet in an earlier stage, by a stable hash of their UID,
    /// so a restarted control plane picks the same ones.
    private func stageMembers(_ rollout: Rollout, _ state: ControlState, _ agents: [String: AgentView], tier: AgentTier)
        -> [String]
    {
        let tierAgents = agents.values.filter { $0.tier == tier && ($0.connected || rollout.steps[$0.uid] != nil) }
        let candidates = tierAgents.filter { rollout.steps[$0.uid] == nil && $0.connected }.map(\.uid).sorted {
            (Self.stableHash($0), $0) < (Self.stableHash($1), $1)
        }
        let isLast = rollout.stageIndex >= rollout.plan.stages.count - 1
        if isLast { return candidates }
        let already = tierAgents.count - candidates.count
        let wanted: Int
        switch rollout.plan.stages[rollout.stageIndex] {
        case .canary(let count): wanted = count
        case .percent(let percent):
            wanted = Int((Double(tierAgents.count) * Double(percent) / 100).rounded(.up)) - already
        }
        return Array(candidates.prefix(max(0, wanted)))
    }

    /// The agent's name for messages.
    static func name(_ uid: String, _ agents: [String: AgentView]) -> String {
        agents[uid]?.name ?? uid
    }

    /// Name and UID, for failure reasons that outlive the agent.
    static func full(_ uid: String, _ agents: [String: AgentView]) -> String {
        let name = Self.name(uid, agents)
        return name == uid ? uid : "\(name) (\(uid))"
    }

    static func stableHash(_ text: String) -> UInt64 {
        var hash: UInt64 = 14_695_981_039_346_656_037
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 1_099_511_628_211
        }
        return hash
    }

    /// Starts a batch: samplers leave the ring (drain) and wait until no load balancer routes to them; every
    /// other agent gets its config now.
    private func beginBatch(
        _ rollout: inout Rollout,
        _ state: inout ControlState,
        _ tick: Tick,
        target: Int
    ) -> [EngineEvent] {
        var events: [EngineEvent] = []
        for uid in rollout.batch {
            guard rollout.plan.drain, let agent = tick.agents[uid], agent.tier == .sampling, let entry = agent.ringEntry
            else {
                events += self.give(&rollout, &state, tick.agents, uid: uid, target: target, now: tick.now)
                continue
            }
            if tick.ring == [entry] {
                // The whole ring: there is nowhere else to send traces, so it is updated in place.
                events.append(
                    self.event(
                        rollout,
                        .agentStep,
                        "\(agent.name) is the only sampler in the ring: updated in place",
                        agent: uid,
                        now: tick.now
                    )
                )
                events += self.give(&rollout, &state, tick.agents, uid: uid, target: target, now: tick.now)
                continue
            }
            state.heldOut[uid] = state.heldOut[uid] ?? tick.now
            rollout.steps[uid] = .draining
            if let entry = agent.ringEntry, tick.ring.contains(entry) {
                events.append(
                    self.event(
                        rollout,
                        .agentStep,
                        "draining \(agent.name): out of the ring on every load balancer before its config changes",
                        agent: uid,
                        now: tick.now
                    )
                )
            }
        }
        return events
    }

    private func give(
        _ rollout: inout Rollout,
        _ state: inout ControlState,
        _ agents: [String: AgentView],
        uid: String,
        target: Int,
        now: Date
    ) -> [EngineEvent] {
        let tier = agents[uid]?.tier ?? .sampling
        state.assignments[uid] = self.assignment(for: tier, version: target, state)
        rollout.steps[uid] = rollout.rollingBack ? .rollingBack : .applying
        if !rollout.rollingBack { rollout.touched.append(uid) }
        return [
            self.event(rollout, .agentStep, "\(Self.name(uid, agents)) gets version \(target)", agent: uid, now: now)
        ]
    }

    /// Moves the batch on: drained everywhere -> settled -> configured -> applied and healthy -> back in the ring.
    private func advanceBatch(
        _ rollout: inout Rollout,
        _ state: inout ControlState,
        _ tick: Tick,
        target: Int
    ) -> [EngineEvent] {
        let agents = tick.agents
        let now = tick.now
        var events: [EngineEvent] = []
        var moved = false
        for uid in rollout.batch where rollout.steps[uid] == .draining {
            guard let agent = agents[uid], let entry = agent.ringEntry, !tick.ring.contains(entry), tick.converged
            else { continue }
            rollout.steps[uid] = .settling
            moved = true
            if state.leftRing[entry] != nil {
                events.append(
                    self.event(
                        rollout,
                        .agentStep,
                        "every load balancer routes around \(agent.name); waiting \(String(format: "%g", rollout.plan.settleSeconds))s for its buffered traces to be decided",
                        agent: uid,
                        now: now
                    )
                )
            }
        }
        for uid in rollout.batch where rollout.steps[uid] == .settling {
            guard let agent = agents[uid], self.drained(agent, state, tick, settle: rollout.plan.settleSeconds) else {
                continue
            }
            events += self.give(&rollout, &state, agents, uid: uid, target: target, now: now)
            moved = true
        }
        if moved {
            // What the agents report is about their assignments before this step: judge them next step.
            rollout.progressAt = now
            return events
        }
        // Every member configured: wait for APPLIED and healthy.
        guard rollout.batch.allSatisfy({ rollout.steps[$0] == .applying || rollout.steps[$0] == .rollingBack }) else {
            return events
        }
        var allDone = true
        for uid in rollout.batch {
            guard let agent = agents[uid] else {
                allDone = false
                continue
            }
            if case .failed(let message) = agent.progress, !rollout.rollingBack {
                rollout.steps[uid] = .failed
                return events
                    + self.fail(
                        &rollout,
                        &state,
                        reason: "\(Self.full(uid, agents)) failed version \(target): \(message)",
                        now: now
                    )
            }
            guard agent.progress == .applied, agent.healthy else {
                allDone = false
                continue
            }
            if let since = state.heldOut.removeValue(forKey: uid) {
                rollout.outOfRing[uid] = (rollout.outOfRing[uid] ?? 0) + now.timeIntervalSince(since)
            }
        }
        guard allDone else { return events }
        // Back in the ring on every load balancer before the next batch leaves it.
        let entries = Set(
            rollout.batch.compactMap { uid in agents[uid].flatMap { $0.tier == .sampling ? $0.ringEntry : nil } }
        )
        if rollout.plan.drain, !entries.isEmpty {
            guard entries.isSubset(of: tick.ring), tick.converged else { return events }
        }
        for uid in rollout.batch {
            rollout.steps[uid] = rollout.rollingBack ? .rolledBack : .done
            let out = rollout.outOfRing[uid].map { String(format: ", %.1fs out of the ring", $0) } ?? ""
            events.append(
                self.event(
                    rollout,
                    .agentStep,
                    "\(Self.name(uid, agents)) runs version \(target), healthy\(out)",
                    agent: uid,
                    now: now
                )
            )
        }
        rollout.batch = []
        rollout.progressAt = now
        return events
    }

    // MARK: Failure, rollback, success

    private func fail(_ rollout: inout Rollout, _ state: inout ControlState, reason: String, now: Date) -> [EngineEvent]
    {
        rollout.failure = reason
        var events = [self.event(rollout, .rolloutFailed, reason, now: now)]
        guard rollout.from != nil, rollout.plan.autoRollback || rollout.aborted else {
            rollout.phase = rollout.aborted ? .aborted : .failed
            rollout.endedAt = now
            state.heldOut = [:]
            let why =
                rollout.from == nil
                ? "no earlier version to return to"
                : "auto_rollback is off; `policyctl rollback` returns to \(rollout.from!)"
            events.append(self.event(rollout, .rolloutEnded, "ended \(rollout.phase.rawValue): \(why)", now: now))
            return events
        }
        rollout.rollingBack = true
        rollout.batch = []
        rollout.members = []
        rollout.progressAt = now
        events.append(
            self.event(
                rollout,
                .agentStep,
                "rolling back \(rollout.touched.count) agent\(rollout.touched.count == 1 ? "" : "s") to version \(rollout.from!)",
                now: now
            )
        )
        return events
    }

    /// Rolls every touched agent back, in batches (larger than a rollout's: a quarter of the ring at least),
    /// samplers drained first like any update.
    private func advanceRollback(_ rollout: inout Rollout, _ state: inout ControlState, _ tick: Tick) -> [EngineEvent] {
        guard let from = rollout.from else { return [] }
        if self.timedOut(rollout, tick.now) { return self.endRollback(&rollout, &state, now: tick.now) }
        if !rollout.batch.isEmpty {
            return self.advanceBatch(&rollout, &state, tick, target: from)
        }
        let pending = rollout.touched.filter {
            state.assignments[$0]?.version != from && tick.agents[$0]?.connected == true
                && rollout.steps[$0] != .rolledBack
        }
        guard !pending.isEmpty else { return self.endRollback(&rollout, &state, now: tick.now) }
        let size = max(rollout.plan.maxUnavailable, Int((Double(tick.ring.count) / 4).rounded(.up)), 1)
        let (ready, _) =
            rollout.plan.drain
            ? self.capped(Array(pending.prefix(size)), state, tick) : (Array(pending.prefix(size)), [])
        guard !ready.isEmpty else { return [] }
        rollout.batch = ready
        rollout.progressAt = tick.now
        return self.beginBatch(&rollout, &state, tick, target: from)
    }

    private func endRollback(_ rollout: inout Rollout, _ state: inout ControlState, now: Date) -> [EngineEvent] {
        rollout.phase = rollout.aborted ? .aborted : .rolledBack
        rollout.endedAt = now
        rollout.batch = []
        state.heldOut = [:]
        return [
            self.event(
                rollout,
                .rolloutEnded,
                "\(rollout.phase == .aborted ? "aborted" : "rolled back"): the fleet runs version \(rollout.from.map(String.init) ?? "none")",
                now: now
            )
        ]
    }

    private func succeed(_ rollout: inout Rollout, _ state: inout ControlState, now: Date) -> [EngineEvent] {
        rollout.phase = .succeeded
        rollout.endedAt = now
        // Tiers whose config did not change run the new version already: same config, nothing to send.
        if let from = rollout.from {
            for (uid, assignment) in state.assignments where assignment.version == from {
                let tier: AgentTier = assignment.ring != nil ? .loadBalancing : .sampling
                if !rollout.plan.tiers.contains(tier) { state.assignments[uid]?.version = rollout.to }
            }
        }
        state.current = rollout.to
        state.heldOut = [:]
        let out = rollout.outOfRing.values
        let summary =
            out.isEmpty
            ? ""
            : String(
                format: "; samplers out of the ring %.1fs on average, %.1fs at most",
                out.reduce(0, +) / Double(out.count),
                out.max() ?? 0
            )
        return [
            self.event(rollout, .rolloutEnded, "succeeded: the fleet runs version \(rollout.to)\(summary)", now: now)
        ]
    }
}
