import Foundation
import PolicyEngine
import Yams

/// Unit tests for sampling rules: traces written compactly in YAML (or taken from OTLP/JSON files) and the
/// decision each must get. The format is in docs/testing.md.
public struct RuleTestFile: Sendable {
    /// One test.
    public struct Test: Sendable {
        /// Its name.
        public var name: String
        /// Where it starts in the file (1-based).
        public var line: Int
        /// The traces it decides (each must meet the expectation), in order.
        public var traces: [SimulatedTrace]
        /// What each trace must get.
        public var expectation: Expectation
    }

    /// What a test expects.
    public struct Expectation: Sendable, Hashable {
        /// Keep or drop.
        public var decision: TraceDecision?
        /// The rule that decides.
        public var rule: String?
        /// Votes of particular rules (by rule or policy name).
        public var votes: [String: Vote] = [:]
        /// "no rule decides": `rule: none`.
        public var noRule = false
    }

    /// A problem in a test file, located.
    public struct Problem: Error, Sendable, CustomStringConvertible {
        /// The file.
        public var file: String
        /// 1-based line.
        public var line: Int
        /// 1-based column.
        public var column: Int
        /// What is wrong and how to fix it.
        public var message: String

        public var description: String { "\(self.file):\(self.line):\(self.column): error: \(self.message)" }
    }

    /// The file.
    public var path: String
    /// Sampler replicas to simulate (default 1: one sampler's view, limits at their fleet-wide figure).
    public var samplers: Int
    /// The tests.
    public var tests: [Test]

    /// Parses a test file. Trace files named in it are read relative to the file.
    public static func parse(_ text: String, path: String) throws(Problem) -> RuleTestFile {
        var parser = Parser(path: path)
        return try parser.file(text)
    }

    struct Parser {
        let path: String

        func problem(_ message: String, at node: Node?) -> Problem {
            Problem(file: self.path, line: node?.mark?.line ?? 1, column: node?.mark?.column ?? 1, message: message)
        }

        mutating func file(_ text: String) throws(Problem) -> RuleTestFile {
            let root: Node?
            do {
                root = try Yams.compose(yaml: text)
            } catch {
                throw Problem(file: self.path, line: 1, column: 1, message: "not valid YAML: \(error)")
            }
            guard let root else {
                throw self.problem("the file is empty; write `tests:` with a list of tests", at: nil)
            }
            let fields = try self.mapping(root, "the file", allowed: ["samplers", "tests"])
            let samplers =
                try fields["samplers"].map { node throws(Problem) in try self.int(node, "samplers", minimum: 1) } ?? 1
            guard let testsNode = fields["tests"], case .sequence(let list) = testsNode else {
                throw self.problem("`tests` must be a list of tests", at: fields["tests"] ?? root)
            }
            var tests: [Test] = []
            var names = Set<String>()
            for item in list {
                let test = try self.test(item, index: tests.count)
                guard names.insert(test.name).inserted else {
                    throw self.problem("two tests are named `\(test.name)`; give each a distinct name", at: item)
                }
                tests.append(test)
            }
            return RuleTestFile(path: self.path, samplers: samplers, tests: tests)
        }

        func test(_ node: Node, index: Int) throws(Problem) -> Test {
            let fields = try self.mapping(
                node,
                "a test",
                allowed: ["name", "trace", "traces", "file", "trace_id", "expect"]
            )
            let name = try fields["name"].map { n throws(Problem) in try self.string(n, "name") } ?? "test \(index + 1)"
            guard let expectNode = fields["expect"] else {
                throw self.problem(
                    "test `\(name)` has no `expect`; write `expect: keep` or `expect: {decision: drop, rule: NAME}`",
                    at: node
                )
            }
            let expectation = try self.expectation(expectNode)
            var traces: [SimulatedTrace] = []
            let sources = ["trace", "traces", "file"].filter { fields[$0] != nil }
            guard sources.count == 1 else {
                throw self.problem("test `\(name)` needs exactly one of `trace`, `traces` or `file`", at: node)
            }
            if let traceNode = fields["trace"] {
                traces.append(try self.trace(traceNode, seed: "\(self.path)#\(name)"))
            } else if let listNode = fields["traces"] {
                guard case .sequence(let list) = listNode else {
                    throw self.problem("`traces` must be a list", at: listNode)
                }
                for (i, item) in list.enumerated() {
                    traces.append(try self.trace(item, seed: "\(self.path)#\(name)#\(i)"))
                }
            } else if let fileNode = fields["file"] {
                let relative = try self.string(fileNode, "file")
                let base = (self.path as NSString).deletingLastPathComponent
                let resolved = relative.hasPrefix("/") ? relative : (base as NSString).appendingPathComponent(relative)
                let wanted = try fields["trace_id"].map { n throws(Problem) -> TraceID in
                    guard let id = TraceID(hex: try self.string(n, "trace_id")) else {
                        throw self.problem("`trace_id` must be 32 hexadecimal digits", at: n)
                    }
                    return id
                }
                do {
                    traces = try TraceLoader.load([resolved]).filter { wanted == nil || $0.traceID == wanted }
                } catch {
                    throw self.problem("cannot read `\(relative)`: \(error)", at: fileNode)
                }
                if traces.isEmpty { throw self.problem("`\(relative)` holds no matching trace", at: fileNode) }
            }
            return Test(name: name, line: node.mark?.line ?? 1, traces: traces, expectation: expectation)
        }

        func expectation(_ node: Node) throws(Problem) -> Expectation {
            var expectation = Expectation()
            if case .scalar = node {
                expectation.decision = try self.decision(node)
                return expectation
            }
            let fields = try self.mapping(node, "`expect`", allowed: ["decision", "rule", "votes"])
            if let decision = fields["decision"] { expectation.decision = try self.decision(decision) }
            if let rule = fields["rule"] {
                let name = try self.string(rule, "rule")
                if name == "none" { expectation.noRule = true } else { expectation.rule = name }
            }
            if let votes = fields["votes"] {
                guard case .mapping(let mapping) = votes else {
                    throw self.problem(
                        "`votes` maps rule names to votes (`sampled`, `not_sampled`, `dropped`, …)",
                        at: votes
                    )
                }
                for (key, value) in mapping {
                    let rule = try self.string(key, "a rule name")
                    let text = try self.string(value, "a vote")
                    guard let vote = Vote(rawValue: text) else {
                        let choices = [
                            Vote.sampled, .notSampled, .dropped, .invertSampled, .invertNotSampled, .error,
                            .notEvaluated,
                        ]
                        throw self.problem(
                            "unknown vote `\(text)`; use one of \(choices.map { "`\($0.rawValue)`" }.joined(separator: ", "))",
                            at: value
                        )
                    }
                    expectation.votes[rule] = vote
                }
            }
            if expectation.decision == nil, expectation.rule == nil, !expectation.noRule, expectation.votes.isEmpty {
                throw self.problem("`expect` says nothing; give `decision`, `rule` or `votes`", at: node)
            }
            return expectation
        }

        func decision(_ node: Node) throws(Problem) -> TraceDecision {
            let text = try self.string(node, "decision")
            switch text {
            case "keep", "kept", "sampled": return .keep
            case "drop", "dropped", "not_sampled": return .drop
            default: throw self.problem("the decision is `keep` or `drop`, not `\(text)`", at: node)
            }
        }

        // MARK: Traces

        static let traceKeys = ["id", "service", "resource", "spans", "tracestate", "sampled"]
        static let spanKeys = [
            "name", "service", "resource", "start", "duration", "end", "status", "attributes", "tracestate", "sampled",
            "events", "count", "kind",
        ]
        static let start: UInt64 = 1_700_000_000 * 1_000_000_000

        func trace(_ node: Node, seed: String) throws(Problem) -> SimulatedTrace {
            let fields = try self.mapping(node, "a trace", allowed: Self.traceKeys)
            let traceID: TraceID
            if let idNode = fields["id"] {
                guard let id = TraceID(hex: try self.string(idNode, "id")) else {
                    throw self.problem("`id` must be 32 hexadecimal digits", at: idNode)
                }
                traceID = id
            } else {
                traceID = Self.derivedID(seed)
            }
            var traceResource = try fields["resource"].map { n throws(Problem) in try self.attributes(n) } ?? [:]
            if let service = fields["service"] {
                traceResource["service.name"] = .string(try self.string(service, "service"))
            }
            let traceState =
                try fields["tracestate"].map { n throws(Problem) in try self.string(n, "tracestate") } ?? ""
            let sampled = try fields["sampled"].map { n throws(Problem) in try self.bool(n, "sampled") } ?? false
            guard let spansNode = fields["spans"], case .sequence(let list) = spansNode, !list.isEmpty else {
                throw self.problem("a trace needs `spans`, a list with at least one span", at: fields["spans"] ?? node)
            }
            var resources: [Attributes] = []
            var spans: [TraceSpan] = []
            for item in list {
                let span = try self.mapping(item, "a span", allowed: Self.spanKeys)
                var resource = traceResource
                if let extra = span["resource"] { resource.merge(try self.attributes(extra)) { $1 } }
                if let service = span["service"] {
                    resource["service.name"] = .string(try self.string(service, "service"))
                }
                let resourceIndex = resources.firstIndex(of: resource) ?? resources.count
                if resourceIndex == resources.count { resources.append(resource) }
                let startOffset = try span["start"].map { n throws(Problem) in try self.duration(n, "start") } ?? 0
                var endOffset = startOffset + 1_000_000
                if let duration = span["duration"] {
                    endOffset = startOffset + (try self.duration(duration, "duration"))
                }
                if let end = span["end"] { endOffset = try self.duration(end, "end") }
                var status = StatusCode.unset
                if let statusNode = span["status"] {
                    let text = try self.string(statusNode, "status")
                    guard let code = StatusCode(rawValue: text.uppercased()) else {
                        throw self.problem("`status` is OK, ERROR or UNSET, not `\(text)`", at: statusNode)
                    }
                    status = code
                }
                var events: [SpanEvent] = []
                if let eventsNode = span["events"] {
                    guard case .sequence(let eventList) = eventsNode else {
                        throw self.problem("`events` is a list of event names or {name, attributes}", at: eventsNode)
                    }
                    for event in eventList {
                        if case .scalar = event {
                            events.append(
                                SpanEvent(name: try self.string(event, "event"), timeNanos: Self.start + startOffset)
                            )
                        } else {
                            let eventFields = try self.mapping(event, "an event", allowed: ["name", "attributes"])
                            events.append(
                                SpanEvent(
                                    name: try eventFields["name"].map { n throws(Problem) in try self.string(n, "name")
                                    } ?? "",
                                    timeNanos: Self.start + startOffset,
                                    attributes: try eventFields["attributes"].map { n throws(Problem) in
                                        try self.attributes(n)
                                    } ?? [:]
                                )
                            )
                        }
                    }
                }
                let count = try span["count"].map { n throws(Problem) in try self.int(n, "count", minimum: 1) } ?? 1
                let spanSampled =
                    try span["sampled"].map { n throws(Problem) in try self.bool(n, "sampled") } ?? sampled
                let kind =
                    try span["kind"].map { n throws(Problem) -> Int32 in
                        let text = try self.string(n, "kind").uppercased()
                        guard let value = OTLPJSON.kinds["SPAN_KIND_" + text] else {
                            throw self.problem("`kind` is one of internal, server, client, producer, consumer", at: n)
                        }
                        return Int32(value)
                    } ?? 0
                for _ in 0..<count {
                    let index = spans.count
                    spans.append(
                        TraceSpan(
                            spanID: Self.spanID(index),
                            parentSpanID: index == 0 ? [] : Self.spanID(0),
                            name: try span["name"].map { n throws(Problem) in try self.string(n, "name") }
                                ?? "span-\(index)",
                            kind: kind,
                            startNanos: Self.start + startOffset,
                            endNanos: Self.start + endOffset,
                            status: status,
                            attributes: try span["attributes"].map { n throws(Problem) in try self.attributes(n) }
                                ?? [:],
                            traceState: try span["tracestate"].map { n throws(Problem) in
                                try self.string(n, "tracestate")
                            } ?? traceState,
                            flags: spanSampled ? 0x01 : 0,
                            events: events,
                            resource: resourceIndex
                        )
                    )
                }
            }
            return SimulatedTrace(traceID: traceID, resources: resources, spans: spans)
        }

        static func spanID(_ index: Int) -> [UInt8] {
            let value = UInt64(index + 1)
            return (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * (7 - UInt64($0)))) }
        }

        /// A stable trace ID from the test's file and name (FNV-1a over each half's seed), so a probabilistic
        /// rule gives the same answer on every run; `id` pins one explicitly.
        static func derivedID(_ seed: String) -> TraceID {
            func fnv(_ text: String) -> UInt64 {
                var hash: UInt64 = 14_695_981_039_346_656_037
                for byte in text.utf8 {
                    hash ^= UInt64(byte)
                    hash &*= 1_099_511_628_211
                }
                return hash
            }
            return TraceID(high: fnv(seed + "/high"), low: fnv(seed + "/low"))
        }

        func attributes(_ node: Node) throws(Problem) -> Attributes {
            guard case .mapping(let mapping) = node else {
                throw self.problem("attributes are a mapping of keys to values", at: node)
            }
            var attributes: Attributes = [:]
            for (key, value) in mapping {
                attributes[try self.string(key, "an attribute key")] = try self.value(value)
            }
            return attributes
        }

        /// A YAML value as an OTLP value: `500` an int, `0.5` a double, `true` a bool, `"500"` a string,
        /// a list an array, a mapping a key-value list.
        func value(_ node: Node) throws(Problem) -> AttributeValue {
            switch node {
            case .scalar(let scalar):
                if scalar.style == .plain {
                    if let int = node.int { return .int(Int64(int)) }
                    if let bool = node.bool { return .bool(bool) }
                    if let double = node.float { return .double(double) }
                }
                return .string(scalar.string)
            case .sequence(let list):
                var values: [AttributeValue] = []
                for item in list { values.append(try self.value(item)) }
                return .array(values)
            case .mapping:
                return .map(try self.attributes(node))
            case .alias:
                throw self.problem("YAML aliases are not supported here", at: node)
            }
        }

        // MARK: Primitives

        func mapping(_ node: Node, _ what: String, allowed: [String]) throws(Problem) -> [String: Node] {
            guard case .mapping(let mapping) = node else { throw self.problem("\(what) must be a mapping", at: node) }
            var fields: [String: Node] = [:]
            for (keyNode, value) in mapping {
                let key = try self.string(keyNode, "a key")
                guard allowed.contains(key) else {
                    let hint = Self.closest(key, allowed).map { "; did you mean `\($0)`?" } ?? ""
                    throw self.problem(
                        "unknown key `\(key)` in \(what)\(hint) (known: \(allowed.joined(separator: ", ")))",
                        at: keyNode
                    )
                }
                fields[key] = value
            }
            return fields
        }

        func string(_ node: Node, _ what: String) throws(Problem) -> String {
            guard case .scalar(let scalar) = node else {
                throw self.problem("`\(what)` must be a single value", at: node)
            }
            return scalar.string
        }

        func int(_ node: Node, _ what: String, minimum: Int) throws(Problem) -> Int {
            guard case .scalar = node, let value = node.int, value >= minimum else {
                throw self.problem("`\(what)` must be a whole number of at least \(minimum)", at: node)
            }
            return value
        }

        func bool(_ node: Node, _ what: String) throws(Problem) -> Bool {
            guard case .scalar = node, let value = node.bool else {
                throw self.problem("`\(what)` must be true or false", at: node)
            }
            return value
        }

        /// `120ms`, `1.5s`, `2m`, `250us`, `10ns` in nanoseconds.
        func duration(_ node: Node, _ what: String) throws(Problem) -> UInt64 {
            let text = try self.string(node, what)
            let units: [(String, Double)] = [
                ("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
            ]
            for (unit, factor) in units where text.hasSuffix(unit) {
                if let number = Double(text.dropLast(unit.count)), number >= 0, !(unit == "s" && text.hasSuffix("ms")) {
                    return UInt64((number * factor).rounded())
                }
            }
            throw self.problem("`\(what)` must be a duration such as `120ms` or `1.5s`, not `\(text)`", at: node)
        }

        static func closest(_ word: String, _ choices: [String]) -> String? {
            func distance(_ a: [Character], _ b: [Character]) -> Int {
                var previous = Array(0...b.count)
                for (i, x) in a.enumerated() {
                    var current = [i + 1]
                    for (j, y) in b.enumerated() {
                        current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1)))
                    }
                    previous = current
                }
                return previous[b.count]
            }
            let scored = choices.map { ($0, distance(Array(word), Array($0))) }.min { $0.1 < $1.1 }
            return scored.flatMap { $0.1 <= 2 ? $0.0 : nil }
        }
    }
}

/// The result of running one test.
public struct RuleTestResult: Sendable {
    /// The file.
    public var file: String
    /// The test.
    public var name: String
    /// Its line.
    public var line: Int
    /// What went wrong, per trace; empty when it passed.
    public var failures: [String]
    /// The verdicts.
    public var verdicts: [Verdict]

    /// True when every trace met the expectation.
    public var passed: Bool { self.failures.isEmpty }
}

/// Runs test files against a policy set.
public enum RuleTestRunner {
    /// Runs every test of a file; each test starts with fresh samplers (full limit buckets, empty budgets).
    public static func run(_ file: RuleTestFile, policySet: PolicySet, options: SimulationOptions) -> [RuleTestResult] {
        var options = options
        options.samplers = file.samplers
        options.samplerEndpoints = []
        return file.tests.map { test in
            var simulation = SamplingSimulation(policySet: policySet, options: options)
            var failures: [String] = []
            var verdicts: [Verdict] = []
            for trace in test.traces {
                let verdict = simulation.decide(trace, explain: true)
                verdicts.append(verdict)
                failures.append(contentsOf: Self.check(verdict, test.expectation, policySet: policySet))
            }
            return RuleTestResult(
                file: file.path,
                name: test.name,
                line: test.line,
                failures: failures,
                verdicts: verdicts
            )
        }
    }

    /// Rules of the set that no test saw deciding a trace.
    public static func uncoveredRules(_ results: [RuleTestResult], policySet: PolicySet) -> [String] {
        let rules = Set(policySet.policies.map { $0.rule ?? $0.name })
        let decided = Set(results.flatMap { $0.verdicts.compactMap(\.decidingRule) })
        return rules.subtracting(decided).sorted()
    }

    static func check(_ verdict: Verdict, _ expectation: RuleTestFile.Expectation, policySet: PolicySet) -> [String] {
        var failures: [String] = []
        let actual = "\(verdict.decision.rawValue)\(verdict.decidingRule.map { " by \($0)" } ?? "")"
        if let decision = expectation.decision, decision != verdict.decision {
            failures.append("expected \(decision.rawValue), got \(actual)")
        }
        if let rule = expectation.rule, rule != verdict.decidingRule, rule != verdict.decidingPolicy {
            let known = Set(verdict.votes.map(\.rule))
            failures.append(
                known.contains(rule)
                    ? "expected the decision by \(rule), got \(actual)"
                    : "expected the decision by \(rule), but the policies have no rule `\(rule)` (got \(actual))"
            )
        }
        if expectation.noRule, let rule = verdict.decidingRule {
            failures.append("expected no rule to decide, got \(actual)")
            _ = rule
        }
        for (rule, vote) in expectation.votes.sorted(by: { $0.key < $1.key }) {
            let votes = verdict.votes.filter { $0.rule == rule || $0.policy == rule }
            if votes.isEmpty {
                failures.append("expected \(rule) to vote \(vote.rawValue), but the policies have no rule `\(rule)`")
            } else if !votes.contains(where: { $0.vote == vote }) {
                failures.append(
                    "expected \(rule) to vote \(vote.rawValue), it voted \(votes.map(\.vote.rawValue).joined(separator: ", "))"
                )
            }
        }
        return failures
    }
}

/// Reads whole traces from OTLP/JSON files (for test files and small inputs).
public enum TraceLoader {
    /// Every trace in the files, each with all its spans, in order of first appearance.
    public static func load(_ paths: [String]) throws -> [SimulatedTrace] {
        var assembler = TraceAssembler(decisionWaitNanos: .max / 2, afterRootNanos: nil)
        var order: [TraceID] = []
        var seen = Set<TraceID>()
        _ = try TraceFiles.read(paths) { batch in
            for (id, _) in batch.spans where seen.insert(id).inserted { order.append(id) }
            assembler.add(batch)
        }
        let traces = Dictionary(
            assembler.finish().map { ($0.trace.traceID, $0.trace) },
            uniquingKeysWith: { a, _ in a }
        )
        return order.compactMap { traces[$0] }
    }
}
