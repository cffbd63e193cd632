import ControlPlane
import Foundation
import Testing

/// The rollout engine alone: scripted agents, a hand-moved clock, no sockets. After every step the harness
/// checks the drain invariant: a sampler's config changes only while no load balancer routes to it.
@Suite struct EngineTests {
    struct SimAgent {
        var uid: String
        var tier: AgentTier
        var entry: String?
        var connected = true
        var healthy = true
        /// What it runs (the assignment it last adopted).
        var applied: Assignment?
        var failed: Assignment?
        var lastSeen = Date(timeIntervalSince1970: 1_900_000_000)
    }

    struct Harness {
        var state: ControlState
        let engine = RolloutEngine(ringLeaveGraceSeconds: 1)
        var agents: [String: SimAgent] = [:]
        var now = Date(timeIntervalSince1970: 1_900_000_000)
        var failing: Set<Int> = []
        /// Agents that fail one version only.
        var failingAgent: [String: Int] = [:]
        var rings: [Int: [String]] = [:]
        /// Agents that do not take new assignments yet (a package still downloading).
        var holding: Set<String> = []
        var log: [EngineEvent] = []
        var violations: [String] = []

        init(loadBalancers: Int, samplers: Int) {
            self.state = ControlState(now: self.now)
            for index in 0..<loadBalancers { self.add("lb-\(index)", .loadBalancing) }
            for index in 0..<samplers { self.add("s-\(index)", .sampling) }
        }

        mutating func add(_ uid: String, _ tier: AgentTier) {
            self.agents[uid] = SimAgent(uid: uid, tier: tier, entry: tier == .sampling ? "\(uid):4317" : nil)
        }

        func views() -> [AgentView] {
            self.agents.values.sorted { $0.uid < $1.uid }.map { agent in
                let assignment = self.state.assignments[agent.uid]
                var progress = ConfigProgress.pending
                if let assignment, agent.failed == assignment {
                    progress = .failed("exit 1")
                } else if let assignment, agent.applied == assignment {
                    progress = .applied
                }
                return AgentView(
                    uid: agent.uid,
                    tier: agent.tier,
                    connected: agent.connected,
                    lastSeen: agent.connected ? self.now : agent.lastSeen,
                    ringEntry: agent.entry,
                    progress: progress,
                    healthy: agent.healthy && agent.failed == nil
                )
            }
        }

        /// One controller tick: step, then every connected agent takes what it was assigned.
        mutating func tick(_ seconds: Double = 0.1) {
            self.log += self.engine.step(&self.state, view: self.views(), now: self.now)
            self.rings[self.state.ring.version] = self.state.ring.members
            for uid in self.agents.keys.sorted() {
                guard var agent = self.agents[uid], agent.connected else { continue }
                agent.lastSeen = self.now
                self.agents[uid] = agent
                guard let assignment = self.state.assignments[uid], !self.holding.contains(uid) else { continue }
                if agent.applied == assignment, agent.failed != nil {
                    agent.failed = nil  // back on what it ran: the supervisor restarts it healthy
                }
                if agent.applied != assignment, agent.failed != assignment {
                    if agent.tier == .sampling, agent.applied?.version != assignment.version, agent.applied != nil,
                        self.state.ring.members.count > 1
                            || !(self.rings[self.state.ring.version] ?? []).contains(agent.entry ?? "")
                    {
                        // The drain invariant: no load balancer's applied ring holds this sampler (a load balancer
                        // that lost its connection still routes by the ring it has).
                        for lb in self.agents.values where lb.tier == .loadBalancing {
                            if let ring = lb.applied?.ring, self.rings[ring]?.contains(agent.entry ?? "") == true {
                                self.violations.append(
                                    "\(uid) changed config while \(lb.uid) routed to it (ring \(ring)); log: \(self.log.suffix(6).map(\.message))"
                                )
                            }
                        }
                    }
                    if self.failing.contains(assignment.version) || self.failingAgent[uid] == assignment.version {
                        agent.failed = assignment
                    } else {
                        agent.applied = assignment
                        agent.failed = nil
                    }
                }
                self.agents[uid] = agent
            }
            self.now += seconds
        }

        mutating func run(until condition: (Harness) -> Bool, limit: Int = 5000) -> Bool {
            for _ in 0..<limit {
                if condition(self) { return true }
                self.tick()
            }
            return condition(self)
        }

        mutating func start(
            _ version: Int,
            bake: Double = 1,
            timeout: Double = 300,
            stages: [RolloutPlan.Stage] = [.canary(1), .percent(25), .percent(100)],
            maxUnavailable: Int = 1,
            drain: Bool = true
        ) {
            let plan = RolloutPlan(
                stages: stages,
                maxUnavailable: maxUnavailable,
                bakeSeconds: bake,
                stageTimeoutSeconds: timeout,
                drain: drain,
                settleSeconds: 2,
                tiers: [.sampling, .loadBalancing]
            )
            let samplers = self.agents.values.filter { $0.tier == .sampling }.count
            self.log += self.engine.start(
                &self.state,
                version: version,
                plan: plan,
                samplerCount: samplers,
                now: self.now
            )
        }

        var phase: RolloutPhase? { self.state.rollout?.phase }
    }

    @Test func theRingNeverEmptiesWhenEverySamplerRestartsAtOnce() {
        // Without drain, one batch of the whole tier: every sampler is busy installing at the same time. An empty
        // ring cannot be rendered, so it would never converge and nobody could join again.
        var harness = Harness(loadBalancers: 2, samplers: 3)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.holding = ["s-0", "s-1", "s-2"]
        harness.start(2, stages: [.percent(100)], maxUnavailable: 3, drain: false)
        for _ in 0..<50 {
            harness.tick()
            #expect(!harness.state.ring.members.isEmpty)
        }
        harness.holding = []
        #expect(harness.run { $0.phase == .succeeded })
        #expect(harness.state.ring.members.count == 3)
        #expect(harness.agents.values.allSatisfy { $0.applied?.version == 2 })
    }

    @Test func stagesRollInOrderAndNobodyRestartsWhileRoutedTo() {
        var harness = Harness(loadBalancers: 3, samplers: 8)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.start(2)
        #expect(harness.run { $0.phase == .succeeded })
        #expect(harness.violations.isEmpty, "\(harness.violations)")
        #expect(harness.agents.values.allSatisfy { $0.applied?.version == 2 })
        #expect(harness.state.ring.members.count == 8)
        let rollout = harness.state.rollout!
        #expect(rollout.outOfRing.count == 8)
        // Stage order: the canary first, then 25% (one more), then the rest.
        let started = harness.log.filter { $0.kind == .stageStarted && $0.rollout == rollout.id }.map(\.message)
        #expect(started.first?.contains("sampling stage 1/3: 1 agent") == true)
        #expect(started.dropFirst().first?.contains("sampling stage 2/3: 1 agent") == true)
        #expect(started.dropFirst(2).first?.contains("sampling stage 3/3: 6 agents") == true)
    }

    @Test func aFailingCanaryRollsBackAndTheRestNeverSeeIt() {
        var harness = Harness(loadBalancers: 2, samplers: 5)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.failing = [2]
        harness.start(2)
        #expect(harness.run { $0.phase?.isTerminal == true })
        #expect(harness.phase == .rolledBack)
        #expect(harness.violations.isEmpty, "\(harness.violations)")
        #expect(harness.state.current == 1)
        #expect(harness.state.rollout?.touched.count == 1)
        #expect(harness.agents.values.filter { $0.failed?.version == 2 || $0.applied?.version == 2 }.count <= 1)
        #expect(
            harness.run { $0.agents.values.allSatisfy { $0.applied?.version == 1 } && $0.state.ring.members.count == 5 }
        )
    }

    @Test func pauseStopsBetweenBatchesAndAbortRollsBack() throws {
        var harness = Harness(loadBalancers: 1, samplers: 6)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.start(2)
        #expect(harness.run { ($0.state.rollout?.touched.count ?? 0) >= 2 })
        _ = try harness.engine.command(.pause, &harness.state, now: harness.now)
        #expect(harness.run { $0.phase == .paused })
        let touched = harness.state.rollout!.touched.count
        for _ in 0..<200 { harness.tick() }
        #expect(harness.state.rollout!.touched.count == touched)
        #expect(harness.state.heldOut.isEmpty)
        _ = try harness.engine.command(.resume, &harness.state, now: harness.now)
        #expect(harness.run { ($0.state.rollout?.touched.count ?? 0) > touched })
        _ = try harness.engine.command(.abort, &harness.state, now: harness.now)
        #expect(harness.run { $0.phase?.isTerminal == true })
        #expect(harness.phase == .aborted)
        #expect(harness.violations.isEmpty, "\(harness.violations)")
        #expect(harness.run { $0.agents.values.allSatisfy { $0.applied?.version == 1 } })
        // A command with no rollout in progress is refused and names why.
        #expect(throws: RolloutEngine.CommandRefused.self) {
            try harness.engine.command(.pause, &harness.state, now: harness.now)
        }
    }

    @Test func aStageThatNeverPassesTimesOutAndRollsBack() {
        var harness = Harness(loadBalancers: 1, samplers: 3)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.start(2, timeout: 20)
        #expect(harness.run { $0.state.rollout?.touched.isEmpty == false })
        // The canary hangs: connected, never reports.
        let canary = harness.state.rollout!.touched[0]
        harness.agents[canary]?.connected = false
        #expect(harness.run { $0.phase?.isTerminal == true })
        #expect(harness.phase == .rolledBack)
        #expect(harness.state.rollout?.failure?.contains("made no progress for 20s") == true)
    }

    @Test func samplersThatJoinDuringARolloutCatchUpDrainAware() {
        var harness = Harness(loadBalancers: 2, samplers: 4)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.start(2)
        // Two samplers join mid-rollout: they get the stable version and join the ring.
        #expect(harness.run { $0.state.rollout?.stageIndex == 2 })
        harness.add("late-0", .sampling)
        harness.add("late-1", .sampling)
        #expect(harness.run { $0.phase == .succeeded })
        // Afterwards they are drained and brought to version 2, never while routed to.
        #expect(harness.run { $0.agents.values.allSatisfy { $0.applied?.version == 2 } && $0.state.heldOut.isEmpty })
        #expect(harness.run { $0.state.ring.members.count == 6 })
        #expect(harness.violations.isEmpty, "\(harness.violations)")
    }

    @Test func aDisconnectedSamplerLeavesTheRingAfterTheGraceAndAFailingOneNeverJoins() {
        var harness = Harness(loadBalancers: 2, samplers: 3)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        #expect(harness.state.ring.members.count == 3)
        harness.agents["s-0"]?.connected = false
        harness.tick(0.5)
        #expect(harness.state.ring.members.count == 3)  // within the grace
        #expect(harness.run { $0.state.ring.members.count == 2 })
        // A new sampler that cannot start never joins.
        harness.failing = [1]
        harness.add("bad", .sampling)
        for _ in 0..<100 { harness.tick() }
        #expect(!harness.state.ring.members.contains("bad:4317"))
        // Every load balancer has the ring without them.
        let ring = harness.state.ring.version
        #expect(harness.agents.values.filter { $0.tier == .loadBalancing }.allSatisfy { $0.applied?.ring == ring })
    }

    @Test func aFailureLateInTheRolloutDrainsEverySamplerItRollsBack() {
        var harness = Harness(loadBalancers: 2, samplers: 6)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.start(2)
        #expect(harness.run { ($0.state.rollout?.touched.count ?? 0) >= 4 })
        // The next sampler to be updated cannot run version 2; the four before it are healthy on it.
        let next = harness.state.rollout!.members.first { harness.state.rollout!.steps[$0] == .waiting }!
        harness.failingAgent[next] = 2
        #expect(harness.run { $0.phase?.isTerminal == true })
        #expect(harness.phase == .rolledBack)
        #expect(harness.violations.isEmpty, "\(harness.violations)")
        #expect(
            harness.run { $0.agents.values.allSatisfy { $0.applied?.version == 1 } && $0.state.ring.members.count == 6 }
        )
        // Every rolled-back sampler left the ring before its config changed.
        let drained = harness.log.filter { $0.message.contains("draining") && $0.rollout == harness.state.rollout?.id }
        #expect(drained.count >= 9)
    }

    @Test func aLoadBalancerThatLostItsConnectionHoldsTheDrainUntilItIsBackOrStale() {
        var harness = Harness(loadBalancers: 2, samplers: 3)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.agents["lb-1"]?.connected = false
        harness.start(2)
        #expect(harness.run { $0.log.contains { $0.message.contains("draining") } })
        for _ in 0..<100 { harness.tick() }
        #expect(harness.state.rollout?.touched.isEmpty == true)  // nobody configured while lb-1 may route
        harness.agents["lb-1"]?.connected = true
        #expect(harness.run { $0.phase == .succeeded })
        #expect(harness.violations.isEmpty, "\(harness.violations)")
    }

    @Test func theOnlySamplerIsUpdatedInPlace() {
        var harness = Harness(loadBalancers: 1, samplers: 1)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.start(2)
        #expect(harness.run { $0.phase == .succeeded })
        #expect(harness.log.contains { $0.message.contains("only sampler in the ring: updated in place") })
        #expect(harness.agents["s-0"]?.applied?.version == 2)
    }

    @Test func aSupersededRolloutsSamplersKeepServing() {
        var harness = Harness(loadBalancers: 1, samplers: 6)
        harness.start(1)
        #expect(harness.run { $0.phase == .succeeded })
        harness.start(2)
        #expect(harness.run { ($0.state.rollout?.touched.count ?? 0) >= 3 })
        let before = harness.state.ring.members.count
        harness.start(3)
        harness.tick()
        harness.tick()
        #expect(harness.state.ring.members.count >= before - 1)
        #expect(harness.run { $0.phase == .succeeded && $0.state.rollout?.to == 3 })
        #expect(harness.agents.values.allSatisfy { $0.applied?.version == 3 })
        #expect(harness.violations.isEmpty, "\(harness.violations)")
    }
}
