import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// `policyctl packages`: the package repository in policyd and package rollouts.
struct PackagesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "packages",
        abstract: "Collector builds and add-ons: push them to policyd and roll them out over OpAMP.",
        subcommands: [Push.self, List.self, Show.self, Delete.self, Rollout.self, SigningKey.self]
    )

    struct Record: Decodable {
        var name: String
        var version: String
        var kind: String
        var size: Int64
        var sha256: String
        var uploader: String
        var uploadedAt: Date
    }

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upload a package file; policyd stores it by content and signs it.",
            discussion:
                "Pushing the same name, version and content again changes nothing; other content under a published version is refused."
        )

        @Argument(help: "The package file (for a collector: the build agents install).")
        var file: String

        @Option(help: "Package name, as fleet.yaml `packages:` names it (otelcol-contrib).")
        var name: String

        @Option(
            help:
                "Version, as published (0.150.0). A top-level package's version is the collector version configs are rendered for."
        )
        var version: String

        @Option(help: "top-level (the collector itself) or addon.")
        var type = "top-level"

        @OptionGroup var server: ServerOptions

        func run() async throws {
            try await runClient {
                let url = URL(fileURLWithPath: self.file)
                guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path),
                    let size = (attributes[.size] as? NSNumber)?.int64Value
                else {
                    throw ClientFailure(message: "cannot read \(self.file)", exitCode: Exit.usage)
                }
                let name = self.name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? self.name
                let version = self.version.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? self.version
                var request = HTTPClientRequest(
                    url: self.server.baseURL + "/v1/packages/\(name)/\(version)?type=\(self.type)"
                )
                request.method = .PUT
                request.headers.add(name: "Accept", value: "application/json")
                request.headers.add(name: "Content-Type", value: "application/octet-stream")
                if let token = self.server.bearer {
                    request.headers.add(name: "Authorization", value: "Bearer \(token)")
                }
                request.body = .stream(FileChunks(path: url.path), length: .known(size))
                let client = APIClient(options: self.server)
                let bytes = try await client.send(request, timeout: .minutes(30))
                if self.server.output == .json { return printJSON(bytes) }
                let record = try client.decode(Record.self, bytes)
                print("\(record.name) \(record.version) (\(record.kind), \(record.size) bytes) sha256 \(record.sha256)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Packages in policyd's repository.")
        @OptionGroup var server: ServerOptions

        func run() async throws {
            try await show("/v1/packages", as: [Record].self, self.server) { records in
                printTable(
                    ["NAME", "VERSION", "TYPE", "SIZE", "SHA256", "BY", "PUSHED"],
                    records.map {
                        [
                            $0.name, $0.version, $0.kind, String($0.size), String($0.sha256.prefix(12)), $0.uploader,
                            ISO8601DateFormatter().string(from: $0.uploadedAt),
                        ]
                    }
                )
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One package: its record, the versions that pin it, the agents that run it."
        )
        @Argument(help: "Package name.") var name: String
        @Argument(help: "Version.") var version: String
        @OptionGroup var server: ServerOptions

        struct Detail: Decodable {
            var package: Record
            var agents: [String]
            var versions: [Int]
        }

        func run() async throws {
            try await show("/v1/packages/\(self.name)/\(self.version)", as: Detail.self, self.server) { detail in
                let record = detail.package
                print("\(record.name) \(record.version) (\(record.kind))")
                print("  size:     \(record.size) bytes")
                print("  sha256:   \(record.sha256)")
                print("  pushed:   \(ISO8601DateFormatter().string(from: record.uploadedAt)) by \(record.uploader)")
                print(
                    "  versions: \(detail.versions.isEmpty ? "none" : detail.versions.map(String.init).joined(separator: ", "))"
                )
                print("  agents:   \(detail.agents.count)")
                for agent in detail.agents.prefix(20) { print("    \(agent)") }
                if detail.agents.count > 20 { print("    … and \(detail.agents.count - 20) more") }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a package; refused while an agent runs it or is offered it."
        )
        @Argument(help: "Package name.") var name: String
        @Argument(help: "Version.") var version: String
        @OptionGroup var server: ServerOptions

        func run() async throws {
            try await runClient {
                _ = try await APIClient(options: self.server).call(.DELETE, "/v1/packages/\(self.name)/\(self.version)")
                print("deleted \(self.name) \(self.version)")
            }
        }
    }

    struct Rollout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Roll a package version out: a new version with the current policies and this package, staged like any rollout.",
            discussion:
                "Exit codes: 0 started (with --wait: every agent runs it), 1 refused (the policies need a newer collector, …), 2 usage or connection errors, 3 rolled back (--wait)."
        )
        @Argument(help: "Package name.") var name: String
        @Argument(help: "Version.") var version: String
        @Option(name: .customLong("tier"), help: "sampling or lb (repeat for both; default: both).")
        var tiers: [String] = []
        @Option(help: "Why (shown in the history).") var message: String?
        @Flag(help: "Follow the rollout until it ends.") var wait = false
        @Flag(help: "Replace a rollout in progress.") var supersede = false
        @Flag(help: "Check and plan on the server; store nothing.") var dryRun = false
        @Option(
            name: .customLong("accept-change"),
            help: "A collector behaviour change the upgrade may cross (its id, as a refusal names it; repeatable)."
        )
        var acceptChanges: [String] = []
        @OptionGroup var server: ServerOptions

        struct Body: Encodable {
            var tiers: [String]
            var message: String?
            var supersede: Bool
            var dryRun: Bool
            var acceptChanges: [String]
        }

        func run() async throws {
            try await runClient {
                let client = APIClient(options: self.server)
                let bytes: [UInt8]
                do {
                    bytes = try await client.call(
                        .POST,
                        "/v1/packages/\(self.name)/\(self.version)/rollout",
                        body: Body(
                            tiers: self.tiers,
                            message: self.message,
                            supersede: self.supersede,
                            dryRun: self.dryRun,
                            acceptChanges: self.acceptChanges
                        )
                    )
                } catch let failure as ClientFailure where failure.exitCode == Exit.problems {
                    struct Refusal: Decodable {
                        struct Inner: Decodable {
                            struct Problem: Decodable {
                                var message: String
                                var suggestion: String?
                            }
                            var fleetDiagnostics: [Problem]?
                        }
                        var error: Inner
                    }
                    let refusal = try? APIClient.decoder.decode(Refusal.self, from: Data(failure.body))
                    for problem in refusal?.error.fleetDiagnostics ?? [] {
                        printError(problem.message + (problem.suggestion.map { " (\($0))" } ?? ""))
                    }
                    throw ClientFailure(message: "the rollout was refused; nothing was stored", exitCode: Exit.problems)
                }
                let result = try client.decode(Apply.Result.self, bytes)
                if self.server.output == .json {
                    printJSON(bytes)
                } else if result.result == "unchanged" {
                    print("version \(result.version) already runs \(self.name) \(self.version)")
                } else if result.result == "dry_run" {
                    print(
                        "dry run: would store version \(result.version) and roll out \(result.tiers.joined(separator: " then "))"
                    )
                } else {
                    print(
                        "version \(result.version) stored with \(self.name) \(self.version); rollout \(result.rollout.map(String.init) ?? "-") started (\(result.tiers.joined(separator: " then ")))"
                    )
                }
                guard self.wait, let rollout = result.rollout else { return }
                let ended = try await follow(client, rollout: rollout)
                print("rollout \(ended.id) \(ended.phase)" + (ended.failure.map { ": \($0)" } ?? ""))
                throw rolloutExitCode(ended)
            }
        }
    }

    struct SigningKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "signing-key",
            abstract: "Print policyd's package signing public key (PEM), for agents to pin."
        )
        @OptionGroup var server: ServerOptions

        func run() async throws {
            try await runClient {
                let bytes = try await APIClient(options: self.server).call(.GET, "/v1/packages/signing-key")
                print(String(decoding: bytes, as: UTF8.self), terminator: "")
            }
        }
    }
}

/// A file read in 1 MiB chunks, for an upload body: the file is never held in memory whole.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String

    struct AsyncIterator: AsyncIteratorProtocol {
        let handle: FileHandle?

        mutating func next() async throws -> ByteBuffer? {
            guard let handle, let data = try handle.read(upToCount: 1 << 20), !data.isEmpty else {
                try? self.handle?.close()
                return nil
            }
            return ByteBuffer(bytes: data)
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(handle: FileHandle(forReadingAtPath: self.path))
    }
}
