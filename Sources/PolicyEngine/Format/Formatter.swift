/// Prints a parsed file in canonical form: one declaration per line, blocks indented by four spaces,
/// single spaces around operators, clauses in the order `when`, `sample`, `limit`, `share`, comments
/// kept where they were (own-line comments above, end-of-line comments after the item), and at most
/// one blank line where the source had blank lines.
struct Formatter {
    private let syntax: FileSyntax
    private var bytes: [UInt8] { self.syntax.file.bytes }
    private var lines: [String] = []
    private var commentIndex = 0
    private var lastEnd = 0
    private var atBlockStart = true

    static let indentUnit = "    "

    static func format(_ syntax: FileSyntax) -> String {
        var formatter = Formatter(syntax: syntax)
        formatter.run()
        var text = formatter.lines.joined(separator: "\n")
        while text.hasSuffix("\n") { text.removeLast() }
        return text.isEmpty ? "" : text + "\n"
    }

    private init(syntax: FileSyntax) {
        self.syntax = syntax
    }

    private mutating func run() {
        for declaration in self.syntax.declarations {
            switch declaration {
            case .rule(let rule):
                self.item(rule.range, indent: "", text: self.print(rule))
            case .sampler(let sampler):
                self.leading(before: sampler.range.start, indent: "")
                self.lines.append("sampler {")
                self.lastEnd = sampler.keywordRange.end
                self.trailingOnSameLine(after: sampler.settings.first.map { $0.range.start } ?? sampler.range.end)
                self.atBlockStart = true
                for setting in sampler.settings {
                    let text = ([setting.name.name] + setting.values.map(self.print)).joined(separator: " ")
                    self.item(setting.range, indent: Self.indentUnit, text: text, within: sampler.range.end - 1)
                }
                self.closeBlock(sampler.range)
            case .budget(let budget):
                self.leading(before: budget.range.start, indent: "")
                var header = "budget \(budget.name?.name ?? "")"
                if let rate = budget.rate { header += " " + self.print(rate) }
                self.lines.append(header + " {")
                self.lastEnd = budget.rate?.range.end ?? budget.keywordRange.end
                self.trailingOnSameLine(after: budget.rules.first.map { $0.range.start } ?? budget.range.end)
                self.atBlockStart = true
                for rule in budget.rules {
                    self.item(rule.range, indent: Self.indentUnit, text: self.print(rule), within: budget.range.end - 1)
                }
                self.closeBlock(budget.range)
            }
        }
        // Comments after the last declaration.
        self.leading(before: Int.max, indent: "")
    }

    private mutating func closeBlock(_ range: SourceRange) {
        let closing = max(range.start, range.end - 1)
        self.leading(before: closing, indent: Self.indentUnit, blankBeforeItem: false)
        self.lines.append("}")
        self.lastEnd = range.end
        self.atBlockStart = false
        self.trailing(after: range.end)
    }

    /// Prints one item; `within` bounds the end-of-line comments it may take (a block's closing brace).
    private mutating func item(_ range: SourceRange, indent: String, text: String, within limit: Int = Int.max) {
        self.leading(before: range.start, indent: indent)
        self.lines.append(indent + text)
        self.lastEnd = range.end
        self.atBlockStart = false
        self.trailing(after: range.end, insideFrom: range.start, within: limit)
    }

    private func commentText(_ comment: Comment) -> String {
        var text = self.syntax.file.text(comment.range)
        while text.last == " " || text.last == "\t" || text.last == "\r" { text.removeLast() }
        return text
    }

    private func newlines(from start: Int, to end: Int) -> Int {
        guard start < end else { return 0 }
        var count = 0
        for index in max(0, start)..<min(end, self.bytes.count) where self.bytes[index] == UInt8(ascii: "\n") {
            count += 1
        }
        return count
    }

    private mutating func blankLineIfNeeded(before offset: Int) {
        guard !self.atBlockStart, !self.lines.isEmpty, self.lines.last != "" else { return }
        if self.newlines(from: self.lastEnd, to: min(offset, self.bytes.count)) >= 2 {
            self.lines.append("")
        }
    }

    /// Own-line comments before `offset`, then a blank line if the source had one.
    private mutating func leading(before offset: Int, indent: String, blankBeforeItem: Bool = true) {
        let comments = self.syntax.comments
        while self.commentIndex < comments.count, comments[self.commentIndex].range.start < offset {
            let comment = comments[self.commentIndex]
            self.blankLineIfNeeded(before: comment.range.start)
            self.lines.append(indent + self.commentText(comment))
            self.lastEnd = comment.range.end
            self.atBlockStart = false
            self.commentIndex += 1
        }
        if blankBeforeItem, offset != Int.max { self.blankLineIfNeeded(before: offset) }
    }

    /// A comment on the same line as a block's opening brace.
    private mutating func trailingOnSameLine(after limit: Int) {
        let comments = self.syntax.comments
        guard self.commentIndex < comments.count else { return }
        let comment = comments[self.commentIndex]
        guard comment.range.start < limit, self.newlines(from: self.lastEnd, to: comment.range.start) == 0 else {
            return
        }
        self.lines[self.lines.count - 1] += "  " + self.commentText(comment)
        self.lastEnd = comment.range.end
        self.commentIndex += 1
    }

    /// Comments inside an item, and the one after it on the same line, go at the end of its line.
    private mutating func trailing(after end: Int, insideFrom start: Int? = nil, within limit: Int = Int.max) {
        let comments = self.syntax.comments
        var first = true
        while self.commentIndex < comments.count {
            let comment = comments[self.commentIndex]
            let inside = start.map { comment.range.start >= $0 && comment.range.start < end } ?? false
            let sameLine = comment.range.start >= end && self.newlines(from: end, to: comment.range.start) == 0
            guard inside || sameLine, comment.range.start < limit else { break }
            if first {
                self.lines[self.lines.count - 1] += "  " + self.commentText(comment)
                first = false
            } else {
                let indent = String(self.lines[self.lines.count - 1].prefix(while: { $0 == " " }))
                self.lines.append(indent + self.commentText(comment))
            }
            self.lastEnd = max(self.lastEnd, comment.range.end)
            self.commentIndex += 1
        }
    }

    // MARK: Printing syntax

    func print(_ rule: RuleDeclaration) -> String {
        var text = rule.action.rawValue
        if let name = rule.name { text += " " + name.name }
        if let condition = rule.condition { text += " when " + self.print(condition) }
        if let sample = rule.sample {
            text += " sample"
            if let percentage = sample.percentage { text += " " + self.print(percentage) }
            if let salt = sample.salt { text += " salt " + self.syntax.file.text(salt.range) }
        }
        if let limit = rule.limit {
            text += " limit"
            if let rate = limit.rate { text += " " + self.print(rate) }
            if let burst = limit.burst { text += " burst " + self.print(burst) }
        }
        if let share = rule.share { text += " share " + self.print(share) }
        return text
    }

    func print(_ expression: Expression) -> String {
        switch expression {
        case .predicate(let predicate): return self.print(predicate)
        case .not(let inner, _): return "not " + self.print(inner)
        case .and(let items, _): return items.map(self.print).joined(separator: " and ")
        case .or(let items, _): return items.map(self.print).joined(separator: " or ")
        case .parenthesized(let inner, _): return "(" + self.print(inner) + ")"
        case .missing(let range): return self.syntax.file.text(range)
        }
    }

    func print(_ predicate: Predicate) -> String {
        var text = predicate.subject.name
        if let key = predicate.key { text += "[" + self.syntax.file.text(key.range) + "]" }
        if let qualifier = predicate.qualifier { text += " " + qualifier.name }
        if let argument = predicate.argument { text += " " + self.syntax.file.text(argument.range) }
        if let op = predicate.op { text += " " + op.rawValue }
        if let value = predicate.value { text += " " + self.print(value) }
        return text
    }

    func print(_ value: Value) -> String {
        switch value {
        case .string(let literal): return self.syntax.file.text(literal.range)
        case .number(let text, _): return text
        case .quantity(let number, let unit, _): return number + unit
        case .identifier(let identifier): return identifier.name
        case .list(let items, _): return "[" + items.map(self.print).joined(separator: ", ") + "]"
        case .range(let lower, let upper, _): return self.print(lower) + ".." + self.print(upper)
        case .rate(let amount, let unit, _):
            if let unit { return self.print(amount) + " " + unit.name + "/s" }
            return self.print(amount) + "/s"
        }
    }
}
