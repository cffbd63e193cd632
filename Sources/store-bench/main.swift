import ControlPlane
import Foundation
import Logging

/// What saving and reading the engine state costs at fleet scale, store by store; prints figures, never
/// run as a test.
///
///     swift build -c release --product store-bench
///     .build/release/store-bench [agents] [--database postgres://…] [--steps N] [--batch N]
///
/// Without `--database` the store is SQLite in a temporary directory. The state is that of a fleet in a
/// one-stage rollout (80 % samplers in the ring, 20 % load balancers, every agent a member of the stage);
/// each step then gives `batch` agents the new version, as the engine does, and marks the last batch done.
/// 1. The first save (every agent), and the state's size as one JSON document.
/// 2. Each step's save: median and slowest.
/// 3. PostgreSQL: a follower's read after each save (the leader's NOTIFY), median and slowest; and its first
///    read of everything.
/// 4. A takeover: a new store reads the whole state.
let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String) -> String? {
    arguments.firstIndex(of: name).flatMap { $0 + 1 < arguments.count ? arguments[$0 + 1] : nil }
}
let agentCount = arguments.first.flatMap(Int.init) ?? 30_000
let database = option("--database")
let stepCount = option("--steps").flatMap(Int.init) ?? 40
let batchSize = option("--batch").flatMap(Int.init) ?? 250

func say(_ text: String) {
    print(text)
    fflush(nil)
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let duration = ContinuousClock.now - start
    return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// Which parts of two states differ (empty: none).
func differences(_ a: ControlState, _ b: ControlState) -> [String] {
    var parts: [String] = []
    if a.assignments != b.assignments { parts.append("assignments") }
    if a.ring != b.ring { parts.append("ring") }
    if a.heldOut != b.heldOut || a.leftRing != b.leftRing { parts.append("held-out or left samplers") }
    if a.rollout?.steps != b.rollout?.steps { parts.append("steps") }
    if a.rollout?.touched != b.rollout?.touched || a.rollout?.members != b.rollout?.members {
        parts.append("touched or members")
    }
    if a.rollout?.batch != b.rollout?.batch { parts.append("batch") }
    if a.rollout != b.rollout { parts.append("rollout") }
    if a != b { parts.append("state") }
    return parts
}

func describe(_ times: [Double]) -> String {
    let sorted = times.sorted()
    guard !sorted.isEmpty else { return "none" }
    return String(format: "median %.1f ms, slowest %.1f ms", sorted[sorted.count / 2] * 1000, sorted.last! * 1000)
}

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .error
    return handler
}

let directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-bench-\(UUID().uuidString)")
defer { try? FileManager.default.removeItem(at: directory) }

func openStore() throws -> any ControlPlaneStore {
    if let database { return try PostgresStore(configuration: try PostgresStoreConfiguration(url: database)) }
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return try SQLiteStore(directory: directory)
}

func uid(_ n: Int) -> String { String(format: "%08x-0000-7000-8000-%012x", n, n) }

// The fleet in its rollout's one stage, every agent waiting.
// Whole seconds: a date goes through JSON as seconds since 1970, which keeps whole seconds exact.
let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded())
let samplers = agentCount * 4 / 5
var state = ControlState(now: now)
state.current = 1
state.ring.version = 7
state.ring.members = (0..<samplers).map { "10.\($0 / 65536).\($0 / 256 % 256).\($0 % 256):4317" }.sorted()
for n in 0..<agentCount {
    state.assignments[uid(n)] =
        n < samplers ? Assignment(version: 1, samplerCount: samplers) : Assignment(version: 1, ring: 7)
}
// Rollout has no public initializer: built from its JSON form, as a store reads it.
let plan: [String: Any] = [
    "stages": [["percent": ["_0": 100]]], "maxUnavailable": batchSize, "bakeSeconds": 0.0,
    "stageTimeoutSeconds": 3600.0, "drain": false, "settleSeconds": 0.0, "tiers": ["sampling", "lb"],
    "autoRollback": true,
]
let rolloutJSON: [String: Any] = [
    "id": 2, "from": 1, "to": 2, "phase": "progressing", "plan": plan, "tierIndex": 0, "stageIndex": 0,
    "members": (0..<agentCount).map(uid), "stageOpen": true, "alsoServing": [Int](), "batch": [String](),
    "touched": [String](), "steps": Dictionary(uniqueKeysWithValues: (0..<agentCount).map { (uid($0), "waiting") }),
    "outOfRing": [String: Double](), "stageStartedAt": now.timeIntervalSinceReferenceDate,
    "pauseRequested": false, "rollingBack": false, "aborted": false, "startedAt": now.timeIntervalSinceReferenceDate,
]
state.rollout = try JSONDecoder().decode(Rollout.self, from: JSONSerialization.data(withJSONObject: rolloutJSON))
let encoder = JSONEncoder()
encoder.dateEncodingStrategy = .secondsSince1970
say("agents: \(agentCount) (\(samplers) samplers in the ring); store: \(database == nil ? "SQLite" : "PostgreSQL")")
say(String(format: "the whole state as one JSON document: %.1f MB", Double(try encoder.encode(state).count) / 1e6))

let leader = try openStore()
var start = ContinuousClock.now
try leader.saveControlState(state, events: [])
say(String(format: "first save: %.2f s", seconds(since: start)))

let follower = database == nil ? nil : try openStore() as? any ReplicaCoordination
var followed: Int?
if let follower {
    start = ContinuousClock.now
    followed = try follower.controlState(after: nil)?.generation
    say(String(format: "a follower's first read: %.2f s", seconds(since: start)))
}

var saves: [Double] = []
var reads: [Double] = []
for step in 0..<stepCount {
    let batch = (step * batchSize..<min(agentCount, (step + 1) * batchSize)).map(uid)
    let previous = state.rollout?.batch ?? []
    for agent in previous { state.rollout?.steps[agent] = .done }
    for agent in batch {
        state.assignments[agent]?.version = 2
        state.rollout?.steps[agent] = .applying
        state.rollout?.touched.append(agent)
    }
    state.rollout?.batch = batch
    let events = batch.map {
        EngineEvent(kind: .agentStep, message: "\($0) gets version 2", rollout: 2, agent: $0, time: Date())
    }
    start = ContinuousClock.now
    try leader.saveControlState(state, events: events)
    saves.append(seconds(since: start))
    if let follower {
        start = ContinuousClock.now
        let read = try follower.controlState(after: followed)
        reads.append(seconds(since: start))
        guard let read, read.state == state else {
            say(
                "the follower read another state than the leader saved: \(read.map { differences($0.state, state) } ?? ["nothing read"])"
            )
            exit(1)
        }
        followed = read.generation
    }
}
say("a step's save (\(batchSize) agents change): \(describe(saves))")
if follower != nil { say("a follower's read after each save: \(describe(reads))") }

start = ContinuousClock.now
let loaded = try (database == nil ? leader : try openStore()).loadControlState()
say(String(format: "a takeover's read of the whole state: %.2f s", seconds(since: start)))
guard let loaded, loaded == state else {
    say(
        "the state read back differs from the state saved: \(loaded.map { differences($0, state) } ?? ["nothing read"])"
    )
    exit(1)
}
