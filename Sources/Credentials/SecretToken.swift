import Crypto
import Foundation

/// Bearer secrets (enrolment tokens, per-agent tokens): made from 32 random bytes, stored only as their
/// SHA-256, compared by hash. The secret itself is shown once, when it is made.
public struct SecretToken: Sendable, Hashable {
    /// The secret, `tp<kind>_<base64url>`. Never logged or stored.
    public let secret: String
    /// Its SHA-256, hex: what is stored and looked up.
    public var hash: String { Self.hash(self.secret) }
    /// A short public id for logs and listings: the first 8 hex digits of the hash.
    public var id: String { String(self.hash.prefix(8)) }

    /// A new random token; `kind` is a short prefix saying what it is for (`e` enrolment, `a` agent).
    public static func generate(kind: String) -> SecretToken {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let text = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return SecretToken(secret: "tp\(kind)_\(text)")
    }

    /// Wraps a secret someone presented.
    public init(secret: String) {
        self.secret = secret
    }

    /// SHA-256 of a secret, hex.
    public static func hash(_ secret: String) -> String {
        Fingerprint.sha256(Array(secret.utf8))
    }
}
