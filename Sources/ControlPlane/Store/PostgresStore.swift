import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresNIO

/// The control plane's store on PostgreSQL through postgres-nio, for several policyd sharing one database
/// (docs/ha.md). The same tables and intents as ``SQLiteStore``; named migrations, never edited once shipped,
/// applied under an advisory lock so replicas starting together do not race.
///
/// ``ControlPlaneStore`` is synchronous on purpose: the controller is an actor whose steps must not
/// interleave, and an `await` inside a step would let another step in. So every call here blocks its caller
/// on postgres-nio's futures, which run on the store's own event loop thread: never the caller's, whether the
/// caller is a Swift concurrency thread or one of the OpAMP server's event loops. Every call is one
/// transaction on one pooled connection.
public final class PostgresStore: ControlPlaneStore {
    private let configuration: PostgresStoreConfiguration
    let pool: BlockingConnectionPool
    private let connectionConfiguration: PostgresConnection.Configuration
    /// The connection notifications arrive on (not pooled: it only listens).
    private let listener = NIOLockedValueBox<PostgresConnection?>(nil)
    private let group: MultiThreadedEventLoopGroup
    /// The lease and the heartbeat have a connection and an event loop of their own: a renewal never waits
    /// for a pooled connection busy with a large save, nor behind its bytes on a shared loop.
    private let leasePool: BlockingConnectionPool
    private let leaseGroup: MultiThreadedEventLoopGroup
    private let logger: Logger

    /// Connects, applies migrations and keeps up to `poolSize` connections.
    /// - Throws: ``StoreError`` when the database cannot be reached, refuses the login, or carries migrations
    ///   newer than this policyd.
    public init(configuration: PostgresStoreConfiguration, logger: Logger = Logger(label: "tailplane.store")) throws {
        let connection = try configuration.connectionConfiguration()
        self.connectionConfiguration = connection
        self.configuration = configuration
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.pool = BlockingConnectionPool(
            size: configuration.poolSize,
            connection: connection,
            eventLoop: self.group.next(),
            answerSeconds: Self.answerSeconds,
            logger: logger
        )
        self.leaseGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.leasePool = BlockingConnectionPool(
            size: 1,
            connection: connection,
            eventLoop: self.leaseGroup.next(),
            answerSeconds: Self.leaseAnswerSeconds,
            logger: logger
        )
        do {
            try self.migrate()
        } catch {
            self.shutDown()
            if let error = error as? StoreError { throw error }
            throw StoreError("cannot open the store at \(configuration.summary): \(Self.describe(error))")
        }
    }

    deinit {
        self.shutDown()
    }

    /// How long a statement may go unanswered before its connection is closed: the server's own
    /// `statement_timeout` (15 s) ends every statement it received before that, so only a database that
    /// cannot be reached gets here.
    static let answerSeconds: Double = 20
    /// The same for the lease and the heartbeat (and the listening connection's probe): a renewal that has not
    /// answered within the lease is of no use, and the next one, a second later, goes out on a new connection.
    /// Longer than `lock_timeout` (5 s).
    static let leaseAnswerSeconds: Double = 8
    /// How often the listening connection, which otherwise only waits, is asked whether it still answers.
    static let listenerProbeSeconds: Int64 = 10

    private let isShutDown = NIOLockedValueBox(false)
    /// Whether leader-only writes (engine state, versions, outcomes, rendered configs) are checked against
    /// the lease. A store used without replicas is never fenced; with replicas it refuses them until the
    /// controller takes over with an epoch.
    enum Fence {
        case unfenced
        case refuse
        case epoch(replica: String, epoch: Int)
    }

    let fencing = NIOLockedValueBox(Fence.unfenced)
    /// The state as this replica last saved or read it to lead, with its generation: the next save writes
    /// only the rows that differ from it.
    private let savedState = NIOLockedValueBox<(generation: Int, parts: StoredState)?>(nil)
    /// The state as this replica last read it to follow, with the rollout's rows: the next read reads only
    /// rows written since.
    private let followedState = NIOLockedValueBox<Followed?>(nil)

    /// A state read to follow.
    private struct Followed {
        var generation: Int
        var parts: StoredState
        /// The rollout's per-agent rows, which rows read later replace.
        var rolloutAgents: [String: RolloutAgentRow]
    }

    /// Refuses the transaction unless this replica holds the lease with its epoch. The row lock orders the
    /// write against a takeover: a deposed leader cannot commit.
    private func checkFence(_ session: Session) throws {
        switch self.fencing.withLockedValue({ $0 }) {
        case .unfenced:
            return
        case .refuse:
            throw StoreError("this replica does not lead: only the leader writes this (fenced)", fenced: true)
        case .epoch(let replica, let epoch):
            let held = try session.query(
                """
                SELECT 1 FROM leader_lease
                WHERE name = 'controller' AND holder = \(replica) AND epoch = \(epoch) FOR SHARE
                """
            )
            guard !held.isEmpty else {
                throw StoreError(
                    "this replica no longer holds the lease of epoch \(epoch): another leads (fenced)",
                    fenced: true
                )
            }
        }
    }

    /// Closes the connections, then stops the event loop they run on (in that order: a close needs the loop).
    private func shutDown() {
        let already = self.isShutDown.withLockedValue { value in
            defer { value = true }
            return value
        }
        guard !already else { return }
        if let listener = self.listener.withLockedValue({ $0 }) {
            let closed: EventLoopFuture<Void> = listener.close()
            try? closed.wait()
        }
        self.pool.closeAll()
        self.leasePool.closeAll()
        try? self.group.syncShutdownGracefully()
        try? self.leaseGroup.syncShutdownGracefully()
    }

    // MARK: Migrations

    /// The migrations, in order. Shipped ones are never edited: a change is a new migration.
    static let migrations: [(name: String, sql: [String])] = [
        (
            "v1-initial",
            [
                """
                CREATE TABLE versions (
                    number BIGINT PRIMARY KEY,
                    content_hash TEXT NOT NULL,
                    sources TEXT NOT NULL,
                    fleet TEXT NOT NULL,
                    ir TEXT NOT NULL,
                    author TEXT NOT NULL,
                    message TEXT NOT NULL,
                    git_revision TEXT,
                    created_at TIMESTAMPTZ NOT NULL,
                    outcome TEXT NOT NULL,
                    failure_reason TEXT
                )
                """,
                """
                CREATE TABLE rendered (
                    version BIGINT NOT NULL REFERENCES versions(number),
                    tier TEXT NOT NULL,
                    sampler_count BIGINT NOT NULL,
                    ring_version BIGINT NOT NULL,
                    yaml TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    PRIMARY KEY (version, tier, sampler_count, ring_version)
                )
                """,
                """
                CREATE TABLE control_state (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    state TEXT NOT NULL,
                    updated_at TIMESTAMPTZ NOT NULL
                )
                """,
                """
                CREATE TABLE rollouts (
                    id BIGINT PRIMARY KEY,
                    from_version BIGINT,
                    to_version BIGINT NOT NULL,
                    phase TEXT NOT NULL,
                    state TEXT NOT NULL,
                    started_at TIMESTAMPTZ NOT NULL,
                    ended_at TIMESTAMPTZ
                )
                """,
                """
                CREATE TABLE rollout_events (
                    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    rollout BIGINT,
                    kind TEXT NOT NULL,
                    agent TEXT,
                    message TEXT NOT NULL,
                    time TIMESTAMPTZ NOT NULL
                )
                """,
                "CREATE INDEX rollout_events_by_rollout ON rollout_events(rollout, seq)",
                """
                CREATE TABLE agents (
                    uid TEXT PRIMARY KEY,
                    record TEXT NOT NULL,
                    last_seen TIMESTAMPTZ NOT NULL
                )
                """,
                """
                CREATE TABLE ring_history (
                    version BIGINT PRIMARY KEY,
                    members TEXT NOT NULL,
                    changed_at TIMESTAMPTZ NOT NULL,
                    reason TEXT NOT NULL,
                    convergence_seconds DOUBLE PRECISION
                )
                """,
                """
                CREATE TABLE audit (
                    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    time TIMESTAMPTZ NOT NULL,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    remote TEXT NOT NULL
                )
                """,
                """
                CREATE TABLE security (
                    kind TEXT NOT NULL,
                    id TEXT NOT NULL,
                    record TEXT NOT NULL,
                    PRIMARY KEY (kind, id)
                )
                """,
                """
                CREATE TABLE packages (
                    name TEXT NOT NULL,
                    version TEXT NOT NULL,
                    record TEXT NOT NULL,
                    PRIMARY KEY (name, version)
                )
                """,
                "ALTER TABLE versions ADD COLUMN packages TEXT",
            ]
        ),
        (
            "v2-replicas",
            [
                """
                CREATE TABLE leader_lease (
                    name TEXT PRIMARY KEY,
                    holder TEXT,
                    epoch BIGINT NOT NULL,
                    renewed_at TIMESTAMPTZ,
                    holder_api TEXT
                )
                """,
                "INSERT INTO leader_lease (name, epoch) VALUES ('controller', 0)",
                // Followers read the state when this grows (a counter: the database's clock may step back).
                "ALTER TABLE control_state ADD COLUMN generation BIGINT NOT NULL DEFAULT 0",
                """
                CREATE TABLE replicas (
                    name TEXT PRIMARY KEY,
                    api TEXT,
                    heartbeat_at TIMESTAMPTZ NOT NULL
                )
                """,
                """
                CREATE TABLE agent_views (
                    uid TEXT PRIMARY KEY,
                    replica TEXT NOT NULL,
                    view TEXT,
                    written_at TIMESTAMPTZ NOT NULL
                )
                """,
                "CREATE INDEX agent_views_by_time ON agent_views(written_at)",
            ]
        ),
        (
            "v3-shared-packages",
            [
                """
                CREATE TABLE shared_keys (
                    name TEXT PRIMARY KEY,
                    key BYTEA NOT NULL,
                    created_at TIMESTAMPTZ NOT NULL
                )
                """,
                """
                CREATE TABLE package_content (
                    sha256 TEXT PRIMARY KEY,
                    size BIGINT NOT NULL,
                    chunks INTEGER NOT NULL,
                    stored_at TIMESTAMPTZ NOT NULL
                )
                """,
                """
                CREATE TABLE package_chunks (
                    sha256 TEXT NOT NULL REFERENCES package_content(sha256) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    data BYTEA NOT NULL,
                    PRIMARY KEY (sha256, seq)
                )
                """,
                // Packages are compressed already: kept out of line, and not compressed again.
                "ALTER TABLE package_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
            ]
        ),
        (
            "v4-view-order",
            [
                // The writing transaction's id: the leader reads views in commit order, not by clock.
                "ALTER TABLE agent_views ADD COLUMN xid BIGINT NOT NULL DEFAULT 0",
                "CREATE INDEX agent_views_by_xid ON agent_views(xid)",
            ]
        ),
        (
            "v5-agent-record-order",
            [
                // As for views: every replica reads the others' agent records in commit order, only what changed.
                "ALTER TABLE agents ADD COLUMN xid BIGINT NOT NULL DEFAULT 0",
                "CREATE INDEX agents_by_xid ON agents(xid)",
            ]
        ),
        (
            PostgresStore.stateRowsMigration,
            [
                // What grows with the fleet leaves the state document for rows of its own (StoredState): a
                // save writes the rows that changed at the state's new generation, and a follower reads the
                // rows newer than the generation it has. A removed row stays a while with its values NULL, so
                // followers see the removal; one that fell further behind than `pruned_below` reads it all.
                "ALTER TABLE control_state ADD COLUMN pruned_below BIGINT NOT NULL DEFAULT 0",
                // The generation whose save wrote the rows: a document written otherwise (by an earlier
                // policyd) carries the whole state itself.
                "ALTER TABLE control_state ADD COLUMN rows_generation BIGINT",
                // The save that wrote a ring version's members last, so followers read them again only then.
                "ALTER TABLE ring_history ADD COLUMN generation BIGINT NOT NULL DEFAULT 0",
                """
                CREATE TABLE assignments (
                    uid TEXT PRIMARY KEY,
                    version BIGINT,
                    ring BIGINT,
                    sampler_count BIGINT,
                    generation BIGINT NOT NULL
                )
                """,
                "CREATE INDEX assignments_by_generation ON assignments(generation)",
                "CREATE INDEX assignments_removed ON assignments(generation) WHERE version IS NULL",
                """
                CREATE TABLE state_times (
                    kind TEXT NOT NULL,
                    name TEXT NOT NULL,
                    at_seconds DOUBLE PRECISION,
                    generation BIGINT NOT NULL,
                    PRIMARY KEY (kind, name)
                )
                """,
                "CREATE INDEX state_times_by_generation ON state_times(generation)",
                """
                CREATE TABLE rollout_agents (
                    rollout BIGINT NOT NULL,
                    uid TEXT NOT NULL,
                    step TEXT,
                    out_of_ring DOUBLE PRECISION,
                    touched TEXT,
                    members TEXT,
                    generation BIGINT NOT NULL,
                    PRIMARY KEY (rollout, uid)
                )
                """,
                "CREATE INDEX rollout_agents_by_generation ON rollout_agents(rollout, generation)",
                """
                CREATE INDEX rollout_agents_removed ON rollout_agents(generation)
                WHERE step IS NULL AND out_of_ring IS NULL AND touched IS NULL AND members IS NULL
                """,
            ]
        ),
    ]

    /// The migration that moves the engine state into rows: earlier replicas must be stopped before it.
    static let stateRowsMigration = "v6-state-rows"

    /// Any number, the same in every policyd: the advisory lock migrations run under.
    private static let migrationLock: Int64 = 0x7461_696c_706c_616e  // "tailplan"

    private func migrate() throws {
        try self.transaction("applying migrations") { session in
            _ = try session.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))")
            _ = try session.query(
                """
                CREATE TABLE IF NOT EXISTS tailplane_migrations (
                    name TEXT PRIMARY KEY,
                    applied_at TIMESTAMPTZ NOT NULL
                )
                """
            )
            var applied = Set<String>()
            for row in try session.query("SELECT name FROM tailplane_migrations") {
                applied.insert(try row.decode(String.self))
            }
            let known = Set(Self.migrations.map(\.name))
            let unknown = applied.subtracting(known).sorted()
            guard unknown.isEmpty else {
                throw StoreError(
                    "the database at \(self.configuration.summary) has migrations this policyd does not know "
                        + "(\(unknown.joined(separator: ", "))): a newer policyd wrote it; run that version"
                )
            }
            // Replicas of an earlier policyd would read the state document without its rows, and write it whole:
            // this migration waits until none runs (no heartbeat in the last 15 s).
            if !applied.contains(Self.stateRowsMigration), applied.contains("v2-replicas") {
                let running = try session.query(
                    "SELECT name FROM replicas WHERE heartbeat_at > now() - interval '15 seconds' ORDER BY name"
                ).map { try $0.decode(String.self) }
                guard running.isEmpty else {
                    throw StoreError(
                        "this policyd keeps the engine state as rows (migration \(Self.stateRowsMigration)), which the "
                            + "policyd on replica\(running.count == 1 ? "" : "s") \(running.joined(separator: ", ")) "
                            + "cannot read: stop every replica running the earlier version, then start this one "
                            + "(a replica stopped in the last 15 s still counts as running)"
                    )
                }
            }
            for migration in Self.migrations where !applied.contains(migration.name) {
                for statement in migration.sql {
                    _ = try session.query(PostgresQuery(unsafeSQL: statement))
                }
                _ = try session.query(
                    "INSERT INTO tailplane_migrations (name, applied_at) VALUES (\(migration.name), \(Date()))"
                )
                self.logger.info("applied migration \(migration.name)")
            }
        }
    }

    // MARK: Plumbing

    private func json(_ value: some Encodable) throws -> String { try StoreJSON.encode(value) }

    private func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T { try StoreJSON.decode(type, text) }

    /// PostgreSQL text cannot hold U+0000, which SQLite keeps: refuse it with the field's name rather than
    /// with the server's encoding error.
    private func text(_ value: String, _ field: String) throws -> String {
        guard !value.utf8.contains(0) else { throw StoreError("\(field) contains a NUL character") }
        return value
    }

    private func text(_ value: String?, _ field: String) throws -> String? {
        try value.map { try self.text($0, field) }
    }

    /// Runs `body` in one transaction: all of it is committed or none. A `fenced` transaction (a write only
    /// the leader makes) commits only if this replica still holds the lease with its epoch, checked last: the
    /// row lock that orders it against a takeover is then held for the check and the commit alone, not while
    /// the body writes, so the leader's own lease renewal never waits behind a long save.
    private func transaction<T>(
        _ what: String,
        fenced: Bool = false,
        on pool: BlockingConnectionPool? = nil,
        _ body: (Session) throws -> T
    ) throws -> T {
        // A replica that follows is refused before it writes anything (the database check stays last).
        if fenced, case .refuse = self.fencing.withLockedValue({ $0 }) {
            throw StoreError("this replica does not lead: only the leader writes this (fenced)", fenced: true)
        }
        return try (pool ?? self.pool).withSession(what) { session in
            _ = try session.query("BEGIN")
            do {
                let result = try body(session)
                if fenced { try self.checkFence(session) }
                _ = try session.query("COMMIT")
                return result
            } catch {
                _ = try? session.query("ROLLBACK")
                throw error
            }
        }
    }

    /// Runs reads in one REPEATABLE READ transaction: all of them see the database as of one moment.
    private func snapshot<T>(_ what: String, _ body: (Session) throws -> T) throws -> T {
        try self.transaction(what) { session in
            _ = try session.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return try body(session)
        }
    }

    /// Runs one statement outside a transaction (a read).
    private func read<T>(_ what: String, _ body: (Session) throws -> T) throws -> T {
        try self.pool.withSession(what) { session in try body(session) }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                let detail = error.serverInfo?[.detail].map { ": \($0)" } ?? ""
                return "\(message)\(detail)\(state)"
            }
            if let underlying = error.underlying { return "\(error.code): \(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }

    // MARK: Versions

    public func appendVersion(_ draft: VersionDraft) throws -> PolicyVersion {
        let sources = try self.json(draft.sources)
        let packages = try draft.packages.map { try self.json($0) }
        let fleet = try self.text(draft.fleet, "fleet.yaml")
        let author = try self.text(draft.author, "author")
        let message = try self.text(draft.message, "message")
        let gitRevision = try self.text(draft.gitRevision, "git revision")
        return try self.transaction("storing a version", fenced: true) { session in
            // Numbers are consecutive across every policyd sharing the database.
            _ = try session.query("LOCK TABLE versions IN EXCLUSIVE MODE")
            var number = 1
            for row in try session.query("SELECT COALESCE(MAX(number), 0) + 1 FROM versions") {
                number = try row.decode(Int.self)
            }
            _ = try session.query(
                """
                INSERT INTO versions (number, content_hash, sources, fleet, ir, author, message, git_revision,
                                      created_at, outcome, failure_reason, packages)
                VALUES (\(number), \(draft.contentHash), \(sources), \(fleet), \(draft.ir), \(author), \(message),
                        \(gitRevision), \(draft.createdAt), \(VersionOutcome.pending.rawValue), NULL, \(packages))
                """
            )
            return PolicyVersion(number: number, draft: draft)
        }
    }

    private static let versionColumns =
        "number, content_hash, sources, fleet, ir, author, message, git_revision, created_at, outcome, failure_reason, packages"

    private func version(from row: PostgresRow) throws -> PolicyVersion {
        let (
            number, contentHash, sources, fleet, ir, author, message, gitRevision, createdAt, outcome, failureReason,
            packages
        ) = try row.decode(
            (Int, String, String, String, String, String, String, String?, Date, String, String?, String?).self
        )
        return PolicyVersion(
            number: number,
            contentHash: contentHash,
            sources: try self.decode([SourceText].self, sources),
            fleet: fleet,
            ir: ir,
            author: author,
            message: message,
            gitRevision: gitRevision,
            createdAt: createdAt,
            outcome: VersionOutcome(rawValue: outcome) ?? .pending,
            failureReason: failureReason,
            packages: try packages.map { try self.decode(VersionPackages.self, $0) }
        )
    }

    public func version(_ number: Int) throws -> PolicyVersion? {
        try self.read("reading version \(number)") { session in
            try session.query(
                "SELECT \(unescaped: Self.versionColumns) FROM versions WHERE number = \(number)"
            ).first.map(self.version(from:))
        }
    }

    public func versions(limit: Int) throws -> [PolicyVersion] {
        try self.read("reading versions") { session in
            try session.query(
                "SELECT \(unescaped: Self.versionColumns) FROM versions ORDER BY number DESC LIMIT \(limit)"
            ).map(self.version(from:))
        }
    }

    public func setOutcome(of version: Int, _ outcome: VersionOutcome, reason: String?) throws {
        let reason = try self.text(reason, "failure reason")
        try self.transaction("recording the outcome of version \(version)", fenced: true) { session in
            _ = try session.query(
                "UPDATE versions SET outcome = \(outcome.rawValue), failure_reason = \(reason) WHERE number = \(version)"
            )
        }
    }

    public func saveRendered(_ records: [RenderedRecord]) throws {
        guard !records.isEmpty else { return }
        try self.transaction("storing rendered configs", fenced: true) { session in
            for record in records {
                _ = try session.query(
                    """
                    INSERT INTO rendered (version, tier, sampler_count, ring_version, yaml, hash)
                    VALUES (\(record.version), \(record.tier.rawValue), \(record.samplerCount), \(record.ringVersion),
                            \(try self.text(record.yaml, "rendered config")), \(record.hash))
                    ON CONFLICT DO NOTHING
                    """
                )
            }
        }
    }

    public func rendered(version: Int) throws -> [RenderedRecord] {
        try self.read("reading rendered configs") { session in
            try session.query(
                """
                SELECT version, tier, sampler_count, ring_version, yaml, hash FROM rendered
                WHERE version = \(version) ORDER BY tier, ring_version DESC
                """
            ).map { row in
                let (version, tier, samplerCount, ringVersion, yaml, hash) = try row.decode(
                    (Int, String, Int, Int, String, String).self
                )
                return RenderedRecord(
                    version: version,
                    tier: AgentTier(rawValue: tier) ?? .unmanaged,
                    samplerCount: samplerCount,
                    ringVersion: ringVersion,
                    yaml: yaml,
                    hash: hash
                )
            }
        }
    }

    // MARK: Engine state and rollouts

    public func loadControlState() throws -> ControlState? {
        let loaded = try self.snapshot("reading the control state") { session in
            try self.readState(session, after: nil, base: nil)
        }
        // A document saved whole is no base: the next save writes every row.
        self.savedState.withLockedValue {
            $0 = loaded.flatMap { $0.whole ? nil : ($0.read.generation, $0.read.parts) }
        }
        return loaded?.read.parts.state
    }

    /// The state saved after `generation` (any when `nil`), with its generation; `whole`: from a document
    /// written without rows. Given `base`, the parts as they were at its generation, only rows written since
    /// are read, unless removals that old were pruned. Run in a REPEATABLE READ transaction, so the document
    /// and the rows are of one save.
    private func readState(
        _ session: Session,
        after generation: Int?,
        base: Followed?
    ) throws -> (read: Followed, whole: Bool)? {
        guard
            let row = try session.query(
                """
                SELECT state, generation, pruned_below, rows_generation FROM control_state
                WHERE id = 1 AND (\(generation)::bigint IS NULL OR generation > \(generation))
                """
            ).first
        else { return nil }
        let (text, current, prunedBelow, rowsGeneration) = try row.decode((String, Int, Int, Int?).self)
        let document = try self.decode(ControlState.self, text)
        // Rows go with the document only when the save that wrote it wrote them (an earlier policyd does not
        // set rows_generation).
        let whole = rowsGeneration != current
        // Removals after the base are all still there when none newer than it were pruned.
        let since = base.flatMap { $0.generation + 1 >= prunedBelow ? $0 : nil }
        let parts = try StoredState.read(document: document, whole: whole) {
            var assignments = since?.parts.assignments ?? [:]
            for row in try session.query(
                """
                SELECT uid, version, ring, sampler_count FROM assignments
                WHERE \(since?.generation)::bigint IS NULL AND version IS NOT NULL OR generation > \(since?.generation)
                """
            ) {
                let (uid, version, ring, samplerCount) = try row.decode((String, Int?, Int?, Int?).self)
                assignments[uid] = version.map { Assignment(version: $0, ring: ring, samplerCount: samplerCount) }
            }
            var heldOut = since?.parts.heldOut ?? [:]
            var leftRing = since?.parts.leftRing ?? [:]
            for row in try session.query(
                """
                SELECT kind, name, at_seconds FROM state_times
                WHERE \(since?.generation)::bigint IS NULL AND at_seconds IS NOT NULL OR generation > \(since?.generation)
                """
            ) {
                let (kind, name, seconds) = try row.decode((String, String, Double?).self)
                let at = seconds.map { Date(timeIntervalSince1970: $0) }
                switch kind {
                case StoredState.heldOutKind: heldOut[name] = at
                case StoredState.leftRingKind: leftRing[name] = at
                default: break
                }
            }
            // The members of a ring version are read again only when they were written since.
            let sameRing = since.map { $0.parts.core.ring.version == document.ring.version } == true
            var members = sameRing ? since?.parts.ringMembers : nil
            if let written = try session.query(
                """
                SELECT members FROM ring_history
                WHERE version = \(document.ring.version) AND (\(sameRing) = false OR generation > \(since?.generation))
                """
            ).first {
                members = try self.decode([String].self, try written.decode(String.self))
            }
            guard let members else {
                throw StoreError("reading the control state: ring \(document.ring.version) is not in the ring history")
            }
            var agents: [String: RolloutAgentRow] = [:]
            if let rollout = document.rollout {
                let sameRollout = since.map { $0.parts.core.rollout?.id == rollout.id } == true
                agents = sameRollout ? since?.rolloutAgents ?? [:] : [:]
                try self.readRolloutAgents(session, of: [rollout.id], after: sameRollout ? since?.generation : nil) {
                    agents[$1] = $2.isEmpty ? nil : $2
                }
            }
            return (assignments, heldOut, leftRing, members, agents)
        }
        return (Followed(generation: current, parts: parts.parts, rolloutAgents: parts.rolloutAgents), whole)
    }

    /// Reads the per-agent parts of rollouts (written after `generation`, with removals; all present ones
    /// when `nil`), giving each to `body` with its rollout and agent.
    private func readRolloutAgents(
        _ session: Session,
        of rollouts: [Int],
        after generation: Int?,
        _ body: (Int, String, RolloutAgentRow) -> Void
    ) throws {
        for row in try session.query(
            """
            SELECT rollout, uid, step, out_of_ring, touched, members FROM rollout_agents
            WHERE rollout = ANY(\(rollouts)::bigint[])
                AND (\(generation)::bigint IS NULL
                        AND NOT (\(unescaped: RolloutAgentRow.removedSQL))
                    OR generation > \(generation))
            """
        ) {
            let (rollout, uid, step, outOfRing, touched, members) = try row.decode(
                (Int, String, String?, Double?, String?, String?).self
            )
            body(
                rollout,
                uid,
                RolloutAgentRow(
                    stepColumn: step,
                    outOfRing: outOfRing,
                    touchedColumn: touched,
                    membersColumn: members
                )
            )
        }
    }

    public func saveControlState(_ state: ControlState, events: [EngineEvent]) throws {
        let parts = StoredState(state)
        let base = self.savedState.withLockedValue { $0 }
        let core = try self.json(parts.core)
        let eventRows = try events.map { event in
            (event, try self.text(event.message, "event message"), try self.text(event.agent, "event agent"))
        }
        let generation = try self.transaction("saving the control state", fenced: true) { session -> Int in
            guard
                let row = try session.query(
                    """
                    INSERT INTO control_state (id, state, updated_at, generation, rows_generation)
                    VALUES (1, \(core), now(), 1, 1)
                    ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at,
                        generation = control_state.generation + 1, rows_generation = control_state.generation + 1
                    RETURNING generation
                    """
                ).first
            else { throw StoreError("saving the control state: no generation returned") }
            let generation = try row.decode(Int.self)
            // Only what changed since the save this store made last, if nothing else wrote since.
            let changes = parts.changes(from: base.flatMap { $0.generation + 1 == generation ? $0.parts : nil })
            try self.write(changes, of: parts, generation: generation, events: events, session)
            // Delivered at commit to every replica listening: the followers read the new state at once.
            _ = try session.query(
                "SELECT pg_notify(\(Self.stateChannel), extract(epoch FROM clock_timestamp())::text)"
            )
            if !eventRows.isEmpty {
                // One statement for all (a stage's step may log thousands), in order; -1 and '' stand for none.
                let rollouts = eventRows.map { $0.0.rollout ?? -1 }
                let kinds = eventRows.map { $0.0.kind.rawValue }
                let agents = eventRows.map { $0.2 ?? "" }
                let messages = eventRows.map(\.1)
                let times = eventRows.map(\.0.time)
                _ = try session.query(
                    """
                    INSERT INTO rollout_events (rollout, kind, agent, message, time)
                    SELECT NULLIF(r, -1), k, NULLIF(a, ''), m, t
                    FROM unnest(\(rollouts)::bigint[], \(kinds)::text[], \(agents)::text[], \(messages)::text[],
                                \(times)::timestamptz[]) WITH ORDINALITY AS e(r, k, a, m, t, n)
                    ORDER BY n
                    """
                )
            }
            if generation % StoredState.pruneEvery == 0 {
                let below = generation - StoredState.tombstoneSaves
                _ = try session.query("DELETE FROM assignments WHERE version IS NULL AND generation < \(below)")
                _ = try session.query("DELETE FROM state_times WHERE at_seconds IS NULL AND generation < \(below)")
                _ = try session.query(
                    """
                    DELETE FROM rollout_agents WHERE \(unescaped: RolloutAgentRow.removedSQL) AND generation < \(below)
                    """
                )
                _ = try session.query("UPDATE control_state SET pruned_below = \(below)")
            }
            return generation
        }
        self.savedState.withLockedValue { $0 = (generation, parts) }
    }

    /// Writes the rows of one save, each kind in one statement; in the arrays -1 (counts and versions), NaN
    /// (seconds) and '' stand for NULL.
    private func write(
        _ changes: StateChanges,
        of parts: StoredState,
        generation: Int,
        events: [EngineEvent],
        _ session: Session
    ) throws {
        let rolloutID = parts.core.rollout?.id
        if changes.full {
            _ = try session.query(
                """
                UPDATE assignments SET version = NULL, ring = NULL, sampler_count = NULL, generation = \(generation)
                WHERE version IS NOT NULL
                """
            )
            _ = try session.query(
                "UPDATE state_times SET at_seconds = NULL, generation = \(generation) WHERE at_seconds IS NOT NULL"
            )
        }
        if changes.clearsRollout, let rolloutID {
            _ = try session.query(
                """
                UPDATE rollout_agents SET step = NULL, out_of_ring = NULL, touched = NULL, members = NULL,
                    generation = \(generation)
                WHERE rollout = \(rolloutID)
                    AND NOT (\(unescaped: RolloutAgentRow.removedSQL))
                """
            )
        }
        if !changes.assignments.isEmpty {
            let uids = try changes.assignments.map { try self.text($0.key, "agent instance UID") }
            let versions = changes.assignments.map { $0.value?.version ?? -1 }
            let rings = changes.assignments.map { $0.value?.ring ?? -1 }
            let counts = changes.assignments.map { $0.value?.samplerCount ?? -1 }
            _ = try session.query(
                """
                INSERT INTO assignments (uid, version, ring, sampler_count, generation)
                SELECT u, NULLIF(v, -1), NULLIF(r, -1), NULLIF(c, -1), \(generation)
                FROM unnest(\(uids)::text[], \(versions)::bigint[], \(rings)::bigint[], \(counts)::bigint[]) AS a(u, v, r, c)
                ON CONFLICT (uid) DO UPDATE SET version = excluded.version, ring = excluded.ring,
                    sampler_count = excluded.sampler_count, generation = excluded.generation
                """
            )
        }
        let times = changes.times
        if !times.isEmpty {
            let kinds = times.map(\.kind)
            let names = try times.map { try self.text($0.key, "ring entry") }
            let seconds = times.map { $0.at?.timeIntervalSince1970 ?? .nan }
            _ = try session.query(
                """
                INSERT INTO state_times (kind, name, at_seconds, generation)
                SELECT k, n, NULLIF(s, 'NaN'), \(generation)
                FROM unnest(\(kinds)::text[], \(names)::text[], \(seconds)::float8[]) AS t(k, n, s)
                ON CONFLICT (kind, name) DO UPDATE SET at_seconds = excluded.at_seconds,
                    generation = excluded.generation
                """
            )
        }
        if let rolloutID, !changes.rolloutAgents.isEmpty {
            let rows = changes.rolloutAgents
            let uids = try rows.map { try self.text($0.key, "agent instance UID") }
            let steps = rows.map { $0.value.step?.rawValue ?? "" }
            let outOfRing = rows.map { $0.value.outOfRing ?? .nan }
            let touched = rows.map { RolloutAgentRow.text($0.value.touched) ?? "" }
            let members = rows.map { RolloutAgentRow.text($0.value.members) ?? "" }
            _ = try session.query(
                """
                INSERT INTO rollout_agents (rollout, uid, step, out_of_ring, touched, members, generation)
                SELECT \(rolloutID), u, NULLIF(s, ''), NULLIF(o, 'NaN'), NULLIF(t, ''), NULLIF(m, ''), \(generation)
                FROM unnest(\(uids)::text[], \(steps)::text[], \(outOfRing)::float8[], \(touched)::text[],
                            \(members)::text[]) AS r(u, s, o, t, m)
                ON CONFLICT (rollout, uid) DO UPDATE SET step = excluded.step, out_of_ring = excluded.out_of_ring,
                    touched = excluded.touched, members = excluded.members, generation = excluded.generation
                """
            )
        }
        if let rollout = changes.rollout {
            let document = try self.json(rollout)
            _ = try session.query(
                """
                INSERT INTO rollouts (id, from_version, to_version, phase, state, started_at, ended_at)
                VALUES (\(rollout.id), \(rollout.from), \(rollout.to), \(rollout.phase.rawValue), \(document),
                        \(rollout.startedAt), \(rollout.endedAt))
                ON CONFLICT (id) DO UPDATE SET from_version = excluded.from_version,
                    to_version = excluded.to_version, phase = excluded.phase, state = excluded.state,
                    started_at = excluded.started_at, ended_at = excluded.ended_at
                """
            )
        }
        let ring = parts.core.ring
        let convergence = ring.convergedAt.map { $0.timeIntervalSince(ring.changedAt) }
        switch changes.ring {
        case .none:
            break
        case .convergence:
            _ = try session.query(
                "UPDATE ring_history SET convergence_seconds = \(convergence) WHERE version = \(ring.version)"
            )
        case .whole:
            // Members as saved now (a save taken for failed may have committed other ones for this version);
            // the reason only from the step that changed the ring.
            let members = try self.json(parts.ringMembers)
            let reason = try self.text(events.last { $0.kind == .ringChanged }?.message, "ring change reason")
            _ = try session.query(
                """
                INSERT INTO ring_history (version, members, changed_at, reason, convergence_seconds, generation)
                VALUES (\(ring.version), \(members), \(ring.changedAt), COALESCE(\(reason)::text, \("ring \(ring.version)")),
                        \(convergence), \(generation))
                ON CONFLICT (version) DO UPDATE SET members = excluded.members, changed_at = excluded.changed_at,
                    reason = COALESCE(\(reason)::text, ring_history.reason),
                    convergence_seconds = excluded.convergence_seconds, generation = excluded.generation
                """
            )
        }
    }

    public func rollouts(limit: Int) throws -> [Rollout] {
        try self.snapshot("reading rollouts") { session in
            let rollouts = try session.query("SELECT state FROM rollouts ORDER BY id DESC LIMIT \(limit)").map {
                try self.decode(Rollout.self, try $0.decode(String.self))
            }
            var agents: [Int: [String: RolloutAgentRow]] = [:]
            try self.readRolloutAgents(session, of: rollouts.map(\.id), after: nil) { rollout, uid, row in
                if !row.isEmpty { agents[rollout, default: [:]][uid] = row }
            }
            return rollouts.map { StoredState.joined($0, agents[$0.id] ?? [:]) }
        }
    }

    public func rollout(_ id: Int) throws -> Rollout? {
        try self.snapshot("reading rollout \(id)") { session in
            guard
                let rollout = try session.query("SELECT state FROM rollouts WHERE id = \(id)").first.map({
                    try self.decode(Rollout.self, try $0.decode(String.self))
                })
            else { return nil }
            var agents: [String: RolloutAgentRow] = [:]
            try self.readRolloutAgents(session, of: [id], after: nil) { _, uid, row in
                if !row.isEmpty { agents[uid] = row }
            }
            return StoredState.joined(rollout, agents)
        }
    }

    public func events(ofRollout id: Int) throws -> [EngineEvent] {
        try self.read("reading the steps of rollout \(id)") { session in
            try session.query(
                "SELECT kind, message, rollout, agent, time FROM rollout_events WHERE rollout = \(id) ORDER BY seq"
            ).map { row in
                let (kind, message, rollout, agent, time) = try row.decode((String, String, Int?, String?, Date).self)
                return EngineEvent(
                    kind: EngineEvent.Kind(rawValue: kind) ?? .agentStep,
                    message: message,
                    rollout: rollout,
                    agent: agent,
                    time: time
                )
            }
        }
    }

    // MARK: Agents, ring, audit

    public func recordAgents(_ records: [AgentRecord]) throws {
        guard !records.isEmpty else { return }
        // The last record of an agent wins, as row-by-row upserts would have it; one statement for all.
        var latest: [String: Int] = [:]
        for (index, record) in records.enumerated() { latest[record.instanceUID] = index }
        let chosen = latest.values.sorted().map { records[$0] }
        let uids = try chosen.map { try self.text($0.instanceUID, "agent instance UID") }
        let json = try chosen.map { try self.json($0) }
        let lastSeen = chosen.map(\.lastSeen)
        try self.transaction("recording agent state") { session in
            _ = try session.query(
                """
                INSERT INTO agents (uid, record, last_seen, xid)
                SELECT *, pg_current_xact_id()::text::bigint
                FROM unnest(\(uids)::text[], \(json)::text[], \(lastSeen)::timestamptz[])
                ON CONFLICT (uid) DO UPDATE
                SET record = excluded.record, last_seen = excluded.last_seen, xid = excluded.xid
                -- An agent that moved: the replica it left does not overwrite what the new one saw later.
                WHERE agents.last_seen <= excluded.last_seen
                """
            )
        }
    }

    public func agents() throws -> [AgentRecord] {
        try self.read("reading agents") { session in
            try session.query("SELECT record FROM agents ORDER BY uid").map {
                try self.decode(AgentRecord.self, try $0.decode(String.self))
            }
        }
    }

    public func ringHistory(limit: Int) throws -> [RingRecord] {
        try self.read("reading the ring history") { session in
            try session.query(
                """
                SELECT version, members, changed_at, reason, convergence_seconds FROM ring_history
                ORDER BY version DESC LIMIT \(limit)
                """
            ).map { row in
                let (version, members, changedAt, reason, convergence) = try row.decode(
                    (Int, String, Date, String, Double?).self
                )
                return RingRecord(
                    version: version,
                    members: try self.decode([String].self, members),
                    changedAt: changedAt,
                    reason: reason,
                    convergenceSeconds: convergence
                )
            }
        }
    }

    public func appendAudit(_ entry: AuditEntry) throws {
        let actor = try self.text(entry.actor, "audit actor")
        let action = try self.text(entry.action, "audit action")
        let detail = try self.text(entry.detail, "audit detail")
        let remote = try self.text(entry.remote, "audit remote")
        try self.transaction("writing the audit log") { session in
            _ = try session.query(
                """
                INSERT INTO audit (time, actor, action, detail, remote)
                VALUES (\(entry.time), \(actor), \(action), \(detail), \(remote))
                """
            )
        }
    }

    public func audit(limit: Int) throws -> [AuditEntry] {
        try self.read("reading the audit log") { session in
            try session.query(
                "SELECT time, actor, action, detail, remote FROM audit ORDER BY seq DESC LIMIT \(limit)"
            ).map { row in
                let (time, actor, action, detail, remote) = try row.decode((Date, String, String, String, String).self)
                return AuditEntry(time: time, actor: actor, action: action, detail: detail, remote: remote)
            }
        }
    }

    public func saveSecurityRecords(_ records: [SecurityRecord]) throws {
        guard !records.isEmpty else { return }
        let rows = try records.map {
            (
                try self.text($0.key.kind, "security record kind"), try self.text($0.key.id, "security record id"),
                try self.json($0)
            )
        }
        // A rotation is the leader's alone: a deposed leader must not overwrite the one its successor runs.
        let leaderOnly = records.contains { if case .rotation = $0 { true } else { false } }
        try self.transaction("saving security records", fenced: leaderOnly) { session in
            for (kind, id, record) in rows {
                _ = try session.query(
                    """
                    INSERT INTO security (kind, id, record) VALUES (\(kind), \(id), \(record))
                    ON CONFLICT (kind, id) DO UPDATE SET record = excluded.record
                    """
                )
            }
        }
    }

    public func securityRecords() throws -> [SecurityRecord] {
        try self.read("reading security records") { session in
            try session.query("SELECT record FROM security ORDER BY kind, id").map {
                try self.decode(SecurityRecord.self, try $0.decode(String.self))
            }
        }
    }

    // MARK: Packages

    public func insertPackage(_ record: PackageRecord) throws {
        let json = try self.json(record)
        let name = try self.text(record.name, "package name")
        let version = try self.text(record.version, "package version")
        try self.transaction("storing package \(record.name) \(record.version)") { session in
            _ = try session.query(
                "INSERT INTO packages (name, version, record) VALUES (\(name), \(version), \(json))"
            )
        }
    }

    public func packages() throws -> [PackageRecord] {
        try self.read("reading packages") { session in
            try session.query("SELECT record FROM packages").map {
                try self.decode(PackageRecord.self, try $0.decode(String.self))
            }
        }.sorted { ($0.name, $0.uploadedAt) < ($1.name, $1.uploadedAt) }
    }

    public func deletePackage(name: String, version: String) throws {
        try self.transaction("deleting package \(name) \(version)") { session in
            let deleted = try session.query(
                "DELETE FROM packages WHERE name = \(name) AND version = \(version) RETURNING record"
            ).map { try self.decode(PackageRecord.self, try $0.decode(String.self)) }
            // The content goes with its last record (a package stored under two names shares it).
            for sha256 in Set(deleted.map(\.sha256)) {
                _ = try session.query(
                    """
                    DELETE FROM package_content WHERE sha256 = \(sha256)
                    AND NOT EXISTS (SELECT 1 FROM packages WHERE (record::jsonb)->>'sha256' = \(sha256))
                    """
                )
            }
        }
    }
}

// MARK: - Package contents and keys every replica reads

extension PostgresStore: SharedPackageStorage {
    /// Bytes per stored chunk: one row each, so neither side ever holds more than this of a package.
    static let packageChunkBytes = 1 << 20

    public func sharedKey(named name: String, proposing proposed: [UInt8]?) throws -> [UInt8]? {
        try self.transaction("reading the shared key \(name)") { session in
            if let proposed {
                let offered = ByteBuffer(bytes: proposed)
                _ = try session.query(
                    """
                    INSERT INTO shared_keys (name, key, created_at) VALUES (\(name), \(offered), now())
                    ON CONFLICT (name) DO NOTHING
                    """
                )
            }
            return try session.query("SELECT key FROM shared_keys WHERE name = \(name)").first.map {
                Array(buffer: try $0.decode(ByteBuffer.self))
            }
        }
    }

    public func storePackageContent(sha256: String, from file: URL) throws {
        let size: Int64
        do {
            size = ((try FileManager.default.attributesOfItem(atPath: file.path))[.size] as? NSNumber)?.int64Value ?? 0
        } catch {
            throw StoreError(
                "storing package content \(sha256): cannot read \(file.path): \(error.localizedDescription)"
            )
        }
        let chunks = Int((size + Int64(Self.packageChunkBytes) - 1) / Int64(Self.packageChunkBytes))
        try self.transaction("storing package content \(sha256)") { session in
            // Stored already (an earlier push, another replica): refreshed, not read again. A store of the same
            // bytes running at this moment holds the row: this waits for it (up to the lock timeout).
            let inserted = try session.query(
                """
                INSERT INTO package_content (sha256, size, chunks, stored_at) VALUES (\(sha256), \(size), \(chunks), now())
                ON CONFLICT (sha256) DO UPDATE SET stored_at = now() RETURNING (xmax = 0)
                """
            ).first.map { try $0.decode(Bool.self) }
            guard inserted == true else { return }
            guard let handle = try? FileHandle(forReadingFrom: file) else {
                throw StoreError("storing package content \(sha256): cannot open \(file.path)")
            }
            defer { try? handle.close() }
            for seq in 0..<chunks {
                let data: Data
                do {
                    data = try handle.read(upToCount: Self.packageChunkBytes) ?? Data()
                } catch {
                    throw StoreError("storing package content \(sha256): reading \(file.path): \(error)")
                }
                guard !data.isEmpty else {
                    throw StoreError("storing package content \(sha256): \(file.path) is shorter than \(size) bytes")
                }
                let buffer = ByteBuffer(bytes: data)
                _ = try session.query(
                    "INSERT INTO package_chunks (sha256, seq, data) VALUES (\(sha256), \(seq), \(buffer))"
                )
            }
        }
    }

    public func loadPackageContent(sha256: String, into file: URL) throws -> String? {
        guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = try? FileHandle(forWritingTo: file)
        else {
            throw StoreError("reading package content \(sha256): cannot write \(file.path)")
        }
        defer { try? handle.close() }
        // One chunk per statement, so memory holds one chunk, hashed as it is written; a snapshot makes every
        // chunk come from one stored content even if it is deleted meanwhile. The file is flushed to disk after
        // the transaction: a slow disk must not hold it open (the session's idle timeout would end it).
        let digest = try self.snapshot("reading package content \(sha256)") { session -> String? in
            guard
                let row = try session.query("SELECT size, chunks FROM package_content WHERE sha256 = \(sha256)").first
            else { return nil }
            let (size, chunks) = try row.decode((Int64, Int).self)
            var hasher = SHA256()
            var written: Int64 = 0
            for seq in 0..<chunks {
                guard
                    let chunk = try session.query(
                        "SELECT data FROM package_chunks WHERE sha256 = \(sha256) AND seq = \(seq)"
                    ).first
                else {
                    throw StoreError("reading package content \(sha256): chunk \(seq) of \(chunks) is missing")
                }
                let buffer = try chunk.decode(ByteBuffer.self)
                buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                do {
                    try handle.write(contentsOf: Data(buffer.readableBytesView))
                } catch {
                    throw StoreError("reading package content \(sha256): writing \(file.path): \(error)")
                }
                written += Int64(buffer.readableBytes)
            }
            guard written == size else {
                throw StoreError("reading package content \(sha256): \(written) bytes stored of \(size)")
            }
            return hasher.finalize().map { String(format: "%02x", $0) }.joined()
        }
        guard let digest else { return nil }
        do { try handle.synchronize() } catch {
            throw StoreError("reading package content \(sha256): writing \(file.path): \(error)")
        }
        return digest
    }

    public func removeUnreferencedPackageContent(olderThan seconds: Double) throws {
        try self.transaction("removing unreferenced package content") { session in
            _ = try session.query(
                """
                DELETE FROM package_content c
                WHERE c.stored_at < now() - make_interval(secs => \(seconds))
                AND NOT EXISTS (SELECT 1 FROM packages p WHERE (p.record::jsonb)->>'sha256' = c.sha256)
                """
            )
        }
    }
}

/// One connection lent to one store call.
private struct Session {
    let connection: PostgresConnection
    let logger: Logger
    /// How long a statement may go unanswered before the connection is given up.
    let answerSeconds: Double

    func query(_ query: PostgresQuery) throws -> PostgresQueryResult {
        let connection = self.connection
        return try BlockingConnectionPool.wait(
            for: connection.query(query, logger: self.logger),
            atMost: self.answerSeconds,
            "the statement"
        ) { _ in connection.closeInBackground() }
    }
}

/// A fixed number of connections shared by blocking callers. postgres-nio's own pool (`PostgresClient`) is
/// async only: borrowing from it would park a Swift concurrency thread on a task that needs one of those
/// very threads, which deadlocks once every thread waits. This pool only ever waits on event loop futures.
/// A broken connection is dropped and replaced on the next call.
final class BlockingConnectionPool: Sendable {
    private struct State {
        var idle: [PostgresConnection] = []
        var closed = false
        var nextID = 0
    }

    private let size: Int
    private let configuration: PostgresConnection.Configuration
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let state = NIOLockedValueBox(State())
    private let free: DispatchSemaphore
    /// How long a statement, or opening a connection, may go unanswered before the connection is given up.
    let answerSeconds: Double

    /// - Parameter answerSeconds: past this a call fails and its connection is closed. A database cut off by
    ///   the network (a partition, a host that failed over to another address) answers nothing, not even an
    ///   error, and TCP alone would retransmit for a quarter of an hour while the caller waits.
    init(
        size: Int,
        connection: PostgresConnection.Configuration,
        eventLoop: any EventLoop,
        answerSeconds: Double,
        logger: Logger
    ) {
        self.size = size
        self.configuration = connection
        self.eventLoop = eventLoop
        self.answerSeconds = answerSeconds
        self.logger = logger
        self.free = DispatchSemaphore(value: size)
    }

    /// Waits for `future` at most `seconds`; past that `giveUp` gets it (to close the connection it runs on,
    /// or will run on) and the wait fails with ``StoreError``.
    static func wait<T: Sendable>(
        for future: EventLoopFuture<T>,
        atMost seconds: Double,
        _ what: String,
        giveUp: @escaping @Sendable (EventLoopFuture<T>) -> Void
    ) throws -> T {
        let outcome = NIOLockedValueBox<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        future.whenComplete { result in
            outcome.withLockedValue { $0 = result }
            done.signal()
        }
        guard done.wait(timeout: .now() + seconds) == .success, let result = outcome.withLockedValue({ $0 }) else {
            giveUp(future)
            throw NoAnswer(
                description:
                    "\(what): no answer from the database in \(Int(seconds)) s (cut off by the network?); the connection is closed and the next call opens another"
            )
        }
        return try result.get()
    }

    /// A statement, or the opening of a connection, the database did not answer in time.
    struct NoAnswer: Error, CustomStringConvertible {
        var description: String
    }

    /// How long a call waits for a connection when all are lent.
    static let checkoutTimeout: TimeInterval = 30

    /// One connection for `body`, whose statements are given up after ``answerSeconds``.
    fileprivate func withSession<T>(_ what: String, _ body: (Session) throws -> T) throws -> T {
        try self.withConnection(what) { connection in
            try body(Session(connection: connection, logger: self.logger, answerSeconds: self.answerSeconds))
        }
    }

    func withConnection<T>(_ what: String, _ body: (PostgresConnection) throws -> T) throws -> T {
        guard self.free.wait(timeout: .now() + Self.checkoutTimeout) == .success else {
            throw StoreError("\(what): all \(self.size) database connections stayed busy for 30 s")
        }
        defer { self.free.signal() }
        let connection = try self.checkOut(what)
        var healthy = true
        defer { self.checkIn(connection, healthy: healthy) }
        do {
            return try body(connection)
        } catch let error as StoreError {
            throw error
        } catch {
            healthy = !Self.breaksConnection(error)
            // The idle connections went the same way, most likely (the database moved, the network broke):
            // closed now, so that each later call does not wait out the deadline on one of them first.
            if error is NoAnswer { self.closeIdle() }
            throw StoreError("\(what): \(PostgresStore.describe(error))")
        }
    }

    /// Closes the idle connections; later calls open new ones.
    private func closeIdle() {
        let idle = self.state.withLockedValue { state in
            defer { state.idle = [] }
            return state.idle
        }
        for connection in idle { connection.closeInBackground() }
    }

    /// An idle connection that is still open, or a new one.
    private func checkOut(_ what: String) throws -> PostgresConnection {
        let (closed, idle, id) = self.state.withLockedValue { state -> (Bool, PostgresConnection?, Int) in
            if state.closed { return (true, nil, 0) }
            while let candidate = state.idle.popLast() {
                if !candidate.isClosed { return (false, candidate, 0) }
            }
            state.nextID += 1
            return (false, nil, state.nextID)
        }
        if closed { throw StoreError("\(what): the store is closed") }
        if let idle { return idle }
        do {
            return try Self.wait(
                for: PostgresConnection.connect(
                    on: self.eventLoop,
                    configuration: self.configuration,
                    id: id,
                    logger: self.logger
                ),
                atMost: self.answerSeconds,
                "opening a connection"
            ) { connecting in connecting.whenSuccess { $0.closeInBackground() } }
        } catch {
            throw StoreError("\(what): cannot connect to the database: \(PostgresStore.describe(error))")
        }
    }

    /// Back to the idle list, or closed when it broke or the store closed.
    private func checkIn(_ connection: PostgresConnection, healthy: Bool) {
        let kept =
            healthy && !connection.isClosed
            && self.state.withLockedValue { state in
                guard !state.closed else { return false }
                state.idle.append(connection)
                return true
            }
        if !kept { connection.closeInBackground() }
    }

    /// Errors after which the connection cannot be trusted (a server error leaves it usable).
    private static func breaksConnection(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError else { return true }
        return error.code != .server
    }

    func closeAll() {
        let connections = self.state.withLockedValue { state in
            state.closed = true
            defer { state.idle = [] }
            return state.idle
        }
        for connection in connections {
            let closed: EventLoopFuture<Void> = connection.close()
            try? closed.wait()
        }
    }
}

extension PostgresConnection {
    /// Closes without waiting (the future form: the async one would need a task). The connection is kept
    /// until its channel has closed: postgres-nio requires a connection to be closed before it goes, and the
    /// caller usually lets go of it at once.
    func closeInBackground() {
        let closed: EventLoopFuture<Void> = self.close()
        closed.whenComplete { _ in withExtendedLifetime(self) {} }
    }
}

extension PostgresStore: ReplicaCoordination {
    public func acquireOrRenewLease(replica: String, epoch: Int?, leaseSeconds: Double, api: String?) throws
        -> LeaseState
    {
        try self.transaction("taking or renewing the lease", on: self.leasePool) { session in
            let taken = try session.query(
                """
                UPDATE leader_lease SET holder = \(replica), holder_api = \(api), renewed_at = now(),
                    epoch = CASE WHEN holder = \(replica) AND epoch = \(epoch) THEN epoch ELSE epoch + 1 END
                WHERE name = 'controller' AND (
                    (holder = \(replica) AND epoch = \(epoch))
                    OR holder IS NULL
                    OR renewed_at < now() - make_interval(secs => \(leaseSeconds)))
                RETURNING holder, epoch, holder_api
                """
            )
            if let row = taken.first {
                let (holder, epoch, holderAPI) = try row.decode((String?, Int, String?).self)
                return LeaseState(holder: holder, epoch: epoch, holderAPI: holderAPI, held: true)
            }
            let current = try session.query(
                "SELECT holder, epoch, holder_api FROM leader_lease WHERE name = 'controller'"
            )
            guard let row = current.first else { throw StoreError("the lease row is missing") }
            let (holder, epoch, holderAPI) = try row.decode((String?, Int, String?).self)
            return LeaseState(holder: holder, epoch: epoch, holderAPI: holderAPI, held: false)
        }
    }

    public func releaseLease(replica: String, epoch: Int) throws {
        self.fence(replica: replica, epoch: nil)
        try self.transaction("releasing the lease", on: self.leasePool) { session in
            _ = try session.query(
                """
                UPDATE leader_lease SET holder = NULL, renewed_at = NULL
                WHERE name = 'controller' AND holder = \(replica) AND epoch = \(epoch)
                """
            )
        }
    }

    /// Channels: the engine state was saved; agent views were published. The payload is the sender's
    /// database time (seconds since 1970), so a listener can tell how late the news came.
    static let stateChannel = "tailplane_state"
    static let viewsChannel = "tailplane_views"

    public func listen(_ handler: @escaping @Sendable (_ news: ReplicaNews, _ sentAt: Double?) -> Void) {
        let loop = self.group.next()
        let reconnect: @Sendable () -> Void = { [weak self] in
            loop.scheduleTask(in: .seconds(1)) { [weak self] in self?.listen(handler) }
        }
        guard !self.isShutDown.withLockedValue({ $0 }) else { return }
        let logger = self.logger
        let connecting = PostgresConnection.connect(
            on: loop,
            configuration: self.connectionConfiguration,
            id: 0,
            logger: logger
        )
        // A connection that never answers (the database cut off by the network) is given up and tried again.
        // Everything below runs on `loop`, so the flag needs no more than the lock it has.
        let abandoned = NIOLockedValueBox(false)
        let limit = loop.scheduleTask(in: .seconds(Int64(Self.answerSeconds))) {
            abandoned.withLockedValue { $0 = true }
            connecting.whenSuccess { $0.closeInBackground() }
            reconnect()
        }
        connecting.whenComplete { [weak self] result in
            limit.cancel()
            guard !abandoned.withLockedValue({ $0 }) else { return }
            switch result {
            case .failure:
                reconnect()
            case .success(let connection):
                guard let self, !self.isShutDown.withLockedValue({ $0 }) else {
                    connection.closeInBackground()
                    return
                }
                self.listener.withLockedValue { $0 = connection }
                for (channel, news) in [
                    (Self.stateChannel, ReplicaNews.stateSaved), (Self.viewsChannel, .viewsPublished),
                ] {
                    connection.addListener(channel: channel) { _, notification in
                        handler(news, Double(notification.payload))
                    }
                }
                // Whatever was sent while not listening is read by the caller's next full poll.
                handler(.listening, nil)
                // A listening connection only waits, so a silent loss would never show: it is asked now and then,
                // and closed (then reopened) when it does not answer.
                let probes = loop.scheduleRepeatedTask(
                    initialDelay: .seconds(Self.listenerProbeSeconds),
                    delay: .seconds(Self.listenerProbeSeconds)
                ) { _ in
                    let probe = connection.query("SELECT 1", logger: logger)
                    let unanswered = loop.scheduleTask(in: .seconds(Int64(Self.leaseAnswerSeconds))) {
                        logger.warning("the listening database connection does not answer: reopening it")
                        connection.closeInBackground()
                    }
                    probe.whenComplete { _ in unanswered.cancel() }
                }
                connection.closeFuture.whenComplete { _ in
                    probes.cancel()
                    reconnect()
                }
            }
        }
    }

    public func fence(replica: String, epoch: Int?) {
        self.fencing.withLockedValue { $0 = epoch.map { .epoch(replica: replica, epoch: $0) } ?? .refuse }
    }

    public func heartbeat(replica: String, api: String?) throws {
        try self.transaction("recording this replica's heartbeat", on: self.leasePool) { session in
            _ = try session.query(
                """
                INSERT INTO replicas (name, api, heartbeat_at) VALUES (\(replica), \(api), now())
                ON CONFLICT (name) DO UPDATE SET api = excluded.api, heartbeat_at = excluded.heartbeat_at
                """
            )
        }
    }

    public func publishViews(replica: String, changed: [PublishedView], gone: [PublishedView]) throws {
        guard !changed.isEmpty || !gone.isEmpty else { return }
        let uids = try changed.map { try self.text($0.view.uid, "agent instance UID") }
        let json = try changed.map { try self.json($0) }
        try self.transaction("publishing agent views") { session in
            if !changed.isEmpty {
                _ = try session.query(
                    """
                    INSERT INTO agent_views (uid, replica, view, written_at, xid)
                    SELECT u, \(replica), v, now(), pg_current_xact_id()::text::bigint
                    FROM unnest(\(uids)::text[], \(json)::text[]) AS t(u, v)
                    ON CONFLICT (uid) DO UPDATE SET replica = excluded.replica, view = excluded.view,
                        written_at = excluded.written_at, xid = excluded.xid
                    """
                )
            }
            _ = try session.query(
                "SELECT pg_notify(\(Self.viewsChannel), extract(epoch FROM clock_timestamp())::text)"
            )
            if !gone.isEmpty {
                let goneUIDs = try gone.map { try self.text($0.view.uid, "agent instance UID") }
                let goneJSON = try gone.map { try self.json($0) }
                _ = try session.query(
                    """
                    UPDATE agent_views AS a SET view = t.v, written_at = now(), xid = pg_current_xact_id()::text::bigint
                    FROM unnest(\(goneUIDs)::text[], \(goneJSON)::text[]) AS t(u, v)
                    WHERE a.replica = \(replica) AND a.uid = t.u
                    """
                )
            }
        }
    }

    public func pruneViews(olderThanSeconds seconds: Double) throws {
        try self.transaction("pruning agent views") { session in
            // A withdrawn view says `"connected":false` in its JSON; NULL is how an older policyd withdrew.
            _ = try session.query(
                """
                DELETE FROM agent_views
                WHERE written_at < now() - make_interval(secs => \(seconds))
                  AND (view IS NULL OR (view::json -> 'view' ->> 'connected') = 'false'
                       OR replica NOT IN (
                           SELECT name FROM replicas WHERE heartbeat_at > now() - make_interval(secs => \(seconds))))
                """
            )
        }
    }

    public func publishedViews(after cursor: Int64?) throws -> (
        views: [(uid: String, view: PublishedView?)], cursor: Int64
    ) {
        try self.readInCommitOrder("reading agent views") { session in
            try session.query(
                "SELECT uid, view FROM agent_views WHERE \(cursor)::bigint IS NULL OR xid >= \(cursor)"
            ).map { row -> (uid: String, view: PublishedView?)? in
                let (uid, view) = try row.decode((String, String?).self)
                guard let view else { return (uid, nil) }
                // One view a newer policyd wrote in a shape this one does not read stops no one else's.
                guard let decoded = try? self.decode(PublishedView.self, view) else { return nil }
                return (uid, decoded)
            }.compactMap { $0 }
        }
    }

    public func agentRecords(after cursor: Int64?) throws -> (records: [AgentRecord], cursor: Int64) {
        try self.readInCommitOrder("reading agent records") { session in
            try session.query(
                "SELECT record FROM agents WHERE \(cursor)::bigint IS NULL OR xid >= \(cursor)"
            ).compactMap { row in
                // One record a newer policyd wrote in a shape this one does not read stops no other.
                try? self.decode(AgentRecord.self, try row.decode(String.self))
            }
        }
    }

    /// Rows written since a cursor, in commit order, not time: a write's `now()` is when its transaction
    /// began, so one that took long to commit could carry a time older than rows already read. Every
    /// transaction this read does not see has an id at least the snapshot's xmin, returned as the next
    /// cursor: the next read asks for those, and sees each such write once it committed (rows seen already
    /// may come again; the newest value wins). `body` reads rows whose `xid` is at least the cursor.
    private func readInCommitOrder<T>(_ what: String, _ body: (Session) throws -> T) throws -> (T, Int64) {
        try self.snapshot(what) { session in
            guard
                let horizon = try session.query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").first
            else { throw StoreError("\(what): no snapshot") }
            let next = try horizon.decode(Int64.self)
            return (try body(session), next)
        }
    }

    public func liveReplicas(maxAgeSeconds: Double) throws -> Set<String> {
        try self.read("reading replicas") { session in
            Set(
                try session.query(
                    "SELECT name FROM replicas WHERE heartbeat_at > now() - make_interval(secs => \(maxAgeSeconds))"
                ).map { try $0.decode(String.self) }
            )
        }
    }

    public func controlState(after generation: Int?) throws -> (state: ControlState, generation: Int)? {
        // Given the generation read last, only rows written since are read.
        let followed = self.followedState.withLockedValue { $0 }
        let base = generation.flatMap { generation in followed.flatMap { $0.generation == generation ? $0 : nil } }
        guard
            let read = try self.snapshot(
                "reading the control state",
                { session in
                    try self.readState(session, after: generation, base: base)
                }
            )
        else { return nil }
        // A document saved whole is no base either: the next read reads everything.
        self.followedState.withLockedValue { $0 = read.whole ? nil : read.read }
        return (read.read.parts.state, read.read.generation)
    }
}
