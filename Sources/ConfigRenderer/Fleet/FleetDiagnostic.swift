import PolicyEngine

/// A problem in a fleet description or in rendering, located in `fleet.yaml` where it has a place.
public struct FleetDiagnostic: Sendable, Hashable, Error, Codable, CustomStringConvertible {
    /// Stable codes; `docs/fleet.md` lists them.
    public enum Code: String, Sendable, Hashable, Codable, CaseIterable {
        case invalidYAML = "TP5001"
        case unknownKey = "TP5002"
        case wrongType = "TP5003"
        case invalidValue = "TP5004"
        case inlineSecret = "TP5005"
        case invalidTemplate = "TP5006"
        case invalidRollout = "TP5007"
        case duplicateBackend = "TP5008"
        case missingKey = "TP5009"
        case featureNeedsNewerCollector = "TP5101"
        case noSamplers = "TP5102"
        case invalidSamplerEndpoint = "TP5103"
        case unrepresentable = "TP5104"
        case budgetShareTooSmall = "TP5105"
    }

    /// The stable code.
    public var code: Code
    /// What is wrong.
    public var message: String
    /// The file, when the problem has a place in one.
    public var file: String?
    /// 1-based line (0 when unknown).
    public var line: Int
    /// 1-based column (0 when unknown).
    public var column: Int
    /// What to write instead.
    public var suggestion: String?
    /// An error stops the render; a warning comes with the rendered config.
    public var severity: Severity

    /// Creates a diagnostic.
    public init(
        code: Code,
        message: String,
        file: String? = nil,
        line: Int = 0,
        column: Int = 0,
        suggestion: String? = nil,
        severity: Severity = .error
    ) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.suggestion = suggestion
        self.severity = severity
    }

    /// `fleet.yaml:3:5: error: message [TP5002]` plus the suggestion.
    public var description: String {
        var place = self.file ?? "render"
        if self.line > 0 { place += ":\(self.line):\(self.column)" }
        var text = "\(place): \(self.severity.rawValue): \(self.message) [\(self.code.rawValue)]"
        if let suggestion = self.suggestion { text += "\n    help: \(suggestion)" }
        return text
    }
}
