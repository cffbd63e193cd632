import ControlPlane
import Credentials
import Crypto
import FleetSimulator
import Foundation
import Logging
import OpAMPProtocol
import OpAMPServer
import SwiftASN1
import X509

/// Credential benchmarks; prints figures, never run as a test.
///
///     swift build -c release --product credentials-bench && .build/release/credentials-bench [agents]
///
/// 1. The CA alone: key pairs and certificates issued per second; CSRs checked and signed per second.
/// 2. Enrolment over real TLS on 127.0.0.1: `agents` simulated supervisors (in this process) connect with an
///    enrolment token, send a CSR, take the certificate and reconnect with it (mutual TLS).
/// 3. A rotation of every agent, a tenth at a time, each batch confirmed reconnected.
let agentCount = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 1000

func say(_ text: String) {
    print(text)
    fflush(nil)
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let duration = ContinuousClock.now - start
    return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func residentMiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }
    return 0
}

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .error
    return handler
}

// 1. The CA alone.
let authority = try CertificateAuthority.generate()
let uids = (0..<2000).map { _ in InstanceUID.version7(unixMilliseconds: 1_800_000_000_000) }
var start = ContinuousClock.now
for uid in uids { _ = try authority.issue(for: AgentIdentity(instanceUID: uid, tier: "sampling")) }
say(String(format: "issue (P-256 key pair + certificate): %.0f per second", Double(uids.count) / seconds(since: start)))
var requests: [(InstanceUID, String)] = []
for uid in uids.prefix(1000) {
    var agent = SimulatedAgent(
        profile: AgentProfile(serviceName: "otelcol-sampler", tier: "sampling", hostName: "x"),
        uid: uid
    )
    let message = try agent.certificateRequest()
    requests.append(
        (uid, String(decoding: message.connectionSettingsRequest.opamp.certificateRequest.csr, as: UTF8.self))
    )
}
start = ContinuousClock.now
for (uid, pem) in requests {
    _ = try authority.sign(requestPEM: pem, for: AgentIdentity(instanceUID: uid, tier: "sampling"))
}
say(String(format: "CSR checked and signed: %.0f per second", Double(requests.count) / seconds(since: start)))

// 2. Enrolment over TLS.
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("credentials-bench-\(UUID().uuidString)")
try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: directory) }
let serverKey = P256.Signing.PrivateKey()
let serverName = try DistinguishedName { CommonName("127.0.0.1") }
let serverCertificate = try Certificate(
    version: .v3,
    serialNumber: .init(),
    publicKey: .init(serverKey.publicKey),
    notValidBefore: Date() - 300,
    notValidAfter: Date() + 86_400,
    issuer: serverName,
    subject: serverName,
    signatureAlgorithm: .ecdsaWithSHA256,
    extensions: try .init {
        SubjectAlternativeNames([.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
        try ExtendedKeyUsage([.serverAuth])
    },
    issuerPrivateKey: .init(serverKey)
)
let serverPEM = try serverCertificate.serializeAsPEM().pemString
try serverPEM.write(to: directory.appendingPathComponent("server.pem"), atomically: true, encoding: .utf8)
try serverKey.pemRepresentation.write(
    to: directory.appendingPathComponent("server.key"),
    atomically: true,
    encoding: .utf8
)
try authority.certificatePEM.write(to: directory.appendingPathComponent("ca.pem"), atomically: true, encoding: .utf8)
let store = try SQLiteStore(directory: directory.appendingPathComponent("data"))
let secret = SecretToken.generate(kind: "e").secret
let access = try AgentAccess(
    store: store,
    authority: authority,
    enrolmentTokens: [(secret, "bench", .sampling)],
    serverCAPEM: serverPEM,
    serverUsesTLS: true
)
let tls = try ServerTLS(
    certificatePath: directory.appendingPathComponent("server.pem").path,
    keyPath: directory.appendingPathComponent("server.key").path,
    clientCAPath: directory.appendingPathComponent("ca.pem").path
)
var configuration = OpAMPServerConfiguration()
configuration.host = "127.0.0.1"
configuration.port = 0
configuration.threads = 2
configuration.maxConnections = agentCount * 2 + 100
configuration.tls = tls.configuration()
configuration.access = access
configuration.serverCAPEM = serverPEM
configuration.advertisedEndpoint = "wss://127.0.0.1/v1/opamp"
let opamp = OpAMPServer(configuration: configuration)
let port = try await opamp.start()
var options = ControlPlaneOptions()
options.tickInterval = .milliseconds(100)
options.stageTimeoutSeconds = 120
let control = try ControlPlaneServer(store: store, registry: opamp.registry, options: options, port: 0, access: access)
let controlTask = Task { try await control.run() }

var fleetOptions = FleetOptions()
fleetOptions.port = port
fleetOptions.agents = agentCount
fleetOptions.loadBalancerShare = 0
fleetOptions.token = secret
fleetOptions.tlsTrustRootsPEM = serverPEM
fleetOptions.acceptsConnectionSettings = true
fleetOptions.requestCertificates = true
fleetOptions.reconnectDelay = .milliseconds(100)
fleetOptions.connectRate = 500
fleetOptions.heartbeatSeconds = 30
fleetOptions.threads = 2
let fleet = FleetRunner(options: fleetOptions)
start = ContinuousClock.now
let fleetTask = Task { try await fleet.run() }

func certified() -> [InstanceUID: String] {
    var fingerprints: [InstanceUID: String] = [:]
    for agent in opamp.registry.snapshot() where agent.connected {
        if let fingerprint = agent.principal?.certificateFingerprint { fingerprints[agent.instanceUID] = fingerprint }
    }
    return fingerprints
}

while certified().count < agentCount, seconds(since: start) < 600 { try await Task.sleep(for: .milliseconds(100)) }
let enrolled = certified()
say(
    String(
        format:
            "enrolment over TLS (token, CSR, certificate, reconnect with mutual TLS): %d agents in %.1f s (%.0f per second, connecting at up to %d per second)",
        enrolled.count,
        seconds(since: start),
        Double(enrolled.count) / seconds(since: start),
        fleetOptions.connectRate
    )
)

// 3. Rotation, a tenth at a time.
start = ContinuousClock.now
let rotation = try await control.controller.startRotation(
    agents: nil,
    tier: nil,
    batchSize: max(1, agentCount / 10),
    actor: "bench"
)
var current = rotation
while current.phase == .running, seconds(since: start) < 600 {
    try await Task.sleep(for: .milliseconds(50))
    current = access.rotation() ?? current
}
let moved = certified().filter { enrolled[$0.key] != nil && enrolled[$0.key] != $0.value }.count
say(
    String(
        format: "rotation of %d agents in batches of %d: %@ in %.1f s, %d on new certificates",
        agentCount,
        max(1, agentCount / 10),
        current.phase.rawValue,
        seconds(since: start),
        moved
    )
)
say("resident memory (server, control plane and simulated fleet in one process): \(residentMiB()) MiB")
fleetTask.cancel()
await fleet.shutdown()
controlTask.cancel()
await opamp.stop()
