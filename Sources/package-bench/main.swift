import CMalloc
import ControlPlane
import Foundation
import Logging
import NIOCore
import OpAMPServer
import ServiceLifecycle

/// Prints a figure at once, also through a pipe.
func say(_ text: String) {
    print(text)
    fflush(nil)
}

/// Package distribution benchmark; prints figures, never run as a test.
///
///     swift build -c release --product package-bench --product opamp-fleet
///     .build/release/package-bench [agents] [MiB…]
///
/// For each package size: a package of that size is pushed to policyd's repository (streamed, hashed, signed),
/// then rolled out in one stage to every agent of a fleet running in a separate `opamp-fleet` process over
/// WebSockets. Every agent downloads the file over HTTP (policyd serves it from disk), hashes it, verifies its
/// signature with the pinned key and installs it. Printed: the upload time, the time until every agent
/// reported it installed, the download throughput, and policyd's resident memory before and at its peak
/// during the downloads (sampled every 50 ms), so memory can be compared across package sizes.
// Tuned as policyd is (`--glibc-defaults` leaves glibc's allocator as it comes, for comparison).
let glibcDefaults = CommandLine.arguments.contains("--glibc-defaults")
if !glibcDefaults { _ = tailplane_return_large_buffers() }
let arguments = Array(CommandLine.arguments.dropFirst().filter { $0 != "--glibc-defaults" })
let agentCount = arguments.first.flatMap(Int.init) ?? 1000
let sizes = arguments.dropFirst().compactMap(Int.init).isEmpty ? [10, 100] : arguments.dropFirst().compactMap(Int.init)
let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
let repositoryRoot = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)

func residentMiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }
    return 0
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let duration = ContinuousClock.now - start
    return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .error
    return handler
}

var configuration = OpAMPServerConfiguration()
configuration.host = "127.0.0.1"
configuration.port = 0
configuration.threads = 2
configuration.maxConnections = agentCount + 100
configuration.webSocketOfflineAfter = 3600
let opamp = OpAMPServer(configuration: configuration)
let opampPort = try await opamp.start()
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("package-bench-\(UUID().uuidString)")
defer { try? FileManager.default.removeItem(at: directory) }
var options = ControlPlaneOptions()
options.tickInterval = .milliseconds(100)
options.settleSecondsOverride = 0
let store = try SQLiteStore(directory: directory)
let packages = try PackageRepository(directory: directory.appendingPathComponent("packages"), store: store)
let control = try ControlPlaneServer(
    store: store,
    registry: opamp.registry,
    options: options,
    port: 0,
    packages: packages
)
let group = ServiceGroup(services: [control], logger: Logger(label: "bench"))
let serving = Task { try await group.run() }
let apiPort = await control.apiPort()
let controller = control.controller

let keyFile = directory.appendingPathComponent("signing-key.pem")
try packages.publicKeyPEM.write(to: keyFile, atomically: true, encoding: .utf8)
let fleet = Process()
fleet.executableURL = binDirectory.appendingPathComponent("opamp-fleet")
fleet.arguments = [
    "--endpoint", "ws://127.0.0.1:\(opampPort)/v1/opamp", "--agents", String(agentCount), "--lb-share", "0.2",
    "--connect-rate", "4000", "--heartbeat", "600", "--apply-delay-ms", "0", "--stats-interval", "3600",
    "--threads", "1", "--accepts-packages", "--package-key", keyFile.path,
    // The first package is the collector they run (a tier's first pin must be), the next ones upgrades.
    "--collector-version", "0.160.0",
]
fleet.standardOutput = FileHandle.nullDevice
try fleet.run()
let connectStart = ContinuousClock.now
while opamp.registry.connectedCount < agentCount {
    guard seconds(since: connectStart) < 180 else {
        say("only \(opamp.registry.connectedCount) of \(agentCount) agents connected")
        fleet.terminate()
        exit(1)
    }
    try await Task.sleep(for: .milliseconds(50))
}
say(
    "\(agentCount) agents connected; policyd resident \(residentMiB()) MiB\(glibcDefaults ? " (glibc allocator defaults)" : "")"
)

// The example rules without the business file (its budget cannot be split across this many samplers), one
// stage, every agent at once, no drain: the downloads all run together.
let folder = repositoryRoot.appendingPathComponent("policies")
let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter {
    $0.hasSuffix(".policy") && $0 != "30-business.policy"
}.sorted()
let sources = try names.map {
    SourceText(path: $0, text: try String(contentsOf: folder.appendingPathComponent($0), encoding: .utf8))
}
var fleetText = try String(contentsOf: folder.appendingPathComponent("fleet.yaml"), encoding: .utf8)
fleetText = fleetText.replacingOccurrences(
    of:
        "rollout:\n  stages:\n    - canary: 1\n    - percent: 25\n    - percent: 100\n  bake_time: 5m\n  max_unavailable: 1",
    with: "rollout:\n  stages: [{percent: 100}]\n  bake_time: 0s\n  max_unavailable: \(agentCount)\n  drain: false"
)
let first = try await controller.apply(
    ApplyRequest(sources: sources, fleet: fleetText),
    actor: "bench",
    remote: "local"
)
while try await controller.rollout(first.rollout ?? 0)?.rollout.phase.isTerminal == false {
    try await Task.sleep(for: .milliseconds(50))
}

for (index, mebibytes) in sizes.enumerated() {
    let version = "0.\(160 + index).0"
    let size = mebibytes << 20
    // Streamed in 1 MiB chunks, as an HTTP upload arrives.
    let chunk = ByteBuffer(repeating: UInt8(truncatingIfNeeded: 0x41 + index), count: 1 << 20)
    let body = AsyncStream<ByteBuffer> { continuation in
        for _ in 0..<mebibytes { continuation.yield(chunk) }
        continuation.finish()
    }
    let before = residentMiB()
    let uploadStart = ContinuousClock.now
    _ = try await packages.ingest(
        name: "otelcol-contrib",
        version: version,
        kind: .topLevel,
        uploader: "bench",
        now: Date(),
        body: body
    )
    let upload = seconds(since: uploadStart)
    let start = ContinuousClock.now
    let result = try await controller.rolloutPackage(
        name: "otelcol-contrib",
        version: version,
        actor: "bench",
        remote: "local"
    )
    var peak = residentMiB()
    var phase = "progressing"
    while true {
        peak = max(peak, residentMiB())
        if let rollout = try await controller.rollout(result.rollout ?? 0)?.rollout, rollout.phase.isTerminal {
            phase = rollout.phase.rawValue
            break
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    let elapsed = seconds(since: start)
    let installed = await controller.agents().filter { $0.packageState == "installed" }.count
    let total = Double(size) * Double(agentCount)
    say(
        String(
            format:
                "%d MiB package: upload %.2fs; %@ to %d agents in %.1fs (%d installed), %.0f MiB/s served in all; policyd resident %d MiB before, %d MiB peak",
            mebibytes,
            upload,
            phase,
            agentCount,
            elapsed,
            installed,
            total / 1_048_576 / elapsed,
            before,
            peak
        )
    )
}

fleet.terminate()
fleet.waitUntilExit()
await group.triggerGracefulShutdown()
_ = try? await serving.value
await opamp.stop()
