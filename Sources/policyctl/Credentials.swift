import ArgumentParser
import Foundation
import NIOHTTP1

/// `policyctl tokens`: enrolment tokens that admit new agents.
struct Tokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Enrolment tokens: each admits new agents (of one tier) until it expires or is revoked.",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Token: Decodable {
        var id: String
        var name: String
        var tier: String?
        var createdAt: Date
        var createdBy: String
        var expiresAt: Date?
        var revokedAt: Date?
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an enrolment token; its secret is printed once and never again."
        )
        @Option(help: "The tier agents admitted with it must be in: sampling or lb (default: any).")
        var tier: String?
        @Option(help: "How long it admits agents: 30m, 24h, 7d (default: until revoked).")
        var expires: String?
        @Option(help: "What it is for (shown in listings and logs).")
        var name = "enrolment"
        @OptionGroup var server: ServerOptions

        struct Body: Encodable {
            var name: String
            var tier: String?
            var expiresInSeconds: Double?
        }
        struct Created: Decodable {
            var token: Token
            var secret: String
        }

        func run() async throws {
            let seconds = try self.expires.map(Self.duration)
            try await runClient {
                let client = APIClient(options: self.server)
                let bytes = try await client.call(
                    .POST,
                    "/v1/enrolment-tokens",
                    body: Body(name: self.name, tier: self.tier, expiresInSeconds: seconds)
                )
                if self.server.output == .json { return printJSON(bytes) }
                let created = try client.decode(Created.self, bytes)
                print(created.secret)
                let until = created.token.expiresAt.map { "until \($0)" } ?? "until revoked"
                FileHandle.standardError.write(
                    Data(
                        "enrolment token \(created.token.id) for tier \(created.token.tier ?? "any"), \(until); the secret above is not shown again\n"
                            .utf8
                    )
                )
            }
        }

        static func duration(_ text: String) throws -> Double {
            let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
            guard let unit = text.last, let factor = units[unit], let value = Double(text.dropLast()), value > 0 else {
                throw ValidationError("--expires is a number and a unit: 30m, 24h, 7d")
            }
            return value * factor
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every enrolment token (never its secret).")
        @OptionGroup var server: ServerOptions

        func run() async throws {
            try await show("/v1/enrolment-tokens", as: [Token].self, self.server) { tokens in
                printTable(
                    ["ID", "NAME", "TIER", "CREATED BY", "EXPIRES", "STATE"],
                    tokens.map { token in
                        [
                            token.id, token.name, token.tier ?? "any", token.createdBy,
                            token.expiresAt.map { "\($0)" } ?? "never",
                            token.revokedAt != nil
                                ? "revoked" : (token.expiresAt.map { $0 < Date() } ?? false) ? "expired" : "valid",
                        ]
                    }
                )
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop an enrolment token admitting agents.")
        @Argument(help: "The token's id (from `policyctl tokens list`).")
        var id: String
        @OptionGroup var server: ServerOptions

        func run() async throws {
            try await runClient {
                _ = try await APIClient(options: self.server).call(.DELETE, "/v1/enrolment-tokens/\(self.id)")
                print("enrolment token \(self.id) revoked")
            }
        }
    }
}

extension Agents {
    /// `policyctl agents revoke UID`.
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Refuse an agent from now on, whatever it presents, and close its connection."
        )
        @Argument(help: "The agent's instance UID.")
        var uid: String
        @Option(help: "Why (kept with the revocation and logged when it tries again).")
        var reason = "revoked by policyctl"
        @OptionGroup var server: ServerOptions

        struct Body: Encodable { var reason: String }

        func run() async throws {
            try await runClient {
                _ = try await APIClient(options: self.server).call(
                    .POST,
                    "/v1/agents/\(self.uid)/revoke",
                    body: Body(reason: self.reason)
                )
                print("agent \(self.uid) revoked: \(self.reason)")
            }
        }
    }

    struct OfferResult: Decodable {
        var instanceUID: String
        var offered: Bool
        var detail: String
    }

    /// `policyctl agents rotate-cert`.
    struct RotateCertificates: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-cert",
            abstract:
                "Give connected agents new client certificates a batch at a time, each batch confirmed reconnected before the next."
        )
        @Option(help: "Only agents of this tier: sampling or lb.")
        var tier: String?
        @Option(name: .customLong("agent"), help: "Only this agent (repeatable).")
        var agents: [String] = []
        @Option(help: "Agents per batch (default: a tenth, at least one).")
        var batch: Int?
        @Flag(help: "Wait until the rotation ends; exit 1 unless it succeeded.")
        var wait = false
        @OptionGroup var server: ServerOptions

        struct Body: Encodable {
            var agents: [String]?
            var tier: String?
            var batchSize: Int?
        }
        struct Rotation: Decodable {
            struct Entry: Decodable {
                var state: String
                var detail: String?
            }
            var id: Int
            var phase: String
            var waiting: [String]
            var entries: [String: Entry]
            var failure: String?
        }

        func run() async throws {
            try await runClient {
                let client = APIClient(options: self.server)
                let body = Body(agents: self.agents.isEmpty ? nil : self.agents, tier: self.tier, batchSize: self.batch)
                var rotation = try client.decode(
                    Rotation.self,
                    try await client.call(.POST, "/v1/certificate-rotations", body: body)
                )
                print("certificate rotation \(rotation.id): \(rotation.waiting.count) agents")
                guard self.wait else { return }
                while rotation.phase == "running" {
                    try await Task.sleep(for: .seconds(1))
                    rotation = try await client.get("/v1/certificate-rotations/current", as: Rotation.self)
                }
                let done = rotation.entries.values.filter { $0.state == "done" }.count
                let skipped = rotation.entries.filter { $0.value.state == "skipped" }
                print("rotation \(rotation.id) \(rotation.phase): \(done) agents on new certificates")
                for (uid, entry) in skipped.sorted(by: { $0.key < $1.key }) {
                    print("  skipped \(uid): \(entry.detail ?? "")")
                }
                if let failure = rotation.failure { print("  \(failure)") }
                if rotation.phase != "succeeded" {
                    throw ClientFailure(message: "rotation \(rotation.id) \(rotation.phase)", exitCode: ExitCode(1))
                }
            }
        }
    }

    /// `policyctl agents issue-cert UID`.
    struct IssueCertificate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue-cert",
            abstract: "Make a client certificate for an agent and offer it in OpAMP connection settings."
        )
        @Argument(help: "The agent's instance UID.")
        var uid: String
        @OptionGroup var server: ServerOptions

        func run() async throws {
            try await runClient {
                let client = APIClient(options: self.server)
                let bytes = try await client.call(.POST, "/v1/agents/\(self.uid)/certificate")
                let result = try client.decode(OfferResult.self, bytes)
                print("\(result.instanceUID): \(result.detail)")
                if !result.offered { throw ClientFailure(message: result.detail, exitCode: Exit.usage) }
            }
        }
    }

    /// `policyctl agents csr list|approve|deny`.
    struct CertificateRequests: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "csr",
            abstract: "Certificate requests from agents that are not enrolled: list, approve, deny.",
            subcommands: [List.self, Decide.self],
            defaultSubcommand: List.self
        )

        struct Request: Decodable {
            var instanceUID: String
            var tier: String?
            var principal: String
            var receivedAt: Date
            var state: String
            var decidedBy: String?
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Requests, pending first.")
            @OptionGroup var server: ServerOptions

            func run() async throws {
                try await show("/v1/certificate-requests", as: [Request].self, self.server) { requests in
                    printTable(
                        ["AGENT", "TIER", "SENT WITH", "RECEIVED", "STATE", "DECIDED BY"],
                        requests.map {
                            [
                                $0.instanceUID, $0.tier ?? "-", $0.principal, "\($0.receivedAt)", $0.state,
                                $0.decidedBy ?? "",
                            ]
                        }
                    )
                }
            }
        }

        struct Decide: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "decide",
                abstract: "Approve (sign and offer the certificate) or deny an agent's pending request."
            )
            @Argument(help: "approve or deny")
            var decision: String
            @Argument(help: "The agent's instance UID.")
            var uid: String
            @OptionGroup var server: ServerOptions

            func validate() throws {
                guard ["approve", "deny"].contains(self.decision) else {
                    throw ValidationError("the decision is `approve` or `deny`")
                }
            }

            func run() async throws {
                try await runClient {
                    let client = APIClient(options: self.server)
                    let bytes = try await client.call(.POST, "/v1/certificate-requests/\(self.uid)/\(self.decision)")
                    let result = try client.decode(OfferResult.self, bytes)
                    print("\(result.instanceUID): \(result.detail)")
                }
            }
        }
    }
}
