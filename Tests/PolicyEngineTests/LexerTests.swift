import Testing

@testable import PolicyEngine

@Suite struct LexerTests {
    private func lex(_ text: String) -> (kinds: [TokenKind], texts: [String], diagnostics: [Diagnostic]) {
        let file = SourceFile(path: "l.policy", text: text)
        var sink = DiagnosticSink(file: file)
        let (tokens, _) = Lexer.tokenize(file, into: &sink)
        return (tokens.map(\.kind), tokens.map { file.text($0.range) }, sink.diagnostics)
    }

    @Test func tokensAndRanges() {
        let result = lex(#"keep slow when duration>=500ms and attr["a.b"] in 1..5 limit 8MiB/s # note"#)
        #expect(
            result.kinds == [
                .identifier, .identifier, .identifier, .identifier, .greaterEqual, .quantity, .identifier, .identifier,
                .leftBracket, .string, .rightBracket, .identifier, .number, .dotDot, .number, .identifier, .quantity,
                .slash, .identifier, .endOfFile,
            ]
        )
        #expect(result.texts[5] == "500ms")
        #expect(result.texts[9] == #""a.b""#)
        #expect(result.texts[12] == "1" && result.texts[14] == "5")
        #expect(result.diagnostics.isEmpty)
    }

    @Test func numbersWithUnitsAndSigns() {
        let result = lex("-5% 0.5% 1_000 1.5s 16MiB")
        #expect(result.kinds == [.quantity, .quantity, .number, .quantity, .quantity, .endOfFile])
        #expect(result.texts.dropLast() == ["-5%", "0.5%", "1_000", "1.5s", "16MiB"])
    }

    @Test func commentsAreKeptWithTheirPlacement() {
        let file = SourceFile(path: "c.policy", text: "# own line\nkeep a # trailing\n")
        var sink = DiagnosticSink(file: file)
        let (_, comments) = Lexer.tokenize(file, into: &sink)
        #expect(comments.map { file.text($0.range) } == ["# own line", "# trailing"])
        #expect(comments.map(\.ownLine) == [true, false])
    }

    @Test func escapesInStrings() throws {
        let result = compile(#"keep a when attr["k"] == "say \"hi\" \\ \d""#)
        let policy = try #require(result.policySet?.policies.first)
        #expect(
            policy.kind == .stringAttribute(StringAttributeTest(key: "k", values: [#"say "hi" \ \d"#], regex: false))
        )
    }

    @Test func lookalikeCharactersGetHints() {
        let result = lex("keep a when service == \u{201C}x\u{201D}")
        #expect(result.diagnostics.first?.code == .unexpectedCharacter)
        #expect(result.diagnostics.first?.suggestion == "use straight double quotes `\"`")
    }

    @Test func locationsCountBytesFromOne() {
        let file = SourceFile(path: "p.policy", text: "ab\ncdé\nf")
        #expect(file.location(of: 0) == PolicyEngine.SourceLocation(line: 1, column: 1))
        #expect(file.location(of: 3) == PolicyEngine.SourceLocation(line: 2, column: 1))
        #expect(file.location(of: 8) == PolicyEngine.SourceLocation(line: 3, column: 1))
        #expect(file.lineText(2) == "cdé")
    }
}
