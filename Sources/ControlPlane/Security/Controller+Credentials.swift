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
        // With several replicas, agents connected to the others too (each offers its own agents' certificates).
        let here = Set(uids)
        for (uid, other) in self.connectedElsewhere(now: self.clock()) where !here.contains(uid) {
            if tier == nil || other.view.tier == tier { uids.append(uid) }
        }
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
        // With several replicas: every agent other replicas published (withdrawn ones too), and those
        // connected there now.
        let published = self.leadership == nil ? [:] : self.remoteViews(now: now)
        let elsewhere = published.filter { $0.value.view.connected }
        if rotation?.phase != .running, !backingOff,
            now.timeIntervalSince(self.lastRenewalCheck) >= self.options.renewalCheckSeconds
        {
            self.lastRenewalCheck = now
            var due = snapshot.filter { agent in
                guard agent.connected, agent.capabilities.contains(.acceptsOpAMPConnectionSettings),
                    let principal = agent.principal
                else { return false }
                return access.renewalDue(principal, now: now)
            }.map(\.instanceUID.description)
            let here = Set(snapshot.filter(\.connected).map(\.instanceUID.description))
            for (uid, other) in elsewhere where !here.contains(uid) {
                guard let credentials = other.credentials, credentials.acceptsConnectionSettings else { continue }
                if access.renewalDue(
                    notBefore: credentials.certificateNotBefore,
                    notAfter: credentials.certificateNotAfter,
                    now: now
                ) {
                    due.append(uid)
                }
            }
            due.sort()
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
            // An agent with a session here and there: the connected one counts.
            guard agent.connected || views[uid] == nil else { continue }
            byUID[uid] = agent
            views[uid] = RotationAgentView(uid: uid, connected: agent.connected, self.credentials(of: agent))
        }
        for (uid, other) in elsewhere where views[uid]?.connected != true {
            guard let credentials = other.credentials else { continue }
            byUID[uid] = nil
            views[uid] = RotationAgentView(uid: uid, connected: true, credentials)
        }
        // Offers asked of another replica: what it says it offered (its published view, withdrawn ones too),
        // or failing that the certificate record it stored before offering, which outlives the view.
        var reloaded = false
        var asked: [String] = []
        for (uid, replica) in current.awaitingOffer.sorted(by: { $0.key < $1.key }) {
            if let offer = published[uid]?.credentials?.offer, offer.rotation == current.id {
                if let problem = offer.problem {
                    current.offered(uid, fingerprint: nil, settingsHash: nil, at: now, problem: problem)
                } else {
                    current.confirmed(uid, fingerprint: offer.fingerprint, settingsHash: offer.settingsHash)
                }
                continue
            }
            let movedHere = byUID[uid]?.connected == true
            let movedOn = elsewhere[uid].map { $0.replica != replica } ?? false
            if (movedHere || movedOn) && !reloaded {
                // Before offering again: the replica may have offered just before the agent left, and its
                // record may not have been reread yet.
                try? access.reloadCertificates()
                reloaded = true
            }
            if let record = access.certificates(of: uid).first(where: {
                $0.origin == Self.rotationOrigin(current.id)
            }) {
                current.confirmed(uid, fingerprint: record.fingerprint, settingsHash: nil)
            } else if movedHere {
                // Moved here before its replica offered anything: offered here.
                asked.append(uid)
            } else if movedOn, let moved = elsewhere[uid]?.replica {
                // Moved to a third replica before any offer: asked of that one (the timeout runs on).
                current.delegated(uid, to: moved, at: current.entries[uid]?.offeredAt ?? now)
            }
        }
        // Certificates are made and recorded in the rotation first; the rotation is saved; only then do the
        // offers go out. A failed save sends nothing, so a restart never offers a certificate it forgot.
        var pending: [(InstanceUID, OpAMPConnectionOffer)] = []
        let batch = current.step(views, now: now)
        // A rotation the step halted offers nothing more.
        for uid in (current.phase == .running ? asked : []) + batch {
            if byUID[uid] == nil, let other = elsewhere[uid] {
                current.delegated(uid, to: other.replica, at: now)
                continue
            }
            guard let agent = byUID[uid], self.registry.advertisedConnection != nil else {
                current.offered(uid, fingerprint: nil, settingsHash: nil, at: now, problem: "no advertised endpoint")
                continue
            }
            do {
                let (offer, fingerprint) = try self.rotationOffer(for: agent, rotation: current.id, fleet: fleet)
                current.offered(uid, fingerprint: fingerprint, settingsHash: offer.settingsHash, at: now)
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

    /// How a certificate made for a rotation is recorded.
    static func rotationOrigin(_ rotation: Int) -> String { "rotation \(rotation)" }

    /// Agents connected to other replicas (empty with one replica), as they last published them.
    func connectedElsewhere(now: Date) -> [String: PublishedView] {
        guard self.leadership != nil else { return [:] }
        return self.remoteViews(now: now).filter { $0.value.view.connected }
    }

    /// What a rotation looks at of an agent connected here.
    func credentials(of agent: AgentSnapshot) -> PublishedCredentials {
        PublishedCredentials(
            acceptsConnectionSettings: agent.capabilities.contains(.acceptsOpAMPConnectionSettings),
            certificateFingerprint: agent.principal?.certificateFingerprint,
            certificateNotBefore: agent.principal?.certificateNotBefore,
            certificateNotAfter: agent.principal?.certificateNotAfter,
            reportedSettingsHash: agent.connectionSettings.reportedHash,
            settingsStatus: agent.connectionSettings.status,
            settingsError: agent.connectionSettings.errorMessage,
            offer: self.delegatedOffers[agent.instanceUID.description]
        )
    }

    /// What this replica publishes of an agent's credentials for the leader's rotations (nothing when it
    /// checks no credentials).
    func publishedCredentials(_ agent: AgentSnapshot) -> PublishedCredentials? {
        self.access == nil ? nil : self.credentials(of: agent)
    }

    /// A new certificate for a rotation, recorded with the rotation's origin, and the offer carrying it.
    /// The tier is the one the agent's credential already has, else the one its description puts it in.
    /// Called with an advertised endpoint (checked by the callers), so the offer can be made.
    func rotationOffer(for agent: AgentSnapshot, rotation: Int, fleet: Fleet) throws
        -> (offer: OpAMPConnectionOffer, fingerprint: String)
    {
        guard let access = self.access else {
            throw ControlPlaneError.conflict("this policyd has no certificate authority (`policyd ca init`)")
        }
        let tier = agent.principal?.scope.flatMap(AgentTier.init(rawValue:)) ?? self.tier(of: agent, fleet: fleet)
        let certificate = try access.issueCertificate(
            for: agent.instanceUID,
            tier: tier == .unmanaged ? nil : tier,
            origin: Self.rotationOrigin(rotation)
        )
        guard let offer = self.registry.certificateOffer(certificate),
            let fingerprint = Fingerprint.sha256(pem: certificate.certificatePEM)
        else { throw ControlPlaneError.conflict("no advertised endpoint to offer a certificate with") }
        return (offer, fingerprint)
    }

    /// A follower's part in the leader's rotation: makes and offers the certificates the leader asked of this
    /// replica, for agents connected here. Each certificate is recorded before it is offered, so the leader
    /// can tell it from the agent's next connection even if this replica's view of the agent is gone by then.
    func offerDelegatedCertificates(_ snapshot: [AgentSnapshot], fleet: Fleet, replica: String, now: Date) {
        guard let access = self.access, access.authority != nil, let rotation = access.rotation(),
            rotation.phase == .running
        else {
            if !self.delegatedOffers.isEmpty { self.delegatedOffers = [:] }
            return
        }
        self.delegatedOffers = self.delegatedOffers.filter { $0.value.rotation == rotation.id }
        let asked = rotation.awaitingOffer.filter { $0.value == replica && self.delegatedOffers[$0.key] == nil }
        guard !asked.isEmpty, self.registry.advertisedConnection != nil else { return }
        var connected: [String: AgentSnapshot] = [:]
        for agent in snapshot where agent.connected { connected[agent.instanceUID.description] = agent }
        var pending: [(InstanceUID, OpAMPConnectionOffer, DelegatedOffer)] = []
        // An agent that left meanwhile is asked of the replica it is connected to now, by the leader.
        for uid in asked.keys.sorted() {
            guard let agent = connected[uid] else { continue }
            do {
                let (offer, fingerprint) = try self.rotationOffer(for: agent, rotation: rotation.id, fleet: fleet)
                pending.append(
                    (
                        agent.instanceUID, offer,
                        DelegatedOffer(
                            rotation: rotation.id,
                            fingerprint: fingerprint,
                            settingsHash: offer.settingsHash
                        )
                    )
                )
            } catch {
                self.logger.warning(
                    "cannot make the certificate the rotation asked for",
                    metadata: ["rotation": "\(rotation.id)", "agent": "\(uid)", "error": "\(error)"]
                )
            }
        }
        guard !pending.isEmpty else { return }
        do {
            try access.flush()
        } catch {
            self.logger.warning("cannot record the certificates to offer; retried", metadata: ["error": "\(error)"])
            return
        }
        for (instance, offer, delegated) in pending {
            if let problem = self.registry.offerConnectionSettings(offer, to: instance) {
                // Not tried again: published, and the leader skips the agent, as it does its own.
                self.logger.warning(
                    "cannot offer the rotation's certificate",
                    metadata: ["rotation": "\(rotation.id)", "agent": "\(instance)", "problem": "\(problem)"]
                )
                var failed = delegated
                failed.problem = problem
                self.delegatedOffers[instance.description] = failed
            } else {
                self.delegatedOffers[instance.description] = delegated
            }
        }
        self.logger.info(
            "certificate rotation batch offered for the leader",
            metadata: ["rotation": "\(rotation.id)", "agents": "\(pending.count)"]
        )
    }
}

extension RotationAgentView {
    /// An agent's view from what its replica reports of its credentials.
    init(uid: String, connected: Bool, _ credentials: PublishedCredentials) {
        self.init(
            uid: uid,
            connected: connected,
            acceptsConnectionSettings: credentials.acceptsConnectionSettings,
            certificateFingerprint: credentials.certificateFingerprint,
            reportedSettingsHash: credentials.reportedSettingsHash,
            settingsStatus: credentials.settingsStatus,
            settingsError: credentials.settingsError
        )
    }
}
