import ArgumentParser
import Foundation
import PolicyEngine

extension Policyctl {
    struct Compile: ParsableCommand {
        enum Emit: String, ExpressibleByArgument, CaseIterable {
            /// The checked IR as JSON.
            case ir
        }

        static let configuration = CommandConfiguration(
            abstract: "Compile policies and print the result.",
            discussion: "Diagnostics go to stderr; the output goes to stdout only when there are no errors."
        )

        @OptionGroup var paths: PathArguments

        @Option(help: "What to print: ir.")
        var emit: Emit = .ir

        func run() throws {
            let sources: [SourceFile]
            do {
                sources = try SourceLoader.load(self.paths.paths)
            } catch {
                printError(error.description)
                throw Exit.usage
            }
            let result = PolicyCompiler.compile(sources)
            DiagnosticPrinter.print(result.diagnostics, sources: sources, format: .text)
            guard let policySet = result.policySet else { throw Exit.problems }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let data = try encoder.encode(policySet)
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }
}
