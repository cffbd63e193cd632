// libFuzzer target: a certificate signing request from an agent (OpAMP ConnectionSettingsRequest) ->
// the checks in CertificateRequestCheck -> the built-in CA signs it.
// Built by scripts/fuzz.sh (a package target only with TAILPLANE_FUZZ=1, never in a normal build).
//
// The input is DER (wrapped into PEM here, so mutations hit the ASN.1 rather than the base64), or, when its
// first byte is '-', PEM text as it is. Beyond "no crash", it checks that a request that passes yields a
// certificate for the sender and nobody else: its SAN names the sender's instance UID and tier, its key is
// the request's key, it is a client certificate that is not a CA, and it chains to the CA.
import Foundation
import OpAMPProtocol
import SwiftASN1
import X509

@testable import Credentials

/// `precondition` that keeps its message in optimized builds (the fuzzers are built with -O).
private func require(_ condition: Bool, _ message: @autoclosure () -> String = "") {
    if !condition { fatalError(message()) }
}

private let authority: CertificateAuthority = {
    do {
        return try CertificateAuthority.generate(name: "fuzz CA", now: Date(timeIntervalSince1970: 1_800_000_000))
    } catch {
        fatalError("cannot make a CA: \(error)")
    }
}()
/// The sender in every request: `0195f7a2-4c1e-7b3d-9f00-1234567890ab`.
private let sender = InstanceUID(high: 0x0195_f7a2_4c1e_7b3d, low: 0x9f00_1234_5678_90ab)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCSR(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let pem: String
    if bytes.first == UInt8(ascii: "-") {
        pem = String(decoding: bytes, as: UTF8.self)
    } else {
        pem = PEMDocument(type: "CERTIFICATE REQUEST", derBytes: bytes).pemString
    }
    let identity = AgentIdentity(instanceUID: sender, tier: "sampling")
    let issued: IssuedCertificate
    do {
        issued = try authority.sign(requestPEM: pem, for: identity, now: Date(timeIntervalSince1970: 1_800_000_100))
    } catch {
        require(!error.message.isEmpty, "a refused CSR without a reason")
        return 0
    }
    guard let request = try? CertificateRequestCheck.check(pem, sender: sender),
        let certificate = try? Certificate(pemEncoded: issued.certificatePEM)
    else {
        fatalError("a signed CSR does not check again, or its certificate does not parse")
    }
    require(AgentIdentity(certificate: certificate) == identity, "the certificate names someone else")
    require(certificate.publicKey == request.publicKey, "the certificate carries another key")
    let names = try? certificate.extensions.subjectAlternativeNames
    require(
        names == identity.alternativeNames,
        "the certificate names more or other than the sender: \(String(describing: names))"
    )
    let constraints = try? certificate.extensions.basicConstraints
    require(constraints == .notCertificateAuthority, "an agent certificate that is a CA")
    let usage = try? certificate.extensions.keyUsage
    require(
        usage?.keyCertSign == false && usage?.digitalSignature == true,
        "an agent certificate's key usage: \(String(describing: usage))"
    )
    let extended = try? certificate.extensions.extendedKeyUsage
    require(extended.map(Array.init) == [.clientAuth], "an agent certificate for more than client authentication")
    require(certificate.notValidAfter <= authority.certificate.notValidAfter, "an agent certificate outlives its CA")
    require(certificate.issuer == authority.certificate.subject, "an agent certificate with another issuer")
    require(
        authority.certificate.publicKey.isValidSignature(certificate.signature, for: certificate),
        "an agent certificate the CA did not sign"
    )
    return 0
}
