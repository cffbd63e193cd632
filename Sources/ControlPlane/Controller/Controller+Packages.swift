import ConfigRenderer
import Foundation
import Logging
import OpAMPProtocol
import OpAMPServer

/// Packages: the versions pin them per tier, agents are offered their version's packages with their
/// config, and the rollout engine judges an agent done only when it runs both.
extension Controller {
    /// Compiles an apply's sources; the packages come from `fleet.yaml` for the tiers it declares and from
    /// `inheriting` (the version the fleet runs or rolls out to) for the others.
    func compile(_ sources: [SourceText], fleet: String, inheriting: Int?) throws(ControlPlaneError) -> CompiledSet {
        var packages: VersionPackages?
        if case .success(let parsed) = FleetParser.parse(fleet, path: "fleet.yaml") {
            let inherited = inheriting.flatMap { try? self.store.version($0) }?.packages
            packages = try self.resolve(parsed.packages, inherited: inherited)
        }
        switch VersionBuilder.compile(sources: sources, fleet: fleet, packages: packages) {
        case .success(let set): return set
        case .failure(let rejection): throw .rejected(rejection)
        }
    }

    /// The pins of `fleet.yaml` `packages:` checked against the repository, tiers it does not declare taken from
    /// `inherited`.
    func resolve(_ declared: PackagePins, inherited: VersionPackages?) throws(ControlPlaneError) -> VersionPackages? {
        var problems: [FleetDiagnostic] = []
        var tiers: [AgentTier: [PinnedPackage]] = [:]
        for (tier, renderTier, key) in [
            (AgentTier.loadBalancing, Tier.loadBalancing, "load_balancing"), (.sampling, .sampling, "sampling"),
        ] {
            guard let pins = declared[renderTier] else {
                tiers[tier] = inherited?[tier] ?? []
                continue
            }
            var resolved: [PinnedPackage] = []
            for (name, version) in pins.sorted(by: { $0.key < $1.key }) {
                guard let record = self.packages?.record(name: name, version: version) else {
                    problems.append(
                        FleetDiagnostic(
                            code: .invalidValue,
                            message: "packages.\(key): \(name) \(version) is not in policyd's package repository",
                            suggestion:
                                "push it first: policyctl packages push FILE --name \(name) --version \(version)"
                        )
                    )
                    continue
                }
                resolved.append(record.pin)
            }
            if resolved.filter({ $0.kind == .topLevel }).count > 1 {
                problems.append(
                    FleetDiagnostic(
                        code: .invalidValue,
                        message:
                            "packages.\(key) names more than one top-level package (\(resolved.filter { $0.kind == .topLevel }.map(\.name).joined(separator: ", "))); a collector runs one binary",
                        suggestion: "keep one top-level package per tier; the others must be add-ons"
                    )
                )
            }
            tiers[tier] = resolved
        }
        if !problems.isEmpty { throw .rejected(ApplyRejection(diagnostics: [], fleetDiagnostics: problems)) }
        let packages = VersionPackages(loadBalancing: tiers[.loadBalancing] ?? [], sampling: tiers[.sampling] ?? [])
        return packages.isEmpty ? nil : packages
    }

    /// Sets the address agents download packages from, unless the options fixed one.
    public func setPackageBaseURL(_ url: String) {
        if self.options.packageBaseURL == nil { self.packageBaseURL = url }
        self.packageOffers = [:]
    }

    /// What an agent of `tier` on `version` is offered: the version's packages for the tier (nil: none).
    func packageOffer(version: Int, tier: AgentTier) -> PackageOffer? {
        let key = "\(version)/\(tier.rawValue)"
        if let cached = self.packageOffers[key] { return cached }
        guard let repository = self.packages, let base = self.packageBaseURL,
            let pins = (try? self.compiledSet(version))?.packages?[tier], !pins.isEmpty
        else {
            // Not cached while the address is unknown: the server sets it once it listens.
            if self.packageBaseURL != nil { self.packageOffers[key] = .some(nil) }
            return nil
        }
        let offered = pins.compactMap { repository.offered($0, baseURL: base) }
        guard offered.count == pins.count else {
            self.logger.error(
                "a version's package is missing from the repository; its agents are not offered packages",
                metadata: ["version": "\(version)", "tier": "\(tier.rawValue)"]
            )
            self.packageOffers[key] = .some(nil)
            return nil
        }
        let offer = PackageOffer(offered)
        self.packageOffers[key] = offer
        return offer
    }

    /// How an agent stands with the packages offered to it.
    func packageProgress(_ snapshot: AgentSnapshot, offer: PackageOffer, now: Date) -> (
        progress: ConfigProgress, state: String, error: String?
    ) {
        let uid = snapshot.instanceUID.description
        guard snapshot.capabilities.contains(.acceptsPackages) else {
            // Never offered anything; the console and the API list it to be upgraded by hand.
            return (.applied, "upgrade by hand", nil)
        }
        let reported = snapshot.description?.attributes["service.version"]
        let collector = offer.packages.values.first { $0.kind == .topLevel }
        var installed = true
        if snapshot.capabilities.contains(.reportsPackageStatuses) {
            guard let statuses = snapshot.packageStatuses,
                statuses.serverProvidedAllPackagesHash == offer.allPackagesHash
            else {
                return (.pending, "offered", nil)
            }
            var downloading: [String] = []
            for name in offer.packages.keys.sorted() {
                let package = offer.packages[name]!
                guard let status = statuses.packages[name] else {
                    installed = false
                    continue
                }
                switch status.state {
                case .installFailed where status.serverOfferedHash.isEmpty || status.serverOfferedHash == package.hash:
                    let message =
                        "\(name) \(package.version): install failed"
                        + (status.errorMessage.isEmpty ? "" : ": \(status.errorMessage)")
                    return (.failed(message), "failed", message)
                case .installed where status.agentHasHash == package.hash: continue
                case .downloading:
                    installed = false
                    downloading.append(status.downloadPercent.map { "downloading \(Int($0))%" } ?? "downloading")
                default:
                    installed = false
                    if status.state == .installing { downloading.append("installing") }
                }
            }
            if !installed {
                self.installedAt[uid] = nil
                return (.applying, downloading.first ?? "offered", nil)
            }
        }
        // Every package installed (or, for agents without status reports, only the version tells): the
        // collector must now report the top-level package's version.
        guard let collector, reported != collector.version else {
            self.installedAt[uid] = nil
            return (.applied, "installed", nil)
        }
        guard snapshot.capabilities.contains(.reportsPackageStatuses) else {
            return (.applying, "offered", nil)
        }
        let hash = offer.allPackagesHash
        let since = self.installedAt[uid].flatMap { $0.hash == hash ? $0.at : nil } ?? now
        self.installedAt[uid] = (hash, since)
        if now.timeIntervalSince(since) >= self.options.packageVersionGraceSeconds {
            let message =
                "installed \(collector.name) \(collector.version) but reports service.version \(reported ?? "(none)")"
            return (.failed(message), "failed", message)
        }
        return (.applying, "restarting", nil)
    }

    /// Config and packages together: failed if either failed, applied when both are.
    static func combine(_ config: ConfigProgress, _ packages: ConfigProgress) -> ConfigProgress {
        if case .failed = config { return config }
        if case .failed = packages { return packages }
        if config == .applied, packages == .applied { return .applied }
        if config == .applying || packages == .applying || config == .applied { return .applying }
        return .pending
    }

    // MARK: Commands

    /// Rolls a package version out to tiers: a new version with the policies and `fleet.yaml` of the one the
    /// fleet runs (or rolls out to) and the package pinned for those tiers, then the usual staged rollout.
    public func rolloutPackage(
        name: String,
        version: String,
        tiers requested: [AgentTier],
        message: String?,
        supersede: Bool,
        dryRun: Bool,
        actor: String,
        remote: String
    ) throws(ControlPlaneError) -> ApplyResult {
        guard let record = self.packages?.record(name: name, version: version) else {
            throw .notFound("no package \(name) \(version); push it first (policyctl packages push)")
        }
        let active = self.state.rollout.flatMap { $0.phase.isTerminal ? nil : $0 }
        guard let target = active?.to ?? self.state.current, let base = try? self.store.version(target) else {
            throw .conflict("there is no version yet: apply policies first, then roll packages out")
        }
        let tiers = requested.isEmpty ? [AgentTier.sampling, .loadBalancing] : requested
        var pins = base.packages ?? VersionPackages()
        for tier in tiers {
            var list = pins[tier].filter { $0.name != name }
            // A new top-level package replaces the tier's collector, whatever its name.
            if record.kind == .topLevel { list.removeAll { $0.kind == .topLevel } }
            list.append(record.pin)
            if tier == .sampling {
                pins = VersionPackages(loadBalancing: pins.loadBalancing, sampling: list)
            } else {
                pins = VersionPackages(loadBalancing: list, sampling: pins.sampling)
            }
        }
        if pins == base.packages {
            return ApplyResult(
                result: "unchanged",
                version: target,
                rollout: active?.id,
                tiers: [],
                warnings: [],
                renderWarnings: []
            )
        }
        let request = ApplyRequest(
            sources: base.sources,
            fleet: base.fleet,
            message: message
                ?? "\(name) \(version) on the \(tiers.map { $0 == .sampling ? "sampling" : "load-balancing" }.joined(separator: " and ")) tier\(tiers.count == 1 ? "" : "s")",
            author: nil,
            gitRevision: base.gitRevision,
            dryRun: dryRun,
            supersede: supersede
        )
        return try self.apply(request, actor: actor, remote: remote, packages: pins)
    }

    /// Agents that run or are offered a package (by its content).
    func agentsUsing(_ record: PackageRecord) -> [String] {
        var uids: [String] = []
        for snapshot in self.registry.snapshot() {
            let uid = snapshot.instanceUID.description
            let offered =
                self.state.assignments[uid].flatMap { assignment -> Bool? in
                    guard let set = try? self.compiledSet(assignment.version) else { return nil }
                    return (set.packages?.loadBalancing ?? []).contains(record.pin)
                        || (set.packages?.sampling ?? []).contains(record.pin)
                } ?? false
            let hasIt =
                snapshot.packageStatuses?.packages[record.name].map {
                    $0.agentHasVersion == record.version && $0.state == .installed
                } ?? false
            if offered || hasIt { uids.append(uid) }
        }
        return uids.sorted()
    }

    /// Deletes a package; refused while any agent runs it or is offered it, or while the version the fleet
    /// runs or rolls out to pins it.
    public func deletePackage(name: String, version: String, actor: String, remote: String) throws(ControlPlaneError) {
        guard let repository = self.packages, let record = repository.record(name: name, version: version) else {
            throw .notFound("no package \(name) \(version)")
        }
        let versions = [self.state.current, self.targetVersion()].compactMap { $0 }
        for number in Set(versions) {
            guard let pins = (try? self.compiledSet(number))?.packages else { continue }
            if pins.loadBalancing.contains(record.pin) || pins.sampling.contains(record.pin) {
                throw .conflict("version \(number) pins \(name) \(version); roll another package version out first")
            }
        }
        let users = self.agentsUsing(record)
        if !users.isEmpty {
            throw .conflict(
                "\(users.count) agent\(users.count == 1 ? "" : "s") run or are offered \(name) \(version) (\(users.prefix(3).joined(separator: ", "))\(users.count > 3 ? ", …" : ""))"
            )
        }
        try repository.remove(record)
        self.packageOffers = [:]
        self.audit(actor: actor, action: "packages.delete", detail: "\(name) \(version)", remote: remote)
    }

    /// Records an upload in the audit log.
    func auditUpload(_ record: PackageRecord, created: Bool, actor: String, remote: String) {
        self.audit(
            actor: actor,
            action: "packages.push",
            detail: "\(record.name) \(record.version) sha256 \(record.sha256)\(created ? "" : " (already there)")",
            remote: remote
        )
    }
}
