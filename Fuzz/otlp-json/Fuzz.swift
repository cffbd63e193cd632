// libFuzzer target: bytes as one OTLP/JSON document -> the simulator's single-pass span reader.
// Built by scripts/fuzz.sh (a package target only with TAILPLANE_FUZZ=1, never in a normal build).
//
// The reader walks raw bytes through unsafe buffers (trace files run to gigabytes), so this is where an
// off-by-one would read outside the input; AddressSanitizer sees every byte it touches. Beyond "no crash":
// - a document the reader accepts is valid JSON (Foundation's parser agrees), so a broken file is never
//   half-read as if it were whole. Inside strings, bytes that are not UTF-8 are read as U+FFFD, as Go's
//   encoding/json (the collector's) reads them, so those are not held against it;
// - what it read, written back as OTLP/JSON by the trace writer, reads back the same: resources, scopes
//   and every span field survive.
import Foundation

@testable import PolicyEngine
@testable import PolicyTesting

/// `precondition` that keeps its message in optimized builds (the fuzzers are built with -O).
private func require(_ condition: Bool, _ message: @autoclosure () -> String = "") {
    if !condition { fatalError(message()) }
}

private func document(_ batches: [SpanBatch]) -> String {
    var out = "{\"resourceSpans\":["
    for (index, batch) in batches.enumerated() {
        if index > 0 { out += "," }
        out += "{\"resource\":{\"attributes\":"
        OTLPJSONWriter.attributes(batch.resource, into: &out)
        out += "},\"scopeSpans\":[{\"scope\":{\"name\":" + OTLPJSONWriter.quoted(batch.scope.name)
        out += ",\"version\":" + OTLPJSONWriter.quoted(batch.scope.version) + ",\"attributes\":"
        OTLPJSONWriter.attributes(batch.scope.attributes, into: &out)
        out += "},\"spans\":["
        for (spanIndex, (traceID, span)) in batch.spans.enumerated() {
            if spanIndex > 0 { out += "," }
            OTLPJSONWriter.span(span, traceID: traceID, into: &out)
        }
        out += "]}]}"
    }
    return out + "]}"
}

/// Attributes as text with keys in order (dictionaries print in any order) and NaN equal to itself.
private func canonical(_ attributes: Attributes) -> String {
    "{"
        + attributes.keys.sorted().map { "\($0.debugDescription): \(canonical(attributes[$0]!))" }.joined(
            separator: ", "
        )
        + "}"
}

private func canonical(_ value: AttributeValue) -> String {
    switch value {
    case .map(let inner): return "map" + canonical(inner)
    case .array(let items): return "[" + items.map(canonical).joined(separator: ", ") + "]"
    default: return "\(value)"
    }
}

/// A batch as text, to compare.
private func printed(_ batches: [SpanBatch]) -> [String] {
    batches.filter { !$0.spans.isEmpty }.map { batch in
        var spans = batch.spans.map { traceID, span in
            var text = "\(traceID.hex) \(span.spanID) \(span.parentSpanID) \(span.name.debugDescription) \(span.kind)"
            text += " \(span.startNanos)-\(span.endNanos) \(span.status) \(span.statusMessage.debugDescription)"
            text += " \(span.traceState.debugDescription) \(span.flags) \(canonical(span.attributes))"
            for event in span.events {
                text += " event(\(event.name.debugDescription) \(event.timeNanos) \(canonical(event.attributes)))"
            }
            return text
        }
        spans.sort()
        let scope =
            "\(batch.scope.name.debugDescription) \(batch.scope.version.debugDescription) \(canonical(batch.scope.attributes))"
        return "\(canonical(batch.resource)) \(scope) \(spans)"
    }
}

/// The document with what Foundation's parser refuses but the collector reads (Go's encoding/json) neutralised
/// inside strings: bytes that are not UTF-8 become a letter, and so do surrogate escapes (the reader itself
/// refuses unpaired ones where it decodes a string). Outside strings nothing changes, so a structural error
/// still fails Foundation's parse.
private func structure(_ bytes: Data) -> Data {
    var out = [UInt8]()
    out.reserveCapacity(bytes.count)
    var inString = false
    var index = bytes.startIndex
    while index < bytes.endIndex {
        let byte = bytes[index]
        defer { index += 1 }
        guard inString else {
            if byte == UInt8(ascii: "\"") { inString = true }
            out.append(byte)
            continue
        }
        switch byte {
        case UInt8(ascii: "\""):
            inString = false
            out.append(byte)
        case UInt8(ascii: "\\"):
            let next = index + 1 < bytes.endIndex ? bytes[index + 1] : 0
            if next == UInt8(ascii: "u"), index + 6 <= bytes.endIndex,
                let unit = UInt16(String(decoding: bytes[(index + 2)..<(index + 6)], as: UTF8.self), radix: 16),
                (0xD800...0xDFFF).contains(unit)
            {
                // A surrogate escape (paired or not) becomes a plain letter; pairs are decoded by both readers.
                out += Array("a".utf8)
                index += 5
            } else {
                out.append(byte)
                if index + 1 < bytes.endIndex {
                    out.append(next)
                    index += 1
                }
            }
        case 0x80...:
            out.append(UInt8(ascii: "a"))
        default:
            out.append(byte)
        }
    }
    return Data(out)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOTLPJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let raw = UnsafeRawBufferPointer(start: data, count: size)
    let batches: [SpanBatch]
    do {
        batches = try OTLPJSON.decode(bytes: raw)
    } catch {
        require(!error.message.isEmpty, "a rejected document without a reason")
        return 0
    }
    let bytes = Data(raw)
    if (try? JSONSerialization.jsonObject(with: structure(bytes))) == nil {
        fatalError(
            "the reader accepted a document that is not JSON: \(String(decoding: bytes.prefix(200), as: UTF8.self))"
        )
    }
    let written = document(batches)
    let again: [SpanBatch]
    do {
        again = try OTLPJSON.decode(Data(written.utf8))
    } catch {
        fatalError("the reader rejects what the writer wrote (\(error)): \(written.prefix(400))")
    }
    let before = printed(batches)
    let after = printed(again)
    require(before == after, "spans changed on the way through the writer:\n\(before)\n\(after)")
    return 0
}
