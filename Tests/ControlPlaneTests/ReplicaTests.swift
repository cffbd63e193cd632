import AsyncHTTPClient
import ControlPlane
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
            "--log-level", "warning",
        ]
        process.standardOutput = FileHandle.nullDevice
        FileManager.default.createFile(atPath: directory.path + ".log", contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: directory.path + ".log"))
        try process.run()
        return process
    }

    /// Whether the replica's `/metrics` says it leads.
    func leads(_ apiPort: Int) async -> Bool {
        let request = HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/metrics")
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(5)),
            let body = try? await response.body.collect(upTo: 4 << 20)
        else { return false }
        return String(buffer: body).split(separator: "\n").contains { line in
            line.hasPrefix("tailplane_leader ") && Double(line.dropFirst("tailplane_leader ".count)) == 1
        }
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
        let database = try PostgresTestServer.shared.get().makeDatabase()
        var replicas: [Replica] = []
        defer {
            for replica in replicas where replica.process.isRunning {
                kill(replica.process.processIdentifier, SIGKILL)
                replica.process.waitUntilExit()
            }
        }
        for index in 0..<3 {
            let directory = temporaryDirectory()
            let opamp = CrashTests.freePort()
            let api = CrashTests.freePort()
            replicas.append(
                Replica(
                    name: "replica-\(index)",
                    opampPort: opamp,
                    apiPort: api,
                    directory: directory,
                    process: try self.start(
                        "replica-\(index)",
                        database: database,
                        opampPort: opamp,
                        apiPort: api,
                        directory: directory
                    )
                )
            )
        }
        let crash = CrashTests()
        // Exactly one leads.
        let started = replicas
        #expect(await eventually { await self.leaders(started).count == 1 })
        let first = try #require(await self.leaders(started).first)
        let leader = try #require(replicas.first { $0.name == first })
        let follower = try #require(replicas.first { $0.name != first })

        // Two load balancers and four samplers, spread over the three replicas; after a failed connection an
        // agent tries the next replica (what a load balancer in front of them does).
        var options = crash.fleetOptions(opampPort: replicas[0].opampPort)
        options.agents = 6
        options.loadBalancerShare = 1.0 / 3.0
        options.ports = replicas.map(\.opampPort)
        let fleet = FleetRunner(options: options)
        let fleetTask = Task { try await fleet.run() }
        defer {
            fleetTask.cancel()
            Task { await fleet.shutdown() }
        }
        // Every replica sees the whole fleet: its own agents and the others'.
        for replica in replicas {
            #expect(
                await eventually {
                    let tiers = await crash.get(replica.apiPort, "/v1/fleet")?["agentsByTier"] as? [String: Int]
                    return tiers?["sampling"] == 4 && tiers?["lb"] == 2
                },
                "\(replica.name) sees the fleet"
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
}
