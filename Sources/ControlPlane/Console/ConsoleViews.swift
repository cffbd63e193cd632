import Foundation

/// What the console's templates render. Every value a template shows is a string, a number, a flag or a
/// list of these: formatting happens here, in code that tests can reach, and the templates only place it.
/// Every `{{value}}` is HTML-escaped by the template engine; no template uses the unescaped forms.
enum ConsoleView {
    /// A template section shows for any value that is present, an empty string too: absent text is `nil`.
    static func text(_ value: String?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return value
    }

    /// The frame of every page: who is signed in, the CSRF token, which tab is active.
    struct Chrome: Sendable {
        var title: String
        var user: String
        var role: String
        var canWrite: Bool
        /// Tokens are configured: a session to sign out of.
        var signedIn: Bool
        var csrf: String
        var css: String
        var script: String
        var navFleet = false
        var navPolicies = false
        var navVersions = false
        var navRollout = false
        var navPackages = false
    }

    // MARK: Fleet

    struct Count: Sendable {
        var name: String
        var count: Int
        var style: String
    }

    struct Ring: Sendable {
        var version: Int
        var size: Int
        /// The first members (a ring of thousands is listed in full by `GET /v1/ring`).
        var members: [String]
        var moreMembers: Int?
        var changed: String
        var reason: String?
        var convergence: String
    }

    struct Summary: Sendable {
        var version: String
        var rolloutID: Int?
        var rolloutPhase: String?
        var agents: Int
        var tiers: [Count]
        var states: [Count]
        var convergedPercent: String
        var convergedWidth: Int
        var ring: Ring
        var lastConvergence: String
        var problems: [AgentRow]
        var hasProblems: Bool
        var moreProblems: Int?
    }

    struct AgentRow: Sendable {
        var uid: String
        var shortUID: String
        var host: String?
        var tier: String
        var state: String
        var style: String
        var running: String?
        var desired: String?
        var health: String
        var healthStyle: String
        var transport: String
        var inRing: Bool
        var ringEntry: String?
        var lastSeen: String
        var problem: String?
    }

    struct Option: Sendable {
        var value: String
        var label: String
        var selected: Bool
    }

    struct Paging: Sendable {
        var from: Int
        var to: Int
        var total: Int
        var previous: String?
        var next: String?
    }

    struct FleetPage: Sendable {
        var chrome: Chrome
        var summary: Summary
        var query: String
        var tierOptions: [Option]
        var stateOptions: [Option]
        var versionOptions: [Option]
        var rows: [AgentRow]
        var paging: Paging
        var filtered: Bool
        var eventsAfter: Int
    }

    /// How the fleet page filters and pages the agent table.
    struct FleetQuery: Sendable, Hashable {
        var tier: String = ""
        var state: String = ""
        var version: String = ""
        var text: String = ""
        var page: Int = 1
        var pageSize: Int = 50

        var isFiltered: Bool {
            !self.tier.isEmpty || !self.state.isEmpty || !self.version.isEmpty || !self.text.isEmpty
        }

        /// The query string for this filter on another page.
        func url(page: Int) -> String {
            var items: [URLQueryItem] = []
            if !self.tier.isEmpty { items.append(.init(name: "tier", value: self.tier)) }
            if !self.state.isEmpty { items.append(.init(name: "state", value: self.state)) }
            if !self.version.isEmpty { items.append(.init(name: "version", value: self.version)) }
            if !self.text.isEmpty { items.append(.init(name: "q", value: self.text)) }
            if page > 1 { items.append(.init(name: "page", value: String(page))) }
            var components = URLComponents()
            components.path = "/"
            components.queryItems = items.isEmpty ? nil : items
            return components.string ?? "/"
        }
    }

    // MARK: Agent

    struct KeyValue: Sendable {
        var key: String
        var value: String
    }

    struct Component: Sendable {
        var path: String
        var healthy: Bool
        var status: String
        var error: String
    }

    struct DiffRow: Sendable {
        var kind: String
        /// "removed" / "added" in words for screen readers (the colour says it to everyone else).
        var leftMark: String?
        var rightMark: String?
        var leftNumber: String
        var rightNumber: String
        var left: String
        var right: String
        var folded: Int
        var isFolded: Bool
    }

    struct DiffSection: Sendable {
        var title: String
        var leftTitle: String
        var rightTitle: String
        var same: Bool
        var summary: String
        var rows: [DiffRow]
    }

    struct File: Sendable {
        var path: String
        var text: String
        var index: Int
        var first: Bool
    }

    struct AgentPage: Sendable {
        var chrome: Chrome
        var row: AgentRow
        var identifying: [KeyValue]
        var nonIdentifying: [KeyValue]
        var capabilities: String
        var connectedSince: String
        var lastSeen: String
        var healthySince: String?
        var healthStatus: String?
        var healthError: String?
        var configState: String
        var configError: String?
        var configStatusSince: String?
        var credential: String?
        var components: [Component]
        var hasComponents: Bool
        var effective: [File]
        var desiredYAML: String?
        var diff: DiffSection?
        /// Set when the configs are too large to compare here.
        var diffTooLarge: String?
    }

    // MARK: Policies

    struct Rendered: Sendable {
        var tier: String
        var label: String
        var yaml: String
        var hash: String
    }

    struct PoliciesPage: Sendable {
        var chrome: Chrome
        var version: String
        var hasVersion: Bool
        var files: [File]
        var fleet: String
        var rendered: [Rendered]
    }

    // MARK: Versions

    struct VersionRow: Sendable {
        var number: Int
        var created: String
        var author: String
        var message: String
        var outcome: String
        var outcomeStyle: String
        var failure: String?
        var revision: String?
        var current: Bool
        var canRollback: Bool
        /// "Roll back to v3", or "Roll out v5 again" for a version newer than the one running.
        var rollbackLabel: String
        var rollbackBody: String
        var previous: Int?
    }

    // MARK: Packages

    struct PackageRow: Sendable {
        var name: String
        var version: String
        var kind: String
        var size: String
        var sha: String
        var uploader: String
        var pushed: String
        /// Agents running it or being offered it.
        var agents: Int
        /// The running version pins it for these tiers.
        var running: String?
        /// The newest version pinning it, when not the running one.
        var pinnedBy: String?
        var canRollout: Bool
        var rolloutURL: String
        var rolloutLabel: String
    }

    /// Collector versions the agents of a tier report, and how many cannot take packages.
    struct CollectorRow: Sendable {
        var tier: String
        var versions: String
        var byHand: Int
    }

    struct PackagesPage: Sendable {
        var chrome: Chrome
        /// Nil when this policyd has no package repository.
        var repository: Bool
        var rows: [PackageRow]
        var collectors: [CollectorRow]
        var signingKeyFingerprint: String?
        var rolloutBlocked: String?
    }

    struct VersionsPage: Sendable {
        var chrome: Chrome
        var rows: [VersionRow]
        var options: [Option]
        var optionsTo: [Option]
        var rollbackBlocked: String?
    }

    struct DiffPage: Sendable {
        var chrome: Chrome
        var from: Int
        var to: Int
        var options: [Option]
        var optionsTo: [Option]
        var sections: [DiffSection]
        var changedFiles: Int
    }

    // MARK: Rollout

    struct Step: Sendable {
        var label: String
        /// In words, for screen readers (the colour says it to everyone else).
        var state: String
        var style: String
        var current: Bool
    }

    struct AgentStepRow: Sendable {
        var uid: String
        var shortUID: String
        var host: String?
        var tier: String
        var step: String
        var style: String
        var outOfRing: String?
    }

    struct Event: Sendable {
        var time: String
        var kind: String
        var message: String
    }

    struct RolloutProgress: Sendable {
        var id: Int
        var from: String
        var to: Int
        var phase: String
        var phaseStyle: String
        var live: Bool
        var started: String
        var ended: String?
        var failure: String?
        var percent: Int
        var done: Int
        var total: Int
        var tiers: [Step]
        var stages: [Step]
        var bake: String?
        /// Agents by step (`done 9,800`, `applying 50`, …).
        var stepCounts: [Count]
        /// The agents still moving first, at most ``ConsolePages/rolloutAgentsShown`` of them.
        var agents: [AgentStepRow]
        var moreAgents: Int?
        var draining: [String]
        var hasDraining: Bool
        var events: [Event]
        var canPause: Bool
        var canResume: Bool
        var canAbort: Bool
    }

    struct RolloutPage: Sendable {
        var chrome: Chrome
        var progress: RolloutProgress?
        var recent: [KeyValue]
        var eventsAfter: Int
    }

    struct LoginPage: Sendable {
        var title = "Sign in"
        var css: String
        var nonce: String
        var next: String
        var error: String?
    }

    struct ErrorPage: Sendable {
        var chrome: Chrome
        var status: Int
        var message: String
    }
}
