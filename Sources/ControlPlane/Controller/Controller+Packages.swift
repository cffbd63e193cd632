import ConfigRenderer
import Foundation
import Logging
import OpAMPProtocol
import OpAMPServer

/// Packages: the versions pin them per tier, agents are offered their version's packages with their
/// config, and the rollout engine judges an agent done only when it runs both.
extension Controller {
    /// The packages a new version pins: `override` (a package rollout), or `fleet.yaml`'s for the tiers it
    /// declares and `base`'s (the version the fleet runs or rolls out to) for the others. A tier whose
    /// collector moves up renders for the older of the two while agents move over; the change must leave the
    /// fleet a collector to go back to, and no agent that cannot take packages behind.
    func packages(fleet: String, override: VersionPackages?, base: VersionPackages?) throws(ControlPlaneError)
        -> VersionPackages?
    {
        var pins = override
        if pins == nil, case .success(let parsed) = FleetParser.parse(fleet, path: "fleet.yaml") {
            pins = try self.resolve(parsed.packages, inherited: base)
        }
        guard var pins, !pins.isEmpty else { return nil }
        // With no rollout in progress every agent runs the base's collector. In the middle of one (superseded,
        // say, halfway through a move) agents may run the collector of the version the fleet ran before it, or
        // of the one it moves to, or what either rendered for: the oldest of them all.
        let moving = self.state.rollout.map { !$0.phase.isTerminal } ?? false
        let current = moving ? try self.storedVersion(self.state.current)?.packages : nil
        var renderedFor: [String: String] = [:]
        for tier in [AgentTier.loadBalancing, .sampling] {
            guard let new = pins.collector(tier), let to = VersionPackages.collectorVersion(new.version) else {
                continue
            }
            let candidates = [base, current].compactMap { pins in
                pins.flatMap {
                    moving
                        ? ($0.renderedFor?[tier.rawValue] ?? $0.collector(tier)?.version) : $0.collector(tier)?.version
                }
            }
            let oldest = candidates.compactMap { text in VersionPackages.collectorVersion(text).map { (text, $0) } }
                .min { $0.1 < $1.1 }
            if let (text, version) = oldest, version < to { renderedFor[tier.rawValue] = text }
        }
        pins.renderedFor = renderedFor.isEmpty ? nil : renderedFor
        try self.checkCollectorChange(from: base, to: pins)
        return pins
    }

    /// Refuses a collector change that could not be undone or would leave agents behind.
    func checkCollectorChange(from base: VersionPackages?, to pins: VersionPackages) throws(ControlPlaneError) {
        var problems: [FleetDiagnostic] = []
        let fleet = self.tieringFleet()
        let snapshot = self.registry.snapshot().filter { $0.connected }
        func version(_ agent: AgentSnapshot) -> String {
            agent.description?.attributes["service.version"] ?? "unknown"
        }
        func counted(_ agents: [AgentSnapshot]) -> String {
            Dictionary(grouping: agents, by: version).map { "\($0.key) ×\($0.value.count)" }.sorted()
                .joined(separator: ", ")
        }
        for tier in [AgentTier.loadBalancing, .sampling] {
            guard let new = pins.collector(tier), base?.collector(tier) != new else { continue }
            let name = tier == .sampling ? "sampling" : "load-balancing"
            // Agents that do not say which collector they run (no `service.version`) cannot be judged either way.
            let agents = snapshot.filter {
                self.tier(of: $0, fleet: fleet) == tier && $0.description?.attributes["service.version"] != nil
            }
            if base?.collector(tier) == nil {
                // Nothing pinned yet: a failed upgrade would have no collector to go back to. The first pin must
                // be the collector the tier runs.
                let others = agents.filter { version($0) != new.version }
                if !others.isEmpty {
                    problems.append(
                        FleetDiagnostic(
                            code: .invalidValue,
                            message:
                                "the \(name) tier has no collector pinned yet and \(others.count) of its agents run another version (\(counted(others))): a failed upgrade would have nothing to go back to",
                            suggestion:
                                "first pin the collector they run (push its build and roll it out: it installs the same version), then upgrade"
                        )
                    )
                    continue
                }
            }
            let byHand = agents.filter { !$0.capabilities.contains(.acceptsPackages) && version($0) != new.version }
            if !byHand.isEmpty {
                problems.append(
                    FleetDiagnostic(
                        code: .invalidValue,
                        message:
                            "\(byHand.count) agents of the \(name) tier cannot take packages (no AcceptsPackages; the opampsupervisor does not offer it yet) and run \(counted(byHand)), not \(new.name) \(new.version)",
                        suggestion:
                            "upgrade them by hand to \(new.version) first, or leave the tier's collector as it is"
                    )
                )
            }
        }
        if !problems.isEmpty { throw .rejected(ApplyRejection(diagnostics: [], fleetDiagnostics: problems)) }
    }

    /// Refuses moving a tier's collector across a release that changed behaviour the policies or the fleet rely
    /// on (``BehaviourChange``), unless the request accepts each such change by its id.
    func checkBehaviourChanges(
        from base: VersionPackages?,
        to pins: VersionPackages?,
        set: CompiledSet,
        accepted: [String]
    ) throws(ControlPlaneError) {
        var problems: [FleetDiagnostic] = []
        for (tier, renderTier) in [(AgentTier.loadBalancing, Tier.loadBalancing), (.sampling, .sampling)] {
            // Only a change of the tier's pin: the same pins applied again were checked (and accepted) when
            // the version that set them was made.
            guard let pinned = pins?.collector(tier), pinned != base?.collector(tier),
                let new = VersionPackages.collectorVersion(pinned.version)
            else { continue }
            // From the oldest collector its agents may run: in the middle of a move, what the configs are
            // rendered for.
            let from = pins?.renderedFor?[tier.rawValue] ?? base?.collector(tier)?.version
            guard let old = from.flatMap(VersionPackages.collectorVersion), old != new else { continue }
            for change in BehaviourChange.crossed(
                tier: renderTier,
                from: old,
                to: new,
                policies: set.policySet,
                fleet: set.fleet
            ) where !accepted.contains(change.id) {
                let name = tier == .sampling ? "sampling" : "load-balancing"
                problems.append(
                    FleetDiagnostic(
                        code: .invalidValue,
                        message:
                            "the \(name) tier's collector moves from \(old) to \(new) across \(change.since), which changed behaviour the fleet relies on (\(change.evidence)): before, \(change.before); from \(change.since), \(change.after). Relies on it: \(change.affected.joined(separator: "; "))",
                        suggestion:
                            "\(change.suggestion); to go ahead, accept it: --accept-change \(change.id)"
                    )
                )
            }
        }
        if !problems.isEmpty { throw .rejected(ApplyRejection(diagnostics: [], fleetDiagnostics: problems)) }
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
            for pin in resolved where pin.kind == .topLevel && VersionPackages.collectorVersion(pin.version) == nil {
                problems.append(
                    FleetDiagnostic(
                        code: .invalidValue,
                        message:
                            "packages.\(key): the top-level package \(pin.name) \(pin.version) has no MAJOR.MINOR version to render configs for",
                        suggestion: "publish collector builds with their otelcol version (0.152.0, 0.152.0-acme)"
                    )
                )
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

    /// What an agent of `tier` on `version` should have.
    enum PackageWant {
        /// The version pins no package for the tier.
        case none
        /// The offer.
        case offer(PackageOffer)
        /// It pins packages that cannot be offered now (the download address is not known yet, or a file is
        /// missing): the agent is not done until they can.
        case unavailable(String)
    }

    /// What an agent of `tier` on `version` should have: the version's packages for the tier.
    func packageWant(version: Int, tier: AgentTier) -> PackageWant {
        let key = "\(version)/\(tier.rawValue)"
        if let cached = self.packageOffers[key] { return cached }
        guard let pins = (try? self.compiledSet(version))?.packages?[tier], !pins.isEmpty,
            let repository = self.packages
        else {
            self.packageOffers[key] = PackageWant.none
            return .none
        }
        // Not cached while the address is unknown: the server sets it once it listens.
        guard let base = self.packageBaseURL else {
            return .unavailable("waiting for the package download address (--package-base-url)")
        }
        let offered = pins.compactMap { repository.offered($0, baseURL: base) }
        guard offered.count == pins.count else {
            let missing = pins.filter { pin in !offered.contains { $0.name == pin.name } }
            let names = missing.map { "\($0.name) \($0.version)" }.joined(separator: ", ")
            self.logger.error(
                "a version's package is missing from the repository; its agents cannot be offered packages",
                metadata: ["version": "\(version)", "tier": "\(tier.rawValue)", "missing": "\(names)"]
            )
            let want = PackageWant.unavailable("\(names) missing from the package repository")
            self.packageOffers[key] = want
            return want
        }
        let want = PackageWant.offer(PackageOffer(offered))
        self.packageOffers[key] = want
        return want
    }

    /// How an agent stands with the packages offered to it.
    func packageProgress(_ snapshot: AgentSnapshot, offer: PackageOffer, now: Date) -> (
        progress: ConfigProgress, state: String, error: String?
    ) {
        let uid = snapshot.instanceUID.description
        let reported = snapshot.description?.attributes["service.version"]
        let collector = offer.packages.values.first { $0.kind == .topLevel }
        guard snapshot.capabilities.contains(.acceptsPackages) else {
            // Never offered anything; listed to be upgraded by hand, and done once it runs the collector.
            return (self.byHand(snapshot, collector: collector?.version), "upgrade by hand", nil)
        }
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
                case .installed where status.serverOfferedHash == package.hash:
                    // It says it installed the offer, but has something else.
                    let message =
                        "\(name) \(package.version): installed a package whose hash is not the offered one (\(status.agentHasVersion))"
                    return (.failed(message), "failed", message)
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

    /// An agent that cannot take packages: done once it reports the pinned collector (upgraded by hand). While
    /// a rollout rolls back, either collector of the move will do: it was never offered one.
    func byHand(_ snapshot: AgentSnapshot, collector: String?) -> ConfigProgress {
        let reported = snapshot.description?.attributes["service.version"]
        if let collector, reported != collector, self.state.rollout?.rollingBack != true { return .pending }
        return .applied
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
        tiers requested: [AgentTier] = [],
        message: String? = nil,
        supersede: Bool = false,
        dryRun: Bool = false,
        acceptChanges: [String] = [],
        actor: String,
        remote: String
    ) throws(ControlPlaneError) -> ApplyResult {
        try self.requireLeading()
        guard let record = self.packages?.record(name: name, version: version) else {
            throw .notFound("no package \(name) \(version); push it first (policyctl packages push)")
        }
        let active = self.state.rollout.flatMap { $0.phase.isTerminal ? nil : $0 }
        // While a rollout rolls back, the fleet is going back to its `from`: that is what a new one builds on.
        guard let target = (active?.rollingBack == true ? active?.from : active?.to) ?? self.state.current,
            let base = try self.storedVersion(target)
        else {
            throw .conflict("there is no version yet: apply policies first, then roll packages out")
        }
        let tiers = requested.isEmpty ? [AgentTier.sampling, .loadBalancing] : requested
        // A tier whose packages fleet.yaml declares is changed there: the next apply from Git would undo this.
        if case .success(let fleet) = FleetParser.parse(base.fleet, path: "fleet.yaml") {
            let declared = tiers.filter { fleet.packages[$0 == .sampling ? .sampling : .loadBalancing] != nil }
            if !declared.isEmpty {
                let names = declared.map { $0 == .sampling ? "sampling" : "load_balancing" }.joined(separator: ", ")
                throw .conflict(
                    "fleet.yaml declares the packages of \(names) (packages.\(names)): change them there and apply, or the next apply would undo this rollout"
                )
            }
        }
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
        if pins.loadBalancing == base.packages?.loadBalancing ?? [], pins.sampling == base.packages?.sampling ?? [] {
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
            supersede: supersede,
            acceptChanges: acceptChanges
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
            // Has it, whatever it is doing now (an agent downloading another version still runs this one).
            let hasIt =
                snapshot.packageStatuses?.packages[record.name].map { $0.agentHasVersion == record.version } ?? false
            // Agents that report no package statuses tell only by the collector version they run.
            let runsIt =
                record.kind == .topLevel && !snapshot.capabilities.contains(.reportsPackageStatuses)
                && snapshot.description?.attributes["service.version"] == record.version
                && snapshot.capabilities.contains(.acceptsPackages)
            if offered || hasIt || runsIt { uids.append(uid) }
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
        // A package that was missing may be back: offers are worked out again.
        if created { self.packageOffers = [:] }
        self.audit(
            actor: actor,
            action: "packages.push",
            detail: "\(record.name) \(record.version) sha256 \(record.sha256)\(created ? "" : " (already there)")",
            remote: remote
        )
    }
}
