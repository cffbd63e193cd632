import Foundation
import Testing

@testable import PolicyEngine

/// Compiles one in-memory file.
func compile(_ text: String, path: String = "test.policy") -> CompilationResult {
    PolicyCompiler.compile([SourceFile(path: path, text: text)])
}

/// Compiles text that must be free of errors and returns its policies.
func policies(_ text: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> [Policy] {
    let result = compile(text)
    #expect(
        !result.hasErrors,
        "unexpected errors: \(result.diagnostics.map { "\($0.start.line):\($0.start.column) \($0.code.rawValue) \($0.message)" })",
        sourceLocation: sourceLocation
    )
    return result.policySet?.policies ?? []
}

/// Source with a `1️⃣` marker where a diagnostic must start. Returns the clean text and the marker's
/// 1-based line and column (in bytes).
func marked(_ text: String) -> (text: String, line: Int, column: Int) {
    let marker = "1️⃣"
    guard let range = text.range(of: marker) else { return (text, 0, 0) }
    let before = text[..<range.lowerBound]
    let line = before.filter { $0 == "\n" }.count + 1
    let lineStart = before.lastIndex(of: "\n").map { before.index(after: $0) } ?? before.startIndex
    let column = before[lineStart...].utf8.count + 1
    return (text.replacingCharacters(in: range, with: ""), line, column)
}

/// The repository root, found from this file's path.
let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The example policy set as source files.
func examplePolicies() throws -> [SourceFile] {
    let directory = repositoryRoot.appendingPathComponent("policies")
    let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        .filter { $0.hasSuffix(".policy") }.sorted()
    return try names.map { name in
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        return SourceFile(path: "policies/\(name)", bytes: [UInt8](data))
    }
}

/// A small deterministic random generator (SplitMix64) so failures reproduce.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Checks that every diagnostic points inside its file.
func expectValidLocations(
    _ diagnostics: [Diagnostic],
    in file: SourceFile,
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) {
    let lineCount = file.lineStarts.count
    for diagnostic in diagnostics {
        #expect(diagnostic.file == file.path, sourceLocation: sourceLocation)
        #expect(
            diagnostic.start.line >= 1 && diagnostic.start.line <= lineCount,
            "\(diagnostic)",
            sourceLocation: sourceLocation
        )
        #expect(diagnostic.start.column >= 1, sourceLocation: sourceLocation)
        let lineLength = file.lineText(diagnostic.start.line).utf8.count
        #expect(
            diagnostic.start.column <= lineLength + 2,
            "\(diagnostic) line length \(lineLength)",
            sourceLocation: sourceLocation
        )
        #expect(diagnostic.end >= diagnostic.start, sourceLocation: sourceLocation)
        #expect(!diagnostic.message.isEmpty, sourceLocation: sourceLocation)
    }
}
