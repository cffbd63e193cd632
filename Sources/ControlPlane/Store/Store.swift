import Foundation

/// A version about to be stored (the store numbers it).
public struct VersionDraft: Sendable, Hashable {
    public var contentHash: String
    public var sources: [SourceText]
    public var fleet: String
    public var ir: String
    public var author: String
    public var message: String
    public var gitRevision: String?
    public var createdAt: Date
    /// The packages the version pins (`nil`: none).
    public var packages: VersionPackages?

    /// Creates a draft.
    public init(
        contentHash: String,
        sources: [SourceText],
        fleet: String,
        ir: String,
        author: String,
        message: String,
        gitRevision: String?,
        createdAt: Date,
        packages: VersionPackages? = nil
    ) {
        self.contentHash = contentHash
        self.sources = sources
        self.fleet = fleet
        self.ir = ir
        self.author = author
        self.message = message
        self.gitRevision = gitRevision
        self.createdAt = createdAt
        self.packages = packages
    }
}

extension PolicyVersion {
    /// The version a draft becomes when the store gives it a number.
    public init(number: Int, draft: VersionDraft) {
        self.init(
            number: number,
            contentHash: draft.contentHash,
            sources: draft.sources,
            fleet: draft.fleet,
            ir: draft.ir,
            author: draft.author,
            message: draft.message,
            gitRevision: draft.gitRevision,
            createdAt: draft.createdAt,
            packages: draft.packages
        )
    }
}

/// How every store writes records as JSON text: dates as seconds since 1970, so a record reads back exactly.
enum StoreJSON {
    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        return encoder
    }()

    private static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        return decoder
    }()

    /// The value as JSON text (U+0000 escaped, so it fits any text column).
    static func encode(_ value: some Encodable) throws -> String {
        String(decoding: try Self.encoder.encode(value), as: UTF8.self)
    }

    /// A value from JSON text.
    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try Self.decoder.decode(type, from: Data(text.utf8))
    }
}

/// A store problem, with what was being done.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// What failed and why.
    public var description: String
    /// A write only the leader makes, refused because this replica does not lead (or no longer does):
    /// nothing of it was stored, and it may be sent again to the leader.
    public var fenced: Bool

    /// Creates an error.
    public init(_ description: String, fenced: Bool = false) {
        self.description = description
        self.fenced = fenced
    }
}

/// Everything the control plane keeps, as intents. The rest of ControlPlane talks to the store only
/// through this protocol, so another database is another implementation. Every call is one transaction:
/// a crash leaves either all of it or none.
public protocol ControlPlaneStore: Sendable {
    /// Stores a new immutable version with the next number.
    func appendVersion(_ draft: VersionDraft) throws -> PolicyVersion
    /// One version.
    func version(_ number: Int) throws -> PolicyVersion?
    /// The newest versions first.
    func versions(limit: Int) throws -> [PolicyVersion]
    /// Records how a version's rollout ended.
    func setOutcome(of version: Int, _ outcome: VersionOutcome, reason: String?) throws
    /// Keeps rendered configs (per tier, sampler count and ring).
    func saveRendered(_ records: [RenderedRecord]) throws
    /// Rendered configs of a version.
    func rendered(version: Int) throws -> [RenderedRecord]

    /// The engine state as last saved (`nil` on a new data directory).
    func loadControlState() throws -> ControlState?
    /// Saves the engine state after a step, with the step's events, the rollout and the ring history.
    func saveControlState(_ state: ControlState, events: [EngineEvent]) throws
    /// Rollouts, newest first.
    func rollouts(limit: Int) throws -> [Rollout]
    /// One rollout.
    func rollout(_ id: Int) throws -> Rollout?
    /// A rollout's step log, oldest first.
    func events(ofRollout id: Int) throws -> [EngineEvent]

    /// Records the last known state of agents.
    func recordAgents(_ records: [AgentRecord]) throws
    /// Every agent's last known state.
    func agents() throws -> [AgentRecord]
    /// Ring changes, newest first.
    func ringHistory(limit: Int) throws -> [RingRecord]

    /// Records a write through the API.
    func appendAudit(_ entry: AuditEntry) throws
    /// The audit log, newest first.
    func audit(limit: Int) throws -> [AuditEntry]

    /// Saves security records (enrolment tokens, certificates, revocations, CSRs); a record replaces the one
    /// with the same kind and id.
    func saveSecurityRecords(_ records: [SecurityRecord]) throws
    /// Every security record.
    func securityRecords() throws -> [SecurityRecord]

    /// Adds a package record; throws ``StoreError`` when one with the same name and version exists.
    func insertPackage(_ record: PackageRecord) throws
    /// Every package record, by name then upload time.
    func packages() throws -> [PackageRecord]
    /// Removes a package record (nothing when there is none).
    func deletePackage(name: String, version: String) throws
}

/// Package contents and shared keys kept where every replica reads them (the PostgreSQL store). With it, a
/// package pushed through one replica downloads from any, every replica opens download tokens with the same
/// key, and all know the public key packages are signed with. The private signing key is not kept there:
/// whoever can read the database must not be able to sign packages agents trust. Without it (SQLite, one
/// policyd), the data directory is the only place they live.
public protocol SharedPackageStorage: Sendable {
    /// The key stored under `name`. When there is none yet and `proposed` is given, `proposed` is stored and
    /// returned (the first replica decides, every later one gets its key); `nil` proposes nothing.
    func sharedKey(named name: String, proposing proposed: [UInt8]?) throws -> [UInt8]?
    /// Stores the bytes of `file` under their SHA-256 (hex), read a chunk at a time. When that content is
    /// stored already, nothing is read (it is marked as just stored, so a sweep of leftovers spares it).
    func storePackageContent(sha256: String, from file: URL) throws
    /// Writes the content stored under `sha256` into `file`, a chunk at a time, and returns the SHA-256 (hex)
    /// of what it wrote, or `nil` when none is stored. The caller compares the hash.
    func loadPackageContent(sha256: String, into file: URL) throws -> String?
    /// Drops content that no package record names and that was stored more than `seconds` ago (left by an
    /// upload cut short between its content and its record).
    func removeUnreferencedPackageContent(olderThan seconds: Double) throws
}
