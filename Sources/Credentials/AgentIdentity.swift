import Foundation
import OpAMPProtocol
import SwiftASN1
import X509

/// Who a client certificate issued by Tailplane's CA names: one agent (by instance UID) in one tier.
///
/// Certificates carry the identity twice, so both people and programs can read it: the subject
/// (`CN=<instance UID>, OU=<tier>, O=Tailplane agents`) and URI subject alternative names
/// (`urn:tailplane:agent:<instance UID>`, `urn:tailplane:tier:<tier>`). Programs read the SAN.
public struct AgentIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The agent's instance UID.
    public var instanceUID: InstanceUID
    /// The tier it was admitted to (`sampling`, `load-balancing`), or nil when not bound to one.
    public var tier: String?

    /// Creates an identity.
    public init(instanceUID: InstanceUID, tier: String?) {
        self.instanceUID = instanceUID
        self.tier = tier
    }

    public var description: String {
        self.tier.map { "\(self.instanceUID) (\($0))" } ?? self.instanceUID.description
    }

    static let agentURIPrefix = "urn:tailplane:agent:"
    static let tierURIPrefix = "urn:tailplane:tier:"

    /// The subject alternative names that carry the identity.
    var alternativeNames: SubjectAlternativeNames {
        var names: [GeneralName] = [.uniformResourceIdentifier(Self.agentURIPrefix + self.instanceUID.description)]
        if let tier = self.tier { names.append(.uniformResourceIdentifier(Self.tierURIPrefix + tier)) }
        return SubjectAlternativeNames(names)
    }

    /// The subject that carries the identity.
    func subject() throws -> DistinguishedName {
        try DistinguishedName {
            OrganizationName("Tailplane agents")
            if let tier = self.tier { OrganizationalUnitName(tier) }
            CommonName(self.instanceUID.description)
        }
    }

    /// The identity a certificate names in its SAN, or nil when it names none (not one of ours).
    public init?(certificate: Certificate) {
        guard let names = try? certificate.extensions.subjectAlternativeNames else { return nil }
        var uid: InstanceUID?
        var tier: String?
        for name in names {
            guard case .uniformResourceIdentifier(let uri) = name else { continue }
            if uri.hasPrefix(Self.agentURIPrefix) {
                uid = InstanceUID(uuidString: String(uri.dropFirst(Self.agentURIPrefix.count)))
            } else if uri.hasPrefix(Self.tierURIPrefix) {
                tier = String(uri.dropFirst(Self.tierURIPrefix.count))
            }
        }
        guard let uid else { return nil }
        self.init(instanceUID: uid, tier: tier)
    }

    /// The identity of a DER-encoded certificate (as a TLS peer presents it).
    public init?(derEncoded bytes: [UInt8]) {
        guard let certificate = try? Certificate(derEncoded: bytes) else { return nil }
        self.init(certificate: certificate)
    }

    /// Every instance UID a certificate signing request names, wherever it names one: a common name or
    /// a URI, DNS name or e-mail SAN that reads as a UUID (alone or after a `urn:…:` prefix).
    static func instanceUIDs(in request: CertificateSigningRequest) -> [InstanceUID] {
        var texts: [String] = []
        for rdn in request.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                if let text = String(attribute.value) { texts.append(text) }
            }
        }
        if let extensions = try? request.attributes.extensionRequest?.extensions,
            let names = try? extensions.subjectAlternativeNames
        {
            for name in names {
                switch name {
                case .uniformResourceIdentifier(let text), .dnsName(let text), .rfc822Name(let text):
                    texts.append(text)
                default: continue
                }
            }
        }
        return texts.compactMap { text in
            let last = text.split(separator: ":").last.map(String.init) ?? text
            return InstanceUID(uuidString: last)
        }
    }
}

/// A client certificate as a TLS peer presented it: whom it names, its validity and its fingerprint.
public struct PresentedCertificate: Sendable, Hashable {
    /// The agent it names (nil: not one of Tailplane's).
    public var identity: AgentIdentity?
    /// Validity.
    public var notBefore: Date
    /// Validity.
    public var notAfter: Date
    /// SHA-256 of the DER bytes, hex.
    public var fingerprint: String

    /// Reads a DER certificate; nil when it does not parse.
    public init?(derEncoded bytes: [UInt8]) {
        guard let certificate = try? Certificate(derEncoded: bytes) else { return nil }
        self.identity = AgentIdentity(certificate: certificate)
        self.notBefore = certificate.notValidBefore
        self.notAfter = certificate.notValidAfter
        self.fingerprint = Fingerprint.sha256(bytes)
    }
}
