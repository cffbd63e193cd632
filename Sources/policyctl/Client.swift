import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import PolicyEngine

/// Where the control plane is and how to talk to it; shared by every command that calls policyd.
struct ServerOptions: ParsableArguments {
    @Option(help: "policyd API address (also: POLICYCTL_SERVER).")
    var server: String?

    @Option(help: "Bearer token (also: POLICYCTL_TOKEN).")
    var token: String?

    @Option(help: "Output: table or json.")
    var output: OutputFormat = .table

    @Option(help: "CA certificate (PEM) to trust for an https:// server with a private CA (also: POLICYCTL_CA_CERT).")
    var caCert: String?

    var caCertPath: String? { self.caCert ?? ProcessInfo.processInfo.environment["POLICYCTL_CA_CERT"] }

    var baseURL: String {
        let value = self.server ?? ProcessInfo.processInfo.environment["POLICYCTL_SERVER"] ?? "http://127.0.0.1:4321"
        return value.hasSuffix("/") ? String(value.dropLast()) : value
    }

    var bearer: String? { self.token ?? ProcessInfo.processInfo.environment["POLICYCTL_TOKEN"] }
}

enum OutputFormat: String, ExpressibleByArgument {
    case table, json
}

/// An API call that did not succeed: one clear line, and the exit code it deserves.
struct ClientFailure: Error {
    var message: String
    var exitCode: ExitCode
    var body: [UInt8] = []
    /// The API's error code, when the answer had one.
    var code: String? = nil
    /// The answer's `Retry-After`, in seconds (1–10).
    var retryAfter: Int? = nil
}

/// A thin JSON client for the policyd API.
struct APIClient {
    let options: ServerOptions

    struct ErrorBody: Decodable {
        struct Inner: Decodable {
            var code: String
            var message: String
            var diagnostics: [Diagnostic]?
            var fleetDiagnostics: [FleetProblem]?
        }
        /// A problem with `fleet.yaml` or the packages it pins.
        struct FleetProblem: Decodable {
            var message: String
            var suggestion: String?
        }
        var error: Inner
    }

    /// One client for the process: a refused connection fails at once (no retries until a deadline), so a
    /// server that is down is one quick line, not a minute of waiting.
    static let http: HTTPClient = Self.makeClient(trusting: nil)

    /// The shared client, or one that trusts a private CA.
    static func client(trusting caPath: String?) throws -> HTTPClient {
        guard let caPath else { return Self.http }
        guard let roots = try? NIOSSLCertificate.fromPEMFile(caPath), !roots.isEmpty else {
            throw ClientFailure(message: "cannot read a PEM certificate from --ca-cert \(caPath)", exitCode: Exit.usage)
        }
        return Self.makeClient(trusting: roots)
    }

    private static func makeClient(trusting roots: [NIOSSLCertificate]?) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        if let roots {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(roots)
            configuration.tlsConfiguration = tls
        }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    /// Sends a request; returns the status and body of a 2xx answer, throws ``ClientFailure`` otherwise.
    func call(_ method: HTTPMethod, _ path: String, body: (any Encodable)? = nil) async throws -> [UInt8] {
        var request = HTTPClientRequest(url: self.options.baseURL + path)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        if let token = self.options.bearer { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            let data = try JSONEncoder().encode(body)
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Array(data)))
        }
        // While replicas elect a leader, a write answers 503 `no_leader` having done nothing: sent again after
        // the `Retry-After` the server gives, for up to 30 s.
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                return try await self.send(request, timeout: .seconds(60))
            } catch let failure as ClientFailure {
                guard let wait = failure.retryAfter, failure.code == "no_leader",
                    ContinuousClock.now + .seconds(wait) < deadline
                else { throw failure }
                printError("\(failure.message) (retrying in \(wait) s)")
                try await Task.sleep(for: .seconds(wait))
            }
        }
    }

    /// Sends a prepared request; returns the body of a 2xx answer, throws ``ClientFailure`` otherwise.
    func send(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> [UInt8] {
        let response: HTTPClientResponse
        do {
            response = try await Self.client(trusting: self.options.caCertPath).execute(request, timeout: timeout)
        } catch {
            throw ClientFailure(
                message: "cannot reach policyd at \(self.options.baseURL): \(Self.describe(error))",
                exitCode: Exit.usage
            )
        }
        let buffer = try await response.body.collect(upTo: 256 * 1024 * 1024)
        let bytes = Array(buffer.readableBytesView)
        guard (200..<300).contains(Int(response.status.code)) else {
            let parsed = try? Self.decoder.decode(ErrorBody.self, from: Data(bytes))
            let message = parsed?.error.message ?? "\(response.status.code) \(response.status.reasonPhrase)"
            let code: ExitCode = response.status.code == 422 ? Exit.problems : Exit.usage
            var failure = ClientFailure(message: message, exitCode: code, body: bytes)
            failure.code = parsed?.error.code
            failure.retryAfter = response.headers.first(name: "Retry-After").flatMap(Int.init).map {
                min(max($0, 1), 10)
            }
            throw failure
        }
        return bytes
    }

    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        try self.decode(type, try await self.call(.GET, path))
    }

    func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T {
        do {
            return try Self.decoder.decode(type, from: Data(bytes))
        } catch {
            throw ClientFailure(
                message: "policyd sent an answer this policyctl cannot read: \(error)",
                exitCode: Exit.usage
            )
        }
    }

    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if text.contains("connectTimeout") || text.contains("connectionRefused") || text.contains("Connection refused")
        {
            return "connection refused (is policyd running? set --server or POLICYCTL_SERVER)"
        }
        return text
    }
}

/// Runs a client command body, turning failures into one line and an exit code.
func runClient(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let failure as ClientFailure {
        printError(failure.message)
        throw failure.exitCode
    }
}

/// GETs `path` and prints it: as JSON with `--output json`, otherwise decoded and handed to `table`.
func show<T: Decodable>(
    _ path: String,
    as type: T.Type,
    _ options: ServerOptions,
    table: (T) throws -> Void
) async throws {
    try await runClient {
        let client = APIClient(options: options)
        let bytes = try await client.call(.GET, path)
        if options.output == .json { return printJSON(bytes) }
        try table(try client.decode(type, bytes))
    }
}

/// Prints rows as aligned columns.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() where index < widths.count {
            widths[index] = max(widths[index], cell.count)
        }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in
            index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}

/// Prints an answer body as indented JSON.
func printJSON(_ bytes: [UInt8]) {
    if let object = try? JSONSerialization.jsonObject(with: Data(bytes)),
        let pretty = try? JSONSerialization.data(
            withJSONObject: object,
            options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        )
    {
        print(String(decoding: pretty, as: UTF8.self))
    } else {
        print(String(decoding: bytes, as: UTF8.self))
    }
}
