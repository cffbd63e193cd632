/// Recursive-descent parser with error recovery.
///
/// Rules, as in swift-syntax: consuming functions are `mutating`; a missing piece is reported and
/// replaced by a placeholder instead of throwing, so one run reports every error; nesting is bounded
/// by ``maximumNesting`` so hostile input cannot overflow the stack; every loop consumes at least one
/// token or stops.
struct Parser {
    /// Deepest parenthesis / `not` nesting accepted in a condition.
    static let maximumNesting = 64

    private let file: SourceFile
    private let tokens: [Token]
    private var index = 0
    var sink: DiagnosticSink

    static func parse(_ file: SourceFile) -> (FileSyntax, DiagnosticSink) {
        var sink = DiagnosticSink(file: file)
        let (tokens, comments) = Lexer.tokenize(file, into: &sink)
        var parser = Parser(file: file, tokens: tokens, sink: sink)
        let declarations = parser.parseDeclarations()
        // Only whitespace and `;` separators: nothing is declared, and formatting would leave nothing at all.
        if tokens.allSatisfy({ $0.kind == .semicolon || $0.kind == .endOfFile }),
            !file.bytes.contains(where: { $0 > 0x20 && $0 != UInt8(ascii: ";") })
        {
            parser.sink.emit(
                .emptyFile,
                "policy file is empty",
                at: SourceRange(start: 0, end: 0),
                suggestion: "add rules such as `keep errors when status == ERROR`, or delete the file"
            )
        }
        return (FileSyntax(file: file, declarations: declarations, comments: comments), parser.sink)
    }

    private init(file: SourceFile, tokens: [Token], sink: DiagnosticSink) {
        self.file = file
        self.tokens = tokens
        self.sink = sink
    }

    // MARK: Token access

    private var current: Token { self.tokens[self.index] }
    private func peek(_ offset: Int = 1) -> Token {
        self.tokens[min(self.index + offset, self.tokens.count - 1)]
    }
    private var atEnd: Bool { self.current.kind == .endOfFile }

    private func text(_ token: Token) -> String { self.file.text(token.range) }

    private func isWord(_ word: String, _ token: Token? = nil) -> Bool {
        let token = token ?? self.current
        guard token.kind == .identifier, token.range.end - token.range.start == word.utf8.count else { return false }
        return self.file.bytes[token.range.start..<token.range.end].elementsEqual(word.utf8)
    }

    private func isAnyWord(_ words: Set<String>, _ token: Token? = nil) -> Bool {
        let token = token ?? self.current
        return token.kind == .identifier && words.contains(self.text(token))
    }

    private var atDeclarationStart: Bool { self.isAnyWord(Keyword.declarationStarts) }

    @discardableResult
    private mutating func advance() -> Token {
        let token = self.current
        if token.kind != .endOfFile { self.index += 1 }
        return token
    }

    private var previousEnd: Int { self.index > 0 ? self.tokens[self.index - 1].range.end : 0 }

    /// Consumes a token of `kind` or reports what was expected.
    @discardableResult
    private mutating func expect(_ kind: TokenKind, _ context: String, suggestion: String? = nil) -> Token? {
        if self.current.kind == kind { return self.advance() }
        // A missing closer is best shown where the line ended, not on the next declaration.
        let atPrevious = self.current.kind == .endOfFile || (self.current.startsLine && self.index > 0)
        self.sink.emit(
            .expectedToken,
            "expected \(kind.spelling) \(context), found \(self.describe(self.current))",
            at: atPrevious ? SourceRange(start: self.previousEnd, end: self.previousEnd) : self.current.range,
            suggestion: suggestion
        )
        return nil
    }

    private func describe(_ token: Token) -> String {
        switch token.kind {
        case .endOfFile: "end of file"
        case .identifier, .number, .quantity: "`\(self.text(token))`"
        case .string: "a string"
        default: token.kind.spelling
        }
    }

    // MARK: Declarations

    private mutating func parseDeclarations() -> [Declaration] {
        var declarations: [Declaration] = []
        while !self.atEnd {
            if let declaration = self.parseDeclaration(inBudget: false) {
                declarations.append(declaration)
            }
        }
        return declarations
    }

    private mutating func parseDeclaration(inBudget: Bool) -> Declaration? {
        if self.isWord("keep") || self.isWord("drop") {
            return .rule(self.parseRule(inBudget: inBudget))
        }
        if self.isWord("budget"), !inBudget {
            return self.parseBudget().map(Declaration.budget)
        }
        if self.isWord("sampler"), !inBudget {
            return self.parseSampler().map(Declaration.sampler)
        }
        if self.current.kind == .semicolon {
            self.advance()
            return nil
        }
        let token = self.current
        var suggestion = "a declaration starts with `keep`, `drop`, `budget` or `sampler`"
        if token.kind == .identifier,
            let close = Spelling.closest(to: self.text(token), in: ["keep", "drop", "budget", "sampler"])
        {
            suggestion = "did you mean `\(close)`?"
        }
        self.sink.emit(
            .expectedDeclaration,
            "expected a declaration, found \(self.describe(token))",
            at: token.range,
            suggestion: suggestion
        )
        self.advance()
        self.skipToDeclaration(stopAtBrace: inBudget)
        return nil
    }

    /// Skips tokens until something that can start a declaration (or `}` inside a block).
    private mutating func skipToDeclaration(stopAtBrace: Bool) {
        while !self.atEnd, !self.atDeclarationStart {
            if stopAtBrace, self.current.kind == .rightBrace { return }
            self.advance()
        }
    }

    private mutating func parseRule(inBudget: Bool) -> RuleDeclaration {
        let actionToken = self.advance()
        let action: RuleAction = self.isWord("keep", actionToken) ? .keep : .drop
        var rule = RuleDeclaration(
            action: action,
            actionRange: actionToken.range,
            name: nil,
            condition: nil,
            range: actionToken.range
        )
        if self.current.kind == .identifier, !Keyword.reserved.contains(self.text(self.current)) {
            let token = self.advance()
            rule.name = Identifier(name: self.text(token), range: token.range)
        } else if self.current.kind == .identifier, !Keyword.clauses.contains(self.text(self.current)) {
            let token = self.advance()
            self.sink.emit(
                .reservedName,
                "`\(self.text(token))` is a keyword and cannot name a rule",
                at: token.range,
                suggestion: "choose another name, for example `\(self.text(token))_rule`"
            )
            rule.name = Identifier(name: self.text(token), range: token.range)
        } else {
            self.sink.emit(
                .expectedName,
                "expected a rule name after `\(action.rawValue)`, found \(self.describe(self.current))",
                at: self.current.kind == .endOfFile ? actionToken.range : self.current.range,
                suggestion: "name every rule: `\(action.rawValue) errors when status == ERROR`"
            )
        }
        clauses: while true {
            guard self.current.kind == .identifier else { break }
            let keywordToken = self.current
            switch self.text(keywordToken) {
            case "when":
                self.advance()
                if rule.condition != nil { self.duplicateClause("when", keywordToken) }
                rule.whenRange = keywordToken.range
                rule.condition = self.parseExpression()
            case "sample":
                self.advance()
                if rule.sample != nil { self.duplicateClause("sample", keywordToken) }
                var clause = SampleClause(
                    percentage: self.parseValue(context: "after `sample`"),
                    range: keywordToken.range
                )
                if self.isWord("salt") {
                    self.advance()
                    if self.current.kind == .string {
                        clause.salt = self.stringLiteral(self.advance())
                    } else {
                        self.expect(.string, "after `salt`", suggestion: "write `salt \"tier-2\"`")
                    }
                }
                clause.range = keywordToken.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
                rule.sample = clause
            case "limit":
                self.advance()
                if rule.limit != nil { self.duplicateClause("limit", keywordToken) }
                var clause = LimitClause(rate: self.parseValue(context: "after `limit`"), range: keywordToken.range)
                if self.isWord("burst") {
                    self.advance()
                    clause.burst = self.parseValue(context: "after `burst`")
                }
                clause.range = keywordToken.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
                rule.limit = clause
            case "share":
                self.advance()
                if rule.share != nil { self.duplicateClause("share", keywordToken) }
                rule.shareRange = keywordToken.range
                rule.share = self.parseValue(context: "after `share`")
            default:
                break clauses
            }
        }
        rule.range = rule.actionRange.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
        // A stray word at the start of a line is most likely a misspelt declaration: leave it to the
        // declaration loop, which suggests `keep`/`drop`/….
        let strayDeclaration =
            self.current.startsLine && self.current.kind == .identifier
            && !self.isAnyWord(["and", "or", "not"])
        if !self.atEnd, !self.atDeclarationStart, !(inBudget && self.current.kind == .rightBrace),
            self.current.kind != .semicolon, !strayDeclaration
        {
            let token = self.current
            var suggestion: String
            if token.kind == .identifier, let close = Spelling.closest(to: self.text(token), in: Keyword.clauses) {
                suggestion = "did you mean `\(close)`?"
            } else if rule.condition != nil, token.kind == .identifier {
                suggestion = "join conditions with `and` or `or`"
            } else if rule.condition == nil, token.kind == .identifier {
                suggestion =
                    "write the condition after `when`: `\(action.rawValue) \(rule.name?.name ?? "name") when …`"
            } else {
                suggestion = "a rule reads `\(action.rawValue) NAME [when CONDITION] [sample N%] [limit N spans/s]`"
            }
            self.sink.emit(
                .unexpectedToken,
                "unexpected \(self.describe(token)) in rule `\(rule.name?.name ?? action.rawValue)`",
                at: token.range,
                suggestion: suggestion
            )
            self.advance()
            self.skipToDeclaration(stopAtBrace: inBudget)
        }
        return rule
    }

    private mutating func duplicateClause(_ word: String, _ token: Token) {
        self.sink.emit(
            .duplicateClause,
            "`\(word)` appears twice in one rule",
            at: token.range,
            suggestion: word == "when" ? "combine the conditions with `and` or `or`" : "keep one `\(word)` clause"
        )
    }

    private mutating func parseBudget() -> BudgetDeclaration? {
        let keyword = self.advance()
        var budget = BudgetDeclaration(
            keywordRange: keyword.range,
            name: nil,
            rate: nil,
            rules: [],
            range: keyword.range
        )
        if self.current.kind == .identifier, !Keyword.reserved.contains(self.text(self.current)) {
            let token = self.advance()
            budget.name = Identifier(name: self.text(token), range: token.range)
        } else {
            self.sink.emit(
                .expectedName,
                "expected a budget name after `budget`, found \(self.describe(self.current))",
                at: self.current.kind == .endOfFile ? keyword.range : self.current.range,
                suggestion: "write `budget checkout 1000 spans/s { … }`"
            )
        }
        if self.current.kind != .leftBrace {
            budget.rate = self.parseValue(context: "after the budget name (the fleet-wide rate, e.g. `1000 spans/s`)")
        }
        guard
            self.expect(
                .leftBrace,
                "to open the budget",
                suggestion: "write `budget NAME 1000 spans/s { keep … share 50% }`"
            )
                != nil
        else {
            self.skipToDeclaration(stopAtBrace: false)
            budget.range = keyword.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
            return budget
        }
        while !self.atEnd, self.current.kind != .rightBrace {
            if self.isWord("budget") || self.isWord("sampler") { break }
            if case .rule(let rule)? = self.parseDeclaration(inBudget: true) {
                budget.rules.append(rule)
            }
        }
        if self.current.kind == .rightBrace {
            self.advance()
        } else {
            let opened = self.file.location(of: keyword.range.start)
            self.expect(
                .rightBrace,
                "to close the budget opened at line \(opened.line)",
                suggestion: "add `}` after the budget's last rule"
            )
        }
        budget.range = keyword.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
        return budget
    }

    private mutating func parseSampler() -> SamplerDeclaration? {
        let keyword = self.advance()
        var sampler = SamplerDeclaration(keywordRange: keyword.range, settings: [], range: keyword.range)
        guard self.expect(.leftBrace, "after `sampler`", suggestion: "write `sampler { decision_wait 30s }`") != nil
        else {
            self.skipToDeclaration(stopAtBrace: false)
            return sampler
        }
        while !self.atEnd, self.current.kind != .rightBrace, !self.atDeclarationStart {
            if self.current.kind == .semicolon {
                self.advance()
                continue
            }
            guard self.current.kind == .identifier else {
                self.sink.emit(
                    .expectedName,
                    "expected a setting name, found \(self.describe(self.current))",
                    at: self.current.range,
                    suggestion: "settings read `decision_wait 30s`, `max_traces 200000`, …"
                )
                self.advance()
                continue
            }
            let nameToken = self.advance()
            var setting = Setting(
                name: Identifier(name: self.text(nameToken), range: nameToken.range),
                values: [],
                range: nameToken.range
            )
            while self.startsSettingValue() {
                guard let value = self.parseValue(context: "in setting `\(setting.name.name)`") else { break }
                setting.values.append(value)
            }
            setting.range = nameToken.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
            sampler.settings.append(setting)
        }
        if self.current.kind == .rightBrace {
            self.advance()
        } else {
            let opened = self.file.location(of: keyword.range.start)
            self.expect(
                .rightBrace,
                "to close the `sampler` block opened at line \(opened.line)",
                suggestion: "add `}` after the last setting"
            )
        }
        sampler.range = keyword.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
        return sampler
    }

    private func startsSettingValue() -> Bool {
        // A setting's values are on its own line, up to the next setting's name or `;`.
        if self.current.startsLine { return false }
        switch self.current.kind {
        case .string, .number, .quantity, .leftBracket: return true
        case .identifier:
            let word = self.text(self.current)
            return !SamplerSettingSchema.isSettingName(word) && !Keyword.declarationStarts.contains(word)
        default: return false
        }
    }

    // MARK: Values

    private func stringLiteral(_ token: Token) -> StringLiteral {
        var bytes = self.file.bytes[token.range.start..<token.range.end].dropFirst()
        if bytes.last == UInt8(ascii: "\""), token.range.end - token.range.start >= 2,
            !Self.endsWithEscapedQuote(bytes)
        {
            bytes = bytes.dropLast()
        }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count)
        var iterator = bytes.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "\\") {
                guard let next = iterator.next() else {
                    decoded.append(byte)
                    break
                }
                if next != UInt8(ascii: "\"") && next != UInt8(ascii: "\\") { decoded.append(byte) }
                decoded.append(next)
            } else {
                decoded.append(byte)
            }
        }
        return StringLiteral(value: String(decoding: decoded, as: UTF8.self), range: token.range)
    }

    /// True when the final `"` of an unterminated literal is itself escaped (`"abc\"`).
    private static func endsWithEscapedQuote(_ bytes: ArraySlice<UInt8>) -> Bool {
        var backslashes = 0
        var index = bytes.index(before: bytes.endIndex)
        while index > bytes.startIndex {
            index = bytes.index(before: index)
            if bytes[index] == UInt8(ascii: "\\") { backslashes += 1 } else { break }
        }
        return backslashes % 2 == 1
    }

    private mutating func parseValue(context: String) -> Value? {
        let token = self.current
        switch token.kind {
        case .string:
            self.advance()
            return .string(self.stringLiteral(token))
        case .number, .quantity:
            self.advance()
            let value: Value =
                token.kind == .number
                ? .number(text: self.text(token), range: token.range)
                : .quantity(
                    number: self.file.text(SourceRange(start: token.range.start, end: token.unitStart)),
                    unit: self.file.text(SourceRange(start: token.unitStart, end: token.range.end)),
                    range: token.range
                )
            if self.current.kind == .dotDot {
                self.advance()
                let upperToken = self.current
                guard upperToken.kind == .number || upperToken.kind == .quantity else {
                    self.expect(.number, "after `..`", suggestion: "write a range as `500..599`")
                    return value
                }
                guard let upper = self.parseValue(context: context) else { return value }
                return .range(value, upper, range: token.range.union(upper.range))
            }
            if self.current.kind == .identifier, self.peek().kind == .slash {
                let unitToken = self.advance()
                return self.finishRate(
                    amount: value,
                    unit: Identifier(name: self.text(unitToken), range: unitToken.range),
                    start: token.range
                )
            }
            if self.current.kind == .slash {
                return self.finishRate(amount: value, unit: nil, start: token.range)
            }
            return value
        case .identifier:
            self.advance()
            return .identifier(Identifier(name: self.text(token), range: token.range))
        case .leftBracket:
            self.advance()
            var items: [Value] = []
            while self.current.kind != .rightBracket, !self.atEnd, !self.atDeclarationStart {
                guard let item = self.parseValue(context: "in list") else {
                    self.advance()
                    continue
                }
                items.append(item)
                if self.current.kind == .comma {
                    self.advance()
                } else if self.current.kind != .rightBracket {
                    if self.atDeclarationStart || self.current.startsLine { break }
                    self.expect(
                        .comma,
                        "between list items",
                        suggestion: "separate items with commas: `[\"a\", \"b\"]`"
                    )
                    if self.current.kind != .string && self.current.kind != .number && self.current.kind != .quantity
                        && self.current.kind != .identifier
                    {
                        break
                    }
                }
            }
            if self.current.kind == .rightBracket {
                self.advance()
            } else {
                self.expect(.rightBracket, "to close the list", suggestion: "add `]` after the last item")
            }
            return .list(items, range: token.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd)))
        default:
            self.sink.emit(
                .expectedValue,
                "expected a value \(context), found \(self.describe(token))",
                at: token.kind == .endOfFile ? SourceRange(start: self.previousEnd, end: self.previousEnd) : token.range
            )
            return nil
        }
    }

    private mutating func finishRate(amount: Value, unit: Identifier?, start: SourceRange) -> Value {
        self.advance()  // `/`
        if self.current.kind == .identifier, self.isWord("s") {
            self.advance()
        } else {
            self.sink.emit(
                .expectedToken,
                "expected `s` after `/`: rates are per second",
                at: self.current.kind == .endOfFile
                    ? SourceRange(start: self.previousEnd, end: self.previousEnd) : self.current.range,
                suggestion: "write `2000 spans/s` or `8MiB/s`"
            )
            if self.current.kind == .identifier { self.advance() }
        }
        return .rate(
            amount: amount,
            unit: unit,
            range: start.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
        )
    }

    // MARK: Expressions

    private mutating func parseExpression() -> Expression {
        self.parseOr(depth: 0)
    }

    private var atOr: Bool { self.isWord("or") || self.current.kind == .symbolicOr }
    private var atAnd: Bool { self.isWord("and") || self.current.kind == .symbolicAnd }

    private mutating func parseOr(depth: Int) -> Expression {
        let first = self.parseAnd(depth: depth)
        guard self.atOr else { return first }
        var operands = [first]
        while self.atOr {
            self.advance()
            operands.append(self.parseAnd(depth: depth))
        }
        return .or(operands, range: first.range.union(operands.last!.range))
    }

    private mutating func parseAnd(depth: Int) -> Expression {
        let first = self.parseUnary(depth: depth)
        guard self.atAnd else { return first }
        var operands = [first]
        while self.atAnd {
            self.advance()
            operands.append(self.parseUnary(depth: depth))
        }
        return .and(operands, range: first.range.union(operands.last!.range))
    }

    private mutating func parseUnary(depth: Int) -> Expression {
        var nots: [SourceRange] = []
        while self.isWord("not") {
            nots.append(self.advance().range)
            if depth + nots.count > Self.maximumNesting {
                self.sink.emit(
                    .nestingTooDeep,
                    "condition nested more than \(Self.maximumNesting) levels deep",
                    at: nots.last!,
                    suggestion: "simplify the condition; `not not X` is just `X`"
                )
                while self.isWord("not") { self.advance() }
                break
            }
        }
        var expression = self.parsePrimary(depth: depth + nots.count)
        for range in nots.reversed() {
            expression = .not(expression, range: range.union(expression.range))
        }
        return expression
    }

    private mutating func parsePrimary(depth: Int) -> Expression {
        let token = self.current
        if token.kind == .leftParen {
            if depth + 1 > Self.maximumNesting {
                self.sink.emit(
                    .nestingTooDeep,
                    "condition nested more than \(Self.maximumNesting) levels deep",
                    at: token.range,
                    suggestion: "remove redundant parentheses or split the rule"
                )
                self.skipBalancedParentheses()
                return .missing(range: token.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd)))
            }
            self.advance()
            let inner = self.parseOr(depth: depth + 1)
            if self.current.kind == .rightParen {
                self.advance()
            } else {
                self.expect(.rightParen, "to close `(`", suggestion: "add `)`")
            }
            return .parenthesized(
                inner,
                range: token.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
            )
        }
        if token.kind == .identifier, !Keyword.reserved.contains(self.text(token)) {
            return .predicate(self.parsePredicate())
        }
        self.sink.emit(
            .expectedExpression,
            "expected a condition, found \(self.describe(token))",
            at: token.kind == .endOfFile ? SourceRange(start: self.previousEnd, end: self.previousEnd) : token.range,
            suggestion: "for example `status == ERROR`, `duration > 500ms` or `attr[\"http.route\"] == \"/checkout\"`"
        )
        if !self.atEnd, !self.atDeclarationStart, !self.isAnyWord(Keyword.clauses), token.kind != .rightBrace,
            token.kind != .rightParen, !self.atAnd, !self.atOr
        {
            self.advance()
        }
        return .missing(range: token.range)
    }

    private mutating func skipBalancedParentheses() {
        var depth = 0
        repeat {
            switch self.current.kind {
            case .leftParen: depth += 1
            case .rightParen: depth -= 1
            case .endOfFile: return
            default: if self.atDeclarationStart { return }
            }
            self.advance()
        } while depth > 0
    }

    private mutating func parsePredicate() -> Predicate {
        let subjectToken = self.advance()
        var predicate = Predicate(
            subject: Identifier(name: self.text(subjectToken), range: subjectToken.range),
            opRange: subjectToken.range,
            range: subjectToken.range
        )
        if predicate.subject.name == "ottl" {
            if self.current.kind == .identifier, !Keyword.reserved.contains(self.text(self.current)) {
                let qualifier = self.advance()
                predicate.qualifier = Identifier(name: self.text(qualifier), range: qualifier.range)
            }
            if self.current.kind == .string {
                predicate.argument = self.stringLiteral(self.advance())
            } else {
                self.expect(
                    .string,
                    "after `ottl span`",
                    suggestion: "write `ottl span \"attributes[\\\"k\\\"] == 1\"`"
                )
            }
            predicate.range = subjectToken.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
            return predicate
        }
        if self.current.kind == .leftBracket {
            self.advance()
            if self.current.kind == .string {
                predicate.key = self.stringLiteral(self.advance())
            } else {
                self.expect(.string, "as the key inside `[…]`", suggestion: "quote the key: `attr[\"http.route\"]`")
                if self.current.kind != .rightBracket, !self.atEnd { self.advance() }
            }
            self.expect(.rightBracket, "after the key", suggestion: "add `]`")
        }
        let opToken = self.current
        var op: ComparisonOperator?
        switch opToken.kind {
        case .equalEqual: op = .equal
        case .notEqual: op = .notEqual
        case .greater: op = .greater
        case .greaterEqual: op = .greaterOrEqual
        case .less: op = .less
        case .lessEqual: op = .lessOrEqual
        case .identifier:
            if self.isWord("in") {
                op = .in
            } else if self.isWord("matches") {
                op = .matches
            } else if self.isWord("not"), self.isWord("in", self.peek()) {
                self.advance()
                op = .notIn
            } else if self.isWord("not"), self.isWord("matches", self.peek()) {
                self.advance()
                op = .notMatches
            }
        default: break
        }
        if let op {
            self.advance()
            predicate.op = op
            predicate.opRange = opToken.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
            predicate.value = self.parseValue(context: "after `\(op.rawValue)`")
        }
        predicate.range = subjectToken.range.union(SourceRange(start: self.previousEnd, end: self.previousEnd))
        return predicate
    }
}
