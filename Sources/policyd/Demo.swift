import ArgumentParser
import ControlPlane
import FleetSimulator
import Foundation
import Logging
import OpAMPServer
import ServiceLifecycle
import UnixSignals

extension Policyd {
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Run the control plane on a temporary SQLite store with a simulated fleet, roll out the example policies drain-aware, then roll back a version that fails."
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
            let control = try ControlPlaneServer(
                store: try SQLiteStore(directory: directory),
                registry: opamp.registry,
                options: options,
                port: self.apiPort
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
