/// The kinds of token in the policy language. Keywords are contextual identifiers.
enum TokenKind: Equatable, Sendable {
    case identifier
    case string
    case number
    /// A number immediately followed by a unit: `500ms`, `10%`, `64MiB`.
    case quantity
    case leftParen, rightParen, leftBracket, rightBracket, leftBrace, rightBrace
    case comma, semicolon
    case equalEqual, notEqual, greater, greaterEqual, less, lessEqual
    case dotDot, slash
    /// `&&` and `||`, reported and then read as `and` / `or`.
    case symbolicAnd, symbolicOr
    case endOfFile

    var spelling: String {
        switch self {
        case .identifier: "a name"
        case .string: "a string"
        case .number: "a number"
        case .quantity: "a value with a unit"
        case .leftParen: "`(`"
        case .rightParen: "`)`"
        case .leftBracket: "`[`"
        case .rightBracket: "`]`"
        case .leftBrace: "`{`"
        case .rightBrace: "`}`"
        case .comma: "`,`"
        case .semicolon: "`;`"
        case .equalEqual: "`==`"
        case .notEqual: "`!=`"
        case .greater: "`>`"
        case .greaterEqual: "`>=`"
        case .less: "`<`"
        case .lessEqual: "`<=`"
        case .dotDot: "`..`"
        case .slash: "`/`"
        case .symbolicAnd: "`&&`"
        case .symbolicOr: "`||`"
        case .endOfFile: "end of file"
        }
    }
}

/// A token: its kind and byte range. Text is read from the file only when needed.
struct Token: Sendable {
    var kind: TokenKind
    var range: SourceRange
    /// For quantities, where the unit starts.
    var unitStart: Int = 0
    /// True when a line break separates this token from the previous one.
    var startsLine: Bool = false
}

/// A `#` comment, kept so the formatter can put it back.
struct Comment: Sendable {
    var range: SourceRange
    /// True when only whitespace precedes it on its line.
    var ownLine: Bool
}

/// Turns bytes into tokens in one linear pass. Never fails: problems become diagnostics and the
/// lexer skips ahead, so every later stage sees a well-formed token stream ending in `endOfFile`.
struct Lexer {
    private let bytes: [UInt8]
    private var position = 0
    private var sawLineBreak = true
    private var lineHasToken = false
    private(set) var tokens: [Token] = []
    private(set) var comments: [Comment] = []

    static func tokenize(_ file: SourceFile, into sink: inout DiagnosticSink) -> (tokens: [Token], comments: [Comment])
    {
        var lexer = Lexer(bytes: file.bytes)
        lexer.run(&sink)
        return (lexer.tokens, lexer.comments)
    }

    private init(bytes: [UInt8]) {
        self.bytes = bytes
        self.tokens.reserveCapacity(bytes.count / 4)
    }

    private func peek(_ offset: Int = 0) -> UInt8? {
        let index = self.position + offset
        return index < self.bytes.count ? self.bytes[index] : nil
    }

    private mutating func add(_ kind: TokenKind, from start: Int, unitStart: Int = 0) {
        self.tokens.append(
            Token(
                kind: kind,
                range: SourceRange(start: start, end: self.position),
                unitStart: unitStart,
                startsLine: self.sawLineBreak
            )
        )
        self.sawLineBreak = false
        self.lineHasToken = true
    }

    private mutating func run(_ sink: inout DiagnosticSink) {
        while let byte = self.peek() {
            let start = self.position
            switch byte {
            case UInt8(ascii: "\n"):
                self.position += 1
                self.sawLineBreak = true
                self.lineHasToken = false
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                self.position += 1
            case UInt8(ascii: "#"):
                self.lexComment(&sink)
            case UInt8(ascii: "\""):
                self.lexString(&sink)
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                self.lexNumber(&sink)
            case UInt8(ascii: "-") where self.peek(1).map(Self.isDigit) ?? false:
                self.position += 1
                self.lexNumber(&sink, from: start)
            case _ where Self.isIdentifierStart(byte):
                self.position += 1
                while let next = self.peek(), Self.isIdentifierContinue(next) { self.position += 1 }
                self.add(.identifier, from: start)
            case UInt8(ascii: "("): self.single(.leftParen)
            case UInt8(ascii: ")"): self.single(.rightParen)
            case UInt8(ascii: "["): self.single(.leftBracket)
            case UInt8(ascii: "]"): self.single(.rightBracket)
            case UInt8(ascii: "{"): self.single(.leftBrace)
            case UInt8(ascii: "}"): self.single(.rightBrace)
            case UInt8(ascii: ","): self.single(.comma)
            case UInt8(ascii: ";"): self.single(.semicolon)
            case UInt8(ascii: "/"): self.single(.slash)
            case UInt8(ascii: "="):
                if self.peek(1) == UInt8(ascii: "=") {
                    self.position += 2
                    self.add(.equalEqual, from: start)
                } else {
                    self.position += 1
                    sink.emit(
                        .singleEquals,
                        "`=` is not an operator in policy conditions",
                        at: SourceRange(start: start, end: self.position),
                        suggestion: "write `==` to compare"
                    )
                    self.add(.equalEqual, from: start)
                }
            case UInt8(ascii: "!"):
                if self.peek(1) == UInt8(ascii: "=") {
                    self.position += 2
                    self.add(.notEqual, from: start)
                } else {
                    self.position += 1
                    sink.emit(
                        .unexpectedCharacter,
                        "unexpected character `!`",
                        at: SourceRange(start: start, end: self.position),
                        suggestion: "write `not` to negate a condition, or `!=` to compare"
                    )
                }
            case UInt8(ascii: ">"), UInt8(ascii: "<"):
                let orEqual = self.peek(1) == UInt8(ascii: "=")
                self.position += orEqual ? 2 : 1
                if byte == UInt8(ascii: ">") {
                    self.add(orEqual ? .greaterEqual : .greater, from: start)
                } else {
                    self.add(orEqual ? .lessEqual : .less, from: start)
                }
            case UInt8(ascii: "."):
                if self.peek(1) == UInt8(ascii: ".") {
                    self.position += 2
                    self.add(.dotDot, from: start)
                } else {
                    self.position += 1
                    sink.emit(
                        .unexpectedCharacter,
                        "unexpected character `.`",
                        at: SourceRange(start: start, end: self.position),
                        suggestion: "write a range as `10..20`; attribute keys go in quotes: `attr[\"http.route\"]`"
                    )
                }
            case UInt8(ascii: "&"), UInt8(ascii: "|"):
                if self.peek(1) == byte {
                    self.position += 2
                    let isAnd = byte == UInt8(ascii: "&")
                    sink.emit(
                        .unexpectedCharacter,
                        "`\(isAnd ? "&&" : "||")` is not an operator in policy conditions",
                        at: SourceRange(start: start, end: self.position),
                        suggestion: "write `\(isAnd ? "and" : "or")`"
                    )
                    self.add(isAnd ? .symbolicAnd : .symbolicOr, from: start)
                } else {
                    self.position += 1
                    sink.emit(
                        .unexpectedCharacter,
                        "unexpected character `\(Character(Unicode.Scalar(byte)))`",
                        at: SourceRange(start: start, end: self.position),
                        suggestion: byte == UInt8(ascii: "&") ? "write `and`" : "write `or`"
                    )
                }
            case 0:
                self.position += 1
                sink.emit(
                    .nulByte,
                    "NUL byte in source; policy files are UTF-8 text",
                    at: SourceRange(start: start, end: self.position),
                    suggestion: "remove the NUL byte (is this a binary file?)"
                )
            case 0x80...0xFF:
                let length = Self.validUTF8Length(self.bytes, at: self.position)
                if length == 0 {
                    self.position += 1
                    sink.emit(
                        .invalidUTF8,
                        "invalid UTF-8 byte 0x\(String(byte, radix: 16, uppercase: true))",
                        at: SourceRange(start: start, end: self.position),
                        suggestion: "save the file as UTF-8"
                    )
                } else {
                    self.position += length
                    let text = String(decoding: self.bytes[start..<self.position], as: UTF8.self)
                    sink.emit(
                        .unexpectedCharacter,
                        "unexpected character `\(text)`",
                        at: SourceRange(start: start, end: self.position),
                        suggestion: Self.lookalikeHint(text)
                    )
                }
            default:
                self.position += 1
                let scalar = Unicode.Scalar(byte)
                let shown =
                    byte < 0x20 || byte == 0x7F
                    ? "U+\(String(byte, radix: 16, uppercase: true))" : "\(Character(scalar))"
                sink.emit(
                    .unexpectedCharacter,
                    "unexpected character `\(shown)`",
                    at: SourceRange(start: start, end: self.position)
                )
            }
        }
        self.tokens.append(
            Token(
                kind: .endOfFile,
                range: SourceRange(start: self.bytes.count, end: self.bytes.count),
                startsLine: true
            )
        )
    }

    private mutating func single(_ kind: TokenKind) {
        let start = self.position
        self.position += 1
        self.add(kind, from: start)
    }

    private mutating func lexComment(_ sink: inout DiagnosticSink) {
        let start = self.position
        while let byte = self.peek(), byte != UInt8(ascii: "\n") {
            if byte == 0 {
                sink.emit(
                    .nulByte,
                    "NUL byte in comment",
                    at: SourceRange(start: self.position, end: self.position + 1),
                    suggestion: "remove the NUL byte"
                )
                self.position += 1
            } else if byte >= 0x80 {
                let length = Self.validUTF8Length(self.bytes, at: self.position)
                if length == 0 {
                    sink.emit(
                        .invalidUTF8,
                        "invalid UTF-8 byte 0x\(String(byte, radix: 16, uppercase: true)) in comment",
                        at: SourceRange(start: self.position, end: self.position + 1),
                        suggestion: "save the file as UTF-8"
                    )
                }
                self.position += max(1, length)
            } else {
                self.position += 1
            }
        }
        self.comments.append(Comment(range: SourceRange(start: start, end: self.position), ownLine: !self.lineHasToken))
    }

    private mutating func lexString(_ sink: inout DiagnosticSink) {
        let start = self.position
        self.position += 1
        while true {
            guard let byte = self.peek(), byte != UInt8(ascii: "\n") else {
                sink.emit(
                    .unterminatedString,
                    "unterminated string",
                    at: SourceRange(start: start, end: self.position),
                    suggestion: "add a closing `\"` before the end of the line"
                )
                self.add(.string, from: start)
                return
            }
            switch byte {
            case UInt8(ascii: "\""):
                self.position += 1
                self.add(.string, from: start)
                return
            case UInt8(ascii: "\\"):
                self.position += 1
                if let next = self.peek(), next == UInt8(ascii: "\"") || next == UInt8(ascii: "\\") {
                    self.position += 1
                }
            case 0:
                sink.emit(
                    .nulByte,
                    "NUL byte in string",
                    at: SourceRange(start: self.position, end: self.position + 1),
                    suggestion: "remove the NUL byte"
                )
                self.position += 1
            case 0x80...0xFF:
                let length = Self.validUTF8Length(self.bytes, at: self.position)
                if length == 0 {
                    sink.emit(
                        .invalidUTF8,
                        "invalid UTF-8 byte 0x\(String(byte, radix: 16, uppercase: true)) in string",
                        at: SourceRange(start: self.position, end: self.position + 1),
                        suggestion: "save the file as UTF-8"
                    )
                }
                self.position += max(1, length)
            default:
                self.position += 1
            }
        }
    }

    private mutating func lexNumber(_ sink: inout DiagnosticSink, from start: Int? = nil) {
        let start = start ?? self.position
        while let byte = self.peek(), Self.isDigit(byte) || byte == UInt8(ascii: "_") { self.position += 1 }
        if self.peek() == UInt8(ascii: "."), let next = self.peek(1), Self.isDigit(next) {
            self.position += 1
            while let byte = self.peek(), Self.isDigit(byte) || byte == UInt8(ascii: "_") { self.position += 1 }
        }
        let unitStart = self.position
        if self.peek() == UInt8(ascii: "%") {
            self.position += 1
        } else {
            while let byte = self.peek(), Self.isLetter(byte) { self.position += 1 }
        }
        if self.position > unitStart, let next = self.peek(), Self.isDigit(next) {
            // `1h30m`: compound values are not part of the language.
            let unitEnd = self.position
            while let byte = self.peek(), Self.isDigit(byte) || Self.isLetter(byte) || byte == UInt8(ascii: ".") {
                self.position += 1
            }
            sink.emit(
                .invalidNumber,
                "`\(String(decoding: self.bytes[start..<self.position], as: UTF8.self))` is not a number with one unit",
                at: SourceRange(start: start, end: self.position),
                suggestion: "write a single value with a single unit, such as `90m` or `1500ms`"
            )
            self.tokens.append(
                Token(
                    kind: .quantity,
                    range: SourceRange(start: start, end: unitEnd),
                    unitStart: unitStart,
                    startsLine: self.sawLineBreak
                )
            )
            self.sawLineBreak = false
            self.lineHasToken = true
            return
        }
        self.add(self.position > unitStart ? .quantity : .number, from: start, unitStart: unitStart)
    }

    static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    static func isLetter(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
            || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
    }
    static func isIdentifierStart(_ byte: UInt8) -> Bool { Self.isLetter(byte) || byte == UInt8(ascii: "_") }
    static func isIdentifierContinue(_ byte: UInt8) -> Bool {
        Self.isIdentifierStart(byte) || Self.isDigit(byte) || byte == UInt8(ascii: "-")
    }

    /// Length of the valid UTF-8 sequence at `index`, or 0 when the bytes there are not valid UTF-8.
    static func validUTF8Length(_ bytes: [UInt8], at index: Int) -> Int {
        let lead = bytes[index]
        let length: Int
        var lowerBound: UInt8 = 0x80
        var upperBound: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; lowerBound = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; upperBound = 0x9F
        case 0xF0: length = 4; lowerBound = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; upperBound = 0x8F
        default: return 0
        }
        guard index + length <= bytes.count else { return 0 }
        for offset in 1..<length {
            let byte = bytes[index + offset]
            let low: UInt8 = offset == 1 ? lowerBound : 0x80
            let high: UInt8 = offset == 1 ? upperBound : 0xBF
            if byte < low || byte > high { return 0 }
        }
        return length
    }

    private static func lookalikeHint(_ text: String) -> String? {
        switch text {
        case "\u{201C}", "\u{201D}", "\u{201E}": "use straight double quotes `\"`"
        case "\u{2264}": "write `<=`"
        case "\u{2265}": "write `>=`"
        case "\u{2260}": "write `!=`"
        case "\u{2013}", "\u{2014}", "\u{2212}": "use the ASCII hyphen-minus `-`"
        case "\u{00A0}": "replace the non-breaking space with a plain space"
        default: nil
        }
    }
}
