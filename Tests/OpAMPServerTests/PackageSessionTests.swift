import Foundation
import OpAMPProtocol
import Testing

@testable import OpAMPServer

/// Package offers in the session: who gets them, when they are sent again, what the agent reports.
@Suite struct PackageSessionTests {
    let clock = TestClock()

    static let packageAgent: AgentCapabilities = [
        .reportsStatus, .acceptsRemoteConfig, .reportsEffectiveConfig, .reportsHealth, .reportsRemoteConfig,
        .acceptsPackages, .reportsPackageStatuses,
    ]

    func package(_ version: String, content: UInt8 = 1) -> OfferedPackage {
        OfferedPackage(
            name: "otelcol-contrib",
            kind: .topLevel,
            version: version,
            downloadURL: "http://policyd.example:4321/v1/package-files/\(version)",
            contentHash: Array(repeating: content, count: 32),
            signature: Array(repeating: 7, count: 64),
            headers: ["Authorization": "Bearer download-token"]
        )
    }

    func statuses(_ offer: PackageOffer, _ state: OpAMP_PackageStatusEnum, has version: String = "")
        -> OpAMP_PackageStatuses
    {
        var statuses = OpAMP_PackageStatuses()
        statuses.serverProvidedAllPackagesHash = Data(offer.allPackagesHash)
        for (name, package) in offer.packages {
            var status = OpAMP_PackageStatus()
            status.name = name
            status.serverOfferedVersion = package.version
            status.serverOfferedHash = Data(package.hash)
            status.status = state
            if state == .installed {
                status.agentHasVersion = package.version
                status.agentHasHash = Data(package.hash)
            } else {
                status.agentHasVersion = version
            }
            if state == .downloading { status.downloadDetails.downloadPercent = 40 }
            if state == .installFailed { status.errorMessage = "disk full" }
            statuses.packages[name] = status
        }
        return statuses
    }

    @Test func hashesAreStableAndIgnoreWhereTheFileIsServed() {
        let a = PackageOffer([self.package("0.150.0"), self.package("0.150.0")])
        var moved = self.package("0.150.0")
        moved.downloadURL = "https://elsewhere:443/x"
        moved.headers = ["Authorization": "Bearer another-token"]
        #expect(PackageOffer([moved]).allPackagesHash == a.allPackagesHash)
        #expect(moved.hash == self.package("0.150.0").hash)
        // Anything that changes the package changes both hashes.
        #expect(self.package("0.151.0").hash != moved.hash)
        #expect(self.package("0.150.0", content: 2).hash != moved.hash)
        #expect(PackageOffer([self.package("0.151.0")]).allPackagesHash != a.allPackagesHash)
        var addon = self.package("1.0.0")
        addon.name = "tail-extension"
        addon.kind = .addon
        let both = PackageOffer([self.package("0.150.0"), addon])
        #expect(PackageOffer([addon, self.package("0.150.0")]).allPackagesHash == both.allPackagesHash)
        #expect(both.allPackagesHash != a.allPackagesHash)
        // The message carries what the spec names, with the hashes computed here.
        let message = both.message
        #expect(message.allPackagesHash == Data(both.allPackagesHash))
        #expect(message.packages["otelcol-contrib"]?.type == .topLevel)
        #expect(message.packages["tail-extension"]?.type == .addon)
        #expect(message.packages["otelcol-contrib"]?.file.contentHash == Data(repeating: 1, count: 32))
        #expect(message.packages["otelcol-contrib"]?.file.headers.headers.first?.key == "Authorization")
        #expect(!both.description.contains("download-token"))
    }

    @Test func offeredOnlyToAgentsThatAcceptPackagesUntilTheyReportTheOffer() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connection = registry.newConnection()
        let offer = PackageOffer([self.package("0.150.0")])
        // An agent without AcceptsPackages never gets an offer.
        _ = registry.handle(fullState(uid(1)), connection: connection, transport: .http)
        registry.setDesiredPackages([uid(1): offer])
        #expect(
            !registry.handle(heartbeat(uid(1), seq: 1), connection: connection, transport: .http).hasPackagesAvailable
        )

        let other = registry.newConnection()
        var first = fullState(uid(2), capabilities: Self.packageAgent)
        first.packageStatuses = OpAMP_PackageStatuses()
        let before = registry.handle(first, connection: other, transport: .http)
        #expect(before.capabilities & ServerCapabilities.offersPackages.rawValue != 0)
        #expect(!before.hasPackagesAvailable)
        registry.setDesiredPackages([uid(2): offer])
        #expect(registry.agent(uid(2))?.desiredPackagesHash == offer.allPackagesHash)
        var poll = heartbeat(uid(2), seq: 1, capabilities: Self.packageAgent)
        let offered = registry.handle(poll, connection: other, transport: .http)
        #expect(offered.packagesAvailable.allPackagesHash == Data(offer.allPackagesHash))
        // Until the agent reports the offer's hash, every response carries it again (the agent may have lost it).
        poll.sequenceNum = 2
        #expect(registry.handle(poll, connection: other, transport: .http).hasPackagesAvailable)
        var report = heartbeat(uid(2), seq: 3, capabilities: Self.packageAgent)
        report.packageStatuses = self.statuses(offer, .downloading, has: "0.149.0")
        #expect(!registry.handle(report, connection: other, transport: .http).hasPackagesAvailable)
        let status = registry.agent(uid(2))?.packageStatuses?.packages["otelcol-contrib"]
        #expect(status?.state == .downloading)
        #expect(status?.downloadPercent == 40)
        #expect(status?.agentHasVersion == "0.149.0")
        // A failed install of this offer is not answered with the same offer again (no install loop).
        report.sequenceNum = 4
        report.packageStatuses = self.statuses(offer, .installFailed)
        #expect(!registry.handle(report, connection: other, transport: .http).hasPackagesAvailable)
        #expect(registry.agent(uid(2))?.packageStatuses?.packages["otelcol-contrib"]?.errorMessage == "disk full")
        // A new offer (the downgrade) goes out.
        let downgrade = PackageOffer([self.package("0.149.0")])
        registry.setDesiredPackages([uid(2): downgrade])
        report.sequenceNum = 5
        let answer = registry.handle(report, connection: other, transport: .http)
        #expect(answer.packagesAvailable.allPackagesHash == Data(downgrade.allPackagesHash))
        #expect(answer.packagesAvailable.packages["otelcol-contrib"]?.version == "0.149.0")
    }

    @Test func agentsWithoutStatusReportsGetTheOfferOncePerConnection() {
        let registry = AgentRegistry(clock: self.clock.function)
        let capabilities = Self.packageAgent.subtracting(.reportsPackageStatuses)
        let connection = registry.newConnection()
        _ = registry.handle(fullState(uid(3), capabilities: capabilities), connection: connection, transport: .http)
        let offer = PackageOffer([self.package("0.150.0")])
        registry.setDesiredPackages([uid(3): offer])
        #expect(
            registry.handle(
                heartbeat(uid(3), seq: 1, capabilities: capabilities),
                connection: connection,
                transport: .http
            ).hasPackagesAvailable
        )
        #expect(
            !registry.handle(
                heartbeat(uid(3), seq: 2, capabilities: capabilities),
                connection: connection,
                transport: .http
            ).hasPackagesAvailable
        )
    }

    @Test func anAgentThatReportsPackagesButSentNoneIsAskedForItsFullState() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connection = registry.newConnection()
        // ReportsPackageStatuses, but the first message has none: the server asks once.
        let first = registry.handle(
            fullState(uid(4), capabilities: Self.packageAgent),
            connection: connection,
            transport: .webSocket
        )
        #expect(first.asksForFullState)
        var full = fullState(uid(4), seq: 1, capabilities: Self.packageAgent)
        full.packageStatuses = OpAMP_PackageStatuses()
        #expect(!registry.handle(full, connection: connection, transport: .webSocket).asksForFullState)
        #expect(registry.agent(uid(4))?.packageStatuses?.packages.isEmpty == true)
    }

    @Test func aCommandStillTravelsAlone() {
        let registry = AgentRegistry(clock: self.clock.function)
        let capabilities = Self.packageAgent.union(.acceptsRestartCommand)
        let connection = registry.newConnection()
        var first = fullState(uid(5), capabilities: capabilities)
        first.packageStatuses = OpAMP_PackageStatuses()
        _ = registry.handle(first, connection: connection, transport: .http)
        registry.setDesiredPackages([uid(5): PackageOffer([self.package("0.150.0")])])
        #expect(registry.send(.restart, to: uid(5)))
        let withOffer = registry.handle(
            heartbeat(uid(5), seq: 1, capabilities: capabilities),
            connection: connection,
            transport: .http
        )
        #expect(withOffer.hasPackagesAvailable)
        #expect(!withOffer.hasCommand)
    }
}
