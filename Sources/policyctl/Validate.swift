import ArgumentParser
import Foundation
import PolicyEngine

/// How diagnostics are printed.
enum DiagnosticOutput: String, ExpressibleByArgument, CaseIterable {
    /// `file:line:col: error: … [TPnnnn]` with the source line and a caret.
    case text
    /// A JSON document on stdout.
    case json
    /// GitHub Actions workflow commands (`::error file=…::…`).
    case github
}

extension Policyctl {
    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check policies and report every error and warning.",
            discussion: "Exit status: 0 clean, 1 errors (or warnings with --strict), 2 usage or I/O errors."
        )

        @OptionGroup var paths: PathArguments

        @Flag(help: "Treat warnings as errors.")
        var strict = false

        @Option(help: "Diagnostic output: text, json or github.")
        var format: DiagnosticOutput = .text

        func run() throws {
            let sources: [SourceFile]
            do {
                sources = try SourceLoader.load(self.paths.paths)
            } catch {
                printError(error.description)
                throw Exit.usage
            }
            let result = PolicyCompiler.compile(sources)
            DiagnosticPrinter.print(result.diagnostics, sources: sources, format: self.format)
            // The fleet description next to the policies is part of the set.
            var fleetFailed = false
            for path in self.paths.paths {
                do {
                    _ = try FleetLoader.load(explicit: nil, near: path)
                } catch {
                    fleetFailed = true
                }
            }
            if self.format == .text {
                let files = sources.count == 1 ? "1 file" : "\(sources.count) files"
                let rules = result.policySet.map { ", \($0.policies.count) policies" } ?? ""
                FileHandle.standardError.write(
                    Data(
                        "\(files)\(rules): \(DiagnosticFormatter.summary(errors: result.errorCount, warnings: result.warningCount))\n"
                            .utf8
                    )
                )
            }
            if fleetFailed || result.hasErrors || (self.strict && result.warningCount > 0) {
                throw Exit.problems
            }
        }
    }
}

/// Prints diagnostics in the chosen format.
enum DiagnosticPrinter {
    static func print(_ diagnostics: [Diagnostic], sources: [SourceFile], format: DiagnosticOutput) {
        switch format {
        case .text:
            let byPath = Dictionary(sources.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
            var text = ""
            for diagnostic in diagnostics {
                text += DiagnosticFormatter.text(diagnostic, source: byPath[diagnostic.file])
            }
            FileHandle.standardError.write(Data(text.utf8))
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            struct Report: Encodable {
                var diagnostics: [Diagnostic]
                var errors: Int
                var warnings: Int
            }
            let report = Report(
                diagnostics: diagnostics,
                errors: diagnostics.filter { $0.severity == .error }.count,
                warnings: diagnostics.filter { $0.severity == .warning }.count
            )
            let data = (try? encoder.encode(report)) ?? Data("{}".utf8)
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        case .github:
            var text = ""
            for diagnostic in diagnostics {
                let level = diagnostic.severity == .error ? "error" : "warning"
                var message = "\(diagnostic.message) [\(diagnostic.code.rawValue)]"
                if let suggestion = diagnostic.suggestion { message += " help: \(suggestion)" }
                message = message.replacingOccurrences(of: "%", with: "%25")
                    .replacingOccurrences(of: "\r", with: "%0D").replacingOccurrences(of: "\n", with: "%0A")
                text +=
                    "::\(level) file=\(diagnostic.file),line=\(diagnostic.start.line),col=\(diagnostic.start.column),"
                    + "endLine=\(diagnostic.end.line),endColumn=\(diagnostic.end.column),title=\(diagnostic.code.rawValue)::\(message)\n"
            }
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }
}
