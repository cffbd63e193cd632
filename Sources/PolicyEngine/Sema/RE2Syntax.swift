/// Checks a pattern against the syntax of Go's `regexp` package (RE2), which the collector compiles
/// `string_attribute` patterns with at start-up: a pattern RE2 rejects would stop the collector.
///
/// Not a regex engine: it walks the pattern once, tracking groups, classes and repetitions.
enum RE2Syntax {
    /// The RE2 limit on `{n,m}` counts.
    static let maximumRepeat = 1000

    /// `nil` when the pattern is valid, otherwise why not (and what to write instead).
    static func problem(in pattern: String) -> (message: String, suggestion: String)? {
        let scalars = Array(pattern.unicodeScalars)
        var index = 0
        var depth = 0
        /// Whether the previous item can take a repetition operator, and whether it already has one.
        var canRepeat = false
        var repeated = false
        /// The repetition already has its non-greedy `?`.
        var lazy = false

        /// Applies a repetition operator to the previous item, or says why it cannot.
        func repeatOperator(_ op: String) -> (message: String, suggestion: String)? {
            if repeated, op == "?", !lazy {
                lazy = true  // `*?`, `+?`, `??`, `{n}?`: non-greedy
                return nil
            }
            if repeated {
                return (
                    "invalid nested repetition operator (possessive quantifiers such as `*+` do not exist in Go's regexp)",
                    "remove the extra operator"
                )
            }
            guard canRepeat else {
                return (
                    "missing argument to repetition operator `\(op)`", "escape it as `\\\(op)` to match it literally"
                )
            }
            repeated = true
            lazy = false
            return nil
        }

        func peek(_ offset: Int = 0) -> Unicode.Scalar? {
            index + offset < scalars.count ? scalars[index + offset] : nil
        }

        while index < scalars.count {
            let scalar = scalars[index]
            switch scalar {
            case "\\":
                if let issue = self.escape(scalars, &index, inClass: false) { return issue }
                canRepeat = true
                repeated = false
                lazy = false
                continue
            case "[":
                if let issue = self.characterClass(scalars, &index) { return issue }
                canRepeat = true
                repeated = false
                lazy = false
                continue
            case "(":
                if peek(1) == "?" {
                    let next = peek(2)
                    switch next {
                    case ":"?:
                        index += 3
                    case "P"?, "<"?:
                        let start = next == "P" ? 3 : 2
                        if next == "P", peek(3) == "=" || peek(3) == ">" {
                            return (
                                "named back-references `(?P=…)` are not supported by Go's regexp (RE2)",
                                "rewrite without back-references"
                            )
                        }
                        if next == "<", peek(3) == "=" || peek(3) == "!" {
                            return (
                                "lookbehind `(?<…` is not supported by Go's regexp (RE2)",
                                "rewrite without lookaround, or use `not … matches` for exclusions"
                            )
                        }
                        guard (next == "P" ? peek(3) == "<" : true) else {
                            return ("invalid named group", "write `(?P<name>…)`")
                        }
                        var cursor = index + start + 1  // after `(?P<` or `(?<`
                        var name = ""
                        while cursor < scalars.count, scalars[cursor] != ">" {
                            name.unicodeScalars.append(scalars[cursor])
                            cursor += 1
                        }
                        guard cursor < scalars.count, !name.isEmpty,
                            name.unicodeScalars.allSatisfy({
                                $0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0)
                            })
                        else {
                            return ("invalid group name in `(?P<…>`", "names are letters, digits and `_`")
                        }
                        index = cursor + 1
                    case "="?, "!"?:
                        return (
                            "lookahead `(?\(next!)` is not supported by Go's regexp (RE2)",
                            "rewrite without lookaround, or use `not … matches` for exclusions"
                        )
                    case ">"?:
                        return (
                            "atomic groups `(?>` are not supported by Go's regexp (RE2)", "use a plain group `(?:…)`"
                        )
                    case "#"?:
                        return ("comments `(?#` are not supported by Go's regexp (RE2)", "remove the comment")
                    default:
                        // Flags: (?flags) or (?flags:…), flags from i m s U with an optional `-`.
                        var cursor = index + 2
                        var sawFlag = false
                        while cursor < scalars.count, "imsU-".unicodeScalars.contains(scalars[cursor]) {
                            sawFlag = true
                            cursor += 1
                        }
                        guard sawFlag, cursor < scalars.count, scalars[cursor] == ")" || scalars[cursor] == ":" else {
                            return (
                                "unsupported group syntax `(?` in Go's regexp (RE2)",
                                "use `(?:…)`, `(?P<name>…)` or flags such as `(?i)`"
                            )
                        }
                        if scalars[cursor] == ")" {
                            index = cursor + 1
                            canRepeat = false
                            repeated = false
                            continue
                        }
                        index = cursor + 1
                    }
                } else {
                    index += 1
                }
                depth += 1
                canRepeat = false
                repeated = false
                continue
            case ")":
                guard depth > 0 else { return ("unmatched `)`", "remove it, or escape it as `\\)`") }
                depth -= 1
                canRepeat = true
                repeated = false
                lazy = false
            case "*", "+", "?":
                if let issue = repeatOperator(String(scalar)) { return issue }
            case "{":
                if let (minimum, maximum, length) = self.counted(scalars, from: index) {
                    if let issue = repeatOperator("{") { return issue }
                    if minimum > self.maximumRepeat || (maximum ?? 0) > self.maximumRepeat {
                        return (
                            "repeat count over \(self.maximumRepeat): Go's regexp (RE2) rejects it",
                            "use `+` or `*`, or a smaller count"
                        )
                    }
                    if let maximum, maximum < minimum {
                        return ("invalid repeat count `{\(minimum),\(maximum)}`", "write the smaller count first")
                    }
                    index += length
                    continue
                }
                // A literal `{`.
                canRepeat = true
                repeated = false
                lazy = false
            case "|":
                canRepeat = false
                repeated = false
            case "^", "$":
                canRepeat = true  // RE2 allows `^*` (odd but valid)
                repeated = false
            default:
                canRepeat = true
                repeated = false
                lazy = false
            }
            index += 1
        }
        if depth > 0 { return ("missing closing `)`", "add `)`") }
        return nil
    }

    /// Parses `{n}`, `{n,}` or `{n,m}` at `start`; `nil` when it is not a repeat (then `{` is literal).
    private static func counted(_ scalars: [Unicode.Scalar], from start: Int) -> (Int, Int?, Int)? {
        var cursor = start + 1
        func number() -> Int? {
            var value = 0
            var digits = 0
            while cursor < scalars.count, ("0"..."9").contains(scalars[cursor]) {
                value = min(value * 10 + Int(scalars[cursor].value - 48), 1_000_000)
                digits += 1
                cursor += 1
            }
            return digits > 0 ? value : nil
        }
        guard let minimum = number() else { return nil }
        var maximum: Int? = minimum
        if cursor < scalars.count, scalars[cursor] == "," {
            cursor += 1
            maximum = number()
        }
        guard cursor < scalars.count, scalars[cursor] == "}" else { return nil }
        return (minimum, maximum, cursor - start + 1)
    }

    /// Checks an escape at `index` (pointing at the backslash) and moves past it.
    private static func escape(_ scalars: [Unicode.Scalar], _ index: inout Int, inClass: Bool) -> (String, String)? {
        guard index + 1 < scalars.count else { return ("trailing backslash", "escape a literal backslash as `\\\\`") }
        let letter = scalars[index + 1]
        index += 2
        switch letter {
        case "a", "f", "t", "n", "r", "v", "d", "D", "s", "S", "w", "W":
            return nil
        case "A", "z", "b", "B", "C":
            return inClass && letter != "b"
                ? ("`\\\(letter)` is not allowed inside `[…]`", "move it out of the class") : nil
        case "0"..."7":
            // Octal \0, \01, \012 (RE2 rejects \1-\9 as back-references).
            if letter != "0", !(index < scalars.count && ("0"..."7").contains(scalars[index])) {
                return (
                    "back-references such as `\\\(letter)` are not supported by Go's regexp (RE2)",
                    "rewrite without back-references"
                )
            }
            var count = 0
            while count < 2, index < scalars.count, ("0"..."7").contains(scalars[index]) {
                index += 1
                count += 1
            }
            return nil
        case "8", "9":
            return (
                "back-references such as `\\\(letter)` are not supported by Go's regexp (RE2)",
                "rewrite without back-references"
            )
        case "x":
            if index < scalars.count, scalars[index] == "{" {
                guard let close = scalars[index...].firstIndex(of: "}"), close > index + 1,
                    scalars[(index + 1)..<close].allSatisfy({ $0.properties.isASCIIHexDigit })
                else { return ("invalid `\\x{…}` escape", "write `\\x{1F600}`") }
                index = close + 1
                return nil
            }
            guard index + 1 < scalars.count, scalars[index].properties.isASCIIHexDigit,
                scalars[index + 1].properties.isASCIIHexDigit
            else {
                return ("invalid `\\x` escape", "write two hex digits, as in `\\x7F`")
            }
            index += 2
            return nil
        case "p", "P":
            if index < scalars.count, scalars[index] == "{" {
                guard let close = scalars[index...].firstIndex(of: "}"), close > index + 1 else {
                    return ("invalid `\\p{…}` class", "write a Unicode class such as `\\p{Greek}`")
                }
                index = close + 1
                return nil
            }
            guard index < scalars.count, scalars[index].properties.isAlphabetic else {
                return ("invalid `\\p` class", "write a Unicode class such as `\\pL` or `\\p{Greek}`")
            }
            index += 1
            return nil
        case "Q":
            // Literal text up to \E (or the end).
            while index < scalars.count {
                if scalars[index] == "\\", index + 1 < scalars.count, scalars[index + 1] == "E" {
                    index += 2
                    return nil
                }
                index += 1
            }
            return nil
        default:
            if letter.isASCII, !letter.properties.isAlphabetic, !("0"..."9").contains(letter) {
                return nil  // an escaped punctuation character
            }
            return (
                "`\\\(letter)` is not an escape Go's regexp (RE2) knows", "remove the backslash, or see the RE2 syntax"
            )
        }
    }

    /// Checks a `[…]` class at `index` and moves past it.
    private static func characterClass(_ scalars: [Unicode.Scalar], _ index: inout Int) -> (String, String)? {
        let start = index
        index += 1
        if index < scalars.count, scalars[index] == "^" { index += 1 }
        var first = true
        while index < scalars.count {
            let scalar = scalars[index]
            if scalar == "]", !first {
                index += 1
                return nil
            }
            first = false
            if scalar == "\\" {
                if let issue = self.escape(scalars, &index, inClass: true) { return issue }
                continue
            }
            if scalar == "[", index + 1 < scalars.count, scalars[index + 1] == ":" {
                // POSIX class [:alpha:]
                guard let close = (index + 2 < scalars.count ? scalars[(index + 2)...].firstIndex(of: ":") : nil),
                    close + 1 < scalars.count, scalars[close + 1] == "]"
                else {
                    return ("invalid POSIX class inside `[…]`", "write `[[:alpha:]]`")
                }
                index = close + 2
                continue
            }
            index += 1
        }
        _ = start
        return ("missing closing `]`", "add `]`, or escape a literal bracket as `\\[`")
    }
}
