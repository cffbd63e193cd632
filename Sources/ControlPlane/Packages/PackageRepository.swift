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
    /// Copies that failed, and when: not tried again for a while (a corrupted content would otherwise be read
    /// whole from the database for every agent that retries).
    private let failedCopies = NIOLockedValueBox<[String: Date]>([:])
    /// Copies started (each reads a whole package from the database).
    let copiesStarted = NIOLockedValueBox(0)
    /// The content hashes package records name, as last read (with several replicas a file is served only
    /// while a record names it: a package deleted through another replica stops downloading here too).
    private let liveHashes = NIOLockedValueBox<(hashes: Set<String>, readAt: Date)?>(nil)
    /// The public key the fleet's packages are signed with, once known (it never changes).
    private let fleetKey = NIOLockedValueBox<Curve25519.Signing.PublicKey?>(nil)
    /// Package transfers to and from the database, one at a time: each holds a pooled connection for as long
    /// as it takes, and the lease and heartbeats need the others.
    private static let transfers = DispatchQueue(label: "tailplane.package-transfers")

    /// Opens (or creates) the repository in `directory`, making the signing and download keys on first use.
    /// - Parameter signingKeyFile: the Ed25519 key packages are signed with (default
    ///   `<directory>/signing.key`); replicas that take pushes need the same one.
    public init(
        directory: URL,
        store: any ControlPlaneStore,
        maxPackageBytes: Int64 = 2 << 30,
        signingKeyFile: URL? = nil
    ) throws {
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
        do {
            self.signingKey = try PackageSignature.loadOrCreateKey(
                at: signingKeyFile ?? directory.appendingPathComponent("signing.key")
            )
        } catch {
            throw StoreError("package signing key: \(error.description)")
        }
        let keyFile = directory.appendingPathComponent("download.key")
        let localDownloadKey = FileManager.default.contents(atPath: keyFile.path).flatMap { $0.count == 32 ? $0 : nil }
        self.shared = store as? any SharedPackageStorage
        if let shared = self.shared {
            // Download tokens open files on any replica: one key for all, the first replica's. It opens
            // downloads only; the content is in the database already.
            do {
                let proposed =
                    localDownloadKey.map(Array.init) ?? SymmetricKey(size: .bits256).withUnsafeBytes(Array.init)
                guard let download = try shared.sharedKey(named: "package-download", proposing: proposed),
                    download.count == 32
                else { throw StoreError("the shared download key is missing or not 32 bytes") }
                self.downloadKey = SymmetricKey(data: download)
            } catch let error as StoreError {
                throw error
            } catch {
                throw StoreError("package download key: \(error)")
            }
        } else if let bytes = localDownloadKey {
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
        // Files this replica has whose content the database lacks (pushed before the replicas shared a
        // database, or a store that failed): stored now, so every replica can copy them.
        if let shared = self.shared, let records = try? store.packages() {
            for sha256 in Set(records.map(\.sha256))
            where FileManager.default.fileExists(atPath: self.file(sha256: sha256).path) {
                try? shared.storePackageContent(sha256: sha256, from: self.file(sha256: sha256))
            }
        }
    }

    private var incoming: URL { self.directory.appendingPathComponent("incoming") }

    /// Where the file with this SHA-256 (hex) is stored.
    public func file(sha256: String) -> URL {
        self.filesDirectory.appendingPathComponent(sha256)
    }

    /// The folder of stored files, each named by its SHA-256 in hex.
    var filesDirectory: URL { self.directory.appendingPathComponent("sha256") }

    /// The public key agents pin, PEM: with several replicas, the key the fleet's packages are signed with
    /// (recorded by the first push), whichever replica answers; otherwise this policyd's.
    public var publicKeyPEM: String {
        PackageSignature.publicKeyPEM(self.fleetPublicKey() ?? self.signingKey.publicKey)
    }

    /// SHA-256 of that key's 32 raw bytes, in hex: what an operator compares with the key the agents pin.
    public var publicKeyFingerprint: String {
        let key = self.fleetPublicKey() ?? self.signingKey.publicKey
        return SHA256.hash(data: key.rawRepresentation).map { String(format: "%02x", $0) }.joined()
    }

    /// False when the replicas' packages are signed with another key than this replica's: pushes through it
    /// are refused while it leads (it is given the same key file as the others).
    public var signsWithTheFleetKey: Bool {
        self.fleetPublicKey().map { $0.rawRepresentation == self.signingKey.publicKey.rawRepresentation } ?? true
    }

    /// The public key recorded by the first push to a shared database, if any.
    private func fleetPublicKey() -> Curve25519.Signing.PublicKey? {
        if let known = self.fleetKey.withLockedValue({ $0 }) { return known }
        guard let shared = self.shared, let raw = try? shared.sharedKey(named: Self.fleetKeyName, proposing: nil),
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
        else { return nil }
        self.fleetKey.withLockedValue { $0 = key }
        return key
    }

    private static let fleetKeyName = "package-signing-public"

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
        if let shared = self.shared {
            // The first push records the public key; every later one must sign with the same key, or agents
            // that pinned it would refuse the package.
            let own = self.signingKey.publicKey.rawRepresentation
            let fleet: [UInt8]?
            do { fleet = try shared.sharedKey(named: Self.fleetKeyName, proposing: Array(own)) } catch {
                throw .store("\(error)")
            }
            guard fleet == Array(own) else {
                throw .conflict(
                    "this replica signs packages with another key than the one the fleet's packages are signed with: give every replica that may lead the same key (copy packages/signing.key from the replica that took the first push, or start each with --package-signing-key FILE) and restart this one"
                )
            }
        }
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
        if let shared = self.shared {
            // The content first, outside the lock and on the transfer queue (seconds for a large package): a
            // record other replicas read then has content they can copy.
            do {
                try await Self.transfer { try shared.storePackageContent(sha256: record.sha256, from: temporary) }
            } catch {
                try? FileManager.default.removeItem(at: temporary)
                throw .store("\(error)")
            }
        }
        self.mutation.lock()
        defer { self.mutation.unlock() }
        return try self.commit(record, from: temporary)
    }

    /// Runs a blocking transfer on the transfer queue.
    private static func transfer<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            Self.transfers.async { continuation.resume(with: Result { try body() }) }
        }
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
            try self.store.insertPackage(record)
        } catch {
            if moved { try? FileManager.default.removeItem(at: target) }
            throw .store("\(error)")
        }
        return Ingested(record: record, created: true)
    }

    /// Makes sure the file with this SHA-256 is in this replica's data directory, copying it from the shared
    /// storage when another replica stored it (the copy is checked against the hash before it is used).
    /// Returns `false` when no package has it (with several replicas, also when its package was deleted
    /// through another replica: the local copy goes too).
    func ensureLocal(sha256: String) async throws -> Bool {
        let file = self.file(sha256: sha256)
        if self.shared != nil, !self.isLive(sha256) {
            try? FileManager.default.removeItem(at: file)
            return false
        }
        if FileManager.default.fileExists(atPath: file.path) { return true }
        guard self.shared != nil else { return false }
        try await self.copy(sha256: sha256).value
        return FileManager.default.fileExists(atPath: file.path)
    }

    /// Whether a package record names this content: read again at most every 2 s when it does, every half
    /// second when it does not (a package pushed a moment ago through another replica).
    private func isLive(_ sha256: String) -> Bool {
        let now = Date()
        let cached = self.liveHashes.withLockedValue { $0 }
        if let cached {
            let age = now.timeIntervalSince(cached.readAt)
            let known = cached.hashes.contains(sha256)
            if (known && age < 2) || (!known && age < 0.5) { return known }
        }
        // A database that does not answer keeps the last answer (or serves, when there is none).
        guard let records = try? self.store.packages() else { return cached?.hashes.contains(sha256) ?? true }
        let hashes = Set(records.map(\.sha256))
        self.liveHashes.withLockedValue { $0 = (hashes, now) }
        return hashes.contains(sha256)
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

    /// A copy failed less than this long ago: not tried again yet.
    static let copyRetrySeconds: Double = 30

    /// The copy itself, on the transfer queue.
    private func copyFromShared(sha256: String) async throws {
        guard let shared = self.shared, !FileManager.default.fileExists(atPath: self.file(sha256: sha256).path)
        else { return }
        if let failed = self.failedCopies.withLockedValue({ $0[sha256] }),
            Date().timeIntervalSince(failed) < Self.copyRetrySeconds
        {
            throw StoreError("copying package file \(sha256) failed less than \(Int(Self.copyRetrySeconds)) s ago")
        }
        let temporary = self.incoming.appendingPathComponent(UUID().uuidString)
        let target = self.file(sha256: sha256)
        let directory = self.filesDirectory
        self.copiesStarted.withLockedValue { $0 += 1 }
        do {
            try await Self.transfer {
                defer { try? FileManager.default.removeItem(at: temporary) }
                guard let digest = try shared.loadPackageContent(sha256: sha256, into: temporary) else { return }
                guard digest == sha256 else {
                    throw StoreError("the stored content of package file \(sha256) hashes to \(digest)")
                }
                if !FileManager.default.fileExists(atPath: target.path), rename(temporary.path, target.path) != 0 {
                    throw StoreError("cannot move the package into \(directory.path)")
                }
            }
        } catch {
            self.failedCopies.withLockedValue { $0[sha256] = Date() }
            throw error
        }
        self.failedCopies.withLockedValue { _ = $0.removeValue(forKey: sha256) }
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
