import Testing
import Yams

@testable import ConfigRenderer

@Suite struct YAMLWriterTests {
    static let tricky = [
        "true", "False", "yes", "no", "on", "null", "~", "", " ", "123", "-1", "1.5", "0x1F", "1e3", "12:30",
        "a: b", "#comment", "a #b", "- item", "{x}", "[x]", "*alias", "&anchor", "!tag", "%x", "@x", "`x`",
        "quote\"inside", "back\\slash", "new\nline", "tab\there", "caf\u{E9}", "0.0.0.0:4317", "${env:TOKEN}",
        "^(?:/healthz|/readyz)$", "key:", "http://x", "30s", "500ms", "/path/to/file", "y", "n", "\u{7}",
    ]

    @Test func everyStringSurvivesARoundTrip() throws {
        let node = YAMLNode.map(Self.tricky.enumerated().map { .init("k\($0.offset)", .string($0.element)) })
        let text = YAMLWriter.write(node)
        let parsed = try #require(try Yams.load(yaml: text) as? [String: Any])
        for (index, value) in Self.tricky.enumerated() {
            #expect(
                parsed["k\(index)"] as? String == value,
                "`\(value)` came back as \(String(describing: parsed["k\(index)"]))"
            )
        }
    }

    @Test func plainWhereUnambiguous() {
        #expect(YAMLWriter.quoteIfNeeded("traceID") == "traceID")
        #expect(YAMLWriter.quoteIfNeeded("30s") == "30s")
        #expect(YAMLWriter.quoteIfNeeded("${env:TOKEN}") == "${env:TOKEN}")
        #expect(YAMLWriter.quoteIfNeeded("true") == "\"true\"")
        #expect(YAMLWriter.quoteIfNeeded("4317") == "\"4317\"")
    }

    @Test func nestedListsAndEmptyCollections() throws {
        let node = YAMLNode.map([
            .init(
                "a",
                .list([.map([.init("x", .int(1)), .init("y", .list([.string("p"), .string("q")]))]), .map([])])
            ),
            .init("b", .map([]), comment: "empty"),
            .init("c", .list([])),
            .init("d", .double(2.5)),
        ])
        let text = YAMLWriter.write(node, header: ["header"])
        #expect(text.hasPrefix("# header\n"))
        let parsed = try #require(try Yams.load(yaml: text) as? [String: Any])
        let a = try #require(parsed["a"] as? [Any])
        #expect((a[0] as? [String: Any])?["y"] as? [String] == ["p", "q"])
        #expect((a[1] as? [String: Any])?.isEmpty == true)
        #expect((parsed["b"] as? [String: Any])?.isEmpty == true)
        #expect((parsed["c"] as? [Any])?.isEmpty == true)
        #expect(parsed["d"] as? Double == 2.5)
        #expect(text.contains("b: {}  # empty\n"))
    }
}
