import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// A listening port's TLS material from PEM files, reloaded without a restart when the files change.
///
/// Every handshake checks the files' modification times and sizes (two `stat` calls); when they changed and
/// the new pair loads, new connections get it at once, and connections already open keep theirs. A pair that
/// fails to load (a half-written file, a key that does not match) is reported and the last good pair stays
/// in use, so a botched rotation never takes the port down.
public final class ServerTLS: Sendable {
    /// What happened when the files were looked at again.
    public enum ReloadOutcome: Sendable, Hashable {
        /// A new certificate is in use, with its SHA-256 fingerprint.
        case reloaded(fingerprint: String)
        /// The files changed but did not load; the previous certificate stays. The reason names the file.
        case failed(reason: String)
    }

    /// Whether clients must present a certificate.
    public enum ClientCertificates: Sendable, Hashable {
        /// No client certificates are asked for.
        case none
        /// Verified against the client CA when presented; clients without one may still authenticate otherwise.
        case optional
        /// Every client must present a certificate the client CA signed.
        case required
    }

    private struct Loaded: Sendable {
        var stamp: [FileStamp]
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
        var fingerprint: String
        var lastFailure: String?
    }

    private struct FileStamp: Sendable, Hashable {
        var modified: Date?
        var size: Int?
    }

    /// The certificate chain file (leaf first).
    public let certificatePath: String
    /// The private key file.
    public let keyPath: String
    /// CA certificates that client certificates must chain to.
    public let clientCAPath: String?
    /// Whether clients must present a certificate.
    public let clientCertificates: ClientCertificates
    private let loaded: NIOLockedValueBox<Loaded>
    private let report: @Sendable (ReloadOutcome) -> Void

    /// Loads the files now; fails with a message naming the file when they do not load.
    /// - Parameter report: told about every reload and every failed reload (for the log).
    public init(
        certificatePath: String,
        keyPath: String,
        clientCAPath: String? = nil,
        clientCertificates: ClientCertificates? = nil,
        report: @escaping @Sendable (ReloadOutcome) -> Void = { _ in }
    ) throws(CredentialError) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.clientCAPath = clientCAPath
        self.clientCertificates = clientCertificates ?? (clientCAPath == nil ? .none : .optional)
        if self.clientCertificates != .none, clientCAPath == nil {
            throw CredentialError(.unreadable, "client certificates need a client CA file (--client-ca)")
        }
        if let clientCAPath {
            do {
                guard !(try NIOSSLCertificate.fromPEMFile(clientCAPath)).isEmpty else {
                    throw CredentialError(.malformed, "\(clientCAPath) holds no PEM certificate")
                }
            } catch let error as CredentialError {
                throw error
            } catch {
                throw CredentialError(.malformed, "cannot read the client CA \(clientCAPath): \(error)")
            }
        }
        self.loaded = NIOLockedValueBox(try Self.load(certificatePath: certificatePath, keyPath: keyPath))
        self.report = report
    }

    /// The CA certificates (PEM) that agents should trust for this server: the file `caPath` when given, else
    /// the certificates after the leaf in the certificate file (nil when it holds the leaf only).
    public static func issuerPEM(certificatePath: String, caPath: String?) throws(CredentialError) -> String? {
        if let caPath {
            guard let text = try? String(contentsOfFile: caPath, encoding: .utf8), text.contains("BEGIN CERTIFICATE")
            else { throw CredentialError(.malformed, "cannot read a PEM certificate from \(caPath)") }
            return text
        }
        guard let text = try? String(contentsOfFile: certificatePath, encoding: .utf8),
            let documents = try? PEMDocument.parseMultiple(pemString: text), documents.count > 1
        else { return nil }
        return documents.dropFirst().map { $0.pemString + "\n" }.joined()
    }

    /// SHA-256 of the leaf certificate in use now, hex.
    public var fingerprint: String { self.loaded.withLockedValue { $0.fingerprint } }

    /// The server TLS configuration for NIOSSL (and Hummingbird): the current pair, and a per-handshake
    /// callback that picks up changed files.
    public func configuration() -> TLSConfiguration {
        let (chain, key) = self.loaded.withLockedValue { ($0.chain, $0.key) }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = .tlsv12
        if let clientCAPath = self.clientCAPath, self.clientCertificates != .none {
            configuration.trustRoots = .file(clientCAPath)
            configuration.certificateVerification =
                self.clientCertificates == .required ? .noHostnameVerification : .optionalVerification
        }
        configuration.sslContextCallback = { [self] _, promise in
            self.reloadIfChanged()
            let (chain, key) = self.loaded.withLockedValue { ($0.chain, $0.key) }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = chain.map { .certificate($0) }
            override.privateKey = .privateKey(key)
            promise.succeed(override)
        }
        return configuration
    }

    /// Looks at the files and loads them if they changed. Returns what happened, or nil when nothing changed.
    @discardableResult
    public func reloadIfChanged() -> ReloadOutcome? {
        let stamp = Self.stamp([self.certificatePath, self.keyPath])
        let unchanged = self.loaded.withLockedValue { $0.stamp == stamp }
        guard !unchanged else { return nil }
        let outcome: ReloadOutcome
        do {
            let fresh = try Self.load(certificatePath: self.certificatePath, keyPath: self.keyPath)
            self.loaded.withLockedValue { $0 = fresh }
            outcome = .reloaded(fingerprint: fresh.fingerprint)
        } catch {
            // Remember the stamp, so a broken pair is reported once, not at every handshake.
            let first = self.loaded.withLockedValue { loaded -> Bool in
                loaded.stamp = stamp
                defer { loaded.lastFailure = error.message }
                return loaded.lastFailure != error.message
            }
            outcome = .failed(reason: error.message)
            guard first else { return outcome }
        }
        self.report(outcome)
        return outcome
    }

    private static func stamp(_ paths: [String]) -> [FileStamp] {
        paths.map { path in
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            return FileStamp(
                modified: attributes?[.modificationDate] as? Date,
                size: (attributes?[.size] as? NSNumber)?.intValue
            )
        }
    }

    private static func load(certificatePath: String, keyPath: String) throws(CredentialError) -> Loaded {
        let stamp = Self.stamp([certificatePath, keyPath])
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw CredentialError(.malformed, "cannot read the TLS certificate \(certificatePath): \(error)")
        }
        guard let leaf = chain.first else {
            throw CredentialError(.malformed, "\(certificatePath) holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        let keyText = (try? String(contentsOfFile: keyPath, encoding: .utf8)) ?? ""
        do {
            key = try NIOSSLPrivateKey(bytes: Array(keyText.utf8), format: .pem)
        } catch {
            // The key's bytes are never part of the message.
            throw CredentialError(.malformed, "cannot read the TLS private key \(keyPath) (expected PEM)")
        }
        // A pair that does not match would fail every handshake: refuse it here instead.
        if let parsedKey = try? Certificate.PrivateKey(pemEncoded: keyText),
            let parsedLeaf = try? Certificate(derEncoded: (try? leaf.toDERBytes()) ?? []),
            parsedKey.publicKey != parsedLeaf.publicKey
        {
            throw CredentialError(
                .malformed,
                "the private key \(keyPath) does not belong to the certificate \(certificatePath)"
            )
        }
        let der = (try? leaf.toDERBytes()) ?? []
        return Loaded(stamp: stamp, chain: chain, key: key, fingerprint: Fingerprint.sha256(der), lastFailure: nil)
    }
}
