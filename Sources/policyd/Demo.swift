import ArgumentParser
import CMalloc
import ControlPlane
import FleetSimulator
import Foundation
import Logging
import NIOCore
import OpAMPServer
import ServiceLifecycle
import UnixSignals

extension Policyd {
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Run the control plane on a temporary SQLite store with a simulated fleet, roll out the example policies drain-aware, roll back a version that fails, then upgrade the collectors and downgrade a collector version that turns unhealthy."
        )

        @Option(help: "The policy set to apply (a directory with .policy files and fleet.yaml).")
        var policies = "policies"

        @Option(help: "Simulated load balancers.")
        var loadBalancers = 3

        @Option(help: "Simulated samplers.")
        var samplers = 8

        @Option(help: "API port (0: any free port).")
        var apiPort = 4321

        @Option(help: "Seconds each stage stays healthy before the next starts (fleet.yaml says 5m; shortened here).")
        var bake = 2.0

        @Option(help: "Seconds a drained sampler waits for its buffered traces (decision_wait + 3s in production).")
        var settle = 1.0

        @Flag(help: "Exit when the demo is done instead of serving until Ctrl-C.")
        var exitWhenDone = false

        func validate() throws {
            guard self.loadBalancers >= 1, self.samplers >= 1 else {
                throw ValidationError("the demo needs at least one load balancer and one sampler")
            }
        }

        func run() async throws {
            _ = tailplane_return_large_buffers()
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = .warning
                return handler
            }
            let request = try Self.load(self.policies)
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "tailplane-demo-\(UUID().uuidString.prefix(8))"
            )
            defer { try? FileManager.default.removeItem(at: directory) }

            var configuration = OpAMPServerConfiguration()
            configuration.host = "127.0.0.1"
            configuration.port = 0
            configuration.threads = 1
            let opamp = OpAMPServer(configuration: configuration)
            let opampPort = try await opamp.start()
            var options = ControlPlaneOptions()
            options.tickInterval = .milliseconds(100)
            options.bakeSecondsOverride = self.bake
            options.settleSecondsOverride = self.settle
            let store = try SQLiteStore(directory: directory)
            let packages = try PackageRepository(directory: directory.appendingPathComponent("packages"), store: store)
            let control = try ControlPlaneServer(
                store: store,
                registry: opamp.registry,
                options: options,
                port: self.apiPort,
                packages: packages
            )
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: control)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: Logger(label: "policyd.demo")
                )
            )
            let serving = Task { try await group.run() }
            let apiPort = await control.apiPort()

            var fleetOptions = FleetOptions()
            fleetOptions.port = opampPort
            fleetOptions.agents = self.loadBalancers + self.samplers
            fleetOptions.loadBalancerShare = Double(self.loadBalancers) / Double(fleetOptions.agents)
            fleetOptions.applyDelay = .milliseconds(300)
            fleetOptions.threads = 1
            // Like opamp-go agents with a package provider: they pin policyd's signing key, and collector
            // 0.153.0 keeps crashing on them (for the automatic downgrade at the end).
            fleetOptions.acceptsPackages = true
            fleetOptions.packageSigningKeyPEM = packages.publicKeyPEM
            fleetOptions.unhealthyPackageVersions = ["0.153.0"]
            let fleet = FleetRunner(options: fleetOptions)
            let simulating = Task { try await fleet.run() }

            let start = Date()
            func say(_ text: String) {
                print(String(format: "[%6.2fs] ", Date().timeIntervalSince(start)) + text)
            }
            print("Tailplane demo")
            print("  store:  \(directory.path) (SQLite, removed on exit)")
            print("  OpAMP:  ws://127.0.0.1:\(opampPort)/v1/opamp")
            print("  console: http://127.0.0.1:\(apiPort)/  (open it in a browser)")
            print(
                "  API:    http://127.0.0.1:\(apiPort)/v1  (try: policyctl agents, policyctl ring, policyctl history)"
            )
            print(
                "  fleet:  \(self.loadBalancers) load balancers, \(self.samplers) samplers (simulated, supervisor-like)"
            )
            print("")
            while opamp.registry.connectedCount < fleetOptions.agents {
                try await Task.sleep(for: .milliseconds(50))
            }
            say("\(fleetOptions.agents) collectors connected")

            let controller = control.controller
            var seen = await controller.events(after: 0).last
            func follow(_ rollout: Int) async throws -> Rollout? {
                while true {
                    let page = await controller.events(after: seen)
                    seen = page.last
                    for event in page.events { say(event.message) }
                    if let report = try await controller.rollout(rollout), report.rollout.phase.isTerminal {
                        return report.rollout
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }

            var changed = request
            changed.message = "one more sampling rule"
            changed.sources.append(
                SourceText(
                    path: "90-demo-extra.policy",
                    text: "keep demo_slow_search when service == \"search\" and duration > 2s\n"
                )
            )
            var broken = request
            broken.message = "a rule the collectors cannot start with"
            broken.sources.append(
                SourceText(path: "99-demo-broken.policy", text: "keep demo_broken when service == \"tailplane-fail\"\n")
            )
            let steps: [(String, ApplyRequest)] = [
                (
                    "apply \(self.policies)/ (\(request.sources.count) policy files) to a fleet that runs nothing yet",
                    request
                ),
                (
                    "apply a new sampling rule: each sampler leaves the ring on every load balancer, settles, restarts, and comes back",
                    changed
                ),
                (
                    "apply a rule the simulated collectors refuse (they fail any config containing \"tailplane-fail\")",
                    broken
                ),
            ]
            for (title, step) in steps {
                print("")
                say(title)
                let result = try await controller.apply(step, actor: "demo", remote: "local")
                guard let rollout = result.rollout else {
                    say("version \(result.version): \(result.result)")
                    continue
                }
                let ended = try await follow(rollout)
                try await self.report(controller, ended, say: say)
            }

            // Collector upgrades: two stand-in builds in policyd's repository, rolled out like any version.
            for version in ["0.150.0", "0.152.0", "0.153.0"] {
                let build = Self.standInBuild(version)
                let body = AsyncStream<ByteBuffer> { continuation in
                    continuation.yield(ByteBuffer(bytes: build))
                    continuation.finish()
                }
                let stored = try await packages.ingest(
                    name: "otelcol-contrib",
                    version: version,
                    kind: .topLevel,
                    uploader: "demo",
                    now: Date(),
                    body: body
                )
                print("")
                say(
                    "pushed otelcol-contrib \(version) (\(build.count / 1024) KiB, sha256 \(stored.record.sha256.prefix(12))...), signed with policyd's package key"
                )
            }
            for (title, version) in [
                (
                    "pin the collector the fleet runs, 0.150.0: agents install the same version (from now on a failed upgrade has a collector to go back to)",
                    "0.150.0"
                ),
                (
                    "roll collector 0.152.0 out: agents download it, check its SHA-256 and signature, install it and restart on it (samplers drained first)",
                    "0.152.0"
                ),
                (
                    "roll collector 0.153.0 out: it crashes on the collectors, so every agent it reached goes back to 0.152.0",
                    "0.153.0"
                ),
            ] {
                print("")
                say(title)
                var accepted: [String] = []
                if version == "0.153.0" {
                    // The policies' span limit has no burst, and v0.153 made span limits token buckets: refused
                    // until the change is accepted, as `policyctl packages rollout --accept-change` does.
                    do {
                        _ = try await controller.rolloutPackage(
                            name: "otelcol-contrib",
                            version: version,
                            dryRun: true,
                            actor: "demo",
                            remote: "local"
                        )
                    } catch {
                        // The first line says nothing was stored; the others name each problem and its fix.
                        for line in error.message.split(separator: "\n").dropFirst() { say("refused: \(line)") }
                        say("accepting rate-limit-token-bucket (--accept-change rate-limit-token-bucket)")
                        accepted = ["rate-limit-token-bucket"]
                    }
                }
                let result = try await controller.rolloutPackage(
                    name: "otelcol-contrib",
                    version: version,
                    acceptChanges: accepted,
                    actor: "demo",
                    remote: "local"
                )
                guard let rollout = result.rollout else { continue }
                let ended = try await follow(rollout)
                try await self.report(controller, ended, say: say)
                let versions = Dictionary(grouping: fleet.agents(), by: { $0.profile.version }).mapValues(\.count)
                say(
                    "collectors run "
                        + versions.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
                )
            }

            if !self.exitWhenDone {
                print("")
                print(
                    "The control plane keeps running: the console at http://127.0.0.1:\(apiPort)/, the API under /v1; Ctrl-C to stop."
                )
            } else {
                await group.triggerGracefulShutdown()
            }
            try await serving.value
            simulating.cancel()
            await fleet.shutdown()
            await opamp.stop()
        }

        private func report(
            _ controller: Controller,
            _ rollout: Rollout?,
            say: (String) -> Void
        ) async throws {
            guard let rollout else { return }
            let summary = try await controller.summary()
            let states = summary.agentsByState.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }
            say(
                "rollout \(rollout.id) \(rollout.phase.rawValue); fleet on version \(summary.currentVersion.map(String.init) ?? "none"): \(states.joined(separator: ", ")); ring \(summary.ring.version) has \(summary.ring.members.count) samplers"
            )
            if let failure = rollout.failure { say("why: \(failure)") }
        }

        /// A stand-in collector build: 2 MiB of deterministic bytes.
        static func standInBuild(_ version: String) -> [UInt8] {
            var bytes = Array("#!/bin/sh\necho otelcol-contrib \(version)\n".utf8)
            var state: UInt32 = version.utf8.reduce(2_166_136_261) { ($0 ^ UInt32($1)) &* 16_777_619 }
            while bytes.count < 2 << 20 {
                state = state &* 1_664_525 &+ 1_013_904_223
                bytes.append(UInt8(truncatingIfNeeded: state >> 24))
            }
            return bytes
        }

        /// The policy files and `fleet.yaml` of a directory.
        static func load(_ path: String) throws -> ApplyRequest {
            let url = URL(fileURLWithPath: path)
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: url.path) else {
                throw ValidationError(
                    "\(path): not a directory with .policy files (run from the repository, or pass --policies)"
                )
            }
            let sources = try names.filter { $0.hasSuffix(".policy") }.sorted().map { name in
                SourceText(path: name, text: try String(contentsOf: url.appendingPathComponent(name), encoding: .utf8))
            }
            guard !sources.isEmpty else { throw ValidationError("\(path): no .policy files") }
            let fleet = (try? String(contentsOf: url.appendingPathComponent("fleet.yaml"), encoding: .utf8)) ?? ""
            return ApplyRequest(sources: sources, fleet: fleet, message: "demo: the example policies")
        }
    }
}
