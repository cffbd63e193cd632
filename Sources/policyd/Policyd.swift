import ArgumentParser
import CMalloc
import ControlPlane
import Credentials
import Foundation
import Logging
import OpAMPServer
import ServiceLifecycle
import UnixSignals

/// `policyd`: the Tailplane control plane daemon.
@main
struct Policyd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policyd",
        abstract: "The Tailplane control plane: versions, staged rollouts and the ring, over OpAMP.",
        version: "0.1.0",
        subcommands: [Serve.self, Demo.self, CA.self],
        defaultSubcommand: Serve.self
    )

    /// Expands `serve --config FILE` into flags before parsing.
    static func main() async {
        do {
            var command = try parseAsRoot(try ConfigFile.expand(Array(CommandLine.arguments.dropFirst())))
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

extension Policyd {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Serve OpAMP (WebSocket and plain HTTP on one port) and the control plane API until SIGTERM or SIGINT."
        )

        @Option(help: "OpAMP port.")
        var opampPort = 4320

        @Option(help: "Address to bind for OpAMP.")
        var bind = "0.0.0.0"

        @Option(help: "API port.")
        var apiPort = 4321

        @Option(help: "Address to bind for the API (without API tokens only loopback is allowed).")
        var apiBind = "127.0.0.1"

        @Option(
            help:
                "Where the store lives (SQLite, one policyd per directory) and, with --database, the files (packages, keys)."
        )
        var dataDir = "./tailplane-data"

        @Option(
            help:
                "PostgreSQL store instead of SQLite: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=FILE]; the password may come from PGPASSWORD (docs/ha.md)."
        )
        var database: String?

        @Option(
            help:
                "With --database: this replica's name in the lease and in logs (default: the host name; each process adds a random suffix of its own)."
        )
        var replicaName: String?

        @Option(
            help:
                "With --database: the URL other replicas reach this API at, where followers forward writes (default: from --api-bind and --api-port)."
        )
        var advertisedApiUrl: String?

        @Option(
            help:
                "File with API tokens, one `ROLE NAME TOKEN` per line (also: POLICYD_API_TOKENS, `role:name:token,…`)."
        )
        var apiTokensFile: String?

        @Flag(inversion: .prefixedNo, help: "Take samplers out of the ring before they get a new config.")
        var drain = true

        @Option(help: "Seconds a rollout batch or bake may go without progress before the rollout fails.")
        var stageTimeout = 600.0

        @Option(help: "A YAML file with the same settings as these flags (`api_port: 4321`); flags win.")
        var config: String?

        @Option(help: "Largest agent message in bytes, after decompression.")
        var maxMessageSize = 64 * 1024 * 1024

        @Option(help: "Most concurrent agent connections; beyond it agents get 503 with Retry-After.")
        var maxConnections = 20_000

        @Option(
            help: "File with accepted agent bearer tokens, one per line (also: POLICYD_AGENT_TOKENS, comma-separated)."
        )
        var agentTokensFile: String?

        @Option(help: "URL agents should use to reach this server; enables heartbeat-interval offers.")
        var advertisedEndpoint: String?

        @Option(help: "Heartbeat interval offered to agents that report heartbeats, in seconds.")
        var heartbeatInterval: UInt64 = 30

        @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
        var logLevel: Logger.Level = .info

        @Option(help: "TLS certificate chain (PEM) for both ports; reloaded when the file changes.")
        var tlsCert: String?

        @Option(help: "TLS private key (PEM) for --tls-cert; reloaded when the file changes.")
        var tlsKey: String?

        @Option(
            help:
                "CA certificates (PEM) that signed --tls-cert, sent to agents with the certificates they are given so they can verify policyd (default: the chain in --tls-cert after the leaf)."
        )
        var tlsCA: String?

        @Option(
            help:
                "CA certificates (PEM) that agent client certificates must chain to (default with a CA: the CA's own)."
        )
        var clientCA: String?

        @Flag(help: "Refuse OpAMP connections without a client certificate (mutual TLS only).")
        var requireClientCert = false

        @Option(help: "Directory of the built-in CA (`policyd ca init`); default: DATA_DIR/ca when it exists.")
        var caDir: String?

        @Option(help: "File with enrolment tokens, one `TIER NAME TOKEN` per line (TIER: sampling, lb or any).")
        var enrolmentTokensFile: String?

        @Option(
            help:
                "URL agents download packages from: this API as agents reach it (default: the API's own address; needed with a wildcard --api-bind)."
        )
        var packageBaseUrl: String?

        @Option(
            help:
                "Ed25519 key packages are signed with (default DATA_DIR/packages/signing.key); with replicas, give every one the same file."
        )
        var packageSigningKey: String?

        @Option(help: "Largest package accepted by `policyctl packages push`, in MiB.")
        var maxPackageSize: Int64 = 2048

        @Option(help: "Lifetime of agent certificates the CA issues, in days.")
        var certLifetimeDays = 30.0

        @Option(help: "Share of a certificate's lifetime after which it is renewed (0.67: after 20 of 30 days).")
        var certRenewAt = 2.0 / 3.0

        func validate() throws {
            guard (1...65535).contains(self.opampPort) || self.opampPort == 0 else {
                throw ValidationError("--opamp-port must be 0…65535")
            }
            guard (1...65535).contains(self.apiPort) || self.apiPort == 0 else {
                throw ValidationError("--api-port must be 0…65535")
            }
            guard self.stageTimeout >= 1 else { throw ValidationError("--stage-timeout must be at least 1 second") }
            guard self.maxMessageSize >= 1024 else {
                throw ValidationError("--max-message-size must be at least 1024 bytes")
            }
            guard self.maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
            guard self.heartbeatInterval >= 1 else {
                throw ValidationError("--heartbeat-interval must be at least 1 second")
            }
            guard (self.tlsCert == nil) == (self.tlsKey == nil) else {
                throw ValidationError("--tls-cert and --tls-key go together")
            }
            if self.requireClientCert || self.clientCA != nil, self.tlsCert == nil {
                throw ValidationError("client certificates need TLS: give --tls-cert and --tls-key")
            }
            guard self.certLifetimeDays >= 1 / 24 else {
                throw ValidationError("--cert-lifetime-days must be at least one hour (0.042)")
            }
            guard self.certRenewAt > 0.1, self.certRenewAt < 0.95 else {
                throw ValidationError("--cert-renew-at is a share of the lifetime between 0.1 and 0.95")
            }
        }

        func run() async throws {
            // Freed download chunks go back to the system (docs/performance.md, "Packages").
            _ = tailplane_return_large_buffers()
            let level = self.logLevel
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            let logger = Logger(label: "policyd")
            let security = try self.security(logger: logger)
            var configuration = OpAMPServerConfiguration()
            configuration.host = self.bind
            configuration.port = self.opampPort
            configuration.maxMessageSize = self.maxMessageSize
            configuration.maxConnections = self.maxConnections
            // Beyond the open-file limit a connection is not refused but the process dies (Dispatch needs
            // files too): hold fewer, and let the rest get 503 with Retry-After.
            if let files = OpAMPServerConfiguration.raiseOpenFileLimit() {
                let ceiling = OpAMPServerConfiguration.connectionCeiling(openFiles: files)
                if self.maxConnections > ceiling {
                    logger.warning(
                        "--max-connections \(self.maxConnections) is more than this process can keep open (\(files) open files, `ulimit -n`, \(OpAMPServerConfiguration.reservedFiles) kept for the API, the database and files): at most \(ceiling) agents connect, the others get 503 with Retry-After; raise the limit to hold more"
                    )
                    configuration.maxConnections = ceiling
                }
            }
            configuration.advertisedEndpoint = self.advertisedEndpoint
            configuration.heartbeatIntervalSeconds = self.heartbeatInterval
            configuration.agentTokens = try self.tokens()
            configuration.tls = security.opampTLS?.configuration()
            configuration.serverCAPEM = security.serverCAPEM
            let apiTokens = try Self.apiTokens(file: self.apiTokensFile)
            if apiTokens.isEmpty, !["127.0.0.1", "::1", "localhost"].contains(self.apiBind) {
                throw ValidationError(
                    "the API has no tokens, so it may only listen on loopback; give --api-tokens-file or POLICYD_API_TOKENS to bind \(self.apiBind)"
                )
            }
            if apiTokens.isEmpty {
                logger.warning("no API tokens configured: anyone on this machine may use the API (loopback only)")
            }
            let store: any ControlPlaneStore
            var dataDirectoryLock: DataDirectoryLock?
            var leadership: Leadership?
            do {
                if let database = self.database {
                    // The files (packages, keys) stay in the data directory: one policyd per directory still.
                    dataDirectoryLock = try DataDirectoryLock(directory: URL(fileURLWithPath: self.dataDir))
                    let postgres = try PostgresStoreConfiguration(url: database)
                    let postgresStore = try PostgresStore(
                        configuration: postgres,
                        logger: Logger(label: "policyd.store")
                    )
                    store = postgresStore
                    let api =
                        self.advertisedApiUrl
                        ?? ControlPlaneServer.url(host: self.apiBind, port: self.apiPort, tls: self.tlsCert != nil)
                    if self.advertisedApiUrl == nil, ["127.0.0.1", "::1", "localhost"].contains(self.apiBind) {
                        logger.warning(
                            "the API's address for other replicas is loopback (\(api ?? "")): replicas on other hosts cannot forward writes here; set --api-bind and --advertised-api-url"
                        )
                    }
                    if api == nil {
                        logger.warning(
                            "other replicas cannot forward API writes here: set --advertised-api-url (the API binds \(self.apiBind):\(self.apiPort))"
                        )
                    }
                    leadership = Leadership(
                        replica: self.replicaName ?? Leadership.defaultReplicaName(),
                        api: api,
                        coordination: postgresStore,
                        // Replicas' API certificates are signed by the CA that signed this one's (--tls-ca).
                        forwarding: try Leadership.forwardingClient(trustingPEM: security.serverCAPEM)
                    )
                    logger.info("store: PostgreSQL \(postgres.summary); replica \(leadership?.replica ?? "")")
                } else {
                    store = try SQLiteStore(directory: URL(fileURLWithPath: self.dataDir))
                }
            } catch {
                throw ValidationError("\(error)")
            }
            var options = ControlPlaneOptions()
            options.drain = self.drain
            options.stageTimeoutSeconds = self.stageTimeout
            options.packageBaseURL =
                self.packageBaseUrl
                ?? Self.packageBaseURL(
                    advertised: self.advertisedEndpoint,
                    apiPort: self.apiPort,
                    tls: self.tlsCert != nil
                )
            if options.packageBaseURL == nil {
                logger.warning(
                    "packages are offered at the API's own address (\(self.apiBind)); agents on other machines cannot download them: set --package-base-url (or --advertised-endpoint)"
                )
            }
            let packages: PackageRepository
            do {
                packages = try PackageRepository(
                    directory: URL(fileURLWithPath: self.dataDir).appendingPathComponent("packages"),
                    store: store,
                    maxPackageBytes: self.maxPackageSize * 1024 * 1024,
                    signingKeyFile: self.packageSigningKey.map { URL(fileURLWithPath: $0) }
                )
            } catch {
                throw ValidationError("\(error)")
            }
            if !packages.signsWithTheFleetKey {
                logger.warning(
                    "this replica's package signing key is not the one the fleet's packages are signed with: pushes through it are refused while it leads; give it the same key (copy packages/signing.key from the replica that took the first push, or --package-signing-key)"
                )
            }
            let access: AgentAccess
            do {
                access = try AgentAccess(
                    store: store,
                    authority: security.authority,
                    certificatePolicy: CertificatePolicy(
                        lifetime: self.certLifetimeDays * 86_400,
                        renewAfterFraction: self.certRenewAt
                    ),
                    sharedTokens: configuration.agentTokens,
                    enrolmentTokens: try Self.enrolmentTokens(file: self.enrolmentTokensFile),
                    serverCAPEM: security.serverCAPEM,
                    serverUsesTLS: security.opampTLS != nil
                )
            } catch let error as ValidationError {
                throw error
            } catch {
                throw ValidationError("cannot load agent credentials: \(error)")
            }
            if access.open, !self.requireClientCert {
                logger.warning(
                    "no agent credentials configured: any client may connect (set --agent-tokens-file, --enrolment-tokens-file or create a CA)"
                )
            }
            configuration.access = access
            let server = OpAMPServer(configuration: configuration, logger: Logger(label: "policyd.opamp"))
            let control = try ControlPlaneServer(
                store: store,
                registry: server.registry,
                options: options,
                tokens: apiTokens,
                host: self.apiBind,
                port: self.apiPort,
                tls: security.apiTLS?.configuration(),
                access: access,
                packages: packages,
                leadership: leadership,
                logger: Logger(label: "policyd.control")
            )
            // Services stop in reverse order: the elector last, so the lease is given up after the last step.
            let elector: [ServiceGroupConfiguration.ServiceConfiguration] =
                leadership.map {
                    [.init(service: LeaderElector(leadership: $0, logger: Logger(label: "policyd.leader")))]
                }
                ?? []
            var groupConfiguration = ServiceGroupConfiguration(
                services: elector + [
                    .init(service: server), .init(service: control),
                    .init(service: AgentEventLog(registry: server.registry)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
            // A service that does not stop (a request that never ends) is cancelled after 20 s rather than keep
            // the process, and the lease, alive; within Kubernetes' default 30 s grace, so the lease is given up
            // before a SIGKILL.
            groupConfiguration.maximumGracefulShutdownDuration = .seconds(20)
            groupConfiguration.maximumCancellationDuration = .seconds(5)
            let group = ServiceGroup(configuration: groupConfiguration)
            do {
                try await group.run()
            } catch {
                await leadership?.stopForwarding()
                throw error
            }
            await leadership?.stopForwarding()
            withExtendedLifetime(dataDirectoryLock) {}
            logger.info("stopped")
        }

        /// Where agents download packages, from the address they reach OpAMP at: the same host, the API port.
        static func packageBaseURL(advertised: String?, apiPort: Int, tls: Bool) -> String? {
            // With --api-port 0 the port is known only once it listens: the server sets the address then.
            guard let advertised, let host = URL(string: advertised)?.host, !host.isEmpty else { return nil }
            return ControlPlaneServer.url(host: host, port: apiPort, tls: tls)
        }

        /// The CA (when there is one) and the ports' TLS material.
        private func security(logger: Logger) throws -> (
            authority: CertificateAuthority?, opampTLS: ServerTLS?, apiTLS: ServerTLS?, serverCAPEM: String?
        ) {
            let caDirectory = URL(fileURLWithPath: self.caDir ?? (self.dataDir + "/ca"))
            var authority: CertificateAuthority?
            if self.caDir != nil
                || FileManager.default.fileExists(
                    atPath: caDirectory.appendingPathComponent(CertificateAuthority.certificateFile).path
                )
            {
                do {
                    authority = try CertificateAuthority.load(directory: caDirectory)
                } catch {
                    throw ValidationError("\(error)")
                }
                logger.info("certificate authority loaded", metadata: ["directory": "\(caDirectory.path)"])
            }
            guard let certificate = self.tlsCert, let key = self.tlsKey else { return (authority, nil, nil, nil) }
            let serverCA: String?
            do {
                serverCA = try ServerTLS.issuerPEM(certificatePath: certificate, caPath: self.tlsCA)
            } catch {
                throw ValidationError("--tls-ca: \(error)")
            }
            if serverCA == nil, authority != nil {
                logger.warning(
                    "policyd does not know the CA of its TLS certificate (--tls-ca), so it cannot give agents certificates: they could not verify policyd afterwards"
                )
            }
            let clientCA =
                self.clientCA
                ?? authority.map { _ in caDirectory.appendingPathComponent(CertificateAuthority.certificateFile).path }
            let tlsLogger = Logger(label: "policyd.tls")
            do {
                let report: @Sendable (ServerTLS.ReloadOutcome) -> Void = { outcome in
                    switch outcome {
                    case .reloaded(let fingerprint):
                        tlsLogger.notice("TLS certificate reloaded", metadata: ["sha256": "\(fingerprint)"])
                    case .failed(let reason):
                        tlsLogger.error(
                            "TLS files changed but do not load; the previous certificate stays in use",
                            metadata: ["reason": "\(reason)"]
                        )
                    }
                }
                let opamp = try ServerTLS(
                    certificatePath: certificate,
                    keyPath: key,
                    clientCAPath: clientCA,
                    clientCertificates: clientCA == nil
                        ? ServerTLS.ClientCertificates.none : self.requireClientCert ? .required : .optional,
                    report: report
                )
                // The API authenticates with bearer tokens: it never asks for a client certificate, so
                // --require-client-cert cannot lock policyctl out.
                let api = try ServerTLS(certificatePath: certificate, keyPath: key)
                return (authority, opamp, api, serverCA)
            } catch {
                throw ValidationError("\(error)")
            }
        }

        /// Enrolment tokens from a file: `TIER NAME TOKEN` per line.
        static func enrolmentTokens(file: String?) throws -> [(secret: String, name: String, tier: AgentTier?)] {
            guard let file else { return [] }
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ValidationError("cannot read --enrolment-tokens-file \(file)")
            }
            do {
                return try EnrolmentToken.parseFile(text, path: file)
            } catch {
                throw ValidationError(error.message)
            }
        }

        /// API tokens from the file and the environment.
        static func apiTokens(file: String?) throws -> [APIToken] {
            var text = ProcessInfo.processInfo.environment["POLICYD_API_TOKENS"] ?? ""
            if let file {
                guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else {
                    throw ValidationError("cannot read --api-tokens-file \(file)")
                }
                text += "\n" + contents
            }
            do {
                return try APIToken.parse(text)
            } catch {
                throw ValidationError("\(error)")
            }
        }

        private func tokens() throws -> Set<String> {
            var tokens = Set<String>()
            if let environment = ProcessInfo.processInfo.environment["POLICYD_AGENT_TOKENS"] {
                tokens.formUnion(
                    environment.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
                        !$0.isEmpty
                    }
                )
            }
            if let path = self.agentTokensFile {
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw ValidationError("cannot read --agent-tokens-file \(path)")
                }
                tokens.formUnion(
                    text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter {
                        !$0.isEmpty && !$0.hasPrefix("#")
                    }
                )
            }
            return tokens
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Reads the agent event stream (so nothing piles up) and logs it, until the control plane consumes it.
struct AgentEventLog: Service {
    let registry: AgentRegistry
    let logger = Logger(label: "policyd.agents")

    func run() async throws {
        let subscription = self.registry.subscribe()
        defer { subscription.cancel() }
        await cancelWhenGracefulShutdown {
            for await delivery in subscription {
                guard case .event(let record) = delivery else {
                    self.logger.warning("agent event log fell behind; events were skipped")
                    continue
                }
                let event = record.event
                switch event {
                case .connected(let uid, let transport):
                    self.logger.debug(
                        "agent connected",
                        metadata: ["agent": "\(uid)", "transport": "\(transport.rawValue)"]
                    )
                case .disconnected(let uid, let reason):
                    self.logger.debug("agent disconnected", metadata: ["agent": "\(uid)", "reason": "\(reason)"])
                case .remoteConfigRejected(let uid, _, let message, let rolledBack):
                    self.logger.warning(
                        "agent rejected its config",
                        metadata: ["agent": "\(uid)", "error": "\(message)", "rolled_back": "\(rolledBack)"]
                    )
                default:
                    self.logger.trace("agent event", metadata: ["agent": "\(event.instanceUID)"])
                }
            }
        }
    }
}

extension Policyd {
    /// `policyd ca init`: the built-in certificate authority.
    struct CA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ca",
            abstract: "The built-in certificate authority that issues agent client certificates.",
            subcommands: [Init.self]
        )

        struct Init: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Create a CA (ECDSA P-256) in DATA_DIR/ca: ca.pem, and ca.key readable by its owner only."
            )

            @Option(help: "The data directory policyd serves from.")
            var dataDir = "./tailplane-data"

            @Option(help: "Where to put the CA instead of DATA_DIR/ca.")
            var caDir: String?

            @Option(help: "The CA's common name.")
            var name = "Tailplane agent CA"

            @Option(help: "Years the CA certificate is valid.")
            var years = 10

            func run() throws {
                let directory = URL(fileURLWithPath: self.caDir ?? (self.dataDir + "/ca"))
                guard (1...50).contains(self.years) else { throw ValidationError("--years must be 1…50") }
                let authority: CertificateAuthority
                do {
                    authority = try CertificateAuthority.create(
                        directory: directory,
                        name: self.name,
                        years: self.years
                    )
                } catch {
                    throw ValidationError("\(error)")
                }
                print("created a CA in \(directory.path)")
                print("  certificate: \(directory.appendingPathComponent(CertificateAuthority.certificateFile).path)")
                print(
                    "  private key: \(directory.appendingPathComponent(CertificateAuthority.privateKeyFile).path) (mode 0600; back it up, never share it)"
                )
                print("  sha256:      \(Fingerprint.sha256(pem: authority.certificatePEM) ?? "?")")
                print(
                    "policyd serve --data-dir \(self.dataDir) picks it up; with --tls-cert/--tls-key it also verifies agent client certificates against it."
                )
            }
        }
    }
}
