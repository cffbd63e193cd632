import ArgumentParser
import ConfigRenderer
import Foundation
import NIOHTTP1
import PolicyEngine

#if canImport(Glibc)
    import Glibc
#endif

// Commands that talk to policyd. Each parses, calls the API, prints; the control plane does the work.

/// The sources and `fleet.yaml` of a policy path, as the API takes them (paths relative to the directory).
struct LocalSet {
    var files: [SourceFile]
    var relative: [String]
    var fleet: String

    static func load(_ path: String, fleet explicit: String?) throws -> LocalSet {
        let files: [SourceFile]
        do {
            files = try SourceLoader.load([path])
        } catch {
            throw ClientFailure(message: error.description, exitCode: Exit.usage)
        }
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        let base = isDirectory.boolValue ? (path.hasSuffix("/") ? path : path + "/") : ""
        let relative = files.map { file in
            base.isEmpty || !file.path.hasPrefix(base)
                ? (file.path as NSString).lastPathComponent : String(file.path.dropFirst(base.count))
        }
        var fleet = ""
        if let fleetPath = FleetLoader.path(explicit: explicit, near: path) {
            guard let data = FileManager.default.contents(atPath: fleetPath) else {
                throw ClientFailure(message: "\(fleetPath): cannot read file", exitCode: Exit.usage)
            }
            fleet = String(decoding: data, as: UTF8.self)
        }
        return LocalSet(files: files, relative: relative, fleet: fleet)
    }

    struct Source: Codable {
        var path: String
        var text: String
    }

    var sources: [Source] {
        zip(self.relative, self.files).map { Source(path: $0, text: String(decoding: $1.bytes, as: UTF8.self)) }
    }

    /// Prints the server's diagnostics with carets under the local sources.
    func printDiagnostics(_ diagnostics: [Diagnostic]) {
        let byPath = Dictionary(
            zip(self.relative, self.files).map { ($0, $1) },
            uniquingKeysWith: { first, _ in first }
        )
        var text = ""
        for diagnostic in diagnostics {
            text += DiagnosticFormatter.text(diagnostic, source: byPath[diagnostic.file])
        }
        FileHandle.standardError.write(Data(text.utf8))
    }
}

struct RolloutBody: Decodable {
    struct Plan: Decodable {
        var tiers: [String]
        var bakeSeconds: Double
        var drain: Bool
    }
    var id: Int
    var from: Int?
    var to: Int
    var phase: String
    var plan: Plan
    var tierIndex: Int
    var stageIndex: Int
    var members: [String]
    var steps: [String: String]
    var touched: [String]
    var outOfRing: [String: Double]
    var failure: String?
    var rollingBack: Bool

    var isTerminal: Bool { !["progressing", "paused"].contains(self.phase) }
    var tier: String { self.tierIndex < self.plan.tiers.count ? self.plan.tiers[self.tierIndex] : "done" }
}

struct EventBody: Decodable {
    var kind: String
    var message: String
    var agent: String?
    var time: Date
}

struct ReportBody: Decodable {
    var rollout: RolloutBody
    var events: [EventBody]
}

/// Follows a rollout until it ends, printing each step once; returns its final state.
func follow(_ client: APIClient, rollout id: Int) async throws -> RolloutBody {
    var printed = 0
    let formatter = DateFormatter()
    formatter.dateFormat = "HH:mm:ss"
    var unreachableSince: Date?
    while true {
        let report: ReportBody
        do {
            report = try await client.get("/v1/rollouts/\(id)", as: ReportBody.self)
            unreachableSince = nil
        } catch let failure as ClientFailure where failure.exitCode == Exit.usage && failure.body.isEmpty {
            // policyd restarting (or a blip): the rollout goes on without us; keep asking for a while.
            let since = unreachableSince ?? Date()
            unreachableSince = since
            guard Date().timeIntervalSince(since) < 120 else { throw failure }
            try await Task.sleep(for: .seconds(1))
            continue
        }
        if terminal, printed < report.events.count { print("\r\u{1B}[K", terminator: "") }
        for event in report.events.dropFirst(printed) {
            print("\(formatter.string(from: event.time))  \(event.message)")
        }
        printed = max(printed, report.events.count)
        if report.rollout.isTerminal { return report.rollout }
        if terminal {
            // A live line under the log: where the stage stands, agent by agent.
            print("\r\u{1B}[K" + liveLine(report.rollout), terminator: "")
            fflush(nil)
        }
        try await Task.sleep(for: .milliseconds(500))
    }
}

/// True when standard output is a terminal (plain lines otherwise, for CI logs).
let terminal = isatty(STDOUT_FILENO) == 1

/// `sampling stage 2/3 · 1 draining · 2 applying · 5 done · 12 waiting`
func liveLine(_ rollout: RolloutBody) -> String {
    var counts: [String: Int] = [:]
    for uid in rollout.members { counts[rollout.steps[uid] ?? "waiting", default: 0] += 1 }
    let order = [
        "draining", "settling", "applying", "rolling_back", "done", "rolled_back", "failed", "skipped", "waiting",
    ]
    let parts = order.compactMap { step in counts[step].map { "\($0) \(step.replacingOccurrences(of: "_", with: " "))" }
    }
    let stage = rollout.rollingBack ? "rolling back" : "\(rollout.tier) stage \(rollout.stageIndex + 1)"
    return ([stage] + parts).joined(separator: " · ")
}

/// Exit code for a finished rollout: 0 succeeded, 3 rolled back, aborted or otherwise not completed.
func rolloutExitCode(_ rollout: RolloutBody) -> ExitCode {
    rollout.phase == "succeeded" ? .success : ExitCode(3)
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a policy set to policyd: it stores a new version and rolls it out.",
        discussion:
            "Exit codes: 0 stored (or unchanged; with --wait: rolled out), 1 the sources have errors, 2 usage or connection errors, 3 the rollout was rolled back or aborted (--wait)."
    )

    @Argument(help: "The policy set: a directory with .policy files (and fleet.yaml), or a file.")
    var path: String

    @Option(help: "fleet.yaml (default: the one in the policy directory).")
    var fleet: String?

    @Option(help: "Why (shown in the history).")
    var message: String?

    @Option(help: "The Git revision of the sources (shown in the history).")
    var gitRevision: String?

    @Flag(help: "Follow the rollout until it ends.")
    var wait = false

    @Flag(help: "Replace a rollout in progress.")
    var supersede = false

    @Flag(help: "Compile and plan on the server; store nothing.")
    var dryRun = false

    @Option(
        name: .customLong("accept-change"),
        help:
            "A collector behaviour change a tier's collector upgrade may cross (its id, as a refusal names it; repeatable)."
    )
    var acceptChanges: [String] = []

    @OptionGroup var server: ServerOptions

    struct Body: Encodable {
        var sources: [LocalSet.Source]
        var fleet: String
        var message: String?
        var gitRevision: String?
        var dryRun: Bool
        var supersede: Bool
        var acceptChanges: [String]?
    }

    struct Result: Decodable {
        var result: String
        var version: Int
        var rollout: Int?
        var tiers: [String]
        var warnings: [Diagnostic]
    }

    func run() async throws {
        try await runClient {
            let set = try LocalSet.load(self.path, fleet: self.fleet)
            let client = APIClient(options: self.server)
            let bytes: [UInt8]
            do {
                bytes = try await client.call(
                    .POST,
                    "/v1/apply",
                    body: Body(
                        sources: set.sources,
                        fleet: set.fleet,
                        message: self.message,
                        gitRevision: self.gitRevision,
                        dryRun: self.dryRun,
                        supersede: self.supersede,
                        acceptChanges: self.acceptChanges.isEmpty ? nil : self.acceptChanges
                    )
                )
            } catch let failure as ClientFailure where failure.exitCode == Exit.problems {
                if let body = try? APIClient.decoder.decode(APIClient.ErrorBody.self, from: Data(failure.body)) {
                    set.printDiagnostics(body.error.diagnostics ?? [])
                    // Problems with fleet.yaml or the packages it pins, which name no policy file.
                    for problem in body.error.fleetDiagnostics ?? [] {
                        printError(problem.message + (problem.suggestion.map { " (\($0))" } ?? ""))
                    }
                }
                throw ClientFailure(message: failure.message.components(separatedBy: "\n")[0], exitCode: Exit.problems)
            }
            let result = try client.decode(Result.self, bytes)
            set.printDiagnostics(result.warnings)
            if self.server.output == .json {
                printJSON(bytes)
            } else {
                switch result.result {
                case "unchanged":
                    print("version \(result.version): unchanged (the fleet runs or is rolling out this content)")
                case "dry_run":
                    print(
                        "dry run: would store version \(result.version) and roll out \(result.tiers.isEmpty ? "no tier" : result.tiers.joined(separator: " then "))"
                    )
                default:
                    print(
                        "version \(result.version) stored; rollout \(result.rollout.map(String.init) ?? "-") started (\(result.tiers.joined(separator: " then ")))"
                    )
                }
            }
            guard self.wait, let rollout = result.rollout else { return }
            let ended = try await follow(client, rollout: rollout)
            print("rollout \(ended.id) \(ended.phase)" + (ended.failure.map { ": \($0)" } ?? ""))
            throw rolloutExitCode(ended)
        }
    }
}

struct Diff: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What a policy set changes against the version the fleet runs, in sources and rendered configs.",
        discussion: "Exit codes: 0 no difference, 1 different, 2 usage or connection errors."
    )

    @Argument(help: "The policy set: a directory with .policy files (and fleet.yaml), or a file.")
    var path: String

    @Option(help: "fleet.yaml (default: the one in the policy directory).")
    var fleet: String?

    @OptionGroup var server: ServerOptions

    struct Fleet: Decodable {
        struct Ring: Decodable { var members: [String] }
        var currentVersion: Int?
        var ring: Ring
    }

    struct Version: Decodable {
        struct Inner: Decodable {
            var number: Int
            var sources: [LocalSet.Source]
            var fleet: String
        }
        var version: Inner
    }

    func run() async throws {
        try await runClient {
            let set = try LocalSet.load(self.path, fleet: self.fleet)
            let client = APIClient(options: self.server)
            let summary = try await client.get("/v1/fleet", as: Fleet.self)
            var old: [LocalSet.Source] = []
            var oldFleet = ""
            var name = "nothing deployed"
            if let number = summary.currentVersion {
                let version = try await client.get("/v1/versions/\(number)", as: Version.self)
                old = version.version.sources
                oldFleet = version.version.fleet
                name = "version \(number)"
            }
            var output = ""
            let oldByPath = Dictionary(old.map { ($0.path, $0.text) }, uniquingKeysWith: { first, _ in first })
            let newByPath = Dictionary(set.sources.map { ($0.path, $0.text) }, uniquingKeysWith: { first, _ in first })
            for path in Set(oldByPath.keys).union(newByPath.keys).sorted() {
                output += ConfigDiff.unified(
                    old: oldByPath[path] ?? "",
                    new: newByPath[path] ?? "",
                    oldName: oldByPath[path] == nil ? "/dev/null" : "\(name)/\(path)",
                    newName: newByPath[path] == nil ? "/dev/null" : "\(self.path)/\(path)"
                )
            }
            output += ConfigDiff.unified(
                old: oldFleet,
                new: set.fleet,
                oldName: "\(name)/fleet.yaml",
                newName: "fleet.yaml"
            )
            // Rendered configs for the ring the fleet has now.
            let ring = summary.ring.members.isEmpty ? ["sampler:4317"] : summary.ring.members
            func render(_ sources: [LocalSet.Source], _ fleetText: String) -> [Tier: String] {
                let compiled = PolicyCompiler.compile(sources.map { SourceFile(path: $0.path, text: $0.text) })
                guard let policySet = compiled.policySet, case .success(let fleet) = FleetParser.parse(fleetText) else {
                    return [:]
                }
                let membership = Membership(samplers: ring)
                var configs: [Tier: String] = [:]
                for tier in Tier.allCases {
                    if case .success(let config) = ConfigRenderer.render(
                        tier,
                        policySet: policySet,
                        fleet: fleet,
                        membership: membership
                    ) {
                        configs[tier] = config.yaml
                    }
                }
                return configs
            }
            let before = old.isEmpty ? [:] : render(old, oldFleet)
            let after = render(set.sources, set.fleet)
            for tier in Tier.allCases {
                output += ConfigDiff.unified(
                    old: before[tier] ?? "",
                    new: after[tier] ?? "",
                    oldName: "\(name) \(tier.rawValue) config",
                    newName: "new \(tier.rawValue) config"
                )
            }
            if output.isEmpty {
                print("no difference from \(name)")
                return
            }
            print(output, terminator: output.hasSuffix("\n") ? "" : "\n")
            throw Exit.problems
        }
    }
}

struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "Show or steer the current rollout.",
        subcommands: [Status.self, Pause.self, Resume.self, Abort.self],
        defaultSubcommand: Status.self
    )

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The current (or last) rollout.")
        @Flag(help: "Follow it until it ends (exit 0 succeeded, 3 otherwise).")
        var wait = false
        @OptionGroup var server: ServerOptions

        func run() async throws {
            try await runClient {
                let client = APIClient(options: self.server)
                let bytes = try await client.call(.GET, "/v1/rollouts/current")
                if self.server.output == .json, !self.wait { return printJSON(bytes) }
                let report = try client.decode(ReportBody.self, bytes)
                let rollout = report.rollout
                if self.wait, !rollout.isTerminal {
                    let ended = try await follow(client, rollout: rollout.id)
                    print("rollout \(ended.id) \(ended.phase)" + (ended.failure.map { ": \($0)" } ?? ""))
                    throw rolloutExitCode(ended)
                }
                print(
                    "rollout \(rollout.id): version \(rollout.from.map(String.init) ?? "none") -> \(rollout.to), \(rollout.phase)"
                        + (rollout.rollingBack && !rollout.isTerminal ? " (rolling back)" : "")
                )
                if !rollout.isTerminal {
                    print(
                        "tier \(rollout.tier), stage \(rollout.stageIndex + 1); \(rollout.touched.count) agents updated so far"
                    )
                }
                if let failure = rollout.failure { print("why: \(failure)") }
                let rows = rollout.steps.sorted { $0.key < $1.key }.map { uid, step in
                    [uid, step, rollout.outOfRing[uid].map { String(format: "%.1fs", $0) } ?? ""]
                }
                if !rows.isEmpty { printTable(["AGENT", "STEP", "OUT OF RING"], rows) }
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pause after the current batch.")
        @OptionGroup var server: ServerOptions
        func run() async throws { try await steer("pause", self.server) }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume a paused rollout.")
        @OptionGroup var server: ServerOptions
        func run() async throws { try await steer("resume", self.server) }
    }

    struct Abort: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop and roll back every agent it touched.")
        @OptionGroup var server: ServerOptions
        func run() async throws { try await steer("abort", self.server) }
    }
}

private func steer(_ command: String, _ options: ServerOptions) async throws {
    try await runClient {
        let client = APIClient(options: options)
        let bytes = try await client.call(.POST, "/v1/rollouts/current/\(command)")
        if options.output == .json { return printJSON(bytes) }
        let rollout = try client.decode(RolloutBody.self, bytes)
        print(
            "rollout \(rollout.id): \(rollout.phase)\(rollout.rollingBack && !rollout.isTerminal ? " (rolling back)" : "")"
        )
    }
}

struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Roll the fleet back to an earlier version (a staged rollout like any other).",
        discussion:
            "Exit codes as for apply: 0 done, 2 usage or connection errors, 3 the rollback itself was rolled back."
    )
    @Option(help: "The version to return to.")
    var to: Int
    @Flag(help: "Follow the rollout until it ends.")
    var wait = false
    @OptionGroup var server: ServerOptions

    struct Body: Encodable { var to: Int }
    struct Result: Decodable { var rollout: Int }

    func run() async throws {
        try await runClient {
            let client = APIClient(options: self.server)
            let result = try client.decode(
                Result.self,
                try await client.call(.POST, "/v1/rollback", body: Body(to: self.to))
            )
            print("rollout \(result.rollout) started: back to version \(self.to)")
            guard self.wait else { return }
            let ended = try await follow(client, rollout: result.rollout)
            print("rollout \(ended.id) \(ended.phase)" + (ended.failure.map { ": \($0)" } ?? ""))
            throw rolloutExitCode(ended)
        }
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stored versions, newest first.")
    @OptionGroup var server: ServerOptions

    struct Version: Decodable {
        var number: Int
        var author: String
        var message: String
        var createdAt: Date
        var outcome: String
        var gitRevision: String?
    }

    func run() async throws {
        try await show("/v1/versions", as: [Version].self, self.server) { versions in
            let formatter = ISO8601DateFormatter()
            let rows = versions.map {
                [
                    String($0.number), $0.outcome, formatter.string(from: $0.createdAt), $0.author,
                    $0.gitRevision ?? "", $0.message,
                ]
            }
            printTable(["VERSION", "OUTCOME", "CREATED", "AUTHOR", "REVISION", "MESSAGE"], rows)
        }
    }
}

struct Versions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stored versions.", subcommands: [Show.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One version: its sources and rendered configs.")
        @Argument(help: "Version number.")
        var number: Int
        @OptionGroup var server: ServerOptions

        struct Detail: Decodable {
            struct Version: Decodable {
                var number: Int
                var author: String
                var message: String
                var outcome: String
                var contentHash: String
                var failureReason: String?
                var sources: [LocalSet.Source]
                var fleet: String
            }
            struct Rendered: Decodable {
                var tier: String
                var hash: String
                var samplerCount: Int
            }
            var version: Version
            var rendered: [Rendered]
        }

        func run() async throws {
            try await show("/v1/versions/\(self.number)", as: Detail.self, self.server) { detail in
                let version = detail.version
                print("version \(version.number) (\(version.outcome)) by \(version.author): \(version.message)")
                print("content \(version.contentHash)")
                if let reason = version.failureReason { print("why it failed: \(reason)") }
                for config in detail.rendered {
                    print("rendered \(config.tier) for \(config.samplerCount) samplers: \(config.hash)")
                }
                for source in version.sources {
                    print("\n# \(source.path)\n\(source.text)", terminator: source.text.hasSuffix("\n") ? "" : "\n")
                }
                if !version.fleet.isEmpty { print("\n# fleet.yaml\n\(version.fleet)") }
            }
        }
    }
}

struct Agents: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Every agent: tier, version, config state, health, ring; and agent credentials.",
        subcommands: [
            AgentList.self, Revoke.self, IssueCertificate.self, RotateCertificates.self, CertificateRequests.self,
        ],
        defaultSubcommand: AgentList.self
    )
}

struct AgentList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Every agent: tier, version, config state, health, ring, credential."
    )
    @Option(help: "Only this tier: lb, sampling or unmanaged.")
    var tier: String?
    @Option(help: "Only this config state: applied, applying, pending, failed, unverified, offline.")
    var state: String?
    @OptionGroup var server: ServerOptions

    struct Agent: Decodable {
        var instanceUID: String
        var tier: String
        var hostName: String?
        var desiredVersion: Int?
        var runningVersion: Int?
        var configState: String
        var configError: String?
        var healthy: Bool?
        var inRing: Bool
        var credential: String?
        var connectionSettingsState: String?
        var collectorVersion: String?
        var packageState: String?
        var packageError: String?
    }

    func run() async throws {
        var query: [String] = []
        if let tier = self.tier { query.append("tier=\(tier)") }
        if let state = self.state { query.append("state=\(state)") }
        let path = "/v1/agents" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        try await show(path, as: [Agent].self, self.server) { agents in
            let rows = agents.map { agent in
                [
                    agent.hostName ?? "-", agent.instanceUID, agent.tier, agent.runningVersion.map(String.init) ?? "-",
                    agent.desiredVersion.map(String.init) ?? "-", agent.configState,
                    agent.healthy.map { $0 ? "healthy" : "unhealthy" } ?? "-",
                    agent.tier == "sampling" ? (agent.inRing ? "yes" : "no") : "",
                    agent.collectorVersion ?? "-", agent.packageState ?? "-",
                    agent.credential ?? "-", agent.configError ?? agent.packageError ?? "",
                ]
            }
            printTable(
                [
                    "HOST", "UID", "TIER", "RUNS", "WANTS", "CONFIG", "HEALTH", "IN RING", "COLLECTOR", "PACKAGES",
                    "CREDENTIAL", "ERROR",
                ],
                rows
            )
        }
    }
}

struct Ring: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The ring every load balancer routes by, and its history."
    )
    @OptionGroup var server: ServerOptions

    struct Body: Decodable {
        struct Record: Decodable {
            var version: Int
            var members: [String]
            var changedAt: Date
            var reason: String
            var convergenceSeconds: Double?
        }
        var current: Record
        var history: [Record]
    }

    func run() async throws {
        try await show("/v1/ring", as: Body.self, self.server) { body in
            print("ring \(body.current.version): \(body.current.members.count) samplers")
            for member in body.current.members { print("  \(member)") }
            print("")
            printTable(
                ["RING", "SAMPLERS", "CONVERGED", "CHANGE"],
                body.history.map {
                    [
                        String($0.version), String($0.members.count),
                        $0.convergenceSeconds.map { String(format: "%.2fs", $0) } ?? "not yet", $0.reason,
                    ]
                }
            )
        }
    }
}
