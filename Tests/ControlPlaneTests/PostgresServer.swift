import ControlPlane
import Foundation
import NIOConcurrencyHelpers

/// A real PostgreSQL server from Debian's packages (`apt-get install postgresql`), started for the tests on a
/// free port in a temporary directory: password (SCRAM) logins over TCP, TLS with a test CA, one database per
/// test. PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the package
/// creates. A watcher shell stops the server and removes its directory once the test process is gone, however
/// it ends.
final class PostgresTestServer: Sendable {
    let port: Int
    let directory: URL
    let password: String
    let certificates: ServerCertificates
    private let binaries: URL
    private let serverArguments: [String]
    private let serverPID = NIOLockedValueBox<Int32>(0)
    private let counter = NIOLockedValueBox(0)

    /// The server every test shares (started on first use).
    static let shared = Result { try PostgresTestServer() }

    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    /// Starts a server of its own (a test that restarts the server uses one).
    init() throws {
        guard let binaries = Self.findBinaries() else {
            throw Unavailable(
                description:
                    "the PostgreSQL server is not installed (no initdb in /usr/lib/postgresql/*/bin): apt-get install postgresql"
            )
        }
        self.binaries = binaries
        self.port = CrashTests.freePort()
        self.password = "test-\(UUID().uuidString)"
        self.directory = URL(fileURLWithPath: "/tmp/tailplane-pg-\(UUID().uuidString.prefix(8))")
        let data = self.directory.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: self.directory.path)
        let passwordFile = self.directory.appendingPathComponent("password")
        try Data(self.password.utf8).write(to: passwordFile)
        self.certificates = try ServerCertificates(directory: self.directory, name: "postgres")
        if Self.isRoot { try Self.run("/bin/chown", ["-R", "postgres:postgres", self.directory.path]) }
        try Self.run(
            binaries.appendingPathComponent("initdb").path,
            [
                "-D", data.path, "-U", "tailplane", "--pwfile", passwordFile.path, "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
            ],
            asServer: true
        )
        // The key must belong to the server's user and be private.
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: self.certificates.keyPath)
        if Self.isRoot { try Self.run("/bin/chown", ["postgres:postgres", self.certificates.keyPath]) }
        self.serverArguments = [
            binaries.appendingPathComponent("postgres").path, "-D", data.path, "-p", "\(self.port)",
            "-k", self.directory.path, "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on",
            "-c", "ssl_cert_file=\(self.certificates.certificatePath)",
            "-c", "ssl_key_file=\(self.certificates.keyPath)",
            // Tests need no durability against power loss; the server stays up across policyd crashes.
            "-c", "fsync=off", "-c", "max_connections=300",
        ]
        try self.start()
    }

    /// Starts the server with a watcher shell: once the test process is gone, however it ended, the watcher
    /// stops the server and removes its directory.
    func start() throws {
        let command = (Self.isRoot ? Self.dropToPostgres : []) + self.serverArguments
        let directory = Self.quote(self.directory.path)
        let watcher = """
            \(command.map(Self.quote).joined(separator: " ")) >> \(directory)/server.log 2>&1 &
            server=$!
            echo $server
            while kill -0 \(getpid()) 2>/dev/null; do
                kill -0 $server 2>/dev/null || exit 0
                sleep 1
            done
            kill -INT $server 2>/dev/null; wait $server; rm -rf \(directory)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", watcher]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1), let first = byte.first, first != 10 {
            line.append(first)
        }
        guard let pid = Int32(String(decoding: line, as: UTF8.self)) else {
            throw Unavailable(description: "PostgreSQL did not start")
        }
        self.serverPID.withLockedValue { $0 = pid }
        try self.waitUntilReady()
    }

    /// Stops the server (a fast shutdown: sessions are cut); ``start()`` brings it back on the same port and data.
    func stop() {
        let pid = self.serverPID.withLockedValue { $0 }
        kill(pid, SIGINT)
        for _ in 0..<400 where kill(pid, 0) == 0 { usleep(50_000) }
    }

    /// Stops the server for good and removes its directory.
    func remove() {
        self.stop()
        try? FileManager.default.removeItem(at: self.directory)
    }

    private func waitUntilReady() throws {
        for _ in 0..<300 {
            if (try? Self.run(
                self.binaries.appendingPathComponent("pg_isready").path,
                ["-h", "127.0.0.1", "-p", "\(self.port)", "-q"]
            )) != nil {
                return
            }
            usleep(100_000)
        }
        let log = (try? String(contentsOf: self.directory.appendingPathComponent("server.log"), encoding: .utf8)) ?? ""
        throw Unavailable(description: "PostgreSQL did not become ready on port \(self.port): \(log)")
    }

    /// A new, empty database; its URL without TLS.
    func makeDatabase() throws -> String {
        let name = self.counter.withLockedValue { value in
            value += 1
            return "t\(getpid())_\(value)_\(UInt32.random(in: 0...UInt32.max))"
        }
        try self.psql("CREATE DATABASE \(name)")
        return self.url(database: name)
    }

    /// A new database's URL over TLS, the server's certificate checked against the test CA and the address
    /// (`sslmode=verify-full`).
    func makeVerifiedDatabase() throws -> String {
        let ca = self.directory.appendingPathComponent("ca.pem")
        try Data(self.certificates.caPEM.utf8).write(to: ca, options: .atomic)
        let url = try self.makeDatabase()
        return url.replacingOccurrences(of: "sslmode=disable", with: "sslmode=verify-full&sslrootcert=\(ca.path)")
    }

    /// The URL of `database` with `parameters` (`sslmode=disable` when none).
    func url(database: String, parameters: String = "sslmode=disable", password: String? = nil) -> String {
        "postgres://tailplane:\(password ?? self.password)@127.0.0.1:\(self.port)/\(database)?\(parameters)"
    }

    /// Runs SQL as the superuser.
    func psql(_ sql: String, database: String = "postgres") throws {
        try Self.run(
            self.binaries.appendingPathComponent("psql").path,
            [
                "-h", "127.0.0.1", "-p", "\(self.port)", "-U", "tailplane", "-d", database, "-v", "ON_ERROR_STOP=1",
                "-q", "-c", sql,
            ],
            environment: ["PGPASSWORD": self.password, "PGSSLMODE": "disable"]
        )
    }

    // MARK: Processes

    private static var isRoot: Bool { getuid() == 0 }

    /// As root: run as `postgres` without a parent process of its own (setpriv execs), so signals reach the
    /// server itself.
    private static let dropToPostgres = [
        "/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
    ]

    /// Runs a program to its end; `asServer`: as the server's user.
    private static func run(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String] = [:],
        asServer: Bool = false
    ) throws {
        let command = (asServer && self.isRoot ? self.dropToPostgres : []) + [executable] + arguments
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Unavailable(
                description:
                    "\(command.joined(separator: " ")) failed: \(String(decoding: message, as: UTF8.self))"
            )
        }
    }

    private static func findBinaries() -> URL? {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? [])
            .compactMap(Int.init).sorted(by: >)
        for version in versions {
            let bin = root.appendingPathComponent("\(version)/bin")
            if FileManager.default.isExecutableFile(atPath: bin.appendingPathComponent("initdb").path) { return bin }
        }
        return nil
    }

    private static func quote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
