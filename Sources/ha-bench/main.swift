import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Several replicas on PostgreSQL against one policyd on SQLite, with a large simulated fleet; prints figures,
/// never run as a test.
///
///     for p in policyd opamp-fleet ha-bench; do swift build -c release --product $p; done
///     scripts/ha-bench.sh 30000          # starts a throwaway PostgreSQL, then runs this
///     .build/release/ha-bench 30000 --database postgres://…   # against an empty database of your own
///
/// For each setup (one policyd on SQLite with `--sqlite-agents`; then `--replicas` policyd on the database), with
/// the fleet (20 % load balancers) in `opamp-fleet` processes of 10,000 agents spread over the OpAMP ports:
/// 1. time until every agent is connected and seen by the leader;
/// 2. an apply, one stage, no bake, no drain: time until every agent runs it; then canary, 25 %, 100 %;
/// 3. resident memory of each policyd (now and at its peak);
/// 4. replicas only: `kill -9` of the leader, time until another leads and until it sees every agent again
///    (agents of the dead replica reconnect to the others), and a rollout on the survivors; then the new
///    leader paused (SIGSTOP): time until another leads, and the paused one stepping down when resumed.
let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}
let replicaAgents = arguments.first.flatMap(Int.init) ?? 30_000
/// One policyd holds at most its open-file limit less a reserve (20,000 here: 18,976 agents), so the SQLite
/// comparison runs with fewer agents unless told otherwise.
let sqliteAgents = option("--sqlite-agents").flatMap(Int.init) ?? min(replicaAgents, 15_000)
/// The fleet's size in the setup running now.
nonisolated(unsafe) var agentCount = replicaAgents
let database = option("--database")
let replicaCount = option("--replicas").flatMap(Int.init) ?? 3
let skipSQLite = arguments.contains("--skip-sqlite")
/// Goes from connected straight to the `kill -9` of the leader (no rollouts before it), to measure failover alone.
let failoverOnly = arguments.contains("--failover-only")
/// Where each replica's log goes (`NAME.log`, level notice): nowhere (level error, to this process's stderr) unless given.
let logDirectory = option("--logs")
let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
let repository = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)

/// Prints a figure at once, also through a pipe, after the wall-clock time (to match the replicas' logs).
func say(_ text: String) {
    let stamp = ISO8601DateFormatter.string(
        from: Date(),
        timeZone: TimeZone(identifier: "UTC")!,
        formatOptions: [.withTime, .withColonSeparatorInTime, .withFractionalSeconds]
    )
    print("\(stamp) \(text)")
    fflush(nil)
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let duration = ContinuousClock.now - start
    return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func format(_ value: Double) -> String { String(format: "%.1f", value) }

/// A free TCP port on 127.0.0.1.
func freePort() -> Int {
    let socket = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Resident and peak memory of a process, MiB.
func memory(_ pid: Int32) -> (now: Int, peak: Int) {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    func field(_ name: String) -> Int {
        for line in status.split(separator: "\n") where line.hasPrefix(name) {
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
        }
        return 0
    }
    return (field("VmRSS:"), field("VmHWM:"))
}

struct Replica {
    let name: String
    let opampPort: Int
    let apiPort: Int
    let directory: URL
    let process: Process
}

func startPolicyd(_ name: String, database: String?) throws -> Replica {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ha-bench-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let (opamp, api) = (freePort(), freePort())
    let process = Process()
    process.executableURL = binDirectory.appendingPathComponent("policyd")
    var serve = [
        "serve", "--data-dir", directory.path, "--bind", "127.0.0.1", "--opamp-port", String(opamp),
        "--api-port", String(api), "--log-level", logDirectory == nil ? "error" : "notice",
        "--max-connections", String(agentCount + 1000),
    ]
    if let database { serve += ["--database", database, "--replica-name", name] }
    process.arguments = serve
    process.standardOutput = FileHandle.nullDevice
    if let logDirectory {
        let path = URL(fileURLWithPath: logDirectory).appendingPathComponent("\(name).log").path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: path)
    } else {
        process.standardError = FileHandle.standardError
    }
    try process.run()
    return Replica(name: name, opampPort: opamp, apiPort: api, directory: directory, process: process)
}

func get(_ port: Int, _ path: String) async -> ByteBuffer? {
    let request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
    guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(30)),
        response.status == .ok
    else { return nil }
    return try? await response.body.collect(upTo: 256 << 20)
}

func json(_ port: Int, _ path: String) async -> [String: Any]? {
    guard let body = await get(port, path) else { return nil }
    return (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any]
}

func leads(_ replica: Replica) async -> Bool {
    guard let body = await get(replica.apiPort, "/metrics") else { return false }
    return String(buffer: body).split(separator: "\n").contains {
        $0 == "tailplane_leader 1" || $0 == "tailplane_leader 1.0"
    }
}

func leader(of replicas: [Replica]) async -> Replica? {
    for replica in replicas where replica.process.isRunning {
        if await leads(replica) { return replica }
    }
    return nil
}

/// Waits until `condition` holds (polling every 100 ms) and returns the seconds it took, or nil after `limit`.
func timed(limit: Double, _ condition: () async -> Bool) async -> Double? {
    let start = ContinuousClock.now
    while seconds(since: start) < limit {
        if await condition() { return seconds(since: start) }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return nil
}

/// Connected agents by tier as `port` sees the fleet (every replica's agents).
func connected(_ port: Int) async -> Int {
    guard let fleet = await json(port, "/v1/fleet"), let byState = fleet["agentsByState"] as? [String: Int] else {
        return 0
    }
    return byState.filter { $0.key != "offline" }.values.reduce(0, +)
}

func apply(_ port: Int, extra: String, stages: String) async throws -> Int? {
    // The example rules without the business file: its fixed budget cannot be split over thousands of samplers.
    let folder = repository.appendingPathComponent("policies")
    let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter {
        $0.hasSuffix(".policy") && $0 != "30-business.policy"
    }.sorted()
    var sources: [[String: String]] = try names.map {
        ["path": $0, "text": try String(contentsOf: folder.appendingPathComponent($0), encoding: .utf8)]
    }
    sources.append(["path": "99-bench.policy", "text": extra + "keep baseline sample 5%\n"])
    var fleet = try String(contentsOf: folder.appendingPathComponent("fleet.yaml"), encoding: .utf8)
    fleet = fleet.replacingOccurrences(
        of:
            "rollout:\n  stages:\n    - canary: 1\n    - percent: 25\n    - percent: 100\n  bake_time: 5m\n  max_unavailable: 1",
        with: "rollout:\n  stages: \(stages)\n  bake_time: 0s\n  max_unavailable: \(agentCount)\n  drain: false"
    )
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/apply")
    request.method = .POST
    request.headers.add(name: "Content-Type", value: "application/json")
    let body: [String: Any] = ["sources": sources, "fleet": fleet, "message": "ha-bench"]
    request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
    let answer = try await response.body.collect(upTo: 16 << 20)
    guard response.status == .created,
        let result = (try? JSONSerialization.jsonObject(with: Data(answer.readableBytesView))) as? [String: Any]
    else {
        say("apply refused: \(response.status) \(String(buffer: answer).prefix(500))")
        return nil
    }
    return result["version"] as? Int
}

/// Applies and waits until every agent runs the version; prints the time.
func rollOut(_ title: String, via port: Int, extra: String, stages: String) async throws {
    let start = ContinuousClock.now
    guard let version = try await apply(port, extra: extra, stages: stages) else { return }
    let done = await timed(limit: 900) {
        guard let fleet = await json(port, "/v1/fleet") else { return false }
        let applied = (fleet["agentsByState"] as? [String: Int])?["applied"] ?? 0
        return fleet["currentVersion"] as? Int == version && applied >= agentCount
    }
    say(
        done.map { _ in "  \(title): every agent runs version \(version) after \(format(seconds(since: start))) s" }
            ?? "  \(title): not every agent ran version \(version) within 900 s"
    )
}

/// The fleet in processes of at most 10,000 agents each: a process here may hold 20,000 open files
/// (`ulimit -n`), and each agent is one socket.
func startFleet(_ replicas: [Replica]) throws -> [Process] {
    let share = 10_000
    return try stride(from: 0, to: agentCount, by: share).map { first in
        let fleet = Process()
        fleet.executableURL = binDirectory.appendingPathComponent("opamp-fleet")
        fleet.arguments =
            [
                "--endpoint", "ws://127.0.0.1:\(replicas[0].opampPort)/v1/opamp",
                "--agents", String(min(share, agentCount - first)), "--first-index", String(first),
                "--lb-share", "0.2", "--connect-rate", "4000", "--heartbeat", "30", "--apply-delay-ms", "0",
                "--stats-interval", "3600", "--threads", "1",
            ] + replicas.dropFirst().flatMap { ["--also-port", String($0.opampPort)] }
        fleet.standardOutput = FileHandle.nullDevice
        try fleet.run()
        return fleet
    }
}

func stop(_ processes: [Process]) {
    for process in processes where process.isRunning {
        kill(process.processIdentifier, SIGCONT)
        process.terminate()
        process.waitUntilExit()
    }
}

func report(memoryOf replicas: [Replica]) {
    for replica in replicas where replica.process.isRunning {
        let figures = memory(replica.process.processIdentifier)
        say("  \(replica.name): resident \(figures.now) MiB, peak \(figures.peak) MiB")
    }
}

/// One setup from start to stop.
func run(title: String, database: String?, replicas count: Int) async throws {
    say("\(title): \(agentCount) agents, \(count) policyd")
    let replicas = try (0..<count).map { try startPolicyd("replica-\($0)", database: database) }
    var processes = replicas.map(\.process)
    defer {
        stop(processes)
        for replica in replicas { try? FileManager.default.removeItem(at: replica.directory) }
    }
    let ready = await timed(limit: 60) {
        database == nil ? await json(replicas[0].apiPort, "/v1/fleet") != nil : await leader(of: replicas) != nil
    }
    guard ready != nil, let first = database == nil ? replicas[0] : await leader(of: replicas) else {
        return say("  no replica became ready within 60 s")
    }
    processes += try startFleet(replicas)
    let connectedAfter = await timed(limit: 600) { await connected(first.apiPort) >= agentCount }
    let seen = await connected(first.apiPort)
    say(
        connectedAfter.map { "  every agent connected and seen by the leader after \(format($0)) s" }
            ?? "  only \(seen) agents seen within 600 s"
    )
    guard connectedAfter != nil else { return }
    if !failoverOnly {
        try await rollOut(
            "one stage",
            via: first.apiPort,
            extra: "keep one when service == \"bench-1\"\n",
            stages: "[{percent: 100}]"
        )
        try await rollOut(
            "canary, 25 %, 100 %",
            via: first.apiPort,
            extra: "keep two when service == \"bench-2\"\n",
            stages: "[{canary: 1}, {percent: 25}, {percent: 100}]"
        )
    }
    report(memoryOf: replicas)
    guard database != nil else { return }

    // kill -9 of the leader under the whole fleet.
    say("  kill -9 of \(first.name), the leader")
    kill(first.process.processIdentifier, SIGKILL)
    first.process.waitUntilExit()
    let survivors = replicas.filter { $0.name != first.name }
    let failover = await timed(limit: 120) { await leader(of: survivors) != nil }
    say(failover.map { "  kill -9 of the leader: another leads after \(format($0)) s" } ?? "  no new leader in 120 s")
    guard let next = await leader(of: survivors) else { return }
    let regathered = await timed(limit: 600) { await connected(next.apiPort) >= agentCount }
    let seenAgain = await connected(next.apiPort)
    say(
        regathered.map { "  the new leader sees every agent again (moved to the survivors) after \(format($0)) s more" }
            ?? "  the new leader sees \(seenAgain) agents after 600 s"
    )
    if failoverOnly { return }
    try await rollOut(
        "one stage on \(survivors.count) replicas",
        via: next.apiPort,
        extra: "keep three when service == \"bench-3\"\n",
        stages: "[{percent: 100}]"
    )
    report(memoryOf: survivors)

    // The new leader paused: its session times out, its lease expires, another takes over.
    kill(next.process.processIdentifier, SIGSTOP)
    let others = survivors.filter { $0.name != next.name }
    let paused = await timed(limit: 120) { await leader(of: others) != nil }
    say(
        paused.map { "  the leader paused (SIGSTOP): another leads after \(format($0)) s" }
            ?? "  no new leader in 120 s"
    )
    kill(next.process.processIdentifier, SIGCONT)
    let steppedDown = await timed(limit: 30) { await !leads(next) }
    say(
        steppedDown.map { "  the paused leader, resumed, says it does not lead after \(format($0)) s" }
            ?? "  the resumed leader still says it leads after 30 s"
    )
}

if !skipSQLite {
    agentCount = sqliteAgents
    try await run(title: "SQLite, one policyd", database: nil, replicas: 1)
}
agentCount = replicaAgents
if let database {
    try await run(title: "PostgreSQL, \(replicaCount) replicas", database: database, replicas: replicaCount)
} else {
    say("no --database: the replicas are skipped (scripts/ha-bench.sh starts a PostgreSQL server for them)")
}
