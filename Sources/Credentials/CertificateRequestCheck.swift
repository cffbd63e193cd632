import Crypto
import Foundation
import OpAMPProtocol
import SwiftASN1
import X509
import _CryptoExtras

/// The checks a certificate signing request from an agent must pass before the CA signs it.
public enum CertificateRequestCheck {
    /// Largest CSR accepted, in bytes of PEM.
    public static let maximumSize = 16 * 1024

    /// Parses and checks a CSR sent by the agent `sender`: PEM `CERTIFICATE REQUEST`, signed by the key it
    /// carries, an allowed key type and size (ECDSA P-256 or P-384, Ed25519, RSA of 2048 bits or more), and
    /// no instance UID other than the sender's. The error says which check failed, in words an agent's
    /// operator can act on.
    public static func check(_ pem: String, sender: InstanceUID) throws(CredentialError) -> CertificateSigningRequest {
        guard pem.utf8.count <= Self.maximumSize else {
            throw CredentialError(.rejectedRequest, "the CSR is larger than \(Self.maximumSize) bytes")
        }
        guard let document = try? PEMDocument(pemString: pem), document.discriminator == "CERTIFICATE REQUEST" else {
            throw CredentialError(.rejectedRequest, "the CSR is not a PEM `CERTIFICATE REQUEST`")
        }
        let request: CertificateSigningRequest
        do {
            request = try CertificateSigningRequest(derEncoded: document.derBytes)
        } catch {
            // swift-crypto refuses RSA keys under 2048 bits while parsing, so a weak key ends here too.
            throw CredentialError(
                .rejectedRequest,
                "the CSR or its key cannot be read; accepted keys are ECDSA P-256 or P-384, Ed25519, and RSA of at least 2048 bits"
            )
        }
        guard request.publicKey.isValidSignature(request.signature, for: request) else {
            throw CredentialError(.rejectedRequest, "the CSR is not signed by the key it carries")
        }
        if let problem = Self.keyProblem(request.publicKey) {
            throw CredentialError(.rejectedRequest, problem)
        }
        for uid in AgentIdentity.instanceUIDs(in: request) where uid != sender {
            throw CredentialError(
                .rejectedRequest,
                "the CSR names instance UID \(uid) but was sent by \(sender); an agent may only request its own certificate"
            )
        }
        return request
    }

    /// Why a key is not allowed, or nil.
    static func keyProblem(_ key: Certificate.PublicKey) -> String? {
        if P256.Signing.PublicKey(key) != nil || P384.Signing.PublicKey(key) != nil
            || Curve25519.Signing.PublicKey(key) != nil
        {
            return nil
        }
        if let rsa = _RSA.Signing.PublicKey(key) {
            return rsa.keySizeInBits >= 2048
                ? nil : "the CSR's RSA key has \(rsa.keySizeInBits) bits; at least 2048 are required"
        }
        return "the CSR's key type is not allowed; use ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits"
    }
}
