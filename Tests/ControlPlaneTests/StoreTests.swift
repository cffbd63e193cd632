import Credentials
import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import OpAMPServer
import PostgresNIO
import Testing

@testable import ControlPlane

/// A store under test and how to open it again (a restart of policyd).
struct StoreFixture: CustomTestStringConvertible {
    enum Backend: String, CaseIterable, Sendable {
        case sqlite
        case postgres

        /// A new PostgreSQL database's URL (`nil` for SQLite: the stack's own directory).
        func database() throws -> String? {
            self == .postgres ? try PostgresTestServer.shared.get().makeDatabase() : nil
        }
    }

    let backend: Backend
    /// SQLite: the data directory; PostgreSQL: the database URL.
    let location: String

    var testDescription: String { self.backend.rawValue }

    init(_ backend: Backend) throws {
        self.backend = backend
        switch backend {
        case .sqlite: self.location = temporaryDirectory().path
        case .postgres: self.location = try PostgresTestServer.shared.get().makeDatabase()
        }
    }

    func open() throws -> any ControlPlaneStore {
        switch self.backend {
        case .sqlite: try SQLiteStore(directory: URL(fileURLWithPath: self.location))
        case .postgres: try PostgresStore(configuration: try PostgresStoreConfiguration(url: self.location))
        }
    }
}

/// Dates as a store keeps them: PostgreSQL to the microsecond, so tests use whole milliseconds.
private func date(_ seconds: Double) -> Date { Date(timeIntervalSince1970: (seconds * 1000).rounded() / 1000) }

private func sameInstant(_ a: Date, _ b: Date) -> Bool { abs(a.timeIntervalSince(b)) < 0.000_01 }

private func draft(_ n: Int, packages: VersionPackages? = nil, revision: String? = nil) -> VersionDraft {
    VersionDraft(
        contentHash: "hash-\(n)",
        sources: [SourceText(path: "a.policy", text: "keep errors \(n) \"quoted\" ünïcode")],
        fleet: "tiers: {}\n# \(n)",
        ir: "{\"n\":\(n)}",
        author: "alice",
        message: "change \(n)",
        gitRevision: revision,
        createdAt: date(1_764_000_000.123 + Double(n)),
        packages: packages
    )
}

private func agent(_ uid: String, seen: Double, state: String = "applied") -> AgentRecord {
    AgentRecord(
        instanceUID: uid,
        tier: .sampling,
        transport: "websocket",
        connected: true,
        hostName: "host-\(uid)",
        ringEntry: "\(uid):4317",
        desiredVersion: 2,
        desiredHash: "d",
        reportedHash: "d",
        runningVersion: 2,
        configState: state,
        configError: nil,
        healthy: true,
        healthError: nil,
        inRing: true,
        lastSeen: date(seen),
        collectorVersion: "0.150.0"
    )
}

/// The store protocol's contract, run against SQLite and a real PostgreSQL server alike: what the controller,
/// the API and the security and package layers rely on.
@Suite struct StoreContractTests {
    @Test(arguments: StoreFixture.Backend.allCases)
    func versionsAreNumberedInOrderAndReadBackAsWritten(_ backend: StoreFixture.Backend) throws {
        let fixture = try StoreFixture(backend)
        let store = try fixture.open()
        #expect(try store.versions(limit: 10).isEmpty)
        #expect(try store.version(1) == nil)
        let pins = VersionPackages(
            loadBalancing: [],
            sampling: [PinnedPackage(name: "otelcol-contrib", version: "0.150.0", kind: .topLevel, sha256: "ab")]
        )
        let drafts = [draft(1), draft(2, packages: pins, revision: "abc123"), draft(3)]
        let stored = try drafts.map { try store.appendVersion($0) }
        #expect(stored.map(\.number) == [1, 2, 3])
        for (number, original) in zip(1..., drafts) {
            let read = try #require(try store.version(number))
            #expect(read.number == number)
            #expect(read.contentHash == original.contentHash)
            #expect(read.sources == original.sources)
            #expect(read.fleet == original.fleet)
            #expect(read.ir == original.ir)
            #expect(read.author == original.author)
            #expect(read.message == original.message)
            #expect(read.gitRevision == original.gitRevision)
            #expect(read.packages == original.packages)
            #expect(sameInstant(read.createdAt, original.createdAt))
            #expect(read.outcome == .pending)
            #expect(read.failureReason == nil)
        }
        #expect(try store.versions(limit: 2).map(\.number) == [3, 2])
        try store.setOutcome(of: 2, .failed, reason: "sampler-1 unhealthy")
        try store.setOutcome(of: 3, .deployed, reason: nil)
        #expect(try store.version(2)?.outcome == .failed)
        #expect(try store.version(2)?.failureReason == "sampler-1 unhealthy")
        #expect(try store.version(3)?.outcome == .deployed)
        #expect(try store.version(1)?.outcome == .pending)
    }

    @Test(arguments: StoreFixture.Backend.allCases)
    func renderedConfigsAreWrittenOnceAndListedByTierThenNewestRing(_ backend: StoreFixture.Backend) throws {
        let store = try StoreFixture(backend).open()
        _ = try store.appendVersion(draft(1))
        let first = [
            RenderedRecord(version: 1, tier: .sampling, samplerCount: 2, ringVersion: 1, yaml: "s: 1", hash: "h1"),
            RenderedRecord(version: 1, tier: .loadBalancing, samplerCount: 2, ringVersion: 1, yaml: "l: 1", hash: "h2"),
            RenderedRecord(version: 1, tier: .loadBalancing, samplerCount: 3, ringVersion: 2, yaml: "l: 2", hash: "h3"),
        ]
        try store.saveRendered(first)
        // The same key again with other content: the first write stands (configs are immutable).
        try store.saveRendered([
            RenderedRecord(version: 1, tier: .sampling, samplerCount: 2, ringVersion: 1, yaml: "changed", hash: "x")
        ])
        let read = try store.rendered(version: 1)
        #expect(read.map(\.hash) == ["h3", "h2", "h1"])
        #expect(read.first { $0.tier == .sampling }?.yaml == "s: 1")
        #expect(try store.rendered(version: 2).isEmpty)
    }

    @Test(arguments: StoreFixture.Backend.allCases)
    func controlStateRolloutsStepsAndRingHistorySurviveAReopen(_ backend: StoreFixture.Backend) throws {
        let fixture = try StoreFixture(backend)
        var store: (any ControlPlaneStore)? = try fixture.open()
        #expect(try store?.loadControlState() == nil)
        _ = try store?.appendVersion(draft(1))
        var state = ControlState(now: date(1_764_000_000))
        state.ring.version = 3
        state.ring.members = ["sampler-0:4317", "sampler-1:4317"]
        state.ring.changedAt = date(1_764_000_100)
        state.assignments["a"] = Assignment(version: 1, ring: 3, samplerCount: 2)
        let plan = RolloutPlan(
            stages: [.canary(1), .percent(100)],
            maxUnavailable: 1,
            bakeSeconds: 5,
            stageTimeoutSeconds: 600,
            drain: true,
            settleSeconds: 2,
            tiers: [.sampling]
        )
        state.rollout = Rollout(
            id: 1,
            from: nil,
            to: 1,
            phase: .progressing,
            plan: plan,
            stageStartedAt: date(1_764_000_100),
            startedAt: date(1_764_000_100)
        )
        let events = [
            EngineEvent(
                kind: .rolloutStarted,
                message: "rollout 1 to version 1",
                rollout: 1,
                time: date(1_764_000_100)
            ),
            EngineEvent(kind: .agentStep, message: "a applied", rollout: 1, agent: "a", time: date(1_764_000_101)),
            EngineEvent(kind: .ringChanged, message: "sampler-1 joined", time: date(1_764_000_102)),
        ]
        try store?.saveControlState(state, events: events)
        // The ring converges: the same ring version again updates only its convergence time.
        state.ring.convergedAt = date(1_764_000_104.5)
        state.rollout?.phase = .succeeded
        state.rollout?.endedAt = date(1_764_000_110)
        try store?.saveControlState(
            state,
            events: [EngineEvent(kind: .rolloutEnded, message: "done", rollout: 1, time: date(1_764_000_110))]
        )
        store = nil
        let reopened = try fixture.open()
        #expect(try reopened.loadControlState() == state)
        #expect(try reopened.rollouts(limit: 10).map(\.phase) == [.succeeded])
        #expect(try reopened.rollout(1)?.endedAt == date(1_764_000_110))
        #expect(try reopened.rollout(2) == nil)
        let steps = try reopened.events(ofRollout: 1)
        #expect(steps.map(\.kind) == [.rolloutStarted, .agentStep, .rolloutEnded])
        #expect(steps[1].agent == "a")
        #expect(sameInstant(steps[1].time, date(1_764_000_101)))
        let ring = try reopened.ringHistory(limit: 10)
        #expect(ring.count == 1)
        #expect(ring.first?.members == ["sampler-0:4317", "sampler-1:4317"])
        #expect(ring.first?.reason == "sampler-1 joined")
        #expect(ring.first.map { abs(($0.convergenceSeconds ?? 0) - 4.5) < 0.001 } == true)
    }

    @Test(arguments: StoreFixture.Backend.allCases)
    func agentsAuditSecurityRecordsAndPackagesKeepTheirRules(_ backend: StoreFixture.Backend) throws {
        let store = try StoreFixture(backend).open()
        // Agents: a later record of the same agent replaces the earlier one, also within one batch.
        try store.recordAgents([agent("b", seen: 1_764_000_000), agent("a", seen: 1_764_000_001)])
        try store.recordAgents([
            agent("a", seen: 1_764_000_002, state: "applying"), agent("a", seen: 1_764_000_003, state: "failed"),
        ])
        let agents = try store.agents()
        #expect(agents.map(\.instanceUID) == ["a", "b"])
        #expect(agents.first?.configState == "failed")
        #expect(agents.first.map { sameInstant($0.lastSeen, date(1_764_000_003)) } == true)
        #expect(agents.last == agent("b", seen: 1_764_000_000))

        // Audit: newest first, limited.
        for n in 1...5 {
            try store.appendAudit(
                AuditEntry(
                    time: date(1_764_000_000 + Double(n)),
                    actor: "ci",
                    action: "apply",
                    detail: "\(n)",
                    remote: "::1"
                )
            )
        }
        #expect(try store.audit(limit: 3).map(\.detail) == ["5", "4", "3"])

        // Security records: the same kind and id replaces.
        let revoked = RevocationRecord(
            instanceUID: "u1",
            revokedAt: date(1_764_000_000),
            revokedBy: "ops",
            reason: "lost"
        )
        try store.saveSecurityRecords([.revocation(revoked)])
        var again = revoked
        again.reason = "stolen"
        try store.saveSecurityRecords([.revocation(again)])
        #expect(try store.securityRecords() == [.revocation(again)])

        // Packages: one record per name and version, listed by name then upload time.
        func package(_ name: String, _ version: String, at seconds: Double) -> PackageRecord {
            PackageRecord(
                name: name,
                version: version,
                kind: .topLevel,
                size: 10,
                sha256: "\(name)-\(version)",
                signature: "sig",
                uploader: "ci",
                uploadedAt: date(seconds)
            )
        }
        try store.insertPackage(package("otelcol-contrib", "0.152.0", at: 1_764_000_002))
        try store.insertPackage(package("otelcol-contrib", "0.150.0", at: 1_764_000_001))
        try store.insertPackage(package("addon", "1.0.0", at: 1_764_000_003))
        #expect(throws: StoreError.self) { try store.insertPackage(package("addon", "1.0.0", at: 1_764_000_004)) }
        #expect(try store.packages().map(\.version) == ["1.0.0", "0.150.0", "0.152.0"])
        try store.deletePackage(name: "otelcol-contrib", version: "0.150.0")
        try store.deletePackage(name: "nothing", version: "0")
        #expect(try store.packages().map(\.version) == ["1.0.0", "0.152.0"])
    }

    /// Several writers at once (threads here; replicas with PostgreSQL): numbers stay unique and consecutive.
    @Test(arguments: StoreFixture.Backend.allCases)
    func concurrentAppendsGetConsecutiveNumbers(_ backend: StoreFixture.Backend) throws {
        let fixture = try StoreFixture(backend)
        let first = try fixture.open()
        // PostgreSQL: a second store stands for a second policyd; SQLite allows one process per directory.
        let second = backend == .postgres ? try fixture.open() : first
        let numbers = NIOLockedValueBox<[Int]>([])
        let failures = NIOLockedValueBox<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            let store = worker.isMultiple(of: 2) ? first : second
            for n in 0..<5 {
                do {
                    let version = try store.appendVersion(draft(worker * 10 + n))
                    numbers.withLockedValue { $0.append(version.number) }
                } catch {
                    failures.withLockedValue { $0.append("\(error)") }
                }
            }
        }
        #expect(failures.withLockedValue { $0 } == [])
        #expect(numbers.withLockedValue { $0.sorted() } == Array(1...40))
        #expect(try first.versions(limit: 100).count == 40)
    }
}

/// What only the PostgreSQL store has: URLs, TLS, several policyd on one database, a restarting server.
@Suite struct PostgresStoreTests {
    /// The SHA-256 of each shipped PostgreSQL migration's statements, pinned when it shipped: a migration is
    /// never edited once a database may have applied it (a change is a new migration). A new migration is
    /// pinned here when it ships; the failure message gives its digest.
    static let shippedMigrations: [String: String] = [
        "v1-initial": "b0900bd9fce0132dd4e0324ed24532959d6f413c0f51d320b498b94309b2c196",
        "v2-replicas": "33c1f8cf8ae0c4255b87755152efcaafe6a3e841303eb20aaf44f9fc1be4d9d7",
        "v3-shared-packages": "592b5e8ecf3037f77a0f400b398c1e7afd2fe0d7a9a18478690a7b2f79c6a64a",
        "v4-view-order": "49103d0833cfe0a2aad7f072d3cf1fd655b3b3521acc677f937726284843c97f",
        "v5-agent-record-order": "20b43f73f8f7450c942763e5a4d464a82541b86dd2ac88ba7fa1d10fe9af59c2",
        "v6-state-rows": "1a0f1f7794f17c5004d5918a381e2d9aefb52ff067bd47937ba485b22ec53998",
    ]

    @Test func shippedMigrationsAreNeverEdited() {
        for (name, statements) in PostgresStore.migrations {
            let digest = SHA256.hash(data: Data(statements.joined(separator: "\n;\n").utf8))
                .map { String(format: "%02x", $0) }.joined()
            guard let pinned = Self.shippedMigrations[name] else {
                Issue.record("migration \(name) is not pinned: add \"\(name)\": \"\(digest)\" when it ships")
                continue
            }
            #expect(pinned == digest, "migration \(name) was edited after it shipped: write a new migration instead")
        }
        let names = Set(PostgresStore.migrations.map(\.name))
        #expect(Self.shippedMigrations.keys.allSatisfy(names.contains), "a shipped migration was removed")
    }

    @Test func urlsAreReadAsLibpqReadsThemAndMistakesAreNamed() throws {
        let full = try PostgresStoreConfiguration(
            url: "postgresql://tail%40plane:p%3Ass@db.example:6543/tail?sslmode=verify-full&sslrootcert=/ca.pem"
                + "&connect_timeout=3&pool_size=8",
            environment: [:]
        )
        #expect(full.username == "tail@plane")
        #expect(full.password == "p:ss")
        #expect(full.host == "db.example")
        #expect(full.port == 6543)
        #expect(full.database == "tail")
        #expect(full.tlsMode == .verifyFull)
        #expect(full.rootCertificatePath == "/ca.pem")
        #expect(full.connectTimeoutSeconds == 3)
        #expect(full.poolSize == 8)
        let defaults = try PostgresStoreConfiguration(url: "postgres://u@[::1]/d", environment: ["PGPASSWORD": "env"])
        #expect(defaults.host == "::1")
        #expect(defaults.port == 5432)
        #expect(defaults.password == "env")
        #expect(defaults.tlsMode == .prefer)
        #expect(defaults.poolSize == 4)

        func refusal(_ url: String) -> String {
            do {
                _ = try PostgresStoreConfiguration(url: url, environment: [:])
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal("mysql://u@h/d").contains("expected postgres://"))
        #expect(refusal("postgres://h/d").contains("no user"))
        #expect(refusal("postgres://u@h").contains("no database"))
        #expect(refusal("postgres://u@h/d?sslmode=always").contains("verify-full"))
        #expect(refusal("postgres://u@h/d?pool_size=0").contains("pool_size"))
        #expect(refusal("postgres://u@h/d?sslcert=/c.pem").contains("go together"))
        #expect(refusal("postgres://u@h/d?search_path=x").contains("unknown parameter search_path"))
        // A password never shows in an error.
        #expect(!refusal("postgres://u:secret@h/d?sslmode=x").contains("secret"))
        #expect(PostgresStoreConfiguration.redacted("postgres://u:secret@h/d") == "postgres://u:xxxxx@h/d")
    }

    @Test func tlsIsVerifiedAgainstTheGivenCAAndHostAndAWrongCAIsRefused() throws {
        let server = try PostgresTestServer.shared.get()
        let database = try server.makeDatabase()
        let name = String(database.split(separator: "/").last!.split(separator: "?").first!)
        let caFile = server.directory.appendingPathComponent("ca-\(UUID().uuidString).pem")
        try Data(server.certificates.caPEM.utf8).write(to: caFile)
        let verified = try PostgresStore(
            configuration: try PostgresStoreConfiguration(
                url: server.url(database: name, parameters: "sslmode=verify-full&sslrootcert=\(caFile.path)")
            )
        )
        _ = try verified.appendVersion(draft(1))
        #expect(try verified.version(1)?.contentHash == "hash-1")

        let other = try ServerCertificates(directory: temporaryDirectory(), name: "other")
        let otherCA = server.directory.appendingPathComponent("other-\(UUID().uuidString).pem")
        try Data(other.caPEM.utf8).write(to: otherCA)
        let refused = #expect(throws: StoreError.self) {
            _ = try PostgresStore(
                configuration: try PostgresStoreConfiguration(
                    url: server.url(database: name, parameters: "sslmode=verify-full&sslrootcert=\(otherCA.path)")
                )
            )
        }
        #expect(refused?.description.contains("cannot connect to the database") == true)
    }

    @Test func aWrongPasswordAndAnUnreachableServerAreNamedWithoutThePassword() throws {
        let server = try PostgresTestServer.shared.get()
        let wrong = #expect(throws: StoreError.self) {
            _ = try PostgresStore(
                configuration: try PostgresStoreConfiguration(
                    url: server.url(database: "postgres", password: "not-the-password")
                )
            )
        }
        #expect(wrong?.description.contains("password authentication failed") == true)
        #expect(wrong?.description.contains("not-the-password") == false)
        let unreachable = #expect(throws: StoreError.self) {
            _ = try PostgresStore(
                configuration: try PostgresStoreConfiguration(
                    url: "postgres://u:p@127.0.0.1:\(CrashTests.freePort())/d?sslmode=disable&connect_timeout=2"
                )
            )
        }
        #expect(unreachable?.description.contains("127.0.0.1") == true)
    }

    @Test func aDatabaseFromANewerPolicydIsRefusedAndNulCharactersAreNamed() throws {
        let server = try PostgresTestServer.shared.get()
        let url = try server.makeDatabase()
        let store = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        var bad = draft(1)
        bad.message = "a\u{0}b"
        let nul = #expect(throws: StoreError.self) { _ = try store.appendVersion(bad) }
        #expect(nul?.description.contains("message contains a NUL character") == true)
        #expect(try store.versions(limit: 10).isEmpty)
        // Nothing half-written: the next version is still 1.
        #expect(try store.appendVersion(draft(1)).number == 1)

        let name = String(url.split(separator: "/").last!.split(separator: "?").first!)
        try server.psql(
            "INSERT INTO tailplane_migrations (name, applied_at) VALUES ('v99-future', now())",
            database: name
        )
        let newer = #expect(throws: StoreError.self) {
            _ = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        }
        #expect(newer?.description.contains("v99-future") == true)
        #expect(newer?.description.contains("newer policyd") == true)
    }

    /// The lease moves only when it expired or was given up, its epoch grows with every holder, and a leader
    /// that lost it (paused, partitioned) cannot write any more: the database refuses its steps, versions and
    /// outcomes (fencing). A replica that follows writes none of them either.
    @Test func theLeaseFencesADeposedLeader() throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let a = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let b = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        // Both follow at first: leader-only writes are refused.
        a.fence(replica: "a", epoch: nil)
        b.fence(replica: "b", epoch: nil)
        let following = #expect(throws: StoreError.self) { _ = try b.appendVersion(draft(1)) }
        #expect(following?.description.contains("does not lead") == true)

        let first = try a.acquireOrRenewLease(replica: "a", epoch: nil, leaseSeconds: 1, api: "http://a")
        #expect(first == LeaseState(holder: "a", epoch: 1, holderAPI: "http://a", held: true))
        a.fence(replica: "a", epoch: 1)
        // Held and fresh: b cannot take it, and learns who leads.
        let refused = try b.acquireOrRenewLease(replica: "b", epoch: nil, leaseSeconds: 1, api: "http://b")
        #expect(refused == LeaseState(holder: "a", epoch: 1, holderAPI: "http://a", held: false))
        // A second process under a's name, without a's epoch, does not lead with it.
        #expect(try b.acquireOrRenewLease(replica: "a", epoch: nil, leaseSeconds: 1, api: "http://b").held == false)
        #expect(try a.acquireOrRenewLease(replica: "a", epoch: 1, leaseSeconds: 1, api: "http://a").held)
        try a.saveControlState(ControlState(now: date(1_764_000_000)), events: [])
        #expect(try a.appendVersion(draft(1)).number == 1)

        // a stops renewing (paused); after the lease b takes over with a higher epoch.
        Thread.sleep(forTimeInterval: 1.3)
        let taken = try b.acquireOrRenewLease(replica: "b", epoch: nil, leaseSeconds: 1, api: "http://b")
        #expect(taken == LeaseState(holder: "b", epoch: 2, holderAPI: "http://b", held: true))
        b.fence(replica: "b", epoch: 2)
        var state = ControlState(now: date(1_764_000_001))
        state.current = 7
        let fenced = #expect(throws: StoreError.self) { try a.saveControlState(state, events: []) }
        #expect(fenced?.description.contains("fenced") == true)
        #expect(throws: StoreError.self) { _ = try a.appendVersion(draft(2)) }
        #expect(throws: StoreError.self) { try a.setOutcome(of: 1, .superseded, reason: nil) }
        #expect(try b.version(1)?.outcome == .pending)
        #expect(try b.versions(limit: 10).count == 1)
        #expect(try b.loadControlState()?.current == nil)
        try b.saveControlState(state, events: [])
        #expect(try a.loadControlState()?.current == 7)
        // a's renewal with its old epoch does not take the lease back.
        #expect(try a.acquireOrRenewLease(replica: "a", epoch: 1, leaseSeconds: 1, api: "http://a").held == false)

        // Followers see the saved state once, then only when it is saved again.
        let saved = try #require(try a.controlState(after: nil))
        #expect(saved.state.current == 7)
        #expect(try a.controlState(after: saved.generation) == nil)
        try b.saveControlState(state, events: [])
        #expect(try a.controlState(after: saved.generation)?.generation == saved.generation + 1)

        // A release hands over at once, with the next epoch; the releaser writes nothing more.
        try b.releaseLease(replica: "b", epoch: 2)
        #expect(throws: StoreError.self) { try b.saveControlState(state, events: []) }
        #expect(try a.acquireOrRenewLease(replica: "a", epoch: nil, leaseSeconds: 60, api: "http://a").epoch == 3)
    }

    /// Replicas publish the agents connected to them; an agent that moved stays with its new replica when
    /// the old one withdraws it; reads after a time return only what was written since.
    @Test func publishedViewsFollowAgentsBetweenReplicas() throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let store = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        func view(_ uid: String, on replica: String, version: Int = 1) -> PublishedView {
            PublishedView(
                view: AgentView(
                    uid: uid,
                    tier: .sampling,
                    connected: true,
                    lastSeen: date(1_764_000_000),
                    ringEntry: "\(uid):4317",
                    progress: .applied,
                    healthy: true
                ),
                assignment: Assignment(version: version, samplerCount: 2),
                replica: replica
            )
        }
        func withdrawn(_ uid: String, from replica: String) -> PublishedView {
            var last = view(uid, on: replica)
            last.view.connected = false
            return last
        }
        try store.heartbeat(replica: "a", api: "http://a")
        try store.publishViews(replica: "a", changed: [view("x", on: "a"), view("y", on: "a")], gone: [])
        let all = try store.publishedViews(after: nil)
        #expect(Set(all.views.map(\.uid)) == ["x", "y"])
        #expect(all.views.allSatisfy { $0.view?.replica == "a" })
        let since = all.cursor
        #expect(try store.publishedViews(after: since).views.isEmpty)

        // x moves to b; then a withdraws x and y: x stays with b, connected; y is disconnected since its last
        // report on a (a leader that takes over later counts the ring's grace period from then).
        try store.publishViews(replica: "b", changed: [view("x", on: "b", version: 2)], gone: [])
        try store.publishViews(replica: "a", changed: [], gone: [withdrawn("x", from: "a"), withdrawn("y", from: "a")])
        let after = Dictionary(
            uniqueKeysWithValues: try store.publishedViews(after: since).views.map { ($0.uid, $0.view) }
        )
        #expect(after["x"]??.replica == "b")
        #expect(after["x"]??.view.connected == true)
        #expect(after["x"]??.assignment?.version == 2)
        #expect(after["y"]??.view.connected == false)
        #expect(after["y"]??.view.lastSeen == date(1_764_000_000))
        #expect(
            try store.publishedViews(after: nil).views.contains { $0.uid == "y" && $0.view?.view.connected == false }
        )
        #expect(try store.liveReplicas(maxAgeSeconds: 10) == ["a"])

        // A write that began before a read and commits after it (a large publish under load) carries an older
        // time than views read already; it is read next time all the same.
        let slow = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let written = DispatchSemaphore(value: 0)
        let commit = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        let late = try StoreJSON.encode(view("late", on: "c"))
        DispatchQueue.global().async {
            try? slow.pool.withConnection("a slow publish") { connection in
                _ = try connection.query("BEGIN", logger: Logger(label: "test")).wait()
                _ = try connection.query(
                    """
                    INSERT INTO agent_views (uid, replica, view, written_at, xid)
                    VALUES ('late', 'c', \(late), now(), pg_current_xact_id()::text::bigint)
                    """,
                    logger: Logger(label: "test")
                ).wait()
                written.signal()
                commit.wait()
                _ = try connection.query("COMMIT", logger: Logger(label: "test")).wait()
            }
            finished.signal()
        }
        written.wait()
        let during = try store.publishedViews(after: since)
        #expect(!during.views.contains { $0.uid == "late" }, "not committed yet")
        try store.publishViews(replica: "b", changed: [view("z", on: "b")], gone: [])
        let fast = try store.publishedViews(after: during.cursor)
        #expect(fast.views.map(\.uid).contains("z"))
        commit.signal()
        finished.wait()
        let caughtUp = try store.publishedViews(after: fast.cursor)
        #expect(caughtUp.views.contains { $0.uid == "late" && $0.view?.replica == "c" }, "the late commit is read")

        // Pruning, an hour on: the withdrawn view (y), one withdrawn the old way (NULL, w), the one of a replica
        // that never said it was alive (late, on c) and the one of a replica silent for two hours (v, on a) go;
        // agents connected to a live replica stay however old their view is (x, z on b).
        try store.publishViews(replica: "a", changed: [view("v", on: "a"), view("w", on: "a")], gone: [])
        try store.heartbeat(replica: "b", api: "http://b")
        try store.pool.withConnection("ageing views") { connection in
            let logger = Logger(label: "test")
            _ = try connection.query("UPDATE agent_views SET view = NULL WHERE uid = 'w'", logger: logger).wait()
            _ = try connection.query(
                "UPDATE agent_views SET written_at = now() - interval '2 hours'",
                logger: logger
            ).wait()
            _ = try connection.query(
                "UPDATE replicas SET heartbeat_at = now() - interval '2 hours' WHERE name = 'a'",
                logger: logger
            ).wait()
        }
        try store.pruneViews(olderThanSeconds: 3600)
        #expect(Set(try store.publishedViews(after: nil).views.map(\.uid)) == ["x", "z"])
    }

    /// Agent records are read by other replicas as they change: all at first, then only those written since;
    /// an older record of an agent that moved does not replace the newer one.
    @Test func agentRecordsAreReadAsTheyChange() throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let a = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let b = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        #expect(try b.agentRecords(after: nil).records.isEmpty)
        try a.recordAgents([agent("x", seen: 1_764_000_000), agent("y", seen: 1_764_000_000)])
        let all = try b.agentRecords(after: nil)
        #expect(Set(all.records.map(\.instanceUID)) == ["x", "y"])
        #expect(try b.agentRecords(after: all.cursor).records.isEmpty, "nothing written since")

        try a.recordAgents([agent("y", seen: 1_764_000_005, state: "pending")])
        let changed = try b.agentRecords(after: all.cursor)
        #expect(changed.records.map(\.instanceUID) == ["y"])
        #expect(changed.records.first?.configState == "pending")

        // y moved to b, which recorded it later; a's stale record of it changes nothing and is not read again.
        try b.recordAgents([agent("y", seen: 1_764_000_010, state: "applied")])
        let moved = try a.agentRecords(after: changed.cursor)
        try a.recordAgents([agent("y", seen: 1_764_000_006, state: "failed")])
        let stale = try a.agentRecords(after: moved.cursor)
        #expect(moved.records.map(\.configState) == ["applied"])
        #expect(stale.records.isEmpty)
        #expect(try a.agents().first { $0.instanceUID == "y" }?.configState == "applied")
    }

    /// LISTEN/NOTIFY: a saved state and published views reach a listening replica as they commit, with the
    /// sender's time; a listener says when it (re)connected.
    @Test func savesAndPublishedViewsAreNotified() async throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let follower = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let leader = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        let heard = NIOLockedValueBox<[(ReplicaNews, Double?)]>([])
        follower.listen { news, sentAt in heard.withLockedValue { $0.append((news, sentAt)) } }
        #expect(await eventually(timeout: 10) { heard.withLockedValue { $0.contains { $0.0 == .listening } } })
        try leader.saveControlState(ControlState(now: date(1_764_000_000)), events: [])
        let nobody = PublishedView(
            view: AgentView(
                uid: "nobody",
                tier: .sampling,
                connected: false,
                lastSeen: date(1_764_000_000),
                ringEntry: nil,
                progress: .applied,
                healthy: true
            ),
            assignment: nil,
            replica: "l"
        )
        try leader.publishViews(replica: "l", changed: [], gone: [nobody])
        #expect(
            await eventually(timeout: 10) {
                let news = heard.withLockedValue { $0.map(\.0) }
                return news.contains(.stateSaved) && news.contains(.viewsPublished)
            }
        )
        let sent = heard.withLockedValue { $0.first { $0.0 == .stateSaved }?.1 }
        #expect(sent.map { abs($0 - Date().timeIntervalSince1970) < 60 } == true)
    }

    /// The database restarts under a running store: calls fail while it is down, with the reason, and work
    /// again once it is back, on new connections; nothing committed is lost.
    @Test func aRestartedDatabaseIsRiddenOut() throws {
        let server = try PostgresTestServer()
        defer { server.remove() }
        let url = try server.makeDatabase()
        let store = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
        _ = try store.appendVersion(draft(1))
        server.stop()
        let down = #expect(throws: StoreError.self) { _ = try store.versions(limit: 1) }
        #expect(down?.description.contains("reading versions") == true)
        try server.start()
        // The pooled connections died with the server: the pool drops them and connects anew.
        #expect(try store.version(1)?.contentHash == "hash-1")
        #expect(try store.appendVersion(draft(2)).number == 2)
    }

    /// Replicas share package contents through the database: a file pushed through one downloads from another,
    /// which copies it once, checks its hash and keeps it. Every replica publishes the public key the first
    /// push signed with and opens download tokens with one key; the private key stays on each replica's disk,
    /// and a replica with another key cannot push.
    @Test func packageContentsAndKeysAreSharedBetweenReplicas() async throws {
        let server = try PostgresTestServer.shared.get()
        let url = try server.makeDatabase()
        let databaseName = String(url.split(separator: "/").last!.split(separator: "?").first!)
        let stores = try (0..<4).map { _ in try PostgresStore(configuration: try PostgresStoreConfiguration(url: url)) }
        let directories = (0..<4).map { _ in temporaryDirectory().appendingPathComponent("packages") }
        defer {
            for directory in directories {
                try? FileManager.default.removeItem(at: directory.deletingLastPathComponent())
            }
        }
        let a = try PackageRepository(directory: directories[0], store: stores[0])
        let b = try PackageRepository(directory: directories[1], store: stores[1])
        // b was given a's key file (what an operator does for every replica that may lead); c has its own.
        let keyOfA = directories[0].appendingPathComponent("signing.key")
        let sameKey = try PackageRepository(directory: directories[2], store: stores[2], signingKeyFile: keyOfA)
        #expect(b.downloadToken(sha256: "ab") == a.downloadToken(sha256: "ab"))

        // 2.5 chunks, and a small one.
        let big = (0..<2_621_440).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        func body(_ bytes: [UInt8]) -> AsyncStream<ByteBuffer> {
            AsyncStream { continuation in
                for start in stride(from: 0, to: bytes.count, by: 300_000) {
                    continuation.yield(ByteBuffer(bytes: bytes[start..<min(bytes.count, start + 300_000)]))
                }
                continuation.finish()
            }
        }
        func push(_ repository: PackageRepository, _ version: String, _ bytes: [UInt8]) async throws -> PackageRecord {
            try await repository.ingest(
                name: "otelcol-contrib",
                version: version,
                kind: .topLevel,
                uploader: "t",
                now: Date(),
                body: body(bytes)
            ).record
        }
        let first = try await push(a, "0.150.0", big)
        // The first push decided the fleet's key: every replica publishes it; one with another key cannot push
        // (agents that pinned the key would refuse its packages), one with the same key can.
        #expect(b.publicKeyPEM == a.publicKeyPEM)
        #expect(!b.signsWithTheFleetKey && a.signsWithTheFleetKey && sameKey.signsWithTheFleetKey)
        let refused = await #expect(throws: ControlPlaneError.self) {
            _ = try await push(b, "0.151.0", Array("no".utf8))
        }
        #expect(refused?.message.contains("--package-signing-key") == true)
        let small = try await push(sameKey, "0.151.0", Array("tiny".utf8))
        #expect(try stores[0].packages().count == 2)

        // Twenty downloads at once on a replica that lacks the file: one copy, the same bytes, nothing left over.
        #expect(!FileManager.default.fileExists(atPath: b.file(sha256: first.sha256).path))
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<20 { group.addTask { try await b.ensureLocal(sha256: first.sha256) } }
            for try await present in group { #expect(present) }
        }
        #expect(b.copiesStarted.withLockedValue { $0 } == 1)
        #expect(FileManager.default.contents(atPath: b.file(sha256: first.sha256).path) == Data(big))
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directories[1].appendingPathComponent("incoming").path)
                .isEmpty
        )
        #expect(try await !b.ensureLocal(sha256: String(repeating: "0", count: 64)), "unknown content is no file")

        // A deleted package stops downloading on every replica: b drops the copy it made, a new replica finds
        // no content to copy.
        #expect(try await b.ensureLocal(sha256: small.sha256))
        try a.remove(small)
        try await Task.sleep(for: .seconds(2.2))
        #expect(try await !b.ensureLocal(sha256: small.sha256))
        #expect(!FileManager.default.fileExists(atPath: b.file(sha256: small.sha256).path))
        try server.psql("DELETE FROM packages", database: databaseName)
        try await Task.sleep(for: .seconds(2.2))
        #expect(try await !b.ensureLocal(sha256: first.sha256), "no record names it any more")
        try stores[0].insertPackage(first)

        // Content that does not hash to its name (one byte changed, same length) is never used, and a failed
        // copy is not read again at once for the next agent.
        try server.psql(
            "UPDATE package_chunks SET data = set_byte(data, 10, (get_byte(data, 10) + 1) % 256) WHERE sha256 = '\(first.sha256)' AND seq = 1",
            database: databaseName
        )
        let d = try PackageRepository(directory: directories[3], store: stores[3])
        await #expect(throws: StoreError.self) { _ = try await d.ensureLocal(sha256: first.sha256) }
        await #expect(throws: StoreError.self) { _ = try await d.ensureLocal(sha256: first.sha256) }
        #expect(d.copiesStarted.withLockedValue { $0 } == 1)
        #expect(!FileManager.default.fileExists(atPath: d.file(sha256: first.sha256).path))
    }
}
