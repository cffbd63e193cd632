import ArgumentParser
import CMalloc
import FleetSimulator
import Foundation

/// `opamp-fleet`: N simulated collectors over real OpAMP connections, for demos and benchmarks.
@main
struct OpAMPFleet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "opamp-fleet",
        abstract: "Run simulated collectors (load balancers and samplers) against an OpAMP server."
    )

    @Option(help: "Server endpoint, e.g. ws://127.0.0.1:4320/v1/opamp or http://127.0.0.1:4320/v1/opamp.")
    var endpoint = "ws://127.0.0.1:4320/v1/opamp"

    @Option(help: "Number of agents.")
    var agents = 100

    @Option(help: "Share of agents in the load-balancing tier (0…1).")
    var lbShare = 0.2

    @Option(help: "New connections per second while starting.")
    var connectRate = 2000

    @Option(help: "Bearer token for the server.")
    var token: String?

    @Option(help: "Milliseconds a config takes to apply.")
    var applyDelayMs = 100

    @Option(help: "A config containing this text fails to apply.")
    var failMarker = "tailplane-fail"

    @Option(help: "Seconds between heartbeats (WebSocket) or polls (HTTP).")
    var heartbeat: UInt64 = 30

    @Option(help: "Share of connections dropped every churn interval (0 = none).")
    var churn = 0.0

    @Option(help: "Seconds between churn rounds.")
    var churnInterval = 10

    @Option(help: "Stop after this many seconds (0 = run until interrupted).")
    var duration = 0

    @Option(help: "Seconds between statistics lines.")
    var statsInterval = 5

    @Option(help: "Event loop threads.")
    var threads = 2

    @Option(help: "Number of the first agent (host names and identities), to run one fleet in several processes.")
    var firstIndex = 0

    @Option(
        name: .customLong("also-port"),
        help:
            "Another server on the endpoint's host (a replica); repeat it. Agents spread over the endpoint's port and these, and move to the next after a failed connection."
    )
    var alsoPorts: [Int] = []

    @Flag(help: "Agents accept packages: download, verify and install what the server offers, and report it.")
    var acceptsPackages = false

    @Option(help: "PEM public key package signatures must verify with (`policyctl packages signing-key`).")
    var packageKey: String?

    @Option(help: "Collector version agents start with (service.version).")
    var collectorVersion = "0.150.0"

    func run() async throws {
        // As policyd does: large buffers are returned to the system when freed (package downloads).
        _ = tailplane_return_large_buffers()
        guard let url = URL(string: self.endpoint), let scheme = url.scheme, let host = url.host else {
            throw ValidationError("--endpoint must be a ws:// or http:// URL")
        }
        var options = FleetOptions()
        options.transport = scheme.hasPrefix("ws") ? .webSocket : .http
        options.host = host
        options.port = url.port ?? 4320
        options.path = url.path.isEmpty ? "/v1/opamp" : url.path
        options.agents = self.agents
        options.loadBalancerShare = self.lbShare
        options.connectRate = self.connectRate
        options.token = self.token
        options.applyDelay = .milliseconds(self.applyDelayMs)
        options.failMarker = self.failMarker
        options.heartbeatSeconds = self.heartbeat
        options.churnShare = self.churn
        options.churnInterval = .seconds(self.churnInterval)
        options.threads = self.threads
        options.firstIndex = self.firstIndex
        if !self.alsoPorts.isEmpty { options.ports = [options.port] + self.alsoPorts }
        options.acceptsPackages = self.acceptsPackages
        options.collectorVersion = self.collectorVersion
        if let file = self.packageKey {
            guard let pem = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ValidationError("cannot read --package-key \(file)")
            }
            options.packageSigningKeyPEM = pem
        }
        let runner = FleetRunner(options: options)
        let statistics = runner.statistics
        let task = Task { try await runner.run() }
        let started = ContinuousClock.now
        while self.duration == 0 || ContinuousClock.now - started < .seconds(self.duration) {
            try await Task.sleep(for: .seconds(self.statsInterval))
            let line =
                "agents=\(self.agents) connected=\(statistics.connected) applied=\(statistics.applied) failed=\(statistics.failed) "
                + "sent=\(statistics.sent) received=\(statistics.received) reconnects=\(statistics.reconnects)"
                + (self.acceptsPackages
                    ? " downloads=\(statistics.downloads) downloaded_mib=\(statistics.downloadedBytes >> 20)" : "")
                + "\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }
        task.cancel()
        await runner.shutdown()
    }
}
