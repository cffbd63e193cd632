/// Renders diagnostics as compiler-style text (for people and editors) or JSON (for CI annotations).
public enum DiagnosticFormatter {
    /// `path:line:col: error: message [TPnnnn]`, the source line, a caret line under the exact span, the
    /// suggestion and any notes.
    /// - Parameters:
    ///   - diagnostic: what to print.
    ///   - source: the file it points into, for the source line; without it only the header is printed.
    public static func text(_ diagnostic: Diagnostic, source: SourceFile?) -> String {
        var out =
            "\(diagnostic.file):\(diagnostic.start.line):\(diagnostic.start.column): "
            + "\(diagnostic.severity.rawValue): \(diagnostic.message) [\(diagnostic.code.rawValue)]\n"
        if let source, diagnostic.start.line <= source.lineStarts.count {
            let line = source.lineText(diagnostic.start.line)
            let lineStart = source.lineStarts[diagnostic.start.line - 1]
            let lineBytes = Array(source.bytes[lineStart..<min(source.bytes.count, lineStart + line.utf8.count + 4)])
            let startByte = min(diagnostic.start.column - 1, lineBytes.count)
            let endByte: Int
            if diagnostic.end.line == diagnostic.start.line {
                endByte = min(
                    max(diagnostic.end.column - 1, startByte + 1),
                    max(startByte + 1, Self.visibleLength(lineBytes))
                )
            } else {
                endByte = max(startByte + 1, Self.visibleLength(lineBytes))
            }
            let prefix = String(decoding: lineBytes.prefix(startByte), as: UTF8.self)
            let marked = String(decoding: lineBytes.prefix(endByte).dropFirst(startByte), as: UTF8.self)
            let pad = String(prefix.map { $0 == "\t" ? "\t" : " " })
            let width = max(1, marked.count)
            let shown = line.count > 300 ? String(line.prefix(300)) + "…" : line
            out += "    \(shown)\n"
            if pad.count <= 300 {
                out += "    \(pad)^" + String(repeating: "~", count: width - 1) + "\n"
            }
        }
        if let suggestion = diagnostic.suggestion {
            out += "    help: \(suggestion)\n"
        }
        for note in diagnostic.notes {
            out += "\(note.location): note: \(note.message)\n"
        }
        return out
    }

    private static func visibleLength(_ bytes: [UInt8]) -> Int {
        var count = bytes.count
        while count > 0, bytes[count - 1] == UInt8(ascii: "\n") || bytes[count - 1] == UInt8(ascii: "\r") {
            count -= 1
        }
        if let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) { count = min(count, newline) }
        return count
    }

    /// A summary line: `2 errors, 1 warning`.
    public static func summary(errors: Int, warnings: Int) -> String {
        func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }
        return "\(plural(errors, "error")), \(plural(warnings, "warning"))"
    }
}
