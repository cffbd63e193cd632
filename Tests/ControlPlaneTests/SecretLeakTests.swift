import AsyncHTTPClient
import ControlPlane
import FleetSimulator
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A full run of the real `policyd` with every kind of secret in play (API tokens, a shared agent token,
/// enrolment tokens from a file and from the API, the CA key, the server's TLS key, agents' private keys),
/// trace logging on: afterwards no secret appears in its log, in an API answer other than the one that made
/// it, or in the store.
@Suite(.serialized) struct SecretLeakTests {
    @Test func noSecretAppearsInTheLogsTheAPIOrTheStore() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = directory.appendingPathComponent("data")
        let binary = builtExecutable("policyd")

        // policyd ca init prints where the key is, never the key.
        let initProcess = Process()
        initProcess.executableURL = binary
        initProcess.arguments = ["ca", "init", "--data-dir", data.path]
        let initOutput = Pipe()
        initProcess.standardOutput = initOutput
        try initProcess.run()
        initProcess.waitUntilExit()
        #expect(initProcess.terminationStatus == 0)
        let initText = String(decoding: initOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(initText.contains("ca.key"))
        let caKey = try String(contentsOf: data.appendingPathComponent("ca/ca.key"), encoding: .utf8)

        let server = try ServerCertificates(directory: directory)
        let serverCA = directory.appendingPathComponent("server-ca.pem")
        try server.caPEM.write(to: serverCA, atomically: true, encoding: .utf8)
        let adminToken = "admin-token-\(UUID().uuidString)"
        let sharedToken = "shared-agent-token-\(UUID().uuidString)"
        let fileEnrolment = "file-enrolment-token-\(UUID().uuidString)"
        let enrolmentFile = directory.appendingPathComponent("enrolment.txt")
        try "sampling ci \(fileEnrolment)\n".write(to: enrolmentFile, atomically: true, encoding: .utf8)
        let agentTokenFile = directory.appendingPathComponent("agents.txt")
        try "\(sharedToken)\n".write(to: agentTokenFile, atomically: true, encoding: .utf8)
        let opampPort = CrashTests.freePort()
        let apiPort = CrashTests.freePort()
        let log = directory.appendingPathComponent("policyd.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let policyd = Process()
        policyd.executableURL = binary
        policyd.arguments = [
            "serve", "--data-dir", data.path, "--bind", "127.0.0.1", "--opamp-port", String(opampPort),
            "--api-port", String(apiPort), "--log-level", "trace", "--tls-cert", server.certificatePath,
            "--tls-key", server.keyPath, "--tls-ca", serverCA.path, "--enrolment-tokens-file", enrolmentFile.path,
            "--agent-tokens-file",
            agentTokenFile.path, "--advertised-endpoint", "wss://127.0.0.1:\(opampPort)/v1/opamp",
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["POLICYD_API_TOKENS"] = "admin:ops:\(adminToken)"
        policyd.environment = environment
        let handle = try FileHandle(forWritingTo: log)
        policyd.standardError = handle
        policyd.standardOutput = handle
        try policyd.run()
        defer { if policyd.isRunning { kill(policyd.processIdentifier, SIGKILL) } }

        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(server.caPEM.utf8)))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        var answers: [String] = []
        @Sendable func call(_ method: HTTPMethod, _ path: String, _ body: String? = nil) async -> (UInt, String)? {
            var request = HTTPClientRequest(url: "https://127.0.0.1:\(apiPort)\(path)")
            request.method = method
            request.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: body))
            }
            guard let response = try? await client.execute(request, timeout: .seconds(10)),
                let bytes = try? await response.body.collect(upTo: 1 << 22)
            else { return nil }
            return (response.status.code, String(buffer: bytes))
        }
        #expect(await eventually { await call(.GET, "/healthz") != nil })
        let created = await call(.POST, "/v1/enrolment-tokens", #"{"name": "fleet", "tier": "sampling"}"#)
        #expect(created?.0 == 201)
        let secret =
            try #require(
                (try? JSONSerialization.jsonObject(with: Data((created?.1 ?? "").utf8))) as? [String: Any]
            )["secret"] as? String
        let apiEnrolment = try #require(secret)

        // Agents enrol with the API's token, get certificates by CSR, then a rotation gives them new ones.
        var options = FleetOptions()
        options.port = opampPort
        options.agents = 3
        options.loadBalancerShare = 0
        options.token = apiEnrolment
        options.tlsTrustRootsPEM = server.caPEM
        options.acceptsConnectionSettings = true
        options.requestCertificates = true
        options.reconnectDelay = .milliseconds(200)
        options.threads = 1
        let fleet = FleetRunner(options: options)
        let fleetTask = Task { try await fleet.run() }
        // And one with a wrong token, refused and logged.
        var wrong = options
        wrong.agents = 1
        wrong.firstIndex = 50
        wrong.token = "wrong-token-\(UUID().uuidString)"
        let refused = FleetRunner(options: wrong)
        let refusedTask = Task { try await refused.run() }
        #expect(await eventually { fleet.agents().allSatisfy { $0.credential != nil } })
        // Back on their certificates (they reconnect after taking them).
        #expect(
            await eventually {
                let agents = await call(.GET, "/v1/agents")?.1 ?? ""
                return agents.components(separatedBy: #""credential":"certificate:"#).count - 1 == 3
                    && agents.components(separatedBy: #""connected":true"#).count - 1 == 3
            }
        )
        let rotation = await call(.POST, "/v1/certificate-rotations", #"{"batchSize": 1}"#)
        #expect(rotation?.0 == 201, "\(rotation?.1 ?? "no answer")")
        #expect(
            await eventually(timeout: 30) {
                (await call(.GET, "/v1/certificate-rotations/current")?.1 ?? "").contains(#""phase":"succeeded""#)
            }
        )
        for path in ["/v1/agents", "/v1/enrolment-tokens", "/v1/certificate-requests", "/v1/audit", "/metrics"] {
            if let answer = await call(.GET, path) { answers.append(answer.1) }
        }
        let agentKeys = fleet.agents().compactMap { $0.credential?.privateKeyPEM }
        #expect(agentKeys.count == 3)
        fleetTask.cancel()
        refusedTask.cancel()
        await fleet.shutdown()
        await refused.shutdown()
        try await client.shutdown()
        kill(policyd.processIdentifier, SIGTERM)
        policyd.waitUntilExit()
        try handle.close()

        let logText = try String(contentsOf: log, encoding: .utf8)
        #expect(logText.contains("agent refused"), "the wrong token was refused and logged")
        #expect(logText.contains("tailplane_agent_refusals_total") == false)
        let metrics = answers.last ?? ""
        #expect(metrics.contains("tailplane_agent_refusals_total"))
        var store = try Data(contentsOf: data.appendingPathComponent("tailplane.sqlite"))
        store += (try? Data(contentsOf: data.appendingPathComponent("tailplane.sqlite-wal"))) ?? Data()
        let storeText = String(decoding: store, as: UTF8.self)
        #expect(storeText.contains("enrolment_token"), "the store was read")
        var secrets = [adminToken, sharedToken, fileEnrolment, apiEnrolment, wrong.token!]
        let keyFiles = [caKey, try String(contentsOfFile: server.keyPath, encoding: .utf8)] + agentKeys
        for key in keyFiles {
            secrets += key.split(separator: "\n").filter { !$0.hasPrefix("-----") && $0.count >= 16 }.map(String.init)
        }
        #expect(secrets.count > 8)
        for secret in secrets {
            #expect(!logText.contains(secret), "a secret is in policyd's log")
            #expect(!answers.contains { $0.contains(secret) }, "a secret is in an API answer")
            #expect(!storeText.contains(secret), "a secret is in the store")
        }
    }
}
