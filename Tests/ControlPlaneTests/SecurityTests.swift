import AsyncHTTPClient
import ControlPlane
import Credentials
import Crypto
import FleetSimulator
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOSSL
import OpAMPProtocol
import OpAMPServer
import SwiftASN1
import SwiftProtobuf
import Testing
import X509

/// Log lines kept in memory, message and metadata together, so a test can search them for secrets.
final class CapturedLog: Sendable {
    let lines = NIOLockedValueBox<[String]>([])

    func logger(_ label: String) -> Logger {
        Logger(label: label) { _ in CapturingHandler(log: self) }
    }

    var text: String { self.lines.withLockedValue { $0.joined(separator: "\n") } }
}

struct CapturingHandler: LogHandler {
    let log: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = self.metadata.merging(event.metadata ?? [:]) { $1 }
        self.log.lines.withLockedValue { $0.append("\(event.level) \(event.message) \(all)") }
    }
}

/// A server certificate for 127.0.0.1 signed by a throwaway CA, and PEM files for both.
struct ServerCertificates {
    let directory: URL
    let caPEM: String
    let certificatePath: String
    let keyPath: String

    init(directory: URL, name: String = "server") throws {
        self.directory = directory
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName("test server CA \(name)") }
        let now = Date()
        let ca = try Certificate(
            version: .v3,
            serialNumber: .init(),
            publicKey: .init(caKey.publicKey),
            notValidBefore: now - 300,
            notValidAfter: now + 86_400,
            issuer: caName,
            subject: caName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try .init { Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0)) },
            issuerPrivateKey: .init(caKey)
        )
        let key = P256.Signing.PrivateKey()
        let certificate = try Certificate(
            version: .v3,
            serialNumber: .init(),
            publicKey: .init(key.publicKey),
            notValidBefore: now - 300,
            notValidAfter: now + 86_400,
            issuer: caName,
            subject: try DistinguishedName { CommonName("127.0.0.1") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try .init {
                SubjectAlternativeNames([.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
                try ExtendedKeyUsage([.serverAuth])
            },
            issuerPrivateKey: .init(caKey)
        )
        self.caPEM = try ca.serializeAsPEM().pemString
        self.certificatePath = directory.appendingPathComponent("\(name).pem").path
        self.keyPath = directory.appendingPathComponent("\(name).key").path
        try (try certificate.serializeAsPEM().pemString).write(
            toFile: self.certificatePath,
            atomically: true,
            encoding: .utf8
        )
        try key.pemRepresentation.write(toFile: self.keyPath, atomically: true, encoding: .utf8)
    }
}

@Suite(.serialized) struct SecurityTests {
    static let sampler = ["service.name": "otelcol-sampler"]
    static let loadBalancer = ["service.name": "otelcol-lb"]

    /// An OpAMP server with TLS, the CA as client CA, and the control plane's access policy.
    struct Setup {
        let directory: URL
        let server: OpAMPServer
        let access: AgentAccess
        let store: SQLiteStore
        let authority: CertificateAuthority
        let certificates: ServerCertificates
        let port: Int
        let enrolmentSecret: String
        let log: CapturedLog

        init(requireClientCertificate: Bool = false) async throws {
            self.directory = temporaryDirectory()
            self.log = CapturedLog()
            self.certificates = try ServerCertificates(directory: self.directory)
            self.authority = try CertificateAuthority.create(directory: self.directory.appendingPathComponent("ca"))
            let store = try SQLiteStore(directory: self.directory.appendingPathComponent("data"))
            self.store = store
            self.enrolmentSecret = SecretToken.generate(kind: "e").secret
            self.access = try AgentAccess(
                store: store,
                authority: self.authority,
                enrolmentTokens: [(self.enrolmentSecret, "test", .sampling)],
                serverCAPEM: self.certificates.caPEM,
                serverUsesTLS: true
            )
            let tls = try ServerTLS(
                certificatePath: self.certificates.certificatePath,
                keyPath: self.certificates.keyPath,
                clientCAPath: self.directory.appendingPathComponent("ca/ca.pem").path,
                clientCertificates: requireClientCertificate ? .required : .optional
            )
            var configuration = OpAMPServerConfiguration()
            configuration.host = "127.0.0.1"
            configuration.port = 0
            configuration.threads = 2
            configuration.tls = tls.configuration()
            configuration.access = self.access
            configuration.advertisedEndpoint = "wss://127.0.0.1/v1/opamp"
            configuration.serverCAPEM = self.certificates.caPEM
            self.server = OpAMPServer(configuration: configuration, logger: self.log.logger("opamp"))
            self.port = try await self.server.start()
        }

        /// Simulated samplers that enrol with the test's token over TLS and accept connection settings; with
        /// `requestCertificates` they also send a CSR after connecting.
        func fleetOptions(agents: Int, requestCertificates: Bool = true) -> FleetOptions {
            var options = FleetOptions()
            options.port = self.port
            options.agents = agents
            options.loadBalancerShare = 0
            options.token = self.enrolmentSecret
            options.tlsTrustRootsPEM = self.certificates.caPEM
            options.acceptsConnectionSettings = true
            options.requestCertificates = requestCertificates
            options.reconnectDelay = .milliseconds(100)
            return options
        }

        func stop() async {
            await self.server.stop()
            try? FileManager.default.removeItem(at: self.directory)
        }

        /// An HTTPS client trusting the server's CA, presenting `credential` when given.
        func client(_ credential: ClientCredential? = nil, trust: String? = nil) throws -> HTTPClient {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(
                try NIOSSLCertificate.fromPEMBytes(Array((trust ?? self.certificates.caPEM).utf8))
            )
            if let credential {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(credential.certificatePEM.utf8)).map {
                    .certificate($0)
                }
                tls.privateKey = .privateKey(
                    try NIOSSLPrivateKey(bytes: Array(credential.privateKeyPEM.utf8), format: .pem)
                )
            }
            var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
            configuration.httpVersion = .http1Only
            return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        }

        /// One plain-HTTP OpAMP exchange over TLS: the status and the decoded response.
        func post(
            _ message: OpAMP_AgentToServer,
            client: HTTPClient,
            token: String? = nil
        ) async throws -> (status: UInt, response: OpAMP_ServerToAgent?, text: String) {
            var request = HTTPClientRequest(url: "https://127.0.0.1:\(self.port)/v1/opamp")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/x-protobuf")
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            request.body = .bytes(ByteBuffer(bytes: try message.serializedBytes() as [UInt8]))
            let response = try await client.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 20)
            let bytes = Array(body.readableBytesView)
            return (
                response.status.code, try? OpAMP_ServerToAgent(serializedBytes: bytes),
                String(decoding: bytes, as: UTF8.self)
            )
        }
    }

    static func message(_ uid: InstanceUID, attributes: [String: String]?, sequence: UInt64 = 0) -> OpAMP_AgentToServer
    {
        var message = OpAMP_AgentToServer()
        message.instanceUid = Data(uid.bytes)
        message.sequenceNum = sequence
        message.capabilities = 0x1 | 0x2 | 0x1000 | 0x100 | 0x8000
        if let attributes {
            for (key, value) in attributes.sorted(by: { $0.key < $1.key }) {
                var pair = OpAMP_KeyValue()
                pair.key = key
                pair.value.stringValue = value
                message.agentDescription.identifyingAttributes.append(pair)
            }
        }
        return message
    }

    /// A simulated sampler that accepts connection settings (so its CSRs can be answered).
    static func csrAgent(_ uid: InstanceUID) -> SimulatedAgent {
        SimulatedAgent(
            profile: AgentProfile(
                serviceName: "otelcol-sampler",
                tier: "sampling",
                hostName: "x",
                capabilities: AgentProfile.supervisorCapabilities | AgentProfile.connectionSettingsCapabilities
            ),
            uid: uid
        )
    }

    static func credential(_ issued: IssuedCertificate) -> ClientCredential {
        ClientCredential(certificatePEM: issued.certificatePEM, privateKeyPEM: issued.privateKeyPEM!)
    }

    static func newUID() -> InstanceUID {
        .version7(unixMilliseconds: UInt64(Date().timeIntervalSince1970 * 1000))
    }

    @Test func clientCertificatesBindAConnectionToOneAgentAndOneTier() async throws {
        let setup = try await Setup()
        let agent = Self.newUID()
        let other = Self.newUID()
        let issued = try setup.authority.issue(for: AgentIdentity(instanceUID: agent, tier: "sampling"))
        let client = try setup.client(Self.credential(issued))
        do {
            // Its own UID, as a sampler: admitted, and the agent carries the certificate's identity.
            let good = try await setup.post(Self.message(agent, attributes: Self.sampler), client: client)
            #expect(good.status == 200)
            #expect(good.response?.hasErrorResponse == false)
            let snapshot = try #require(setup.server.registry.agent(agent))
            #expect(snapshot.principal?.instanceUID == agent)
            #expect(snapshot.principal?.scope == "sampling")
            #expect(snapshot.principal?.certificateFingerprint == issued.fingerprint)

            // Another UID over the same certificate: refused, and nothing is recorded for it.
            let impersonation = try await setup.post(Self.message(other, attributes: Self.sampler), client: client)
            #expect(impersonation.status == 403)
            #expect(impersonation.response?.errorResponse.errorMessage.contains("cannot speak for") == true)
            #expect(setup.server.registry.agent(other) == nil)

            // Its own UID claiming the load-balancing tier: refused, its sampler description stays.
            let claim = try await setup.post(
                Self.message(agent, attributes: Self.loadBalancer, sequence: 1),
                client: client
            )
            #expect(claim.status == 403)
            #expect(claim.response?.errorResponse.errorMessage.contains("tier") == true)
            #expect(setup.server.registry.agent(agent)?.description?.attributes["service.name"] == "otelcol-sampler")

            // No credentials at all: 401.
            let anonymousClient = try setup.client()
            let anonymous = try await setup.post(Self.message(other, attributes: Self.sampler), client: anonymousClient)
            #expect(anonymous.status == 401)
            try await anonymousClient.shutdown()

            let counts = setup.server.registry.refusalCounts().byKind
            #expect(counts["instance_uid"] == 1)
            #expect(counts["tier"] == 1)
            #expect(counts["credentials"] == 1)
            // Each refusal is logged once with its reason.
            #expect(setup.log.text.components(separatedBy: "agent refused").count - 1 == 3)
        } catch {
            try? await client.shutdown()
            await setup.stop()
            throw error
        }
        try await client.shutdown()
        await setup.stop()
    }

    @Test func onceAnAgentHasItsCertificateNoTokenSpeaksForIt() async throws {
        let setup = try await Setup()
        let agent = Self.newUID()
        let issued = try setup.authority.issue(for: AgentIdentity(instanceUID: agent, tier: "sampling"))
        let certified = try setup.client(Self.credential(issued))
        let plain = try setup.client()
        // Before it ever connects with the certificate, an enrolment token may still act for it (enrolling).
        let enrolled = try await setup.post(
            Self.message(agent, attributes: Self.sampler),
            client: plain,
            token: setup.enrolmentSecret
        )
        #expect(enrolled.status == 200)
        #expect(
            try await setup.post(Self.message(agent, attributes: Self.sampler, sequence: 1), client: certified).status
                == 200
        )
        // From then on a token holder cannot speak for it, nor get a certificate for its UID signed.
        let impostor = try await setup.post(
            Self.message(agent, attributes: Self.sampler, sequence: 2),
            client: plain,
            token: setup.enrolmentSecret
        )
        #expect(impostor.status == 403)
        #expect(impostor.text.contains("holds a client certificate"))
        var other = Self.csrAgent(agent)
        var stolen = try other.certificateRequest()
        other.stamp(&stolen)
        let stolenAnswer = try await setup.post(stolen, client: plain, token: setup.enrolmentSecret)
        #expect(stolenAnswer.status == 403, "\(stolenAnswer.response?.errorResponse.errorMessage ?? "")")
        #expect(setup.access.certificates(of: agent.description).isEmpty)

        // An enrolment token revoked while in use stops working for the next message.
        let newcomer = Self.newUID()
        let joined = try await setup.post(
            Self.message(newcomer, attributes: Self.sampler),
            client: plain,
            token: setup.enrolmentSecret
        )
        #expect(joined.status == 200)
        let id = String(SecretToken.hash(setup.enrolmentSecret).prefix(8))
        #expect(try setup.access.revokeEnrolmentToken(id: id))
        let late = try await setup.post(
            Self.message(newcomer, attributes: Self.sampler, sequence: 1),
            client: plain,
            token: setup.enrolmentSecret
        )
        #expect(late.status == 401)
        #expect(late.text.contains("was revoked"))
        try await certified.shutdown()
        try await plain.shutdown()
        await setup.stop()
    }

    @Test func aWaitingRequestCannotBeReplacedByAnotherCredential() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteStore(directory: directory)
        let access = try AgentAccess(
            store: store,
            authority: try CertificateAuthority.generate(),
            sharedTokens: ["shared-token-for-the-test"]
        )
        let agent = Self.newUID()
        var simulated = SimulatedAgent(
            profile: AgentProfile(serviceName: "otelcol-sampler", tier: "sampling", hostName: "x"),
            uid: agent
        )
        func csr() throws -> String {
            String(
                decoding: try simulated.certificateRequest().connectionSettingsRequest.opamp.certificateRequest.csr,
                as: UTF8.self
            )
        }
        let first = AgentPrincipal(name: "shared-token")
        #expect(
            access.certificateRequest(try csr(), instanceUID: agent, description: nil, principal: first) == .pending
        )
        let intruder = AgentPrincipal(name: "someone-else")
        guard
            case .refused(let reason) = access.certificateRequest(
                try csr(),
                instanceUID: agent,
                description: nil,
                principal: intruder
            )
        else {
            Issue.record("a second credential's request replaced the waiting one")
            return
        }
        #expect(reason.contains("waiting for approval"))
        #expect(access.certificateRequests().first?.principal == "shared-token")
        // Approval offers the certificate with the CA bundle.
        let offered = try #require(try access.decide(agent.description, approve: true, actor: "admin"))
        #expect(offered.privateKeyPEM == nil)
        #expect(offered.caCertificatePEM.contains("BEGIN CERTIFICATE"))
    }

    /// Several replicas on one database: a request waits on the replica the agent sent it to, the API's approval
    /// (forwarded to the leader) signs it there, and the first replica learns of it and has the certificate to
    /// offer; a replica that starts later does not offer old certificates again.
    @Test func aRequestWaitingOnOneReplicaIsApprovedOnAnotherAndOfferedByTheFirst() throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let authority = try CertificateAuthority.generate()
        func replica() throws -> AgentAccess {
            try AgentAccess(
                store: try PostgresStore(configuration: try PostgresStoreConfiguration(url: url)),
                authority: authority,
                sharedTokens: ["shared-token-for-the-test"]
            )
        }
        let follower = try replica()
        let leader = try replica()
        let agent = Self.newUID()
        var simulated = SimulatedAgent(
            profile: AgentProfile(serviceName: "otelcol-sampler", tier: "sampling", hostName: "x"),
            uid: agent
        )
        let csr = String(
            decoding: try simulated.certificateRequest().connectionSettingsRequest.opamp.certificateRequest.csr,
            as: UTF8.self
        )
        #expect(
            follower.certificateRequest(csr, instanceUID: agent, description: nil, principal: AgentPrincipal(name: "t"))
                == .pending
        )
        try follower.flush()
        // The leader did not receive it, and lists it after its next read.
        #expect(try leader.reload().approved.isEmpty)
        #expect(leader.certificateRequests().map(\.instanceUID) == [agent.description])
        // The agent replaces its request (same credential) before the approval: the leader approves the one
        // stored now, not the one it read.
        let replacement = String(
            decoding: try simulated.certificateRequest().connectionSettingsRequest.opamp.certificateRequest.csr,
            as: UTF8.self
        )
        #expect(replacement != csr)
        #expect(
            follower.certificateRequest(
                replacement,
                instanceUID: agent,
                description: nil,
                principal: AgentPrincipal(name: "t")
            ) == .pending
        )
        try follower.flush()
        let offered = try #require(try leader.decide(agent.description, approve: true, actor: "admin"))
        #expect(leader.certificateRequests().first?.pem == replacement)

        let news = try follower.reload()
        #expect(news.approved.map(\.uid) == [agent.description])
        #expect(news.approved.first?.certificate.certificatePEM == offered.certificatePEM)
        #expect(news.approved.first?.certificate.caCertificatePEM.contains("BEGIN CERTIFICATE") == true)
        #expect(follower.certificateRequests().first?.state == .approved)
        #expect(try follower.reload().approved.isEmpty, "offered once")
        #expect(try replica().reload().approved.isEmpty, "a replica that starts later offers nothing old")
        // A denial elsewhere offers nothing either.
        let other = Self.newUID()
        var second = SimulatedAgent(
            profile: AgentProfile(serviceName: "otelcol-sampler", tier: "sampling", hostName: "y"),
            uid: other
        )
        let secondCSR = String(
            decoding: try second.certificateRequest().connectionSettingsRequest.opamp.certificateRequest.csr,
            as: UTF8.self
        )
        _ = follower.certificateRequest(
            secondCSR,
            instanceUID: other,
            description: nil,
            principal: AgentPrincipal(name: "t")
        )
        try follower.flush()
        _ = try leader.reload()
        #expect(try leader.decide(other.description, approve: false, actor: "admin") == nil)
        #expect(try follower.reload().approved.isEmpty)
        #expect(follower.certificateRequests().first { $0.instanceUID == other.description }?.state == .denied)
    }

    @Test func expiredWrongCAAndRevokedCertificatesAreRefused() async throws {
        let setup = try await Setup()
        let agent = Self.newUID()
        // Expired: issued 40 days ago for 30 days.
        let expired = try setup.authority.issue(
            for: AgentIdentity(instanceUID: agent, tier: "sampling"),
            policy: CertificatePolicy(lifetime: 30 * 86_400),
            now: Date() - 40 * 86_400
        )
        // From a CA the server does not trust.
        let stranger = try CertificateAuthority.generate().issue(
            for: AgentIdentity(instanceUID: agent, tier: "sampling")
        )
        for credential in [expired, stranger].map(Self.credential) {
            let client = try setup.client(credential)
            await #expect(throws: (any Error).self) {
                _ = try await setup.post(Self.message(agent, attributes: Self.sampler), client: client)
            }
            try await client.shutdown()
        }
        // Revoked: the handshake succeeds, the access policy refuses it.
        let valid = try setup.authority.issue(for: AgentIdentity(instanceUID: agent, tier: "sampling"))
        let client = try setup.client(Self.credential(valid))
        #expect(try await setup.post(Self.message(agent, attributes: Self.sampler), client: client).status == 200)
        _ = try setup.access.revokeAgent(agent.description, reason: "host decommissioned", actor: "test")
        let refused = try await setup.post(Self.message(agent, attributes: Self.sampler, sequence: 1), client: client)
        #expect(refused.status == 403)
        #expect(refused.text.contains("host decommissioned"))
        // Even an enrolment token cannot bring a revoked agent back.
        let plain = try setup.client()
        let again = try await setup.post(
            Self.message(agent, attributes: Self.sampler, sequence: 2),
            client: plain,
            token: setup.enrolmentSecret
        )
        #expect(again.status == 403)
        #expect(setup.server.registry.refusalCounts().byKind["revoked"] == 2)
        try await plain.shutdown()
        try await client.shutdown()
        await setup.stop()
    }

    @Test func aBadCSRGetsBadRequestAndChangesNothing() async throws {
        let setup = try await Setup()
        let agent = Self.newUID()
        let client = try setup.client()
        var message = Self.message(agent, attributes: Self.sampler)
        message.connectionSettingsRequest.opamp.certificateRequest.csr = Data("not a certificate request".utf8)
        let answer = try await setup.post(message, client: client, token: setup.enrolmentSecret)
        #expect(answer.status == 400)
        #expect(answer.response?.errorResponse.type == .badRequest)
        #expect(answer.response?.errorResponse.errorMessage.contains("CERTIFICATE REQUEST") == true)
        #expect(setup.server.registry.agent(agent) == nil)
        #expect(setup.access.certificates(of: agent.description).isEmpty)
        // A CSR naming another agent's UID is refused too.
        var other = Self.csrAgent(Self.newUID())
        var stolen = try other.certificateRequest()
        stolen.instanceUid = Data(agent.bytes)
        let refused = try await setup.post(stolen, client: client, token: setup.enrolmentSecret)
        #expect(refused.status == 400)
        #expect(refused.response?.errorResponse.errorMessage.contains("only request its own") == true)
        #expect(setup.server.registry.agent(agent) == nil)
        try await client.shutdown()
        await setup.stop()
    }

    @Test func enrolledAgentsGetCertificatesThroughCSRsAndReconnectWithThem() async throws {
        let setup = try await Setup()
        let fleet = FleetRunner(options: setup.fleetOptions(agents: 4))
        let task = Task { try await fleet.run() }
        defer { task.cancel() }
        var done = false
        for _ in 0..<200 {
            let agents = setup.server.registry.snapshot()
            done =
                agents.count == 4
                && agents.allSatisfy {
                    $0.connected && $0.principal?.instanceUID == $0.instanceUID && $0.principal?.scope == "sampling"
                        && $0.connectionSettings.status == .applied
                        && $0.connectionSettings.reportedHash == $0.connectionSettings.offeredHash
                }
            if done { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
            done,
            "every agent reconnected with a certificate naming it: \(setup.server.registry.snapshot().map { ($0.principal?.name ?? "-", $0.connectionSettings) })"
        )
        for agent in setup.server.registry.snapshot() {
            let records = setup.access.certificates(of: agent.instanceUID.description)
            #expect(records.count == 1)
            #expect(records.first?.origin == "csr")
            #expect(records.first?.fingerprint == agent.principal?.certificateFingerprint)
        }
        // No secret appears in any log line: not the enrolment token, not a private key.
        let log = setup.log.text
        #expect(!log.contains(setup.enrolmentSecret))
        #expect(!log.contains("PRIVATE KEY"))
        let caKey = try String(contentsOf: setup.directory.appendingPathComponent("ca/ca.key"), encoding: .utf8)
        for line in caKey.split(separator: "\n") where !line.hasPrefix("-----") {
            #expect(!log.contains(line))
        }
        await fleet.shutdown()
        await setup.stop()
    }

    @Test func serverInitiatedCertificatesReachEveryAgentOverWebSocketAndHTTP() async throws {
        let setup = try await Setup()
        for transport in FleetOptions.Transport.allCases {
            var options = setup.fleetOptions(agents: 3, requestCertificates: false)
            options.transport = transport
            options.firstIndex = transport == .http ? 100 : 0
            options.heartbeatSeconds = 1
            let fleet = FleetRunner(options: options)
            let task = Task { try await fleet.run() }
            var uids: [InstanceUID] = []
            for _ in 0..<100 {
                uids = setup.server.registry.snapshot().filter {
                    $0.connected && $0.principal?.name.hasPrefix("enrolment:") == true
                }.map(\.instanceUID)
                if uids.count == 3 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(uids.count == 3)
            let connection = try #require(setup.server.registry.advertisedConnection)
            var fingerprints: [InstanceUID: String] = [:]
            for uid in uids {
                let certificate = try setup.access.issueCertificate(for: uid, tier: .sampling)
                let der = try PEMDocument(pemString: certificate.certificatePEM).derBytes
                fingerprints[uid] = Fingerprint.sha256(der)
                let problem = setup.server.registry.offerConnectionSettings(
                    OpAMPConnectionOffer(
                        endpoint: connection.endpoint,
                        heartbeatIntervalSeconds: connection.heartbeatIntervalSeconds,
                        certificate: certificate
                    ),
                    to: uid
                )
                #expect(problem == nil)
            }
            var moved = false
            for _ in 0..<150 {
                moved = uids.allSatisfy { uid in
                    let agent = setup.server.registry.agent(uid)
                    return agent?.connected == true && agent?.principal?.certificateFingerprint == fingerprints[uid]
                        && agent?.connectionSettings.status == .applied
                }
                if moved { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(moved, "\(transport): every agent reconnected with its new certificate")
            task.cancel()
            await fleet.shutdown()
        }
        await setup.stop()
    }

    @Test func aRotationMovesEveryAgentToANewCertificateBatchByBatch() async throws {
        let setup = try await Setup()
        let control = try ControlPlaneServer(
            store: setup.store,
            registry: setup.server.registry,
            options: fastOptions(),
            port: 0,
            access: setup.access
        )
        let service = Task { try await control.run() }
        let apiPort = await control.apiPort()
        let fleet = FleetRunner(options: setup.fleetOptions(agents: 6))
        let task = Task { try await fleet.run() }
        func certified() -> [InstanceUID: String] {
            var fingerprints: [InstanceUID: String] = [:]
            for agent in setup.server.registry.snapshot() where agent.connected {
                if let fingerprint = agent.principal?.certificateFingerprint {
                    fingerprints[agent.instanceUID] = fingerprint
                }
            }
            return fingerprints
        }
        for _ in 0..<100 where certified().count < 6 { try await Task.sleep(for: .milliseconds(100)) }
        let before = certified()
        #expect(before.count == 6)

        var request = HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/v1/certificate-rotations")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"tier": "sampling", "batchSize": 2}"#))
        let started = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(started.status == .created)
        // A second rotation while one runs is refused.
        let second = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(second.status == .conflict)

        var rotation: CertificateRotation?
        var mostInFlight = 0
        for _ in 0..<300 {
            rotation = setup.access.rotation()
            mostInFlight = max(mostInFlight, rotation?.inFlight.count ?? 0)
            if rotation?.phase != .running { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(rotation?.phase == .succeeded, "\(String(describing: rotation))")
        #expect(rotation?.counts["done"] == 6)
        #expect(mostInFlight <= 2 && mostInFlight >= 1)
        let after = certified()
        for (uid, fingerprint) in before {
            #expect(after[uid] != nil && after[uid] != fingerprint, "\(uid) moved to a new certificate")
            #expect(after[uid] == rotation?.entries[uid.description]?.fingerprint)
            #expect(setup.access.certificates(of: uid.description).count == 2)
        }
        task.cancel()
        await fleet.shutdown()
        service.cancel()
        await setup.stop()
    }

    /// Two replicas on one PostgreSQL database, three agents on each: the leader's rotation moves all six to
    /// new certificates. It makes the certificates of its own agents; the follower makes and offers those of
    /// its agents when the leader asks, and the leader follows them through the follower's published views.
    @Test func aRotationReachesTheAgentsOfEveryReplica() async throws {
        let url = try PostgresTestServer.shared.get().makeDatabase()
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificates = try ServerCertificates(directory: directory)
        let authority = try CertificateAuthority.create(directory: directory.appendingPathComponent("ca"))
        let secret = SecretToken.generate(kind: "e").secret
        struct Replica {
            let server: OpAMPServer
            let access: AgentAccess
            let control: ControlPlaneServer
            let leadership: Leadership
            let fleet: FleetRunner
            let tasks: [Task<Void, Never>]
        }
        var replicas: [Replica] = []
        for index in 0..<2 {
            let store = try PostgresStore(configuration: try PostgresStoreConfiguration(url: url))
            let access = try AgentAccess(
                store: store,
                authority: authority,
                enrolmentTokens: [(secret, "test", .sampling)],
                serverCAPEM: certificates.caPEM,
                serverUsesTLS: true
            )
            let tls = try ServerTLS(
                certificatePath: certificates.certificatePath,
                keyPath: certificates.keyPath,
                clientCAPath: directory.appendingPathComponent("ca/ca.pem").path,
                clientCertificates: .optional
            )
            var configuration = OpAMPServerConfiguration()
            configuration.host = "127.0.0.1"
            configuration.port = 0
            configuration.threads = 1
            configuration.tls = tls.configuration()
            configuration.access = access
            configuration.advertisedEndpoint = "wss://127.0.0.1/v1/opamp"
            configuration.serverCAPEM = certificates.caPEM
            let server = OpAMPServer(configuration: configuration, logger: Logger(label: "opamp-\(index)"))
            let port = try await server.start()
            // The API over HTTPS with a certificate from the test's private CA: a follower forwards writes to
            // the leader trusting that CA (policyd's --tls-ca), not only the system's roots.
            let apiPort = CrashTests.freePort()
            let leadership = Leadership(
                replica: "replica-\(index)",
                api: "https://127.0.0.1:\(apiPort)",
                coordination: store,
                forwarding: try Leadership.forwardingClient(trustingPEM: certificates.caPEM)
            )
            let control = try ControlPlaneServer(
                store: store,
                registry: server.registry,
                options: fastOptions(),
                port: apiPort,
                tls: try ServerTLS(
                    certificatePath: certificates.certificatePath,
                    keyPath: certificates.keyPath,
                    clientCAPath: nil,
                    clientCertificates: ServerTLS.ClientCertificates.none
                ).configuration(),
                access: access,
                leadership: leadership
            )
            let elector = LeaderElector(leadership: leadership)
            var options = FleetOptions()
            options.port = port
            options.agents = 3
            options.loadBalancerShare = 0
            options.token = secret
            options.tlsTrustRootsPEM = certificates.caPEM
            options.acceptsConnectionSettings = true
            options.requestCertificates = true
            options.reconnectDelay = .milliseconds(100)
            let fleet = FleetRunner(options: options)
            let tasks: [Task<Void, Never>] = [
                Task { _ = try? await elector.run() },
                Task { _ = try? await control.run() },
                Task { _ = try? await fleet.run() },
            ]
            replicas.append(
                Replica(
                    server: server,
                    access: access,
                    control: control,
                    leadership: leadership,
                    fleet: fleet,
                    tasks: tasks
                )
            )
        }

        let started = replicas
        @Sendable func certified() -> [String: String] {
            var fingerprints: [String: String] = [:]
            for replica in started {
                for agent in replica.server.registry.snapshot() where agent.connected {
                    if let fingerprint = agent.principal?.certificateFingerprint {
                        fingerprints[agent.instanceUID.description] = fingerprint
                    }
                }
            }
            return fingerprints
        }
        #expect(await eventually(timeout: 30) { certified().count == 6 })
        #expect(await eventually(timeout: 15) { started.filter { $0.leadership.leaderEpoch != nil }.count == 1 })
        let leader = try #require(started.first { $0.leadership.leaderEpoch != nil })
        let follower = try #require(started.first { $0.leadership.leaderEpoch == nil })
        let followerAgents = Set(follower.server.registry.snapshot().filter(\.connected).map(\.instanceUID.description))
        #expect(followerAgents.count == 3)
        // The leader sees the follower's agents (their views are published) before it is asked to rotate.
        #expect(
            await eventually(timeout: 15) { await leader.control.controller.agents().filter(\.connected).count == 6 }
        )
        let before = certified()

        // Started through the follower's API: forwarded to the leader over HTTPS.
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(certificates.caPEM.utf8)))
        let client = HTTPClient(configuration: .init(tlsConfiguration: tls))
        var request = HTTPClientRequest(
            url: "https://127.0.0.1:\(await follower.control.apiPort())/v1/certificate-rotations"
        )
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"tier": "sampling", "batchSize": 2}"#))
        let response = try await client.execute(request, timeout: .seconds(20))
        let answer = String(buffer: try await response.body.collect(upTo: 1 << 20))
        try await client.shutdown()
        #expect(response.status == .created, "\(answer)")
        let rotation = try #require(leader.access.rotation())
        #expect(rotation.entries.count + rotation.waiting.count == 6, "every replica's agents are in the rotation")
        #expect(await eventually(timeout: 60) { leader.access.rotation()?.phase != .running })
        let last = leader.access.rotation()
        #expect(last?.phase == .succeeded, "\(String(describing: last))")
        #expect(last?.counts["done"] == 6)
        let after = certified()
        for (uid, fingerprint) in before {
            #expect(after[uid] != nil && after[uid] != fingerprint, "\(uid) moved to a new certificate")
            #expect(after[uid] == last?.entries[uid]?.fingerprint)
            // Made by the replica the agent is connected to: the follower for its own agents.
            let entry = last?.entries[uid]
            #expect((entry?.replica != nil) == followerAgents.contains(uid), "\(uid): \(String(describing: entry))")
        }
        // Every agent got exactly one certificate for the rotation (none offered twice), and the follower's
        // records reach the leader.
        #expect(
            await eventually(timeout: 10) {
                before.keys.allSatisfy { uid in
                    leader.access.certificates(of: uid).filter { $0.origin == "rotation \(rotation.id)" }.count == 1
                }
            }
        )
        for replica in replicas {
            replica.tasks.forEach { $0.cancel() }
            await replica.fleet.shutdown()
            await replica.server.stop()
            await replica.leadership.stopForwarding()
        }
    }

    static func pythonClientInstalled() -> Bool {
        commandSucceeds(["python3", "-c", "import opentelemetry._opamp.agent"])
    }

    @Test func thePythonClientConnectsOverTLSWithATokenAndWithAClientCertificate() async throws {
        try #require(
            Self.pythonClientInstalled(),
            "the Python OpAMP client is missing: pip install -r Tests/Interop/requirements.txt (.ci/run does)"
        )
        let setup = try await Setup()
        let caFile = setup.directory.appendingPathComponent("server-ca.pem")
        try setup.certificates.caPEM.write(to: caFile, atomically: true, encoding: .utf8)
        let script = repositoryRoot.appendingPathComponent("Tests/Interop/python_agent.py")
        let uid = Self.newUID()
        let issued = try setup.authority.issue(for: AgentIdentity(instanceUID: uid, tier: "sampling"))
        let certificateFile = setup.directory.appendingPathComponent("agent.pem")
        let keyFile = setup.directory.appendingPathComponent("agent.key")
        try issued.certificatePEM.write(to: certificateFile, atomically: true, encoding: .utf8)
        try issued.privateKeyPEM!.write(to: keyFile, atomically: true, encoding: .utf8)
        let runs: [(name: String, arguments: [String])] = [
            ("python-token", ["--token", setup.enrolmentSecret]),
            (
                "python-certificate",
                [
                    "--client-cert", certificateFile.path, "--client-key", keyFile.path, "--instance-uid",
                    uid.description,
                ]
            ),
        ]
        for run in runs {
            let python = Process()
            python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            python.arguments =
                [
                    "python3", script.path, "--endpoint", "https://127.0.0.1:\(setup.port)/v1/opamp",
                    "--applied", setup.directory.appendingPathComponent("\(run.name).json").path,
                    "--seconds", "3", "--service-name", run.name, "--ca", caFile.path,
                ] + run.arguments
            try python.run()
            let arrived = await eventually(timeout: 20) {
                setup.server.registry.snapshot().contains { $0.description?.identifying["service.name"] == run.name }
            }
            #expect(arrived, "\(run.name) connected over TLS")
            let agent = setup.server.registry.snapshot().first {
                $0.description?.identifying["service.name"] == run.name
            }
            #expect(agent?.transport == .http)
            if run.name == "python-certificate" {
                #expect(agent?.instanceUID == uid)
                #expect(agent?.principal?.certificateFingerprint == issued.fingerprint)
            } else {
                #expect(agent?.principal?.enrolment == true)
            }
            python.waitUntilExit()
            #expect(python.terminationStatus == 0)
        }
        await setup.stop()
    }

    @Test func revokingThroughTheAPIClosesTheAgentAndKeepsItOut() async throws {
        let setup = try await Setup()
        let control = try ControlPlaneServer(
            store: setup.store,
            registry: setup.server.registry,
            options: fastOptions(),
            port: 0,
            access: setup.access
        )
        let service = Task { try await control.run() }
        let apiPort = await control.apiPort()
        let fleet = FleetRunner(options: setup.fleetOptions(agents: 2))
        let task = Task { try await fleet.run() }
        #expect(
            await eventually {
                setup.server.registry.snapshot().filter { $0.connected && $0.principal?.instanceUID != nil }.count == 2
            }
        )
        let victim = try #require(setup.server.registry.snapshot().first?.instanceUID)
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/v1/agents/\(victim)/revoke")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"reason": "host decommissioned"}"#))
        let answer = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(answer.status == .ok)
        // Its socket closes; it reconnects with its certificate and is refused, again and again.
        #expect(await eventually { setup.server.registry.agent(victim)?.connected == false })
        #expect(await eventually { (setup.server.registry.refusalCounts().byKind["revoked"] ?? 0) >= 2 })
        #expect(setup.server.registry.agent(victim)?.connected == false)
        // The other agent is untouched, and the revocation is listed and audited.
        #expect(setup.server.registry.snapshot().filter { $0.connected }.count == 1)
        let listed = try await HTTPClient.shared.execute(
            HTTPClientRequest(url: "http://127.0.0.1:\(apiPort)/v1/revocations"),
            timeout: .seconds(10)
        )
        let body = String(buffer: try await listed.body.collect(upTo: 1 << 20))
        #expect(body.contains(victim.description) && body.contains("host decommissioned"))
        #expect(try setup.store.audit(limit: 10).contains { $0.action == "agent.revoke" })
        task.cancel()
        await fleet.shutdown()
        service.cancel()
        await setup.stop()
    }

    @Test func plainTextOnANonLoopbackAddressIsWarnedAbout() async throws {
        for (host, warned) in [("0.0.0.0", true), ("127.0.0.1", false)] {
            let log = CapturedLog()
            var configuration = OpAMPServerConfiguration()
            configuration.host = host
            configuration.port = 0
            configuration.threads = 1
            let server = OpAMPServer(configuration: configuration, logger: log.logger("opamp"))
            try await server.start()
            await server.stop()
            #expect(log.text.contains("plain text") == warned, "\(host)")
        }
    }

    @Test func changedCertificateFilesAreServedWithoutARestart() async throws {
        let setup = try await Setup()
        let tls = try ServerTLS(
            certificatePath: setup.certificates.certificatePath,
            keyPath: setup.certificates.keyPath
        )
        let before = tls.fingerprint
        #expect(tls.reloadIfChanged() == nil)
        // A half-written key: reported, and the old pair stays.
        try "-----BEGIN PRIVATE KEY-----\ngarbage\n".write(
            toFile: setup.certificates.keyPath,
            atomically: true,
            encoding: .utf8
        )
        guard case .failed(let reason) = tls.reloadIfChanged() else {
            Issue.record("a broken key file is reported")
            return
        }
        #expect(reason.contains(setup.certificates.keyPath))
        #expect(!reason.contains("garbage"))
        #expect(tls.fingerprint == before)
        // A complete new pair (another CA): used for new handshakes.
        let renewed = try ServerCertificates(directory: setup.directory, name: "server")
        guard case .reloaded(let fingerprint) = tls.reloadIfChanged() else {
            Issue.record("a new pair is loaded")
            return
        }
        #expect(fingerprint != before)
        // The API port with this TLS: a client trusting only the new CA connects.
        let store = try SQLiteStore(directory: setup.directory.appendingPathComponent("api-data"))
        let control = try ControlPlaneServer(
            store: store,
            registry: setup.server.registry,
            options: fastOptions(),
            port: 0,
            tls: tls.configuration()
        )
        let service = Task { try await control.run() }
        let port = await control.apiPort()
        let client = try setup.client(trust: renewed.caPEM)
        let response = try await client.execute(
            HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"),
            timeout: .seconds(10)
        )
        #expect(response.status == .ok)
        let stale = try setup.client(trust: setup.certificates.caPEM)
        await #expect(throws: (any Error).self) {
            _ = try await stale.execute(
                HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"),
                timeout: .seconds(3)
            )
        }
        try await client.shutdown()
        try await stale.shutdown()
        service.cancel()
        await setup.stop()
    }
}

@Suite struct CertificateRotationTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    func view(_ uid: String, fingerprint: String? = nil, connected: Bool = true, accepts: Bool = true)
        -> RotationAgentView
    {
        RotationAgentView(
            uid: uid,
            connected: connected,
            acceptsConnectionSettings: accepts,
            certificateFingerprint: fingerprint
        )
    }

    @Test func batchesWaitForEveryAgentToComeBackWithItsNewCertificate() {
        var rotation = CertificateRotation(
            id: 1,
            agents: ["a", "b", "c", "d", "e"],
            reason: "manual",
            startedBy: "test",
            batchSize: 2,
            timeoutSeconds: 60,
            now: self.start
        )
        var agents = Dictionary(
            uniqueKeysWithValues: ["a", "b", "c", "d", "e"].map { ($0, self.view($0, fingerprint: "old")) }
        )
        agents["c"] = self.view("c", connected: false)
        agents["d"] = self.view("d", accepts: false)
        let first = rotation.step(agents, now: self.start)
        #expect(first == ["a", "b"])
        for uid in first { rotation.offered(uid, fingerprint: "new-\(uid)", settingsHash: [1], at: self.start) }
        // Nothing more while the batch is out, even as time passes.
        #expect(rotation.step(agents, now: self.start + 10).isEmpty)
        agents["a"] = self.view("a", fingerprint: "new-a")
        #expect(rotation.step(agents, now: self.start + 11).isEmpty)
        agents["b"] = self.view("b", fingerprint: "new-b")
        // The next batch skips the offline agent and the one that cannot take connection settings.
        let second = rotation.step(agents, now: self.start + 12)
        #expect(second == ["e"])
        #expect(rotation.entries["c"]?.state == "skipped" && rotation.entries["c"]?.detail == "offline")
        #expect(rotation.entries["d"]?.state == "skipped")
        rotation.offered("e", fingerprint: "new-e", settingsHash: [2], at: self.start + 12)
        agents["e"] = self.view("e", fingerprint: "new-e")
        #expect(rotation.step(agents, now: self.start + 13).isEmpty)
        #expect(rotation.phase == .succeeded)
        #expect(rotation.counts["done"] == 3 && rotation.counts["skipped"] == 2)
    }

    @Test func aFailedOrSilentAgentHaltsTheRotation() {
        for failure in ["reported", "timeout"] {
            var rotation = CertificateRotation(
                id: 1,
                agents: ["a", "b", "c"],
                reason: "manual",
                startedBy: "test",
                batchSize: 1,
                timeoutSeconds: 30,
                now: self.start
            )
            var agents = Dictionary(
                uniqueKeysWithValues: ["a", "b", "c"].map { ($0, self.view($0, fingerprint: "old")) }
            )
            #expect(rotation.step(agents, now: self.start) == ["a"])
            rotation.offered("a", fingerprint: "new-a", settingsHash: [7], at: self.start)
            let later: Date
            if failure == "reported" {
                var failed = self.view("a", fingerprint: "old")
                failed.reportedSettingsHash = [7]
                failed.settingsStatus = .failed
                failed.settingsError = "tls: bad certificate"
                agents["a"] = failed
                later = self.start + 5
            } else {
                later = self.start + 31
            }
            #expect(rotation.step(agents, now: later).isEmpty)
            #expect(rotation.phase == .halted)
            #expect(rotation.failure?.contains(failure == "reported" ? "tls: bad certificate" : "not back") == true)
            // b and c were never offered anything.
            #expect(rotation.waiting == ["b", "c"])
            #expect(rotation.step(agents, now: later + 1).isEmpty)
        }
    }
}
