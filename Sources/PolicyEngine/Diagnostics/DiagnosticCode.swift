/// Every problem the policy compiler can report has a stable code. Codes never change meaning and are
/// never reused; `docs/diagnostics.md` has an example and a fix for each.
///
/// - `TP1xxx`: reading the bytes (characters, strings, encoding)
/// - `TP2xxx`: grammar
/// - `TP3xxx`: meaning (names, types, values, what the collector can express)
/// - `TP4xxx`: lint warnings (the policy set compiles, but probably does not do what was meant)
public enum DiagnosticCode: String, Sendable, Hashable, Codable, CaseIterable {
    // Lexical
    case unexpectedCharacter = "TP1001"
    case invalidUTF8 = "TP1002"
    case unterminatedString = "TP1003"
    case nulByte = "TP1004"
    case invalidNumber = "TP1005"
    case emptyFile = "TP1006"
    case singleEquals = "TP1007"
    case tooManyErrors = "TP1099"

    // Grammar
    case expectedDeclaration = "TP2001"
    case expectedName = "TP2002"
    case expectedExpression = "TP2003"
    case expectedToken = "TP2004"
    case unexpectedToken = "TP2005"
    case nestingTooDeep = "TP2006"
    case reservedName = "TP2007"
    case duplicateClause = "TP2008"
    case expectedValue = "TP2009"

    // Meaning
    case unknownField = "TP3001"
    case unsupportedOperator = "TP3002"
    case wrongValueType = "TP3003"
    case unknownUnit = "TP3004"
    case unknownStatusCode = "TP3005"
    case duplicateRuleName = "TP3006"
    case duplicateSamplerBlock = "TP3007"
    case unknownSetting = "TP3008"
    case invalidSettingValue = "TP3009"
    case zeroNumericBound = "TP3010"
    case unfaithfulNegation = "TP3011"
    case limitWithOr = "TP3012"
    case orInBudget = "TP3013"
    case missingShare = "TP3014"
    case sharesOverBudget = "TP3015"
    case misplacedShare = "TP3016"
    case invalidRegex = "TP3017"
    case emptyStringValue = "TP3018"
    case subMillisecondDuration = "TP3019"
    case tooManyAlternatives = "TP3020"
    case valueOutOfRange = "TP3021"
    case dropInBudget = "TP3022"
    case emptyList = "TP3023"
    case reversedRange = "TP3024"
    case emptyBudget = "TP3025"
    case duplicateSetting = "TP3026"
    case invalidPercentage = "TP3027"
    case limitInBudget = "TP3028"
    case unreliableDurationDrop = "TP3029"
    case unreliableDurationBound = "TP3030"

    // Lint
    case duplicateCondition = "TP4001"
    case shadowedByKeepAll = "TP4002"
    case neverMatches = "TP4003"
    case alwaysTrue = "TP4004"
    case dropNeverMatches = "TP4005"
    case percentageOver100 = "TP4006"
    case unreachableAllocation = "TP4007"
    case unusedBudget = "TP4008"
    case dropEverything = "TP4009"
    case separateAttributeTests = "TP4010"
    case decisionWaitTooShort = "TP4011"
    case decisionCacheTooSmall = "TP4012"
    case durationWindow = "TP4013"

    /// The severity a diagnostic with this code has.
    public var severity: Severity {
        self.rawValue.hasPrefix("TP4") ? .warning : .error
    }
}

/// How serious a diagnostic is.
public enum Severity: String, Sendable, Hashable, Codable, Comparable {
    /// The policy set cannot be compiled.
    case error
    /// The policy set compiles, but likely does not mean what was intended.
    case warning
    /// Extra context attached to another diagnostic.
    case note

    private var rank: Int {
        switch self {
        case .error: 2
        case .warning: 1
        case .note: 0
        }
    }

    public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs.rank < rhs.rank }
}
