import Foundation

/// One agent's part in a rollout as the stores keep it: a row per rollout and agent, so a step writes only
/// the agents whose part changed. Positions say where the agent stands in the rollout's ordered lists (an
/// agent given the version twice is in `touched` twice).
struct RolloutAgentRow: Sendable, Hashable {
    /// Its step (`Rollout.steps`).
    var step: AgentStep?
    /// Seconds it spent out of the ring (`Rollout.outOfRing`).
    var outOfRing: Double?
    /// Its positions in `Rollout.touched`.
    var touched: [Int] = []
    /// Its positions in the current stage's `Rollout.members`.
    var members: [Int] = []

    /// A row as its columns hold it (`rollout_agents`, the same in both stores); a step this policyd does
    /// not know reads as none.
    init(stepColumn: String?, outOfRing: Double?, touchedColumn: String?, membersColumn: String?) {
        self.step = stepColumn.flatMap(AgentStep.init(rawValue:))
        self.outOfRing = outOfRing
        self.touched = Self.positions(touchedColumn)
        self.members = Self.positions(membersColumn)
    }

    init(step: AgentStep? = nil, outOfRing: Double? = nil, touched: [Int] = [], members: [Int] = []) {
        self.step = step
        self.outOfRing = outOfRing
        self.touched = touched
        self.members = members
    }

    /// SQL true for a `rollout_agents` row that says its agent was removed (every column NULL).
    static let removedSQL = "step IS NULL AND out_of_ring IS NULL AND touched IS NULL AND members IS NULL"

    /// Nothing of the agent in the rollout: the row says it was removed.
    var isEmpty: Bool { self.step == nil && self.outOfRing == nil && self.touched.isEmpty && self.members.isEmpty }

    /// Positions as the text column keeps them (`3` or `3,17`), `nil` for none.
    static func text(_ positions: [Int]) -> String? {
        positions.isEmpty ? nil : positions.map(String.init).joined(separator: ",")
    }

    /// Positions from their text column.
    static func positions(_ text: String?) -> [Int] {
        text?.split(separator: ",").compactMap { Int($0) } ?? []
    }
}

/// The engine state as the stores keep it. What grows with the fleet (assignments, held-out samplers, ring
/// entries that left, the ring's members, each agent's part in the rollout) is kept as rows, and the rest
/// (`core`) as one small JSON document, so a save writes only the rows that changed and a replica that
/// follows reads only those. With 30,000 agents the whole state is megabytes of JSON, where a step changes
/// a few hundred rows.
struct StoredState: Sendable, Hashable {
    /// The state without the parts below (its rollout without per-agent parts).
    var core: ControlState
    /// `ControlState.assignments`.
    var assignments: [String: Assignment]
    /// `ControlState.heldOut`.
    var heldOut: [String: Date]
    /// `ControlState.leftRing`.
    var leftRing: [String: Date]
    /// The ring's members: kept once per ring version, in the ring history.
    var ringMembers: [String]
    /// The rollout of `core` with its per-agent parts (kept as `RolloutAgentRow`s).
    var rollout: Rollout?

    /// The whole state again.
    var state: ControlState {
        var state = self.core
        state.assignments = self.assignments
        state.heldOut = self.heldOut
        state.leftRing = self.leftRing
        state.ring.members = self.ringMembers
        state.rollout = self.rollout
        return state
    }

    /// A state read back, with the rollout's rows. A document written without rows (`whole`: by a policyd
    /// before rows, or by one running alongside a newer one) carries every part itself and wins; otherwise
    /// the parts are the rows.
    static func read(
        document: ControlState,
        whole: Bool,
        rows: () throws -> (
            assignments: [String: Assignment], heldOut: [String: Date], leftRing: [String: Date],
            ringMembers: [String], rolloutAgents: [String: RolloutAgentRow]
        )
    ) rethrows -> (parts: StoredState, rolloutAgents: [String: RolloutAgentRow]) {
        // Never a base for later reads, so its rows are not needed.
        if whole { return (StoredState(document), [:]) }
        let rows = try rows()
        var core = document
        core.rollout = core.rollout.map(Self.slim)
        let parts = StoredState(
            core: core,
            assignments: rows.assignments,
            heldOut: rows.heldOut,
            leftRing: rows.leftRing,
            ringMembers: rows.ringMembers,
            rollout: core.rollout.map { Self.joined($0, rows.rolloutAgents) }
        )
        return (parts, rows.rolloutAgents)
    }

    /// A rollout without its per-agent parts.
    static func slim(_ rollout: Rollout) -> Rollout {
        var slim = rollout
        slim.steps = [:]
        slim.outOfRing = [:]
        slim.touched = []
        slim.members = []
        return slim
    }

    /// A rollout without its per-agent parts, and those parts by agent.
    static func split(_ rollout: Rollout) -> (slim: Rollout, rows: [String: RolloutAgentRow]) {
        var rows: [String: RolloutAgentRow] = [:]
        for (uid, step) in rollout.steps { rows[uid, default: RolloutAgentRow()].step = step }
        for (uid, seconds) in rollout.outOfRing { rows[uid, default: RolloutAgentRow()].outOfRing = seconds }
        for (position, uid) in rollout.touched.enumerated() {
            rows[uid, default: RolloutAgentRow()].touched.append(position)
        }
        for (position, uid) in rollout.members.enumerated() {
            rows[uid, default: RolloutAgentRow()].members.append(position)
        }
        return (Self.slim(rollout), rows)
    }

    /// A rollout with its per-agent parts put back. With no rows the rollout is returned as it is (a
    /// rollout saved whole, before its parts had rows).
    static func joined(_ rollout: Rollout, _ rows: [String: RolloutAgentRow]) -> Rollout {
        guard !rows.isEmpty else { return rollout }
        var whole = rollout
        var touched: [(Int, String)] = []
        var members: [(Int, String)] = []
        whole.steps = [:]
        whole.outOfRing = [:]
        for (uid, row) in rows {
            if let step = row.step { whole.steps[uid] = step }
            if let seconds = row.outOfRing { whole.outOfRing[uid] = seconds }
            for position in row.touched { touched.append((position, uid)) }
            for position in row.members { members.append((position, uid)) }
        }
        whole.touched = touched.sorted { $0.0 < $1.0 }.map(\.1)
        whole.members = members.sorted { $0.0 < $1.0 }.map(\.1)
        return whole
    }

    /// What a save writes to go from `base` (the parts as stored at the generation before) to `self`;
    /// everything when there is no base.
    func changes(from base: StoredState?) -> StateChanges {
        let ring: StateChanges.RingWrite =
            base.map {
                $0.core.ring.version != self.core.ring.version || $0.ringMembers != self.ringMembers
                    ? .whole : $0.core.ring.convergedAt != self.core.ring.convergedAt ? .convergence : .none
            } ?? .whole
        let sameRollout = base.map { $0.core.rollout?.id == self.core.rollout?.id } == true
        return StateChanges(
            full: base == nil,
            assignments: Self.diff(base?.assignments ?? [:], self.assignments),
            heldOut: Self.diff(base?.heldOut ?? [:], self.heldOut),
            leftRing: Self.diff(base?.leftRing ?? [:], self.leftRing),
            rolloutAgents: self.rollout.map { Self.changedRows(from: sameRollout ? base?.rollout : nil, to: $0) } ?? [],
            clearsRollout: !sameRollout,
            rollout: sameRollout && base?.core.rollout == self.core.rollout ? nil : self.core.rollout,
            ring: ring
        )
    }

    /// The rows of agents whose part in the rollout changed from `old` (all rows without it), in UID order
    /// (an empty row: removed). Only those agents' rows are built: at 30,000 agents building every row at
    /// every save cost more than the database did. An agent's row changes when its step or time out of the
    /// ring does, or its places in `touched` or `members`, which can only be from the first place where
    /// either list differs.
    static func changedRows(from old: Rollout?, to new: Rollout) -> [(key: String, value: RolloutAgentRow)] {
        guard let old else { return Self.split(new).rows.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
        var changed = Set<String>()
        if old.steps != new.steps { changed.formUnion(Self.diff(old.steps, new.steps).map(\.key)) }
        if old.outOfRing != new.outOfRing { changed.formUnion(Self.diff(old.outOfRing, new.outOfRing).map(\.key)) }
        for (before, after) in [(old.touched, new.touched), (old.members, new.members)] where before != after {
            let same = zip(before, after).prefix { $0 == $1 }.count
            changed.formUnion(before[same...])
            changed.formUnion(after[same...])
        }
        guard !changed.isEmpty else { return [] }
        var rows: [String: RolloutAgentRow] = [:]
        for uid in changed { rows[uid] = RolloutAgentRow(step: new.steps[uid], outOfRing: new.outOfRing[uid]) }
        for (position, uid) in new.touched.enumerated() where changed.contains(uid) {
            rows[uid]?.touched.append(position)
        }
        for (position, uid) in new.members.enumerated() where changed.contains(uid) {
            rows[uid]?.members.append(position)
        }
        return rows.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Keys whose value changed, with the new value (`nil`: removed), in key order.
    static func diff<Value: Equatable>(_ old: [String: Value], _ new: [String: Value]) -> [(
        key: String, value: Value?
    )] {
        var changed: [(key: String, value: Value?)] = []
        for (key, value) in new where old[key] != value { changed.append((key, value)) }
        for key in old.keys where new[key] == nil { changed.append((key, nil)) }
        return changed.sorted { $0.key < $1.key }
    }
}

/// The rows one save writes.
struct StateChanges {
    /// Every row is written: rows not among them are marked removed first (no base to compare with).
    var full: Bool
    /// Changed assignments (`nil`: removed).
    var assignments: [(key: String, value: Assignment?)]
    /// Changed held-out samplers (`nil`: back).
    var heldOut: [(key: String, value: Date?)]
    /// Changed ring entries that left (`nil`: forgotten).
    var leftRing: [(key: String, value: Date?)]
    /// Changed per-agent parts of the rollout (empty: removed).
    var rolloutAgents: [(key: String, value: RolloutAgentRow)]
    /// Rows of the rollout's id are marked removed before `rolloutAgents` are written: its rows are all
    /// written (a new rollout, or no base). A number is reused when a save that did commit was taken for
    /// failed, and that rollout's rows must not join the new one's.
    var clearsRollout: Bool
    /// The rollout's own row, when it changed.
    var rollout: Rollout?
    /// What the ring history gets.
    var ring: RingWrite

    /// A ring history write.
    enum RingWrite {
        /// Nothing changed.
        case none
        /// Only the time every load balancer applied the ring.
        case convergence
        /// A new ring version, with its members.
        case whole
    }

    /// Held-out samplers and left ring entries, as the `state_times` table keeps them.
    var times: [(kind: String, key: String, at: Date?)] {
        self.heldOut.map { (kind: StoredState.heldOutKind, key: $0.key, at: $0.value) }
            + self.leftRing.map { (kind: StoredState.leftRingKind, key: $0.key, at: $0.value) }
    }
}

extension StoredState {
    /// The state split into its parts.
    init(_ state: ControlState) {
        var core = state
        self.assignments = state.assignments
        self.heldOut = state.heldOut
        self.leftRing = state.leftRing
        self.ringMembers = state.ring.members
        self.rollout = state.rollout
        core.assignments = [:]
        core.heldOut = [:]
        core.leftRing = [:]
        core.ring.members = []
        core.rollout = state.rollout.map(Self.slim)
        self.core = core
    }
}

extension StoredState {
    /// `state_times.kind` of held-out samplers (by UID).
    static let heldOutKind = "held_out"
    /// `state_times.kind` of ring entries that left the ring.
    static let leftRingKind = "left_ring"
    /// Removed rows are kept this many saves, so a replica that follows sees the removal; one further
    /// behind reads everything.
    static let tombstoneSaves = 256
    /// Every this many saves, removals older than ``tombstoneSaves`` are dropped.
    static let pruneEvery = 64
}
