/// A YAML value with ordered mappings and optional end-of-line comments. The renderer builds configs
/// from these and ``YAMLWriter`` prints them the same way every time. (Yams cannot write comments,
/// which carry the fleet-wide figures behind per-replica limits.)
indirect enum YAMLNode: Sendable, Hashable {
    case map([Entry])
    case list([YAMLNode])
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)

    struct Entry: Sendable, Hashable {
        var key: String
        var value: YAMLNode
        var comment: String?

        init(_ key: String, _ value: YAMLNode, comment: String? = nil) {
            self.key = key
            self.value = value
            self.comment = comment
        }
    }

    static func int(_ value: Int) -> YAMLNode { .int(Int64(value)) }
    static func strings(_ values: [String]) -> YAMLNode { .list(values.map(YAMLNode.string)) }

    /// Milliseconds as a Go duration string: `30s`, `500ms`, `5m`.
    static func duration(_ ms: Int64) -> YAMLNode {
        if ms != 0, ms % 3_600_000 == 0 { return .string("\(ms / 3_600_000)h") }
        if ms != 0, ms % 60_000 == 0 { return .string("\(ms / 60_000)m") }
        if ms % 1000 == 0 { return .string("\(ms / 1000)s") }
        return .string("\(ms)ms")
    }
}

/// Builds a mapping, skipping absent values, keeping the order of insertion.
struct MapBuilder {
    private(set) var entries: [YAMLNode.Entry] = []

    mutating func add(_ key: String, _ value: YAMLNode?, comment: String? = nil) {
        guard let value else { return }
        self.entries.append(YAMLNode.Entry(key, value, comment: comment))
    }

    var node: YAMLNode { .map(self.entries) }
}

/// Prints ``YAMLNode`` trees as block-style YAML with two-space indentation.
enum YAMLWriter {
    static func write(_ node: YAMLNode, header: [String] = []) -> String {
        var lines = header.map { $0.isEmpty ? "#" : "# " + $0 }
        self.emit(node, indent: 0, into: &lines)
        return lines.joined(separator: "\n") + "\n"
    }

    private static func emit(_ node: YAMLNode, indent: Int, into lines: inout [String]) {
        let pad = String(repeating: " ", count: indent)
        switch node {
        case .map(let entries):
            for entry in entries {
                self.emitEntry(entry, prefix: pad, indent: indent, into: &lines)
            }
        case .list(let items):
            for item in items {
                self.emitItem(item, indent: indent, into: &lines)
            }
        default:
            lines.append(pad + self.scalar(node))
        }
    }

    private static func comment(_ text: String?) -> String {
        text.map { "  # " + $0 } ?? ""
    }

    private static func emitEntry(_ entry: YAMLNode.Entry, prefix: String, indent: Int, into lines: inout [String]) {
        let key = self.quoteIfNeeded(entry.key)
        switch entry.value {
        case .map(let entries) where entries.isEmpty:
            lines.append(prefix + key + ": {}" + self.comment(entry.comment))
        case .list(let items) where items.isEmpty:
            lines.append(prefix + key + ": []" + self.comment(entry.comment))
        case .map:
            lines.append(prefix + key + ":" + self.comment(entry.comment))
            self.emit(entry.value, indent: indent + 2, into: &lines)
        case .list:
            lines.append(prefix + key + ":" + self.comment(entry.comment))
            self.emit(entry.value, indent: indent + 2, into: &lines)
        default:
            lines.append(prefix + key + ": " + self.scalar(entry.value) + self.comment(entry.comment))
        }
    }

    private static func emitItem(_ item: YAMLNode, indent: Int, into lines: inout [String]) {
        let pad = String(repeating: " ", count: indent)
        switch item {
        case .map(let entries) where !entries.isEmpty:
            // First entry on the dash line, the rest aligned under it.
            self.emitEntry(entries[0], prefix: pad + "- ", indent: indent + 2, into: &lines)
            for entry in entries.dropFirst() {
                self.emitEntry(entry, prefix: pad + "  ", indent: indent + 2, into: &lines)
            }
        case .map:
            lines.append(pad + "- {}")
        case .list(let items) where items.isEmpty:
            lines.append(pad + "- []")
        case .list:
            lines.append(pad + "-")
            self.emit(item, indent: indent + 2, into: &lines)
        default:
            lines.append(pad + "- " + self.scalar(item))
        }
    }

    static func scalar(_ node: YAMLNode) -> String {
        switch node {
        case .string(let text): self.quoteIfNeeded(text)
        case .int(let value): String(value)
        case .double(let value):
            value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        case .bool(let value): value ? "true" : "false"
        case .map, .list: ""
        }
    }

    /// `30s`, `500ms`, `5m`, `1h`: digits then one unit.
    private static func isDuration(_ text: String) -> Bool {
        let utf8 = Array(text.utf8)
        guard let firstLetter = utf8.firstIndex(where: { !($0 >= 48 && $0 <= 57) }), firstLetter > 0 else {
            return false
        }
        let unit = utf8[firstLetter...]
        return unit.elementsEqual("ms".utf8) || unit.elementsEqual("s".utf8) || unit.elementsEqual("m".utf8)
            || unit.elementsEqual("h".utf8)
    }

    /// ASCII letters, digits and `_-./:${}`, starting with a letter, `_`, `/` or `$`; not a YAML keyword;
    /// braces only inside `${…}` references.
    private static func isPlainSafe(_ text: String) -> Bool {
        var bytes = text.utf8.makeIterator()
        guard let first = bytes.next() else { return false }
        let isLetter = { (b: UInt8) in (b >= 65 && b <= 90) || (b >= 97 && b <= 122) }
        guard isLetter(first) || first == UInt8(ascii: "_") || first == UInt8(ascii: "/") || first == UInt8(ascii: "$")
        else {
            return false
        }
        var last = first
        var sawBrace = first == UInt8(ascii: "{") || first == UInt8(ascii: "}")
        while let byte = bytes.next() {
            guard isLetter(byte) || (byte >= 48 && byte <= 57) || "_-./:${}".utf8.contains(byte) else { return false }
            if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "}") { sawBrace = true }
            last = byte
        }
        if last == UInt8(ascii: ":") { return false }
        if sawBrace, !text.hasPrefix("${") { return false }
        return text.utf8.count > 5 || !self.reserved.contains(text.lowercased())
    }

    private static let reserved: Set<String> = ["true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"]

    /// Plain when unambiguous, otherwise double-quoted with escapes.
    static func quoteIfNeeded(_ text: String) -> String {
        if self.isDuration(text) || self.isPlainSafe(text) { return text }
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out +=
                        "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                        + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
