/// The IR turned into what one replica evaluates: drop policies first, each value as the renderer writes
/// it for one of N replicas, regular expressions compiled, OTTL parsed, stateful policies numbered.
struct EvaluationPlan {
    struct Member {
        var name: String
        var node: Node
        var allocated: Int64
    }

    indirect enum Node {
        case always
        /// Rendered `threshold_ms` and `upper_threshold_ms` (0 = no upper bound).
        case latency(threshold: Int64, upper: Int64, label: Int)
        case numeric(keyID: Int, key: String, minimum: Int64, maximum: Int64, invert: Bool, label: Int)
        case boolean(keyID: Int, key: String, value: Bool, invert: Bool, label: Int)
        /// A class, so evaluating it retains one reference rather than each of its fields.
        case string(StringTest)
        /// `saltState`: the FNV-1a state after the salt's bytes.
        case probabilistic(saltState: UInt64, threshold: UInt64, label: Int)
        /// Status codes as a bit mask (``StatusCode/bit``).
        case status(UInt8, label: Int)
        case spanCount(minimum: Int64, maximum: Int64, label: Int)
        case traceState(key: String, values: Set<String>, label: Int)
        case traceFlags(label: Int)
        case ottl(
            span: [OTTLCondition],
            event: [OTTLCondition],
            mode: OTTLErrorMode,
            unsupported: String?,
            label: Int
        )
        /// `burst` nil: the fixed window with its strict test (per-replica share + 1); else a token bucket.
        case spanLimit(id: Int, perSecond: Int64, burst: Int64?, label: Int)
        case byteLimit(id: Int, perSecond: Int64, burst: Int64, label: Int)
        case and([Node])
        case drop([Node])
        case not(Node)
        case composite(id: Int, total: Int64, members: [Member])
        /// A stateless test that appears more than once in the policy set (`service == "checkout"` in several
        /// rules): evaluated once per trace, its outcome reused.
        case memo(id: Int, Node)
    }

    /// The top-level policies' tests, in evaluation order (drops first).
    var topLevel: [Node] = []
    /// The top-level policies' names and source rules, in evaluation order, and which of them drop.
    var policyNames: [String] = []
    var ruleNames: [String] = []
    var drops: [Bool] = []
    var sampleOnFirstMatch: Bool
    var invertedDecisions: Bool
    var statefulCount = 0
    var compositeSizes: [Int] = []
    var regexCount = 0
    /// Tests shared through ``Node/memo``.
    var memoCount = 0
    /// Descriptions of the tests, for explanations (nodes refer to them by number).
    var labels: [String] = []
    /// Attribute keys the policies read, numbered.
    var keys: [String] = []
    /// Key numbers by the key's length in UTF-8 bytes.
    var keysByLength: [[Int]] = []
    /// By length: the only key of that length, -1 for none, -2 for several (then ``keysByLength``).
    var keyByLength: [Int32] = []
    private var keyIDs: [String: Int] = [:]
    let options: SimulationOptions
    let settings: SamplerSettings

    init(policySet: PolicySet, options: SimulationOptions) {
        self.options = options
        self.settings = policySet.settings
        self.sampleOnFirstMatch = policySet.settings.sampleOnFirstMatch ?? false
        self.invertedDecisions = options.invertedDecisions
        // The collector runs `drop` policies first, in order, then the rest in order.
        let ordered =
            policySet.policies.filter { if case .drop = $0.kind { true } else { false } }
            + policySet.policies.filter { if case .drop = $0.kind { false } else { true } }
        for policy in ordered {
            let node = self.node(policy.kind)
            self.topLevel.append(node)
            self.policyNames.append(policy.name)
            self.ruleNames.append(policy.rule ?? policy.name)
            if case .drop = policy.kind { self.drops.append(true) } else { self.drops.append(false) }
        }
        self.shareRepeatedTests()
    }

    /// Wraps stateless tests that occur more than once (same description, so the same test) in ``Node/memo``.
    private mutating func shareRepeatedTests() {
        var counts: [String: Int] = [:]
        func count(_ node: Node) {
            if let key = self.memoKey(node) { counts[key, default: 0] += 1 }
            for child in Self.children(node) { count(child) }
        }
        for top in self.topLevel { count(top) }
        var ids: [String: Int] = [:]
        func wrap(_ node: Node) -> Node {
            if let key = self.memoKey(node), counts[key, default: 0] > 1 {
                let id = ids[key] ?? ids.count
                ids[key] = id
                return .memo(id: id, node)
            }
            switch node {
            case .and(let members): return .and(members.map(wrap))
            case .drop(let members): return .drop(members.map(wrap))
            case .not(let member): return .not(wrap(member))
            case .composite(let id, let total, let members):
                return .composite(
                    id: id,
                    total: total,
                    members: members.map { Member(name: $0.name, node: wrap($0.node), allocated: $0.allocated) }
                )
            default: return node
            }
        }
        self.topLevel = self.topLevel.map(wrap)
        self.memoCount = ids.count
    }

    /// What identifies a stateless test: its kind and description (which spells out key, values, bounds,
    /// inversion, salt). `nil` for limits, budgets and combinations.
    private func memoKey(_ node: Node) -> String? {
        switch node {
        case .latency(_, _, let label), .numeric(_, _, _, _, _, let label), .boolean(_, _, _, _, let label),
            .probabilistic(_, _, let label), .status(_, let label), .spanCount(_, _, let label),
            .traceState(_, _, let label), .traceFlags(let label), .ottl(_, _, _, _, let label):
            return "\(Self.kindName(node))|\(self.labels[label])"
        case .string(let test):
            return "string|\(self.labels[test.label])"
        default:
            return nil
        }
    }

    private static func kindName(_ node: Node) -> String {
        switch node {
        case .latency: "latency"
        case .numeric: "numeric"
        case .boolean: "boolean"
        case .probabilistic: "probabilistic"
        case .status: "status"
        case .spanCount: "spans"
        case .traceState: "tracestate"
        case .traceFlags: "flags"
        case .ottl: "ottl"
        default: "other"
        }
    }

    private static func children(_ node: Node) -> [Node] {
        switch node {
        case .and(let members), .drop(let members): members
        case .not(let member): [member]
        case .composite(_, _, let members): members.map(\.node)
        case .memo(_, let inner): [inner]
        default: []
        }
    }

    private var replicas: Int { self.options.samplers }

    private mutating func node(_ kind: PolicyKind) -> Node {
        switch kind {
        case .alwaysSample:
            return .always
        case .latency(let bounds):
            if let maximum = bounds.maximumMs {
                return .latency(
                    threshold: (bounds.minimumMs ?? 0) - 1,
                    upper: maximum,
                    label: self.label("duration in \(bounds.minimumMs ?? 0)..\(maximum) ms")
                )
            }
            return .latency(
                threshold: bounds.minimumMs ?? 0,
                upper: 0,
                label: self.label("duration >= \(bounds.minimumMs ?? 0) ms")
            )
        case .numericAttribute(let test):
            let range = "\(test.minimum.map(String.init) ?? "")..\(test.maximum.map(String.init) ?? "")"
            return .numeric(
                keyID: self.keyID(test.key),
                key: test.key,
                minimum: test.minimum ?? .min,
                maximum: test.maximum ?? .max,
                invert: test.invert,
                label: self.label("attr[\"\(test.key)\"] \(test.invert ? "not " : "")in \(range)")
            )
        case .booleanAttribute(let test):
            return .boolean(
                keyID: self.keyID(test.key),
                key: test.key,
                value: test.value,
                invert: test.invert,
                label: self.label("attr[\"\(test.key)\"] \(test.invert ? "!=" : "==") \(test.value)")
            )
        case .stringAttribute(let test):
            let id = self.regexCount
            if test.regex { self.regexCount += 1 }
            // Patterns are shown as written: without the anchors the compiler adds for a full match.
            let shown = test.values.map { value in
                let plain =
                    test.regex && value.hasPrefix("^(?:") && value.hasSuffix(")$")
                    ? String(value.dropFirst(4).dropLast(2)) : value
                return "\"\(plain)\""
            }.joined(separator: ", ")
            return .string(
                StringTest(
                    id: id,
                    keyID: self.keyID(test.key),
                    key: test.key,
                    exact: ExactValues(test.regex ? [] : test.values.filter { !$0.isEmpty }),
                    patterns: test.regex ? test.values.map(CompiledPattern.init) : [],
                    invert: test.invert,
                    label: self.label(
                        "attr[\"\(test.key)\"] \(test.invert ? "not " : "")\(test.regex ? "matches" : "in") [\(shown)]"
                    )
                )
            )
        case .probabilistic(let sampling):
            let salt = (sampling.salt?.isEmpty ?? true) ? CollectorHash.defaultSalt : sampling.salt!
            return .probabilistic(
                saltState: CollectorHash.fnv1a64State(salt: salt),
                threshold: CollectorHash.probabilisticThreshold(percentage: sampling.percentage),
                label: self.label("sample \(Self.percent(sampling.percentage)) (salt \"\(salt)\")")
            )
        case .statusCode(let codes):
            let shown = codes.map(\.rawValue).joined(separator: ", ")
            return .status(codes.reduce(0) { $0 | $1.bit }, label: self.label("status in [\(shown)]"))
        case .spanCount(let bounds):
            let maximum = Int64(bounds.maximum ?? 0)
            return .spanCount(
                minimum: Int64(bounds.minimum),
                maximum: maximum,
                label: self.label(
                    maximum == 0 ? "spans >= \(bounds.minimum)" : "spans in \(bounds.minimum)..\(maximum)"
                )
            )
        case .traceState(let test):
            // The collector ignores values whose key and value together reach 256 bytes.
            let values = test.values.filter { test.key.utf8.count + $0.utf8.count < 256 }
            return .traceState(
                key: test.key,
                values: Set(values),
                label: self.label(
                    "tracestate[\"\(test.key)\"] in [\(test.values.map { "\"\($0)\"" }.joined(separator: ", "))]"
                )
            )
        case .traceFlags:
            return .traceFlags(label: self.label("sampled_flag"))
        case .ottlCondition(let conditions):
            var problems: [String] = []
            var span: [OTTLCondition] = []
            var event: [OTTLCondition] = []
            for text in conditions.span {
                switch OTTLCondition.parse(text, context: .span) {
                case .success(let condition): span.append(condition)
                case .failure(let error): problems.append("`\(text)`: \(error.reason)")
                }
            }
            for text in conditions.spanEvent {
                switch OTTLCondition.parse(text, context: .spanEvent) {
                case .success(let condition): event.append(condition)
                case .failure(let error): problems.append("`\(text)`: \(error.reason)")
                }
            }
            let all = (conditions.span + conditions.spanEvent).map { "`\($0)`" }.joined(separator: " or ")
            return .ottl(
                span: span,
                event: event,
                mode: self.settings.ottlErrorMode ?? .defaultMode,
                unsupported: problems.isEmpty ? nil : "not simulated: " + problems.joined(separator: "; "),
                label: self.label("ottl \(all)")
            )
        case .rateLimiting(let limit):
            let id = self.nextStateful()
            let share = FleetShare.perReplica(limit.perSecond, replicas: self.replicas)
            if self.options.tokenBucketSpanLimits {
                let burst = limit.burst.map { FleetShare.perReplica($0, replicas: self.replicas) } ?? share * 2
                return .spanLimit(
                    id: id,
                    perSecond: share,
                    burst: burst,
                    label: self.label("limit \(limit.perSecond) spans/s")
                )
            }
            return .spanLimit(
                id: id,
                perSecond: share + 1,
                burst: nil,
                label: self.label("limit \(limit.perSecond) spans/s")
            )
        case .bytesLimiting(let limit):
            let id = self.nextStateful()
            let rate = FleetShare.perReplica(limit.perSecond, replicas: self.replicas)
            let burst = limit.burst.map { FleetShare.perReplica($0, replicas: self.replicas) } ?? rate * 2
            return .byteLimit(
                id: id,
                perSecond: rate,
                burst: burst,
                label: self.label("limit \(limit.perSecond) bytes/s")
            )
        case .and(let members):
            return .and(members.map { self.node($0.kind) })
        case .drop(let members):
            return .drop(members.map { self.node($0.kind) })
        case .not(let member):
            return .not(self.node(member.kind))
        case .composite(let budget):
            let id = self.compositeSizes.count
            self.compositeSizes.append(budget.members.count)
            let total = FleetShare.perReplica(budget.maxTotalSpansPerSecond, replicas: self.replicas)
            let members = budget.members.map { member in
                Member(
                    name: member.policy.name,
                    node: self.node(member.policy.kind),
                    allocated: FleetShare.allocation(percent: member.percent, replicaTotal: total)
                )
            }
            return .composite(id: id, total: total, members: members)
        }
    }

    private mutating func label(_ text: String) -> Int {
        self.labels.append(text)
        return self.labels.count - 1
    }

    private mutating func keyID(_ key: String) -> Int {
        if let id = self.keyIDs[key] { return id }
        self.keys.append(key)
        self.keyIDs[key] = self.keys.count - 1
        let length = key.utf8.count
        while self.keysByLength.count <= length {
            self.keysByLength.append([])
            self.keyByLength.append(-1)
        }
        self.keysByLength[length].append(self.keys.count - 1)
        self.keyByLength[length] = self.keysByLength[length].count == 1 ? Int32(self.keys.count - 1) : -2
        return self.keys.count - 1
    }

    private mutating func nextStateful() -> Int {
        defer { self.statefulCount += 1 }
        return self.statefulCount
    }

    static func percent(_ value: Double) -> String {
        value == value.rounded() ? "\(Int64(value))%" : "\(value)%"
    }
}

/// A `string_attribute` test, compiled.
final class StringTest: @unchecked Sendable {
    let id: Int
    let keyID: Int
    let key: String
    let exact: ExactValues
    let patterns: [CompiledPattern]
    let invert: Bool
    let label: Int
    /// Patterns the simulator cannot run, if any: the policy is then reported as not simulated.
    let unsupported: String?

    init(id: Int, keyID: Int, key: String, exact: ExactValues, patterns: [CompiledPattern], invert: Bool, label: Int) {
        let failed = patterns.filter { $0.regex == nil }.map { "`\($0.source)`" }
        self.unsupported =
            failed.isEmpty ? nil : "not simulated: the regex \(failed.joined(separator: ", ")) does not compile here"
        self.id = id
        self.keyID = keyID
        self.key = key
        self.exact = exact
        self.patterns = patterns
        self.invert = invert
        self.label = label
    }
}

/// The values of an exact string test, compared byte for byte as Go compares strings (Swift's `==` would
/// also equate canonically equivalent forms such as composed and decomposed accents): one by one when
/// there are few, through a set of byte arrays when there are many.
struct ExactValues {
    let list: [String]
    let set: Set<[UInt8]>?

    init(_ values: [String]) {
        self.list = values
        self.set = values.count > 8 ? Set(values.map { Array($0.utf8) }) : nil
    }

    func contains(_ text: String) -> Bool {
        if let set = self.set { return set.contains(Array(text.utf8)) }
        // `==` rules most values out fast; canonically equivalent strings must also have the same bytes.
        return self.list.contains { $0 == text && $0.utf8.elementsEqual(text.utf8) }
    }
}

/// A compiled RE2 pattern, searched the way Go's `MatchString` does (unanchored; the IR's patterns carry
/// their own anchors). The pattern is translated where Swift's regex syntax or defaults differ from RE2's:
/// `.` excludes only `\n` (Swift's also excludes `\r` and other line breaks), `\pL` becomes `\p{L}`, octal
/// `\123` becomes `\x{53}`; and `\d`, `\w`, `\s`, `\b` are ASCII-only, matching by Unicode scalar as RE2
/// matches by code point. A pattern Swift still cannot compile is reported as not simulated.
struct CompiledPattern: @unchecked Sendable {
    let source: String
    let regex: Regex<AnyRegexOutput>?

    init(_ source: String) {
        self.source = source
        self.regex = (try? Regex(Self.translate(source)))?
            .matchingSemantics(.unicodeScalar)
            .asciiOnlyDigits()
            .asciiOnlyWhitespace()
            .asciiOnlyWordCharacters()
            .wordBoundaryKind(.simple)
    }

    func search(_ text: String) -> Bool {
        guard let regex = self.regex else { return false }
        return (try? regex.firstMatch(in: text)) != nil
    }

    /// Whether a flag group (`(?s)`, `(?is:…)`) turns on the `s` flag.
    static func setsDotAll(_ chars: [Unicode.Scalar]) -> Bool {
        var index = 0
        while index + 1 < chars.count {
            if chars[index] == "(", chars[index + 1] == "?" {
                var cursor = index + 2
                while cursor < chars.count, chars[cursor].properties.isAlphabetic || chars[cursor] == "-" {
                    if chars[cursor] == "-" { break }
                    if chars[cursor] == "s" { return true }
                    cursor += 1
                }
            }
            index += 1
        }
        return false
    }

    /// RE2 syntax rewritten where Swift reads it differently.
    static func translate(_ pattern: String) -> String {
        let chars = Array(pattern.unicodeScalars)
        // With the `s` flag RE2's `.` matches every character, as Swift's does under it.
        let dotAll = Self.setsDotAll(chars)
        var out = String.UnicodeScalarView()
        var inClass = false
        var index = 0
        func append(_ text: String) { out.append(contentsOf: text.unicodeScalars) }
        while index < chars.count {
            let c = chars[index]
            if c == "\\", index + 1 < chars.count {
                let next = chars[index + 1]
                if next == "p" || next == "P", index + 2 < chars.count, chars[index + 2] != "{" {
                    append("\\\(next){\(chars[index + 2])}")
                    index += 3
                    continue
                }
                if ("0"..."7").contains(next) {
                    var digits = String.UnicodeScalarView()
                    var cursor = index + 1
                    while cursor < chars.count, digits.count < 3, ("0"..."7").contains(chars[cursor]) {
                        digits.append(chars[cursor])
                        cursor += 1
                    }
                    if digits.count > 1 || next == "0", let value = UInt32(String(digits), radix: 8) {
                        append("\\x{" + String(value, radix: 16) + "}")
                        index = cursor
                        continue
                    }
                }
                out.append(c)
                out.append(next)
                index += 2
                continue
            }
            if inClass {
                if c == "]" { inClass = false }
                out.append(c)
            } else if c == "[" {
                inClass = true
                out.append(c)
                // A `]` right after `[` or `[^` is a literal.
                if index + 1 < chars.count, chars[index + 1] == "^" {
                    out.append("^")
                    index += 1
                }
                if index + 1 < chars.count, chars[index + 1] == "]" {
                    append("\\]")
                    index += 1
                }
            } else if c == ".", !dotAll {
                append("[^\\n]")
            } else {
                out.append(c)
            }
            index += 1
        }
        return String(out)
    }
}
