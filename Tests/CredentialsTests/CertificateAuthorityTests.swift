import Crypto
import Foundation
import OpAMPProtocol
import SwiftASN1
import Testing
import X509
import _CryptoExtras

@testable import Credentials

@Suite struct CertificateAuthorityTests {
    let uid = InstanceUID(uuidString: "0190a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a5b")!

    static func temporaryDirectory() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("tp-ca-\(UUID().uuidString)")
    }

    @Test func initWritesAKeyOnlyTheOwnerCanReadAndNeverOverwrites() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let created = try CertificateAuthority.create(directory: directory)
        let keyPath = directory.appendingPathComponent(CertificateAuthority.privateKeyFile).path
        let mode = try FileManager.default.attributesOfItem(atPath: keyPath)[.posixPermissions] as? NSNumber
        #expect(mode?.intValue == 0o600)
        let keyText = try String(contentsOfFile: keyPath, encoding: .utf8)
        #expect(keyText.contains("PRIVATE KEY"))
        // The certificate file holds no key material.
        let certificateText = try String(
            contentsOf: directory.appendingPathComponent(CertificateAuthority.certificateFile),
            encoding: .utf8
        )
        #expect(!certificateText.contains("PRIVATE"))
        #expect(throws: CredentialError.self) { try CertificateAuthority.create(directory: directory) }
        let loaded = try CertificateAuthority.load(directory: directory)
        #expect(loaded.certificate == created.certificate)
        // ECDSA P-256, a CA.
        #expect(P256.Signing.PublicKey(loaded.certificate.publicKey) != nil)
        let constraints = try loaded.certificate.extensions.basicConstraints
        #expect(constraints == .isCertificateAuthority(maxPathLength: 0))
    }

    @Test func aKeyFromAnotherCertificateIsRefused() throws {
        let one = try CertificateAuthority.generate()
        let other = P256.Signing.PrivateKey()
        #expect(throws: CredentialError.self) {
            try CertificateAuthority(certificatePEM: one.certificatePEM, privateKeyPEM: other.pemRepresentation)
        }
    }

    @Test func issuedCertificatesNameTheAgentAndTierAndChainToTheCA() throws {
        let authority = try CertificateAuthority.generate()
        let now = Date()
        let issued = try authority.issue(
            for: AgentIdentity(instanceUID: self.uid, tier: "sampling"),
            policy: CertificatePolicy(lifetime: 30 * 86_400),
            now: now
        )
        let certificate = try Certificate(pemEncoded: issued.certificatePEM)
        #expect(AgentIdentity(certificate: certificate) == AgentIdentity(instanceUID: self.uid, tier: "sampling"))
        #expect(certificate.subject.description.contains(self.uid.description))
        #expect(authority.certificate.publicKey.isValidSignature(certificate.signature, for: certificate))
        #expect(certificate.issuer == authority.certificate.subject)
        #expect(abs(certificate.notValidAfter.timeIntervalSince(now) - 30 * 86_400) < 2)
        #expect(try certificate.extensions.extendedKeyUsage?.contains(.clientAuth) == true)
        // The private key returned belongs to the certificate.
        let key = try Certificate.PrivateKey(pemEncoded: try #require(issued.privateKeyPEM))
        #expect(key.publicKey == certificate.publicKey)
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        #expect(issued.fingerprint == Fingerprint.sha256(serializer.serializedBytes))
        // Renewal at two thirds of the lifetime.
        let renewal = CertificatePolicy().renewal(notBefore: issued.notBefore, notAfter: issued.notAfter)
        #expect(
            abs(
                renewal.timeIntervalSince(issued.notBefore) - issued.notAfter.timeIntervalSince(issued.notBefore) * 2
                    / 3
            ) < 1
        )
    }

    static func request(
        key: Certificate.PrivateKey,
        commonName: String,
        uri: String? = nil
    ) throws -> String {
        let subject = try DistinguishedName { CommonName(commonName) }
        var attributes = CertificateSigningRequest.Attributes()
        if let uri {
            let extensions = try Certificate.Extensions {
                SubjectAlternativeNames([.uniformResourceIdentifier(uri)])
            }
            attributes.insert(try .init(ExtensionRequest(extensions: extensions)))
        }
        let request = try CertificateSigningRequest(
            version: .v1,
            subject: subject,
            privateKey: key,
            attributes: attributes
        )
        return try request.serializeAsPEM().pemString
    }

    @Test func aGoodRequestIsSignedForTheSenderWhateverItsSubjectSays() throws {
        let authority = try CertificateAuthority.generate()
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let pem = try Self.request(key: key, commonName: "OpAMP Example Client")
        let issued = try authority.sign(
            requestPEM: pem,
            for: AgentIdentity(instanceUID: self.uid, tier: "load-balancing")
        )
        #expect(issued.privateKeyPEM == nil)
        let certificate = try Certificate(pemEncoded: issued.certificatePEM)
        #expect(certificate.publicKey == key.publicKey)
        #expect(AgentIdentity(certificate: certificate)?.instanceUID == self.uid)
        #expect(AgentIdentity(certificate: certificate)?.tier == "load-balancing")
        // Naming its own UID is fine, in the common name or a SAN URI.
        _ = try authority.sign(
            requestPEM: try Self.request(key: key, commonName: self.uid.description),
            for: AgentIdentity(instanceUID: self.uid, tier: nil)
        )
        _ = try authority.sign(
            requestPEM: try Self.request(key: key, commonName: "x", uri: "urn:tailplane:agent:\(self.uid)"),
            for: AgentIdentity(instanceUID: self.uid, tier: nil)
        )
    }

    @Test func badRequestsAreRefusedWithTheReason() throws {
        let authority = try CertificateAuthority.generate()
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let identity = AgentIdentity(instanceUID: self.uid, tier: "sampling")
        func reason(_ pem: String) -> String? {
            do {
                _ = try authority.sign(requestPEM: pem, for: identity)
                return nil
            } catch {
                #expect(error.kind == .rejectedRequest)
                return error.message
            }
        }
        #expect(reason("not a csr")?.contains("not a PEM") == true)
        let other = InstanceUID(uuidString: "0190a0b1-c2d3-7e4f-8a9b-ffffffffffff")!
        #expect(
            reason(try Self.request(key: key, commonName: other.description))?.contains("names instance UID") == true
        )
        #expect(
            reason(try Self.request(key: key, commonName: "x", uri: "urn:tailplane:agent:\(other)"))?
                .contains("only request its own") == true
        )
        let weak = Certificate.PrivateKey(try _RSA.Signing.PrivateKey(unsafeKeySize: .init(bitCount: 1024)))
        #expect(reason(try Self.request(key: weak, commonName: "x"))?.contains("2048") == true)
        // A request whose signature does not match its key: change one byte of the signature.
        let good = try Self.request(key: key, commonName: "x")
        var document = try PEMDocument(pemString: good)
        document.derBytes[document.derBytes.count - 3] ^= 0x01
        #expect(reason(document.pemString)?.contains("not signed by the key") == true)
        #expect(
            reason(String(repeating: "A", count: CertificateRequestCheck.maximumSize + 1))?.contains("larger") == true
        )
    }

    @Test func tokensAreRandomAndKeptOnlyAsHashes() {
        let one = SecretToken.generate(kind: "e")
        let two = SecretToken.generate(kind: "e")
        #expect(one.secret != two.secret)
        #expect(one.secret.hasPrefix("tpe_"))
        #expect(one.secret.count > 40)
        #expect(one.hash == SecretToken.hash(one.secret))
        #expect(one.hash.count == 64)
        #expect(!one.hash.contains(one.secret))
        #expect(one.id == String(one.hash.prefix(8)))
    }

    @Test func theServersIssuerIsTheCAFileOrTheChainAfterTheLeaf() throws {
        let directory = Self.temporaryDirectory()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let authority = try CertificateAuthority.generate()
        let leaf = try authority.issue(for: AgentIdentity(instanceUID: self.uid, tier: nil)).certificatePEM
        let chain = directory.appendingPathComponent("chain.pem")
        let alone = directory.appendingPathComponent("leaf.pem")
        let ca = directory.appendingPathComponent("ca.pem")
        try (leaf + authority.certificatePEM).write(to: chain, atomically: true, encoding: .utf8)
        try leaf.write(to: alone, atomically: true, encoding: .utf8)
        try authority.certificatePEM.write(to: ca, atomically: true, encoding: .utf8)
        // The certificates after the leaf, as PEM.
        let issuer = try #require(try ServerTLS.issuerPEM(certificatePath: chain.path, caPath: nil))
        #expect(try Certificate(pemEncoded: issuer) == authority.certificate)
        #expect(issuer.hasPrefix("-----BEGIN CERTIFICATE-----") && issuer.hasSuffix("-----END CERTIFICATE-----\n"))
        // A leaf alone names no issuer; a CA file is taken as it is, and one that is not PEM is refused.
        #expect(try ServerTLS.issuerPEM(certificatePath: alone.path, caPath: nil) == nil)
        #expect(try ServerTLS.issuerPEM(certificatePath: alone.path, caPath: ca.path) == authority.certificatePEM)
        #expect(throws: CredentialError.self) {
            try ServerTLS.issuerPEM(certificatePath: alone.path, caPath: directory.appendingPathComponent("none").path)
        }
    }
}
