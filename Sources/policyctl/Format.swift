import ArgumentParser
import Foundation
import PolicyEngine

extension Policyctl {
    struct Format: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fmt",
            abstract: "Rewrite policy files in canonical form (comments are kept).",
            discussion: "With --check nothing is written; exit status 1 names the files that would change."
        )

        @OptionGroup var paths: PathArguments

        @Flag(help: "Change nothing; exit 1 and list the files that are not formatted.")
        var check = false

        func run() throws {
            let sources: [SourceFile]
            do {
                sources = try SourceLoader.load(self.paths.paths)
            } catch {
                printError(error.description)
                throw Exit.usage
            }
            var unformatted: [String] = []
            var failed = false
            for source in sources {
                let result = PolicyFormatter.format(source)
                guard let formatted = result.formatted else {
                    DiagnosticPrinter.print(result.diagnostics, sources: [source], format: .text)
                    failed = true
                    continue
                }
                let bytes = Array(formatted.utf8)
                guard bytes != source.bytes else { continue }
                unformatted.append(source.path)
                if !self.check {
                    do {
                        try Data(bytes).write(to: URL(fileURLWithPath: source.path), options: .atomic)
                    } catch {
                        printError("\(source.path): cannot write: \(error.localizedDescription)")
                        throw Exit.usage
                    }
                }
            }
            for path in unformatted {
                print(self.check ? "would reformat \(path)" : "formatted \(path)")
            }
            if failed { throw Exit.problems }
            if self.check && !unformatted.isEmpty { throw Exit.problems }
        }
    }
}
