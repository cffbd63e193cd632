/// The syntax tree of one policy file. It keeps every source range so that later stages can point
/// at exact spans and the formatter can print the file back.

struct Identifier: Sendable, Hashable {
    var name: String
    var range: SourceRange
}

struct StringLiteral: Sendable, Hashable {
    /// The decoded value (`\"` and `\\` unescaped; any other backslash kept as written).
    var value: String
    var range: SourceRange
}

indirect enum Value: Sendable, Hashable {
    case string(StringLiteral)
    case number(text: String, range: SourceRange)
    /// `500ms`: the number's text and the unit's text.
    case quantity(number: String, unit: String, range: SourceRange)
    case identifier(Identifier)
    case list([Value], range: SourceRange)
    case range(Value, Value, range: SourceRange)
    /// `2000 spans/s`, `8MiB/s`, `1000/s`.
    case rate(amount: Value, unit: Identifier?, range: SourceRange)

    var range: SourceRange {
        switch self {
        case .string(let literal): literal.range
        case .number(_, let range), .quantity(_, _, let range), .list(_, let range), .range(_, _, let range),
            .rate(_, _, let range):
            range
        case .identifier(let identifier): identifier.range
        }
    }
}

enum ComparisonOperator: String, Sendable, Hashable {
    case equal = "=="
    case notEqual = "!="
    case greater = ">"
    case greaterOrEqual = ">="
    case less = "<"
    case lessOrEqual = "<="
    case `in` = "in"
    case notIn = "not in"
    case matches = "matches"
    case notMatches = "not matches"
}

/// `attr["http.route"] matches "/health"`, `status == ERROR`, `ottl span "…"`, `sampled_flag`.
struct Predicate: Sendable, Hashable {
    var subject: Identifier
    /// `attr["key"]`, `tracestate["key"]`.
    var key: StringLiteral?
    /// `ottl span` / `ottl event`.
    var qualifier: Identifier?
    /// The OTTL condition text.
    var argument: StringLiteral?
    var op: ComparisonOperator?
    var opRange: SourceRange
    var value: Value?
    var range: SourceRange
}

indirect enum Expression: Sendable, Hashable {
    case predicate(Predicate)
    case not(Expression, range: SourceRange)
    case and([Expression], range: SourceRange)
    case or([Expression], range: SourceRange)
    case parenthesized(Expression, range: SourceRange)
    /// Placeholder left by error recovery; already reported.
    case missing(range: SourceRange)

    var range: SourceRange {
        switch self {
        case .predicate(let predicate): predicate.range
        case .not(_, let range), .and(_, let range), .or(_, let range), .parenthesized(_, let range),
            .missing(let range):
            range
        }
    }
}

enum RuleAction: String, Sendable, Hashable {
    case keep
    case drop
}

struct SampleClause: Sendable, Hashable {
    var percentage: Value?
    var salt: StringLiteral?
    var range: SourceRange
}

struct LimitClause: Sendable, Hashable {
    var rate: Value?
    var burst: Value?
    var range: SourceRange
}

struct RuleDeclaration: Sendable, Hashable {
    var action: RuleAction
    var actionRange: SourceRange
    var name: Identifier?
    var condition: Expression?
    var whenRange: SourceRange?
    var sample: SampleClause?
    var limit: LimitClause?
    var share: Value?
    var shareRange: SourceRange?
    var range: SourceRange
}

struct BudgetDeclaration: Sendable, Hashable {
    var keywordRange: SourceRange
    var name: Identifier?
    var rate: Value?
    var rules: [RuleDeclaration]
    var range: SourceRange
}

struct Setting: Sendable, Hashable {
    var name: Identifier
    var values: [Value]
    var range: SourceRange
}

struct SamplerDeclaration: Sendable, Hashable {
    var keywordRange: SourceRange
    var settings: [Setting]
    var range: SourceRange
}

enum Declaration: Sendable, Hashable {
    case rule(RuleDeclaration)
    case budget(BudgetDeclaration)
    case sampler(SamplerDeclaration)

    var range: SourceRange {
        switch self {
        case .rule(let rule): rule.range
        case .budget(let budget): budget.range
        case .sampler(let sampler): sampler.range
        }
    }
}

/// A parsed file: declarations in order plus the comments the formatter puts back.
struct FileSyntax: Sendable {
    var file: SourceFile
    var declarations: [Declaration]
    var comments: [Comment]
}

/// Words with a fixed meaning in the language; they cannot name rules.
enum Keyword {
    static let declarationStarts: Set<String> = ["keep", "drop", "budget", "sampler"]
    static let clauses: Set<String> = ["when", "sample", "limit", "share"]
    static let reserved: Set<String> = declarationStarts.union(clauses).union([
        "and", "or", "not", "in", "matches", "salt", "burst",
    ])
}
