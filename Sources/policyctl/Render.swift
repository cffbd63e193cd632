import ArgumentParser
import ConfigRenderer
import Foundation
import PolicyEngine

extension Policyctl {
    struct Render: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Render complete collector configs for the load-balancing and sampling tiers.",
            discussion: """
                Reads the policies and fleet.yaml (from the policy directory, or --fleet). Prints the configs \
                (or writes lb.yaml and sampling.yaml with -o) and their SHA-256 hashes. With --diff, prints a \
                unified diff between the configs of two policy sets instead.
                """
        )

        @Argument(help: "Policy directory (or files).")
        var path: String

        @Option(help: "Tier to render: lb or sampling (default: both).")
        var tier: Tier?

        @Option(help: "Sampler ring entries, comma-separated (host:port).")
        var samplers: String?

        @Option(help: "Number of sampler replicas sharing fleet-wide limits (default: the number of --samplers).")
        var samplerCount: Int?

        @OptionGroup var fleetFlags: FleetFlags

        @Option(name: .shortAndLong, help: "Write the configs into this directory instead of printing them.")
        var output: String?

        @Option(help: "Another policy directory: print how its configs differ from PATH's.")
        var diff: String?

        func validate() throws {
            if let count = self.samplerCount, count < 1 { throw ValidationError("--sampler-count must be at least 1") }
            if self.diff != nil, self.output != nil {
                throw ValidationError("--diff prints a diff; it cannot be combined with -o")
            }
        }

        func run() throws {
            let membership = Membership(
                samplers: (self.samplers ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { !$0.isEmpty },
                samplerCount: self.samplerCount
            )
            let tiers = self.tier.map { [$0] } ?? Tier.allCases
            let configs = try self.renderSet(self.path, tiers: tiers, membership: membership)
            if let other = self.diff {
                let otherConfigs = try self.renderSet(other, tiers: tiers, membership: membership)
                var any = false
                for (mine, theirs) in zip(configs, otherConfigs) {
                    let text = ConfigDiff.unified(
                        old: mine.yaml,
                        new: theirs.yaml,
                        oldName: "\(self.path) (\(mine.tier.rawValue))",
                        newName: "\(other) (\(theirs.tier.rawValue))"
                    )
                    if !text.isEmpty {
                        any = true
                        print(text, terminator: "")
                    }
                }
                if !any { FileHandle.standardError.write(Data("no differences\n".utf8)) }
                return
            }
            if let output = self.output {
                try? FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
                for config in configs {
                    let file = (output as NSString).appendingPathComponent("\(config.tier.rawValue).yaml")
                    do {
                        try Data(config.yaml.utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
                    } catch {
                        printError("\(file): cannot write: \(error.localizedDescription)")
                        throw Exit.usage
                    }
                    print("\(file) sha256:\(config.hash)")
                }
                return
            }
            for (index, config) in configs.enumerated() {
                if index > 0 { print("---") }
                print(config.yaml, terminator: "")
                FileHandle.standardError.write(Data("\(config.tier.rawValue) sha256:\(config.hash)\n".utf8))
            }
        }

        private func renderSet(_ path: String, tiers: [Tier], membership: Membership) throws -> [RenderedConfig] {
            let policySet = try compiledPolicies(path)
            let fleet = try self.fleetFlags.fleet(near: path)
            var configs: [RenderedConfig] = []
            var failed = false
            for tier in tiers {
                switch ConfigRenderer.render(tier, policySet: policySet, fleet: fleet, membership: membership) {
                case .success(let config):
                    for warning in config.warnings where !configs.contains(where: { $0.warnings.contains(warning) }) {
                        FileHandle.standardError.write(Data((warning.description + "\n").utf8))
                    }
                    configs.append(config)
                case .failure(let problems):
                    FileHandle.standardError.write(Data((problems.description + "\n").utf8))
                    failed = true
                }
            }
            if failed { throw Exit.problems }
            return configs
        }

    }
}

extension Tier: ExpressibleByArgument {}
