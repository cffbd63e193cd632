import Foundation
import Testing

@testable import PolicyEngine

/// Hostile input never crashes or hangs, and each problem gets a located error.
@Suite struct HostileInputTests {
    private func check(_ bytes: [UInt8], expecting code: DiagnosticCode? = nil) -> CompilationResult {
        let file = SourceFile(path: "hostile.policy", bytes: bytes)
        let result = PolicyCompiler.compile([file])
        expectValidLocations(result.diagnostics, in: file)
        if let code {
            #expect(result.diagnostics.contains { $0.code == code }, "\(result.diagnostics.map(\.code.rawValue))")
        }
        _ = PolicyFormatter.format(file)
        return result
    }

    @Test func emptyAndBlankFiles() {
        let empty = self.check([], expecting: .emptyFile)
        #expect(empty.diagnostics.first?.start == PolicyEngine.SourceLocation(line: 1, column: 1))
        _ = self.check(Array("  \n\n\t\n".utf8), expecting: .emptyFile)
        // Found by the policy-compiler fuzzer: separators alone compiled cleanly, but formatted to an empty
        // file, which does not.
        _ = self.check(Array("; ".utf8), expecting: .emptyFile)
        _ = self.check(Array(";\n;;\n".utf8), expecting: .emptyFile)
        #expect(!self.check(Array("keep a when status == ERROR;\n".utf8)).hasErrors)
    }

    @Test func numbersBeyondInt64InRuleNamesAndValues() {
        // Found by the policy-compiler fuzzer: a whole number too large for Int64 crashed the rule's
        // printed form.
        _ = self.check(Array("keep big when attr[\"n\"] == 99999999999999999999999999\n".utf8))
        _ = self.check(Array("keep big when duration > 99999999999999999999999999s\n".utf8))
        _ = self.check(Array("keep big when attr[\"n\"] > 1e300 sample 10%\n".utf8))
        // The fuzzer's input, as found.
        _ = self.check(
            Array(
                Data(
                    base64Encoded:
                        "IyBCdXNpbmVzcyB0cmFmZmljOiBjdXN0b21lcnMgd2UgcHJvbWlzZSBmdWxsIGZpZGVsaXR5IHRvLCBhbnpkIGZhaXIgc2FtcGxlcx5vZiB0aGUgcmU0NDQ0NDQ0NDQ0tzQ0NDQ0NDQ0NHVzaW5lc3Nzdmk9ZSAiPWMgY2hlY2tvdXQiIGFuZCBzdGF0dXNwcgEAAAAAAABsZSA1MCUKa2VlcCBzZWFyY2hfc2FtcGxlIHdoZW4gc2VydmljZSA9PSAic2VhcmNoIiBhbmQgbm90IGF0dHJbImh0dHAucm91dGUiXSBtYXRjaGVzICIvabECAAAAAAAALioiIHNhbXBsZSAxOWxpbmUgc2FtcGxlIDQ0NDQ0NDQ0NDQ0NDAwMDAwMDAwNDA4NzM5MjE5NDMzMjQyOTgxMiUgc2FsdCAic2VhcmNoIgprZWVwIGJ1bGtfZXhwb3L0c2FtcGxlIDUxJQprZWVwIHNlYXJjaF9zYW1wbGUgd2hlbiBzZXJ2aWNlID09ICJzZWFyY2giIHNhbXBsZYmJiTQ0NDQ0NDQ0NDQ0NDQ0NDQ0MTDT33NhbHQgInNlYXJjaCIKa2VlcCBicWxrX2V4cG9y9HNhbXBsZSA1MVklCmthZmZpYzogY3VzdG9tZXJzIHdlIHByb21pc2UgZnVsbCBmaWRlbGl0eSB0bywgYW56ZCBmYWlyIHNhbXBsZXMeb2YgdGhlIHJlNDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQwMDAwMDAwMDQwODczOTIxOTQzMzI0Mjk4MTIlIHNhbHQgInNlYXJjaCIKa2VlcCBidWxrX2V4cG9y9HNhbXBsZSA1MSUKa2VlcCBzZWFyY2hfc2FtcGxlIHdoZW4gc2VydmljZSA9PSAic2VhcmNoIiBzYW1wbGWJiYk0NDQ0NDQ0NDQ0NDQ0NjQ0NDEwJSBzYWx0ICJzZWFyY2giCmtlZXAgc2VhcmNqX3NhbXBsZSB3aGVuIHNlcnZpY2UgPT0gInNlYXJjaCIgYW5kIG5viYmJiYFkIGVzdGltYXRlcy4Ka2VlcCBiYXNlbGluZSBzYW1wbGUgMyUK"
                )!
            )
        )
        // Comments only is a valid (if idle) file.
        #expect(!self.check(Array("# nothing yet\n".utf8)).hasErrors)
    }

    @Test func invalidUTF8Everywhere() {
        var bytes: [UInt8] = []
        for _ in 0..<50 { bytes += [0xC3, 0x28, 0xA0, 0xA1, 0xF0, 0x28, 0x8C, 0xBC, 0x0A] }
        _ = self.check(bytes, expecting: .invalidUTF8)
        _ = self.check(Array("# caf".utf8) + [0xE9] + Array("\nkeep a\n".utf8), expecting: .invalidUTF8)
    }

    @Test func unterminatedStrings() {
        _ = self.check(
            Array("keep a when service == \"checkout\nkeep b when service == \"x".utf8),
            expecting: .unterminatedString
        )
        _ = self.check(Array("keep a when service == \"abc\\\"".utf8), expecting: .unterminatedString)
    }

    @Test func tenThousandNestedParentheses() {
        let text =
            "keep a when " + String(repeating: "(", count: 10_000) + "status == ERROR"
            + String(repeating: ")", count: 10_000)
        let result = self.check(Array(text.utf8), expecting: .nestingTooDeep)
        #expect(result.diagnostics.filter { $0.code == .nestingTooDeep }.count == 1)
        let unbalanced = "keep a when " + String(repeating: "(", count: 10_000) + "\nkeep b when status == ERROR\n"
        _ = self.check(Array(unbalanced.utf8), expecting: .nestingTooDeep)
        let nots = "keep a when " + String(repeating: "not ", count: 10_000) + "status == ERROR"
        _ = self.check(Array(nots.utf8), expecting: .nestingTooDeep)
    }

    @Test func nulBytes() {
        _ = self.check(Array("keep a when status == ERROR".utf8) + [0, 0, 0], expecting: .nulByte)
        _ = self.check([UInt8](repeating: 0, count: 10_000), expecting: .nulByte)
    }

    @Test func fiftyMegabyteFile() {
        // 50 MB: a few valid rules, then long garbage lines, comments and broken rules.
        var bytes = Array("keep errors when status == ERROR\n".utf8)
        let garbage = Array(
            "keep @@ when ((( \"unterminated\n# a comment line that goes on for a while ...........\n".utf8
        )
        bytes.reserveCapacity(50 * 1_048_576 + garbage.count)
        while bytes.count < 50 * 1_048_576 { bytes += garbage }
        let result = self.check(bytes)
        #expect(result.hasErrors)
        #expect(result.diagnostics.count <= DiagnosticSink.maximumErrorsPerFile + 50)
    }

    @Test func oneHugeLine() {
        let text =
            "keep a when service in [" + Array(repeating: "\"svc\"", count: 200_000).joined(separator: ", ") + "]"
        #expect(!self.check(Array(text.utf8)).hasErrors)
    }
}
