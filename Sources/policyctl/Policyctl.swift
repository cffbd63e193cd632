import ArgumentParser
import Foundation

/// `policyctl`: validate, format and compile Tailplane sampling policies.
@main
struct Policyctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policyctl",
        abstract: "Validate, format, compile and render Tailplane sampling policies; apply them and steer rollouts.",
        version: "0.1.0",
        subcommands: [
            Validate.self, Format.self, Compile.self, Render.self, Test.self, Explain.self, Estimate.self,
            Generate.self,
            Apply.self, Diff.self, RolloutCommand.self,
            Rollback.self, History.self, Versions.self, Agents.self, Ring.self, Tokens.self, PackagesCommand.self,
        ]
    )

    /// Usage errors exit with 2 (not ArgumentParser's 64), as documented.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Paths shared by every subcommand.
struct PathArguments: ParsableArguments {
    @Argument(help: "Policy files or directories (searched recursively for *.policy).")
    var paths: [String]

    func validate() throws {
        if self.paths.isEmpty { throw ValidationError("give at least one policy file or directory") }
    }
}

/// Exit codes shared by the subcommands.
enum Exit {
    /// Policy errors (or warnings under `--strict`), or files that `fmt --check` would change.
    static let problems = ExitCode(1)
    /// Usage or I/O errors.
    static let usage = ExitCode(2)
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data(("policyctl: " + message + "\n").utf8))
}
