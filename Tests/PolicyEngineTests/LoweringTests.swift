import Foundation
import Testing

@testable import PolicyEngine

/// What each construct compiles to, checked against the collector's semantics (tailsampling.md §1.3–1.6, §5).
@Suite struct LoweringTests {
    private func only(_ text: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> PolicyKind? {
        let compiled = policies(text, sourceLocation: sourceLocation)
        #expect(compiled.count == 1, sourceLocation: sourceLocation)
        return compiled.first?.kind
    }

    @Test func unconditionalKeepIsAlwaysSample() {
        #expect(self.only("keep all") == .alwaysSample)
    }

    @Test func statusTests() {
        #expect(self.only("keep e when status == ERROR") == .statusCode([.error]))
        #expect(self.only("keep e when status in [UNSET, ERROR]") == .statusCode([.error, .unset]))
        // "no span is OK" needs `not` around the whole status test, not the complement set.
        #expect(self.only("keep e when status != OK") == .not(Policy(name: "status_code", kind: .statusCode([.ok]))))
    }

    @Test func latencyBoundsAreInclusiveWholeMilliseconds() {
        #expect(self.only("keep s when duration > 500ms") == .latency(LatencyBounds(minimumMs: 501, maximumMs: nil)))
        #expect(self.only("keep s when duration >= 1.5s") == .latency(LatencyBounds(minimumMs: 1500, maximumMs: nil)))
        #expect(
            self.only("keep s when duration in 1s..30s") == .latency(LatencyBounds(minimumMs: 1000, maximumMs: 30_000))
        )
        // Merged across `and`: trace-level quantities are one value per trace.
        #expect(
            self.only("keep s when duration > 1s and duration <= 2s")
                == .latency(LatencyBounds(minimumMs: 1001, maximumMs: 2000))
        )
    }

    @Test func upperBoundAloneBecomesNotLatency() {
        // Exactly "shorter than 2s", without the collector's running-window quirk of upper bounds.
        #expect(
            self.only("keep fast when duration < 2s")
                == .not(Policy(name: "latency", kind: .latency(LatencyBounds(minimumMs: 2000, maximumMs: nil))))
        )
        #expect(
            self.only("keep fast when not duration >= 2s")
                == .not(Policy(name: "latency", kind: .latency(LatencyBounds(minimumMs: 2000, maximumMs: nil))))
        )
    }

    @Test func spanCounts() {
        #expect(self.only("keep b when spans >= 200") == .spanCount(SpanCountBounds(minimum: 200, maximum: nil)))
        #expect(self.only("keep b when spans in 10..20") == .spanCount(SpanCountBounds(minimum: 10, maximum: 20)))
        #expect(self.only("keep b when spans < 3") == .spanCount(SpanCountBounds(minimum: 0, maximum: 2)))
        #expect(self.only("keep b when spans == 7") == .spanCount(SpanCountBounds(minimum: 7, maximum: 7)))
    }

    @Test func regexesAreAnchoredFullMatches() {
        #expect(
            self.only(#"keep h when attr["http.route"] matches "/healthz|/readyz""#)
                == .stringAttribute(
                    StringAttributeTest(key: "http.route", values: ["^(?:/healthz|/readyz)$"], regex: true)
                )
        )
    }

    @Test func exactStringSetsAndServiceSugar() {
        #expect(
            self.only(#"keep v when attr["tier"] in ["gold", "platinum", "gold"]"#)
                == .stringAttribute(StringAttributeTest(key: "tier", values: ["gold", "platinum"], regex: false))
        )
        #expect(
            self.only(#"keep c when service == "checkout""#)
                == .stringAttribute(StringAttributeTest(key: "service.name", values: ["checkout"], regex: false))
        )
    }

    @Test func numericAttributesNeverUseZeroBounds() {
        #expect(
            self.only(#"keep s when attr["code"] in 500..599"#)
                == .numericAttribute(NumericAttributeTest(key: "code", minimum: 500, maximum: 599))
        )
        #expect(
            self.only(#"keep s when attr["code"] > 499"#)
                == .numericAttribute(NumericAttributeTest(key: "code", minimum: 500, maximum: nil))
        )
        #expect(compile(#"keep s when attr["code"] > -1"#).diagnostics.first?.code == .zeroNumericBound)
        #expect(compile(#"keep s when attr["code"] < 1"#).diagnostics.first?.code == .zeroNumericBound)
        #expect(compile(#"keep s when attr["code"] in -5..5"#).hasErrors == false)
    }

    @Test func negatedAttributeInsideAndUsesInvertMatch() {
        let kind = self.only(#"keep e when status == ERROR and service != "checkout""#)
        #expect(
            kind
                == .and([
                    Policy(name: "status_code", kind: .statusCode([.error])),
                    Policy(
                        name: "string_attribute",
                        kind: .stringAttribute(
                            StringAttributeTest(key: "service.name", values: ["checkout"], regex: false, invert: true)
                        )
                    ),
                ])
        )
    }

    @Test func negatedAttributeAloneUsesNotNotInvertMatch() {
        // A top-level invert_match would veto every other rule (InvertNotSampled); `not` does not.
        #expect(
            self.only(#"keep e when service != "checkout""#)
                == .not(
                    Policy(
                        name: "string_attribute",
                        kind: .stringAttribute(
                            StringAttributeTest(key: "service.name", values: ["checkout"], regex: false)
                        )
                    )
                )
        )
    }

    @Test func orSplitsIntoTopLevelPolicies() {
        let compiled = policies(#"keep d when attr["debug"] == true or tracestate["tp"] == "debug""#)
        #expect(compiled.map(\.name) == ["d/1", "d/2"])
        #expect(compiled.allSatisfy { $0.rule == "d" })
        #expect(compiled[0].kind == .booleanAttribute(BooleanAttributeTest(key: "debug", value: true)))
        #expect(compiled[1].kind == .traceState(TraceStateTest(key: "tp", values: ["debug"])))
    }

    @Test func notOverAndUsesDeMorgan() {
        let compiled = policies("keep x when not (status == ERROR and spans > 10)")
        #expect(compiled.count == 2)
        #expect(compiled[0].kind == .not(Policy(name: "status_code", kind: .statusCode([.error]))))
        #expect(compiled[1].kind == .spanCount(SpanCountBounds(minimum: 0, maximum: 10)))
    }

    @Test func sampleAndLimitJoinTheConditionInOrder() {
        let kind = self.only(#"keep s when service == "search" sample 10% salt "tier2" limit 2000 spans/s"#)
        guard case .and(let members)? = kind else {
            Issue.record("expected and, got \(String(describing: kind))")
            return
        }
        #expect(members.map(\.kind.typeName) == ["string_attribute", "probabilistic", "rate_limiting"])
        #expect(members[1].kind == .probabilistic(ProbabilisticSampling(percentage: 10, salt: "tier2")))
        // The IR keeps the fleet-wide figure; the renderer divides by the number of samplers.
        #expect(members[2].kind == .rateLimiting(RateLimit(perSecond: 2000)))
    }

    @Test func sampleAloneIsProbabilistic() {
        // Without `salt` the rule's name is the salt, so rules sample independently of each other.
        #expect(self.only("keep base sample 5%") == .probabilistic(ProbabilisticSampling(percentage: 5, salt: "base")))
        #expect(
            self.only("keep base sample 0.5%") == .probabilistic(ProbabilisticSampling(percentage: 0.5, salt: "base"))
        )
    }

    @Test func byteLimitsWithBurst() {
        #expect(
            self.only("keep b limit 8MiB/s burst 16MiB")
                == .bytesLimiting(RateLimit(perSecond: 8 * 1_048_576, burst: 16 * 1_048_576))
        )
        #expect(self.only("keep b limit 1000 bytes/s") == .bytesLimiting(RateLimit(perSecond: 1000)))
        #expect(self.only("keep r limit 100 spans/s burst 400") == .rateLimiting(RateLimit(perSecond: 100, burst: 400)))
    }

    @Test func dropRulesHoldLeavesWithInvertMatch() {
        let kind = self.only(#"drop d when attr["synthetic"] == true and service != "canary""#)
        #expect(
            kind
                == .drop([
                    Policy(
                        name: "boolean_attribute",
                        kind: .booleanAttribute(BooleanAttributeTest(key: "synthetic", value: true))
                    ),
                    Policy(
                        name: "string_attribute",
                        kind: .stringAttribute(
                            StringAttributeTest(key: "service.name", values: ["canary"], regex: false, invert: true)
                        )
                    ),
                ])
        )
    }

    @Test func budgetsBecomeCompositeWithEveryMemberAllocated() {
        let compiled = policies(
            """
            budget checkout 1500 spans/s {
                keep checkout_errors when service == "checkout" and status == ERROR share 60%
                keep checkout_rest when service == "checkout" share 40%
            }
            """
        )
        guard case .composite(let budget)? = compiled.first?.kind else {
            Issue.record("expected composite")
            return
        }
        #expect(compiled.first?.name == "checkout")
        #expect(budget.maxTotalSpansPerSecond == 1500)
        #expect(budget.members.map(\.policy.name) == ["checkout_errors", "checkout_rest"])
        #expect(budget.members.map(\.percent) == [60, 40])
        #expect(budget.members[0].policy.kind.typeName == "and")
    }

    @Test func ottlAndFlags() {
        #expect(
            self.only(#"keep r when ottl span "attributes[\"retry\"] == true""#)
                == .ottlCondition(OTTLConditions(span: [#"attributes["retry"] == true"#], spanEvent: []))
        )
        #expect(
            self.only(#"keep r when ottl event "name == \"exception\"""#)
                == .ottlCondition(OTTLConditions(span: [], spanEvent: [#"name == "exception""#]))
        )
        #expect(self.only("keep f when sampled_flag") == .traceFlags)
    }

    @Test func samplerSettings() throws {
        let result = compile(
            """
            sampler {
                decision_wait 10s decision_wait_after_root 2s max_traces 100000 expected_traces 500/s
                block_on_overflow true cache sampled 1000000 unsampled 2000000 sample_on_first_match true
                drop_pending_on_shutdown true max_trace_size 4MiB ottl_error_mode silent
            }
            keep all
            """
        )
        let settings = try #require(result.policySet?.settings)
        #expect(settings.decisionWaitMs == 10_000)
        #expect(settings.decisionWaitAfterRootMs == 2000)
        #expect(settings.maxTraces == 100_000)
        #expect(settings.expectedNewTracesPerSecond == 500)
        #expect(settings.blockOnOverflow == true)
        #expect(settings.sampledCacheSize == 1_000_000)
        #expect(settings.nonSampledCacheSize == 2_000_000)
        #expect(settings.sampleOnFirstMatch == true)
        #expect(settings.dropPendingTracesOnShutdown == true)
        #expect(settings.maximumTraceSizeBytes == Int64(4 * 1_048_576))
        #expect(settings.ottlErrorMode == .silent)
    }

    @Test func namesAreUniqueAcrossFiles() {
        let result = PolicyCompiler.compile([
            SourceFile(path: "a.policy", text: "keep errors when status == ERROR\n"),
            SourceFile(path: "b.policy", text: "keep errors when spans > 10\n"),
        ])
        let duplicate = result.diagnostics.first { $0.code == .duplicateRuleName }
        #expect(duplicate?.file == "b.policy")
        #expect(duplicate?.notes.first?.location == SourceReference(file: "a.policy", line: 1, column: 6))
    }

    @Test func irRoundTripsThroughJSON() throws {
        let set = try #require(PolicyCompiler.compile(try examplePolicies()).policySet)
        let data = try JSONEncoder().encode(set)
        let decoded = try JSONDecoder().decode(PolicySet.self, from: data)
        #expect(decoded == set)
    }
}
