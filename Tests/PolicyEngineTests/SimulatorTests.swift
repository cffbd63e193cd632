import Testing

@testable import PolicyEngine

/// A policy set that must compile cleanly.
private func compiledSet(_ text: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> PolicySet
{
    let result = compile(text)
    #expect(!result.hasErrors, "\(result.diagnostics.map(\.message))", sourceLocation: sourceLocation)
    return try #require(result.policySet, sourceLocation: sourceLocation)
}

private let second: UInt64 = 1_000_000_000
private let base: UInt64 = 1_800_000_000 * 1_000_000_000

/// A one-resource trace; each span is (name, start ms, end ms, status, attributes).
private func trace(
    _ id: String = "4bf92f3577b34da6a3ce929d0e0e4736",
    resource: Attributes = ["service.name": .string("checkout")],
    spans: [(String, UInt64, UInt64, StatusCode, Attributes)],
    traceState: String = "",
    flags: UInt32 = 0
) -> SimulatedTrace {
    SimulatedTrace(
        traceID: TraceID(hex: id)!,
        resources: [resource],
        spans: spans.enumerated().map { index, span in
            TraceSpan(
                spanID: [0, 0, 0, 0, 0, 0, 0, UInt8(index + 1)],
                parentSpanID: index == 0 ? [] : [0, 0, 0, 0, 0, 0, 0, 1],
                name: span.0,
                startNanos: base + span.1 * 1_000_000,
                endNanos: base + span.2 * 1_000_000,
                status: span.3,
                attributes: span.4,
                traceState: traceState,
                flags: flags
            )
        }
    )
}

private func simple(_ spans: Int = 1, id: String = "4bf92f3577b34da6a3ce929d0e0e4736", attributes: Attributes = [:])
    -> SimulatedTrace
{
    trace(id, spans: (0..<spans).map { ("s\($0)", 0, 10, .unset, attributes) })
}

@Suite struct CollectorHashTests {
    // Expected values worked out independently (Python: FNV-1a by its definition; the threshold as an exact
    // rational rounded to 64 significant bits, ties to even, then truncated).
    @Test(arguments: [
        (5.0, UInt64(922_337_203_685_477_631)), (10.0, 1_844_674_407_370_955_263), (50.0, 9_223_372_036_854_775_807),
        (33.3, 6_142_765_776_545_279_999), (0.1, 18_446_744_073_709_551), (99.99, 18_444_899_399_302_178_815),
        (0.0, 0), (100.0, UInt64.max), (150.0, UInt64.max),
    ])
    func thresholdMatchesTheCollector(percentage: Double, expected: UInt64) {
        #expect(CollectorHash.probabilisticThreshold(percentage: percentage) == expected)
    }

    @Test(arguments: [
        ("0123456789abcdef0123456789abcdef", "default-hash-seed", UInt64(9_602_316_671_945_977_917)),
        ("0123456789abcdef0123456789abcdef", "baseline", 11_610_716_834_580_140_130),
        ("00000000000000000000000000000001", "search", 4_699_841_004_319_421_046),
        ("ffffffffffffffffffffffffffffffff", "baseline", 76_715_644_821_141_458),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "baseline", 2_292_739_964_017_279_342),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "search", 15_228_068_583_228_716_057),
    ])
    func fnvOverSaltThenTraceID(id: String, salt: String, expected: UInt64) {
        #expect(CollectorHash.fnv1a64(salt: salt, traceID: TraceID(hex: id)!) == expected)
    }

    @Test func probabilisticDecisionsFollowTheHash() throws {
        // 2292739964017279342 is below the 15 % threshold and above the 10 % one.
        let id = TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!
        #expect(CollectorHash.probabilisticSamples(traceID: id, salt: "baseline", percentage: 15))
        #expect(!CollectorHash.probabilisticSamples(traceID: id, salt: "baseline", percentage: 10))
        // An empty salt is the collector's default salt.
        #expect(
            CollectorHash.probabilisticSamples(traceID: id, salt: "", percentage: 65)
                == CollectorHash.probabilisticSamples(traceID: id, salt: nil, percentage: 65)
        )
        let set = try compiledSet("keep base sample 15%\n")
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        // The compiler salts with the rule name, `base`: worked out the same way, 0x… below 15 %?
        let verdict = sim.decide(SimulatedTrace(traceID: id, spans: [TraceSpan(startNanos: base, endNanos: base)]))
        let expected = CollectorHash.fnv1a64(salt: "base", traceID: id) <= 2_767_011_611_056_432_742
        #expect(verdict.decision == (expected ? .keep : .drop))
    }

    @Test func ringRoutesLikeTheLoadBalancingExporter() {
        let ring = LoadBalancingRing(endpoints: ["sampler-2:4317", "sampler-0:4317", "sampler-1:4317"])
        #expect(ring.endpoints == ["sampler-0:4317", "sampler-1:4317", "sampler-2:4317"])
        let routes = [
            "0123456789abcdef0123456789abcdef": "sampler-2:4317", "00000000000000000000000000000001": "sampler-2:4317",
            "ffffffffffffffffffffffffffffffff": "sampler-0:4317", "4bf92f3577b34da6a3ce929d0e0e4736": "sampler-1:4317",
        ]
        for (id, endpoint) in routes {
            #expect(ring.endpoint(for: TraceID(hex: id)!) == endpoint, "\(id)")
        }
        #expect(CollectorHash.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(LoadBalancingRing(endpoints: []).endpoint(for: TraceID(high: 1, low: 2)) == nil)
    }
}

@Suite struct EvaluatorTests {
    @Test func dropRulesRunFirstAndStopTheLoop() throws {
        let set = try compiledSet(
            """
            keep everything
            drop health when attr["http.route"] == "/healthz"
            """
        )
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        let verdict = sim.decide(simple(attributes: ["http.route": .string("/healthz")]))
        #expect(verdict.decision == .drop)
        #expect(verdict.decidingRule == "health")
        #expect(verdict.votes.map(\.policy) == ["health", "everything"])
        #expect(verdict.votes.map(\.vote) == [.dropped, .notEvaluated])
        let other = sim.decide(simple(attributes: ["http.route": .string("/api")]))
        #expect(other.decision == .keep)
        #expect(other.decidingRule == "everything")
    }

    @Test func invertedTopLevelVetoOnlyOnOldCollectors() {
        // Hand-built IR: the compiler never writes a top-level invert_match, but a simulator must know it.
        let set = PolicySet(policies: [
            Policy(name: "all", kind: .alwaysSample),
            Policy(
                name: "not_internal",
                kind: .stringAttribute(
                    StringAttributeTest(key: "team", values: ["internal"], regex: false, invert: true)
                )
            ),
        ])
        let teamInternal = simple(attributes: ["team": .string("internal")])
        var old = SamplingSimulation(policySet: set, options: SimulationOptions(collectorMinorVersion: 140))
        let vetoed = old.decide(teamInternal)
        #expect(vetoed.decision == .drop)
        #expect(vetoed.decidingPolicy == "not_internal")
        #expect(vetoed.votes.map(\.vote) == [.sampled, .invertNotSampled])
        var new = SamplingSimulation(policySet: set, options: SimulationOptions(collectorMinorVersion: 150))
        #expect(new.decide(teamInternal).decision == .keep)
    }

    @Test func sampleOnFirstMatchSkipsLaterLimits() throws {
        let text = """
            sampler {
                sample_on_first_match true
            }
            keep errors when status == ERROR
            keep capped limit 10 spans/s
            """
        var sim = SamplingSimulation(policySet: try compiledSet(text), options: SimulationOptions())
        let error = trace(spans: [("a", 0, 5, .error, [:])])
        for _ in 0..<20 {
            let verdict = sim.decide(error, nowNanos: base)
            #expect(verdict.votes.map(\.vote) == [.sampled, .notEvaluated])
        }
        // The limit's bucket was never touched by the error traces: a plain trace still fits.
        #expect(sim.decide(simple(5), nowNanos: base).decidingRule == "capped")
    }

    @Test func latencyWindowTestsTheRunningDuration() throws {
        let set = try compiledSet("keep mid when duration >= 100ms and duration <= 200ms\n")
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        // Final duration 500 ms, but after the second span the running duration is 150 ms: the collector
        // samples at that span (tailsampling.md §1.3).
        let prefix = trace(spans: [("a", 0, 50, .unset, [:]), ("b", 0, 150, .unset, [:]), ("c", 0, 500, .unset, [:])])
        #expect(sim.decide(prefix).decision == .keep)
        let late = trace(spans: [("c", 0, 500, .unset, [:]), ("b", 0, 150, .unset, [:])])
        #expect(sim.decide(late).decision == .drop)
        // Millisecond truncation: 99.9 ms is 99 ms.
        let short = SimulatedTrace(
            traceID: TraceID(high: 9, low: 9),
            spans: [TraceSpan(startNanos: base, endNanos: base + 99_999_999)]
        )
        #expect(sim.decide(short).decision == .drop)
        let slow = try compiledSet("keep slow when duration >= 5s\n")
        var slowSim = SamplingSimulation(policySet: slow, options: SimulationOptions())
        #expect(slowSim.decide(trace(spans: [("a", 0, 5000, .unset, [:])])).decision == .keep)
        #expect(slowSim.decide(trace(spans: [("a", 1, 5000, .unset, [:])])).decision == .drop)
    }

    @Test func attributeTypesReadAsTheCollectorReadsThem() throws {
        let set = try compiledSet(
            """
            keep small when attr["http.response.status_code"] < 500
            keep flagged when attr["debug"] == false
            """
        )
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        // A double reads as 0 through Value.Int(), which is below 500.
        let double = sim.decide(simple(attributes: ["http.response.status_code": .double(503)]), explain: true)
        #expect(double.decidingRule == "small")
        // A string "true" reads as false through Value.Bool().
        let string = sim.decide(simple(attributes: ["debug": .string("true")]))
        #expect(string.decidingRule == "flagged")
        // An absent key matches nothing.
        #expect(sim.decide(simple()).decision == .drop)
        let int = sim.decide(simple(attributes: ["http.response.status_code": .int(503)]), explain: true)
        #expect(int.decision == .drop)
        #expect(int.votes[0].detail?.contains("503") == true)
    }

    @Test func stringMatchesResourceOrSpanAndRegexIsFullMatch() throws {
        let set = try compiledSet(
            """
            keep checkout when service == "checkout"
            keep internal when attr["http.route"] matches "/internal/.*"
            """
        )
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        #expect(sim.decide(simple()).decidingRule == "checkout")
        let route = trace(resource: [:], spans: [("a", 0, 1, .unset, ["http.route": .string("/internal/x")])])
        #expect(sim.decide(route).decidingRule == "internal")
        let embedded = trace(resource: [:], spans: [("a", 0, 1, .unset, ["http.route": .string("/v1/internal/x")])])
        let verdict = sim.decide(embedded, explain: true)
        #expect(verdict.decision == .drop)
        #expect(verdict.votes[1].detail?.contains("\"/v1/internal/x\"") == true)
    }

    @Test func andShortCircuitsBeforeItsLimit() throws {
        let set = try compiledSet("keep search when service == \"search\" limit 10 spans/s\n")
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions(collectorMinorVersion: 150))
        // Checkout traces fail the first condition and never reach the limit's window.
        for _ in 0..<50 { _ = sim.decide(simple(5), nowNanos: base) }
        let search = trace(resource: ["service.name": .string("search")], spans: [("a", 0, 1, .unset, [:])])
        #expect(sim.decide(search, nowNanos: base).decision == .keep)
    }

    @Test func fixedWindowLimitBeforeV153() throws {
        // 30 spans/s across 3 samplers: 10 per sampler, rendered as 11 with the strict test.
        let set = try compiledSet("keep capped limit 30 spans/s\n")
        var evaluator = SamplerEvaluator(
            policySet: set,
            options: SimulationOptions(samplers: 3, collectorMinorVersion: 150)
        )
        let four = simple(4)
        #expect(evaluator.decide(four, nowNanos: base).decision == .keep)  // 4
        #expect(evaluator.decide(four, nowNanos: base + second / 2).decision == .keep)  // 8
        #expect(evaluator.decide(four, nowNanos: base + second / 2).decision == .drop)  // 12 > 10
        #expect(evaluator.decide(simple(2), nowNanos: base + second / 2).decision == .keep)  // exactly 10
        #expect(evaluator.decide(four, nowNanos: base + second).decision == .keep)  // a new second
        // A trace larger than the share never fits.
        #expect(evaluator.decide(simple(11), nowNanos: base + 5 * second).decision == .drop)
    }

    @Test func tokenBucketLimitFromV153() throws {
        let set = try compiledSet("keep capped limit 10 spans/s\n")
        var evaluator = SamplerEvaluator(policySet: set, options: SimulationOptions(collectorMinorVersion: 153))
        // Full bucket of 2 × 10 at the start.
        #expect(evaluator.decide(simple(15), nowNanos: base).decision == .keep)
        #expect(evaluator.decide(simple(6), nowNanos: base).decision == .drop)  // 5 left
        #expect(evaluator.decide(simple(5), nowNanos: base).decision == .keep)  // 0 left
        // Half a second refills 5.
        #expect(evaluator.decide(simple(6), nowNanos: base + second / 2).decision == .drop)
        #expect(evaluator.decide(simple(5), nowNanos: base + second / 2).decision == .keep)
        // Never more than the burst, however long the pause.
        #expect(evaluator.decide(simple(21), nowNanos: base + 100 * second).decision == .drop)
        #expect(evaluator.decide(simple(20), nowNanos: base + 100 * second).decision == .keep)
    }

    @Test func byteLimitUsesTheTraceSize() throws {
        let set = try compiledSet("keep bulk limit 1000 bytes/s burst 1000\n")
        var evaluator = SamplerEvaluator(policySet: set, options: SimulationOptions())
        var big = simple()
        big.sizeBytes = 600
        #expect(evaluator.decide(big, nowNanos: base).decision == .keep)
        #expect(evaluator.decide(big, nowNanos: base).decision == .drop)
        #expect(evaluator.decide(big, nowNanos: base + second).decision == .keep)
        big.sizeBytes = 1001
        #expect(evaluator.decide(big, nowNanos: base + 10 * second).decision == .drop)
    }

    @Test func budgetAllocationHasNoFallThrough() throws {
        let set = try compiledSet(
            """
            budget checkout 100 spans/s {
                keep checkout_errors when status == ERROR share 60%
                keep checkout_rest when service == "checkout" share 40%
            }
            """
        )
        var evaluator = SamplerEvaluator(policySet: set, options: SimulationOptions())
        let error = trace(spans: (0..<25).map { ("e\($0)", 0, 1, .error, [:]) })
        #expect(evaluator.decide(error, nowNanos: base).decision == .keep)  // 25 of 60
        #expect(evaluator.decide(error, nowNanos: base).decision == .keep)  // 50 of 60
        // The errors' share is spent; the trace also matches `checkout_rest`, which has room, but the first
        // matching member decides (contrib #36959).
        let verdict = evaluator.decide(error, nowNanos: base, explain: true)
        #expect(verdict.decision == .drop)
        #expect(verdict.votes[0].detail?.contains("share is spent") == true)
        let plain = trace(spans: (0..<40).map { ("p\($0)", 0, 1, .ok, [:]) })
        #expect(evaluator.decide(plain, nowNanos: base).decision == .keep)  // 40 of 40
        #expect(evaluator.decide(simple(), nowNanos: base).decision == .drop)
        // A new second resets every member.
        #expect(evaluator.decide(error, nowNanos: base + second).decision == .keep)
    }

    @Test func budgetSharesFollowTheSamplerCount() throws {
        let set = try compiledSet(
            """
            budget b 300 spans/s {
                keep all_of_it when status == OK share 100%
            }
            """
        )
        // 300 across 3 samplers is 100 per replica.
        var evaluator = SamplerEvaluator(policySet: set, options: SimulationOptions(samplers: 3))
        let ok = trace(spans: (0..<100).map { ("p\($0)", 0, 1, .ok, [:]) })
        #expect(evaluator.decide(ok, nowNanos: base).decision == .keep)
        #expect(evaluator.decide(simple(1), nowNanos: base).decision == .drop)
    }

    @Test func traceStateFlagsAndSpanCount() throws {
        let set = try compiledSet(
            """
            keep debug when tracestate["tp"] in ["debug"]
            keep sampled when sampled_flag
            keep big when spans >= 3
            """
        )
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        #expect(
            sim.decide(trace(spans: [("a", 0, 1, .unset, [:])], traceState: "vendor=x,tp=debug")).decidingRule
                == "debug"
        )
        // An invalid header (upper-case key) yields no value.
        #expect(sim.decide(trace(spans: [("a", 0, 1, .unset, [:])], traceState: "TP=debug")).decision == .drop)
        #expect(sim.decide(trace(spans: [("a", 0, 1, .unset, [:])], flags: 0x101)).decidingRule == "sampled")
        #expect(sim.decide(simple(3)).decidingRule == "big")
        #expect(sim.decide(simple(2)).decision == .drop)
    }

    @Test func ottlSubsetAndWhatIsNotSimulated() throws {
        let set = try compiledSet(
            #"""
            keep retries when ottl span "attributes[\"retry.count\"] > 2 and resource.attributes[\"service.name\"] == \"payments\""
            keep exceptions when ottl event "name == \"exception\""
            keep odd when ottl span "IsMatch(name, \"^x\")"
            """#
        )
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        let payments: Attributes = ["service.name": .string("payments")]
        let retried = trace(resource: payments, spans: [("a", 0, 1, .unset, ["retry.count": .int(3)])])
        let verdict = sim.decide(retried, explain: true)
        #expect(verdict.decidingRule == "retries")
        #expect(verdict.votes.last?.vote == .notSimulated)
        #expect(verdict.unsimulated == ["odd"])
        #expect(verdict.votes.last?.detail?.contains("IsMatch") == true)
        // A string compared with a number is only unequal: false, no error.
        let text = trace(resource: payments, spans: [("a", 0, 1, .unset, ["retry.count": .string("3")])])
        #expect(sim.decide(text).decision == .drop)
        var withEvent = simple()
        withEvent.spans[0].events = [SpanEvent(name: "exception")]
        #expect(sim.decide(withEvent).decidingRule == "exceptions")
    }

    @Test func examplePoliciesDecideAsDocumented() throws {
        let set = try compiledSet(
            """
            drop health_checks when attr["http.route"] matches "/healthz|/readyz"
            keep errors when status == ERROR and service != "checkout"
            keep slow when duration >= 5s
            keep baseline sample 5%
            """
        )
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions(samplers: 3))
        let searchError = trace(resource: ["service.name": .string("search")], spans: [("a", 0, 10, .error, [:])])
        #expect(sim.decide(searchError).decidingRule == "errors")
        let checkoutError = trace(spans: [("a", 0, 10, .error, [:])])
        let verdict = sim.decide(checkoutError, explain: true)
        #expect(verdict.votes.first { $0.rule == "errors" }?.vote == .notSampled)
        #expect(verdict.votes.first { $0.rule == "errors" }?.detail?.contains("\"checkout\"") == true)
        let health = trace(spans: [("a", 0, 9000, .error, ["http.route": .string("/readyz")])])
        #expect(sim.decide(health).decidingRule == "health_checks")
        // The sampler is the ring's choice.
        #expect(verdict.sampler == sim.ring.endpointIndex(for: checkoutError.traceID))
    }
}

@Suite struct ReviewedSemanticsTests {
    @Test func ottlBooleansOrderAndMissingTraceStateKeysReadEmpty() throws {
        let set = try compiledSet(
            #"""
            keep ordered when ottl span "attributes[\"b\"] > false"
            keep blank when ottl span "trace_state[\"absent\"] == \"\""
            keep root when ottl span "parent_span_id.string == \"0000000000000000\""
            """#
        )
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        let verdict = sim.decide(trace(spans: [("a", 0, 1, .unset, ["b": .bool(true)])], traceState: "k=v"))
        #expect(verdict.voteValues == [.sampled, .sampled, .sampled])
    }

    @Test func ottlErrorsFollowTheErrorMode() throws {
        func decide(_ mode: String) throws -> Verdict {
            let set = try compiledSet(
                """
                sampler {
                    ottl_error_mode \(mode)
                }
                keep nested when ottl span "attributes[\\"s\\"][\\"k\\"] != \\"x\\""
                keep all
                """
            )
            var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
            return sim.decide(simple(attributes: ["s": .string("text")]), explain: true)
        }
        // Indexing a string fails in the collector: no vote under propagate, false under ignore.
        let propagate = try decide("propagate")
        #expect(propagate.voteValues == [.error, .sampled])
        #expect(propagate.votes[0].detail?.contains("does not support string indexing") == true)
        #expect(try decide("ignore").voteValues == [.notSampled, .sampled])
        // An invalid tracestate header is an error for the trace_state path.
        let set = try compiledSet(#"keep ts when ottl span "trace_state[\"tp\"] == \"x\"""# + "\n")
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        #expect(sim.decide(trace(spans: [("a", 0, 1, .unset, [:])], traceState: "1abc=x")).voteValues == [.error])
    }

    @Test func traceStateParsesAsOtelGo() {
        #expect(W3CTraceState.parse("a=1, b=2 ,,c=3")?.value(for: "b") == "2")  // keys trimmed left, values right
        #expect(W3CTraceState.parse("1abc=x") == nil)  // a simple key starts with a letter
        #expect(W3CTraceState.parse("1abc@vendor=x")?.value(for: "1abc@vendor") == "x")  // a tenant may start with a digit
        #expect(W3CTraceState.parse("a@1=x") == nil)  // a system id starts with a letter
        #expect(W3CTraceState.parse("t@abcdefghijklmnopq=x") == nil)  // system ids are at most 14 characters
        #expect(W3CTraceState.parse("a=1, ,b=2") == nil)  // a member of blanks has no `=`
        #expect(W3CTraceState.parse("a=1,a=2") == nil)
        #expect(W3CTraceState.parse("a= 1")?.value(for: "a") == " 1")
    }

    @Test func oversizedTracesAreDroppedBeforeAnyPolicy() throws {
        let set = try compiledSet(
            """
            sampler {
                max_trace_size 1KiB
            }
            keep everything
            """
        )
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        var big = simple(3)
        big.sizeBytes = 1025
        let verdict = sim.decide(big)
        #expect(verdict.decision == .drop)
        #expect(verdict.oversized)
        #expect(verdict.voteValues == [.notEvaluated])
        big.sizeBytes = 1024
        #expect(sim.decide(big).decision == .keep)
    }

    @Test func protobufSizeCountsWhatPdataWrites() {
        // One root span, no attributes: trace_id 18 + span_id 10 + empty parent_span_id 2 + empty status 2 =
        // 32 bytes; as field 2 of ScopeSpans 34, plus the empty scope 2 = 36; as field 2 of ResourceSpans
        // 38, plus the empty resource 2 = 40; as field 1 of TracesData 42.
        let trace = SimulatedTrace(traceID: TraceID(high: 1, low: 1), spans: [TraceSpan(startNanos: 0, endNanos: 0)])
        #expect(trace.sizeBytes == 42)
    }
}

@Suite struct RegexAndStringTests {
    /// Matches as the collector would: a full-match pattern (the compiler anchors `matches`).
    private func matches(_ pattern: String, _ text: String) -> Bool {
        CompiledPattern("^(?:" + pattern + ")$").search(text)
    }

    @Test func regexesFollowRE2() {
        // \d, \w, \s are ASCII in RE2.
        #expect(matches(#"\d+"#, "123"))
        #expect(!matches(#"\d+"#, "١٢٣"))
        #expect(!matches(#"\w+"#, "héllo"))
        #expect(matches(#"a\sb"#, "a b"))
        #expect(!matches(#"a\sb"#, "a\u{2003}b"))
        // `.` excludes only \n.
        #expect(matches("a.b", "a\rb"))
        #expect(matches("a.b", "a\u{2028}b"))
        #expect(!matches("a.b", "a\nb"))
        #expect(matches("(?s)a.b", "a\nb"))
        // RE2 spellings Swift writes differently.
        #expect(matches(#"\pL+"#, "héllo"))
        #expect(!matches(#"\PL"#, "x"))
        #expect(matches(#"[\pN]+"#, "42"))
        #expect(matches(#"\101"#, "A"))
        #expect(matches("[]a]+", "]a]"))
        #expect(matches("[^]a]", "b"))
        // `.` by code point, not by grapheme.
        #expect(matches("e.", "e\u{301}"))
    }

    @Test func exactStringsCompareBytes() throws {
        let composed = "caf\u{E9}"
        let decomposed = "cafe\u{301}"
        #expect(composed == decomposed)  // Swift: canonically equivalent
        #expect(ExactValues([composed]).contains(composed))
        #expect(!ExactValues([composed]).contains(decomposed))  // Go: different bytes
        let many = ExactValues((0..<20).map { "v\($0)" } + [composed])
        #expect(!many.contains(decomposed))
        #expect(many.contains("v7"))
    }

    @Test func aPatternThatCannotRunIsNotSimulated() {
        let set = PolicySet(policies: [
            Policy(
                name: "odd",
                kind: .stringAttribute(StringAttributeTest(key: "k", values: ["^(?:a{,2}(?<)$"], regex: true))
            )
        ])
        var sim = SamplingSimulation(policySet: set, options: SimulationOptions())
        let verdict = sim.decide(simple(attributes: ["k": .string("a")]), explain: true)
        #expect(verdict.voteValues == [.notSimulated])
        #expect(verdict.unsimulated == ["odd"])
    }
}

@Suite struct TraceAssemblerTests {
    @Test func releasesTracesWhenTheStreamPassesTheirDecisionTimeAndGrace() {
        var assembler = TraceAssembler(decisionWaitNanos: 10 * second, afterRootNanos: nil, graceNanos: 2 * second)
        let a = TraceID(high: 0, low: 1)
        let b = TraceID(high: 0, low: 2)
        func span(_ startSeconds: UInt64, _ endSeconds: UInt64) -> TraceSpan {
            TraceSpan(
                parentSpanID: [1, 2, 3, 4, 5, 6, 7, 8],
                startNanos: base + startSeconds * second,
                endNanos: base + endSeconds * second
            )
        }
        func batch(_ service: String, _ spans: [(TraceID, TraceSpan)]) -> SpanBatch {
            SpanBatch(resource: ["service.name": .string(service)], scope: InstrumentationScope(), spans: spans)
        }
        assembler.add(batch("x", [(a, span(0, 1))]))
        assembler.add(batch("y", [(a, span(0, 2)), (b, span(5, 6))]))
        #expect(assembler.releaseDue().isEmpty)
        #expect(assembler.inFlight == 2)
        // The clock reaches 12 s: trace a is decided at 11 s but the 2 s grace has not passed.
        assembler.add(batch("x", [(b, span(5, 12))]))
        #expect(assembler.releaseDue().isEmpty)
        // At 13 s it has: a is released (decided at 11 s), b (decided at 16 s) is not.
        assembler.add(batch("x", [(b, span(5, 13))]))
        let out = assembler.releaseDue()
        #expect(out.map(\.trace.traceID) == [a])
        #expect(out.first?.trace.spans.count == 2)
        #expect(out.first?.trace.resources.count == 2)
        #expect(out.first?.decisionTime == base + 11 * second)
        // A span for a decided trace is late.
        assembler.add(batch("x", [(a, span(3, 13))]))
        #expect(assembler.lateSpans == 1)
        let rest = assembler.finish()
        #expect(rest.map(\.trace.traceID) == [b])
        #expect(rest.first?.trace.spans.count == 3)
        #expect(rest.first?.trace.sizeBytes ?? 0 > 0)
    }

    @Test func aLongTraceDoesNotCutShortTheTracesAfterIt() {
        // A trace backend's export: whole traces one after the other, a 20 s trace first, each span in a
        // document of its own. The 30 s grace keeps the next trace open until its spans are in.
        var assembler = TraceAssembler(decisionWaitNanos: 5 * second, afterRootNanos: nil)
        let long = TraceID(high: 1, low: 1)
        let short = TraceID(high: 2, low: 2)
        let root = TraceSpan(startNanos: base, endNanos: base + 20 * second)
        assembler.add(SpanBatch(resource: [:], scope: InstrumentationScope(), spans: [(long, root)]))
        #expect(assembler.releaseDue().isEmpty)
        let early = TraceSpan(parentSpanID: [1], startNanos: base + second, endNanos: base + 2 * second)
        let later = TraceSpan(parentSpanID: [1], startNanos: base + second, endNanos: base + 3 * second)
        assembler.add(SpanBatch(resource: [:], scope: InstrumentationScope(), spans: [(short, early)]))
        #expect(assembler.releaseDue().isEmpty)
        assembler.add(SpanBatch(resource: [:], scope: InstrumentationScope(), spans: [(short, later)]))
        #expect(assembler.releaseDue().isEmpty)
        #expect(assembler.lateSpans == 0)
        // Decided in decision order: the short trace (at 7 s) before the long one (at 25 s).
        let all = assembler.finish()
        #expect(all.map(\.trace.traceID) == [short, long])
        #expect(all.first?.trace.spans.count == 2)
        let expectedTimes: [UInt64] = [base + 7 * second, base + 25 * second]
        #expect(all.map(\.decisionTime) == expectedTimes)
    }

    @Test func decidedTracesAreForgottenAfterTheMemoryWindow() {
        var assembler = TraceAssembler(decisionWaitNanos: second, afterRootNanos: nil, graceNanos: 0)
        assembler.memoryNanos = 60 * second
        let a = TraceID(high: 3, low: 3)
        let other = TraceID(high: 4, low: 4)
        func add(_ id: TraceID, at seconds: UInt64) {
            let span = TraceSpan(
                parentSpanID: [1],
                startNanos: base + seconds * second,
                endNanos: base + seconds * second
            )
            assembler.add(SpanBatch(resource: [:], scope: InstrumentationScope(), spans: [(id, span)]))
        }
        add(a, at: 0)
        add(other, at: 2)
        #expect(assembler.releaseDue().map(\.trace.traceID) == [a])
        add(a, at: 30)  // late: a was decided at 1 s
        #expect(assembler.lateSpans == 1)
        add(other, at: 120)
        _ = assembler.releaseDue()
        // `other` was due at 3 s: its span arriving at 120 s is not part of the decision.
        #expect(assembler.lateSpans == 2)
        add(a, at: 121)  // 2 minutes on, a is forgotten: a new trace, as after a decision cache evicts it
        #expect(assembler.lateSpans == 2)
        #expect(assembler.finish().map(\.trace.traceID).contains(a))
    }

    @Test func spansEndingAfterTheDecisionAreLate() {
        // decision_wait 10 s: a child ends at 1 s, the root at 15 s. The collector decides at the tick 10 s
        // after the child arrived, before the root is in.
        var assembler = TraceAssembler(decisionWaitNanos: 10 * second, afterRootNanos: nil)
        let id = TraceID(high: 5, low: 5)
        let child = TraceSpan(parentSpanID: [1], startNanos: base, endNanos: base + second)
        let root = TraceSpan(startNanos: base, endNanos: base + 15 * second)
        assembler.add(SpanBatch(resource: [:], scope: InstrumentationScope(), spans: [(id, child), (id, root)]))
        let out = assembler.finish()
        #expect(out.first?.decisionTime == base + 11 * second)
        #expect(out.first?.trace.spans.count == 1)
        #expect(assembler.lateSpans == 1)
    }

    @Test func rootSpanBringsTheDecisionForward() {
        var assembler = TraceAssembler(decisionWaitNanos: 30 * second, afterRootNanos: 5 * second)
        let a = TraceID(high: 7, low: 7)
        let child = TraceSpan(parentSpanID: [1], startNanos: base, endNanos: base + second)
        let root = TraceSpan(startNanos: base, endNanos: base + 2 * second)
        assembler.add(SpanBatch(resource: [:], scope: InstrumentationScope(), spans: [(a, child), (a, root)]))
        let out = assembler.finish()
        #expect(out.first?.decisionTime == base + 7 * second)
    }
}
