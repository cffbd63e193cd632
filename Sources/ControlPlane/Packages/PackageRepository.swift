import Credentials
import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import OpAMPServer

/// policyd's package repository: files stored by content (`packages/sha256/<hex>` in the data directory),
/// records in the store, each signed with policyd's Ed25519 key (`packages/signing.key`). Uploads are
/// streamed to disk and hashed on the way, so memory does not grow with the package.
public final class PackageRepository: Sendable {
    /// The repository's directory (`<data dir>/packages`).
    public let directory: URL
    let store: any ControlPlaneStore
    let signingKey: Curve25519.Signing.PrivateKey
    /// Keys the download tokens agents get with an offer (`packages/download.key`; kept across restarts, so
    /// an offer made before a restart still downloads after it).
    let downloadKey: SymmetricKey
    /// The largest package accepted.
    public let maxPackageBytes: Int64
    /// Held while a file and its record change together (an upload's last step, a delete), so a file is never
    /// removed under a record that a concurrent upload of the same bytes is adding.
    private let mutation = NIOLock()
    /// Where contents and keys are shared with other replicas (the PostgreSQL store), if anywhere.
    let shared: (any SharedPackageStorage)?
    /// Copies from the shared storage in progress, by SHA-256: a thousand agents asking a replica for a file
    /// it does not have yet start one copy, and all wait for it.
    private let copies = NIOLockedValueBox<[String: Task<Void, any Error>]>([:])
    /// True when this data directory had a signing key of its own that is not the one the replicas share (it
    /// was made before the replica joined; agents that pinned it must pin the shared one).
    public let localSigningKeySet: Bool

    /// Opens (or creates) the repository in `directory`, making the signing and download keys on first use.
    public init(directory: URL, store: any ControlPlaneStore, maxPackageBytes: Int64 = 2 << 30) throws {
        self.directory = directory
        self.store = store
        self.maxPackageBytes = maxPackageBytes
        do {
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent("sha256"),
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent("incoming"),
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
        } catch {
            throw StoreError("cannot create the package repository in \(directory.path): \(error.localizedDescription)")
        }
        let signingFile = directory.appendingPathComponent("signing.key")
        let keyFile = directory.appendingPathComponent("download.key")
        let localDownloadKey = FileManager.default.contents(atPath: keyFile.path).flatMap { $0.count == 32 ? $0 : nil }
        self.shared = store as? any SharedPackageStorage
        if let shared = self.shared {
            // Replicas share both keys through the database: the first replica's (its own files when it had
            // them, so a single policyd that grows replicas keeps the key its agents pinned) stays.
            do {
                let local =
                    FileManager.default.fileExists(atPath: signingFile.path)
                    ? try PackageSignature.loadOrCreateKey(at: signingFile) : nil
                let proposed = local ?? Curve25519.Signing.PrivateKey()
                let raw = try shared.sharedKey(named: "package-signing", proposing: Array(proposed.rawRepresentation))
                self.signingKey = try Curve25519.Signing.PrivateKey(rawRepresentation: raw)
                self.localSigningKeySet = local.map { $0.rawRepresentation != Data(raw) } ?? false
                let download = try shared.sharedKey(
                    named: "package-download",
                    proposing: localDownloadKey.map(Array.init)
                        ?? SymmetricKey(size: .bits256).withUnsafeBytes(Array.init)
                )
                guard download.count == 32 else { throw StoreError("the shared download key is not 32 bytes") }
                self.downloadKey = SymmetricKey(data: download)
            } catch let error as PackageSignature.KeyError {
                throw StoreError("package signing key: \(error.description)")
            } catch let error as StoreError {
                throw error
            } catch {
                throw StoreError("package keys: \(error)")
            }
        } else {
            self.localSigningKeySet = false
            do {
                self.signingKey = try PackageSignature.loadOrCreateKey(at: signingFile)
            } catch {
                throw StoreError("package signing key: \(error.description)")
            }
            if let bytes = localDownloadKey {
                self.downloadKey = SymmetricKey(data: bytes)
            } else {
                let key = SymmetricKey(size: .bits256)
                let bytes = key.withUnsafeBytes { Data($0) }
                guard
                    FileManager.default.createFile(
                        atPath: keyFile.path,
                        contents: bytes,
                        attributes: [.posixPermissions: 0o600]
                    )
                else {
                    throw StoreError("cannot write \(keyFile.path)")
                }
                self.downloadKey = key
            }
        }
        // Uploads cut short by a crash leave partial files here; none of them is a package.
        for leftover in (try? FileManager.default.contentsOfDirectory(atPath: self.incoming.path)) ?? [] {
            try? FileManager.default.removeItem(at: self.incoming.appendingPathComponent(leftover))
        }
        // A crash between moving a file in and recording it leaves a file no record names.
        // Only when the records could be read: a store that fails to answer must not cost every package file.
        if let records = try? store.packages() {
            let recorded = Set(records.map(\.sha256))
            let files = directory.appendingPathComponent("sha256")
            for name in (try? FileManager.default.contentsOfDirectory(atPath: files.path)) ?? []
            where !recorded.contains(name) {
                try? FileManager.default.removeItem(at: files.appendingPathComponent(name))
            }
        }
        // The same for shared content, but only after an hour: another replica's upload may be between its
        // content and its record right now.
        try? self.shared?.removeUnreferencedPackageContent(olderThan: 3600)
    }

    private var incoming: URL { self.directory.appendingPathComponent("incoming") }

    /// Where the file with this SHA-256 (hex) is stored.
    public func file(sha256: String) -> URL {
        self.filesDirectory.appendingPathComponent(sha256)
    }

    /// The folder of stored files, each named by its SHA-256 in hex.
    var filesDirectory: URL { self.directory.appendingPathComponent("sha256") }

    /// The public key agents pin, PEM.
    public var publicKeyPEM: String { PackageSignature.publicKeyPEM(self.signingKey.publicKey) }

    /// What an upload did.
    public struct Ingested: Sendable {
        /// The record.
        public var record: PackageRecord
        /// `false` when the same name, version and content were already there.
        public var created: Bool
    }

    /// Stores an uploaded package: streams `body` to disk while hashing it, signs the package statement and
    /// records it. The same name, version and content again is not an error (nothing changes); the same
    /// name and version with other content is refused: a published version never changes.
    public func ingest<Body: AsyncSequence>(
        name: String,
        version: String,
        kind: PackageKind,
        uploader: String,
        now: Date,
        body: Body
    ) async throws(ControlPlaneError) -> Ingested where Body.Element == ByteBuffer {
        if let problem = Self.nameProblem(name) ?? Self.versionProblem(version) { throw .badRequest(problem) }
        // Before the body streams in, so a wrong kind is refused without reading gigabytes.
        if let conflict = Self.kindConflict(name: name, kind: kind, (try? self.store.packages()) ?? []) {
            throw conflict
        }
        let temporary = self.incoming.appendingPathComponent(UUID().uuidString)
        guard
            FileManager.default.createFile(
                atPath: temporary.path,
                contents: nil,
                attributes: [.posixPermissions: 0o600]
            ),
            let handle = try? FileHandle(forWritingTo: temporary)
        else {
            throw .store("cannot write to \(self.incoming.path)")
        }
        var hasher = SHA256()
        var size: Int64 = 0
        do {
            defer { try? handle.close() }
            for try await buffer in body {
                size += Int64(buffer.readableBytes)
                if size > self.maxPackageBytes {
                    throw ControlPlaneError.tooLarge(
                        "the package is over \(self.maxPackageBytes) bytes (policyd serve --max-package-size)"
                    )
                }
                buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                try handle.write(contentsOf: Data(buffer.readableBytesView))
            }
            try handle.synchronize()
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            if let error = error as? ControlPlaneError { throw error }
            throw .badRequest("the upload did not finish: \(error)")
        }
        guard size > 0 else {
            try? FileManager.default.removeItem(at: temporary)
            throw .badRequest("the package is empty")
        }
        let digest = Array(hasher.finalize())
        let signature: [UInt8]
        do {
            signature = try PackageSignature.sign(
                name: name,
                version: version,
                kind: kind.rawValue,
                sha256: digest,
                key: self.signingKey
            )
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw .store("cannot sign the package: \(error)")
        }
        let record = PackageRecord(
            name: name,
            version: version,
            kind: kind,
            size: size,
            sha256: digest.hexString,
            signature: Data(signature).base64EncodedString(),
            uploader: uploader,
            uploadedAt: now
        )
        self.mutation.lock()
        defer { self.mutation.unlock() }
        return try self.commit(record, from: temporary)
    }

    /// The last step of an upload: the file moves in (or is dropped, when the same bytes are stored already) and
    /// the record is added. Under ``mutation``.
    private func commit(_ record: PackageRecord, from temporary: URL) throws(ControlPlaneError) -> Ingested {
        defer { try? FileManager.default.removeItem(at: temporary) }
        let records: [PackageRecord]
        do { records = try self.store.packages() } catch { throw .store("\(error)") }
        // Again under the lock: two pushes of one name with different kinds may have raced past the first check.
        if let conflict = Self.kindConflict(name: record.name, kind: record.kind, records) { throw conflict }
        if let existing = records.first(where: { $0.name == record.name && $0.version == record.version }) {
            guard existing.sha256 == record.sha256 else {
                throw .conflict(
                    "\(record.name) \(record.version) is already published with other content (sha256 \(existing.sha256)); a published version never changes: push it as a new version"
                )
            }
            return Ingested(record: existing, created: false)
        }
        let target = self.file(sha256: record.sha256)
        var moved = false
        if !FileManager.default.fileExists(atPath: target.path) {
            guard rename(temporary.path, target.path) == 0 else {
                throw .store("cannot move the package into \(self.filesDirectory.path)")
            }
            moved = true
        }
        do {
            // The content first: a record other replicas can read always has content they can copy.
            try self.shared?.storePackageContent(sha256: record.sha256, from: target)
            try self.store.insertPackage(record)
        } catch {
            if moved { try? FileManager.default.removeItem(at: target) }
            throw .store("\(error)")
        }
        return Ingested(record: record, created: true)
    }

    /// Makes sure the file with this SHA-256 is in this replica's data directory, copying it from the shared
    /// storage when another replica stored it (the copy is checked against the hash before it is used).
    /// Returns `false` when no replica has it.
    func ensureLocal(sha256: String) async throws -> Bool {
        if FileManager.default.fileExists(atPath: self.file(sha256: sha256).path) { return true }
        guard self.shared != nil else { return false }
        try await self.copy(sha256: sha256).value
        return FileManager.default.fileExists(atPath: self.file(sha256: sha256).path)
    }

    /// Starts copying a file this replica does not have yet (once per file, whoever asks), so it is here
    /// before agents ask for it.
    @discardableResult
    func copy(sha256: String) -> Task<Void, any Error> {
        self.copies.withLockedValue { copies in
            if let running = copies[sha256] { return running }
            let task = Task<Void, any Error> {
                defer { _ = self.copies.withLockedValue { $0.removeValue(forKey: sha256) } }
                try await self.copyFromShared(sha256: sha256)
            }
            copies[sha256] = task
            return task
        }
    }

    /// The copy itself, on a thread of its own: the store blocks, and a large package takes seconds.
    private func copyFromShared(sha256: String) async throws {
        guard let shared = self.shared, !FileManager.default.fileExists(atPath: self.file(sha256: sha256).path)
        else { return }
        let temporary = self.incoming.appendingPathComponent(UUID().uuidString)
        let target = self.file(sha256: sha256)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                do {
                    defer { try? FileManager.default.removeItem(at: temporary) }
                    guard try shared.loadPackageContent(sha256: sha256, into: temporary) else {
                        continuation.resume()
                        return
                    }
                    let digest = try Self.sha256(of: temporary)
                    guard digest == sha256 else {
                        throw StoreError("the stored content of package file \(sha256) hashes to \(digest)")
                    }
                    if !FileManager.default.fileExists(atPath: target.path), rename(temporary.path, target.path) != 0 {
                        throw StoreError("cannot move the package into \(self.filesDirectory.path)")
                    }
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// The SHA-256 (hex) of a file, read a chunk at a time.
    static func sha256(of file: URL) throws -> String {
        guard let handle = try? FileHandle(forReadingFrom: file) else {
            throw StoreError("cannot read \(file.path)")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
            hasher.update(data: data)
        }
        return Array(hasher.finalize()).hexString
    }

    /// A name is one thing, a collector build or an add-on (a rollout of one replaces the other): the refusal
    /// when `records` publish `name` as the other kind.
    private static func kindConflict(name: String, kind: PackageKind, _ records: [PackageRecord]) -> ControlPlaneError?
    {
        guard let other = records.first(where: { $0.name == name && $0.kind != kind }) else { return nil }
        return .conflict(
            "\(name) is published as a \(other.kind.rawValue) package (\(other.version)); use another name for a \(kind.rawValue) package"
        )
    }

    /// Every package.
    public func records() throws(ControlPlaneError) -> [PackageRecord] {
        do { return try self.store.packages() } catch { throw .store("\(error)") }
    }

    /// One package.
    public func record(name: String, version: String) -> PackageRecord? {
        (try? self.store.packages())?.first { $0.name == name && $0.version == version }
    }

    /// Removes a package's record, and its file when no other record has the same content. The caller
    /// checks that nothing uses it.
    func remove(_ record: PackageRecord) throws(ControlPlaneError) {
        self.mutation.lock()
        defer { self.mutation.unlock() }
        do {
            try self.store.deletePackage(name: record.name, version: record.version)
            let others = try self.store.packages().contains { $0.sha256 == record.sha256 }
            if !others { try? FileManager.default.removeItem(at: self.file(sha256: record.sha256)) }
        } catch {
            throw .store("\(error)")
        }
    }

    /// The token an agent sends to download the file with this SHA-256 (`Authorization: Bearer …`): an HMAC
    /// of the hash, so it opens that file only.
    public func downloadToken(sha256: String) -> String {
        Array(HMAC<SHA256>.authenticationCode(for: Array("download \(sha256)".utf8), using: self.downloadKey))
            .hexString
    }

    /// True when `token` opens the file with this SHA-256.
    func acceptsDownloadToken(_ token: String, sha256: String) -> Bool {
        let expected = Array(self.downloadToken(sha256: sha256).utf8)
        let given = Array(token.utf8)
        guard expected.count == given.count else { return false }
        return zip(expected, given).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// The offer of a pinned package, downloaded from `baseURL` (policyd's API address as agents reach it).
    func offered(_ pin: PinnedPackage, baseURL: String) -> OfferedPackage? {
        guard let record = self.record(name: pin.name, version: pin.version), record.sha256 == pin.sha256,
            let signature = Data(base64Encoded: record.signature)
        else { return nil }
        // Another replica stored it: have it here before the agent asks.
        if self.shared != nil, !FileManager.default.fileExists(atPath: self.file(sha256: pin.sha256).path) {
            self.copy(sha256: pin.sha256)
        }
        let base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        return OfferedPackage(
            name: pin.name,
            kind: pin.kind,
            version: pin.version,
            // The token also rides in the URL, for agents that do not send `DownloadableFile.headers` (a field
            // the specification still calls in development).
            downloadURL: "\(base)/v1/package-files/\(pin.sha256)?token=\(self.downloadToken(sha256: pin.sha256))",
            contentHash: Array(hexBytes: pin.sha256),
            signature: Array(signature),
            headers: ["Authorization": "Bearer \(self.downloadToken(sha256: pin.sha256))"]
        )
    }

    /// Why a package name is refused, if it is.
    public static func nameProblem(_ name: String) -> String? {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if name.isEmpty || name.count > 100 || !name.allSatisfy(allowed.contains) || name.hasPrefix(".") {
            return "`\(name)` is not a package name: use letters, digits, `.`, `_` and `-` (as in `otelcol-contrib`)"
        }
        return nil
    }

    /// Why a version string is refused, if it is.
    public static func versionProblem(_ version: String) -> String? {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")
        if version.isEmpty || version.count > 100 || !version.allSatisfy(allowed.contains) {
            return "`\(version)` is not a package version: write it as published, for example `0.150.0`"
        }
        return nil
    }
}
