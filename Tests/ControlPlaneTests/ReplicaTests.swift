import AsyncHTTPClient
import ControlPlane
import Crypto
import FleetSimulator
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// Several policyd on one PostgreSQL database: the real binary three times, a simulated fleet spread over
/// them, the leader killed in the middle of a rollout.
@Suite(.serialized) struct ReplicaTests {
    struct Replica {
        let name: String
        let opampPort: Int
        let apiPort: Int
        let directory: URL
        var process: Process
    }

    func start(_ name: String, database: String, opampPort: Int, apiPort: Int, directory: URL) throws -> Process {
        let process = Process()
        process.executableURL = CrashTests.binary
        process.arguments = [
            "serve", "--database", database, "--replica-name", name, "--data-dir", directory.path,
            "--bind", "127.0.0.1", "--opamp-port", String(opampPort), "--api-port", String(apiPort),
            "--log-level", ProcessInfo.processInfo.environment["TAILPLANE_TEST_LOG_LEVEL"] ?? "warning",
        ]
        process.standardOutput = FileHandle.nullDevice
        if !FileManager.default.fileExists(atPath: directory.path + ".log") {
            _ = FileManager.default.createFile(atPath: directory.path + ".log", contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: directory.path + ".log"))
        log.seekToEndOfFile()
        process.standardError = log
        try process.run()
        return process
    }

    /// `count` policyd on `database`, each with its own ports and data directory.
    func startReplicas(_ count: Int, database: String) throws -> [Replica] {
        try self.startReplicas(databases: Array(repeating: database, count: count))
    }

    /// One policyd per database URL (the same database through different routes), each with its own ports and
    /// data directory.
    func startReplicas(databases: [String]) throws -> [Replica] {
        try databases.enumerated().map { index, database in
            let directory = temporaryDirectory()
            let (opamp, api) = (CrashTests.freePort(), CrashTests.freePort())
            let process = try self.start(
                "replica-\(index)",
                database: database,
                opampPort: opamp,
                apiPort: api,
                directory: directory
            )
            return Replica(
                name: "replica-\(index)",
                opampPort: opamp,
                apiPort: api,
                directory: directory,
                process: process
            )
        }
    }

    /// Kills every replica still running and waits for it.
    /// Stops every replica and removes its data directory and log (kept with `TAILPLANE_TEST_KEEP_LOGS=1`, to
    /// read what the replicas said about a failure).
    static func killAll(_ replicas: [Replica]) {
        for replica in replicas where replica.process.isRunning {
            kill(replica.process.processIdentifier, SIGKILL)
            replica.process.waitUntilExit()
        }
        for replica in replicas {
            try? FileManager.default.removeItem(at: replica.directory)
            if ProcessInfo.processInfo.environment["TAILPLANE_TEST_KEEP_LOGS"] == nil {
                try? FileManager.default.removeItem(atPath: replica.directory.path + ".log")
            }
        }
    }

    /// Whether the replica's `/metrics` says it leads.
    func leads(_ apiPort: Int) async -> Bool {
        await self.gauge(apiPort, "tailplane_leader") == 1
    }

    /// Rollout `id` is current and past its first stage, as `apiPort` sees it.
    func pastFirstStage(_ id: Int, _ apiPort: Int) async -> Bool {
        await eventually(timeout: 30) {
            let rollout = await CrashTests().get(apiPort, "/v1/rollouts/current")?["rollout"] as? [String: Any]
            return rollout?["id"] as? Int == id && (rollout?["stageIndex"] as? Int ?? 0) >= 1
        }
    }

    /// Two load balancers and four samplers, spread over the replicas (after a failed connection an agent
    /// tries the next replica, as a load balancer in front of them would), once every replica sees the whole
    /// fleet: its own agents and the others'.
    func startFleet(on replicas: [Replica]) async -> (FleetRunner, Task<Void, any Error>) {
        let crash = CrashTests()
        var options = crash.fleetOptions(opampPort: replicas[0].opampPort)
        options.agents = 6
        options.loadBalancerShare = 1.0 / 3.0
        options.ports = replicas.map(\.opampPort)
        let fleet = FleetRunner(options: options)
        let task = Task { try await fleet.run() }
        for replica in replicas {
            #expect(
                await eventually {
                    let tiers = await crash.get(replica.apiPort, "/v1/fleet")?["agentsByTier"] as? [String: Int]
                    return tiers?["sampling"] == 4 && tiers?["lb"] == 2
                },
                "\(replica.name) sees the fleet"
            )
        }
        return (fleet, task)
    }

    /// The status `/readyz` answers with (nil: no answer in 5 s).
    func readiness(_ apiPort: Int) async -> Int? {
        let request = HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/readyz")
        return (try? await HTTPClient.shared.execute(request, timeout: .seconds(5))).map { Int($0.status.code) }
    }

    /// The value of a gauge the replica's `/metrics` shows.
    func gauge(_ apiPort: Int, _ name: String) async -> Double? {
        let request = HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/metrics")
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(5)),
            let body = try? await response.body.collect(upTo: 4 << 20)
        else { return nil }
        let prefix = name + " "
        return String(buffer: body).split(separator: "\n").first { $0.hasPrefix(prefix) }
            .flatMap { Double($0.dropFirst(prefix.count)) }
    }

    /// The lease epoch the replica's `/metrics` shows.
    func epoch(_ apiPort: Int) async -> Int? {
        await self.gauge(apiPort, "tailplane_leader_epoch").map { Int($0) }
    }

    /// The replicas that say they lead.
    func leaders(_ replicas: [Replica]) async -> [String] {
        var names: [String] = []
        for replica in replicas where replica.process.isRunning {
            if await self.leads(replica.apiPort) { names.append(replica.name) }
        }
        return names
    }

    @Test func threeReplicasShareARolloutAndALeaderKilledMidStageIsReplaced() async throws {
        // Over TLS, the server's certificate checked against its CA and its address (verify-full).
        let database = try PostgresTestServer.shared.get().makeVerifiedDatabase()
        let replicas = try self.startReplicas(3, database: database)
        defer { Self.killAll(replicas) }
        let crash = CrashTests()
        // Exactly one leads.
        let started = replicas
        #expect(await eventually { await self.leaders(started).count == 1 })
        let first = try #require(await self.leaders(started).first)
        let leader = try #require(replicas.first { $0.name == first })
        let follower = try #require(replicas.first { $0.name != first })

        let (fleet, fleetTask) = await self.startFleet(on: replicas)
        defer {
            fleetTask.cancel()
            Task { await fleet.shutdown() }
        }

        // Every replica sees the three alive (their heartbeats).
        for replica in replicas {
            #expect(
                await eventually { await self.gauge(replica.apiPort, "tailplane_replicas_live") == 3 },
                "\(replica.name) sees three replicas"
            )
        }

        // A follower does not pass on what another replica forwarded (leadership moving): 503, nothing stored.
        var bounced = HTTPClientRequest(url: "http://127.0.0.1:\(follower.apiPort)/v1/apply")
        bounced.method = .POST
        bounced.headers.add(name: "Tailplane-Forwarded-By", value: "replica-x")
        bounced.headers.add(name: "Content-Type", value: "application/json")
        bounced.body = .bytes(ByteBuffer(bytes: Array(try JSONEncoder().encode(try exampleApply()))))
        let refusal = try await HTTPClient.shared.execute(bounced, timeout: .seconds(10))
        #expect(refusal.status == .serviceUnavailable)
        #expect(refusal.headers.first(name: "Retry-After") == "2")
        #expect(await crash.get(follower.apiPort, "/v1/versions/1") == nil)

        // An apply sent to a follower is forwarded to the leader.
        #expect(try await crash.applySlowly(try exampleApply { $0 }, apiPort: follower.apiPort) == .created)
        #expect(await crash.firstStagePassed(follower.apiPort))

        // kill -9 of the leader in the middle of the rollout.
        kill(leader.process.processIdentifier, SIGKILL)
        leader.process.waitUntilExit()
        let killedAt = Date()
        let survivors = replicas.filter { $0.name != leader.name }
        #expect(await eventually(timeout: 60) { await self.leaders(survivors).count == 1 })
        let failover = Date().timeIntervalSince(killedAt)
        print("leader failover after kill -9: \(String(format: "%.1f", failover)) s")
        let next = try #require(await self.leaders(survivors).first)
        #expect(next != leader.name)
        // The dead one is no longer counted alive (10 s after its last heartbeat).
        for replica in survivors {
            #expect(
                await eventually(timeout: 30) { await self.gauge(replica.apiPort, "tailplane_replicas_live") == 2 },
                "\(replica.name) sees two replicas"
            )
        }

        // The rollout completes: every agent, including those that were on the dead replica, runs version 1.
        let api = try #require(survivors.first { $0.name == next }).apiPort
        #expect(await crash.firstRolloutSucceeded(api))
        #expect(
            await eventually(timeout: 60) {
                let fleet = await crash.get(api, "/v1/fleet")
                return fleet?["currentVersion"] as? Int == 1
                    && (fleet?["agentsByState"] as? [String: Int])?["applied"] == 6
            }
        )
        let agents = await crash.getArray(api, "/v1/agents")
        #expect(agents.count == 6)
        #expect(agents.allSatisfy { $0["runningVersion"] as? Int == 1 }, "no agent left on another version")
        // The ring holds every sampler again.
        let ring = await crash.get(api, "/v1/ring")?["current"] as? [String: Any]
        #expect((ring?["members"] as? [String])?.count == 4)

        // Revocations sent to a follower hold on every replica: each agent, wherever it is connected (every
        // survivor has some), is cut off and refused when it comes back.
        let last = try #require(survivors.first { $0.name != next })
        let uids = agents.compactMap { $0["instanceUID"] as? String }
        for uid in uids {
            var revoke = HTTPClientRequest(url: "http://127.0.0.1:\(last.apiPort)/v1/agents/\(uid)/revoke")
            revoke.method = .POST
            revoke.headers.add(name: "Content-Type", value: "application/json")
            revoke.body = .bytes(ByteBuffer(string: #"{"reason":"test"}"#))
            #expect(try await HTTPClient.shared.execute(revoke, timeout: .seconds(10)).status == .ok)
        }
        @Sendable func connectedAnywhere() async -> Int {
            var connected = Set<String>()
            for replica in survivors {
                for agent in await crash.getArray(replica.apiPort, "/v1/agents")
                where agent["connected"] as? Bool == true {
                    if let uid = agent["instanceUID"] as? String { connected.insert(uid) }
                }
            }
            return connected.count
        }
        #expect(await eventually(timeout: 30) { await connectedAnywhere() == 0 })
        try await Task.sleep(for: .seconds(3))
        #expect(await connectedAnywhere() == 0, "revoked agents stay out")

        // A graceful stop gives the lease up: the last follower takes over at once.
        let current = try #require(survivors.first { $0.name == next })
        current.process.terminate()
        current.process.waitUntilExit()
        #expect(current.process.terminationStatus == 0)
        #expect(await eventually(timeout: 30) { await self.leads(last.apiPort) })
    }

    /// The leader cut off from the database by the network (no error and no answer: a partition) is replaced
    /// within its lease; what it was asked to write meanwhile is refused, not stored, when the network heals,
    /// and the rollout completes. Then the new leader's connections go silent for good (the database failed
    /// over to another address): it gives them up, connects again, and the next rollout reaches its agents.
    @Test func aLeaderCutOffFromTheDatabaseIsReplacedAndWritesNothing() async throws {
        let server = try PostgresTestServer.shared.get()
        let database = try server.makeDatabase()
        // Each replica reaches the database through a relay of its own, which the test cuts.
        let proxies = try (0..<3).map { _ in try PartitionProxy(targetPort: server.port) }
        defer { proxies.forEach { $0.close() } }
        let replicas = try self.startReplicas(
            databases: proxies.map {
                database.replacingOccurrences(of: "@127.0.0.1:\(server.port)/", with: "@127.0.0.1:\($0.port)/")
            }
        )
        defer { Self.killAll(replicas) }
        let crash = CrashTests()
        #expect(await eventually { await self.leaders(replicas).count == 1 })
        let firstName = try #require(await self.leaders(replicas).first)
        let first = try #require(replicas.firstIndex { $0.name == firstName })

        let (fleet, fleetTask) = await self.startFleet(on: replicas)
        defer {
            fleetTask.cancel()
            Task { await fleet.shutdown() }
        }
        // Decisions after 6 s, so a drained sampler waits seconds, not half a minute.
        let quick: (String) -> String = { $0.replacingOccurrences(of: "decision_wait 30s", with: "decision_wait 6s") }
        #expect(
            try await crash.applySlowly(try exampleApply(transform: quick), apiPort: replicas[(first + 1) % 3].apiPort)
                == .created
        )
        #expect(await crash.firstStagePassed(replicas[first].apiPort))

        // The leader's network to the database goes silent in the middle of the stage.
        proxies[first].partition()
        let cutAt = Date()
        // The network comes back after 16 s whatever the checks below take (sooner than the 20 s after which
        // the cut-off replica gives up on what it sent): what the old leader had sent arrives, and is refused.
        let cutOff = proxies[first]
        let healing = Task {
            try await Task.sleep(for: .seconds(16))
            cutOff.heal()
        }
        // Asked at once, while it still believes it leads, to store a version.
        var lateApply = try exampleApply(message: "written while cut off")
        lateApply.sources.append(
            SourceText(path: "96-late.policy", text: "keep late when service == \"tailplane-late\"\n")
        )
        lateApply.supersede = true
        let lateBody = try JSONEncoder().encode(lateApply)
        let lateAPI = replicas[first].apiPort
        let lateAnswer = Task { () -> (status: HTTPResponseStatus, body: String)? in
            var post = HTTPClientRequest(url: "http://127.0.0.1:\(lateAPI)/v1/apply")
            post.method = .POST
            post.headers.add(name: "Content-Type", value: "application/json")
            post.body = .bytes(ByteBuffer(bytes: Array(lateBody)))
            guard let answer = try? await HTTPClient.shared.execute(post, timeout: .seconds(120)) else { return nil }
            return (answer.status, String(buffer: (try? await answer.body.collect(upTo: 1 << 20)) ?? ByteBuffer()))
        }
        let others = replicas.filter { $0.name != firstName }
        #expect(await eventually(timeout: 30) { await self.leaders(others).count == 1 })
        print(
            "a leader cut off from the database replaced after \(String(format: "%.1f", Date().timeIntervalSince(cutAt))) s"
        )
        let secondName = try #require(await self.leaders(others).first)
        let second = try #require(replicas.firstIndex { $0.name == secondName })
        // Not ready once its database has been silent for 10 s (a load balancer sends new agents elsewhere);
        // the others are.
        #expect(await eventually(timeout: 20) { await self.readiness(replicas[first].apiPort) == 503 })
        for replica in others { #expect(await self.readiness(replica.apiPort) == 200, "\(replica.name) ready") }
        try await healing.value
        let late = await lateAnswer.value
        print("the cut-off leader answered the apply: \(late.map { "\($0.status) \($0.body)" } ?? "nothing")")
        #expect(late != nil, "the cut-off leader answers the write")
        #expect(late?.status != .created, "the cut-off leader stored nothing")
        // Whether the database's fence refused it or the lease had lapsed before it got there, the answer says
        // nothing was done, which policyctl sends again.
        #expect(late?.status == .serviceUnavailable && late?.body.contains("no_leader") == true)
        #expect(await eventually(timeout: 30) { await self.leaders(replicas) == [secondName] })
        #expect(await eventually(timeout: 10) { await self.readiness(replicas[first].apiPort) == 200 })
        let api = replicas[second].apiPort
        #expect(await crash.firstRolloutSucceeded(api))
        #expect(await self.fleetSettled(replicas, version: 1))
        let versions = await crash.getArray(api, "/v1/versions")
        #expect(versions.count == 1, "versions: \(versions.map { $0["message"] ?? "" })")
        #expect(!versions.contains { $0["message"] as? String == "written while cut off" })

        // The new leader's connections go silent for good; new ones get through (the database moved).
        proxies[second].abandon()
        let movedAt = Date()
        let epochBefore = await self.epoch(replicas[second].apiPort) ?? 0
        // Exactly one leads after the lease: another replica, or (should it win the race once it connected
        // anew) the same one with a new epoch. The lapsed leader's /metrics says so even while its step waits.
        let settled = await eventually(timeout: 30) {
            let leading = await self.leaders(replicas)
            guard leading.count == 1 else { return false }
            if leading != [secondName] { return true }
            return await self.epoch(replicas[second].apiPort) ?? 0 > epochBefore
        }
        print(
            "after the database moved: \(await self.leaders(replicas)) lead(s) after \(String(format: "%.1f", Date().timeIntervalSince(movedAt))) s"
        )
        #expect(settled, "one replica leads once the leader's connections went silent")
        var next = try exampleApply(message: "after the database moved", transform: quick)
        next.sources.append(SourceText(path: "95-next.policy", text: "keep next when service == \"tailplane-next\"\n"))
        let through = replicas[(second + 1) % 3].apiPort
        #expect(try await crash.applySlowly(next, apiPort: through) == .created)
        #expect(await self.rolloutSucceeded(2, through))
        // Every agent, those on the replica whose connections went silent included, runs version 2.
        #expect(await self.fleetSettled(replicas, version: 2))
        #expect(await self.leaders(replicas).count == 1)
    }

    /// Rollout `id` has succeeded, as `apiPort` sees it.
    func rolloutSucceeded(_ id: Int, _ apiPort: Int, timeout: Double = 90) async -> Bool {
        let succeeded = await eventually(timeout: timeout) {
            let rollout = await CrashTests().get(apiPort, "/v1/rollouts/current")?["rollout"] as? [String: Any]
            return rollout?["id"] as? Int == id && rollout?["phase"] as? String == "succeeded"
        }
        if !succeeded, let seen = await CrashTests().get(apiPort, "/v1/rollouts/current") {
            print("rollout \(id) did not succeed on :\(apiPort); current: \(seen)")
        }
        return succeeded
    }

    /// Every replica shows all six agents connected, each once, on `version`.
    func fleetSettled(_ replicas: [Replica], version: Int) async -> Bool {
        let settled = await eventually(timeout: 60) {
            for replica in replicas {
                let agents = await CrashTests().getArray(replica.apiPort, "/v1/agents")
                let uids = Set(agents.compactMap { $0["instanceUID"] as? String })
                guard agents.count == 6, uids.count == 6,
                    agents.allSatisfy({ $0["connected"] as? Bool == true && $0["runningVersion"] as? Int == version })
                else { return false }
            }
            return true
        }
        if !settled {
            for replica in replicas {
                let seen = await CrashTests().getArray(replica.apiPort, "/v1/agents").map { agent in
                    "\(agent["hostName"] ?? "?") connected=\(agent["connected"] ?? "?") running=\(agent["runningVersion"] ?? "none")"
                }
                print("\(replica.name) sees, waiting for version \(version): \(seen)")
            }
        }
        return settled
    }

    /// A package pushed through a follower downloads from every replica; the database restarted under the
    /// running fleet is ridden out; a replica killed and restarted while its agents reconnect elsewhere
    /// rejoins; a rollout completes after each.
    @Test func packagesComeFromAnyReplicaAndTheFleetRidesOutRestartsOfTheDatabaseAndOfAReplica() async throws {
        let server = try PostgresTestServer()
        defer { server.remove() }
        let database = try server.makeDatabase()
        var replicas = try self.startReplicas(3, database: database)
        defer { Self.killAll(replicas) }
        let crash = CrashTests()
        let started = replicas
        let firstAPI = replicas[0].apiPort
        #expect(await eventually { await self.leaders(started).count == 1 })
        let leaderName = try #require(await self.leaders(started).first)
        let follower = try #require(replicas.first { $0.name != leaderName })

        // Pushed through a follower (forwarded to the leader); one signing key, whichever replica answers.
        var push = HTTPClientRequest(url: "http://127.0.0.1:\(follower.apiPort)/v1/packages/otelcol-contrib/0.152.0")
        push.method = .PUT
        let bytes = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7 >> 3) }
        push.body = .bytes(ByteBuffer(bytes: bytes))
        #expect(try await HTTPClient.shared.execute(push, timeout: .seconds(60)).status == .created)
        var keys = Set<String>()
        for replica in replicas {
            let answer = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: "http://127.0.0.1:\(replica.apiPort)/v1/packages/signing-key"),
                timeout: .seconds(5)
            )
            keys.insert(String(buffer: try await answer.body.collect(upTo: 4096)))
        }
        #expect(keys.count == 1, "every replica publishes the same signing key")

        var options = crash.fleetOptions(opampPort: replicas[0].opampPort)
        options.agents = 6
        options.loadBalancerShare = 1.0 / 3.0
        options.ports = replicas.map(\.opampPort)
        options.acceptsPackages = true
        options.packageSigningKeyPEM = keys.first
        options.collectorVersion = "0.152.0"
        let fleet = FleetRunner(options: options)
        let fleetTask = Task { try await fleet.run() }
        defer {
            fleetTask.cancel()
            Task { await fleet.shutdown() }
        }
        #expect(
            await eventually {
                (await crash.get(firstAPI, "/v1/fleet")?["agentsByTier"] as? [String: Int])?["sampling"] == 4
            }
        )

        // Version 1 pins the package: every agent downloads it from the replica it is connected to.
        // Decisions after 6 s, so a drained sampler waits seconds, not half a minute.
        let quick: (String) -> String = { $0.replacingOccurrences(of: "decision_wait 30s", with: "decision_wait 6s") }
        var first = try exampleApply(transform: quick)
        first.fleet +=
            "\npackages:\n  load_balancing: {otelcol-contrib: 0.152.0}\n  sampling: {otelcol-contrib: 0.152.0}\n"
        #expect(try await crash.applySlowly(first, apiPort: replicas[0].apiPort) == .created)
        #expect(await self.rolloutSucceeded(1, replicas[0].apiPort))
        #expect(
            await eventually(timeout: 60) {
                fleet.agents().allSatisfy { $0.installedPackages["otelcol-contrib"]?.version == "0.152.0" }
            }
        )
        #expect(await self.fleetSettled(replicas, version: 1))
        // Rendered for the four samplers of the whole fleet, not for those on the leader alone.
        let rendered = await crash.get(firstAPI, "/v1/versions/1")?["rendered"] as? [[String: Any]] ?? []
        let counts = rendered.filter { $0["tier"] as? String == "sampling" }.compactMap { $0["samplerCount"] as? Int }
        #expect(!counts.isEmpty && counts.allSatisfy { $0 == 4 }, "sampler counts rendered: \(counts)")
        let sha = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        for replica in replicas {
            let copy = replica.directory.appendingPathComponent("packages/sha256/\(sha)")
            #expect(FileManager.default.contents(atPath: copy.path) == Data(bytes), "\(replica.name) served its agents")
        }

        // The database restarts under load, in the middle of a stage: the replicas ride it out, one leads
        // again, and the rollout goes on to every agent. (Applied through a follower: forwarded.)
        var extra = try exampleApply(message: "through a database restart", transform: quick)
        extra.sources.append(
            SourceText(path: "98-extra.policy", text: "keep extra when service == \"tailplane-extra\"\n")
        )
        extra.fleet = first.fleet
        let beforeRestart = try await crash.applySlowly(extra, apiPort: follower.apiPort)
        #expect(beforeRestart == .created, "\(beforeRestart)")
        #expect(await self.pastFirstStage(2, firstAPI))
        server.stop()
        try await Task.sleep(for: .seconds(3))
        try server.start()
        #expect(await eventually(timeout: 30) { await self.leaders(started).count == 1 })
        #expect(await self.rolloutSucceeded(2, follower.apiPort))
        #expect(await self.fleetSettled(replicas, version: 2))

        // A follower killed in the middle of a stage: its agents reconnect to the others; it restarts on the
        // same address and directory and rejoins; the rollout completes with every agent once, on version 3.
        var third = extra
        third.message = "with a replica restarted"
        third.sources.append(SourceText(path: "97-more.policy", text: "keep more when service == \"tailplane-more\"\n"))
        #expect(try await crash.applySlowly(third, apiPort: replicas[0].apiPort) == .created)
        let currentLeader = try #require(await self.leaders(replicas).first)
        let victim = try #require(replicas.firstIndex { $0.name != currentLeader })
        #expect(await self.pastFirstStage(3, firstAPI))
        kill(replicas[victim].process.processIdentifier, SIGKILL)
        replicas[victim].process.waitUntilExit()
        replicas[victim].process = try self.start(
            replicas[victim].name,
            database: database,
            opampPort: replicas[victim].opampPort,
            apiPort: replicas[victim].apiPort,
            directory: replicas[victim].directory
        )
        #expect(await self.rolloutSucceeded(3, replicas[victim].apiPort))
        #expect(await self.fleetSettled(replicas, version: 3))
        #expect(await self.leaders(replicas).count == 1)
    }
}
