import AsyncHTTPClient
import ControlPlane
import FleetSimulator
import Foundation
import NIOCore
import NIOHTTP1
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The real `policyd` binary, killed with SIGKILL in the middle of a rollout and started again on the same
/// data directory: nothing stored is lost and the rollout completes.
@Suite(.serialized) struct CrashTests {
    static var binary: URL { builtExecutable("policyd") }

    /// A port nothing listens on now.
    static func freePort() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    func start(directory: URL, opampPort: Int, apiPort: Int, database: String? = nil) throws -> Process {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments =
            [
                "serve", "--data-dir", directory.path, "--bind", "127.0.0.1", "--opamp-port", String(opampPort),
                "--api-port", String(apiPort), "--log-level", "warning",
            ] + (database.map { ["--database", $0] } ?? [])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// A GET's JSON body (nil for anything but 200 with JSON).
    func json(_ port: Int, _ path: String) async -> Any? {
        let request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(5)),
            response.status == .ok,
            let body = try? await response.body.collect(upTo: 16 * 1024 * 1024)
        else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))
    }

    func get(_ port: Int, _ path: String) async -> [String: Any]? {
        await self.json(port, path) as? [String: Any]
    }

    func getArray(_ port: Int, _ path: String) async -> [[String: Any]] {
        await self.json(port, path) as? [[String: Any]] ?? []
    }

    /// Four simulated collectors (one load balancer, three samplers) that reconnect quickly.
    func fleetOptions(opampPort: Int) -> FleetOptions {
        var options = FleetOptions()
        options.port = opampPort
        options.agents = 4
        options.loadBalancerShare = 0.25
        options.applyDelay = .milliseconds(50)
        options.reconnectDelay = .milliseconds(200)
        options.threads = 1
        return options
    }

    /// Whether policyd sees the fleet's three samplers.
    func samplersSeen(_ apiPort: Int) async -> Bool {
        await eventually {
            (await self.get(apiPort, "/v1/fleet")?["agentsByTier"] as? [String: Int])?["sampling"] == 3
        }
    }

    /// Applies with stages of two seconds each (so a kill lands in the middle); the answer's status.
    func applySlowly(_ request: ApplyRequest, apiPort: Int) async throws -> HTTPResponseStatus {
        var slow = request
        slow.fleet = request.fleet.replacingOccurrences(of: "bake_time: 5m", with: "bake_time: 2s")
        var post = HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/v1/apply")
        post.method = .POST
        post.headers.add(name: "Content-Type", value: "application/json")
        post.body = .bytes(ByteBuffer(bytes: Array(try JSONEncoder().encode(slow))))
        // As policyctl does: a write bounced while replicas elect a leader (503 `no_leader`, nothing done) is
        // sent again after its Retry-After, for up to 30 s.
        let deadline = Date().addingTimeInterval(30)
        while true {
            let response = try await HTTPClient.shared.execute(post, timeout: .seconds(30))
            guard response.status != .created else { return response.status }
            // Says why in the test's output when a test expected it to be created.
            let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
            print("apply answered \(response.status): \(body)")
            guard response.status == .serviceUnavailable, body.contains("\"no_leader\""), Date() < deadline else {
                return response.status
            }
            try await Task.sleep(for: .seconds(2))
        }
    }

    /// Waits until rollout 1 has passed its first stage and is still going.
    func firstStagePassed(_ apiPort: Int) async -> Bool {
        await eventually(timeout: 30) {
            let rollout = await self.get(apiPort, "/v1/rollouts/current")?["rollout"] as? [String: Any]
            return (rollout?["stageIndex"] as? Int ?? 0) >= 1 && rollout?["phase"] as? String == "progressing"
        }
    }

    /// Waits until rollout 1 has succeeded.
    func firstRolloutSucceeded(_ apiPort: Int) async -> Bool {
        await eventually(timeout: 60) {
            let rollout = await self.get(apiPort, "/v1/rollouts/current")?["rollout"] as? [String: Any]
            return rollout?["id"] as? Int == 1 && rollout?["phase"] as? String == "succeeded"
        }
    }

    /// With SQLite, and with PostgreSQL through `policyd serve --database`.
    @Test(arguments: StoreFixture.Backend.allCases)
    func killNineInTheMiddleOfARolloutLosesNothing(_ backend: StoreFixture.Backend) async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let opampPort = Self.freePort()
        let apiPort = Self.freePort()
        let database = try backend.database()
        var policyd = try self.start(directory: directory, opampPort: opampPort, apiPort: apiPort, database: database)
        defer { if policyd.isRunning { kill(policyd.processIdentifier, SIGKILL) } }
        #expect(await eventually { await self.get(apiPort, "/v1/fleet") != nil })

        let fleet = FleetRunner(options: self.fleetOptions(opampPort: opampPort))
        let fleetTask = Task { try await fleet.run() }
        defer {
            fleetTask.cancel()
            Task { await fleet.shutdown() }
        }
        #expect(await self.samplersSeen(apiPort))

        // Stages of two seconds each, so the kill lands in the middle.
        #expect(try await self.applySlowly(try exampleApply { $0 }, apiPort: apiPort) == .created)

        // Wait until the first stage has passed, then kill -9.
        #expect(await self.firstStagePassed(apiPort))
        kill(policyd.processIdentifier, SIGKILL)
        policyd.waitUntilExit()
        #expect(policyd.terminationReason == .uncaughtSignal)

        // Same data directory (and database): the version and the rollout are there, and the rollout finishes.
        policyd = try self.start(directory: directory, opampPort: opampPort, apiPort: apiPort, database: database)
        #expect(await eventually { await self.get(apiPort, "/v1/versions/1") != nil })
        #expect(await self.firstRolloutSucceeded(apiPort))
        #expect(
            await eventually {
                let fleet = await self.get(apiPort, "/v1/fleet")
                return fleet?["currentVersion"] as? Int == 1
                    && (fleet?["agentsByState"] as? [String: Int])?["applied"] == 4
            }
        )
        kill(policyd.processIdentifier, SIGTERM)
        policyd.waitUntilExit()
        #expect(policyd.terminationStatus == 0)
    }

    /// More agents than policyd can keep open files for: it holds what it can, the others get 503 and retry,
    /// and it keeps serving. Past the limit it would die (Dispatch stops a process that cannot open files).
    @Test func moreAgentsThanOpenFilesGet503AndPolicydKeepsServing() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let opampPort = Self.freePort()
        let apiPort = Self.freePort()
        let log = directory.path + ".log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: log) }
        // 1,100 open files, soft and hard: 76 agent connections after the 1,024 kept for everything else.
        let policyd = Process()
        policyd.executableURL = URL(fileURLWithPath: "/bin/sh")
        policyd.arguments = [
            "-c",
            "ulimit -n 1100 && exec \"$0\" serve --data-dir \"$1\" --bind 127.0.0.1 --opamp-port $2 --api-port $3 --log-level warning",
            Self.binary.path, directory.path, String(opampPort), String(apiPort),
        ]
        policyd.standardOutput = FileHandle.nullDevice
        policyd.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try policyd.run()
        defer { if policyd.isRunning { kill(policyd.processIdentifier, SIGKILL) } }
        #expect(await eventually { await self.get(apiPort, "/v1/fleet") != nil })

        var options = self.fleetOptions(opampPort: opampPort)
        options.agents = 150
        options.loadBalancerShare = 0.2
        options.reconnectDelay = .milliseconds(500)
        let fleet = FleetRunner(options: options)
        let fleetTask = Task { try await fleet.run() }
        defer {
            fleetTask.cancel()
            Task { await fleet.shutdown() }
        }
        @Sendable func connected() async -> Int {
            let states = await self.get(apiPort, "/v1/fleet")?["agentsByState"] as? [String: Int] ?? [:]
            return states.filter { $0.key != "offline" }.values.reduce(0, +)
        }
        #expect(await eventually(timeout: 30) { await connected() == 76 })
        try await Task.sleep(for: .seconds(3))
        #expect(policyd.isRunning, "policyd is still running")
        #expect(await connected() == 76, "no more than the ceiling")
        let warning = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(warning.contains("is more than this process can keep open"))
        kill(policyd.processIdentifier, SIGTERM)
        policyd.waitUntilExit()
        #expect(policyd.terminationStatus == 0)
    }

    @Test func killNineInTheMiddleOfAPackageRolloutResumesIt() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let opampPort = Self.freePort()
        let apiPort = Self.freePort()
        var policyd = try self.start(directory: directory, opampPort: opampPort, apiPort: apiPort)
        defer { if policyd.isRunning { kill(policyd.processIdentifier, SIGKILL) } }
        #expect(await eventually { await self.get(apiPort, "/v1/fleet") != nil })

        var push = HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/v1/packages/otelcol-contrib/0.152.0")
        push.method = .PUT
        push.body = .bytes(ByteBuffer(bytes: Array(repeating: 0x5A, count: 3_000_000)))
        #expect(try await HTTPClient.shared.execute(push, timeout: .seconds(30)).status == .created)
        let keyResponse = try await HTTPClient.shared.execute(
            HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/v1/packages/signing-key"),
            timeout: .seconds(5)
        )
        let key = String(buffer: try await keyResponse.body.collect(upTo: 4096))

        var options = self.fleetOptions(opampPort: opampPort)
        options.acceptsPackages = true
        options.packageSigningKeyPEM = key
        // The first pin must be the collector the tier runs (so a failed upgrade has one to go back to).
        options.collectorVersion = "0.152.0"
        let fleet = FleetRunner(options: options)
        let fleetTask = Task { try await fleet.run() }
        defer {
            fleetTask.cancel()
            Task { await fleet.shutdown() }
        }
        #expect(await self.samplersSeen(apiPort))

        // The examples with collector 0.152.0 on both tiers, stages of two seconds each.
        var request = try exampleApply { $0 }
        request.fleet +=
            "\npackages:\n  load_balancing: {otelcol-contrib: 0.152.0}\n  sampling: {otelcol-contrib: 0.152.0}\n"
        #expect(try await self.applySlowly(request, apiPort: apiPort) == .created)
        #expect(await self.firstStagePassed(apiPort))
        let before = fleet.agents().filter { $0.installedPackages["otelcol-contrib"] != nil }.count
        kill(policyd.processIdentifier, SIGKILL)
        policyd.waitUntilExit()

        // Restarted on the same data directory: the package, its key and the rollout are there, and every
        // agent ends on the new collector.
        policyd = try self.start(directory: directory, opampPort: opampPort, apiPort: apiPort)
        #expect(await eventually { await self.get(apiPort, "/v1/versions/1") != nil })
        #expect(await self.firstRolloutSucceeded(apiPort))
        #expect(before >= 1 && before < 4, "the kill landed in the middle (\(before) of 4 installed)")
        // Agents that were reconnecting when their stage came catch up right after, drained like any update.
        let caughtUp = await eventually(timeout: 30) {
            fleet.agents().allSatisfy {
                $0.installedPackages["otelcol-contrib"]?.version == "0.152.0" && $0.profile.version == "0.152.0"
            }
        }
        let states = await self.getArray(apiPort, "/v1/agents").map {
            "\($0["hostName"] ?? "-"): \($0["packageState"] ?? "-") \($0["packageError"] ?? "") \($0["configState"] ?? "-")"
        }
        #expect(caughtUp, "\(states)")
        #expect(
            await eventually {
                await self.getArray(apiPort, "/v1/agents").allSatisfy { $0["packageState"] as? String == "installed" }
            }
        )
        let restartedKey = try await HTTPClient.shared.execute(
            HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/v1/packages/signing-key"),
            timeout: .seconds(5)
        )
        #expect(String(buffer: try await restartedKey.body.collect(upTo: 4096)) == key)
        kill(policyd.processIdentifier, SIGTERM)
        policyd.waitUntilExit()
        #expect(policyd.terminationStatus == 0)
    }
}
