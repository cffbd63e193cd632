import Foundation

/// What one managed agent should run: a version, plus the ring (load balancers) or the sampler count
/// (samplers) it was rendered for.
public struct Assignment: Sendable, Hashable, Codable {
    /// Policy-set version.
    public var version: Int
    /// Ring version embedded in a load balancer's config.
    public var ring: Int?
    /// Sampler count a sampler's fleet-wide limits were divided by.
    public var samplerCount: Int?

    /// Creates an assignment.
    public init(version: Int, ring: Int? = nil, samplerCount: Int? = nil) {
        self.version = version
        self.ring = ring
        self.samplerCount = samplerCount
    }
}

/// Where an agent stands with its assignment, judged by the controller from what it reports.
public enum ConfigProgress: Sendable, Hashable, Codable {
    /// Not yet reported for this assignment.
    case pending
    /// APPLYING reported.
    case applying
    /// APPLIED with the assignment's hash (or, for agents that report no status, healthy long enough
    /// after the config was sent).
    case applied
    /// FAILED, or the supervisor's own rollback (FAILED then APPLIED with the old hash).
    case failed(String)
}

/// One agent as the engine sees it at a step.
public struct AgentView: Sendable, Hashable, Codable {
    /// Canonical UID text.
    public var uid: String
    /// Tier.
    public var tier: AgentTier
    /// Connected now.
    public var connected: Bool
    /// When it was last heard from.
    public var lastSeen: Date
    /// Ring entry (samplers).
    public var ringEntry: String?
    /// Progress with its current assignment.
    public var progress: ConfigProgress
    /// Healthy (true when the agent does not report health).
    public var healthy: Bool
    /// What people call it (its host name), for messages.
    public var name: String

    /// Creates a view.
    public init(
        name: String? = nil,
        uid: String,
        tier: AgentTier,
        connected: Bool,
        lastSeen: Date,
        ringEntry: String?,
        progress: ConfigProgress,
        healthy: Bool
    ) {
        self.uid = uid
        self.tier = tier
        self.connected = connected
        self.lastSeen = lastSeen
        self.ringEntry = ringEntry
        self.progress = progress
        self.healthy = healthy
        self.name = name ?? uid
    }
}

/// The resolved plan of a rollout.
public struct RolloutPlan: Sendable, Hashable, Codable {
    /// Stages: `canary N` or `percent P`; the last covers the tier.
    public var stages: [Stage]
    /// Agents of one tier updated at once (and out of the ring at once, for samplers).
    public var maxUnavailable: Int
    /// How long a stage stays healthy before the next starts.
    public var bakeSeconds: Double
    /// A stage that has not passed after this long fails.
    public var stageTimeoutSeconds: Double
    /// Take samplers out of the ring before they restart.
    public var drain: Bool
    /// After every load balancer dropped a sampler from its ring: how long its buffered traces need to be
    /// decided (`decision_wait` + the one-second tick + a margin).
    public var settleSeconds: Double
    /// Tiers whose config changes, in the order they roll.
    public var tiers: [AgentTier]
    /// Roll back by itself when something fails (`fleet.yaml` `rollout.auto_rollback`); otherwise the
    /// rollout stops `failed` and agents stay where they are until a person acts.
    public var autoRollback: Bool

    /// One stage.
    public enum Stage: Sendable, Hashable, Codable {
        case canary(Int)
        case percent(Int)
    }

    /// Creates a plan.
    public init(
        stages: [Stage],
        maxUnavailable: Int,
        bakeSeconds: Double,
        stageTimeoutSeconds: Double,
        drain: Bool,
        settleSeconds: Double,
        tiers: [AgentTier],
        autoRollback: Bool = true
    ) {
        self.stages = stages
        self.maxUnavailable = maxUnavailable
        self.bakeSeconds = bakeSeconds
        self.stageTimeoutSeconds = stageTimeoutSeconds
        self.drain = drain
        self.settleSeconds = settleSeconds
        self.tiers = tiers
        self.autoRollback = autoRollback
    }
}

/// A rollout's phase.
public enum RolloutPhase: String, Sendable, Hashable, Codable {
    case progressing
    case paused
    /// Every agent runs the new version.
    case succeeded
    /// Failed and rolled back: every touched agent runs the previous version again.
    case rolledBack = "rolled_back"
    /// Aborted by a person and rolled back.
    case aborted
    /// A newer version took over.
    case superseded
    /// Failed with nothing to roll back to (the first version).
    case failed

    /// No more changes.
    public var isTerminal: Bool {
        switch self {
        case .progressing, .paused: false
        default: true
        }
    }
}

/// Where one agent is in a rollout.
public enum AgentStep: String, Sendable, Hashable, Codable {
    case waiting
    /// Out of the ring, waiting for every load balancer to apply the ring without it.
    case draining
    /// Out of the ring everywhere; its buffered traces are being decided.
    case settling
    /// Given the new config.
    case applying
    /// Applied and healthy, back in the ring.
    case done
    /// Not connected when its turn came; caught up later.
    case skipped
    case failed
    /// Given the previous version back.
    case rollingBack = "rolling_back"
    case rolledBack = "rolled_back"
}

/// A staged rollout from one version to another, as a value the engine steps.
public struct Rollout: Sendable, Hashable, Codable {
    /// Rollout number.
    public var id: Int
    /// The version agents ran before (`nil` for the first version).
    public var from: Int?
    /// The version being rolled out.
    public var to: Int
    /// Phase.
    public var phase: RolloutPhase
    /// The plan.
    public var plan: RolloutPlan
    /// Index into `plan.tiers`.
    public var tierIndex = 0
    /// Index into `plan.stages` within the current tier.
    public var stageIndex = 0
    /// Members of the current stage, frozen when it started.
    public var members: [String] = []
    /// The current stage's members have been chosen.
    public var stageOpen = false
    /// Versions of rollouts this one superseded: their samplers stay in the ring until updated.
    public var alsoServing: [Int] = []
    /// When the rollout last made progress (a batch started or finished, a bake began): the stage timeout
    /// counts from here, so a long stage of many batches does not time out while it moves.
    public var progressAt: Date?
    /// Agents being updated now.
    public var batch: [String] = []
    /// The ring version the draining or rejoining batch waits for.
    public var awaitedRing: Int?
    /// Every agent given the new version (what a rollback must undo).
    public var touched: [String] = []
    /// Per-agent step.
    public var steps: [String: AgentStep] = [:]
    /// Seconds each sampler spent out of the ring.
    public var outOfRing: [String: Double] = [:]
    /// When the current stage started.
    public var stageStartedAt: Date
    /// When the current stage's bake started (every member done).
    public var bakeStartedAt: Date?
    /// A person asked to pause; takes effect between batches.
    public var pauseRequested = false
    /// Rolling back (after a failure or an abort).
    public var rollingBack = false
    /// Why it failed or was aborted.
    public var failure: String?
    /// Aborted by a person (ends as `aborted`, not `rolledBack`).
    public var aborted = false
    /// When it started and ended.
    public var startedAt: Date
    public var endedAt: Date?

    /// The tier rolling now.
    public var tier: AgentTier? { self.tierIndex < self.plan.tiers.count ? self.plan.tiers[self.tierIndex] : nil }
}

/// The ring every load balancer should route by.
public struct RingState: Sendable, Hashable, Codable {
    /// Increases with every change.
    public var version = 0
    /// Sorted exact endpoint strings.
    public var members: [String] = []
    /// When it last changed.
    public var changedAt: Date
    /// When every connected load balancer reported it applied (`nil` while converging).
    public var convergedAt: Date?
}

/// Everything the engine decides and the store keeps: the deployed version, the ring, each agent's
/// assignment and the active rollout. Pure data; ``RolloutEngine`` steps it.
public struct ControlState: Sendable, Hashable, Codable {
    /// The version the fleet runs when no rollout is active.
    public var current: Int?
    /// The ring.
    public var ring: RingState
    /// What each managed agent should run, by UID.
    public var assignments: [String: Assignment] = [:]
    /// Samplers held out of the ring (draining, settling, applying), with the time they left.
    public var heldOut: [String: Date] = [:]
    /// Ring entries that left the ring in the last hour, and when: a sampler that left recently may still
    /// hold traces, one that was never in the ring holds none.
    public var leftRing: [String: Date] = [:]
    /// Sampler count the sampling tier's fleet-wide limits are divided by.
    public var samplerCount = 1
    /// The active rollout, or the last one when it ended.
    public var rollout: Rollout?
    /// The next rollout number.
    public var nextRolloutID = 1

    /// An empty state.
    public init(now: Date) {
        self.ring = RingState(changedAt: now)
    }
}
