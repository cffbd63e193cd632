import Foundation
import Testing

/// Where this test process keeps its policy directories: one directory, removed when the process exits, so a
/// failing test leaves nothing behind.
let policyctlScratch: URL = {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent(
        "policyctl-tests-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))"
    )
    try? FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(at: policyctlScratch) }
    return root
}()

/// Runs the built `policyctl` binary as a user would and checks output and exit status.
@Suite(.serialized) struct PolicyctlTests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static var binary: URL {
        var directory = Bundle.main.bundleURL
        if directory.pathExtension == "xctest" { directory.deleteLastPathComponent() }
        let candidate = directory.appendingPathComponent("policyctl")
        if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
        // swift-testing runner: the bundle is inside .build/<triple>/debug.
        return repositoryRoot.appendingPathComponent(".build/debug/policyctl")
    }

    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func run(_ arguments: [String], in directory: URL? = nil) throws -> Run {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        process.currentDirectoryURL = directory ?? Self.repositoryRoot
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(
            status: process.terminationStatus,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self)
        )
    }

    static func temporaryDirectory(_ files: [String: String]) throws -> URL {
        let directory = policyctlScratch.appendingPathComponent("policyctl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (name, text) in files {
            try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        return directory
    }

    @Test func validateExamplesIsClean() throws {
        let run = try Self.run(["validate", "policies"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("0 errors, 0 warnings"))
    }

    @Test func validateReportsErrorsWithLocationsAndExitsOne() throws {
        let directory = try Self.temporaryDirectory([
            "a.policy": "keep errors when stauts == ERROR\n",
            "b.policy": "keep slow when duration > 5xs\n",
        ])
        let run = try Self.run(["validate", "."], in: directory)
        #expect(run.status == 1)
        #expect(run.stderr.contains("./a.policy:1:18: error: unknown field `stauts` [TP3001]"))
        #expect(run.stderr.contains("help: did you mean `status`?"))
        #expect(run.stderr.contains("./b.policy:1:27: error: unknown duration unit `xs` [TP3004]"))
        #expect(run.stderr.contains("                     ^~~~~~"))
    }

    @Test func strictTurnsWarningsIntoFailure() throws {
        let directory = try Self.temporaryDirectory(["w.policy": "keep all\nkeep errors when status == ERROR\n"])
        #expect(try Self.run(["validate", "w.policy"], in: directory).status == 0)
        let strict = try Self.run(["validate", "--strict", "w.policy"], in: directory)
        #expect(strict.status == 1)
        #expect(strict.stderr.contains("[TP4002]"))
    }

    @Test func usageAndIOErrorsExitTwo() throws {
        let missing = try Self.run(["validate", "/nonexistent/policies"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("no such file or directory"))
        let empty = try Self.temporaryDirectory([:])
        #expect(try Self.run(["validate", empty.path]).status == 2)
        #expect(try Self.run(["validate", "--format", "yaml", "policies"]).status == 2)
        #expect(try Self.run(["validate"]).status == 2)
    }

    @Test func jsonDiagnostics() throws {
        let directory = try Self.temporaryDirectory(["a.policy": "keep errors when status == error\n"])
        let run = try Self.run(["validate", "--format", "json", "a.policy"], in: directory)
        #expect(run.status == 1)
        let object = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
        let diagnostics = try #require(object?["diagnostics"] as? [[String: Any]])
        #expect(diagnostics.count == 1)
        #expect(diagnostics[0]["code"] as? String == "TP3005")
        #expect(diagnostics[0]["file"] as? String == "a.policy")
        #expect((diagnostics[0]["start"] as? [String: Int])?["column"] == 28)
        #expect(object?["errors"] as? Int == 1)
    }

    @Test func githubAnnotations() throws {
        let directory = try Self.temporaryDirectory(["a.policy": "keep errors when status == error\n"])
        let run = try Self.run(["validate", "--format", "github", "a.policy"], in: directory)
        #expect(run.stdout.hasPrefix("::error file=a.policy,line=1,col=28,"))
    }

    @Test func fmtCheckThenRewrite() throws {
        let messy = "keep   errors when status==ERROR   # why\n"
        let directory = try Self.temporaryDirectory(["a.policy": messy, "b.policy": "keep ok when spans > 10\n"])
        let check = try Self.run(["fmt", "--check", "."], in: directory)
        #expect(check.status == 1)
        #expect(check.stdout == "would reformat ./a.policy\n")
        #expect(try String(contentsOf: directory.appendingPathComponent("a.policy"), encoding: .utf8) == messy)
        let rewrite = try Self.run(["fmt", "."], in: directory)
        #expect(rewrite.status == 0)
        #expect(
            try String(contentsOf: directory.appendingPathComponent("a.policy"), encoding: .utf8)
                == "keep errors when status == ERROR  # why\n"
        )
        #expect(try Self.run(["fmt", "--check", "."], in: directory).status == 0)
    }

    @Test func fmtLeavesBrokenFilesAlone() throws {
        let broken = "keep a when (status == ERROR\n"
        let directory = try Self.temporaryDirectory(["a.policy": broken])
        let run = try Self.run(["fmt", "a.policy"], in: directory)
        #expect(run.status == 1)
        #expect(run.stderr.contains("[TP2004]"))
        #expect(try String(contentsOf: directory.appendingPathComponent("a.policy"), encoding: .utf8) == broken)
    }

    @Test func compileEmitsIR() throws {
        let run = try Self.run(["compile", "policies", "--emit", "ir"])
        #expect(run.status == 0, "\(run.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
        let policies = try #require(object?["policies"] as? [[String: Any]])
        #expect(policies.contains { $0["name"] as? String == "health_checks" && $0["type"] as? String == "drop" })
        #expect(object?["settings"] != nil)
    }

    @Test func compileWithErrorsPrintsNothing() throws {
        let directory = try Self.temporaryDirectory(["a.policy": "keep a when status == error\n"])
        let run = try Self.run(["compile", "a.policy"], in: directory)
        #expect(run.status == 1)
        #expect(run.stdout.isEmpty)
    }
}
