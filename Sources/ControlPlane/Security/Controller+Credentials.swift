import ConfigRenderer
import Credentials
import Foundation
import Logging
import OpAMPProtocol
import OpAMPServer

extension Controller {
    /// Starts rotating the client certificates of connected agents: those named, or every agent of a tier,
    /// or every agent that accepts connection settings. One rotation runs at a time.
    public func startRotation(agents named: [String]?, tier: AgentTier?, batchSize: Int?, actor: String)
        throws(ControlPlaneError) -> CertificateRotation
    {
        guard let access = self.access, access.authority != nil else {
            throw .conflict("this policyd has no certificate authority (`policyd ca init`)")
        }
        if let current = access.rotation(), current.phase == .running {
            throw .conflict("certificate rotation \(current.id) is still running; abort it first")
        }
        let fleet = self.tieringFleet()
        var candidates = self.registry.snapshot().filter { $0.connected }
        if let tier { candidates = candidates.filter { self.tier(of: $0, fleet: fleet) == tier } }
        var uids = candidates.map(\.instanceUID.description)
        if let named {
            let known = Set(uids)
            if let unknown = named.first(where: { !known.contains($0.lowercased()) }) {
                throw .badRequest("agent \(unknown) is not connected\(tier.map { " in tier \($0.rawValue)" } ?? "")")
            }
            uids = named.map { $0.lowercased() }
        }
        guard !uids.isEmpty else { throw .badRequest("no connected agent matches") }
        let size = batchSize ?? max(1, uids.count / 10)
        guard size >= 1 else { throw .badRequest("the batch size is at least 1") }
        let rotation = CertificateRotation(
            id: access.nextRotationID(),
            agents: uids.sorted(),
            reason: "manual",
            startedBy: actor,
            batchSize: size,
            timeoutSeconds: self.options.stageTimeoutSeconds,
            now: self.clock()
        )
        do {
            try access.saveRotation(rotation)
        } catch {
            throw .store("\(error)")
        }
        self.logger.info(
            "certificate rotation started",
            metadata: ["rotation": "\(rotation.id)", "agents": "\(uids.count)", "batch": "\(size)", "by": "\(actor)"]
        )
        return rotation
    }

    /// Stops the running rotation.
    public func abortRotation(actor: String) throws(ControlPlaneError) -> CertificateRotation {
        guard let access = self.access, var rotation = access.rotation(), rotation.phase == .running else {
            throw .conflict("no certificate rotation is running")
        }
        rotation.abort(now: self.clock())
        do {
            try access.saveRotation(rotation)
        } catch {
            throw .store("\(error)")
        }
        self.logger.info("certificate rotation aborted", metadata: ["rotation": "\(rotation.id)", "by": "\(actor)"])
        return rotation
    }

    /// One step of the running rotation, and the periodic renewal check that starts one.
    func stepRotation(_ snapshot: [AgentSnapshot], fleet: Fleet, now: Date) {
        guard let access = self.access, access.authority != nil else { return }
        var rotation = access.rotation()
        // After a renewal halts, wait an hour before trying again (an operator looks meanwhile).
        let backingOff =
            rotation.map { $0.phase == .halted && now.timeIntervalSince($0.endedAt ?? now) < 3600 } ?? false
        if rotation?.phase != .running, !backingOff,
            now.timeIntervalSince(self.lastRenewalCheck) >= self.options.renewalCheckSeconds
        {
            self.lastRenewalCheck = now
            let due = snapshot.filter { agent in
                guard agent.connected, agent.capabilities.contains(.acceptsOpAMPConnectionSettings),
                    let principal = agent.principal
                else { return false }
                return access.renewalDue(principal, now: now)
            }.map(\.instanceUID.description).sorted()
            if !due.isEmpty {
                let size = self.options.rotationBatchSize > 0 ? self.options.rotationBatchSize : max(1, due.count / 10)
                rotation = CertificateRotation(
                    id: access.nextRotationID(),
                    agents: due,
                    reason: "renewal",
                    startedBy: "policyd",
                    batchSize: size,
                    timeoutSeconds: self.options.stageTimeoutSeconds,
                    now: now
                )
                self.logger.info(
                    "certificates due for renewal: rotating",
                    metadata: ["rotation": "\(rotation!.id)", "agents": "\(due.count)"]
                )
            }
        }
        guard var current = rotation, current.phase == .running else { return }
        let before = current
        var views: [String: RotationAgentView] = [:]
        var byUID: [String: AgentSnapshot] = [:]
        for agent in snapshot {
            let uid = agent.instanceUID.description
            byUID[uid] = agent
            views[uid] = RotationAgentView(
                uid: uid,
                connected: agent.connected,
                acceptsConnectionSettings: agent.capabilities.contains(.acceptsOpAMPConnectionSettings),
                certificateFingerprint: agent.principal?.certificateFingerprint,
                reportedSettingsHash: agent.connectionSettings.reportedHash,
                settingsStatus: agent.connectionSettings.status,
                settingsError: agent.connectionSettings.errorMessage
            )
        }
        // Certificates are made and recorded in the rotation first; the rotation is saved; only then do the
        // offers go out. A failed save sends nothing, so a restart never offers a certificate it forgot.
        var pending: [(InstanceUID, OpAMPConnectionOffer)] = []
        for uid in current.step(views, now: now) {
            guard let agent = byUID[uid], self.registry.advertisedConnection != nil else {
                current.offered(uid, fingerprint: nil, settingsHash: nil, at: now, problem: "no advertised endpoint")
                continue
            }
            // The tier its credential already has, else the one its description puts it in.
            let scoped = agent.principal?.scope.flatMap(AgentTier.init(rawValue:))
            let tier = scoped ?? self.tier(of: agent, fleet: fleet)
            do {
                let certificate = try access.issueCertificate(
                    for: agent.instanceUID,
                    tier: tier == .unmanaged ? nil : tier
                )
                // Non-nil: the endpoint was checked above.
                let offer = self.registry.certificateOffer(certificate)!
                current.offered(
                    uid,
                    fingerprint: Fingerprint.sha256(pem: certificate.certificatePEM),
                    settingsHash: offer.settingsHash,
                    at: now
                )
                pending.append((agent.instanceUID, offer))
            } catch {
                current.offered(
                    uid,
                    fingerprint: nil,
                    settingsHash: nil,
                    at: now,
                    problem: (error as? ControlPlaneError)?.message ?? "\(error)"
                )
            }
        }
        guard current != before else { return }
        do {
            try access.saveRotation(current)
        } catch {
            self.logger.warning("cannot save the certificate rotation; retried", metadata: ["error": "\(error)"])
            return
        }
        var failed = false
        for (uid, offer) in pending {
            if let problem = self.registry.offerConnectionSettings(offer, to: uid) {
                current.offered(uid.description, fingerprint: nil, settingsHash: nil, at: now, problem: problem)
                failed = true
            }
        }
        if failed { try? access.saveRotation(current) }
        if current.phase != .running {
            self.logger.info(
                "certificate rotation ended",
                metadata: [
                    "rotation": "\(current.id)", "phase": "\(current.phase.rawValue)",
                    "counts": "\(current.counts)", "failure": "\(current.failure ?? "")",
                ]
            )
        } else if !pending.isEmpty {
            self.logger.info(
                "certificate rotation batch offered",
                metadata: ["rotation": "\(current.id)", "agents": "\(pending.count)"]
            )
        }
    }
}
