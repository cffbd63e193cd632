import ConfigRenderer
import ControlPlane
import FleetSimulator
import Foundation
import OpAMPServer
import PolicyEngine
import Testing

/// Whole rollouts: a real OpAMP server, the control plane on a real SQLite file (or a real PostgreSQL
/// database), simulated collectors over WebSockets on 127.0.0.1.
@Suite(.serialized) struct RolloutTests {
    @Test(arguments: StoreFixture.Backend.allCases)
    func anApplyRollsOutDrainAwareUntilEveryAgentRunsIt(_ backend: StoreFixture.Backend) async throws {
        let stack = try await TestStack(database: backend.database())
        await stack.startFleet(loadBalancers: 2, samplers: 4)
        let result = try await stack.controller.apply(try exampleApply(), actor: "test", remote: "local")
        #expect(result.result == "created" && result.version == 1)
        #expect(result.tiers == [.sampling, .loadBalancing])
        let done = await eventually(timeout: 60) {
            (try? await stack.controller.currentRollout())?.rollout.phase == .succeeded
        }
        let first = try #require(try await stack.controller.currentRollout())
        #expect(done, "rollout ended \(first.rollout.phase): \(first.events.map(\.message).joined(separator: "\n"))")

        // Every agent applied version 1; the ring holds every sampler; every load balancer routes by it.
        #expect(await eventually { await stack.controller.agents().allSatisfy { $0.configState == "applied" } })
        let agents = await stack.controller.agents()
        #expect(agents.allSatisfy { $0.runningVersion == 1 })
        let summary = try await stack.controller.summary()
        #expect(summary.ring.members == agents.filter { $0.tier == .sampling }.compactMap(\.ringEntry).sorted())
        #expect(summary.ring.members.count == 4)
        for lb in stack.opamp.registry.snapshot() where lb.description?.attributes["service.name"] == "otelcol-lb" {
            let yaml = String(decoding: lb.effectiveConfig?["collector.yaml"]?.body ?? [], as: UTF8.self)
            for member in summary.ring.members { #expect(yaml.contains("- \(member)")) }
        }
        #expect(try stack.server.store.version(1)?.outcome == .deployed)

        // A second version changes a sampling rule: now every sampler is in the ring and must be drained.
        let second = try await stack.applyAndWait(
            try exampleApply { $0.replacingOccurrences(of: "sample 5%", with: "sample 6%") }
        )
        #expect(second.phase == .succeeded)
        #expect(second.plan.tiers == [.sampling])
        let report = try #require(try await stack.controller.rollout(second.id))

        // Drain order for every sampler: out of the ring everywhere, then settle, then the config, then back.
        for sampler in agents where sampler.tier == .sampling {
            let messages = report.events.filter { $0.agent == sampler.instanceUID }.map(\.message)
            let name = try #require(sampler.hostName)
            func index(_ text: String) -> Int? { messages.firstIndex { $0.contains(text) } }
            let draining = index("draining \(name)")
            let routedAround = index("every load balancer routes around \(name)")
            let given = index("\(name) gets version 2")
            let running = index("\(name) runs version 2")
            #expect(draining != nil && routedAround != nil && given != nil && running != nil)
            if let draining, let routedAround, let given, let running {
                #expect(draining < routedAround && routedAround < given && given < running)
            }
        }
        #expect(report.rollout.outOfRing.count == 4)
        await stack.stop()
    }

    @Test(arguments: StoreFixture.Backend.allCases)
    func aVersionTheSamplersFailIsRolledBackEverywhere(_ backend: StoreFixture.Backend) async throws {
        let stack = try await TestStack(database: backend.database())
        await stack.startFleet(loadBalancers: 2, samplers: 4)
        #expect(try await stack.applyAndWait(try exampleApply()).phase == .succeeded)
        let rollout = try await stack.applyAndWait(try brokenApply())
        #expect(rollout.to == 2 && rollout.plan.tiers == [.sampling])
        #expect(rollout.phase == .rolledBack)
        #expect(rollout.failure?.contains("failed version 2") == true)
        // Only the canary was touched; it is back on version 1 and in the ring.
        #expect(rollout.touched.count == 1)
        #expect(
            await eventually {
                await stack.controller.agents().allSatisfy { $0.runningVersion == 1 && $0.configState == "applied" }
            }
        )
        let summary = try await stack.controller.summary()
        #expect(summary.ring.members.count == 4)
        #expect(summary.currentVersion == 1)
        let version = try #require(try stack.server.store.version(2))
        #expect(version.outcome == .failed)
        #expect(version.failureReason?.contains("tailplane-fail") == true)
        await stack.stop()
    }

    @Test func aSupervisorThatRollsBackByItselfCountsAsAFailure() async throws {
        let stack = try await TestStack()
        await stack.startFleet(loadBalancers: 1, samplers: 3, supervisorRollback: true)
        #expect(try await stack.applyAndWait(try exampleApply()).phase == .succeeded)
        let rollout = try await stack.applyAndWait(try brokenApply())
        #expect(rollout.phase == .rolledBack)
        #expect(rollout.failure?.contains("failed version 2") == true)
        #expect(try stack.server.store.version(2)?.outcome == .failed)
        #expect(await eventually { await stack.controller.agents().allSatisfy { $0.runningVersion == 1 } })
        await stack.stop()
    }

    @Test func agentsThatReportNoStatusAreJudgedByHealthAndSaySo() async throws {
        let stack = try await TestStack()
        await stack.startFleet(loadBalancers: 1, samplers: 3, reportsRemoteConfig: false)
        #expect(try await stack.applyAndWait(try exampleApply()).phase == .succeeded)
        #expect(await eventually { await stack.controller.agents().allSatisfy { $0.configState == "unverified" } })
        // A config that makes them unhealthy fails the rollout; it is rolled back without resending in a loop.
        let rollout = try await stack.applyAndWait(try brokenApply())
        #expect(rollout.phase == .rolledBack)
        #expect(rollout.failure?.contains("unhealthy") == true)
        #expect(
            await eventually {
                await stack.controller.agents().allSatisfy { $0.configState == "unverified" && $0.desiredVersion == 1 }
            }
        )
        await stack.stop()
    }

    @Test func budgetsAreReRenderedDrainAwareWhenTheSamplerCountChanges() async throws {
        let stack = try await TestStack()
        await stack.startFleet(loadBalancers: 1, samplers: 2)
        #expect(try await stack.applyAndWait(try exampleApply()).phase == .succeeded)
        @Sendable func budgets() -> Set<String> {
            Set(
                stack.opamp.registry.snapshot().compactMap { agent -> String? in
                    let yaml = String(decoding: agent.effectiveConfig?["collector.yaml"]?.body ?? [], as: UTF8.self)
                    return yaml.components(separatedBy: "\n").first { $0.contains("max_total_spans_per_second") }
                }
            )
        }
        let before = budgets()
        #expect(before.count == 1 && before.first?.contains("across 2 samplers") == true, "\(before)")

        // Two more samplers join: they get version 1 for 2 samplers, join the ring, and then every sampler is
        // re-rendered for 4, one at a time, out of the ring.
        await stack.startFleet(loadBalancers: 0, samplers: 2, firstIndex: 100)
        let recounted = await eventually(timeout: 60) {
            let budgets = budgets()
            let rollout = try? await stack.controller.currentRollout()?.rollout
            return budgets.count == 1 && budgets.first?.contains("across 4 samplers") == true
                && rollout?.phase == .succeeded && rollout?.id == 2
        }
        let report = try #require(try await stack.controller.currentRollout())
        let now = budgets()
        #expect(recounted, "\(now) \(report.events.map(\.message))")
        #expect(report.rollout.from == 1 && report.rollout.to == 1)
        #expect(report.rollout.outOfRing.count == 4)
        #expect(try stack.server.store.version(1)?.outcome == .deployed)
        await stack.stop()
    }

    @Test func aBudgetTheFleetCannotSplitIsRefusedAtApply() async throws {
        let stack = try await TestStack()
        await stack.startFleet(loadBalancers: 1, samplers: 3)
        // 40 spans/s is 14 per sampler on three: a 5 % share of it is 0.
        let request = ApplyRequest(
            sources: [
                SourceText(
                    path: "budget.policy",
                    text:
                        "budget b 40 spans/s {\n    keep e when status == ERROR share 5%\n    keep rest share 95%\n}\n"
                )
            ],
            fleet: ""
        )
        do {
            _ = try await stack.controller.apply(request, actor: "test", remote: "local")
            Issue.record("a budget share of nothing per sampler was accepted")
        } catch {
            guard case .rejected(let rejection) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            let problem = try #require(rejection.fleetDiagnostics.first)
            #expect(problem.code == .budgetShareTooSmall)
            #expect(problem.message.contains("3 samplers") && problem.file == "budget.policy" && problem.line == 2)
        }
        #expect(try stack.server.store.versions(limit: 10).isEmpty)
        await stack.stop()
    }

    @Test func anApplyWithErrorsChangesNothing() async throws {
        let stack = try await TestStack()
        var request = try exampleApply()
        request.sources.append(SourceText(path: "bad.policy", text: "keep x when status = ERROR\n"))
        do {
            _ = try await stack.controller.apply(request, actor: "test", remote: "local")
            Issue.record("an apply with errors was accepted")
        } catch {
            guard case .rejected(let rejection) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            let diagnostic = try #require(rejection.diagnostics.first { $0.severity == .error })
            #expect(diagnostic.code.rawValue == "TP1007")
            #expect(diagnostic.file == "bad.policy" && diagnostic.start.line == 1 && diagnostic.start.column == 20)
        }
        #expect(try stack.server.store.versions(limit: 10).isEmpty)
        #expect(try await stack.controller.currentRollout() == nil)
        // The same content twice: the second is unchanged.
        let first = try await stack.controller.apply(try exampleApply(), actor: "test", remote: "local")
        let again = try await stack.controller.apply(try exampleApply(), actor: "test", remote: "local")
        #expect(first.result == "created" && again.result == "unchanged" && again.version == first.version)
        #expect(try stack.server.store.versions(limit: 10).count == 1)
        await stack.stop()
    }
}
