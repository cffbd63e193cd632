import ConfigRenderer
import Foundation
import PolicyEngine

/// Settings of the control plane that are not in `fleet.yaml`.
public struct ControlPlaneOptions: Sendable {
    /// How often the controller looks at the fleet and steps the engine.
    public var tickInterval: Duration = .milliseconds(250)
    /// Take samplers out of the ring before they restart (drain-aware rollouts).
    public var drain = true
    /// A stage that has not passed after this long fails.
    public var stageTimeoutSeconds: Double = 600
    /// A disconnected sampler stays in the ring this long.
    public var ringLeaveGraceSeconds: Double = 30
    /// An agent that reports no remote config status counts as applied when it is healthy this long after
    /// its config was sent (its state says "unverified").
    public var unverifiedAfterSeconds: Double = 10
    /// Replaces the settle time (`decision_wait` + 3 s) after a drain; for the demo only.
    public var settleSecondsOverride: Double?
    /// Replaces the bake time of `fleet.yaml`; for the demo only.
    public var bakeSecondsOverride: Double?
    /// How long a new sampler count must hold before fleet-wide limits are re-rendered for it (autoscaling
    /// often adds or removes several samplers in a row).
    public var recountCoalesceSeconds: Double = 60
    /// The least time between two such re-renders: each one restarts every sampler, drain-aware.
    public var recountMinimumIntervalSeconds: Double = 300

    /// How often connected agents' certificates are checked for renewal (those past it are rotated).
    public var renewalCheckSeconds: Double = 300
    /// Agents offered a new certificate at once in an automatic renewal; 0: a tenth of them (at least one).
    public var rotationBatchSize = 0

    /// The address agents download packages from: policyd's API as agents reach it
    /// (`https://policyd.example:4321`). By default the API's own address once it listens.
    public var packageBaseURL: String?
    /// An agent that reports every offered package installed must report the top-level package's version as
    /// its `service.version` within this many seconds (the collector restarts on the new binary first).
    public var packageVersionGraceSeconds: Double = 30

    /// Defaults.
    public init() {}
}

/// What an apply sends.
public struct ApplyRequest: Sendable, Hashable, Codable {
    /// The `.policy` files.
    public var sources: [SourceText]
    /// `fleet.yaml` (empty: every default).
    public var fleet: String
    /// Why (shown in the history).
    public var message: String?
    /// Who, when the client says (otherwise the token's name).
    public var author: String?
    /// The Git revision the files come from.
    public var gitRevision: String?
    /// Compile, compare and plan, store nothing.
    public var dryRun: Bool?
    /// Replace a rollout in progress.
    public var supersede: Bool?
    /// Collector behaviour changes (``BehaviourChange/id``) the caller accepts for a tier whose collector
    /// moves across them; without them such a move is refused.
    public var acceptChanges: [String]?

    /// Creates a request.
    public init(
        sources: [SourceText],
        fleet: String,
        message: String? = nil,
        author: String? = nil,
        gitRevision: String? = nil,
        dryRun: Bool? = nil,
        supersede: Bool? = nil,
        acceptChanges: [String]? = nil
    ) {
        self.sources = sources
        self.fleet = fleet
        self.message = message
        self.author = author
        self.gitRevision = gitRevision
        self.dryRun = dryRun
        self.supersede = supersede
        self.acceptChanges = acceptChanges
    }
}

/// What an apply did.
public struct ApplyResult: Sendable, Hashable, Codable {
    /// `created` (a new version and a rollout), `unchanged` (same content as the version the fleet runs or
    /// is rolling out), `dry_run` (nothing stored).
    public var result: String
    /// The version (new, existing, or the number it would get).
    public var version: Int
    /// The rollout started, if any.
    public var rollout: Int?
    /// Tiers whose config changes, in rollout order.
    public var tiers: [AgentTier]
    /// Compiler warnings.
    public var warnings: [Diagnostic]
    /// Render warnings (for example small budget shares).
    public var renderWarnings: [FleetDiagnostic]
}

/// Why the control plane refused a request.
public enum ControlPlaneError: Error, Sendable {
    /// The sources or the fleet description have errors; nothing was stored.
    case rejected(ApplyRejection)
    /// It does not fit the current state (a rollout in progress, a command in the wrong phase).
    case conflict(String)
    /// No such version or rollout.
    case notFound(String)
    /// The request itself is wrong.
    case badRequest(String)
    /// The store failed; nothing was changed.
    case store(String)
    /// The upload is larger than policyd accepts.
    case tooLarge(String)
    /// Several policyd on one database: this replica does not lead (any more) and did nothing, or lost the
    /// lease while making the write and the database refused it. No rollout was started (the message says
    /// when a version was stored without its rollout). The same request may be sent again (the API answers
    /// 503 `no_leader`, which policyctl retries).
    case leadershipMoved(String)

    /// A sentence for people.
    public var message: String {
        switch self {
        case .rejected(let rejection):
            "the policy set has errors; nothing was stored\n" + rejection.summary
        case .conflict(let text), .notFound(let text), .badRequest(let text), .store(let text), .tooLarge(let text),
            .leadershipMoved(let text):
            text
        }
    }
}

/// A rollout as the API shows it.
public struct RolloutReport: Sendable, Hashable, Codable {
    /// The engine's record.
    public var rollout: Rollout
    /// Its step log, oldest first.
    public var events: [EngineEvent]
}

/// The fleet at a glance.
public struct FleetSummary: Sendable, Hashable, Codable {
    /// The version the fleet runs when no rollout is active.
    public var currentVersion: Int?
    /// The active rollout.
    public var rollout: Int?
    /// Its phase.
    public var rolloutPhase: RolloutPhase?
    /// Agents by tier.
    public var agentsByTier: [String: Int]
    /// Agents by config state (`applied`, `applying`, `failed`, `pending`, `unverified`, `offline`).
    public var agentsByState: [String: Int]
    /// Share of connected managed agents that run their desired config.
    public var convergedShare: Double
    /// The ring.
    public var ring: RingRecord
    /// How long the last ring change took to reach every load balancer.
    public var lastRingConvergenceSeconds: Double?
}
