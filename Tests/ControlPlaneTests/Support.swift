import ConfigRenderer
import ControlPlane
import FleetSimulator
import Foundation
import Logging
import NIOConcurrencyHelpers
import OpAMPServer
import ServiceLifecycle
import Testing

let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The example policy set and fleet as an apply request.
func exampleApply(message: String = "examples", transform: (String) -> String = { $0 }) throws -> ApplyRequest {
    let directory = repositoryRoot.appendingPathComponent("policies")
    let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".policy") }
        .sorted()
    let sources = try names.map { name in
        SourceText(
            path: name,
            text: transform(try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8))
        )
    }
    let fleet = try String(contentsOf: directory.appendingPathComponent("fleet.yaml"), encoding: .utf8)
    return ApplyRequest(sources: sources, fleet: fleet, message: message)
}

/// A product of this package, as built next to the tests (`.build/debug/NAME`).
func builtExecutable(_ name: String) -> URL {
    var directory = Bundle.main.bundleURL
    if directory.pathExtension == "xctest" { directory.deleteLastPathComponent() }
    let candidate = directory.appendingPathComponent(name)
    if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
    return repositoryRoot.appendingPathComponent(".build/debug/\(name)")
}

/// The examples plus a rule the simulated collectors refuse (they fail any config containing "tailplane-fail").
func brokenApply() throws -> ApplyRequest {
    var broken = try exampleApply(message: "broken")
    broken.sources.append(
        SourceText(path: "99-broken.policy", text: "keep broken when service == \"tailplane-fail\"\n")
    )
    return broken
}

/// Runs a command through `/usr/bin/env` and says whether it exited 0 (probes for optional test tools).
func commandSucceeds(_ arguments: [String]) -> Bool {
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = arguments
    probe.standardError = FileHandle.nullDevice
    guard (try? probe.run()) != nil else { return false }
    probe.waitUntilExit()
    return probe.terminationStatus == 0
}

/// Where this test process keeps its temporary directories: one directory, removed when the process exits,
/// so a test that fails (or forgets) leaves nothing behind. With `TAILPLANE_TEST_KEEP_LOGS=1` it stays, with
/// the replicas' logs in it, and its path is printed.
let testScratch: URL = {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent(
        "tailplane-tests-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))"
    )
    try? FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    if ProcessInfo.processInfo.environment["TAILPLANE_TEST_KEEP_LOGS"] == nil {
        atexit { try? FileManager.default.removeItem(at: testScratch) }
    } else {
        print("test directories and logs are kept in \(root.path)")
    }
    return root
}()

/// A fresh temporary directory, inside ``testScratch``.
func temporaryDirectory() -> URL {
    let url = testScratch.appendingPathComponent("tailplane-test-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Options that keep rollouts short in tests: no bake, a short settle after each drain.
func fastOptions() -> ControlPlaneOptions {
    var options = ControlPlaneOptions()
    options.tickInterval = .milliseconds(50)
    options.settleSecondsOverride = 0.2
    options.bakeSecondsOverride = 0.2
    options.unverifiedAfterSeconds = 0.5
    options.stageTimeoutSeconds = 60
    options.recountCoalesceSeconds = 0.5
    options.recountMinimumIntervalSeconds = 0
    return options
}

/// A real OpAMP server, a control plane on a real SQLite file, and a simulated fleet over WebSockets.
final class TestStack: Sendable {
    let opamp: OpAMPServer
    let opampPort: Int
    let server: ControlPlaneServer
    let directory: URL
    let task: Task<Void, any Error>
    let group: ServiceGroup
    private let fleets = NIOLockedValueBox<[(FleetRunner, Task<Void, any Error>)]>([])
    let apiPort: Int

    var controller: Controller { self.server.controller }

    init(
        directory: URL = temporaryDirectory(),
        options: ControlPlaneOptions = fastOptions(),
        tokens: [APIToken] = [],
        packages: Bool = false,
        maxPackageBytes: Int64 = 64 << 20,
        database: String? = nil
    ) async throws {
        var configuration = OpAMPServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.threads = 1
        self.opamp = OpAMPServer(configuration: configuration)
        self.opampPort = try await self.opamp.start()
        self.directory = directory
        let store: any ControlPlaneStore =
            try database.map { try PostgresStore(configuration: try PostgresStoreConfiguration(url: $0)) }
            ?? SQLiteStore(directory: directory)
        let repository =
            packages
            ? try PackageRepository(
                directory: directory.appendingPathComponent("packages"),
                store: store,
                maxPackageBytes: maxPackageBytes
            ) : nil
        self.server = try ControlPlaneServer(
            store: store,
            registry: self.opamp.registry,
            options: options,
            tokens: tokens,
            port: 0,
            packages: repository
        )
        let group = ServiceGroup(services: [self.server], logger: Logger(label: "test"))
        self.group = group
        self.task = Task { try await group.run() }
        self.apiPort = await server.apiPort()
    }

    func fleet(
        loadBalancers: Int,
        samplers: Int,
        applyDelay: Duration = .milliseconds(30),
        reportsRemoteConfig: Bool = true,
        supervisorRollback: Bool = false,
        firstIndex: Int = 0,
        adjust: (inout FleetOptions) -> Void = { _ in }
    ) -> FleetRunner {
        var options = FleetOptions()
        options.firstIndex = firstIndex
        options.reportsRemoteConfig = reportsRemoteConfig
        options.supervisorRollback = supervisorRollback
        options.port = self.opampPort
        options.agents = loadBalancers + samplers
        options.loadBalancerShare = Double(loadBalancers) / Double(loadBalancers + samplers)
        options.applyDelay = applyDelay
        options.heartbeatSeconds = 30
        options.threads = 1
        adjust(&options)
        return FleetRunner(options: options)
    }

    /// Starts a simulated fleet (stopped with the stack) and waits until all of it is connected.
    @discardableResult
    func startFleet(
        loadBalancers: Int,
        samplers: Int,
        reportsRemoteConfig: Bool = true,
        supervisorRollback: Bool = false,
        firstIndex: Int = 0,
        adjust: (inout FleetOptions) -> Void = { _ in }
    ) async -> FleetRunner {
        let expected = self.opamp.registry.connectedCount + loadBalancers + samplers
        let fleet = self.fleet(
            loadBalancers: loadBalancers,
            samplers: samplers,
            reportsRemoteConfig: reportsRemoteConfig,
            supervisorRollback: supervisorRollback,
            firstIndex: firstIndex,
            adjust: adjust
        )
        let task = Task { try await fleet.run() }
        self.fleets.withLockedValue { $0.append((fleet, task)) }
        #expect(await eventually { self.opamp.registry.connectedCount >= expected })
        return fleet
    }

    /// Applies and waits until the rollout it started has ended; returns it.
    func applyAndWait(_ request: ApplyRequest, timeout: TimeInterval = 60) async throws -> Rollout {
        let result = try await self.controller.apply(request, actor: "test", remote: "local")
        let id = try #require(result.rollout)
        _ = await eventually(timeout: timeout) {
            (try? await self.controller.rollout(id))?.rollout.phase.isTerminal == true
        }
        return try #require(try await self.controller.rollout(id)).rollout
    }

    func stop() async {
        for (fleet, task) in self.fleets.withLockedValue({ $0 }) {
            task.cancel()
            await fleet.shutdown()
        }
        await self.group.triggerGracefulShutdown()
        _ = try? await self.task.value
        await self.opamp.stop()
        try? FileManager.default.removeItem(at: self.directory)
    }
}

/// Polls until a condition holds (or the time is up).
func eventually(
    timeout: TimeInterval = 30,
    _ condition: @Sendable () async throws -> Bool
) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}
