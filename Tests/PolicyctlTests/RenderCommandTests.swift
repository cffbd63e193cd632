import Foundation
import Testing

@Suite(.serialized) struct RenderCommandTests {
    typealias CLI = PolicyctlTests

    static func copyOfExamples() throws -> URL {
        let directory = try CLI.temporaryDirectory([:])
        let source = CLI.repositoryRoot.appendingPathComponent("policies")
        for name in try FileManager.default.contentsOfDirectory(atPath: source.path) {
            try FileManager.default.copyItem(
                at: source.appendingPathComponent(name),
                to: directory.appendingPathComponent(name)
            )
        }
        return directory
    }

    @Test func rendersBothTiersWithHashes() throws {
        let run = try CLI.run(["render", "policies", "--samplers", "s-1:4317,s-0:4317"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("# tier: lb;"))
        #expect(run.stdout.contains("\n---\n# Rendered by Tailplane"))
        #expect(run.stdout.contains("# tier: sampling;"))
        #expect(run.stdout.contains("          - s-0:4317\n          - s-1:4317\n"))
        let hashes = run.stderr.split(separator: "\n").filter {
            $0.hasPrefix("lb sha256:") || $0.hasPrefix("sampling sha256:")
        }
        #expect(hashes.count == 2)
    }

    @Test func writesFilesWhoseHashesMatch() throws {
        let output = try CLI.temporaryDirectory([:])
        let run = try CLI.run([
            "render", "policies", "--tier", "sampling", "--samplers", "a:4317,b:4317,c:4317", "-o", output.path,
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let file = output.appendingPathComponent("sampling.yaml")
        let printed = try #require(
            run.stdout.split(separator: " ").last.map {
                String($0.dropFirst("sha256:".count)).trimmingCharacters(in: .whitespacesAndNewlines)
            }
        )
        let shasum = Process()
        shasum.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        shasum.arguments = [file.path]
        let pipe = Pipe()
        shasum.standardOutput = pipe
        try shasum.run()
        let digest = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(
            separator: " "
        ).first.map(String.init)
        shasum.waitUntilExit()
        #expect(digest == printed)
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("lb.yaml").path))
    }

    @Test func refusesFeaturesOfNewerCollectors() throws {
        let run = try CLI.run(["render", "policies", "--samplers", "a:4317", "--target-version", "0.120"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("[TP5101]"))
        #expect(run.stderr.contains("`drop` policies need otelcol-contrib v0.127 or newer; the fleet targets v0.120"))
    }

    @Test func staticRingNeedsSamplers() throws {
        let run = try CLI.run(["render", "policies", "--tier", "lb"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("[TP5102]"))
        #expect(try CLI.run(["render", "policies", "--tier", "sampling", "--sampler-count", "4"]).status == 0)
    }

    @Test func badFleetFileIsLocated() throws {
        let directory = try Self.copyOfExamples()
        try "collector:\n  versoin: \"0.140\"\n".write(
            to: directory.appendingPathComponent("fleet.yaml"),
            atomically: true,
            encoding: .utf8
        )
        let run = try CLI.run(["render", ".", "--samplers", "a:4317"], in: directory)
        #expect(run.status == 1)
        #expect(run.stderr.contains("./fleet.yaml:2:3: error: unknown key `versoin` in `collector` [TP5002]"))
        #expect(run.stderr.contains("help: did you mean `version`?"))
        let validate = try CLI.run(["validate", "."], in: directory)
        #expect(validate.status == 1)
        #expect(validate.stderr.contains("[TP5002]"))
    }

    @Test func diffBetweenPolicySets() throws {
        let changed = try Self.copyOfExamples()
        let file = changed.appendingPathComponent("30-business.policy")
        let text = try String(contentsOf: file, encoding: .utf8).replacingOccurrences(
            of: "keep baseline sample 5%",
            with: "keep baseline sample 2%"
        )
        try text.write(to: file, atomically: true, encoding: .utf8)
        let run = try CLI.run(["render", "policies", "--diff", changed.path, "--samplers", "a:4317"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("--- policies (sampling)\n+++ \(changed.path) (sampling)\n"))
        #expect(run.stdout.contains("-          sampling_percentage: 5\n+          sampling_percentage: 2\n"))
        #expect(!run.stdout.contains("(lb)"))
        let same = try CLI.run(["render", "policies", "--diff", "policies", "--samplers", "a:4317"])
        #expect(same.stdout.isEmpty && same.stderr.contains("no differences"))
    }
}
