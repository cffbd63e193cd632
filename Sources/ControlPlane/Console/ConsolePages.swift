import ConfigRenderer
import Foundation

/// Builds the console's view models from what the API serves. Pure: given records, returns values.
enum ConsolePages {
    static let dateFormat: Date.ISO8601FormatStyle = .iso8601.year().month().day().dateSeparator(.dash)
        .time(includingFractionalSeconds: false).timeSeparator(.colon)

    /// `2026-11-28 06:10:05 UTC`.
    static func time(_ date: Date?) -> String {
        guard let date else { return "" }
        return date.formatted(Self.dateFormat).replacingOccurrences(of: "T", with: " ")
            .replacingOccurrences(of: "Z", with: " UTC")
    }

    /// `12 s`, `4 min`, `3 h`, `2 d` ago.
    static func ago(_ date: Date?, now: Date) -> String {
        guard let date else { return "" }
        let seconds = max(0, Int(now.timeIntervalSince(date)))
        switch seconds {
        case ..<90: return "\(seconds) s ago"
        case ..<5400: return "\(seconds / 60) min ago"
        case ..<172_800: return "\(seconds / 3600) h ago"
        default: return "\(seconds / 86400) d ago"
        }
    }

    static func tierLabel(_ tier: AgentTier) -> String {
        switch tier {
        case .loadBalancing: "load balancer"
        case .sampling: "sampler"
        case .unmanaged: "unmanaged"
        }
    }

    /// A CSS class for a state word.
    static func style(ofState state: String) -> String {
        switch state {
        case "applied", "unverified", "done", "succeeded", "deployed", "healthy", "skipped": "good"
        case "failed", "rolled_back", "rolling_back", "unhealthy", "aborted": "bad"
        case "applying", "draining", "settling", "progressing", "pending", "paused", "baking": "busy"
        default: "quiet"
        }
    }

    /// Failed first, then unhealthy, offline, moving, then the rest.
    static func rank(_ agent: AgentRecord) -> Int {
        if agent.configState == "failed" { return 0 }
        if agent.healthy == false { return 1 }
        if !agent.connected { return 2 }
        if agent.configState == "applying" || agent.configState == "pending" { return 3 }
        return 4
    }

    static func isProblem(_ agent: AgentRecord) -> Bool {
        agent.tier != .unmanaged && (agent.configState == "failed" || (agent.connected && agent.healthy == false))
    }

    static func row(_ agent: AgentRecord, now: Date) -> ConsoleView.AgentRow {
        let health: String
        switch agent.healthy {
        case .some(true): health = "healthy"
        case .some(false): health = "unhealthy"
        case .none: health = "not reported"
        }
        let problem = [agent.configError, agent.healthError, agent.connectionSettingsError].compactMap { $0 }
            .filter { !$0.isEmpty }.joined(separator: " · ")
        return ConsoleView.AgentRow(
            uid: agent.instanceUID,
            shortUID: String(agent.instanceUID.suffix(12)),
            host: ConsoleView.text(agent.hostName),
            tier: Self.tierLabel(agent.tier),
            state: agent.configState,
            style: Self.style(ofState: agent.configState),
            running: agent.runningVersion.map { "v\($0)" } ?? (agent.reportedHash == nil ? nil : "unknown"),
            desired: agent.desiredVersion.map { "v\($0)" },
            health: health,
            healthStyle: agent.healthy == false ? "bad" : (agent.healthy == true ? "good" : "quiet"),
            transport: agent.transport ?? "offline",
            inRing: agent.inRing,
            ringEntry: ConsoleView.text(agent.ringEntry),
            lastSeen: Self.ago(agent.lastSeen, now: now),
            problem: ConsoleView.text(problem)
        )
    }

    /// Ring members listed on the fleet page (and samplers out of the ring on the rollout page).
    static let ringMembersShown = 40
    /// Agents listed on the rollout page, those still moving first.
    static let rolloutAgentsShown = 100

    static func summary(_ summary: FleetSummary, agents: [AgentRecord], now: Date) -> ConsoleView.Summary {
        let stateOrder = ["failed", "applying", "pending", "applied", "unverified", "offline", "unmanaged"]
        let states = summary.agentsByState.sorted {
            (stateOrder.firstIndex(of: $0.key) ?? 99, $0.key) < (stateOrder.firstIndex(of: $1.key) ?? 99, $1.key)
        }
        let problems = agents.filter(Self.isProblem).sorted {
            (Self.rank($0), $0.instanceUID) < (Self.rank($1), $1.instanceUID)
        }
        let percent = summary.convergedShare * 100
        return ConsoleView.Summary(
            version: summary.currentVersion.map { "v\($0)" } ?? "none yet",
            rolloutID: summary.rollout,
            rolloutPhase: summary.rolloutPhase?.rawValue,
            agents: agents.count,
            tiers: [AgentTier.loadBalancing, .sampling, .unmanaged].map { tier in
                ConsoleView.Count(
                    name: Self.tierLabel(tier),
                    count: summary.agentsByTier[tier.rawValue] ?? 0,
                    style: "quiet"
                )
            },
            states: states.map { ConsoleView.Count(name: $0.key, count: $0.value, style: Self.style(ofState: $0.key)) },
            convergedPercent: percent == 100 || percent == 0 ? "\(Int(percent)) %" : String(format: "%.1f %%", percent),
            convergedWidth: Int(percent.rounded()),
            ring: ConsoleView.Ring(
                version: summary.ring.version,
                size: summary.ring.members.count,
                members: Array(summary.ring.members.prefix(Self.ringMembersShown)),
                moreMembers: summary.ring.members.count > Self.ringMembersShown
                    ? summary.ring.members.count - Self.ringMembersShown : nil,
                changed: Self.ago(summary.ring.changedAt, now: now),
                reason: ConsoleView.text(summary.ring.reason),
                convergence: summary.ring.convergenceSeconds.map { String(format: "%.1f s", $0) } ?? "not yet"
            ),
            lastConvergence: summary.lastRingConvergenceSeconds.map { String(format: "%.1f s", $0) } ?? "",
            problems: problems.prefix(20).map { Self.row($0, now: now) },
            hasProblems: !problems.isEmpty,
            moreProblems: problems.count > 20 ? problems.count - 20 : nil
        )
    }

    /// The agent filter of the fleet page and of `GET /v1/agents`: tier, state (`unhealthy` too), running
    /// version (`3` or `v3`), and text in the UID, host name, ring entry or errors.
    static func matches(_ agent: AgentRecord, _ query: ConsoleView.FleetQuery) -> Bool {
        let text = query.text.lowercased()
        let version = query.version.hasPrefix("v") ? String(query.version.dropFirst()) : query.version
        if !query.tier.isEmpty && agent.tier.rawValue != query.tier { return false }
        if !query.state.isEmpty {
            if query.state == "unhealthy" {
                if agent.healthy != false { return false }
            } else if agent.configState != query.state {
                return false
            }
        }
        if !version.isEmpty && agent.runningVersion.map(String.init) != version { return false }
        if !text.isEmpty {
            let fields = [
                agent.instanceUID, agent.hostName ?? "", agent.ringEntry ?? "", agent.configError ?? "",
                agent.healthError ?? "",
            ]
            if !fields.contains(where: { $0.lowercased().contains(text) }) { return false }
        }
        return true
    }

    /// Filters, sorts and pages the agent table.
    static func table(
        _ agents: [AgentRecord],
        query: ConsoleView.FleetQuery,
        now: Date
    ) -> (rows: [ConsoleView.AgentRow], paging: ConsoleView.Paging) {
        let matching = agents.filter { Self.matches($0, query) }.sorted {
            (Self.rank($0), $0.hostName ?? "~", $0.instanceUID) < (Self.rank($1), $1.hostName ?? "~", $1.instanceUID)
        }
        let pages = max(1, (matching.count + query.pageSize - 1) / query.pageSize)
        let page = min(max(1, query.page), pages)
        let start = (page - 1) * query.pageSize
        let slice = matching.dropFirst(start).prefix(query.pageSize)
        return (
            slice.map { Self.row($0, now: now) },
            ConsoleView.Paging(
                from: slice.isEmpty ? 0 : start + 1,
                to: start + slice.count,
                total: matching.count,
                previous: page > 1 ? query.url(page: page - 1) : nil,
                next: page < pages ? query.url(page: page + 1) : nil
            )
        )
    }

    static func options(_ values: [(String, String)], selected: String, all: String) -> [ConsoleView.Option] {
        [ConsoleView.Option(value: "", label: all, selected: selected.isEmpty)]
            + values.map { ConsoleView.Option(value: $0.0, label: $0.1, selected: $0.0 == selected) }
    }

    static func diffSection(title: String, leftTitle: String, rightTitle: String, old: String, new: String)
        -> ConsoleView.DiffSection
    {
        let diff = TextDiff(old: old, new: new)
        return ConsoleView.DiffSection(
            title: title,
            leftTitle: leftTitle,
            rightTitle: rightTitle,
            same: diff.isEmpty,
            summary: diff.isEmpty ? "no difference" : "−\(diff.removed) +\(diff.added) lines",
            rows: diff.rows.map { row in
                ConsoleView.DiffRow(
                    kind: row.kind.rawValue,
                    leftMark: row.kind == .removed || row.kind == .changed ? "removed: " : nil,
                    rightMark: row.kind == .added || row.kind == .changed ? "added: " : nil,
                    leftNumber: row.leftNumber.map(String.init) ?? "",
                    rightNumber: row.rightNumber.map(String.init) ?? "",
                    left: row.left,
                    right: row.right,
                    folded: row.folded,
                    isFolded: row.kind == .folded
                )
            }
        )
    }

    /// The sections comparing two versions: each policy file, `fleet.yaml`, and each tier's rendered config.
    static func versionDiff(
        from old: PolicyVersion,
        to new: PolicyVersion,
        oldRendered: [RenderedRecord],
        newRendered: [RenderedRecord]
    ) -> [ConsoleView.DiffSection] {
        let left = "v\(old.number)"
        let right = "v\(new.number)"
        var sections: [ConsoleView.DiffSection] = []
        let paths = Set(old.sources.map(\.path)).union(new.sources.map(\.path)).sorted()
        for path in paths {
            let before = old.sources.first { $0.path == path }
            let after = new.sources.first { $0.path == path }
            var section = Self.diffSection(
                title: path,
                leftTitle: before == nil ? "\(left) (no such file)" : left,
                rightTitle: after == nil ? "\(right) (deleted)" : right,
                old: before?.text ?? "",
                new: after?.text ?? ""
            )
            if before == nil { section.summary = "new file, " + section.summary }
            if after == nil { section.summary = "deleted, " + section.summary }
            sections.append(section)
        }
        sections.append(
            Self.diffSection(title: "fleet.yaml", leftTitle: left, rightTitle: right, old: old.fleet, new: new.fleet)
        )
        for tier in [AgentTier.loadBalancing, .sampling] {
            // The newest render of each version for the tier (later ring and sampler-count changes re-render).
            let before = oldRendered.last { $0.tier == tier }
            let after = newRendered.last { $0.tier == tier }
            guard before != nil || after != nil else { continue }
            sections.append(
                Self.diffSection(
                    title: "rendered config: \(Self.tierLabel(tier)) tier",
                    leftTitle: before.map { "\(left), rendered for \($0.samplerCount) samplers" }
                        ?? "\(left) (not rendered)",
                    rightTitle: after.map { "\(right), rendered for \($0.samplerCount) samplers" }
                        ?? "\(right) (not rendered)",
                    old: before?.yaml ?? "",
                    new: after?.yaml ?? ""
                )
            )
        }
        return sections
    }

    /// The progress view of a rollout.
    static func progress(
        _ report: RolloutReport,
        agents: [AgentRecord],
        canWrite: Bool,
        now: Date
    ) -> ConsoleView.RolloutProgress {
        let rollout = report.rollout
        let byUID = Dictionary(agents.map { ($0.instanceUID, $0) }, uniquingKeysWith: { first, _ in first })
        let inTiers = agents.filter { rollout.plan.tiers.contains($0.tier) && $0.connected }
        let finished: Set<AgentStep> = [.done]
        let done: Int
        if rollout.phase == .succeeded {
            done = inTiers.count
        } else {
            done =
                inTiers.filter { agent in
                    // A skipped agent was offline at its turn; it counts once it runs the new version.
                    if let step = rollout.steps[agent.instanceUID], step != .skipped { return finished.contains(step) }
                    return agent.runningVersion == rollout.to
                }.count
        }
        let total = max(inTiers.count, done)
        let percent = total == 0 ? (rollout.phase == .succeeded ? 100 : 0) : done * 100 / total
        let tiers = rollout.plan.tiers.enumerated().map { index, tier in
            let state: String
            if rollout.phase.isTerminal {
                state =
                    rollout.phase == .succeeded
                    ? "done" : (index <= rollout.tierIndex ? rollout.phase.rawValue : "not reached")
            } else {
                state = index < rollout.tierIndex ? "done" : (index == rollout.tierIndex ? "progressing" : "pending")
            }
            return ConsoleView.Step(
                label: Self.tierLabel(tier) + " tier",
                state: state.replacingOccurrences(of: "_", with: " "),
                style: state == "pending" || state == "not reached" ? "quiet" : Self.style(ofState: state),
                current: index == rollout.tierIndex && !rollout.phase.isTerminal
            )
        }
        let stages = rollout.plan.stages.enumerated().map { index, stage in
            let label: String
            switch stage {
            case .canary(let count): label = "canary \(count)"
            case .percent(let share): label = "\(share) %"
            }
            let state: String
            if rollout.phase == .succeeded {
                state = "done"
            } else if index < rollout.stageIndex {
                state = "done"
            } else if index == rollout.stageIndex {
                state =
                    rollout.phase.isTerminal
                    ? rollout.phase.rawValue : (rollout.bakeStartedAt != nil ? "baking" : "progressing")
            } else {
                state = "pending"
            }
            return ConsoleView.Step(
                label: label,
                state: state.replacingOccurrences(of: "_", with: " "),
                style: state == "pending" ? "quiet" : Self.style(ofState: state),
                current: index == rollout.stageIndex && !rollout.phase.isTerminal
            )
        }
        var bake: String?
        if let started = rollout.bakeStartedAt, !rollout.phase.isTerminal {
            let left = max(0, rollout.plan.bakeSeconds - now.timeIntervalSince(started))
            bake = String(format: "baking: %.0f s of %.0f s left", left, rollout.plan.bakeSeconds)
        }
        let stepOrder: [AgentStep] = [
            .failed, .rollingBack, .draining, .settling, .applying, .waiting, .rolledBack, .done, .skipped,
        ]
        let sorted = rollout.steps.sorted {
            (stepOrder.firstIndex(of: $0.value) ?? 99, $0.key) < (stepOrder.firstIndex(of: $1.value) ?? 99, $1.key)
        }
        var counts: [AgentStep: Int] = [:]
        for step in rollout.steps.values { counts[step, default: 0] += 1 }
        let stepCounts = stepOrder.compactMap { step in
            counts[step].map {
                ConsoleView.Count(
                    name: step.rawValue.replacingOccurrences(of: "_", with: " "),
                    count: $0,
                    style: Self.style(ofState: step.rawValue)
                )
            }
        }
        let rows = sorted.prefix(Self.rolloutAgentsShown).map { uid, step in
            ConsoleView.AgentStepRow(
                uid: uid,
                shortUID: String(uid.suffix(12)),
                host: ConsoleView.text(byUID[uid]?.hostName),
                tier: byUID[uid].map { Self.tierLabel($0.tier) } ?? "",
                step: step.rawValue.replacingOccurrences(of: "_", with: " "),
                style: Self.style(ofState: step.rawValue),
                outOfRing: rollout.outOfRing[uid].map { String(format: "%.1f s", $0) }
            )
        }
        let draining = rollout.steps.filter { $0.value == .draining || $0.value == .settling }.keys.sorted().map {
            byUID[$0]?.ringEntry ?? byUID[$0]?.hostName ?? $0
        }
        let live = !rollout.phase.isTerminal
        return ConsoleView.RolloutProgress(
            id: rollout.id,
            from: rollout.from.map { "v\($0)" } ?? "nothing",
            to: rollout.to,
            phase: rollout.phase.rawValue.replacingOccurrences(of: "_", with: " "),
            phaseStyle: Self.style(ofState: rollout.phase.rawValue),
            live: live,
            started: Self.time(rollout.startedAt),
            ended: ConsoleView.text(Self.time(rollout.endedAt)),
            failure: ConsoleView.text(rollout.failure),
            percent: percent,
            done: done,
            total: total,
            tiers: tiers,
            stages: stages,
            bake: bake,
            stepCounts: stepCounts,
            agents: rows,
            moreAgents: sorted.count > Self.rolloutAgentsShown ? sorted.count - Self.rolloutAgentsShown : nil,
            draining: Array(draining.prefix(Self.ringMembersShown)),
            hasDraining: !draining.isEmpty,
            events: report.events.suffix(40).reversed().map {
                ConsoleView.Event(time: Self.time($0.time), kind: $0.kind.rawValue, message: $0.message)
            },
            canPause: canWrite && rollout.phase == .progressing && !rollout.pauseRequested,
            canResume: canWrite && rollout.phase == .paused,
            canAbort: canWrite && live
        )
    }
}
