/// A condition reduced to tests the collector can run, before it is shaped into policies.
enum Atom: Hashable, Sendable {
    /// Some span has one of these statuses.
    case status([StatusCode])
    /// Trace duration (whole ms) is at least / at most.
    case durationAtLeast(Int64)
    case durationAtMost(Int64)
    /// Span count is at least / at most.
    case spansAtLeast(Int64)
    case spansAtMost(Int64)
    case stringAttribute(key: String, values: [String], regex: Bool)
    case numericAttribute(key: String, minimum: Int64?, maximum: Int64?)
    case booleanAttribute(key: String, value: Bool)
    case traceState(key: String, values: [String])
    case sampledFlag
    case ottlSpan(String)
    case ottlEvent(String)

    /// Trace-level quantities negate exactly by flipping the bound.
    var isTraceLevelBound: Bool {
        switch self {
        case .durationAtLeast, .durationAtMost, .spansAtLeast, .spansAtMost: true
        default: false
        }
    }

    /// Attribute tests can be negated inside `and`/`drop`/`composite` with `invert_match`.
    var isInvertible: Bool {
        switch self {
        case .stringAttribute, .numericAttribute, .booleanAttribute: true
        default: false
        }
    }
}

struct Literal: Hashable, Sendable {
    var atom: Atom
    var negated: Bool
    var range: SourceRange

    /// The negation, exact for trace-level bounds.
    var negation: Literal {
        var result = self
        switch self.atom {
        case .durationAtLeast(let n): result.atom = .durationAtMost(n == Int64.min ? n : n - 1)
        case .durationAtMost(let n): result.atom = .durationAtLeast(n == Int64.max ? n : n + 1)
        case .spansAtLeast(let n): result.atom = .spansAtMost(n == Int64.min ? n : n - 1)
        case .spansAtMost(let n): result.atom = .spansAtLeast(n == Int64.max ? n : n + 1)
        default: result.negated.toggle()
        }
        return result
    }
}

indirect enum Logic: Sendable {
    case literal(Literal)
    case and([Logic])
    case or([Logic])
    case not(Logic)

    /// Negation normal form: `not` only on literals (and trace-level bounds flipped instead).
    func negationNormalForm(negate: Bool = false) -> Logic {
        switch self {
        case .literal(let literal):
            return .literal(negate ? literal.negation : literal)
        case .not(let inner):
            return inner.negationNormalForm(negate: !negate)
        case .and(let items):
            let mapped = items.map { $0.negationNormalForm(negate: negate) }
            return negate ? .or(mapped) : .and(mapped)
        case .or(let items):
            let mapped = items.map { $0.negationNormalForm(negate: negate) }
            return negate ? .and(mapped) : .or(mapped)
        }
    }

    /// Disjunctive normal form of an NNF tree, or `nil` when it has more than `limit` alternatives.
    func disjunctiveNormalForm(limit: Int) -> [[Literal]]? {
        switch self {
        case .literal(let literal):
            return [[literal]]
        case .not(let inner):
            return inner.negationNormalForm(negate: true).disjunctiveNormalForm(limit: limit)
        case .or(let items):
            var result: [[Literal]] = []
            for item in items {
                guard let part = item.disjunctiveNormalForm(limit: limit) else { return nil }
                result.append(contentsOf: part)
                if result.count > limit { return nil }
            }
            return result
        case .and(let items):
            var result: [[Literal]] = [[]]
            for item in items {
                guard let part = item.disjunctiveNormalForm(limit: limit) else { return nil }
                if part.count == 1 {
                    for index in result.indices { result[index].append(contentsOf: part[0]) }
                    continue
                }
                guard result.count * part.count <= limit else { return nil }
                var product: [[Literal]] = []
                product.reserveCapacity(result.count * part.count)
                for left in result {
                    for right in part { product.append(left + right) }
                }
                result = product
            }
            return result
        }
    }
}
