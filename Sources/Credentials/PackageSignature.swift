import Crypto
import Foundation

/// Package signatures: policyd signs every package it stores with an Ed25519 key of its own, and agents
/// pin the public key and verify before installing.
///
/// Ed25519 signs a short statement, not the file: the statement names the package, its version, its kind
/// and the SHA-256 of its content. A file of any size is hashed in a stream (on upload, and by the agent
/// while it downloads), so neither side holds the package in memory, and a signature cannot be moved to
/// another name or version of the same bytes.
public enum PackageSignature {
    /// Why a key could not be read or made.
    public struct KeyError: Error, Sendable, Hashable, CustomStringConvertible {
        /// What went wrong, with the file.
        public var description: String
    }

    /// The bytes that are signed:
    /// `tailplane-package-signature-v1\n<kind>\n<name>\n<version>\n<sha256 hex>\n`.
    public static func statement(name: String, version: String, kind: String, sha256: [UInt8]) -> [UInt8] {
        let hex = sha256.map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined()
        return Array("tailplane-package-signature-v1\n\(kind)\n\(name)\n\(version)\n\(hex)\n".utf8)
    }

    /// Signs a package's statement.
    public static func sign(
        name: String,
        version: String,
        kind: String,
        sha256: [UInt8],
        key: Curve25519.Signing.PrivateKey
    ) throws -> [UInt8] {
        Array(try key.signature(for: self.statement(name: name, version: version, kind: kind, sha256: sha256)))
    }

    /// True when `signature` is the key's signature of the package's statement.
    public static func verify(
        _ signature: [UInt8],
        name: String,
        version: String,
        kind: String,
        sha256: [UInt8],
        publicKey: Curve25519.Signing.PublicKey
    ) -> Bool {
        publicKey.isValidSignature(
            signature,
            for: self.statement(name: name, version: version, kind: kind, sha256: sha256)
        )
    }

    // DER prefixes of RFC 8410: SubjectPublicKeyInfo and PKCS #8 PrivateKeyInfo for id-Ed25519 (1.3.101.112).
    private static let publicPrefix: [UInt8] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ]
    private static let privatePrefix: [UInt8] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]

    /// The public key as a PEM `PUBLIC KEY` (what `openssl pkey -pubin` reads), for agents to pin.
    public static func publicKeyPEM(_ key: Curve25519.Signing.PublicKey) -> String {
        self.pem("PUBLIC KEY", self.publicPrefix + Array(key.rawRepresentation))
    }

    /// Reads a PEM `PUBLIC KEY` holding an Ed25519 key.
    public static func publicKey(pem: String) throws(KeyError) -> Curve25519.Signing.PublicKey {
        let der = try self.der(pem, label: "PUBLIC KEY")
        guard der.count == self.publicPrefix.count + 32,
            Array(der.prefix(self.publicPrefix.count)) == self.publicPrefix,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: der.suffix(32))
        else {
            throw KeyError(description: "the PEM does not hold an Ed25519 public key")
        }
        return key
    }

    /// Loads the signing key from `file`, or makes one there (mode 0600) when the file does not exist.
    public static func loadOrCreateKey(at file: URL) throws(KeyError) -> Curve25519.Signing.PrivateKey {
        let path = file.path
        if FileManager.default.fileExists(atPath: path) {
            guard let text = try? String(contentsOf: file, encoding: .utf8) else {
                throw KeyError(description: "\(path): cannot be read")
            }
            let der: [UInt8]
            do { der = try self.der(text, label: "PRIVATE KEY") } catch {
                throw KeyError(description: "\(path): \(error.description)")
            }
            guard der.count == self.privatePrefix.count + 32,
                Array(der.prefix(self.privatePrefix.count)) == self.privatePrefix,
                let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: der.suffix(32))
            else {
                throw KeyError(description: "\(path): not an Ed25519 private key (PKCS #8 PEM)")
            }
            return key
        }
        let key = Curve25519.Signing.PrivateKey()
        let pem = self.pem("PRIVATE KEY", self.privatePrefix + Array(key.rawRepresentation))
        do {
            try FileManager.default.createDirectory(
                at: file.deletingLastPathComponent(),
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
            guard
                FileManager.default.createFile(
                    atPath: path,
                    contents: Data(pem.utf8),
                    attributes: [.posixPermissions: 0o600]
                )
            else {
                throw KeyError(description: "\(path): cannot be written")
            }
        } catch let error as KeyError {
            throw error
        } catch {
            throw KeyError(description: "\(path): \(error.localizedDescription)")
        }
        return key
    }

    private static func pem(_ label: String, _ der: [UInt8]) -> String {
        let base64 = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN \(label)-----\n\(base64)\n-----END \(label)-----\n"
    }

    private static func der(_ pem: String, label: String) throws(KeyError) -> [UInt8] {
        let lines = pem.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        guard let begin = lines.firstIndex(of: "-----BEGIN \(label)-----"),
            let end = lines.firstIndex(of: "-----END \(label)-----"), begin < end,
            let der = Data(base64Encoded: lines[(begin + 1)..<end].joined())
        else {
            throw KeyError(description: "no PEM `\(label)` block")
        }
        return Array(der)
    }
}
