import Foundation
import PolicyEngine

/// What a policy set keeps of a set of traces, per rule and in total.
public struct Estimate: Sendable, Hashable, Codable {
    /// One source rule (the policies an `or` split it into are counted together).
    public struct Rule: Sendable, Hashable, Codable {
        /// The rule name.
        public var rule: String
        /// `keep` or `drop`.
        public var action: String
        /// Traces the rule voted for (to keep, or to drop for a drop rule), whatever the final decision.
        public var matched: Int = 0
        /// Traces the rule decided: kept by it (or dropped by it, for a drop rule).
        public var decided: Int = 0
        /// Spans of the traces it decided.
        public var decidedSpans: Int = 0
        /// Bytes of the traces it decided.
        public var decidedBytes: Int64 = 0
    }

    /// Traces decided.
    public var traces = 0
    /// Their spans.
    public var spans = 0
    /// Their bytes (OTLP protobuf size).
    public var bytes: Int64 = 0
    /// Traces kept.
    public var keptTraces = 0
    /// Spans kept.
    public var keptSpans = 0
    /// Bytes kept.
    public var keptBytes: Int64 = 0
    /// Per rule, in evaluation order (drop rules first).
    public var rules: [Rule] = []
    /// Traces whose decision assumed that a rule outside the simulated OTTL subset did not vote.
    public var tracesWithUnsimulatedRules = 0
    /// Sampler replicas simulated.
    public var samplers = 1
    private var rowByPosition: [Int] = []

    private enum CodingKeys: String, CodingKey {
        case traces, spans, bytes, keptTraces, keptSpans, keptBytes, rules, tracesWithUnsimulatedRules, samplers
    }

    /// An empty estimate for a simulation's rules.
    public init(for simulation: SamplingSimulation) {
        self.rules = simulation.rules.map { Rule(rule: $0.rule, action: $0.action.rawValue) }
        self.samplers = simulation.ring.endpoints.count
    }

    /// Counts one verdict.
    public mutating func add(_ verdict: Verdict) {
        self.traces += 1
        self.spans += verdict.spanCount
        self.bytes += verdict.sizeBytes
        if verdict.decision == .keep {
            self.keptTraces += 1
            self.keptSpans += verdict.spanCount
            self.keptBytes += verdict.sizeBytes
        }
        if !verdict.unsimulated.isEmpty { self.tracesWithUnsimulatedRules += 1 }
        // Map each policy position onto its rule's row once: every verdict of a simulation has the same policies.
        if self.rowByPosition.count != verdict.ruleNames.count {
            self.rowByPosition = verdict.ruleNames.map { rule in self.rules.firstIndex { $0.rule == rule } ?? -1 }
        }
        var counted = -1
        for (index, vote) in verdict.voteValues.enumerated()
        where vote == .sampled || vote == .invertSampled || vote == .dropped {
            let row = self.rowByPosition[index]
            // A rule split into several policies (`rule/1`, `rule/2`) counts once per trace.
            guard row >= 0, row != counted else { continue }
            counted = row
            self.rules[row].matched += 1
        }
        if let index = verdict.decidingIndex, index < self.rowByPosition.count, self.rowByPosition[index] >= 0 {
            let row = self.rowByPosition[index]
            self.rules[row].decided += 1
            self.rules[row].decidedSpans += verdict.spanCount
            self.rules[row].decidedBytes += verdict.sizeBytes
        }
    }

    /// Percentage of `part` in `whole`.
    static func percent(_ part: some BinaryInteger, _ whole: some BinaryInteger) -> Double {
        whole == 0 ? 0 : Double(part) * 100 / Double(whole)
    }
}

/// Runs one or two policy sets over the same traces.
public struct Estimator {
    var simulations: [SamplingSimulation]
    /// The estimates, in the order the sets were given.
    public private(set) var estimates: [Estimate]

    /// Creates an estimator for the sets (the first is the one under study, the second what it is compared with).
    public init(_ sets: [PolicySet], options: SimulationOptions) {
        let simulations = sets.map { SamplingSimulation(policySet: $0, options: options) }
        self.simulations = simulations
        self.estimates = simulations.map(Estimate.init(for:))
    }

    /// An assembler with the decision timing of the first set (the one under study).
    public func assembler() -> TraceAssembler {
        TraceAssembler(for: self.simulations[0])
    }

    /// Decides a trace under every set, at `decisionTime` (from the trace assembler) or, without it, at the
    /// time each set's own decision wait gives.
    public mutating func add(_ trace: SimulatedTrace, decisionTime: UInt64? = nil) {
        for index in self.simulations.indices {
            self.estimates[index].add(self.simulations[index].decide(trace, nowNanos: decisionTime))
        }
    }
}
