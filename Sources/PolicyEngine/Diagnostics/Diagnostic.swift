/// One problem found in a policy set, located at an exact span of a source file.
public struct Diagnostic: Sendable, Hashable, Codable {
    /// Stable code, for example `TP3001`.
    public var code: DiagnosticCode
    /// Error or warning (derived from the code).
    public var severity: Severity
    /// What is wrong, in one sentence.
    public var message: String
    /// The file path as given to the compiler.
    public var file: String
    /// Where the problem starts (1-based).
    public var start: SourceLocation
    /// Where the problem ends (1-based, exclusive column).
    public var end: SourceLocation
    /// What to write instead, when the compiler knows ("did you mean `status`?").
    public var suggestion: String?
    /// Related places, for example the first definition of a duplicated name.
    public var notes: [Note]

    /// A secondary location with a message.
    public struct Note: Sendable, Hashable, Codable {
        /// What this place has to do with the diagnostic.
        public var message: String
        /// Where it is.
        public var location: SourceReference

        /// Creates a note.
        public init(message: String, location: SourceReference) {
            self.message = message
            self.location = location
        }
    }

    /// Creates a diagnostic with explicit locations.
    public init(
        code: DiagnosticCode,
        message: String,
        file: String,
        start: SourceLocation,
        end: SourceLocation,
        suggestion: String? = nil,
        notes: [Note] = []
    ) {
        self.code = code
        self.severity = code.severity
        self.message = message
        self.file = file
        self.start = start
        self.end = end
        self.suggestion = suggestion
        self.notes = notes
    }

    /// `path:line:col`.
    public var reference: SourceReference {
        SourceReference(file: self.file, line: self.start.line, column: self.start.column)
    }
}

/// Collects diagnostics for one source file, with a cap so hostile input cannot flood the output.
struct DiagnosticSink {
    let file: SourceFile
    private(set) var diagnostics: [Diagnostic] = []
    private var errorCount = 0
    private var capped = false
    /// The most errors reported for one file before the rest are summarised.
    static let maximumErrorsPerFile = 100

    init(file: SourceFile) {
        self.file = file
    }

    var hasErrors: Bool { self.errorCount > 0 }
    /// Errors reported so far (to tell whether a step added any).
    var errorTotal: Int { self.errorCount + (self.capped ? 1 : 0) }

    mutating func emit(
        _ code: DiagnosticCode,
        _ message: String,
        at range: SourceRange,
        suggestion: String? = nil,
        notes: [Diagnostic.Note] = []
    ) {
        if code.severity == .error {
            if self.capped { return }
            if self.errorCount == Self.maximumErrorsPerFile {
                self.capped = true
                let location = self.file.location(of: range.start)
                self.diagnostics.append(
                    Diagnostic(
                        code: .tooManyErrors,
                        message: "too many errors in this file; stopped reporting after \(Self.maximumErrorsPerFile)",
                        file: self.file.path,
                        start: location,
                        end: location,
                        suggestion: "fix the errors above and run again"
                    )
                )
                return
            }
            self.errorCount += 1
        }
        self.diagnostics.append(
            Diagnostic(
                code: code,
                message: message,
                file: self.file.path,
                start: self.file.location(of: range.start),
                end: self.file.location(of: range.end),
                suggestion: suggestion,
                notes: notes
            )
        )
    }

    func reference(_ range: SourceRange) -> SourceReference {
        let location = self.file.location(of: range.start)
        return SourceReference(file: self.file.path, line: location.line, column: location.column)
    }
}

/// "Did you mean" suggestions by edit distance, shared by every input Tailplane reads.
public enum Spelling {
    /// The closest candidate within a small edit distance, if any.
    public static func closest(to word: String, in candidates: some Sequence<String>) -> String? {
        let lowered = word.lowercased()
        var best: (String, Int)?
        for candidate in candidates {
            let distance = Self.distance(lowered, candidate.lowercased())
            let limit = max(1, min(3, candidate.count / 3))
            if distance <= limit, best == nil || distance < best!.1 {
                best = (candidate, distance)
            }
        }
        return best?.0
    }

    /// Edit distance over Unicode scalars where swapping two neighbours counts as one edit
    /// (optimal string alignment), bounded to short words.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a.unicodeScalars.prefix(64))
        let b = Array(b.unicodeScalars.prefix(64))
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var table = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[a.count][b.count]
    }
}
