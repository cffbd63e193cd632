import Foundation
import OpAMPProtocol

/// What a connection presented: a bearer token from `Authorization`, and the client certificate of a mutual
/// TLS handshake. Carries secrets: never log it.
public struct AgentCredentials: Sendable {
    /// The bearer token, if the request had one.
    public var bearerToken: String?
    /// The leaf client certificate (DER), verified against the client CA by the TLS handshake.
    public var clientCertificate: [UInt8]?
    /// The peer's address, for logs.
    public var remoteAddress: String?

    /// Creates credentials.
    public init(bearerToken: String? = nil, clientCertificate: [UInt8]? = nil, remoteAddress: String? = nil) {
        self.bearerToken = bearerToken
        self.clientCertificate = clientCertificate
        self.remoteAddress = remoteAddress
    }
}

/// Who a connection speaks for, as its credentials establish: the server only lets it send messages that
/// this allows.
public struct AgentPrincipal: Sendable, Hashable, CustomStringConvertible {
    /// A name for logs and the API (`token:ab12cd34`, `certificate:<fingerprint prefix>`): never a secret.
    public var name: String
    /// The one instance UID this connection may speak for (a per-agent credential); nil: any.
    public var instanceUID: InstanceUID?
    /// The tier the credential admits (`sampling`, `load-balancing`); nil: any. The layer above checks it.
    public var scope: String?
    /// Admitted by an enrolment credential (a CSR from it may be signed without an administrator).
    public var enrolment: Bool
    /// SHA-256 of the client certificate the connection presented, hex.
    public var certificateFingerprint: String?
    /// The presented certificate's validity (for renewal).
    public var certificateNotBefore: Date?
    /// The presented certificate's validity (for renewal).
    public var certificateNotAfter: Date?

    /// Creates a principal.
    public init(
        name: String,
        instanceUID: InstanceUID? = nil,
        scope: String? = nil,
        enrolment: Bool = false,
        certificateFingerprint: String? = nil,
        certificateNotBefore: Date? = nil,
        certificateNotAfter: Date? = nil
    ) {
        self.name = name
        self.instanceUID = instanceUID
        self.scope = scope
        self.enrolment = enrolment
        self.certificateFingerprint = certificateFingerprint
        self.certificateNotBefore = certificateNotBefore
        self.certificateNotAfter = certificateNotAfter
    }

    /// Anyone (no authentication configured).
    public static let anonymous = AgentPrincipal(name: "anonymous")

    public var description: String { self.name }
}

/// Why a connection or a message was refused. `kind` is a short label for metrics (`credentials`,
/// `instance_uid`, `tier`, `revoked`, `csr`); `reason` a sentence for logs and for the agent.
public struct AccessRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    /// Metrics label.
    public var kind: String
    /// What was wrong, without secrets.
    public var reason: String

    /// Creates a refusal.
    public init(kind: String, reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public var description: String { self.reason }
}

/// What to answer an agent's certificate signing request with.
public enum CertificateRequestOutcome: Sendable, Hashable {
    /// Signed: the certificate and the CA certificate, PEM.
    case issued(certificatePEM: String, caCertificatePEM: String)
    /// Waiting for an administrator; the certificate is offered once approved.
    case pending
    /// Refused (BAD_REQUEST to the agent) with the reason.
    case refused(String)
}

/// Decides who may connect, which agent a connection may speak for, and what happens to certificate
/// signing requests. The layer above implements it (tokens, revocations, tiers); the server enforces it.
/// Every method is called on an event loop: answer from memory, without blocking.
public protocol AgentAccessPolicy: Sendable {
    /// Admits or refuses a connection (WebSocket) or a request (HTTP) by its credentials.
    func authenticate(_ credentials: AgentCredentials) -> Result<AgentPrincipal, AccessRefusal>

    /// Whether `principal` may act as agent `uid` with this description (nil while none is known). Called for
    /// every message, so a revocation or a fleet change applies at once: answer from memory. A refusal closes
    /// the connection and the message changes nothing.
    func authorize(_ principal: AgentPrincipal, instanceUID uid: InstanceUID, description: AgentDescription?)
        -> AccessRefusal?

    /// Handles a CSR (PEM) that agent `uid` (with this description, when known) sent over a connection
    /// admitted as `principal`.
    func certificateRequest(
        _ pem: String,
        instanceUID uid: InstanceUID,
        description: AgentDescription?,
        principal: AgentPrincipal
    ) -> CertificateRequestOutcome
}

/// The simplest policy: a set of shared bearer tokens (or none: anyone), every agent may be any UID, and
/// CSRs are refused.
public struct SharedTokenAccess: AgentAccessPolicy {
    /// Accepted tokens; empty admits everyone.
    public var tokens: Set<String>

    /// Creates the policy.
    public init(tokens: Set<String>) {
        self.tokens = tokens
    }

    public func authenticate(_ credentials: AgentCredentials) -> Result<AgentPrincipal, AccessRefusal> {
        guard !self.tokens.isEmpty else { return .success(.anonymous) }
        guard let token = credentials.bearerToken, self.tokens.contains(token) else {
            return .failure(AccessRefusal(kind: "credentials", reason: "missing or invalid bearer token"))
        }
        return .success(AgentPrincipal(name: "shared-token"))
    }

    public func authorize(_ principal: AgentPrincipal, instanceUID uid: InstanceUID, description: AgentDescription?)
        -> AccessRefusal?
    { nil }

    public func certificateRequest(
        _ pem: String,
        instanceUID uid: InstanceUID,
        description: AgentDescription?,
        principal: AgentPrincipal
    ) -> CertificateRequestOutcome {
        .refused("this server does not sign certificates (no CA configured)")
    }
}

/// Counts of refusals by kind, since the server started.
public struct RefusalCounts: Sendable, Hashable {
    /// Refusals by ``AccessRefusal/kind``.
    public var byKind: [String: Int] = [:]
}
