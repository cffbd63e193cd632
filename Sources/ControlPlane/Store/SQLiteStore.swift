import Foundation
import GRDB
import Synchronization

/// The control plane's store on SQLite through GRDB: one file in the data directory, WAL journal, named
/// migrations that are never edited once shipped. The process holds an exclusive lock on the directory,
/// so two policyd never share one store.
public final class SQLiteStore: ControlPlaneStore {
    private let pool: DatabasePool
    private let lock: DataDirectoryLock
    /// The state as this store last saved or read it, with its generation: the next save writes only the
    /// rows that differ from it.
    private let saved = Mutex<(generation: Int, parts: StoredState)?>(nil)

    /// Opens (or creates) the store in `directory`.
    /// - Throws: ``StoreError`` when the directory cannot be used or another process holds it.
    public init(directory: URL) throws {
        self.lock = try DataDirectoryLock(directory: directory)
        var configuration = Configuration()
        var unknown: [String] = []
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // FULL: a committed step survives power loss too, not only kill -9.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            self.pool = try DatabasePool(
                path: directory.appendingPathComponent("tailplane.sqlite").path,
                configuration: configuration
            )
            // As with PostgreSQL: a store a newer policyd migrated further is not written into. Read, then
            // migrated, in two steps: the directory lock keeps any other policyd out meanwhile.
            unknown = try self.pool.read { db in
                try Self.migrator.appliedIdentifiers(db).subtracting(Self.migrator.migrations).sorted()
            }
            if unknown.isEmpty { try Self.migrator.migrate(self.pool) }
        } catch {
            throw StoreError("cannot open the store in \(directory.path): \(error)")
        }
        guard unknown.isEmpty else {
            throw StoreError(
                "the store in \(directory.path) has migrations this policyd does not know "
                    + "(\(unknown.joined(separator: ", "))): a newer policyd wrote it; run that version"
            )
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-initial") { db in
            try db.execute(
                sql: """
                    CREATE TABLE versions (
                        number INTEGER PRIMARY KEY,
                        content_hash TEXT NOT NULL,
                        sources TEXT NOT NULL,
                        fleet TEXT NOT NULL,
                        ir TEXT NOT NULL,
                        author TEXT NOT NULL,
                        message TEXT NOT NULL,
                        git_revision TEXT,
                        created_at REAL NOT NULL,
                        outcome TEXT NOT NULL,
                        failure_reason TEXT
                    );
                    CREATE TABLE rendered (
                        version INTEGER NOT NULL REFERENCES versions(number),
                        tier TEXT NOT NULL,
                        sampler_count INTEGER NOT NULL,
                        ring_version INTEGER NOT NULL,
                        yaml TEXT NOT NULL,
                        hash TEXT NOT NULL,
                        PRIMARY KEY (version, tier, sampler_count, ring_version)
                    );
                    CREATE TABLE control_state (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        state TEXT NOT NULL,
                        updated_at REAL NOT NULL
                    );
                    CREATE TABLE rollouts (
                        id INTEGER PRIMARY KEY,
                        from_version INTEGER,
                        to_version INTEGER NOT NULL,
                        phase TEXT NOT NULL,
                        state TEXT NOT NULL,
                        started_at REAL NOT NULL,
                        ended_at REAL
                    );
                    CREATE TABLE rollout_events (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        rollout INTEGER,
                        kind TEXT NOT NULL,
                        agent TEXT,
                        message TEXT NOT NULL,
                        time REAL NOT NULL
                    );
                    CREATE INDEX rollout_events_by_rollout ON rollout_events(rollout, seq);
                    CREATE TABLE agents (
                        uid TEXT PRIMARY KEY,
                        record TEXT NOT NULL,
                        last_seen REAL NOT NULL
                    );
                    CREATE TABLE ring_history (
                        version INTEGER PRIMARY KEY,
                        members TEXT NOT NULL,
                        changed_at REAL NOT NULL,
                        reason TEXT NOT NULL,
                        convergence_seconds REAL
                    );
                    CREATE TABLE audit (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        time REAL NOT NULL,
                        actor TEXT NOT NULL,
                        action TEXT NOT NULL,
                        detail TEXT NOT NULL,
                        remote TEXT NOT NULL
                    );
                    """
            )
        }
        migrator.registerMigration("v2-security") { db in
            try db.execute(
                sql: """
                    CREATE TABLE security (
                        kind TEXT NOT NULL,
                        id TEXT NOT NULL,
                        record TEXT NOT NULL,
                        PRIMARY KEY (kind, id)
                    );
                    """
            )
        }
        migrator.registerMigration("v3-packages") { db in
            try db.execute(
                sql: """
                    CREATE TABLE packages (
                        name TEXT NOT NULL,
                        version TEXT NOT NULL,
                        record TEXT NOT NULL,
                        PRIMARY KEY (name, version)
                    );
                    ALTER TABLE versions ADD COLUMN packages TEXT;
                    """
            )
        }
        migrator.registerMigration("v4-state-rows") { db in
            // What grows with the fleet leaves the state document for rows of its own (StoredState): a save
            // writes the rows that changed at the state's new generation, and sets rows_generation to it (a
            // document whose rows_generation is not its generation was written whole, without rows). A
            // removed row is kept a while with its values NULL, as the PostgreSQL store does for followers.
            try db.execute(
                sql: """
                    ALTER TABLE control_state ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE control_state ADD COLUMN pruned_below INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE control_state ADD COLUMN rows_generation INTEGER;
                    CREATE TABLE assignments (
                        uid TEXT PRIMARY KEY,
                        version INTEGER,
                        ring INTEGER,
                        sampler_count INTEGER,
                        generation INTEGER NOT NULL
                    );
                    CREATE INDEX assignments_by_generation ON assignments(generation);
                    CREATE INDEX assignments_removed ON assignments(generation) WHERE version IS NULL;
                    CREATE TABLE state_times (
                        kind TEXT NOT NULL,
                        name TEXT NOT NULL,
                        at_seconds REAL,
                        generation INTEGER NOT NULL,
                        PRIMARY KEY (kind, name)
                    );
                    CREATE INDEX state_times_by_generation ON state_times(generation);
                    CREATE TABLE rollout_agents (
                        rollout INTEGER NOT NULL,
                        uid TEXT NOT NULL,
                        step TEXT,
                        out_of_ring REAL,
                        touched TEXT,
                        members TEXT,
                        generation INTEGER NOT NULL,
                        PRIMARY KEY (rollout, uid)
                    );
                    CREATE INDEX rollout_agents_by_generation ON rollout_agents(rollout, generation);
                    CREATE INDEX rollout_agents_removed ON rollout_agents(generation)
                        WHERE step IS NULL AND out_of_ring IS NULL AND touched IS NULL AND members IS NULL;
                    """
            )
        }
        return migrator
    }

    // MARK: Coding

    private func json(_ value: some Encodable) throws -> String { try StoreJSON.encode(value) }

    private func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T { try StoreJSON.decode(type, text) }

    private func run<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("\(what): \(error)")
        }
    }

    // MARK: Versions

    public func appendVersion(_ draft: VersionDraft) throws -> PolicyVersion {
        try self.run("storing a version") {
            try self.pool.write { db in
                let number = (try Int.fetchOne(db, sql: "SELECT MAX(number) FROM versions") ?? 0) + 1
                let version = PolicyVersion(number: number, draft: draft)
                try db.execute(
                    sql: """
                        INSERT INTO versions (number, content_hash, sources, fleet, ir, author, message, git_revision,
                                              created_at, outcome, failure_reason, packages)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)
                        """,
                    arguments: [
                        number, draft.contentHash, try self.json(draft.sources), draft.fleet, draft.ir, draft.author,
                        draft.message, draft.gitRevision, draft.createdAt.timeIntervalSince1970,
                        VersionOutcome.pending.rawValue, try draft.packages.map { try self.json($0) },
                    ]
                )
                return version
            }
        }
    }

    private func version(from row: Row) throws -> PolicyVersion {
        PolicyVersion(
            number: row["number"],
            contentHash: row["content_hash"],
            sources: try self.decode([SourceText].self, row["sources"]),
            fleet: row["fleet"],
            ir: row["ir"],
            author: row["author"],
            message: row["message"],
            gitRevision: row["git_revision"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            outcome: VersionOutcome(rawValue: row["outcome"]) ?? .pending,
            failureReason: row["failure_reason"],
            packages: try (row["packages"] as String?).map { try self.decode(VersionPackages.self, $0) }
        )
    }

    public func version(_ number: Int) throws -> PolicyVersion? {
        try self.run("reading version \(number)") {
            try self.pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM versions WHERE number = ?", arguments: [number]).map(
                    self.version(from:)
                )
            }
        }
    }

    public func versions(limit: Int) throws -> [PolicyVersion] {
        try self.run("reading versions") {
            try self.pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM versions ORDER BY number DESC LIMIT ?", arguments: [limit])
                    .map(self.version(from:))
            }
        }
    }

    public func setOutcome(of version: Int, _ outcome: VersionOutcome, reason: String?) throws {
        try self.run("recording the outcome of version \(version)") {
            try self.pool.write { db in
                try db.execute(
                    sql: "UPDATE versions SET outcome = ?, failure_reason = ? WHERE number = ?",
                    arguments: [outcome.rawValue, reason, version]
                )
            }
        }
    }

    public func saveRendered(_ records: [RenderedRecord]) throws {
        try self.run("storing rendered configs") {
            try self.pool.write { db in
                for record in records {
                    try db.execute(
                        sql: """
                            INSERT OR IGNORE INTO rendered (version, tier, sampler_count, ring_version, yaml, hash)
                            VALUES (?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            record.version, record.tier.rawValue, record.samplerCount, record.ringVersion, record.yaml,
                            record.hash,
                        ]
                    )
                }
            }
        }
    }

    public func rendered(version: Int) throws -> [RenderedRecord] {
        try self.run("reading rendered configs") {
            try self.pool.read { db in
                try Row.fetchAll(
                    db,
                    sql: "SELECT * FROM rendered WHERE version = ? ORDER BY tier, ring_version DESC",
                    arguments: [version]
                ).map { row in
                    RenderedRecord(
                        version: row["version"],
                        tier: AgentTier(rawValue: row["tier"]) ?? .unmanaged,
                        samplerCount: row["sampler_count"],
                        ringVersion: row["ring_version"],
                        yaml: row["yaml"],
                        hash: row["hash"]
                    )
                }
            }
        }
    }

    // MARK: Engine state and rollouts

    public func loadControlState() throws -> ControlState? {
        let loaded = try self.run("reading the control state") {
            try self.pool.read { db in try self.readState(db) }
        }
        // A document saved whole is no base: the next save writes every row.
        self.saved.withLock { $0 = loaded.flatMap { $0.whole ? nil : ($0.generation, $0.parts) } }
        return loaded?.parts.state
    }

    /// The state as stored, with its generation; `whole`: from a document written without rows.
    private func readState(_ db: Database) throws -> (parts: StoredState, generation: Int, whole: Bool)? {
        guard
            let row = try Row.fetchOne(
                db,
                sql: "SELECT state, generation, rows_generation FROM control_state WHERE id = 1"
            )
        else { return nil }
        let document = try self.decode(ControlState.self, row["state"])
        let generation: Int = row["generation"]
        // Rows go with the document only when the save that wrote it wrote them (an earlier policyd
        // replaces the row and leaves rows_generation NULL).
        let whole = (row["rows_generation"] as Int?) != generation
        let parts = try StoredState.read(document: document, whole: whole) {
            var assignments: [String: Assignment] = [:]
            let assignmentRows = try Row.fetchCursor(
                db,
                sql: "SELECT uid, version, ring, sampler_count FROM assignments WHERE version IS NOT NULL"
            )
            while let row = try assignmentRows.next() {
                assignments[row["uid"]] = Assignment(
                    version: row["version"],
                    ring: row["ring"],
                    samplerCount: row["sampler_count"]
                )
            }
            var heldOut: [String: Date] = [:]
            var leftRing: [String: Date] = [:]
            for row in try Row.fetchAll(
                db,
                sql: "SELECT kind, name, at_seconds FROM state_times WHERE at_seconds IS NOT NULL"
            ) {
                let at = Date(timeIntervalSince1970: row["at_seconds"])
                switch row["kind"] as String {
                case StoredState.heldOutKind: heldOut[row["name"]] = at
                case StoredState.leftRingKind: leftRing[row["name"]] = at
                default: break
                }
            }
            guard
                let members = try String.fetchOne(
                    db,
                    sql: "SELECT members FROM ring_history WHERE version = ?",
                    arguments: [document.ring.version]
                )
            else {
                throw StoreError("reading the control state: ring \(document.ring.version) is not in the ring history")
            }
            return (
                assignments, heldOut, leftRing, try self.decode([String].self, members),
                try document.rollout.map { try self.rolloutAgents(db, of: $0.id) } ?? [:]
            )
        }
        return (parts.parts, generation, whole)
    }

    /// The per-agent parts of a rollout.
    private func rolloutAgents(_ db: Database, of rollout: Int) throws -> [String: RolloutAgentRow] {
        var agents: [String: RolloutAgentRow] = [:]
        let rows = try Row.fetchCursor(
            db,
            sql: """
                SELECT uid, step, out_of_ring, touched, members FROM rollout_agents
                WHERE rollout = ? AND NOT (\(RolloutAgentRow.removedSQL))
                """,
            arguments: [rollout]
        )
        while let row = try rows.next() {
            let agent = RolloutAgentRow(
                stepColumn: row["step"],
                outOfRing: row["out_of_ring"],
                touchedColumn: row["touched"],
                membersColumn: row["members"]
            )
            if !agent.isEmpty { agents[row["uid"]] = agent }
        }
        return agents
    }

    public func saveControlState(_ state: ControlState, events: [EngineEvent]) throws {
        let parts = StoredState(state)
        let base = self.saved.withLock { $0 }
        let core = try self.json(parts.core)
        let generation = try self.run("saving the control state") {
            try self.pool.write { db -> Int in
                let previous = try Int.fetchOne(db, sql: "SELECT generation FROM control_state WHERE id = 1") ?? 0
                let generation = previous + 1
                try db.execute(
                    sql: """
                        INSERT INTO control_state (id, state, updated_at, generation, rows_generation)
                        VALUES (1, ?, ?, ?, ?)
                        ON CONFLICT(id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at,
                            generation = excluded.generation, rows_generation = excluded.rows_generation
                        """,
                    arguments: [core, Date().timeIntervalSince1970, generation, generation]
                )
                // Only what changed since the save this store made last, if nothing else wrote since.
                let changes = parts.changes(from: base.flatMap { $0.generation == previous ? $0.parts : nil })
                try self.write(changes, of: parts, generation: generation, events: events, db)
                for event in events {
                    try db.execute(
                        sql: "INSERT INTO rollout_events (rollout, kind, agent, message, time) VALUES (?, ?, ?, ?, ?)",
                        arguments: [
                            event.rollout, event.kind.rawValue, event.agent, event.message,
                            event.time.timeIntervalSince1970,
                        ]
                    )
                }
                if generation % StoredState.pruneEvery == 0 {
                    let below = generation - StoredState.tombstoneSaves
                    try db.execute(
                        sql: """
                            DELETE FROM assignments WHERE version IS NULL AND generation < ?;
                            DELETE FROM state_times WHERE at_seconds IS NULL AND generation < ?;
                            DELETE FROM rollout_agents WHERE \(RolloutAgentRow.removedSQL) AND generation < ?;
                            UPDATE control_state SET pruned_below = ?;
                            """,
                        arguments: [below, below, below, below]
                    )
                }
                return generation
            }
        }
        self.saved.withLock { $0 = (generation, parts) }
    }

    /// Writes the rows of one save.
    private func write(
        _ changes: StateChanges,
        of parts: StoredState,
        generation: Int,
        events: [EngineEvent],
        _ db: Database
    ) throws {
        let rolloutID = parts.core.rollout?.id
        if changes.full {
            try db.execute(
                sql: """
                    UPDATE assignments SET version = NULL, ring = NULL, sampler_count = NULL, generation = ?
                    WHERE version IS NOT NULL;
                    UPDATE state_times SET at_seconds = NULL, generation = ? WHERE at_seconds IS NOT NULL;
                    """,
                arguments: [generation, generation]
            )
        }
        if changes.clearsRollout, let rolloutID {
            try db.execute(
                sql: """
                    UPDATE rollout_agents SET step = NULL, out_of_ring = NULL, touched = NULL, members = NULL,
                        generation = ?
                    WHERE rollout = ? AND NOT (\(RolloutAgentRow.removedSQL))
                    """,
                arguments: [generation, rolloutID]
            )
        }
        let assignment = try db.makeStatement(
            sql: """
                INSERT INTO assignments (uid, version, ring, sampler_count, generation) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(uid) DO UPDATE SET version = excluded.version, ring = excluded.ring,
                    sampler_count = excluded.sampler_count, generation = excluded.generation
                """
        )
        for (uid, value) in changes.assignments {
            try assignment.execute(arguments: [uid, value?.version, value?.ring, value?.samplerCount, generation])
        }
        let time = try db.makeStatement(
            sql: """
                INSERT INTO state_times (kind, name, at_seconds, generation) VALUES (?, ?, ?, ?)
                ON CONFLICT(kind, name) DO UPDATE SET at_seconds = excluded.at_seconds, generation = excluded.generation
                """
        )
        for (kind, name, at) in changes.times {
            try time.execute(arguments: [kind, name, at?.timeIntervalSince1970, generation])
        }
        if let rolloutID {
            let agent = try db.makeStatement(
                sql: """
                    INSERT INTO rollout_agents (rollout, uid, step, out_of_ring, touched, members, generation)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(rollout, uid) DO UPDATE SET step = excluded.step, out_of_ring = excluded.out_of_ring,
                        touched = excluded.touched, members = excluded.members, generation = excluded.generation
                    """
            )
            for (uid, row) in changes.rolloutAgents {
                try agent.execute(arguments: [
                    rolloutID, uid, row.step?.rawValue, row.outOfRing, RolloutAgentRow.text(row.touched),
                    RolloutAgentRow.text(row.members), generation,
                ])
            }
        }
        if let rollout = changes.rollout {
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO rollouts (id, from_version, to_version, phase, state, started_at, ended_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    rollout.id, rollout.from, rollout.to, rollout.phase.rawValue, try self.json(rollout),
                    rollout.startedAt.timeIntervalSince1970, rollout.endedAt?.timeIntervalSince1970,
                ]
            )
        }
        let ring = parts.core.ring
        let convergence = ring.convergedAt.map { $0.timeIntervalSince(ring.changedAt) }
        switch changes.ring {
        case .none:
            break
        case .convergence:
            try db.execute(
                sql: "UPDATE ring_history SET convergence_seconds = ? WHERE version = ?",
                arguments: [convergence, ring.version]
            )
        case .whole:
            // Members as saved now (a save taken for failed may have committed other ones for this version);
            // the reason only from the step that changed the ring.
            let reason = events.last { $0.kind == .ringChanged }?.message
            try db.execute(
                sql: """
                    INSERT INTO ring_history (version, members, changed_at, reason, convergence_seconds)
                    VALUES (?, ?, ?, COALESCE(?, ?), ?)
                    ON CONFLICT(version) DO UPDATE SET members = excluded.members, changed_at = excluded.changed_at,
                        reason = COALESCE(?, ring_history.reason), convergence_seconds = excluded.convergence_seconds
                    """,
                arguments: [
                    ring.version, try self.json(parts.ringMembers), ring.changedAt.timeIntervalSince1970, reason,
                    "ring \(ring.version)", convergence, reason,
                ]
            )
        }
    }

    public func rollouts(limit: Int) throws -> [Rollout] {
        try self.run("reading rollouts") {
            try self.pool.read { db in
                try String.fetchAll(db, sql: "SELECT state FROM rollouts ORDER BY id DESC LIMIT ?", arguments: [limit])
                    .map { try self.decode(Rollout.self, $0) }
                    .map { StoredState.joined($0, try self.rolloutAgents(db, of: $0.id)) }
            }
        }
    }

    public func rollout(_ id: Int) throws -> Rollout? {
        try self.run("reading rollout \(id)") {
            try self.pool.read { db in
                try String.fetchOne(db, sql: "SELECT state FROM rollouts WHERE id = ?", arguments: [id]).map {
                    StoredState.joined(try self.decode(Rollout.self, $0), try self.rolloutAgents(db, of: id))
                }
            }
        }
    }

    public func events(ofRollout id: Int) throws -> [EngineEvent] {
        try self.run("reading the steps of rollout \(id)") {
            try self.pool.read { db in
                try Row.fetchAll(
                    db,
                    sql: "SELECT * FROM rollout_events WHERE rollout = ? ORDER BY seq",
                    arguments: [id]
                ).map { row in
                    EngineEvent(
                        kind: EngineEvent.Kind(rawValue: row["kind"]) ?? .agentStep,
                        message: row["message"],
                        rollout: row["rollout"],
                        agent: row["agent"],
                        time: Date(timeIntervalSince1970: row["time"])
                    )
                }
            }
        }
    }

    // MARK: Agents, ring, audit

    public func recordAgents(_ records: [AgentRecord]) throws {
        guard !records.isEmpty else { return }
        let rows = try records.map { ($0.instanceUID, try self.json($0), $0.lastSeen.timeIntervalSince1970) }
        try self.run("recording agent state") {
            try self.pool.write { db in
                for (uid, record, lastSeen) in rows {
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO agents (uid, record, last_seen) VALUES (?, ?, ?)",
                        arguments: [uid, record, lastSeen]
                    )
                }
            }
        }
    }

    public func agents() throws -> [AgentRecord] {
        try self.run("reading agents") {
            try self.pool.read { db in
                try String.fetchAll(db, sql: "SELECT record FROM agents ORDER BY uid").map {
                    try self.decode(AgentRecord.self, $0)
                }
            }
        }
    }

    public func ringHistory(limit: Int) throws -> [RingRecord] {
        try self.run("reading the ring history") {
            try self.pool.read { db in
                try Row.fetchAll(
                    db,
                    sql: "SELECT * FROM ring_history ORDER BY version DESC LIMIT ?",
                    arguments: [limit]
                ).map { row in
                    RingRecord(
                        version: row["version"],
                        members: try self.decode([String].self, row["members"]),
                        changedAt: Date(timeIntervalSince1970: row["changed_at"]),
                        reason: row["reason"],
                        convergenceSeconds: row["convergence_seconds"]
                    )
                }
            }
        }
    }

    public func appendAudit(_ entry: AuditEntry) throws {
        try self.run("writing the audit log") {
            try self.pool.write { db in
                try db.execute(
                    sql: "INSERT INTO audit (time, actor, action, detail, remote) VALUES (?, ?, ?, ?, ?)",
                    arguments: [
                        entry.time.timeIntervalSince1970, entry.actor, entry.action, entry.detail, entry.remote,
                    ]
                )
            }
        }
    }

    public func audit(limit: Int) throws -> [AuditEntry] {
        try self.run("reading the audit log") {
            try self.pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM audit ORDER BY seq DESC LIMIT ?", arguments: [limit]).map {
                    row in
                    AuditEntry(
                        time: Date(timeIntervalSince1970: row["time"]),
                        actor: row["actor"],
                        action: row["action"],
                        detail: row["detail"],
                        remote: row["remote"]
                    )
                }
            }
        }
    }

    public func saveSecurityRecords(_ records: [SecurityRecord]) throws {
        guard !records.isEmpty else { return }
        let rows = try records.map { ($0.key.kind, $0.key.id, try self.json($0)) }
        try self.run("saving security records") {
            try self.pool.write { db in
                for (kind, id, record) in rows {
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO security (kind, id, record) VALUES (?, ?, ?)",
                        arguments: [kind, id, record]
                    )
                }
            }
        }
    }

    public func securityRecords() throws -> [SecurityRecord] {
        try self.run("reading security records") {
            try self.pool.read { db in
                try String.fetchAll(db, sql: "SELECT record FROM security ORDER BY kind, id").map {
                    try self.decode(SecurityRecord.self, $0)
                }
            }
        }
    }

    // MARK: Packages

    public func insertPackage(_ record: PackageRecord) throws {
        let json = try self.json(record)
        try self.run("storing package \(record.name) \(record.version)") {
            try self.pool.write { db in
                try db.execute(
                    sql: "INSERT INTO packages (name, version, record) VALUES (?, ?, ?)",
                    arguments: [record.name, record.version, json]
                )
            }
        }
    }

    public func packages() throws -> [PackageRecord] {
        try self.run("reading packages") {
            try self.pool.read { db in
                try String.fetchAll(db, sql: "SELECT record FROM packages").map {
                    try self.decode(PackageRecord.self, $0)
                }
            }
        }.sorted { ($0.name, $0.uploadedAt) < ($1.name, $1.uploadedAt) }
    }

    public func deletePackage(name: String, version: String) throws {
        try self.run("deleting package \(name) \(version)") {
            try self.pool.write { db in
                try db.execute(sql: "DELETE FROM packages WHERE name = ? AND version = ?", arguments: [name, version])
            }
        }
    }
}
