/// Checks parsed files and lowers them to the IR. Works file by file in path order so that
/// order-dependent lints ("after a rule that keeps everything") follow what the collector sees.
struct Checker {
    /// Most top-level policies one rule may expand to through `or`.
    static let maximumAlternatives = 32

    var sink: DiagnosticSink
    var file: SourceFile { self.sink.file }

    private var settings = SamplerSettings()
    private var samplerLocation: SourceReference?
    private var names: [String: SourceReference] = [:]
    private(set) var policies: [Policy] = []
    /// The first rule that keeps every trace, for TP4002.
    private var keepAll: (name: String, location: SourceReference)?
    /// Compiled shapes of earlier rules, for TP4001.
    private var shapes: [[PolicyKind]: (name: String, location: SourceReference)] = [:]

    init() {
        self.sink = DiagnosticSink(file: SourceFile(path: "", bytes: []))
    }

    var result: (settings: SamplerSettings, policies: [Policy]) { (self.settings, self.policies) }

    mutating func check(_ syntax: FileSyntax, sink: inout DiagnosticSink) {
        self.sink = sink
        defer { sink = self.sink }
        for declaration in syntax.declarations {
            switch declaration {
            case .sampler(let sampler):
                let here = self.sink.reference(sampler.keywordRange)
                if let previous = self.samplerLocation {
                    self.sink.emit(
                        .duplicateSamplerBlock,
                        "a policy set has one `sampler` block; another is at \(previous)",
                        at: sampler.keywordRange,
                        suggestion: "merge the settings into the first `sampler` block",
                        notes: [Diagnostic.Note(message: "first `sampler` block", location: previous)]
                    )
                    continue
                }
                self.samplerLocation = here
                var settings = self.settings
                self.checkSampler(sampler, into: &settings)
                self.settings = settings
            case .rule(let rule):
                if let share = rule.shareRange {
                    self.sink.emit(
                        .misplacedShare,
                        "`share` only means something inside a `budget` block",
                        at: share,
                        suggestion: "move the rule into `budget NAME 1000 spans/s { … }`, or remove `share`"
                    )
                }
                guard let compiled = self.lowerRule(rule, inBudget: false) else { continue }
                self.record(rule, compiled)
            case .budget(let budget):
                self.checkBudget(budget)
            }
        }
    }

    // MARK: Names

    /// Registers a rule name; false when it is missing or taken.
    private mutating func register(_ name: Identifier?) -> Bool {
        guard let name else { return false }
        let here = self.sink.reference(name.range)
        if let previous = self.names[name.name] {
            self.sink.emit(
                .duplicateRuleName,
                "rule name `\(name.name)` is already used at \(previous)",
                at: name.range,
                suggestion: "rule names are unique across the policy set; rename one, e.g. `\(name.name)_2`",
                notes: [Diagnostic.Note(message: "first used here", location: previous)]
            )
            return false
        }
        self.names[name.name] = here
        return true
    }

    // MARK: Lints across rules

    private mutating func record(_ rule: RuleDeclaration, _ compiled: [Policy]) {
        guard let name = rule.name?.name, !compiled.isEmpty else { return }
        let here = self.sink.reference(rule.actionRange)
        let kinds = compiled.map(\.kind)
        if rule.action == .keep, let keepAll = self.keepAll {
            self.sink.emit(
                .shadowedByKeepAll,
                "rule `\(name)` never changes a decision: `\(keepAll.name)` at \(keepAll.location) keeps every trace",
                at: rule.name?.range ?? rule.actionRange,
                suggestion: "remove `\(name)`, or give `\(keepAll.name)` a condition or a `sample` percentage",
                notes: [Diagnostic.Note(message: "keeps every trace", location: keepAll.location)]
            )
        } else if let previous = self.shapes[kinds] {
            self.sink.emit(
                .duplicateCondition,
                "rule `\(name)` has the same condition as `\(previous.name)` at \(previous.location)",
                at: rule.name?.range ?? rule.actionRange,
                suggestion: "remove one of the two rules",
                notes: [Diagnostic.Note(message: "same condition", location: previous.location)]
            )
        } else {
            self.shapes[kinds] = (name, here)
        }
        if rule.action == .keep, self.keepAll == nil, kinds == [.alwaysSample] {
            self.keepAll = (name, here)
        }
        self.policies.append(contentsOf: compiled)
    }

    // MARK: Budgets

    private mutating func checkBudget(_ budget: BudgetDeclaration) {
        let registered = self.register(budget.name)
        var total: Int64?
        if let rate = budget.rate {
            var countsBytes = false
            if case .rate(let amount, let unit, _) = rate {
                if unit?.name == "bytes" { countsBytes = true }
                if unit == nil, case .quantity = amount { countsBytes = true }
            }
            if countsBytes {
                self.sink.emit(
                    .wrongValueType,
                    "a budget is counted in spans per second; the collector's composite policy has no byte budget",
                    at: rate.range,
                    suggestion: "write `budget \(budget.name?.name ?? "NAME") 1000 spans/s { … }`"
                )
            } else if let limit = self.rate(rate, burst: nil) {
                if limit.limit.perSecond <= 0 {
                    self.sink.emit(
                        .valueOutOfRange,
                        "a budget of 0 spans/s keeps nothing",
                        at: rate.range,
                        suggestion: "write a positive rate such as `1000 spans/s`"
                    )
                } else {
                    total = limit.limit.perSecond
                }
            }
        } else {
            self.sink.emit(
                .expectedValue,
                "budget `\(budget.name?.name ?? "")` needs a fleet-wide rate",
                at: budget.name?.range ?? budget.keywordRange,
                suggestion: "write `budget \(budget.name?.name ?? "NAME") 1000 spans/s { … }`"
            )
        }
        if budget.rules.isEmpty {
            self.sink.emit(
                .emptyBudget,
                "budget `\(budget.name?.name ?? "")` has no rules",
                at: budget.keywordRange,
                suggestion: "add members such as `keep errors when status == ERROR share 50%`"
            )
            return
        }
        var members: [CompositeBudget.Member] = []
        var failed = false
        var shareSum = 0.0
        var catchAll: String?
        for rule in budget.rules {
            if rule.action == .drop {
                self.sink.emit(
                    .dropInBudget,
                    "a budget holds `keep` rules only",
                    at: rule.actionRange,
                    suggestion:
                        "move `drop \(rule.name?.name ?? "")` out of the budget; drops run before everything else anyway"
                )
                failed = true
                continue
            }
            var percent: Double?
            if let share = rule.share {
                var reader = ValueReader(sink: self.sink)
                percent = reader.percentage(share, what: "`share`")
                self.sink = reader.sink
                if let value = percent, value > 0, value.rounded() != value {
                    self.sink.emit(
                        .invalidPercentage,
                        "shares are whole percentages: the collector reads `percent` as an integer, so \(Self.format(value))% would become \(Int(value))%",
                        at: share.range,
                        suggestion: "write `share \(max(1, Int(value.rounded())))%`"
                    )
                    percent = nil
                } else if let value = percent, value <= 0 {
                    self.sink.emit(
                        .invalidPercentage,
                        "a share must be more than 0%: the collector gives a 0% entry an equal share instead",
                        at: share.range,
                        suggestion: "give the rule a positive share, or remove it"
                    )
                    percent = nil
                }
            } else {
                self.sink.emit(
                    .missingShare,
                    "rule `\(rule.name?.name ?? "")` in a budget needs a share",
                    at: rule.name?.range ?? rule.actionRange,
                    suggestion:
                        "add `share N%` (shares add up to at most 100%); the collector gives a member without one nothing"
                )
            }
            if let catchAll {
                self.sink.emit(
                    .unreachableAllocation,
                    "rule `\(rule.name?.name ?? "")` is never reached: `\(catchAll)` before it matches every trace",
                    at: rule.name?.range ?? rule.actionRange,
                    suggestion: "move `\(catchAll)` to the end of the budget"
                )
            }
            guard let lowered = self.lowerRule(rule, inBudget: true), let percent else {
                failed = true
                continue
            }
            shareSum += percent
            if lowered.isEmpty { continue }  // never matches (already reported)
            for policy in lowered {
                members.append(
                    CompositeBudget.Member(
                        policy: policy,
                        percent: percent,
                        shareOrigin: rule.share.map { self.sink.reference($0.range) }
                    )
                )
                if policy.kind == .alwaysSample, catchAll == nil { catchAll = rule.name?.name }
            }
        }
        if shareSum > 100.000_001 {
            self.sink.emit(
                .sharesOverBudget,
                "shares in budget `\(budget.name?.name ?? "")` add up to \(Self.format(shareSum))%, more than the budget",
                at: budget.name?.range ?? budget.keywordRange,
                suggestion: "lower the shares so they add up to 100% or less"
            )
            return
        }
        guard !failed, registered, let total, let name = budget.name, !members.isEmpty else { return }
        if shareSum < 99.999_999 {
            self.sink.emit(
                .unusedBudget,
                "shares in budget `\(name.name)` add up to \(Self.format(shareSum))%; the rest of the budget is never used",
                at: name.range,
                suggestion: "the collector does not lend unused shares; raise the shares to 100%"
            )
        }
        let policy = Policy(
            name: name.name,
            kind: .composite(CompositeBudget(maxTotalSpansPerSecond: total, members: members)),
            rule: name.name,
            origin: self.sink.reference(budget.keywordRange)
        )
        self.policies.append(policy)
    }

    static func format(_ value: Double) -> String {
        // Whole numbers print without `.0`; those beyond Int64 (found by the fuzzer) print as Swift does.
        guard value.rounded() == value, let whole = Int64(exactly: value) else { return String(value) }
        return String(whole)
    }

    // MARK: Rules

    /// Lowers one rule to its policies: several for a top-level `or`, none when it never matches.
    /// Returns `nil` after errors.
    private mutating func lowerRule(_ rule: RuleDeclaration, inBudget: Bool) -> [Policy]? {
        let registered = self.register(rule.name)
        let errorsBefore = self.sink.errorTotal
        let ruleName = rule.name?.name ?? rule.action.rawValue

        var logic: Logic?
        if let condition = rule.condition {
            logic = self.logic(of: condition)
        }
        var sampling: ProbabilisticSampling?
        var neverBySampling = false
        if let sample = rule.sample, let value = sample.percentage {
            var reader = ValueReader(sink: self.sink)
            if var percent = reader.percentage(value, what: "`sample`") {
                if percent > 100 {
                    reader.sink.emit(
                        .percentageOver100,
                        "`sample \(Self.format(percent))%` is over 100% and keeps every matching trace",
                        at: value.range,
                        suggestion: "write `sample 100%`, or remove `sample`"
                    )
                    percent = 100
                }
                if percent == 0 { neverBySampling = true }
                if percent < 100 || sample.salt != nil {
                    // Without a salt every rule would share the collector's default hash and their kept sets
                    // would nest; the rule's name makes each rule sample independently (docs/dsl.md).
                    sampling = ProbabilisticSampling(
                        percentage: percent,
                        salt: sample.salt?.value ?? ruleName
                    )
                }
            }
            self.sink = reader.sink
        }
        var limit: (spans: Bool, limit: RateLimit)?
        if let clause = rule.limit, let rate = clause.rate {
            if inBudget {
                self.sink.emit(
                    .limitInBudget,
                    "a rule inside a budget is limited by its share",
                    at: clause.range,
                    suggestion: "remove `limit` and set `share N%`"
                )
            } else {
                limit = self.rate(rate, burst: clause.burst)
            }
        }
        guard self.sink.errorTotal == errorsBefore, registered || rule.name == nil else { return nil }

        let disjuncts: [[Literal]]
        if let logic {
            guard let dnf = logic.negationNormalForm().disjunctiveNormalForm(limit: Self.maximumAlternatives) else {
                self.sink.emit(
                    .tooManyAlternatives,
                    "condition of `\(ruleName)` expands to more than \(Self.maximumAlternatives) alternatives",
                    at: rule.condition!.range,
                    suggestion: "split the rule into several rules, or use `in [...]` lists instead of chains of `or`"
                )
                return nil
            }
            disjuncts = dnf
        } else {
            disjuncts = [[]]
        }
        if disjuncts.count > 1 {
            if inBudget {
                self.sink.emit(
                    .orInBudget,
                    "this condition has \(disjuncts.count) alternatives (from `or`, `not (… and …)` or a list of numbers), which would need one member and one share each",
                    at: rule.condition!.range,
                    suggestion: "split `\(ruleName)` into one rule per alternative, each with its own share"
                )
                return nil
            }
            if let clause = rule.limit {
                self.sink.emit(
                    .limitWithOr,
                    "this condition has \(disjuncts.count) alternatives (from `or`, `not (… and …)` or a list of numbers); with `limit` each would get its own full limit",
                    at: clause.range,
                    suggestion:
                        "split `\(ruleName)` into one rule per alternative, each with its own limit, or put it in a `budget`"
                )
                return nil
            }
        }
        guard rule.name != nil else { return nil }
        if rule.action == .drop, rule.condition == nil, rule.sample == nil {
            self.sink.emit(
                .dropEverything,
                "`drop \(ruleName)` has no condition and drops every trace",
                at: rule.name?.range ?? rule.actionRange,
                suggestion: "add `when …`, or `sample N%` to drop a fraction of all traces"
            )
        }

        var extras: [PolicyKind] = []
        if let sampling { extras.append(.probabilistic(sampling)) }
        if let limit {
            extras.append(limit.spans ? .rateLimiting(limit.limit) : .bytesLimiting(limit.limit))
        }

        var bodies: [PolicyKind] = []
        var reportedRanges = Set<SourceRange>()
        for disjunct in disjuncts {
            guard
                let shaped = self.shape(
                    disjunct,
                    extras: extras,
                    action: rule.action,
                    inBudget: inBudget,
                    reported: &reportedRanges
                )
            else {
                if self.sink.errorTotal > errorsBefore { return nil }
                continue
            }
            if !bodies.contains(shaped) { bodies.append(shaped) }
        }
        let origin = self.sink.reference(rule.actionRange)
        let neverLimit = limit.map { $0.limit.perSecond == 0 } ?? false
        if bodies.isEmpty || neverBySampling || neverLimit {
            let reason =
                neverBySampling
                ? "`sample 0%` keeps nothing"
                : neverLimit ? "a limit of 0 keeps nothing" : "its condition can never be true"
            self.sink.emit(
                rule.action == .drop ? .dropNeverMatches : .neverMatches,
                "rule `\(ruleName)` never matches: \(reason)",
                at: rule.condition?.range ?? rule.name?.range ?? rule.actionRange,
                suggestion: "fix the condition, or remove the rule"
            )
            return []
        }
        if bodies.count == 1 {
            return [Policy(name: ruleName, kind: bodies[0], rule: ruleName, origin: origin)]
        }
        return bodies.enumerated().map { index, kind in
            Policy(name: "\(ruleName)/\(index + 1)", kind: kind, rule: ruleName, origin: origin)
        }
    }

    /// Reads `N spans/s` or `N bytes/s` (with an optional burst).
    private mutating func rate(_ value: Value, burst: Value?) -> (spans: Bool, limit: RateLimit)? {
        var reader = ValueReader(sink: self.sink)
        defer { self.sink = reader.sink }
        guard case .rate(let amount, let unit, let range) = value else {
            reader.wrongType(value, expected: "a rate", example: "2000 spans/s")
            return nil
        }
        var spans: Bool
        var perSecond: Int64
        switch (amount, unit?.name) {
        case (.number, "spans"?):
            spans = true
            guard let n = reader.integer(amount, what: "a span rate", minimum: 0) else { return nil }
            perSecond = n
        case (.number, "bytes"?), (.quantity, nil):
            spans = false
            guard let n = reader.sizeBytes(amount, what: "a byte rate") else { return nil }
            perSecond = n
        case (.number, nil):
            reader.sink.emit(
                .unknownUnit,
                "say what the rate counts",
                at: range,
                suggestion:
                    "write `\(Self.sourceText(amount, self.file)) spans/s` or `\(Self.sourceText(amount, self.file)) bytes/s`"
            )
            return nil
        case (_, let other?):
            let suggestion =
                other == "traces"
                ? "the collector limits spans or bytes per second, not traces; write `spans/s`"
                : Spelling.closest(to: other, in: ["spans", "bytes"]).map { "did you mean `\($0)/s`?" }
                    ?? "write `spans/s` or `bytes/s`"
            reader.sink.emit(.unknownUnit, "unknown rate unit `\(other)/s`", at: unit!.range, suggestion: suggestion)
            return nil
        default:
            reader.wrongType(value, expected: "a rate", example: "2000 spans/s")
            return nil
        }
        var limit = RateLimit(perSecond: perSecond)
        if let burst {
            let value: Int64?
            if spans {
                if case .quantity = burst {
                    reader.sink.emit(
                        .wrongValueType,
                        "a span limit's burst is a number of spans",
                        at: burst.range,
                        suggestion: "write `burst 4000`"
                    )
                    return nil
                }
                value = reader.integer(burst, what: "`burst`", minimum: 1)
            } else {
                value = reader.sizeBytes(burst, what: "`burst`")
            }
            guard let value else { return nil }
            if value < perSecond {
                reader.sink.emit(
                    .valueOutOfRange,
                    "`burst` is smaller than the rate; a trace larger than the burst is never kept",
                    at: burst.range,
                    suggestion: "set the burst to at least the per-second rate"
                )
                return nil
            }
            limit.burst = value
        }
        return (spans, limit)
    }

    // MARK: Shaping a conjunction into policies

    /// Turns one conjunction of literals plus the rule's extras into a policy body, following the
    /// collector's nesting rules. `nil` when it can never match (reported by the caller) or on error.
    private mutating func shape(
        _ literals: [Literal],
        extras: [PolicyKind],
        action: RuleAction,
        inBudget: Bool,
        reported: inout Set<SourceRange>
    ) -> PolicyKind? {
        var durationMin: Int64?
        var durationMax: Int64?
        var spansMin: Int64?
        var spansMax: Int64?
        var tests: [Literal] = []
        var numericKeys: [String: SourceRange] = [:]
        var alwaysTrue: [(Literal, String)] = []
        for literal in literals {
            switch literal.atom {
            case .durationAtLeast(let n):
                if n <= 0 {
                    alwaysTrue.append((literal, "every trace lasts at least 0ms"))
                    continue
                }
                durationMin = max(durationMin ?? n, n)
            case .durationAtMost(let n): durationMax = min(durationMax ?? n, n)
            case .spansAtLeast(let n):
                if n <= 1 {
                    alwaysTrue.append((literal, "every trace has at least one span"))
                    continue
                }
                spansMin = max(spansMin ?? n, n)
            case .spansAtMost(let n): spansMax = min(spansMax ?? n, n)
            default:
                if tests.contains(where: { $0.atom == literal.atom && $0.negated == literal.negated }) { continue }
                if case .numericAttribute(let key, _, _) = literal.atom, !literal.negated {
                    if numericKeys[key] != nil, reported.insert(literal.range).inserted {
                        self.sink.emit(
                            .separateAttributeTests,
                            "the two tests on `\(key)` are checked separately: each may match a different span",
                            at: literal.range,
                            suggestion: "to test one value against both bounds write `attr[\"\(key)\"] in LOW..HIGH`"
                        )
                    }
                    numericKeys[key] = literal.range
                }
                tests.append(literal)
            }
        }
        if let low = durationMin, let high = durationMax, low > high { return nil }
        if let high = durationMax, high < 0 { return nil }
        if let low = spansMin, let high = spansMax, low > high { return nil }
        if let high = spansMax, high < 1 { return nil }
        if let low = spansMin, low > Int64(Int32.max) { return nil }
        if tests.contains(where: { test in
            !test.negated && tests.contains(where: { $0.negated && $0.atom == test.atom })
        }) {
            return nil  // X and not X
        }
        for (literal, reason) in alwaysTrue where reported.insert(literal.range).inserted {
            self.alwaysTrue(literal, reason)
        }
        let aloneInKeep =
            action == .keep && !inBudget && durationMin == nil && tests.isEmpty && extras.isEmpty && spansMin == nil
            && spansMax == nil
        let upperBoundRange =
            literals.first { if case .durationAtMost = $0.atom { true } else { false } }?.range
            ?? SourceRange(start: 0, end: 0)
        if durationMax == 0, !aloneInKeep {
            // The collector reads `upper_threshold_ms: 0` as "no upper bound".
            self.sink.emit(
                .zeroNumericBound,
                "a duration upper bound of 0ms cannot be expressed: the collector reads an upper bound of 0 as \"no bound\"",
                at: upperBoundRange,
                suggestion: "test `duration < 1ms` in a rule of its own"
            )
            return nil
        }
        if let maximum = durationMax, !aloneInKeep {
            if action == .drop {
                self.sink.emit(
                    .unreliableDurationDrop,
                    "a `drop` with an upper bound on `duration` would drop long traces: the collector tests the bound on the duration seen so far, span by span",
                    at: upperBoundRange,
                    suggestion:
                        "drop on other properties; to keep only short traces write `keep NAME when duration < \(maximum + 1)ms` alone"
                )
                return nil
            }
            if durationMin ?? 0 <= 1 {
                // Without a lower bound the collector's window opens at the first span: almost every trace's
                // first spans are short, so the test passes for nearly every trace.
                let context =
                    inBudget
                    ? "in a budget member" : extras.isEmpty ? "combined with other tests" : "with `sample` or `limit`"
                self.sink.emit(
                    .unreliableDurationBound,
                    "an upper bound on `duration` \(context) matches nearly every trace: the collector tests it on the duration seen so far, span by span, and a trace's first spans are short",
                    at: upperBoundRange,
                    suggestion:
                        "write `keep NAME when duration < \(maximum + 1)ms` as a rule of its own (exact); to leave out long traces of this kind use `drop NAME when … and duration > \(maximum)ms`"
                )
                return nil
            }
            if reported.insert(upperBoundRange).inserted {
                self.sink.emit(
                    .durationWindow,
                    "the collector tests this upper bound on the duration seen so far as it reads spans, so a trace longer than \(maximum)ms can still match",
                    at: upperBoundRange,
                    suggestion:
                        "use only a lower bound (`duration > …`), or put `duration < …` alone in a `keep` rule, which is exact"
                )
            }
        }

        // Leaves: (kind without inversion, negated, invertible, range)
        var leaves: [(kind: PolicyKind, negated: Bool, invertible: Bool, range: SourceRange?)] = []
        if durationMin != nil || durationMax != nil {
            leaves.append((.latency(LatencyBounds(minimumMs: durationMin, maximumMs: durationMax)), false, false, nil))
        }
        if spansMin != nil || spansMax != nil {
            let minimum = Int32(clamping: spansMin ?? 0)
            let maximum = spansMax.map { Int32(clamping: $0) }
            leaves.append((.spanCount(SpanCountBounds(minimum: minimum, maximum: maximum)), false, false, nil))
        }
        for literal in tests {
            leaves.append((self.leaf(literal.atom), literal.negated, literal.atom.isInvertible, literal.range))
        }
        for extra in extras {
            leaves.append((extra, false, false, nil))
        }

        let nested = action == .drop || inBudget || leaves.count > 1
        if nested, let bad = leaves.first(where: { $0.negated && !$0.invertible }) {
            let context: String
            if action == .drop {
                context = "a `drop` rule"
            } else if inBudget {
                context = "a budget"
            } else if leaves.count - extras.count == 1 {
                context = "a rule with `sample` or `limit`"
            } else {
                context = "`and`"
            }
            self.sink.emit(
                .unfaithfulNegation,
                "this negation cannot be compiled faithfully in \(context): the collector allows `not` only around a whole top-level rule",
                at: bad.range ?? SourceRange(start: 0, end: 0),
                suggestion:
                    "put `not …` alone in a `keep` rule of its own, or test the positive form (\"some span is not OK\" is `status in [ERROR, UNSET]`)"
            )
            return nil
        }
        func inverted(_ leaf: (kind: PolicyKind, negated: Bool, invertible: Bool, range: SourceRange?)) -> PolicyKind {
            guard leaf.negated else { return leaf.kind }
            switch leaf.kind {
            case .stringAttribute(var test):
                test.invert = true
                return .stringAttribute(test)
            case .numericAttribute(var test):
                test.invert = true
                return .numericAttribute(test)
            case .booleanAttribute(var test):
                test.invert = true
                return .booleanAttribute(test)
            default:
                return leaf.kind
            }
        }
        let members = Self.named(leaves.map(inverted))
        switch (action, inBudget) {
        case (.drop, _):
            if leaves.isEmpty { return .drop([Policy(name: "always_sample", kind: .alwaysSample)]) }
            return .drop(members)
        case (.keep, true):
            if members.isEmpty { return .alwaysSample }
            return members.count == 1 ? members[0].kind : .and(members)
        case (.keep, false):
            if leaves.isEmpty { return .alwaysSample }
            if leaves.count > 1 { return .and(members) }
            let only = leaves[0]
            if only.negated {
                return .not(Policy(name: only.kind.typeName, kind: only.kind))
            }
            if case .latency(let bounds) = only.kind, bounds.minimumMs == nil, let maximum = bounds.maximumMs {
                // `duration < X` alone: exactly "not at least X", without the upper-bound window's quirks.
                let inner = PolicyKind.latency(LatencyBounds(minimumMs: maximum + 1, maximumMs: nil))
                return .not(Policy(name: inner.typeName, kind: inner))
            }
            return only.kind
        }
    }

    private mutating func alwaysTrue(_ literal: Literal, _ reason: String) {
        self.sink.emit(
            .alwaysTrue,
            "this condition is always true: \(reason)",
            at: literal.range,
            suggestion: "remove it"
        )
    }

    /// Names nested members by type, numbering repeats.
    private static func named(_ kinds: [PolicyKind]) -> [Policy] {
        var counts: [String: Int] = [:]
        return kinds.map { kind in
            let base = kind.typeName
            counts[base, default: 0] += 1
            let count = counts[base]!
            return Policy(name: count == 1 ? base : "\(base)-\(count)", kind: kind)
        }
    }

    private func leaf(_ atom: Atom) -> PolicyKind {
        switch atom {
        case .status(let codes): .statusCode(codes)
        case .stringAttribute(let key, let values, let regex):
            .stringAttribute(StringAttributeTest(key: key, values: values, regex: regex))
        case .numericAttribute(let key, let minimum, let maximum):
            .numericAttribute(NumericAttributeTest(key: key, minimum: minimum, maximum: maximum))
        case .booleanAttribute(let key, let value): .booleanAttribute(BooleanAttributeTest(key: key, value: value))
        case .traceState(let key, let values): .traceState(TraceStateTest(key: key, values: values))
        case .sampledFlag: .traceFlags
        case .ottlSpan(let condition): .ottlCondition(OTTLConditions(span: [condition], spanEvent: []))
        case .ottlEvent(let condition): .ottlCondition(OTTLConditions(span: [], spanEvent: [condition]))
        case .durationAtLeast(let n): .latency(LatencyBounds(minimumMs: n, maximumMs: nil))
        case .durationAtMost(let n): .latency(LatencyBounds(minimumMs: nil, maximumMs: n))
        case .spansAtLeast(let n): .spanCount(SpanCountBounds(minimum: Int32(clamping: n), maximum: nil))
        case .spansAtMost(let n): .spanCount(SpanCountBounds(minimum: 0, maximum: Int32(clamping: n)))
        }
    }
}
