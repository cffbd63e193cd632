import Crypto
import Foundation
import OpAMPProtocol
import SwiftASN1
import X509
import _CryptoExtras

/// Lifetimes of the certificates the CA issues to agents.
public struct CertificatePolicy: Sendable, Hashable {
    /// How long an agent certificate is valid.
    public var lifetime: TimeInterval
    /// The share of the lifetime after which a certificate is due for renewal (2/3: renew after 20 of 30 days).
    public var renewAfterFraction: Double
    /// How far back `notBefore` is set, so agents whose clocks run a little behind accept the certificate.
    public var backdate: TimeInterval

    /// 30 days, renewed at two thirds, backdated by five minutes.
    public init(
        lifetime: TimeInterval = 30 * 86_400,
        renewAfterFraction: Double = 2.0 / 3.0,
        backdate: TimeInterval = 300
    ) {
        self.lifetime = lifetime
        self.renewAfterFraction = renewAfterFraction
        self.backdate = backdate
    }

    /// When a certificate valid from `notBefore` to `notAfter` is due for renewal.
    public func renewal(notBefore: Date, notAfter: Date) -> Date {
        notBefore.addingTimeInterval(notAfter.timeIntervalSince(notBefore) * self.renewAfterFraction)
    }
}

/// A certificate the CA issued: PEM text, and what the control plane records about it.
public struct IssuedCertificate: Sendable, Hashable {
    /// The certificate, PEM.
    public var certificatePEM: String
    /// The private key, PEM (PKCS#8), when the CA made the key pair; nil for a signed CSR. Never logged.
    public var privateKeyPEM: String?
    /// The serial number, hex.
    public var serial: String
    /// SHA-256 of the certificate's DER bytes, hex: what a TLS peer's certificate is matched against.
    public var fingerprint: String
    /// Validity.
    public var notBefore: Date
    /// Validity.
    public var notAfter: Date
    /// Whom it names.
    public var identity: AgentIdentity
}

/// Tailplane's built-in certificate authority: an ECDSA P-256 key and a self-signed CA certificate that
/// issues agent client certificates and signs agents' certificate signing requests.
///
/// `policyd ca init` writes `ca.pem` and `ca.key` (mode 0600) into `<data dir>/ca/`; an existing CA can be
/// given as files instead. The private key never leaves this type except into its own file.
public struct CertificateAuthority: Sendable {
    /// The CA certificate.
    public let certificate: Certificate
    /// The CA certificate, PEM (the `ca_cert` sent to agents).
    public let certificatePEM: String
    private let privateKey: Certificate.PrivateKey

    /// File names inside the CA directory.
    public static let certificateFile = "ca.pem"
    /// File names inside the CA directory.
    public static let privateKeyFile = "ca.key"

    /// Loads a CA from a certificate and a private key in PEM.
    public init(certificatePEM: String, privateKeyPEM: String) throws(CredentialError) {
        let certificate: Certificate
        let key: Certificate.PrivateKey
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw CredentialError(.malformed, "the CA certificate is not a PEM certificate")
        }
        do {
            key = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
        } catch {
            throw CredentialError(.malformed, "the CA private key is not a PEM private key (PKCS#8, SEC1 or RSA)")
        }
        guard key.publicKey == certificate.publicKey else {
            throw CredentialError(.malformed, "the CA private key does not belong to the CA certificate")
        }
        if let constraints = try? certificate.extensions.basicConstraints, case .notCertificateAuthority = constraints {
            throw CredentialError(.malformed, "the CA certificate is not a CA certificate (basicConstraints CA:FALSE)")
        }
        self.certificate = certificate
        self.certificatePEM = certificatePEM.hasSuffix("\n") ? certificatePEM : certificatePEM + "\n"
        self.privateKey = key
    }

    /// Loads `ca.pem` and `ca.key` from a directory, or from the two files given.
    public static func load(certificateFile: URL, privateKeyFile: URL) throws(CredentialError) -> CertificateAuthority {
        guard let certificate = try? String(contentsOf: certificateFile, encoding: .utf8) else {
            throw CredentialError(.unreadable, "cannot read the CA certificate \(certificateFile.path)")
        }
        guard let key = try? String(contentsOf: privateKeyFile, encoding: .utf8) else {
            throw CredentialError(.unreadable, "cannot read the CA private key \(privateKeyFile.path)")
        }
        return try CertificateAuthority(certificatePEM: certificate, privateKeyPEM: key)
    }

    /// Loads the CA kept in `directory` (`ca.pem`, `ca.key`).
    public static func load(directory: URL) throws(CredentialError) -> CertificateAuthority {
        let certificate = directory.appendingPathComponent(Self.certificateFile)
        guard FileManager.default.fileExists(atPath: certificate.path) else {
            throw CredentialError(.authorityState, "no CA in \(directory.path); create one with `policyd ca init`")
        }
        return try Self.load(
            certificateFile: certificate,
            privateKeyFile: directory.appendingPathComponent(Self.privateKeyFile)
        )
    }

    /// Creates a new CA (ECDSA P-256, self-signed, valid for `years`) and writes it into `directory`,
    /// the key with mode 0600. Refuses to overwrite an existing CA.
    public static func create(
        directory: URL,
        name: String = "Tailplane agent CA",
        years: Int = 10,
        now: Date = Date()
    ) throws(CredentialError) -> CertificateAuthority {
        let certificateURL = directory.appendingPathComponent(Self.certificateFile)
        let keyURL = directory.appendingPathComponent(Self.privateKeyFile)
        if FileManager.default.fileExists(atPath: certificateURL.path)
            || FileManager.default.fileExists(atPath: keyURL.path)
        {
            throw CredentialError(.authorityState, "a CA exists already in \(directory.path); it is never overwritten")
        }
        let authority = try Self.generate(name: name, years: years, now: now)
        do {
            try FileManager.default.createDirectory(
                at: directory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
            // The key file is created with mode 0600 before a byte of the key is written.
            guard
                FileManager.default.createFile(
                    atPath: keyURL.path,
                    contents: nil,
                    attributes: [.posixPermissions: 0o600]
                )
            else { throw CredentialError(.unwritable, "cannot create \(keyURL.path)") }
            let handle = try FileHandle(forWritingTo: keyURL)
            try handle.write(contentsOf: Data(try authority.privateKey.serializeAsPEM().pemString.utf8 + [10]))
            try handle.synchronize()
            try handle.close()
            try Data(authority.certificatePEM.utf8).write(to: certificateURL, options: .atomic)
        } catch let error as CredentialError {
            throw error
        } catch {
            throw CredentialError(
                .unwritable,
                "cannot write the CA into \(directory.path): \(error.localizedDescription)"
            )
        }
        return authority
    }

    /// A new CA in memory (tests; `create` writes one to disk).
    public static func generate(name: String = "Tailplane agent CA", years: Int = 10, now: Date = Date())
        throws(CredentialError) -> CertificateAuthority
    {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        do {
            let subject = try DistinguishedName {
                OrganizationName("Tailplane")
                CommonName(name)
            }
            let certificate = try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: key.publicKey,
                notValidBefore: now.addingTimeInterval(-300),
                notValidAfter: now.addingTimeInterval(Double(years) * 365 * 86_400),
                issuer: subject,
                subject: subject,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(hash: key.publicKey)
                },
                issuerPrivateKey: key
            )
            return try CertificateAuthority(
                certificatePEM: try certificate.serializeAsPEM().pemString,
                privateKeyPEM: try key.serializeAsPEM().pemString
            )
        } catch let error as CredentialError {
            throw error
        } catch {
            throw CredentialError(.malformed, "cannot create a CA certificate: \(error)")
        }
    }

    /// Makes a key pair (ECDSA P-256) and a client certificate for an agent (server-initiated offers).
    public func issue(for identity: AgentIdentity, policy: CertificatePolicy = CertificatePolicy(), now: Date = Date())
        throws(CredentialError) -> IssuedCertificate
    {
        let key = P256.Signing.PrivateKey()
        var issued = try self.sign(
            publicKey: Certificate.PublicKey(key.publicKey),
            for: identity,
            policy: policy,
            now: now
        )
        issued.privateKeyPEM = key.pemRepresentation
        return issued
    }

    /// Checks an agent's certificate signing request and signs it (the CSR flow). The certificate names
    /// `identity` whatever the request's subject says; the request may only name the same instance UID.
    public func sign(
        requestPEM: String,
        for identity: AgentIdentity,
        policy: CertificatePolicy = CertificatePolicy(),
        now: Date = Date()
    ) throws(CredentialError) -> IssuedCertificate {
        let request = try CertificateRequestCheck.check(requestPEM, sender: identity.instanceUID)
        return try self.sign(publicKey: request.publicKey, for: identity, policy: policy, now: now)
    }

    private func sign(
        publicKey: Certificate.PublicKey,
        for identity: AgentIdentity,
        policy: CertificatePolicy,
        now: Date
    )
        throws(CredentialError) -> IssuedCertificate
    {
        let notBefore = now.addingTimeInterval(-policy.backdate)
        // Never valid beyond the CA itself.
        let notAfter = min(now.addingTimeInterval(policy.lifetime), self.certificate.notValidAfter)
        do {
            let serial = Certificate.SerialNumber()
            let certificate = try Certificate(
                version: .v3,
                serialNumber: serial,
                publicKey: publicKey,
                notValidBefore: notBefore,
                notValidAfter: notAfter,
                issuer: self.certificate.subject,
                subject: try identity.subject(),
                // The CA key's own algorithm: a given CA may be P-384, RSA or Ed25519.
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.clientAuth])
                    identity.alternativeNames
                    SubjectKeyIdentifier(hash: publicKey)
                    if let authorityKey = try? self.certificate.extensions.subjectKeyIdentifier {
                        AuthorityKeyIdentifier(keyIdentifier: authorityKey.keyIdentifier)
                    }
                },
                issuerPrivateKey: self.privateKey
            )
            var serializer = DER.Serializer()
            try serializer.serialize(certificate)
            return IssuedCertificate(
                certificatePEM: try certificate.serializeAsPEM().pemString + "\n",
                privateKeyPEM: nil,
                serial: serial.bytes.map { String(format: "%02x", $0) }.joined(),
                fingerprint: Fingerprint.sha256(serializer.serializedBytes),
                notBefore: notBefore,
                notAfter: notAfter,
                identity: identity
            )
        } catch {
            throw CredentialError(.malformed, "cannot issue a certificate for \(identity): \(error)")
        }
    }
}

/// Hex SHA-256 fingerprints.
public enum Fingerprint {
    /// SHA-256 of `bytes`, lower-case hex.
    public static func sha256(_ bytes: some DataProtocol) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// SHA-256 of a PEM certificate's DER bytes (the first certificate in `pem`), or nil when it is not PEM.
    public static func sha256(pem: String) -> String? {
        (try? PEMDocument(pemString: pem)).map { Self.sha256($0.derBytes) }
    }
}
