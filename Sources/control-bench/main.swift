import ControlPlane
import FleetSimulator
import Foundation
import Logging
import OpAMPServer
import ServiceLifecycle

/// Prints a figure at once, also through a pipe.
func say(_ text: String) {
    print(text)
    fflush(nil)
}

/// Control plane benchmarks; prints figures, never run as a test.
///
///     swift build -c release --product control-bench --product opamp-fleet
///     .build/release/control-bench [agents]
///
/// The fleet (20 % load balancers, 80 % samplers) runs in a separate `opamp-fleet` process over WebSockets.
/// 1. Apply until every agent reports APPLIED, one stage (`{percent: 100}`), no bake.
/// 2. The same with canary, 25 %, 100 % and no bake.
/// 3. A ring change (one sampler joins) until every load balancer applied it.
/// 4. `GET /v1/agents` latency (curl, whole fleet), and resident memory.
let arguments = CommandLine.arguments.dropFirst()
let agentCount = arguments.first.flatMap(Int.init) ?? 10_000
let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
let repository = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)

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
configuration.maxConnections = agentCount + 1000
configuration.webSocketOfflineAfter = 3600
configuration.httpOfflineAfter = 3600
let opamp = OpAMPServer(configuration: configuration)
let opampPort = try await opamp.start()
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("control-bench-\(UUID().uuidString)")
defer { try? FileManager.default.removeItem(at: directory) }
var options = ControlPlaneOptions()
options.tickInterval = .milliseconds(100)
options.unverifiedAfterSeconds = 0
options.settleSecondsOverride = 0
let control = try ControlPlaneServer(
    store: try SQLiteStore(directory: directory),
    registry: opamp.registry,
    options: options,
    port: 0
)
let group = ServiceGroup(services: [control], logger: Logger(label: "bench"))
let serving = Task { try await group.run() }
let apiPort = await control.apiPort()
let controller = control.controller
let baseline = residentMiB()

let fleet = Process()
fleet.executableURL = binDirectory.appendingPathComponent("opamp-fleet")
fleet.arguments = [
    "--endpoint", "ws://127.0.0.1:\(opampPort)/v1/opamp", "--agents", String(agentCount), "--lb-share", "0.2",
    "--connect-rate", "4000", "--heartbeat", "600", "--apply-delay-ms", "0", "--stats-interval", "3600",
    "--threads", "1",
]
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
say("\(agentCount) agents connected in \(String(format: "%.1f", seconds(since: connectStart)))s; API on :\(apiPort)")

func policies(_ extra: String, stages: String) throws -> ApplyRequest {
    // The example rules without the business file: its 1,500 spans/s budget cannot be split across thousands
    // of samplers (the apply is refused, TP5105).
    let folder = repository.appendingPathComponent("policies")
    let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter {
        $0.hasSuffix(".policy") && $0 != "30-business.policy"
    }.sorted()
    var sources = try names.map {
        SourceText(path: $0, text: try String(contentsOf: folder.appendingPathComponent($0), encoding: .utf8))
    }
    sources.append(SourceText(path: "99-bench.policy", text: extra + "keep baseline sample 5%\n"))
    var fleetText = try String(contentsOf: folder.appendingPathComponent("fleet.yaml"), encoding: .utf8)
    fleetText = fleetText.replacingOccurrences(
        of:
            "rollout:\n  stages:\n    - canary: 1\n    - percent: 25\n    - percent: 100\n  bake_time: 5m\n  max_unavailable: 1",
        with: "rollout:\n  stages: \(stages)\n  bake_time: 0s\n  max_unavailable: \(agentCount)\n  drain: false"
    )
    return ApplyRequest(sources: sources, fleet: fleetText, message: "bench")
}

func rollOut(_ title: String, _ request: ApplyRequest) async throws {
    let start = ContinuousClock.now
    let result = try await controller.apply(request, actor: "bench", remote: "local")
    guard let id = result.rollout else { return say("\(title): nothing to roll out") }
    while true {
        let report = try await controller.rollout(id)
        if let rollout = report?.rollout, rollout.phase.isTerminal {
            let applied = await controller.agents().filter { $0.configState == "applied" }.count
            say(
                String(
                    format: "%@: %.2fs until every agent APPLIED (%@; %d of %d applied)",
                    title,
                    seconds(since: start),
                    rollout.phase.rawValue,
                    applied,
                    agentCount
                )
            )
            return
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}

try await rollOut("one stage", try policies("keep bench_one when service == \"bench-1\"\n", stages: "[{percent: 100}]"))
try await rollOut(
    "canary, 25 %, 100 %",
    try policies("keep bench_two when service == \"bench-2\"\n", stages: "[{canary: 1}, {percent: 25}, {percent: 100}]")
)

// A ring change: one more sampler joins; time until every load balancer applied the new ring.
var extra = FleetOptions()
extra.port = opampPort
extra.agents = 1
extra.loadBalancerShare = 0
extra.firstIndex = 900_000
extra.applyDelay = .milliseconds(0)
extra.threads = 1
let joiner = FleetRunner(options: extra)
let joining = Task { try await joiner.run() }
let ringBefore = try await controller.summary().ring.version
var ringSeconds: Double?
let ringStart = ContinuousClock.now
while seconds(since: ringStart) < 60 {
    let summary = try await controller.summary()
    if summary.ring.version > ringBefore, let converged = summary.ring.convergenceSeconds {
        ringSeconds = converged
        break
    }
    try await Task.sleep(for: .milliseconds(20))
}
say(
    ringSeconds.map { String(format: "ring change (a sampler joins): every load balancer applied it after %.2fs", $0) }
        ?? "ring change: did not converge within 60s"
)

/// Fetches a path with curl five times: median and slowest time, and the size of the answer.
func fetch(_ path: String) throws -> (median: Double, slowest: Double, bytes: Int)? {
    var latencies: [Double] = []
    var bytes = 0
    for _ in 0..<5 {
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        curl.arguments = [
            "curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
            "http://127.0.0.1:\(apiPort)\(path)",
        ]
        let pipe = Pipe()
        curl.standardOutput = pipe
        try curl.run()
        curl.waitUntilExit()
        let fields = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(
            separator: " "
        )
        if fields.count == 2, let time = Double(fields[0]), let size = Int(fields[1]) {
            latencies.append(time)
            bytes = size
        }
    }
    latencies.sort()
    guard !latencies.isEmpty else { return nil }
    return (latencies[latencies.count / 2], latencies.last!, bytes)
}

// The API's agent list and the console's pages over HTTP, five times each.
let someUID = await control.controller.agents().last?.instanceUID ?? ""
let pages: [(String, String)] = [
    ("GET /healthz (no controller call: the HTTP floor)", "/healthz"),
    ("GET /v1/fleet (one controller call, records of the last tick)", "/v1/fleet"),
    ("GET /v1/agents (whole fleet as JSON)", "/v1/agents"),
    ("console fleet page, first 50 agents", "/"),
    ("console fleet page, page 100", "/?page=100"),
    ("console fleet page, samplers only", "/?tier=sampling"),
    ("console fleet page, text search", "/?q=sampler-00999"),
    ("console fleet summary fragment (live updates)", "/console/fragments/fleet-summary"),
    ("console agent page", "/agents/\(someUID)"),
    ("console rollout page", "/rollout"),
    ("console policies page", "/policies"),
]
for (title, path) in pages {
    guard let figures = try fetch(path) else { continue }
    say(
        String(
            format: "%@ (%d agents): median %.0f ms, slowest %.0f ms, %.1f KB",
            title,
            agentCount + 1,
            figures.median * 1000,
            figures.slowest * 1000,
            Double(figures.bytes) / 1024
        )
    )
}
say(
    "policyd process (OpAMP server + control plane) resident memory: \(residentMiB()) MiB (\(baseline) MiB before the fleet)"
)

joining.cancel()
await joiner.shutdown()
fleet.terminate()
fleet.waitUntilExit()
await group.triggerGracefulShutdown()
_ = try? await serving.value
await opamp.stop()
