import Foundation

/// An enrolment token: admits new agents (of one tier, when it names one) until it expires or is revoked.
/// Only its SHA-256 is kept; the secret is shown once, when it is made.
public struct EnrolmentToken: Sendable, Hashable, Codable {
    /// Public id: the first 8 hex digits of the hash.
    public var id: String
    /// SHA-256 of the secret, hex.
    public var hash: String
    /// What it is for.
    public var name: String
    /// The tier agents admitted with it must be in (nil: any).
    public var tier: AgentTier?
    /// When it was made, and by whom.
    public var createdAt: Date
    /// Who made it.
    public var createdBy: String
    /// When it stops admitting agents (nil: never).
    public var expiresAt: Date?
    /// Set when revoked.
    public var revokedAt: Date?

    /// Reads `TIER NAME TOKEN` lines (`#` comments, blank lines), as in `--enrolment-tokens-file`; `TIER` is
    /// `sampling`, `lb` or `any`. The error names the line.
    public static func parseFile(_ text: String, path: String) throws(ControlPlaneError) -> [(
        secret: String, name: String, tier: AgentTier?
    )] {
        var tokens: [(secret: String, name: String, tier: AgentTier?)] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let parts = trimmed.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            let tier: AgentTier?? =
                parts.first?.lowercased() == "any" ? .some(nil) : parts.first.flatMap(AgentTier.init(name:))
            guard parts.count == 3, let tier, parts[2].count >= 16 else {
                throw .badRequest(
                    "\(path):\(index + 1): expected `TIER NAME TOKEN` with TIER sampling, lb or any and a token of at least 16 characters"
                )
            }
            tokens.append((parts[2], parts[1], tier))
        }
        return tokens
    }

    /// Whether it admits agents at `now`.
    public func valid(at now: Date) -> Bool {
        self.revokedAt == nil && (self.expiresAt.map { now < $0 } ?? true)
    }
}

/// A certificate the CA issued to an agent (server-made key pair or signed CSR).
public struct AgentCertificateRecord: Sendable, Hashable, Codable {
    /// SHA-256 of the certificate, hex.
    public var fingerprint: String
    /// Serial number, hex.
    public var serial: String
    /// The agent it names.
    public var instanceUID: String
    /// The tier it names.
    public var tier: AgentTier?
    /// Validity.
    public var notBefore: Date
    /// Validity.
    public var notAfter: Date
    /// `csr` (the agent's own key) or `offered` (a key pair made by policyd).
    public var origin: String
    /// When it was issued.
    public var issuedAt: Date
}

/// An agent whose credentials no longer admit it.
public struct RevocationRecord: Sendable, Hashable, Codable {
    /// The agent.
    public var instanceUID: String
    /// When, by whom and why.
    public var revokedAt: Date
    /// Who revoked it.
    public var revokedBy: String
    /// Why.
    public var reason: String
}

/// A CSR waiting for (or past) an administrator's decision.
public struct CertificateRequestRecord: Sendable, Hashable, Codable {
    /// Decision states.
    public enum State: String, Sendable, Hashable, Codable {
        case pending, approved, denied
    }

    /// The agent that sent it.
    public var instanceUID: String
    /// The CSR, PEM.
    public var pem: String
    /// The tier its connection's credential admits (nil: none).
    public var tier: AgentTier?
    /// The credential that sent it (name only).
    public var principal: String
    /// When it arrived.
    public var receivedAt: Date
    /// Where it stands.
    public var state: State
    /// Who decided, when decided.
    public var decidedBy: String?
    /// The certificate issued on approval.
    public var fingerprint: String?
    /// That certificate, PEM: with several replicas, the one the agent is connected to offers it.
    public var certificatePEM: String?
}

/// Everything the security layer keeps in the store.
public enum SecurityRecord: Sendable, Hashable, Codable {
    case enrolmentToken(EnrolmentToken)
    case certificate(AgentCertificateRecord)
    case revocation(RevocationRecord)
    case certificateRequest(CertificateRequestRecord)
    case rotation(CertificateRotation)

    /// Table key: kind and id (a later record with the same key replaces the earlier one).
    public var key: (kind: String, id: String) {
        switch self {
        case .enrolmentToken(let token): ("enrolment_token", token.id)
        case .certificate(let certificate): ("certificate", certificate.fingerprint)
        case .revocation(let revocation): ("revocation", revocation.instanceUID)
        case .certificateRequest(let request): ("certificate_request", request.instanceUID)
        case .rotation(let rotation): ("rotation", String(format: "%010d", rotation.id))
        }
    }
}
