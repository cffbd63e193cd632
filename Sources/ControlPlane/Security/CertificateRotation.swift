import Foundation
import OpAMPServer

/// One agent as a certificate rotation sees it.
public struct RotationAgentView: Sendable, Hashable {
    /// Instance UID.
    public var uid: String
    /// Connected now.
    public var connected: Bool
    /// It accepts OpAMP connection settings (so it can be offered a certificate).
    public var acceptsConnectionSettings: Bool
    /// SHA-256 of the client certificate its latest message came with.
    public var certificateFingerprint: String?
    /// The connection settings hash it last reported, and its status and error.
    public var reportedSettingsHash: [UInt8]?
    /// Its reported status for those settings.
    public var settingsStatus: RemoteConfigReport.State?
    /// Its error for them.
    public var settingsError: String?

    /// Creates a view.
    public init(
        uid: String,
        connected: Bool,
        acceptsConnectionSettings: Bool,
        certificateFingerprint: String? = nil,
        reportedSettingsHash: [UInt8]? = nil,
        settingsStatus: RemoteConfigReport.State? = nil,
        settingsError: String? = nil
    ) {
        self.uid = uid
        self.connected = connected
        self.acceptsConnectionSettings = acceptsConnectionSettings
        self.certificateFingerprint = certificateFingerprint
        self.reportedSettingsHash = reportedSettingsHash
        self.settingsStatus = settingsStatus
        self.settingsError = settingsError
    }
}

/// Rotating agents' client certificates a batch at a time, as a pure state machine: the controller feeds it
/// the agents it sees and the time, and offers a new certificate to each agent ``step(_:now:)`` names. A batch
/// is done when every agent in it has reconnected presenting its new certificate; an agent that reports the
/// settings FAILED, or does not come back within the timeout, halts the rotation (the agents already moved
/// keep their new certificates, and the others keep their old ones, which stay valid until they expire).
public struct CertificateRotation: Sendable, Hashable, Codable {
    /// Where a rotation stands.
    public enum Phase: String, Sendable, Hashable, Codable {
        case running, succeeded, halted, aborted
    }

    /// One agent's part.
    public struct Entry: Sendable, Hashable, Codable {
        /// `offered`, `done`, `skipped` or `failed`.
        public var state: String
        /// The fingerprint of the certificate offered.
        public var fingerprint: String?
        /// The hash of the connection settings that carried it.
        public var settingsHash: [UInt8]?
        /// When it was offered.
        public var offeredAt: Date?
        /// Why skipped or failed.
        public var detail: String?
        /// With several replicas: the replica asked to make and offer the certificate (the agent is connected
        /// there); `fingerprint` stays nil until that replica says what it offered.
        public var replica: String?
    }

    /// Increases with every rotation.
    public var id: Int
    /// `manual` (through the API) or `renewal` (certificates past their renewal time).
    public var reason: String
    /// Who started it.
    public var startedBy: String
    /// When.
    public var startedAt: Date
    /// Agents offered a certificate at once.
    public var batchSize: Int
    /// How long an agent may take to come back with its new certificate.
    public var timeoutSeconds: Double
    /// Where it stands.
    public var phase: Phase
    /// Agents not yet offered, in order.
    public var waiting: [String]
    /// Every agent offered, skipped, done or failed.
    public var entries: [String: Entry] = [:]
    /// Why it halted.
    public var failure: String?
    /// When it ended.
    public var endedAt: Date?

    /// A new rotation of `agents`.
    public init(
        id: Int,
        agents: [String],
        reason: String,
        startedBy: String,
        batchSize: Int,
        timeoutSeconds: Double,
        now: Date
    ) {
        self.id = id
        self.reason = reason
        self.startedBy = startedBy
        self.startedAt = now
        self.batchSize = max(1, batchSize)
        self.timeoutSeconds = timeoutSeconds
        self.phase = agents.isEmpty ? .succeeded : .running
        self.waiting = agents
        if agents.isEmpty { self.endedAt = now }
    }

    /// Agents offered and not yet back.
    public var inFlight: [String] { self.entries.filter { $0.value.state == "offered" }.map(\.key).sorted() }

    /// Counts by entry state.
    public var counts: [String: Int] {
        var counts: [String: Int] = ["waiting": self.waiting.count]
        for entry in self.entries.values { counts[entry.state, default: 0] += 1 }
        return counts
    }

    /// Looks at the agents; returns those to offer a new certificate to now (then call
    /// ``offered(_:fingerprint:settingsHash:at:)`` for each).
    public mutating func step(_ agents: [String: RotationAgentView], now: Date) -> [String] {
        guard self.phase == .running else { return [] }
        for uid in self.inFlight {
            guard var entry = self.entries[uid] else { continue }
            let view = agents[uid]
            if entry.replica != nil, entry.fingerprint == nil {
                // Asked of another replica, which has not said what it offered yet: only the timeout applies.
                if now.timeIntervalSince(entry.offeredAt ?? now) > self.timeoutSeconds {
                    entry.state = "failed"
                    entry.detail =
                        "replica \(entry.replica ?? "") did not offer a certificate within \(Int(self.timeoutSeconds))s"
                }
            } else if let view, view.connected, view.certificateFingerprint == entry.fingerprint {
                entry.state = "done"
            } else if let view, view.settingsStatus == .failed, view.reportedSettingsHash == entry.settingsHash {
                entry.state = "failed"
                entry.detail = view.settingsError ?? "the agent reported the connection settings FAILED"
            } else if now.timeIntervalSince(entry.offeredAt ?? now) > self.timeoutSeconds {
                entry.state = "failed"
                entry.detail = "not back with its new certificate after \(Int(self.timeoutSeconds))s"
            }
            self.entries[uid] = entry
            if entry.state == "failed" {
                self.phase = .halted
                self.failure = "agent \(uid): \(entry.detail ?? "failed")"
                self.endedAt = now
                return []
            }
        }
        guard self.inFlight.isEmpty else { return [] }
        var batch: [String] = []
        while batch.count < self.batchSize, !self.waiting.isEmpty {
            let uid = self.waiting.removeFirst()
            guard let view = agents[uid], view.connected else {
                self.entries[uid] = Entry(state: "skipped", detail: "offline")
                continue
            }
            guard view.acceptsConnectionSettings else {
                self.entries[uid] = Entry(
                    state: "skipped",
                    detail: "does not accept OpAMP connection settings (renews by CSR, or by hand)"
                )
                continue
            }
            batch.append(uid)
        }
        if batch.isEmpty, self.waiting.isEmpty {
            self.phase = .succeeded
            self.endedAt = now
        }
        return batch
    }

    /// Records that `uid` was offered a certificate (or that the offer failed, with `problem`).
    public mutating func offered(
        _ uid: String,
        fingerprint: String?,
        settingsHash: [UInt8]?,
        at now: Date,
        problem: String? = nil
    ) {
        if let problem {
            self.entries[uid] = Entry(state: "skipped", detail: problem)
        } else {
            self.entries[uid] = Entry(
                state: "offered",
                fingerprint: fingerprint,
                settingsHash: settingsHash,
                offeredAt: now
            )
        }
    }

    /// Records that `uid`, connected to another replica, is to be offered a certificate by that replica.
    public mutating func delegated(_ uid: String, to replica: String, at now: Date) {
        self.entries[uid] = Entry(state: "offered", offeredAt: now, replica: replica)
    }

    /// Records what the replica asked to offer `uid` a certificate offered (the timeout still counts from
    /// when it was asked).
    public mutating func confirmed(_ uid: String, fingerprint: String, settingsHash: [UInt8]?) {
        guard var entry = self.entries[uid], entry.state == "offered", entry.fingerprint == nil else { return }
        entry.fingerprint = fingerprint
        entry.settingsHash = settingsHash
        self.entries[uid] = entry
    }

    /// Agents asked of another replica that has not said what it offered yet, with that replica.
    public var awaitingOffer: [String: String] {
        var awaiting: [String: String] = [:]
        for (uid, entry) in self.entries where entry.state == "offered" && entry.fingerprint == nil {
            if let replica = entry.replica { awaiting[uid] = replica }
        }
        return awaiting
    }

    /// Stops offering; agents already offered keep what they got.
    public mutating func abort(now: Date) {
        guard self.phase == .running else { return }
        self.phase = .aborted
        self.endedAt = now
    }
}
