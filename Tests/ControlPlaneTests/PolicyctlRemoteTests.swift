import ControlPlane
import FleetSimulator
import Foundation
import Testing

/// The built `policyctl` binary against a running control plane, as a person or a CI job uses it: the
/// output and the exit codes of apply, diff, history, agents, rollout status and a server that is down.
@Suite(.serialized) struct PolicyctlRemoteTests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static var binary: URL { builtExecutable("policyctl") }

    func policyctl(_ arguments: [String]) throws -> Run {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(
            status: process.terminationStatus,
            stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self)
        )
    }

    /// A policy directory with the given request's files.
    func directory(_ request: ApplyRequest) throws -> URL {
        let url = temporaryDirectory()
        for source in request.sources {
            try source.text.write(to: url.appendingPathComponent(source.path), atomically: true, encoding: .utf8)
        }
        try request.fleet.write(to: url.appendingPathComponent("fleet.yaml"), atomically: true, encoding: .utf8)
        return url
    }

    @Test func applyDiffAndFriendsExitAsDocumented() async throws {
        let stack = try await TestStack()
        await stack.startFleet(loadBalancers: 1, samplers: 2)
        let server = "http://127.0.0.1:\(stack.apiPort)"
        let good = try self.directory(try exampleApply())
        defer { try? FileManager.default.removeItem(at: good) }

        // Nothing deployed: diff says different (exit 1).
        #expect(try self.policyctl(["diff", good.path, "--server", server]).status == 1)

        let applied = try self.policyctl(["apply", good.path, "--wait", "--message", "first", "--server", server])
        #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        #expect(applied.stdout.contains("version 1 stored; rollout 1 started"))
        #expect(applied.stdout.contains("rollout 1 succeeded"))

        let again = try self.policyctl(["apply", good.path, "--server", server])
        #expect(again.status == 0 && again.stdout.contains("unchanged"))
        let same = try self.policyctl(["diff", good.path, "--server", server])
        #expect(same.status == 0 && same.stdout.contains("no difference from version 1"), "\(same.stdout)")

        // Errors: exit 1, the compiler's diagnostic with its place and caret, nothing stored.
        var badRequest = try exampleApply()
        badRequest.sources.append(SourceText(path: "bad.policy", text: "keep x when status = ERROR\n"))
        let bad = try self.directory(badRequest)
        defer { try? FileManager.default.removeItem(at: bad) }
        let rejected = try self.policyctl(["apply", bad.path, "--server", server])
        #expect(rejected.status == 1)
        #expect(rejected.stderr.contains("bad.policy:1:20"), "\(rejected.stderr)")
        #expect(rejected.stderr.contains("^"))
        #expect(try stack.server.store.versions(limit: 10).count == 1)

        // A version the collectors refuse: rolled back, exit 3.
        let broken = try self.directory(try brokenApply())
        defer { try? FileManager.default.removeItem(at: broken) }
        let changed = try self.policyctl(["diff", broken.path, "--server", server])
        #expect(changed.status == 1 && changed.stdout.contains("+keep broken"), "\(changed.stdout)")
        let rolledBack = try self.policyctl(["apply", broken.path, "--wait", "--server", server])
        #expect(rolledBack.status == 3, "\(rolledBack.stdout)\(rolledBack.stderr)")
        #expect(rolledBack.stdout.contains("rolled_back"))

        let history = try self.policyctl(["history", "--server", server])
        #expect(history.status == 0)
        #expect(history.stdout.contains("failed") && history.stdout.contains("deployed"))
        let agents = try self.policyctl(["agents", "--output", "json", "--server", server])
        #expect(agents.status == 0)
        let parsed = try JSONSerialization.jsonObject(with: Data(agents.stdout.utf8)) as? [[String: Any]]
        #expect(parsed?.count == 3)
        let status = try self.policyctl(["rollout", "status", "--server", server])
        #expect(status.status == 0 && status.stdout.contains("rollout 2: version 1 -> 2, rolled_back"))

        await stack.stop()
    }

    @Test func aServerThatIsDownIsOneLineAndExitTwo() throws {
        let run = try self.policyctl(["history", "--server", "http://127.0.0.1:1"])
        #expect(run.status == 2)
        #expect(run.stderr.hasPrefix("policyctl: cannot reach policyd at http://127.0.0.1:1"))
        #expect(run.stderr.split(separator: "\n").count == 1)
    }

    @Test func packagesPushListShowRolloutAndDeleteFromTheCommandLine() async throws {
        let stack = try await TestStack(packages: true)
        defer { Task { await stack.stop() } }
        let key = try self.policyctl(["packages", "signing-key", "--server", "http://127.0.0.1:\(stack.apiPort)"])
        #expect(key.stdout.hasPrefix("-----BEGIN PUBLIC KEY-----"))
        await stack.startFleet(loadBalancers: 1, samplers: 2) { options in
            options.acceptsPackages = true
            options.packageSigningKeyPEM = key.stdout
        }
        let server = "http://127.0.0.1:\(stack.apiPort)"
        let policies = try self.directory(try exampleApply())
        defer { try? FileManager.default.removeItem(at: policies) }
        #expect(try self.policyctl(["apply", policies.path, "--wait", "--server", server]).status == 0)

        let build = temporaryDirectory().appendingPathComponent("otelcol-contrib")
        defer { try? FileManager.default.removeItem(at: build.deletingLastPathComponent()) }
        try Data(repeating: 0x42, count: 3_000_000).write(to: build)
        let pushed = try self.policyctl([
            "packages", "push", build.path, "--name", "otelcol-contrib", "--version", "0.150.0", "--server", server,
        ])
        #expect(pushed.status == 0, "\(pushed.stderr)")
        #expect(pushed.stdout.contains("otelcol-contrib 0.150.0 (top-level, 3000000 bytes) sha256 "))
        let list = try self.policyctl(["packages", "list", "--server", server])
        #expect(list.stdout.contains("otelcol-contrib") && list.stdout.contains("0.150.0"))

        // A version the agents do not run cannot be the first pin: exit 1, the reason, nothing stored.
        try Data(repeating: 0x43, count: 1000).write(to: build)
        _ = try self.policyctl([
            "packages", "push", build.path, "--name", "otelcol-contrib", "--version", "0.152.0", "--server", server,
        ])
        let refused = try self.policyctl(["packages", "rollout", "otelcol-contrib", "0.152.0", "--server", server])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("no collector pinned yet"), "\(refused.stderr)")

        let rolled = try self.policyctl([
            "packages", "rollout", "otelcol-contrib", "0.150.0", "--wait", "--server", server,
        ])
        #expect(rolled.status == 0, "\(rolled.stdout)\(rolled.stderr)")
        #expect(rolled.stdout.contains("version 2 stored with otelcol-contrib 0.150.0"))
        #expect(rolled.stdout.contains("succeeded"))
        let agents = try self.policyctl(["agents", "--server", server])
        #expect(agents.stdout.contains("COLLECTOR") && agents.stdout.contains("installed"))
        let show = try self.policyctl(["packages", "show", "otelcol-contrib", "0.150.0", "--server", server])
        #expect(show.stdout.contains("versions: 2") && show.stdout.contains("agents:   3"), "\(show.stdout)")
        // In use: refused, exit 2 with the reason.
        let delete = try self.policyctl(["packages", "delete", "otelcol-contrib", "0.150.0", "--server", server])
        #expect(delete.status == 2)
        #expect(delete.stderr.contains("pins otelcol-contrib 0.150.0"), "\(delete.stderr)")
        #expect(
            try self.policyctl(["packages", "delete", "otelcol-contrib", "0.152.0", "--server", server]).status == 0
        )
    }
}
