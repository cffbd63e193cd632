import ControlPlane
import Foundation
import PolicyTesting
import Testing

/// The console in headless Chromium (Debian's `chromium` and `chromium-driver`, Selenium from PyPI; `.ci/run`
/// installs them): Tests/Browser/console_browser.py signs in, edits, applies, watches a live rollout and
/// rolls back against a real policyd stack with a simulated fleet. Screenshots of every page are kept in
/// `.build/artifacts/console/`.
@Suite(.serialized) struct ConsoleBrowserTests {
    static let script = repositoryRoot.appendingPathComponent("Tests/Browser/console_browser.py")
    static let artifacts = repositoryRoot.appendingPathComponent(".build/artifacts/console")

    static func browserInstalled() -> Bool {
        commandSucceeds([
            "python3", "-c",
            "import selenium, shutil, sys; sys.exit(0 if shutil.which('chromedriver') and shutil.which('chromium') else 1)",
        ])
    }

    @Test func signInEditApplyWatchAndRollBackInChromium() async throws {
        try #require(
            Self.browserInstalled(),
            "headless Chromium is missing: apt-get install chromium chromium-driver; pip install -r Tests/Browser/requirements.txt (.ci/run does both)"
        )
        let writer = APIToken(token: "browser-write-token-0123", name: "browser", role: .write)
        let reader = APIToken(token: "browser-read-token-01234", name: "viewer", role: .read)
        var options = fastOptions()
        // Long enough stages that the rollout page opens while the rollout moves.
        options.bakeSecondsOverride = 1.5
        let stack = try await TestStack(options: options, tokens: [writer, reader])
        await stack.startFleet(loadBalancers: 2, samplers: 4)
        let first = try await stack.applyAndWait(try exampleApply(message: "the example policies"))
        #expect(first.phase == .succeeded)
        let hostile = try await ConsoleTests.connectHostileAgent(
            opampPort: stack.opampPort,
            text: "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">"
        )
        try? FileManager.default.removeItem(at: Self.artifacts)
        var generator = SyntheticTraces(seed: 11)
        let sample = stack.directory.appendingPathComponent("sample.jsonl")
        try (0..<20).map { _ in OTLPJSONWriter.line((0..<25).map { _ in generator.next() }) }.joined(separator: "\n")
            .write(to: sample, atomically: true, encoding: .utf8)

        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        python.arguments = [
            "python3", Self.script.path, "--url", "http://127.0.0.1:\(stack.apiPort)", "--token", writer.token,
            "--read-token", reader.token, "--agents", "7", "--hostile-uid", hostile, "--file",
            "20-reliability.policy", "--trace-sample", sample.path, "--screenshots", Self.artifacts.path,
        ]
        let output = Pipe()
        python.standardOutput = output
        python.standardError = output
        try python.run()
        // Drain the pipe while the browser runs, so a chatty driver never blocks on a full pipe.
        let reading = Task.detached { output.fileHandleForReading.readDataToEndOfFile() }
        let deadline = Date().addingTimeInterval(300)
        while python.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
        if python.isRunning { python.terminate() }
        python.waitUntilExit()
        let log = String(decoding: await reading.value, as: UTF8.self)
        #expect(python.terminationStatus == 0, "\(log)")

        // What the browser did, as the server saw it: v2 applied by the browser's token, then the rollback.
        let versions = try stack.server.store.versions(limit: 5)
        #expect(versions.first?.number == 2 && versions.first?.author == "browser")
        #expect(versions.first?.sources.contains { $0.text.contains("keep console_slow when duration > 9s") } == true)
        let audit = try stack.server.store.audit(limit: 10).map(\.action)
        #expect(audit.contains("rollback") && audit.contains("apply"))
        #expect(try await stack.controller.summary().currentVersion == 1)
        for page in [
            "01-login", "02-fleet", "04-policies-with-a-typo", "05-estimate", "06-rollout-in-progress", "09-diff",
        ] {
            #expect(FileManager.default.fileExists(atPath: Self.artifacts.appendingPathComponent("\(page).png").path))
        }
        await stack.stop()
    }
}
