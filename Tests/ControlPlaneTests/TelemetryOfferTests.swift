import ControlPlane
import FleetSimulator
import Foundation
import OpAMPServer
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(.serialized) struct TelemetryOfferTests {
    static let destinations = """
        telemetry:
          logs_level: info
          metrics_level: normal
          metrics_port: 8888
          destinations:
            metrics:
              endpoint: https://otel.example:4318/v1/metrics
              headers: {Authorization: {env: TP_TEST_OWN_TOKEN}, X-Team: sre}
            logs: {endpoint: "https://otel.example:4318/v1/logs"}
        """

    static func withDestinations(_ fleet: String) -> String {
        fleet.replacingOccurrences(
            of: "telemetry: {logs_level: info, metrics_level: normal, metrics_port: 8888}",
            with: Self.destinations
        )
    }

    @Test func everyCollectorIsToldWhereToSendItsOwnTelemetryWithTheRollout() async throws {
        setenv("TP_TEST_OWN_TOKEN", "Bearer own-telemetry-secret", 1)
        let stack = try await TestStack()
        let fleet = await stack.startFleet(loadBalancers: 1, samplers: 2)
        var request = try exampleApply()
        request.fleet = Self.withDestinations(request.fleet)
        #expect(request.fleet.contains("destinations"))
        let rollout = try await stack.applyAndWait(request)
        #expect(rollout.phase == .succeeded)
        // The simulated collectors report own metrics (the supervisor's default) but not own logs: each gets
        // only what it reports, with the header read from policyd's environment.
        let delivered = await eventually {
            fleet.agents().allSatisfy {
                $0.ownTelemetry["metrics"]?.endpoint == "https://otel.example:4318/v1/metrics"
                    && $0.ownTelemetry["metrics"]?.headers["Authorization"] == "Bearer own-telemetry-secret"
                    && $0.ownTelemetry["metrics"]?.headers["X-Team"] == "sre" && $0.ownTelemetry["logs"] == nil
            }
        }
        #expect(delivered, "\(fleet.agents().map(\.ownTelemetry.keys))")
        // Each reported the offer applied, and the API shows it.
        #expect(
            await eventually {
                stack.opamp.registry.snapshot().allSatisfy {
                    $0.connectionSettings.status == .applied
                        && $0.connectionSettings.reportedHash == $0.connectionSettings.offeredHash
                }
            }
        )
        let records = await stack.controller.agents()
        #expect(
            records.allSatisfy { $0.connectionSettingsState == "applied" },
            "\(records.map(\.connectionSettingsState))"
        )
        // A version without destinations withdraws them (the supervisor keeps what it was given otherwise).
        let removed = try await stack.applyAndWait(try exampleApply(message: "no destinations"))
        #expect(removed.phase == .succeeded)
        #expect(await eventually { fleet.agents().allSatisfy { $0.ownTelemetry.isEmpty } })
        await stack.stop()
    }

    @Test func aDestinationPolicydCannotFillIsRefusedAtApply() async throws {
        unsetenv("TP_TEST_MISSING_TOKEN")
        let stack = try await TestStack()
        var request = try exampleApply()
        request.fleet = Self.withDestinations(request.fleet).replacingOccurrences(
            of: "TP_TEST_OWN_TOKEN",
            with: "TP_TEST_MISSING_TOKEN"
        )
        await #expect(throws: ControlPlaneError.self) {
            _ = try await stack.controller.apply(request, actor: "test", remote: "local")
        }
        do {
            _ = try await stack.controller.apply(request, actor: "test", remote: "local")
        } catch {
            #expect(error.message.contains("TP_TEST_MISSING_TOKEN"))
        }
        // Nothing was stored.
        #expect(try stack.server.store.versions(limit: 10).isEmpty)
        // A secret written inline in a header that looks like a credential is refused by the parser.
        var inline = try exampleApply()
        inline.fleet = Self.withDestinations(inline.fleet).replacingOccurrences(
            of: "{env: TP_TEST_OWN_TOKEN}",
            with: "\"Bearer abc\""
        )
        await #expect(throws: ControlPlaneError.self) {
            _ = try await stack.controller.apply(inline, actor: "test", remote: "local")
        }
        await stack.stop()
    }
}
