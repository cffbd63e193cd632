/// How the simulated collectors behave where releases differ.
public struct SimulationOptions: Sendable, Hashable {
    /// Sampler replicas behind the load balancers; fleet-wide limits are divided among them as rendered.
    public var samplers: Int
    /// Ring entries of the samplers; when empty, `samplers` synthetic entries are used.
    public var samplerEndpoints: [String]
    /// `rate_limiting` is a token bucket (v0.153 and later) rather than a fixed one-second window.
    public var tokenBucketSpanLimits: Bool
    /// A top-level `invert_match` gives the deprecated inverted decisions (before v0.144).
    public var invertedDecisions: Bool

    /// Creates options for a collector release, `minorVersion` of `0.x` (v0.150 by default).
    public init(samplers: Int = 1, samplerEndpoints: [String] = [], collectorMinorVersion minor: Int = 150) {
        self.samplers = max(1, samplers)
        self.samplerEndpoints = samplerEndpoints
        self.tokenBucketSpanLimits = minor >= 153
        self.invertedDecisions = minor < 144
    }
}

/// One policy's answer, in the collector's terms.
public enum Vote: String, Sendable, Hashable, Codable {
    case sampled
    case notSampled = "not_sampled"
    case invertSampled = "invert_sampled"
    case invertNotSampled = "invert_not_sampled"
    case dropped
    /// The policy failed and casts no vote (an OTTL error under `propagate`).
    case error
    /// Outside what the simulator evaluates (see ``PolicyVote/detail``); counted as no vote.
    case notSimulated = "not_simulated"
    /// Not evaluated: an earlier `drop` decided, or `sample_on_first_match` stopped the loop.
    case notEvaluated = "not_evaluated"
}

/// The final decision for a trace.
public enum TraceDecision: String, Sendable, Hashable, Codable {
    case keep
    case drop
}

/// What one top-level policy voted, and why.
public struct PolicyVote: Sendable, Hashable {
    /// The rendered policy name (`rule`, or `rule/1`, `rule/2` after an `or`).
    public var policy: String
    /// The source rule.
    public var rule: String
    /// Its vote.
    public var vote: Vote
    /// For a policy that did not match: the first condition that failed and the value it saw; for one that
    /// matched: what matched. Only filled when explaining.
    public var detail: String?
}

/// The simulated decision for one trace.
public struct Verdict: Sendable, Hashable {
    /// The trace.
    public var traceID: TraceID
    /// Keep or drop.
    public var decision: TraceDecision
    /// The position in ``voteValues`` of the policy that decided, if any.
    public var decidingIndex: Int?
    /// The policy that decided (the first with the deciding vote), if any.
    public var decidingPolicy: String?
    /// Its source rule.
    public var decidingRule: String?
    /// Every top-level policy's vote, drops first, as the collector evaluates them.
    public var voteValues: [Vote]
    /// The top-level policies' names, in the same order (shared by every verdict of a simulation).
    public let policyNames: [String]
    /// Their source rules, in the same order.
    public let ruleNames: [String]
    /// Why each policy voted as it did, in the same order; empty unless the decision was explained.
    public var details: [String?]
    /// Top-level policies that could not be simulated: the decision assumes they cast no vote.
    public var unsimulated: [String]
    /// The sampler replica (index into the ring's sorted endpoints) that decided.
    public var sampler: Int
    /// Spans in the trace.
    public var spanCount: Int
    /// Trace size in bytes.
    public var sizeBytes: Int64
    /// Dropped before any policy ran because the trace outgrew `maximum_trace_size_bytes`.
    public var oversized = false

    /// Every top-level policy's vote with its names and explanation.
    public var votes: [PolicyVote] {
        self.voteValues.indices.map { index in
            PolicyVote(
                policy: self.policyNames[index],
                rule: self.ruleNames[index],
                vote: self.voteValues[index],
                detail: self.details.isEmpty ? nil : self.details[index]
            )
        }
    }
}

/// The tail-sampling decision of one sampler replica, with the state its rate limiters and budgets keep
/// between traces. Evaluates the IR with the values the renderer writes for the replica (per-replica
/// shares, the latency window's rendered bounds) and the collector's semantics (tailsampling.md §1.3–§1.6).
public struct SamplerEvaluator {
    let plan: EvaluationPlan
    var state: LimiterState

    /// Creates a replica's evaluator.
    public init(policySet: PolicySet, options: SimulationOptions) {
        self.plan = EvaluationPlan(policySet: policySet, options: options)
        self.state = LimiterState(plan: self.plan)
    }

    init(plan: EvaluationPlan) {
        self.plan = plan
        self.state = LimiterState(plan: plan)
    }

    /// Decides a trace at `nowNanos` (Unix nanoseconds of the decision, which drives the limiters).
    public mutating func decide(_ trace: SimulatedTrace, nowNanos: UInt64, explain: Bool = false, sampler: Int = 0)
        -> Verdict
    {
        if let limit = self.plan.settings.maximumTraceSizeBytes, trace.sizeBytes > limit {
            // The collector drops a trace that grows past the limit as its spans arrive; no policy sees it.
            let count = self.plan.topLevel.count
            return Verdict(
                traceID: trace.traceID,
                decision: .drop,
                decidingIndex: nil,
                decidingPolicy: nil,
                decidingRule: nil,
                voteValues: Array(repeating: .notEvaluated, count: count),
                policyNames: self.plan.policyNames,
                ruleNames: self.plan.ruleNames,
                details: explain
                    ? Array(
                        repeating: "trace of \(trace.sizeBytes) bytes is over maximum_trace_size_bytes \(limit)",
                        count: count
                    ) : [],
                unsimulated: [],
                sampler: sampler,
                spanCount: trace.spans.count,
                sizeBytes: trace.sizeBytes,
                oversized: true
            )
        }
        var context = EvaluationContext(trace: trace, now: nowNanos, explain: explain)
        self.state.lookedUp = false
        if !self.state.memo.isEmpty {
            for index in self.state.memo.indices { self.state.memo[index] = nil }
        }
        let count = self.plan.topLevel.count
        var votes = [Vote](repeating: .notEvaluated, count: count)
        var details: [String?] = explain ? Array(repeating: nil, count: count) : []
        var firstByVote = VoteIndex()
        var stopped = false
        var unsimulated: [String] = []
        for index in 0..<count where !stopped {
            let outcome = self.evaluate(self.plan.topLevel[index], &context)
            votes[index] = outcome.vote
            if explain { details[index] = outcome.detail }
            switch outcome.vote {
            case .error, .notEvaluated: continue
            case .notSimulated:
                unsimulated.append(self.plan.policyNames[index])
                continue
            default: break
            }
            firstByVote.record(outcome.vote, index)
            if outcome.vote == .dropped { stopped = true }
            if outcome.vote == .sampled, self.plan.sampleOnFirstMatch { stopped = true }
        }
        let decision: TraceDecision
        let deciding: Int?
        if let index = firstByVote[.dropped] {
            (decision, deciding) = (.drop, index)
        } else if let index = firstByVote[.invertNotSampled] {
            (decision, deciding) = (.drop, index)
        } else if let index = firstByVote[.sampled] {
            (decision, deciding) = (.keep, index)
        } else if let index = firstByVote[.invertSampled], firstByVote[.notSampled] == nil {
            (decision, deciding) = (.keep, index)
        } else {
            (decision, deciding) = (.drop, nil)
        }
        return Verdict(
            traceID: trace.traceID,
            decision: decision,
            decidingIndex: deciding,
            decidingPolicy: deciding.map { self.plan.policyNames[$0] },
            decidingRule: deciding.map { self.plan.ruleNames[$0] },
            voteValues: votes,
            policyNames: self.plan.policyNames,
            ruleNames: self.plan.ruleNames,
            details: details,
            unsimulated: unsimulated,
            sampler: sampler,
            spanCount: trace.spans.count,
            sizeBytes: trace.sizeBytes
        )
    }

    // MARK: Attribute lookups

    /// Each attribute key's values on resources and spans.
    struct KeyValues {
        var resource: [AttributeValue] = []
        var span: [AttributeValue] = []
    }

    /// The values of a key the policies read, for the trace being decided: gathered in one pass over every
    /// resource and span attribute the first time a policy asks (keys matched by length, then bytes; no
    /// hashing per attribute), into buffers reused from trace to trace.
    private mutating func values(_ keyID: Int, _ trace: SimulatedTrace) -> KeyValues {
        if !self.state.lookedUp {
            self.state.lookedUp = true
            for index in self.state.lookups.indices {
                self.state.lookups[index].resource.removeAll(keepingCapacity: true)
                self.state.lookups[index].span.removeAll(keepingCapacity: true)
            }
            let keys = self.plan.keys
            let byLength = self.plan.keysByLength
            self.plan.keyByLength.withUnsafeBufferPointer { single in
                // The key number an attribute key may be: the only key of its length (-1: none; -2: several).
                func candidate(_ key: String) -> Int? {
                    let length = key.utf8.count
                    guard length < single.count else { return nil }
                    let id = Int(single[length])
                    if id >= 0 { return keys[id] == key ? id : nil }
                    if id == -1 { return nil }
                    return byLength[length].first { keys[$0] == key }
                }
                for resource in trace.resources {
                    for index in resource.indices {
                        if let id = candidate(resource.keys[index]) {
                            self.state.lookups[id].resource.append(resource.values[index])
                        }
                    }
                }
                trace.spans.withUnsafeBufferPointer { spans in
                    for spanIndex in spans.indices {
                        let attributes = spans[spanIndex].attributes
                        for index in attributes.indices {
                            if let id = candidate(attributes.keys[index]) {
                                self.state.lookups[id].span.append(attributes.values[index])
                            }
                        }
                    }
                }
            }
        }
        return self.state.lookups[keyID]
    }

    // MARK: Evaluation

    struct Outcome {
        var vote: Vote
        var detail: String?
    }

    private mutating func evaluate(_ node: EvaluationPlan.Node, _ context: inout EvaluationContext) -> Outcome {
        switch node {
        case .memo(let id, let inner):
            if let known = self.state.memo[id] { return known }
            let outcome = self.evaluate(inner, &context)
            self.state.memo[id] = outcome
            return outcome

        case .always:
            return Outcome(vote: .sampled, detail: context.explain ? "always" : nil)

        case .latency(let threshold, let upper, let label):
            // Walk spans in arrival order, tracking the earliest start and latest end; the first span at which
            // the running duration qualifies samples the context.trace.
            var minStart: UInt64 = 0
            var maxEnd: UInt64 = 0
            var duration: Int64 = 0
            let hit = context.trace.spans.withUnsafeBufferPointer { spans in
                for index in spans.indices {
                    let start = spans[index].startNanos
                    let end = spans[index].endNanos
                    if minStart == 0 || start < minStart { minStart = start }
                    if maxEnd == 0 || end > maxEnd { maxEnd = end }
                    duration = Self.milliseconds(from: minStart, to: maxEnd)
                    if upper == 0 ? duration >= threshold : (threshold < duration && duration <= upper) { return true }
                }
                return false
            }
            if hit {
                return Outcome(
                    vote: .sampled,
                    detail: context.explain ? "\(self.plan.labels[label]): \(duration) ms" : nil
                )
            }
            return Outcome(
                vote: .notSampled,
                detail: context.explain ? "\(self.plan.labels[label]): saw \(duration) ms" : nil
            )

        case .numeric(let keyID, let key, let minimum, let maximum, let invert, let label):
            let values = self.values(keyID, context.trace)
            let inRange = { (value: AttributeValue) in
                let number = value.collectorInt
                return number >= minimum && number <= maximum
            }
            let hit = values.resource.contains(where: inRange) || values.span.contains(where: inRange)
            return self.attributeOutcome(hit: hit, invert: invert, key: key, label: label, &context)

        case .boolean(let keyID, let key, let expected, let invert, let label):
            let values = self.values(keyID, context.trace)
            let hit =
                values.resource.contains { $0.collectorBool == expected }
                || values.span.contains { $0.collectorBool == expected }
            return self.attributeOutcome(hit: hit, invert: invert, key: key, label: label, &context)

        case .string(let test):
            if let unsupported = test.unsupported {
                return Outcome(vote: .notSimulated, detail: "\(self.plan.labels[test.label]): \(unsupported)")
            }
            let values = self.values(test.keyID, context.trace)
            var hit = false
            // Resource values are tested as they are; empty span values are skipped (string_tag_filter.go).
            for value in values.resource where self.matches(value, test, skipEmpty: false) {
                hit = true
                break
            }
            if !hit {
                for value in values.span where self.matches(value, test, skipEmpty: true) {
                    hit = true
                    break
                }
            }
            return self.attributeOutcome(hit: hit, invert: test.invert, key: test.key, label: test.label, &context)

        case .probabilistic(let saltState, let threshold, let label):
            let hash = CollectorHash.fnv1a64(saltState: saltState, traceID: context.trace.traceID)
            let hit = hash <= threshold
            return Outcome(
                vote: hit ? .sampled : .notSampled,
                detail: context.explain
                    ? "\(self.plan.labels[label]): hash \(Self.hex64(hash)) \(hit ? "<=" : ">") threshold \(Self.hex64(threshold))"
                    : nil
            )

        case .status(let mask, let label):
            let hit = context.trace.spans.withUnsafeBufferPointer { spans in
                spans.indices.contains { mask & spans[$0].status.bit != 0 }
            }
            return Outcome(
                vote: hit ? .sampled : .notSampled,
                detail: context.explain ? "\(self.plan.labels[label]): saw \(Self.statusSummary(context.trace))" : nil
            )

        case .spanCount(let minimum, let maximum, let label):
            let count = Int64(context.trace.spans.count)
            let hit = maximum == 0 ? count >= minimum : (count >= minimum && count <= maximum)
            return Outcome(
                vote: hit ? .sampled : .notSampled,
                detail: context.explain ? "\(self.plan.labels[label]): \(count) spans" : nil
            )

        case .traceState(let key, let values, let label):
            var seen: [String] = []
            var hit = false
            for state in context.traceStates() {
                guard let value = state.value(for: key) else { continue }
                if values.contains(value) {
                    hit = true
                    break
                }
                if context.explain, seen.count < 3, !seen.contains(value) { seen.append(value) }
            }
            let saw =
                seen.isEmpty
                ? "no `\(key)` in any span's tracestate" : "saw \(seen.map { "\"\($0)\"" }.joined(separator: ", "))"
            return Outcome(
                vote: hit ? .sampled : .notSampled,
                detail: context.explain ? "\(self.plan.labels[label]): \(hit ? "matched" : saw)" : nil
            )

        case .traceFlags(let label):
            let hit = context.trace.spans.withUnsafeBufferPointer { spans in
                spans.indices.contains { spans[$0].flags & 0x01 != 0 }
            }
            return Outcome(
                vote: hit ? .sampled : .notSampled,
                detail: context.explain
                    ? "\(self.plan.labels[label]): \(hit ? "a span has the sampled flag" : "no span has the sampled flag")"
                    : nil
            )

        case .ottl(let spanConditions, let eventConditions, let mode, let unsupported, let label):
            if let unsupported {
                return Outcome(vote: .notSimulated, detail: "\(self.plan.labels[label]): \(unsupported)")
            }
            // A failing condition makes the policy error (no vote) under `propagate`; under `ignore` and
            // `silent` it reads as false.
            func holds(_ condition: OTTLCondition, _ span: TraceSpan, _ event: SpanEvent?) throws(OTTLCondition
                .EvaluationError) -> Bool
            {
                do throws(OTTLCondition.EvaluationError) {
                    return try condition.evaluate(span: span, event: event, in: context.trace)
                } catch {
                    if mode == .propagate { throw error }
                    return false
                }
            }
            do throws(OTTLCondition.EvaluationError) {
                for span in context.trace.spans {
                    for condition in spanConditions where try holds(condition, span, nil) {
                        return Outcome(
                            vote: .sampled,
                            detail: context.explain ? "\(self.plan.labels[label]): true for span `\(span.name)`" : nil
                        )
                    }
                    for event in span.events {
                        for condition in eventConditions where try holds(condition, span, event) {
                            return Outcome(
                                vote: .sampled,
                                detail: context.explain
                                    ? "\(self.plan.labels[label]): true for event `\(event.name)` of `\(span.name)`"
                                    : nil
                            )
                        }
                    }
                }
            } catch {
                return Outcome(vote: .error, detail: "\(self.plan.labels[label]): \(error.message)")
            }
            return Outcome(
                vote: .notSampled,
                detail: context.explain ? "\(self.plan.labels[label]): false for every span" : nil
            )

        case .spanLimit(let id, let perSecond, let burst, let label):
            let count = Int64(context.trace.spans.count)
            let hit: Bool
            if let burst {
                hit = self.state.buckets[id].allow(
                    Double(count),
                    burst: Double(burst),
                    rate: Double(perSecond),
                    now: context.now
                )
            } else {
                hit = self.state.windows[id].admit(count, strictlyBelow: perSecond, now: context.now)
            }
            return Outcome(
                vote: hit ? .sampled : .notSampled,
                detail: context.explain
                    ? "\(self.plan.labels[label]): \(hit ? "within" : "over") the limit with \(count) spans" : nil
            )

        case .byteLimit(let id, let perSecond, let burst, let label):
            let hit = self.state.buckets[id].allow(
                Double(context.trace.sizeBytes),
                burst: Double(burst),
                rate: Double(perSecond),
                now: context.now
            )
            return Outcome(
                vote: hit ? .sampled : .notSampled,
                detail: context.explain
                    ? "\(self.plan.labels[label]): \(hit ? "within" : "over") the limit with \(context.trace.sizeBytes) bytes"
                    : nil
            )

        case .and(let members):
            return self.allMatch(members, &context)
                ?? Outcome(vote: .sampled, detail: context.allDetails)

        case .drop(let members):
            return self.allMatch(members, &context)
                ?? Outcome(vote: .dropped, detail: context.allDetails)

        case .not(let member):
            let outcome = self.evaluate(member, &context)
            switch outcome.vote {
            case .sampled: return Outcome(vote: .notSampled, detail: outcome.detail.map { "not (\($0))" })
            case .notSampled: return Outcome(vote: .sampled, detail: outcome.detail.map { "not (\($0))" })
            default: return outcome
            }

        case .composite(let id, let total, let members):
            let second = context.now / 1_000_000_000
            if self.state.composites[id].second != second {
                self.state.composites[id].second = second
                for index in self.state.composites[id].sampled.indices { self.state.composites[id].sampled[index] = 0 }
            }
            let count = Int64(context.trace.spans.count)
            for (index, member) in members.enumerated() {
                let outcome = self.evaluate(member.node, &context)
                if outcome.vote == .error || outcome.vote == .notSimulated { return outcome }
                guard outcome.vote == .sampled || outcome.vote == .invertSampled else { continue }
                let after = self.state.composites[id].sampled[index] + count
                if after <= member.allocated, after <= total {
                    self.state.composites[id].sampled[index] = after
                    return Outcome(
                        vote: .sampled,
                        detail: context.explain
                            ? "`\(member.name)` matched and fit its \(member.allocated) spans/s" : nil
                    )
                }
                return Outcome(
                    vote: .notSampled,
                    detail: context.explain
                        ? "`\(member.name)` matched but its share is spent: \(self.state.composites[id].sampled[index]) + \(count) > \(member.allocated) spans this second"
                        : nil
                )
            }
            return Outcome(vote: .notSampled, detail: context.explain ? "no member matched" : nil)
        }
    }

    /// `and` and `drop`: members in order; the first that fails (or errors) ends the test. `nil`: all passed.
    private mutating func allMatch(_ members: [EvaluationPlan.Node], _ context: inout EvaluationContext) -> Outcome? {
        context.matchedDetails.removeAll()
        for member in members {
            let outcome = self.evaluate(member, &context)
            if context.explain, let detail = outcome.detail { context.matchedDetails.append(detail) }
            switch outcome.vote {
            case .error, .notSimulated: return outcome
            case .notSampled, .invertNotSampled: return Outcome(vote: .notSampled, detail: outcome.detail)
            default: continue
            }
        }
        return nil
    }

    private func attributeOutcome(
        hit: Bool,
        invert: Bool,
        key: String,
        label: Int,
        _ context: inout EvaluationContext
    )
        -> Outcome
    {
        let vote: Vote
        if invert {
            // With the inverted decisions off (v0.144 and later) an inverted test gives plain votes.
            vote =
                hit
                ? (self.plan.invertedDecisions ? .invertNotSampled : .notSampled)
                : (self.plan.invertedDecisions ? .invertSampled : .sampled)
        } else {
            vote = hit ? .sampled : .notSampled
        }
        guard context.explain else { return Outcome(vote: vote, detail: nil) }
        return Outcome(vote: vote, detail: "\(self.plan.labels[label]): saw \(Self.observed(context.trace, key: key))")
    }

    /// Whether a value matches a string test, read as `Value.Str()` (another type reads as "").
    private mutating func matches(_ value: AttributeValue, _ test: StringTest, skipEmpty: Bool) -> Bool {
        guard case .string(let text) = value else { return skipEmpty ? false : self.matches("", test) }
        if skipEmpty, text.isEmpty { return false }
        return self.matches(text, test)
    }

    private mutating func matches(_ text: String, _ test: StringTest) -> Bool {
        if test.patterns.isEmpty { return test.exact.contains(text) }
        if let cached = self.state.regexCache[test.id][text] { return cached }
        let result = test.patterns.contains { $0.search(text) }
        if self.state.regexCache[test.id].count >= 65_536 {
            self.state.regexCache[test.id].removeAll(keepingCapacity: true)
        }
        self.state.regexCache[test.id][text] = result
        return result
    }

    /// `duration.Milliseconds()` of `end - start`, truncated toward zero.
    static func milliseconds(from start: UInt64, to end: UInt64) -> Int64 {
        let nanos = end >= start ? Int64(clamping: end - start) : -Int64(clamping: start - end)
        return nanos / 1_000_000
    }

    static func hex64(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
    }

    static func statusSummary(_ trace: SimulatedTrace) -> String {
        var counts: [StatusCode: Int] = [:]
        for span in trace.spans { counts[span.status, default: 0] += 1 }
        return StatusCode.allCases.compactMap { code in counts[code].map { "\(code.rawValue)×\($0)" } }
            .joined(separator: ", ")
    }

    /// The distinct values of a key on resources and spans, for explanations.
    static func observed(_ trace: SimulatedTrace, key: String) -> String {
        var values: [String] = []
        var total = 0
        for value in trace.resources.compactMap({ $0[key] }) + trace.spans.compactMap({ $0.attributes[key] }) {
            let shown = value.display
            if !values.contains(shown) {
                total += 1
                if values.count < 3 { values.append(shown) }
            }
        }
        if values.isEmpty { return "no `\(key)` on any resource or span" }
        return values.joined(separator: ", ") + (total > values.count ? " and \(total - values.count) more" : "")
    }
}

/// What one evaluation needs besides the policies.
struct EvaluationContext {
    let trace: SimulatedTrace
    let now: UInt64
    let explain: Bool
    private var parsedTraceStates: [W3CTraceState]?

    init(trace: SimulatedTrace, now: UInt64, explain: Bool) {
        self.trace = trace
        self.now = now
        self.explain = explain
    }

    /// Every span's valid `tracestate`, parsed once per trace (an invalid header yields nothing).
    mutating func traceStates() -> [W3CTraceState] {
        if let parsed = self.parsedTraceStates { return parsed }
        var states: [W3CTraceState] = []
        var last: (String, W3CTraceState?)?
        for span in self.trace.spans where !span.traceState.isEmpty {
            if let last, last.0 == span.traceState {
                if let state = last.1 { states.append(state) }
                continue
            }
            let state = W3CTraceState.parse(span.traceState)
            last = (span.traceState, state)
            if let state { states.append(state) }
        }
        self.parsedTraceStates = states
        return states
    }
    /// What each member of the `and` or `drop` being evaluated matched, for its explanation.
    var matchedDetails: [String] = []

    var allDetails: String? { self.explain ? self.matchedDetails.joined(separator: "; ") : nil }
}

/// The first top-level policy that cast each vote.
struct VoteIndex {
    private var first: [Int] = [-1, -1, -1, -1, -1]

    private static func slot(_ vote: Vote) -> Int? {
        switch vote {
        case .sampled: 0
        case .notSampled: 1
        case .invertSampled: 2
        case .invertNotSampled: 3
        case .dropped: 4
        case .error, .notSimulated, .notEvaluated: nil
        }
    }

    mutating func record(_ vote: Vote, _ index: Int) {
        if let slot = Self.slot(vote), self.first[slot] < 0 { self.first[slot] = index }
    }

    subscript(_ vote: Vote) -> Int? {
        guard let slot = Self.slot(vote), self.first[slot] >= 0 else { return nil }
        return self.first[slot]
    }
}

/// The mutable state of one replica's stateful policies.
struct LimiterState {
    var windows: [FixedWindow]
    var buckets: [TokenBucket]
    var composites: [CompositeWindow]
    var regexCache: [[String: Bool]]
    /// Attribute values of the trace being decided, by key number; reused between traces.
    var lookups: [SamplerEvaluator.KeyValues]
    var lookedUp = false
    /// Outcomes of shared tests for the trace being decided.
    var memo: [SamplerEvaluator.Outcome?]

    init(plan: EvaluationPlan) {
        self.lookups = Array(repeating: SamplerEvaluator.KeyValues(), count: plan.keys.count)
        self.memo = Array(repeating: nil, count: plan.memoCount)
        self.windows = Array(repeating: FixedWindow(), count: plan.statefulCount)
        self.buckets = Array(repeating: TokenBucket(), count: plan.statefulCount)
        self.composites = plan.compositeSizes.map { CompositeWindow(sampled: Array(repeating: 0, count: $0)) }
        self.regexCache = Array(repeating: [:], count: plan.regexCount)
    }
}

/// The legacy `rate_limiting` window: spans counted per wall-clock second, a trace admitted while
/// `spans this second + trace spans < spans_per_second`.
struct FixedWindow {
    var second: UInt64 = .max
    var spans: Int64 = 0

    mutating func admit(_ count: Int64, strictlyBelow limit: Int64, now: UInt64) -> Bool {
        let second = now / 1_000_000_000
        if second != self.second {
            self.second = second
            self.spans = 0
        }
        guard self.spans + count < limit else { return false }
        self.spans += count
        return true
    }
}

/// `golang.org/x/time/rate`'s limiter as `AllowN` uses it: full at the start, refilled continuously at the
/// rate up to the burst, and `n` admitted only if the tokens are there now (no reservation into the future).
struct TokenBucket {
    var tokens: Double = .nan
    var last: UInt64 = 0

    mutating func allow(_ n: Double, burst: Double, rate: Double, now: UInt64) -> Bool {
        var tokens = burst
        if !self.tokens.isNaN {
            let elapsed = now > self.last ? Double(now - self.last) / 1e9 : 0
            tokens = min(burst, self.tokens + elapsed * rate)
        }
        let left = tokens - n
        // The wait for a deficit is truncated to whole nanoseconds: a deficit worth under 1 ns passes.
        let wait = left < 0 ? (-left / rate * 1e9).rounded(.towardZero) : 0
        guard n <= burst, wait <= 0 else { return false }
        self.tokens = left
        self.last = max(now, self.last)
        return true
    }
}

/// A budget's per-member counters for the current second.
struct CompositeWindow {
    var second: UInt64 = .max
    var sampled: [Int64]
}
