import Foundation
import GRDB
import Logging
import PostgresNIO
import Testing

@testable import ControlPlane

private func date(_ seconds: Double) -> Date { Date(timeIntervalSince1970: (seconds * 1000).rounded() / 1000) }

private func uid(_ n: Int) -> String { String(format: "0000%04d-0000-7000-8000-000000000000", n) }

/// A state as at 30,000 agents, only smaller: assignments for both tiers, a rollout in its second stage
/// (steps, an agent touched twice, frozen stage members, time out of the ring), held-out samplers, ring
/// entries that left, and a ring.
private func fleetState(agents: Int = 120) -> ControlState {
    var state = ControlState(now: date(1_764_000_000))
    state.current = 1
    state.ring.version = 4
    state.ring.members = (0..<agents / 2).map { "sampler-\($0):4317" }
    state.ring.changedAt = date(1_764_000_050)
    for n in 0..<agents {
        state.assignments[uid(n)] =
            n < agents / 2
            ? Assignment(version: 1, samplerCount: agents / 2) : Assignment(version: 1, ring: 4)
    }
    state.heldOut = [uid(1): date(1_764_000_060), uid(2): date(1_764_000_061)]
    state.leftRing = ["sampler-old:4317": date(1_764_000_020)]
    var rollout = Rollout(
        id: 3,
        from: 1,
        to: 2,
        phase: .progressing,
        plan: RolloutPlan(
            stages: [.canary(1), .percent(100)],
            maxUnavailable: 2,
            bakeSeconds: 5,
            stageTimeoutSeconds: 600,
            drain: true,
            settleSeconds: 2,
            tiers: [.sampling, .loadBalancing]
        ),
        stageStartedAt: date(1_764_000_070),
        startedAt: date(1_764_000_040)
    )
    rollout.stageIndex = 1
    rollout.stageOpen = true
    rollout.members = (0..<agents / 2).reversed().map(uid)
    for n in 0..<agents / 2 { rollout.steps[uid(n)] = .waiting }
    rollout.steps[uid(0)] = .done
    rollout.steps[uid(1)] = .draining
    rollout.outOfRing[uid(0)] = 12.5
    rollout.touched = [uid(0), uid(1), uid(0)]
    rollout.batch = [uid(1)]
    state.rollout = rollout
    return state
}

/// Reads the stores' tables directly, to see which rows a save wrote.
private struct Tables {
    let fixture: StoreFixture
    /// The PostgreSQL store whose connections are borrowed (a SQLite store is not held: reopening needs it
    /// closed).
    let postgres: PostgresStore?

    init(fixture: StoreFixture, store: any ControlPlaneStore) {
        self.fixture = fixture
        self.postgres = store as? PostgresStore
    }

    /// How many rows of `table` carry `generation`.
    func written(_ table: String, generation: Int) throws -> Int {
        try self.integer("SELECT count(*) FROM \(table) WHERE generation = \(generation)")
    }

    func integer(_ sql: String) throws -> Int {
        switch self.fixture.backend {
        case .sqlite:
            let queue = try DatabaseQueue(path: self.fixture.location + "/tailplane.sqlite")
            return try queue.read { try Int.fetchOne($0, sql: sql) ?? 0 }
        case .postgres:
            let store = try #require(self.postgres)
            return try store.pool.withConnection("test") { connection in
                let rows = try connection.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test")).wait()
                return try rows.first.map { try $0.decode(Int.self) } ?? 0
            }
        }
    }

    /// The state document as stored.
    func document() throws -> String {
        switch self.fixture.backend {
        case .sqlite:
            let queue = try DatabaseQueue(path: self.fixture.location + "/tailplane.sqlite")
            return try queue.read { try String.fetchOne($0, sql: "SELECT state FROM control_state") ?? "" }
        case .postgres:
            let store = try #require(self.postgres)
            return try store.pool.withConnection("test") { connection in
                let rows = try connection.query("SELECT state FROM control_state", logger: Logger(label: "test")).wait()
                return try rows.first.map { try $0.decode(String.self) } ?? ""
            }
        }
    }

    /// Saves a whole state the way a policyd before rows did: the document alone (SQLite replaced the row;
    /// PostgreSQL counted the generation up).
    func saveWholeAsBefore(_ state: ControlState) throws {
        let document = try StoreJSON.encode(state)
        switch self.fixture.backend {
        case .sqlite:
            let queue = try DatabaseQueue(path: self.fixture.location + "/tailplane.sqlite")
            try queue.write {
                try $0.execute(
                    sql: "INSERT OR REPLACE INTO control_state (id, state, updated_at) VALUES (1, ?, 0)",
                    arguments: [document]
                )
            }
        case .postgres:
            let store = try #require(self.postgres)
            try store.pool.withConnection("test") { connection in
                _ = try connection.query(
                    "UPDATE control_state SET state = \(document), generation = generation + 1",
                    logger: Logger(label: "test")
                ).wait()
            }
        }
    }

    /// Runs SQL on the database (PostgreSQL).
    func execute(_ sql: String) throws {
        let store = try #require(self.postgres)
        try store.pool.withConnection("test") { connection in
            _ = try connection.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test")).wait()
        }
    }
}

extension StoreFixture {
    init(backend: Backend, location: String) {
        self.backend = backend
        self.location = location
    }
}

/// The engine state kept as a small document plus rows, so a save writes what changed, not megabytes.
@Suite struct StoredStateTests {
    @Test func splittingAndJoiningGivesTheStateBackAndChangesNameOnlyWhatChanged() throws {
        let state = fleetState()
        let parts = StoredState(state)
        #expect(parts.state == state)
        #expect(parts.core.assignments.isEmpty && parts.core.ring.members.isEmpty && parts.core.heldOut.isEmpty)
        #expect(parts.core.rollout?.steps.isEmpty == true && parts.core.rollout?.touched.isEmpty == true)
        #expect(
            StoredState.split(try #require(state.rollout)).rows[uid(0)]
                == RolloutAgentRow(step: .done, outOfRing: 12.5, touched: [0, 2], members: [59])
        )
        #expect(parts.changes(from: parts).assignments.isEmpty)
        #expect(parts.changes(from: parts).rollout == nil)

        var next = state
        next.assignments[uid(5)] = Assignment(version: 2, samplerCount: 60)
        next.assignments[uid(6)] = nil
        next.rollout?.steps[uid(3)] = .applying
        next.rollout?.touched.append(uid(3))
        next.heldOut[uid(2)] = nil
        next.ring.convergedAt = date(1_764_000_080)
        let changes = StoredState(next).changes(from: parts)
        #expect(!changes.full)
        #expect(changes.assignments.map(\.key) == [uid(5), uid(6)])
        #expect(changes.assignments.map { $0.value?.version } == [2, nil])
        #expect(changes.rolloutAgents.map(\.key) == [uid(3)])
        #expect(changes.times.map(\.key) == [uid(2)])
        #expect(changes.rollout == nil, "the rollout's own fields did not change")
        if case .convergence = changes.ring {} else { Issue.record("expected only the convergence: \(changes.ring)") }
        #expect(StoredState(next).changes(from: nil).full)
    }

    /// The rows a save writes for the rollout, found without building every agent's row, are those whose
    /// row changed (perhaps a few more, never other values), whatever the engine did to the rollout.
    @Test func changedRolloutRowsAreExactlyTheRowsThatDiffer() throws {
        let old = try #require(fleetState().rollout)
        let changes: [(String, (inout Rollout) -> Void)] = [
            ("a step", { $0.steps[uid(7)] = .applying }),
            ("a step gone", { $0.steps[uid(7)] = nil }),
            ("touched again", { $0.touched.append(uid(1)) }),
            ("touched emptied (rolled back)", { $0.touched = [] }),
            ("a duplicate place dropped", { $0.touched.removeLast() }),
            ("touched from the middle", { $0.touched.remove(at: 1) }),
            ("the stage's members reset", { $0.members = [] }),
            ("new members", { $0.members = [uid(100), uid(3), uid(101)] }),
            ("members reordered", { $0.members.swapAt(0, 30) }),
            ("time out of the ring", { $0.outOfRing[uid(4)] = 3 }),
            (
                "an agent forgotten",
                {
                    $0.steps[uid(0)] = nil
                    $0.outOfRing[uid(0)] = nil
                    $0.touched.removeAll { $0 == uid(0) }
                    $0.members.removeAll { $0 == uid(0) }
                }
            ),
            ("nothing", { _ in }),
        ]
        for (what, change) in changes {
            var new = old
            change(&new)
            let expected = StoredState.split(new).rows
            let differing = Set(StoredState.diff(StoredState.split(old).rows, expected).map(\.key))
            let written = StoredState.changedRows(from: old, to: new)
            #expect(differing.isSubset(of: written.map(\.key)), "\(what)")
            for (uid, row) in written {
                #expect(row == expected[uid] ?? RolloutAgentRow(), "\(what): \(uid)")
            }
            #expect(what != "nothing" || written.isEmpty)
            if ["a step", "time out of the ring", "touched again", "a duplicate place dropped"].contains(what) {
                #expect(written.count == differing.count && differing.count == 1, "\(what): only that agent's row")
            }
        }
    }

    @Test(arguments: StoreFixture.Backend.allCases)
    func aSaveWritesOnlyTheRowsThatChanged(_ backend: StoreFixture.Backend) throws {
        let fixture = try StoreFixture(backend)
        var store: (any ControlPlaneStore)? = try fixture.open()
        var state = fleetState()
        try store?.saveControlState(state, events: [])
        var tables = Tables(fixture: fixture, store: try #require(store))
        #expect(try tables.written("assignments", generation: 1) == 120)
        #expect(try tables.written("rollout_agents", generation: 1) == 60)
        #expect(try tables.written("state_times", generation: 1) == 3)
        #expect(try !tables.document().contains(uid(7)), "no agent is in the document")

        state.assignments[uid(5)] = Assignment(version: 2, samplerCount: 60)
        state.assignments[uid(6)] = nil
        state.assignments[uid(500)] = Assignment(version: 2, ring: 4)
        state.rollout?.steps[uid(3)] = .applying
        state.rollout?.touched.append(uid(3))
        state.heldOut[uid(2)] = nil
        state.ring.convergedAt = date(1_764_000_080)
        try store?.saveControlState(state, events: [])
        #expect(try tables.written("assignments", generation: 2) == 3)
        #expect(try tables.written("rollout_agents", generation: 2) == 1)
        #expect(try tables.written("state_times", generation: 2) == 1)
        #expect(try store?.loadControlState() == state)
        #expect(try store?.rollout(3) == state.rollout)
        #expect(try store?.ringHistory(limit: 5).first?.members == state.ring.members)

        // Reopened, the store compares with what it read: the next save writes one row again.
        store = nil
        store = try fixture.open()
        tables = Tables(fixture: fixture, store: try #require(store))
        #expect(try store?.loadControlState() == state)
        state.rollout?.steps[uid(4)] = .draining
        try store?.saveControlState(state, events: [])
        #expect(try tables.written("rollout_agents", generation: 3) == 1)
        #expect(try tables.written("assignments", generation: 3) == 0)

        // A new ring version is kept once, with its members; a new rollout gets rows of its own, and the
        // last one's stay as they ended.
        let ended = state.rollout
        state.ring.version = 5
        state.ring.members.removeLast()
        state.rollout?.id = 4
        state.rollout?.steps = [uid(9): .waiting]
        state.rollout?.touched = []
        state.rollout?.members = [uid(9)]
        state.rollout?.outOfRing = [:]
        try store?.saveControlState(state, events: [])
        #expect(try tables.written("rollout_agents", generation: 4) == 1)
        #expect(try store?.rollout(3) == ended)
        #expect(try store?.rollouts(limit: 5) == [state.rollout, ended].compactMap { $0 })
        #expect(try store?.ringHistory(limit: 5).map(\.members.count) == [59, 60])
        store = nil
        #expect(try fixture.open().loadControlState() == state)
    }

    /// A document written whole (by a policyd before rows, after this one wrote rows) wins over the rows,
    /// on load and for a follower; the next save writes every row again.
    @Test(arguments: StoreFixture.Backend.allCases)
    func aStateSavedWholeByAnEarlierPolicydIsReadAndThenSavedAsRows(_ backend: StoreFixture.Backend) throws {
        let fixture = try StoreFixture(backend)
        var store: (any ControlPlaneStore)? = try fixture.open()
        let follower = backend == .postgres ? try fixture.open() as? PostgresStore : nil
        var state = fleetState()
        try store?.saveControlState(state, events: [])
        let followed = try follower?.controlState(after: nil)
        if follower != nil { #expect(followed?.state == state) }
        state.assignments[uid(5)] = Assignment(version: 7, samplerCount: 60)
        state.assignments[uid(6)] = nil
        state.assignments[uid(300)] = Assignment(version: 7, ring: 4)
        state.heldOut = [:]
        state.rollout?.steps[uid(3)] = .failed
        state.rollout?.touched = [uid(3)]
        try Tables(fixture: fixture, store: try #require(store)).saveWholeAsBefore(state)
        let wholeRead = try followed.flatMap { try follower?.controlState(after: $0.generation) }
        if follower != nil { #expect(wholeRead?.state == state) }
        store = nil
        store = try fixture.open()
        let tables = Tables(fixture: fixture, store: try #require(store))
        #expect(try store?.loadControlState() == state)
        state.assignments[uid(8)] = Assignment(version: 2, samplerCount: 60)
        // Only in the document, never a row: a follower that had kept the whole read as its base would keep it.
        state.assignments[uid(300)] = nil
        try store?.saveControlState(state, events: [])
        let generation = try tables.integer("SELECT generation FROM control_state")
        let live = "SELECT count(*) FROM assignments WHERE version IS NOT NULL AND generation = \(generation)"
        #expect(try tables.integer(live) == 119, "every row written again")
        #expect(try !tables.document().contains(uid(7)))
        if let follower, let wholeRead {
            #expect(try follower.controlState(after: wholeRead.generation)?.state == state)
        }
        store = nil
        #expect(try fixture.open().loadControlState() == state)
    }

    /// A save that did commit, taken for failed (the connection dropped at COMMIT), leaves rows behind: a
    /// ring version with other members, a rollout number's agents. The next saves write over them, and
    /// neither a load nor a follower sees them.
    @Test func rowsOfASaveTakenForFailedDoNotOutliveTheNextSaves() throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let a = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let b = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let follower = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        var state = fleetState()
        try a.saveControlState(state, events: [])
        // The save a took for failed, as another writer: ring 5 with a sampler that then left again.
        var phantom = state
        phantom.ring.version = 5
        phantom.ring.members.append("sampler-gone:4317")
        try b.saveControlState(phantom, events: [])
        let seen = try #require(try follower.controlState(after: nil))
        #expect(seen.state.ring.members.contains("sampler-gone:4317"))
        state.ring.version = 5
        state.ring.members.removeFirst()
        try a.saveControlState(state, events: [])
        #expect(try b.loadControlState() == state)
        #expect(try follower.controlState(after: seen.generation)?.state == state)
        #expect(try a.ringHistory(limit: 1).first?.members == state.ring.members)

        // Rows of a rollout number no save of a's wrote (here written by hand, the generation unchanged): a's
        // next rollout under that number does not take them in.
        try Tables(fixture: StoreFixture(backend: .postgres, location: url), store: a).execute(
            "INSERT INTO rollout_agents (rollout, uid, step, generation) VALUES (4, 'ghost', 'done', 1)"
        )
        let before = try #require(try follower.controlState(after: nil))
        state.rollout?.id = 4
        state.rollout?.steps = [uid(9): .waiting]
        state.rollout?.touched = []
        state.rollout?.members = [uid(9)]
        state.rollout?.outOfRing = [:]
        try a.saveControlState(state, events: [])
        #expect(try a.rollout(4)?.steps == [uid(9): .waiting])
        #expect(try b.loadControlState() == state)
        #expect(try follower.controlState(after: before.generation)?.state == state)
    }

    /// The migration to rows waits until no replica of an earlier policyd runs: those would read the
    /// document without its rows. It names them.
    @Test func theMigrationToRowsWaitsForEarlierReplicasToStop() throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let tables = Tables(
            fixture: StoreFixture(backend: .postgres, location: url),
            store: try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        )
        // The database as the policyd before rows left it, with a replica of it alive.
        for statement in [
            "DROP TABLE assignments, state_times, rollout_agents",
            "ALTER TABLE control_state DROP COLUMN pruned_below, DROP COLUMN rows_generation",
            "ALTER TABLE ring_history DROP COLUMN generation",
            "DELETE FROM tailplane_migrations WHERE name = 'v6-state-rows'",
            "INSERT INTO replicas (name, api, heartbeat_at) VALUES ('policyd-b', NULL, now())",
        ] {
            try tables.execute(statement)
        }
        let refused = #expect(throws: StoreError.self) {
            _ = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        }
        #expect(refused?.description.contains("policyd-b") == true)
        #expect(refused?.description.contains("stop every replica running the earlier version") == true)
        try tables.execute("UPDATE replicas SET heartbeat_at = now() - interval '1 minute'")
        let store = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        try store.saveControlState(fleetState(), events: [])
        #expect(try store.loadControlState() == fleetState())
    }

    /// Like PostgreSQL, a SQLite store migrated by a newer policyd is refused by name: an older one would read
    /// a state document without the rows it no longer carries.
    @Test func aSQLiteStoreFromANewerPolicydIsRefused() throws {
        let directory = temporaryDirectory()
        var store: SQLiteStore? = try SQLiteStore(directory: directory)
        try store?.saveControlState(fleetState(), events: [])
        store = nil
        let queue = try DatabaseQueue(path: directory.path + "/tailplane.sqlite")
        try queue.write {
            try $0.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v9-from-the-future')")
        }
        let refused = #expect(throws: StoreError.self) { _ = try SQLiteStore(directory: directory) }
        #expect(refused?.description.contains("v9-from-the-future") == true)
        #expect(refused?.description.contains("a newer policyd wrote it") == true)
        try queue.write { try $0.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v9-from-the-future'") }
        #expect(try SQLiteStore(directory: directory).loadControlState() == fleetState())
    }

    /// Two PostgreSQL stores on one database, neither fenced: one saves over a state the other wrote since
    /// it last looked; the save writes every row, so what is stored is exactly what it saved.
    @Test func aSaveOverAnotherWritersStateWritesEverything() throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let a = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let b = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        var mine = fleetState()
        try a.saveControlState(mine, events: [])
        var theirs = try #require(try b.loadControlState())
        theirs.assignments[uid(200)] = Assignment(version: 9, ring: 4)
        theirs.assignments[uid(3)] = nil
        theirs.rollout?.steps[uid(10)] = .failed
        try b.saveControlState(theirs, events: [])
        mine.assignments[uid(4)] = Assignment(version: 2, samplerCount: 60)
        try a.saveControlState(mine, events: [])
        #expect(try b.loadControlState() == mine)
    }

    /// A replica that follows reads the rows written after the generation it has, removals included, and
    /// everything again when it fell behind further than removals are kept.
    @Test func followersReadOnlyTheRowsWrittenSince() throws {
        let server = try PostgresTestServer.shared.get()
        let url = try server.makeDatabase()
        let leader = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let follower = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        var state = fleetState()
        try leader.saveControlState(state, events: [])
        let first = try #require(try follower.controlState(after: nil))
        #expect(first.state == state)
        #expect(try follower.controlState(after: first.generation) == nil)

        // A row nobody saves since is not read again: changed behind the stores' back, the follower keeps
        // what it read, where a whole read sees the change.
        try leader.pool.withConnection("test") { connection in
            _ = try connection.query(
                "UPDATE assignments SET version = 99 WHERE uid = \(uid(8))",
                logger: Logger(label: "t")
            )
            .wait()
        }
        state.assignments[uid(5)] = Assignment(version: 2, samplerCount: 60)
        state.assignments[uid(6)] = nil
        state.rollout?.steps[uid(3)] = .applying
        state.leftRing = [:]
        try leader.saveControlState(state, events: [])
        let second = try #require(try follower.controlState(after: first.generation))
        #expect(second.state == state)
        #expect(try follower.controlState(after: nil)?.state.assignments[uid(8)]?.version == 99)
        try leader.pool.withConnection("test") { connection in
            _ = try connection.query(
                "UPDATE assignments SET version = 1 WHERE uid = \(uid(8))",
                logger: Logger(label: "t")
            )
            .wait()
        }
        let reread = try #require(try follower.controlState(after: nil))
        #expect(reread.state == state)
        // Places in the lists shift (an agent touched earlier is dropped, two members swap): read incrementally.
        state.rollout?.touched.remove(at: 1)
        state.rollout?.members.swapAt(0, 30)
        try leader.saveControlState(state, events: [])
        let third = try #require(try follower.controlState(after: reread.generation))
        #expect(third.state == state)

        // The follower falls behind by more saves than removals are kept: it reads everything, and the
        // agents removed meanwhile are gone.
        state.assignments[uid(7)] = nil
        try leader.saveControlState(state, events: [])
        for n in 0..<StoredState.tombstoneSaves + StoredState.pruneEvery + 2 {
            state.rollout?.outOfRing[uid(1)] = Double(n)
            try leader.saveControlState(state, events: [])
        }
        #expect(
            try Tables(fixture: StoreFixture(backend: .postgres, location: url), store: leader).integer(
                "SELECT count(*) FROM assignments WHERE version IS NULL"
            ) == 0,
            "removals older than the kept saves are pruned"
        )
        let behind = try #require(try follower.controlState(after: third.generation))
        #expect(behind.state == state)
        #expect(behind.state.assignments[uid(7)] == nil)
    }
}
