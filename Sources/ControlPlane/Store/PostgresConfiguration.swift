import Foundation
import NIOCore
import NIOSSL
import PostgresNIO

/// Where the PostgreSQL store connects and how, read from a libpq-style URL:
/// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=ca.pem`.
///
/// Query parameters, as libpq names them:
/// - `sslmode`: `disable`, `prefer` (the default, as in libpq: TLS when the server offers it, no check),
///   `require` (TLS, no certificate check), `verify-ca` (TLS, the chain checked against `sslrootcert` or the
///   system's roots), `verify-full` (the chain and the host name).
/// - `sslrootcert`: PEM file of the CA(s) to trust; `sslcert` and `sslkey`: a client certificate and key.
/// - `connect_timeout`: seconds (default 10).
/// - `pool_size`: connections per policyd (default 4).
///
/// The password may also come from `PGPASSWORD` when the URL has none.
public struct PostgresStoreConfiguration: Sendable {
    /// How the connection is protected.
    public enum TLSMode: String, Sendable, CaseIterable {
        case disable
        case prefer
        case require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    /// Server host name or address.
    public var host: String
    /// Server port.
    public var port: Int
    /// Role to log in as.
    public var username: String
    /// Password (`nil`: none, or trust or certificate authentication).
    public var password: String?
    /// Database name.
    public var database: String
    /// TLS mode.
    public var tlsMode: TLSMode
    /// CA file for `verify-ca` and `verify-full` (system roots when `nil`).
    public var rootCertificatePath: String?
    /// Client certificate (PEM) for certificate authentication.
    public var clientCertificatePath: String?
    /// Client key (PEM).
    public var clientKeyPath: String?
    /// How long a connection attempt may take.
    public var connectTimeoutSeconds: Int
    /// Connections kept by one policyd.
    public var poolSize: Int

    /// Creates a configuration.
    public init(
        host: String,
        port: Int = 5432,
        username: String,
        password: String? = nil,
        database: String,
        tlsMode: TLSMode = .prefer,
        rootCertificatePath: String? = nil,
        clientCertificatePath: String? = nil,
        clientKeyPath: String? = nil,
        connectTimeoutSeconds: Int = 10,
        poolSize: Int = 4
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tlsMode = tlsMode
        self.rootCertificatePath = rootCertificatePath
        self.clientCertificatePath = clientCertificatePath
        self.clientKeyPath = clientKeyPath
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.poolSize = poolSize
    }

    /// Reads a `postgres://` or `postgresql://` URL.
    /// - Parameter environment: where `PGPASSWORD` is looked up when the URL has no password.
    /// - Throws: ``StoreError`` naming what is wrong with the URL.
    public init(url text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "postgres" || scheme == "postgresql"
        else {
            throw StoreError(
                "--database: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE, got \(Self.redacted(text))"
            )
        }
        guard let host = components.host, !host.isEmpty else {
            throw StoreError("--database \(Self.redacted(text)): the URL names no host")
        }
        guard let username = components.user.flatMap({ $0.removingPercentEncoding }), !username.isEmpty else {
            throw StoreError("--database \(Self.redacted(text)): the URL names no user (postgres://USER@HOST/DATABASE)")
        }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw StoreError("--database \(Self.redacted(text)): the URL names no database (…/DATABASE)")
        }
        self.init(
            host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host,
            port: components.port ?? 5432,
            username: username,
            password: components.password.flatMap { $0.removingPercentEncoding } ?? environment["PGPASSWORD"],
            database: database.removingPercentEncoding ?? database
        )
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else {
                    throw StoreError(
                        "--database: sslmode=\(value) is not one of "
                            + TLSMode.allCases.map(\.rawValue).joined(separator: ", ")
                    )
                }
                self.tlsMode = mode
            case "sslrootcert": self.rootCertificatePath = value
            case "sslcert": self.clientCertificatePath = value
            case "sslkey": self.clientKeyPath = value
            case "connect_timeout":
                guard let seconds = Int(value), seconds > 0, seconds <= 3600 else {
                    throw StoreError("--database: connect_timeout=\(value) must be whole seconds from 1 to 3600")
                }
                self.connectTimeoutSeconds = seconds
            case "pool_size":
                guard let size = Int(value), size >= 1, size <= 100 else {
                    throw StoreError("--database: pool_size=\(value) must be from 1 to 100")
                }
                self.poolSize = size
            default:
                throw StoreError(
                    "--database: unknown parameter \(item.name) (known: sslmode, sslrootcert, sslcert, sslkey, "
                        + "connect_timeout, pool_size)"
                )
            }
        }
        if (self.clientCertificatePath == nil) != (self.clientKeyPath == nil) {
            throw StoreError("--database: sslcert and sslkey go together")
        }
        if self.tlsMode == .disable && (self.rootCertificatePath != nil || self.clientCertificatePath != nil) {
            throw StoreError("--database: sslmode=disable with certificates: choose require, verify-ca or verify-full")
        }
    }

    /// The URL with its password replaced, for logs and errors.
    public static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "xxxxx"
        return components.string ?? "postgres://…"
    }

    /// `user@host:port/database`, for logs.
    public var summary: String {
        "\(self.username)@\(self.host):\(self.port)/\(self.database) (sslmode=\(self.tlsMode.rawValue))"
    }

    /// The connection settings postgres-nio takes.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        if self.tlsMode == .disable {
            tls = .disable
        } else {
            var configuration = TLSConfiguration.makeClientConfiguration()
            switch self.tlsMode {
            case .disable, .prefer, .require: configuration.certificateVerification = .none
            case .verifyCA: configuration.certificateVerification = .noHostnameVerification
            case .verifyFull: configuration.certificateVerification = .fullVerification
            }
            do {
                if let root = self.rootCertificatePath {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(root))
                }
                if let certificate = self.clientCertificatePath, let key = self.clientKeyPath {
                    configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map {
                        .certificate($0)
                    }
                    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                }
            } catch {
                throw StoreError("--database: cannot read the TLS files: \(error)")
            }
            let context: NIOSSLContext
            do {
                context = try NIOSSLContext(configuration: configuration)
            } catch {
                throw StoreError("--database: cannot set up TLS: \(error)")
            }
            tls = self.tlsMode == .prefer ? .prefer(context) : .require(context)
        }
        var configuration = PostgresConnection.Configuration(
            host: self.host,
            port: self.port,
            username: self.username,
            password: self.password,
            database: self.database,
            tls: tls
        )
        configuration.options.connectTimeout = .seconds(Int64(self.connectTimeoutSeconds))
        // A policyd that stops mid-transaction (paused, cut off) must not hold row locks, the lease's among
        // them, until the server notices on its own: its session ends within seconds, so failover does too.
        configuration.options.additionalStartupParameters = [
            ("statement_timeout", "15s"), ("lock_timeout", "5s"), ("idle_in_transaction_session_timeout", "5s"),
            ("tcp_keepalives_idle", "5"), ("tcp_keepalives_interval", "2"), ("tcp_keepalives_count", "3"),
        ]
        // postgres-nio sends a host name as SNI and NIOSSL checks it against the certificate; an address goes
        // without SNI and NIOSSL checks it against the certificate's IP addresses.
        return configuration
    }
}
