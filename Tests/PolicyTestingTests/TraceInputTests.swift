import Foundation
import PolicyEngine
import PolicyTesting
import Testing

/// A temporary directory removed when the value goes away.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        self.url = FileManager.default.temporaryDirectory.appendingPathComponent("tp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: self.url) }

    func write(_ name: String, _ text: String) throws -> String {
        let path = self.url.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

/// Compresses a file with the system's gzip, as a collector pipeline or an operator would.
func gzip(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/gzip")
    process.arguments = ["-kf", path]
    try process.run()
    process.waitUntilExit()
    #expect(process.terminationStatus == 0)
    return path + ".gz"
}

@Suite struct OTLPJSONTests {
    static let document = #"""
        {"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
        "schemaUrl":"https://opentelemetry.io/schemas/1.21.0",
        "scopeSpans":[{"scope":{"name":"lib","version":"1.2"},"spans":[
          {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","parentSpanId":"",
           "name":"GET \"/cart\"\n","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1544712660000000000",
           "endTimeUnixNano":1544712661000000000,"traceState":"tp=debug","flags":257,
           "attributes":[{"key":"http.response.status_code","value":{"intValue":"503"}},
             {"key":"ratio","value":{"doubleValue":0.25}},{"key":"ok","value":{"boolValue":true}},
             {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":2}]}}},
             {"key":"nested","value":{"kvlistValue":{"values":[{"key":"x","value":{"stringValue":"\u00e9\ud83d\ude00"}}]}}},
             {"key":"raw","value":{"bytesValue":"AQID"}},{"key":"empty","value":{}}],
           "droppedAttributesCount":0,"links":[{"traceId":"00","spanId":"00"}],
           "events":[{"timeUnixNano":"1544712660500000000","name":"exception","attributes":[]}],
           "status":{"code":2,"message":"boom"}},
          {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"0102030405060708","parentSpanId":"eee19b7ec3c1b174",
           "name":"db","kind":3,"startTimeUnixNano":"1544712660100000000","endTimeUnixNano":"1544712660200000000",
           "status":{"code":"STATUS_CODE_OK"}}
        ]}]}]}
        """#

    @Test func decodesEveryFieldTheEvaluatorReads() throws {
        let batches = try OTLPJSON.decode(Data(Self.document.utf8))
        #expect(batches.count == 1)
        let batch = try #require(batches.first)
        #expect(batch.resource["service.name"] == .string("checkout"))
        #expect(batch.scope.name == "lib")
        #expect(batch.scope.version == "1.2")
        #expect(batch.spans.count == 2)
        let (id, root) = batch.spans[0]
        #expect(id.hex == "5b8efff798038103d269b633813fc60c")
        #expect(root.spanID == [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74])
        #expect(root.isRoot)
        #expect(root.name == "GET \"/cart\"\n")
        #expect(root.kind == 2)
        #expect(root.startNanos == 1_544_712_660_000_000_000)
        #expect(root.endNanos == 1_544_712_661_000_000_000)
        #expect(root.traceState == "tp=debug")
        #expect(root.flags == 257)
        #expect(root.status == .error)
        #expect(root.statusMessage == "boom")
        #expect(root.attributes["http.response.status_code"] == .int(503))
        #expect(root.attributes["ratio"] == .double(0.25))
        #expect(root.attributes["ok"] == .bool(true))
        #expect(root.attributes["tags"] == .array([.string("a"), .int(2)]))
        #expect(root.attributes["nested"] == .map(["x": .string("é😀")]))
        #expect(root.attributes["raw"] == .bytes([1, 2, 3]))
        #expect(root.attributes["empty"] == .string(""))
        #expect(root.events.map(\.name) == ["exception"])
        #expect(batch.spans[1].1.status == .ok)
        #expect(batch.spans[1].1.kind == 3)
        #expect(!batch.spans[1].1.isRoot)
    }

    @Test(arguments: [
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz","spanId":"0102030405060708"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 32 hexadecimal digits"
        ),
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"0102030405060708"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: missing"
        ),
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","startTimeUnixNano":"soon"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: `soon` is not a whole number"
        ),
        (#"{"resourceSpans":[{"scopeSpans":[{"spans":[}]}]}"#, "invalid JSON at byte 44: expected `{`"),
        (#"{"resourceSpans":[] "#, "invalid JSON at byte 21: the document ends inside an object"),
        (#"{"resourceLogs":[]}"#, "no `resourceSpans`"),
        (#"{"resourceSpans":[]} x"#, "unexpected data after the document"),
        // fuzz-otlp-json: `null` was read as an empty document; a document is an object.
        ("\t\t\t\t\t\t\t\t\t\tnull\t\t", "invalid JSON at byte 11: expected `{`"),
        ("[]", "invalid JSON at byte 1: expected `{`"),
        // fuzz-otlp-json: numbers outside JSON's grammar were read (`00.25` as 0.25), and skipped without a
        // look in fields the reader does not know, so a document Go's encoding/json refuses was read whole.
        (
            #"{"resourceSpans":[{"scopeSpans":[],"unknown":{"doubleValue":00.25}}]}"#,
            "resourceSpans[0].value: expected a number"
        ),
        (
            #"{"resourceSpans":[{"resource":{"attributes":[{"key":"r","value":{"doubleValue":1.}}]}}]}"#,
            "expected a number"
        ),
        (#"{"resourceSpans":[],"x":[1e]}"#, "value: expected a number"),
        (#"{"resourceSpans":[],"x":+1}"#, "value: expected a number"),
        (#"{"resourceSpans":[],"x":-}"#, "value: expected a number"),
        // fuzz-otlp-json: a span kind beyond 32 bits trapped the reader (an integer conversion), so a trace
        // file could crash `policyctl estimate` and the console's estimate; a wider flags value was cut.
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","kind":18446744073709551}]}]}]}"#,
            "spans[0].kind: expected a number that fits in 32 bits"
        ),
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","kind":"4294967297"}]}]}]}"#,
            "spans[0].kind: unknown value `4294967297`"
        ),
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","flags":4294967296}]}]}]}"#,
            "spans[0].flags: expected a number that fits in 32 bits"
        ),
    ])
    func badDocumentsSayWhatAndWhere(text: String, expected: String) {
        #expect {
            _ = try OTLPJSON.decode(Data(text.utf8))
        } throws: { error in
            "\(error)".contains(expected)
        }
    }

    @Test func writerAndReaderAgree() throws {
        var generator = SyntheticTraces(seed: 9)
        let traces = (0..<200).map { _ in generator.next() }
        let batches = try OTLPJSON.decode(Data(OTLPJSONWriter.line(traces).utf8))
        var assembler = TraceAssembler(decisionWaitNanos: .max / 4, afterRootNanos: nil)
        for batch in batches { assembler.add(batch) }
        let decoded = Dictionary(uniqueKeysWithValues: assembler.finish().map { ($0.trace.traceID, $0.trace) })
        #expect(decoded.count == traces.count)
        for trace in traces {
            let back = try #require(decoded[trace.traceID])
            // The writer groups spans by resource, as batches arrive; compare them by span ID.
            let original = Dictionary(uniqueKeysWithValues: trace.spans.map { ($0.spanID, $0) })
            #expect(back.spans.count == trace.spans.count)
            for span in back.spans {
                let source = try #require(original[span.spanID])
                #expect(span.attributes == source.attributes)
                #expect(span.status == source.status)
                #expect((span.startNanos, span.endNanos) == (source.startNanos, source.endNanos))
                #expect(span.parentSpanID == source.parentSpanID)
                #expect(span.events == source.events)
                #expect(back.resources[span.resource] == trace.resources[source.resource])
            }
        }
    }
}

@Suite struct TraceFilesTests {
    static func lines(_ traces: [[SimulatedTrace]]) -> String {
        traces.map { OTLPJSONWriter.line($0) }.joined(separator: "\n") + "\n"
    }

    @Test func readsLinesWholeDocumentsAndGzip() throws {
        let directory = try TemporaryDirectory()
        var generator = SyntheticTraces(seed: 3)
        let batches = (0..<5).map { _ in (0..<20).map { _ in generator.next() } }
        let expectedSpans = batches.joined().reduce(0) { $0 + $1.spans.count }
        let linesPath = try directory.write("lines.jsonl", Self.lines(batches))
        var spans = 0
        let summary = try TraceFiles.read([linesPath]) { spans += $0.spans.count }
        #expect(summary.documents == 5)
        #expect(spans == expectedSpans)
        #expect(summary.spans == expectedSpans)

        // Pretty-printed, one document per file.
        let object = try JSONSerialization.jsonObject(with: Data(OTLPJSONWriter.line(batches[0]).utf8))
        let pretty = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted])
        let prettyPath = try directory.write("body.json", String(decoding: pretty, as: UTF8.self))
        let whole = try TraceFiles.read([prettyPath]) { _ in }
        #expect(whole.documents == 1)
        #expect(whole.spans == batches[0].reduce(0) { $0 + $1.spans.count })

        // gzip, and two gzip members one after the other.
        let gzipped = try gzip(linesPath)
        #expect(try TraceFiles.read([gzipped]) { _ in }.spans == expectedSpans)
        let twice = directory.url.appendingPathComponent("twice.jsonl.gz").path
        let member = try Data(contentsOf: URL(fileURLWithPath: gzipped))
        try (member + member).write(to: URL(fileURLWithPath: twice))
        #expect(try TraceFiles.read([twice]) { _ in }.spans == expectedSpans * 2)
    }

    @Test func aBadLineIsLocatedOrSkipped() throws {
        let directory = try TemporaryDirectory()
        var generator = SyntheticTraces(seed: 4)
        let good = OTLPJSONWriter.line([generator.next()])
        let path = try directory.write("mixed.jsonl", "\(good)\n\n{\"resourceSpans\":[oops]}\n\(good)\n")
        #expect {
            _ = try TraceFiles.read([path]) { _ in }
        } throws: { error in
            "\(error)".hasPrefix("\(path):3: invalid JSON")
        }
        let summary = try TraceFiles.read([path], skipInvalid: true) { _ in }
        #expect(summary.documents == 2)
        #expect(summary.skipped == 1)
        #expect(summary.skippedErrors.first?.contains(":3:") == true)

        let truncated = directory.url.appendingPathComponent("cut.jsonl.gz").path
        let compressed = try Data(contentsOf: URL(fileURLWithPath: try gzip(path)))
        try compressed.prefix(compressed.count / 2).write(to: URL(fileURLWithPath: truncated))
        #expect(throws: TraceFiles.ReadError.self) { try TraceFiles.read([truncated], skipInvalid: true) { _ in } }
    }
}

@Suite struct JSONNumberTests {
    @Test(arguments: ["0", "-0", "7", "-12", "0.5", "10.25", "1e9", "1E+9", "2.5e-3", "-0.0e0"])
    func jsonNumbersAreRead(text: String) throws {
        let document = #"{"resourceSpans":[],"x":"# + text + "}"
        #expect(throws: Never.self) { try OTLPJSON.decode(Data(document.utf8)) }
    }
}
