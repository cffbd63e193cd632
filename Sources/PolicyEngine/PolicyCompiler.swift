/// The result of compiling a policy set.
public struct CompilationResult: Sendable {
    /// The checked IR, or `nil` when there are errors.
    public var policySet: PolicySet?
    /// Every diagnostic, sorted by file and position.
    public var diagnostics: [Diagnostic]

    /// True when at least one diagnostic is an error.
    public var hasErrors: Bool { self.diagnostics.contains { $0.severity == .error } }
    /// Number of errors.
    public var errorCount: Int { self.diagnostics.filter { $0.severity == .error }.count }
    /// Number of warnings.
    public var warningCount: Int { self.diagnostics.filter { $0.severity == .warning }.count }
}

/// Compiles policy sources into the checked IR.
///
/// Pure: callers load the files. Never throws and never stops at the first problem: every file is
/// parsed with recovery and every error in every file is reported.
public enum PolicyCompiler {
    /// Compiles a policy set (a directory's worth of files). Files are processed in path order, so the
    /// result does not depend on the order they are passed in.
    /// - Parameter files: the sources; paths must be distinct.
    /// - Returns: the IR (when there are no errors) and all diagnostics.
    public static func compile(_ files: [SourceFile]) -> CompilationResult {
        let ordered = files.sorted { $0.path < $1.path }
        var checker = Checker()
        var diagnostics: [Diagnostic] = []
        var anyErrors = false
        for file in ordered {
            let (syntax, parsed) = Parser.parse(file)
            var sink = parsed
            checker.check(syntax, sink: &sink)
            anyErrors = anyErrors || sink.hasErrors
            diagnostics.append(contentsOf: sink.diagnostics)
        }
        diagnostics.sort { lhs, rhs in
            (lhs.file, lhs.start.line, lhs.start.column, lhs.code.rawValue)
                < (rhs.file, rhs.start.line, rhs.start.column, rhs.code.rawValue)
        }
        guard !anyErrors else { return CompilationResult(policySet: nil, diagnostics: diagnostics) }
        let (settings, policies) = checker.result
        let policySet = PolicySet(settings: settings, policies: policies, sources: ordered.map(\.path))
        return CompilationResult(policySet: policySet, diagnostics: diagnostics)
    }
}

/// The result of formatting one file.
public struct FormatResult: Sendable {
    /// The canonical text, or `nil` when the file has syntax errors.
    public var formatted: String?
    /// Syntax diagnostics that prevented formatting.
    public var diagnostics: [Diagnostic]
}

/// Prints policy files in canonical form.
public enum PolicyFormatter {
    /// Formats one file. Files with syntax errors are left alone and their errors returned.
    /// Formatting is idempotent and keeps every comment.
    public static func format(_ file: SourceFile) -> FormatResult {
        let (syntax, sink) = Parser.parse(file)
        let errors = sink.diagnostics.filter { $0.severity == .error && $0.code != .emptyFile }
        guard errors.isEmpty else { return FormatResult(formatted: nil, diagnostics: errors) }
        return FormatResult(formatted: Formatter.format(syntax), diagnostics: [])
    }
}
