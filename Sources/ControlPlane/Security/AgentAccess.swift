import ConfigRenderer
import Credentials
import Foundation
import Logging
import NIOConcurrencyHelpers
import OpAMPProtocol
import OpAMPServer

/// Who may connect as which agent, in which tier, and what happens to certificate requests: the control
/// plane's ``AgentAccessPolicy``.
///
/// Credentials, most specific first:
/// - a **client certificate** from Tailplane's CA (verified by the TLS handshake) names one instance UID and
///   tier: the connection may speak for that agent only;
/// - an **enrolment token** admits new agents (of its tier): their CSRs are signed at once;
/// - a **shared agent token** (`--agent-tokens-file`, the old way) admits any agent; its CSRs wait for an
///   administrator.
/// With none configured anyone may connect (local use). A revoked agent is refused whatever it presents.
///
/// Answers come from memory (the registry asks on event loops); records made on that path (certificates,
/// waiting CSRs) are written to the store by ``flush()`` on the controller's next tick.
public final class AgentAccess: AgentAccessPolicy {
    private struct State {
        /// Enrolment tokens by hash (authentication), and hashes by public id (principals name the id).
        var enrolment: [String: EnrolmentToken] = [:]
        var enrolmentByID: [String: String] = [:]

        mutating func add(_ token: EnrolmentToken) {
            self.enrolment[token.hash] = token
            self.enrolmentByID[token.id] = token.hash
        }

        func enrolment(id: String) -> EnrolmentToken? {
            self.enrolmentByID[id].flatMap { self.enrolment[$0] }
        }
        var revoked: [String: RevocationRecord] = [:]
        var certificates: [String: AgentCertificateRecord] = [:]
        var requests: [String: CertificateRequestRecord] = [:]
        var fleet = Fleet()
        var unsaved: [SecurityRecord] = []
        var rotation: CertificateRotation?
        /// Agents that have connected with a certificate: from then on a token no longer speaks for them.
        var certified: Set<String> = []
    }

    private let state = NIOLockedValueBox(State())
    /// Principals admitted by an enrolment token are named `enrolment:<token id>`.
    static let enrolmentPrefix = "enrolment:"
    private let store: any ControlPlaneStore
    /// The CA that signs agent certificates (nil: no certificates).
    public let authority: CertificateAuthority?
    /// Lifetimes of issued certificates.
    public let certificatePolicy: CertificatePolicy
    private let sharedTokens: Set<String>
    private let clock: @Sendable () -> Date
    /// CA certificates agents must trust for policyd's own TLS certificate (sent as `ca_cert` with every
    /// certificate, since the supervisor verifies the server with exactly that after switching).
    public let serverCAPEM: String?
    /// policyd serves OpAMP over TLS: offering a certificate then needs ``serverCAPEM``.
    public let serverUsesTLS: Bool

    /// Loads the stored tokens, revocations, certificates and requests.
    /// - Parameters:
    ///   - sharedTokens: bearer tokens that admit any agent (`--agent-tokens-file`).
    ///   - enrolmentTokens: enrolment tokens from a file (kept in memory only; listed with the stored ones).
    public init(
        store: any ControlPlaneStore,
        authority: CertificateAuthority?,
        certificatePolicy: CertificatePolicy = CertificatePolicy(),
        sharedTokens: Set<String> = [],
        enrolmentTokens: [(secret: String, name: String, tier: AgentTier?)] = [],
        serverCAPEM: String? = nil,
        serverUsesTLS: Bool = false,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        self.store = store
        self.authority = authority
        self.certificatePolicy = certificatePolicy
        self.sharedTokens = sharedTokens
        self.serverCAPEM = serverCAPEM
        self.serverUsesTLS = serverUsesTLS
        self.clock = clock
        let records = try store.securityRecords()
        let now = clock()
        self.state.withLockedValue { state in
            for record in records {
                switch record {
                case .enrolmentToken(let token): state.add(token)
                case .revocation(let revocation): state.revoked[revocation.instanceUID] = revocation
                case .certificate(let certificate): state.certificates[certificate.fingerprint] = certificate
                case .certificateRequest(let request): state.requests[request.instanceUID] = request
                case .rotation(let rotation):
                    if rotation.id > (state.rotation?.id ?? 0) { state.rotation = rotation }
                }
            }
            for token in enrolmentTokens {
                let hash = SecretToken.hash(token.secret)
                // A stored record (a revocation) wins over the file.
                guard state.enrolment[hash] == nil else { continue }
                state.add(
                    EnrolmentToken(
                        id: String(hash.prefix(8)),
                        hash: hash,
                        name: token.name,
                        tier: token.tier,
                        createdAt: now,
                        createdBy: "file",
                        expiresAt: nil,
                        revokedAt: nil
                    )
                )
            }
        }
    }

    /// True when no credential of any kind is configured: anyone may connect.
    public var open: Bool {
        self.sharedTokens.isEmpty && self.authority == nil
            && self.state.withLockedValue { state in !state.enrolment.values.contains { $0.revokedAt == nil } }
    }

    // MARK: AgentAccessPolicy

    public func authenticate(_ credentials: AgentCredentials) -> Result<AgentPrincipal, AccessRefusal> {
        let now = self.clock()
        if let der = credentials.clientCertificate {
            // The handshake verified the chain; the SAN says whom it names.
            guard let presented = PresentedCertificate(derEncoded: der), let identity = presented.identity else {
                return .failure(
                    AccessRefusal(kind: "credentials", reason: "the client certificate names no Tailplane agent")
                )
            }
            let uid = identity.instanceUID.description
            if let revocation = self.state.withLockedValue({ $0.revoked[uid] }) {
                return .failure(Self.revoked(revocation))
            }
            self.state.withLockedValue { _ = $0.certified.insert(uid) }
            return .success(
                AgentPrincipal(
                    name: "certificate:\(presented.fingerprint.prefix(12))",
                    instanceUID: identity.instanceUID,
                    scope: identity.tier,
                    certificateFingerprint: presented.fingerprint,
                    certificateNotBefore: presented.notBefore,
                    certificateNotAfter: presented.notAfter
                )
            )
        }
        if let token = credentials.bearerToken {
            if self.sharedTokens.contains(token) { return .success(AgentPrincipal(name: "shared-token")) }
            let hash = SecretToken.hash(token)
            if let enrolment = self.state.withLockedValue({ $0.enrolment[hash] }) {
                guard enrolment.valid(at: now) else {
                    let why = enrolment.revokedAt != nil ? "was revoked" : "has expired"
                    return .failure(
                        AccessRefusal(kind: "credentials", reason: "enrolment token \(enrolment.id) \(why)")
                    )
                }
                return .success(
                    AgentPrincipal(
                        name: Self.enrolmentPrefix + enrolment.id,
                        scope: enrolment.tier?.rawValue,
                        enrolment: true
                    )
                )
            }
            return .failure(AccessRefusal(kind: "credentials", reason: "unknown bearer token"))
        }
        if self.open { return .success(.anonymous) }
        return .failure(
            AccessRefusal(kind: "credentials", reason: "no credentials: send a bearer token or a client certificate")
        )
    }

    public func authorize(_ principal: AgentPrincipal, instanceUID uid: InstanceUID, description: AgentDescription?)
        -> AccessRefusal?
    {
        let now = self.clock()
        let (revocation, fleet, certified, enrolment) = self.state.withLockedValue { state in
            (
                state.revoked[uid.description], state.fleet, state.certified.contains(uid.description),
                principal.enrolment
                    ? state.enrolment(id: String(principal.name.dropFirst(Self.enrolmentPrefix.count))) : nil
            )
        }
        if let revocation { return Self.revoked(revocation) }
        if principal.enrolment, enrolment?.valid(at: now) != true {
            // Revoked or expired while the connection was open.
            return AccessRefusal(kind: "credentials", reason: "\(principal.name) is no longer valid")
        }
        if principal.instanceUID == nil, certified {
            // Once an agent has connected with its certificate, a token holder cannot speak for it.
            return AccessRefusal(
                kind: "instance_uid",
                reason: "agent \(uid) holds a client certificate; it must connect with it, not with \(principal.name)"
            )
        }
        guard let scope = principal.scope, let description else { return nil }
        let claimed = Self.tier(of: description, in: fleet)
        if let claimed, claimed.rawValue != scope {
            return AccessRefusal(
                kind: "tier",
                reason:
                    "agent \(uid) describes itself as tier \(claimed.rawValue) but its credential (\(principal.name)) is for tier \(scope)"
            )
        }
        return nil
    }

    /// The tier a description puts an agent in, if any.
    static func tier(of description: AgentDescription, in fleet: Fleet) -> AgentTier? {
        fleet.samplingTier.matches(description.attributes)
            ? .sampling : fleet.loadBalancingTier.matches(description.attributes) ? .loadBalancing : nil
    }

    /// The CA bundle sent as `ca_cert`: the server's CA (to verify policyd after switching) and the agent CA.
    public func caBundle() throws(ControlPlaneError) -> String {
        guard let authority = self.authority else {
            throw .conflict("this server has no certificate authority (`policyd ca init`)")
        }
        if self.serverUsesTLS, self.serverCAPEM == nil {
            throw .conflict(
                "policyd does not know the CA of its own TLS certificate, so agents given a certificate could not verify it; give --tls-ca"
            )
        }
        return (self.serverCAPEM.map { $0.hasSuffix("\n") ? $0 : $0 + "\n" } ?? "") + authority.certificatePEM
    }

    public func certificateRequest(
        _ pem: String,
        instanceUID uid: InstanceUID,
        description: AgentDescription?,
        principal: AgentPrincipal
    ) -> CertificateRequestOutcome {
        guard let authority = self.authority else {
            return .refused("this server has no certificate authority (`policyd ca init`)")
        }
        let bundle: String
        do {
            bundle = try self.caBundle()
        } catch {
            return .refused(error.message)
        }
        do {
            _ = try CertificateRequestCheck.check(pem, sender: uid)
        } catch {
            return .refused(error.message)
        }
        let now = self.clock()
        // The credential's tier, or else the one the agent's description puts it in.
        let fleet = self.state.withLockedValue { $0.fleet }
        let tier =
            principal.scope.flatMap(AgentTier.init(rawValue:)) ?? description.flatMap { Self.tier(of: $0, in: fleet) }
        // Enrolled agents and holders of this agent's own certificate (a renewal) are signed at once.
        guard principal.enrolment || principal.instanceUID == uid else {
            let replaced = self.state.withLockedValue { state -> Bool in
                if let existing = state.requests[uid.description], existing.state == .pending {
                    // Only the credential that sent it may replace a waiting request: an administrator must not
                    // approve a key someone else slipped in.
                    if existing.principal != principal.name { return true }
                    if existing.pem == pem { return false }
                }
                let request = CertificateRequestRecord(
                    instanceUID: uid.description,
                    pem: pem,
                    tier: tier,
                    principal: principal.name,
                    receivedAt: now,
                    state: .pending,
                    decidedBy: nil,
                    fingerprint: nil
                )
                state.requests[uid.description] = request
                state.unsaved.append(.certificateRequest(request))
                return false
            }
            if replaced {
                return .refused("a request from agent \(uid) sent with another credential is waiting for approval")
            }
            return .pending
        }
        do {
            let issued = try authority.sign(
                requestPEM: pem,
                for: AgentIdentity(instanceUID: uid, tier: tier?.rawValue),
                policy: self.certificatePolicy,
                now: now
            )
            self.record(issued, tier: tier, origin: "csr", now: now)
            return .issued(certificatePEM: issued.certificatePEM, caCertificatePEM: bundle)
        } catch {
            return .refused(error.message)
        }
    }

    private static func revoked(_ revocation: RevocationRecord) -> AccessRefusal {
        AccessRefusal(
            kind: "revoked",
            reason: "agent \(revocation.instanceUID) was revoked by \(revocation.revokedBy): \(revocation.reason)"
        )
    }

    private func record(_ issued: IssuedCertificate, tier: AgentTier?, origin: String, now: Date) {
        let record = AgentCertificateRecord(
            fingerprint: issued.fingerprint,
            serial: issued.serial,
            instanceUID: issued.identity.instanceUID.description,
            tier: tier,
            notBefore: issued.notBefore,
            notAfter: issued.notAfter,
            origin: origin,
            issuedAt: now
        )
        self.state.withLockedValue { state in
            state.certificates[record.fingerprint] = record
            state.unsaved.append(.certificate(record))
        }
    }

    // MARK: For the controller and the API

    /// The fleet description that sorts agents into tiers (the tier check follows the current version).
    public func setTieringFleet(_ fleet: Fleet) {
        self.state.withLockedValue { state in
            if state.fleet != fleet { state.fleet = fleet }
        }
    }

    /// Writes the records made while answering agents. On failure they stay queued for the next call.
    public func flush() throws {
        let records = self.state.withLockedValue { state -> [SecurityRecord] in
            defer { state.unsaved = [] }
            return state.unsaved
        }
        guard !records.isEmpty else { return }
        do {
            try self.store.saveSecurityRecords(records)
        } catch {
            self.state.withLockedValue { $0.unsaved = records + $0.unsaved }
            throw error
        }
    }

    /// What other replicas stored that this one acts on.
    public struct ReplicaSecurityNews: Sendable {
        /// Agents newly revoked: their sessions here are closed.
        public var revoked: [String] = []
        /// Requests this replica had waiting that were approved elsewhere (the API goes to the leader), with
        /// the certificate to offer if the agent is connected here.
        public var approved: [(uid: String, certificate: OfferedCertificate)] = []
    }

    /// Reads what other replicas stored since (several policyd on one database): enrolment tokens new or
    /// revoked, agents revoked, certificates issued, certificate requests received or decided. Records not yet
    /// saved here are kept.
    public func reload() throws -> ReplicaSecurityNews {
        let records = try self.store.securityRecords()
        let bundle = try? self.caBundle()
        return self.state.withLockedValue { state in
            var news = ReplicaSecurityNews()
            let pending = Set(state.unsaved.map { "\($0.key.kind)|\($0.key.id)" })
            for record in records where !pending.contains("\(record.key.kind)|\(record.key.id)") {
                switch record {
                case .enrolmentToken(let token): state.add(token)
                case .revocation(let revocation):
                    if state.revoked[revocation.instanceUID] == nil { news.revoked.append(revocation.instanceUID) }
                    state.revoked[revocation.instanceUID] = revocation
                case .certificate(let certificate): state.certificates[certificate.fingerprint] = certificate
                case .certificateRequest(let request):
                    let before = state.requests[request.instanceUID]
                    state.requests[request.instanceUID] = request
                    // Only a decision seen happening, on the request this replica had waiting (not one the agent has
                    // replaced since): a replica that starts does not offer old certificates again.
                    if before?.state == .pending, before?.pem == request.pem, request.state == .approved,
                        let pem = request.certificatePEM
                    {
                        guard let bundle else {
                            // Without the CA bundle nothing can be offered: kept waiting here, tried on the next read.
                            state.requests[request.instanceUID] = before
                            continue
                        }
                        news.approved.append(
                            (
                                request.instanceUID,
                                OfferedCertificate(certificatePEM: pem, privateKeyPEM: nil, caCertificatePEM: bundle)
                            )
                        )
                    }
                case .rotation(let rotation):
                    // Run by the leader; a follower offers the certificates the leader asks it to, and a replica
                    // that takes over carries on with the rotation as last saved.
                    if (state.rotation?.id ?? 0) <= rotation.id { state.rotation = rotation }
                }
            }
            return news
        }
    }

    /// Rereads only the certificates other replicas recorded (the rest waits for ``reload()``, whose news
    /// the controller acts on).
    public func reloadCertificates() throws {
        let records = try self.store.securityRecords()
        self.state.withLockedValue { state in
            for case .certificate(let certificate) in records {
                state.certificates[certificate.fingerprint] = certificate
            }
        }
    }

    /// Makes an enrolment token; the secret is returned here only.
    public func createEnrolmentToken(name: String, tier: AgentTier?, expiresIn: TimeInterval?, actor: String) throws
        -> (token: EnrolmentToken, secret: String)
    {
        let secret = SecretToken.generate(kind: "e")
        let now = self.clock()
        let token = EnrolmentToken(
            id: secret.id,
            hash: secret.hash,
            name: name,
            tier: tier,
            createdAt: now,
            createdBy: actor,
            expiresAt: expiresIn.map { now.addingTimeInterval($0) },
            revokedAt: nil
        )
        try self.store.saveSecurityRecords([.enrolmentToken(token)])
        self.state.withLockedValue { $0.add(token) }
        return (token, secret.secret)
    }

    /// Every enrolment token (no secrets), newest first.
    public func enrolmentTokens() -> [EnrolmentToken] {
        self.state.withLockedValue { Array($0.enrolment.values) }.sorted {
            ($0.createdAt, $0.id) > ($1.createdAt, $1.id)
        }
    }

    /// Revokes an enrolment token by id; false when there is none.
    public func revokeEnrolmentToken(id: String) throws -> Bool {
        guard var token = self.state.withLockedValue({ state in state.enrolment(id: id) }) else {
            return false
        }
        guard token.revokedAt == nil else { return true }
        token.revokedAt = self.clock()
        // Saved for file tokens too, so the revocation outlives a restart that reads the file again.
        try self.store.saveSecurityRecords([.enrolmentToken(token)])
        self.state.withLockedValue { $0.add(token) }
        return true
    }

    /// Revokes an agent: from now on nothing it presents admits it. The caller closes its connection.
    public func revokeAgent(_ uid: String, reason: String, actor: String) throws -> RevocationRecord {
        let record = RevocationRecord(instanceUID: uid, revokedAt: self.clock(), revokedBy: actor, reason: reason)
        try self.store.saveSecurityRecords([.revocation(record)])
        self.state.withLockedValue { $0.revoked[uid] = record }
        return record
    }

    /// Revoked agents.
    public func revocations() -> [RevocationRecord] {
        self.state.withLockedValue { Array($0.revoked.values) }.sorted { $0.instanceUID < $1.instanceUID }
    }

    /// Certificate requests, pending first.
    public func certificateRequests() -> [CertificateRequestRecord] {
        self.state.withLockedValue { Array($0.requests.values) }.sorted {
            ($0.state != .pending ? 1 : 0, $0.receivedAt) < ($1.state != .pending ? 1 : 0, $1.receivedAt)
        }
    }

    /// Certificates issued to an agent, newest first.
    public func certificates(of uid: String) -> [AgentCertificateRecord] {
        self.state.withLockedValue { state in state.certificates.values.filter { $0.instanceUID == uid } }.sorted {
            $0.issuedAt > $1.issuedAt
        }
    }

    /// Approves or denies a waiting CSR. Approval signs it and returns the certificate to offer.
    public func decide(_ uid: String, approve: Bool, actor: String) throws -> OfferedCertificate? {
        // The request as stored: with several replicas, the agent may have replaced it through another one a
        // moment ago, and the key approved must be the one it holds now.
        let stored = try self.store.securityRecords().lazy.compactMap { record -> CertificateRequestRecord? in
            if case .certificateRequest(let request) = record, request.instanceUID == uid { return request }
            return nil
        }.first
        let known = self.state.withLockedValue { $0.requests[uid] }
        let pendingHere = self.state.withLockedValue { state in
            state.unsaved.contains { $0.key.kind == "certificate_request" && $0.key.id == uid }
        }
        guard var request = pendingHere ? known : (stored ?? known), request.state == .pending else {
            throw ControlPlaneError.notFound("no pending certificate request from agent \(uid)")
        }
        request.decidedBy = actor
        var offered: OfferedCertificate?
        if approve {
            guard let authority = self.authority, let instanceUID = InstanceUID(uuidString: uid) else {
                throw ControlPlaneError.conflict("this server has no certificate authority")
            }
            let now = self.clock()
            let issued: IssuedCertificate
            do {
                issued = try authority.sign(
                    requestPEM: request.pem,
                    for: AgentIdentity(instanceUID: instanceUID, tier: request.tier?.rawValue),
                    policy: self.certificatePolicy,
                    now: now
                )
            } catch {
                throw ControlPlaneError.badRequest("the request cannot be signed: \(error.message)")
            }
            request.state = .approved
            request.fingerprint = issued.fingerprint
            request.certificatePEM = issued.certificatePEM
            self.record(issued, tier: request.tier, origin: "csr", now: now)
            offered = OfferedCertificate(
                certificatePEM: issued.certificatePEM,
                privateKeyPEM: nil,
                caCertificatePEM: try self.caBundle()
            )
        } else {
            request.state = .denied
        }
        try self.store.saveSecurityRecords([.certificateRequest(request)])
        self.state.withLockedValue { $0.requests[uid] = request }
        try self.flush()
        return offered
    }

    /// The latest certificate rotation.
    public func rotation() -> CertificateRotation? {
        self.state.withLockedValue { $0.rotation }
    }

    /// Saves a rotation's new state (before its offers go out, so a restart resumes where it stood).
    public func saveRotation(_ rotation: CertificateRotation) throws {
        try self.store.saveSecurityRecords([.rotation(rotation)])
        self.state.withLockedValue { $0.rotation = rotation }
    }

    /// The next rotation id.
    public func nextRotationID() -> Int {
        (self.state.withLockedValue { $0.rotation?.id } ?? 0) + 1
    }

    /// Whether the certificate a connection presented is past its renewal time (read from the certificate
    /// itself, so it holds for certificates whose record was lost and for ones another CA issued).
    public func renewalDue(_ principal: AgentPrincipal, now: Date) -> Bool {
        self.renewalDue(notBefore: principal.certificateNotBefore, notAfter: principal.certificateNotAfter, now: now)
    }

    /// Whether a certificate valid over these dates is past its renewal time (false without dates).
    public func renewalDue(notBefore: Date?, notAfter: Date?, now: Date) -> Bool {
        guard let notBefore, let notAfter else { return false }
        return self.certificatePolicy.renewal(notBefore: notBefore, notAfter: notAfter) <= now
    }

    /// Makes a key pair and a certificate for an agent (server-initiated offers and rotation); `origin` is
    /// recorded with it.
    public func issueCertificate(for uid: InstanceUID, tier: AgentTier?, origin: String = "offered") throws
        -> OfferedCertificate
    {
        guard let authority = self.authority else {
            throw ControlPlaneError.conflict("this server has no certificate authority (`policyd ca init`)")
        }
        let bundle = try self.caBundle()
        let now = self.clock()
        let issued: IssuedCertificate
        do {
            issued = try authority.issue(
                for: AgentIdentity(instanceUID: uid, tier: tier?.rawValue),
                policy: self.certificatePolicy,
                now: now
            )
        } catch {
            throw ControlPlaneError.badRequest("cannot issue a certificate: \(error.message)")
        }
        self.record(issued, tier: tier, origin: origin, now: now)
        return OfferedCertificate(
            certificatePEM: issued.certificatePEM,
            privateKeyPEM: issued.privateKeyPEM,
            caCertificatePEM: bundle
        )
    }
}
