import AsyncHTTPClient
import ControlPlane
import Credentials
import Crypto
import FleetSimulator
import Foundation
import NIOCore
import NIOHTTP1
import OpAMPServer
import Testing

/// Packages end to end: the repository over the API, downloads with ranges, and upgrades rolled out to a
/// simulated fleet that downloads, verifies and installs them, with the automatic downgrade.
@Suite(.serialized) struct PackageTests {
    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: [UInt8]
        var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(self.body))) as? [String: Any] }
        var errorMessage: String { ((self.json?["error"] as? [String: Any])?["message"] as? String) ?? "" }
    }

    func call(
        _ port: Int,
        _ method: HTTPMethod,
        _ path: String,
        headers: [(String, String)] = [],
        body: [UInt8]? = nil
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 256 * 1024 * 1024)
        return Answer(
            status: Int(response.status.code),
            headers: response.headers,
            body: Array(bytes.readableBytesView)
        )
    }

    /// A stand-in collector build: deterministic bytes of a given size.
    static func build(_ version: String, size: Int = 600_000) -> [UInt8] {
        var bytes = Array("#!/bin/sh\n# otelcol-contrib \(version)\n".utf8)
        var state = UInt32(truncatingIfNeeded: version.hashValue & 0xFFFF) | 1
        while bytes.count < size {
            state = state &* 1_664_525 &+ 1_013_904_223
            bytes.append(UInt8(truncatingIfNeeded: state >> 24))
        }
        return bytes
    }

    func push(
        _ port: Int,
        _ version: String,
        name: String = "otelcol-contrib",
        type: String = "top-level",
        bytes: [UInt8]? = nil
    )
        async throws -> Answer
    {
        try await self.call(
            port,
            .PUT,
            "/v1/packages/\(name)/\(version)?type=\(type)",
            body: bytes ?? Self.build(version)
        )
    }

    @Test func theRepositoryStoresSignsAndServesPackages() async throws {
        let stack = try await TestStack(packages: true, maxPackageBytes: 2_000_000)
        defer { Task { await stack.stop() } }
        let port = stack.apiPort
        let bytes = Self.build("0.150.0", size: 1_500_000)
        let created = try await self.push(port, "0.150.0", bytes: bytes)
        #expect(created.status == 201)
        let sha = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        #expect(created.json?["sha256"] as? String == sha)
        #expect(created.json?["size"] as? Int == bytes.count)
        // The same content again changes nothing; other content under a published version is refused.
        #expect(try await self.push(port, "0.150.0", bytes: bytes).status == 200)
        let other = try await self.push(port, "0.150.0", bytes: Self.build("other"))
        #expect(other.status == 409)
        #expect(other.errorMessage.contains("never changes"))
        // Too large, a bad name, a bad type, empty: refused, nothing stored, nothing left on disk.
        #expect(try await self.push(port, "0.151.0", bytes: Self.build("big", size: 2_100_000)).status == 413)
        #expect(try await self.push(port, "0.151.0", name: ".hidden").status == 400)
        #expect(try await self.push(port, "0.151.0", type: "driver").status == 400)
        #expect(try await self.push(port, "0.151.0", bytes: []).status == 400)
        let list = try await self.call(port, .GET, "/v1/packages")
        let records = try #require((try JSONSerialization.jsonObject(with: Data(list.body))) as? [[String: Any]])
        #expect(records.map { $0["version"] as? String } == ["0.150.0"])
        let incoming = stack.directory.appendingPathComponent("packages/incoming")
        #expect(try FileManager.default.contentsOfDirectory(atPath: incoming.path).isEmpty)

        // The signature verifies with the published key, over the package statement.
        let keyAnswer = try await self.call(port, .GET, "/v1/packages/signing-key")
        let key = try PackageSignature.publicKey(pem: String(decoding: keyAnswer.body, as: UTF8.self))
        let signature = try #require(Data(base64Encoded: created.json?["signature"] as? String ?? ""))
        let digest = Array(SHA256.hash(data: bytes))
        #expect(
            PackageSignature.verify(
                Array(signature),
                name: "otelcol-contrib",
                version: "0.150.0",
                kind: "top-level",
                sha256: digest,
                publicKey: key
            )
        )
        #expect(
            !PackageSignature.verify(
                Array(signature),
                name: "otelcol-contrib",
                version: "0.151.0",
                kind: "top-level",
                sha256: digest,
                publicKey: key
            )
        )

        // Downloads need the offer's token; the whole file, then a resumed range.
        let repository = try #require(stack.controller.packages)
        let token = repository.downloadToken(sha256: sha)
        let path = "/v1/package-files/\(sha)"
        #expect(try await self.call(port, .GET, path).status == 401)
        let wrong = repository.downloadToken(sha256: String(repeating: "0", count: 64))
        #expect(try await self.call(port, .GET, path, headers: [("Authorization", "Bearer \(wrong)")]).status == 401)
        let whole = try await self.call(port, .GET, path, headers: [("Authorization", "Bearer \(token)")])
        #expect(whole.status == 200)
        #expect(whole.body == bytes)
        #expect(whole.headers.first(name: "Content-Length") == String(bytes.count))
        #expect(whole.headers.first(name: "Accept-Ranges") == "bytes")
        let part = try await self.call(
            port,
            .GET,
            path,
            headers: [("Authorization", "Bearer \(token)"), ("Range", "bytes=1000000-")]
        )
        #expect(part.status == 206)
        #expect(part.body == Array(bytes[1_000_000...]))
        #expect(part.headers.first(name: "Content-Range") == "bytes 1000000-\(bytes.count - 1)/\(bytes.count)")
        // Agents that do not send the offer's headers use the token in the offered URL.
        let byQuery = try await self.call(port, .GET, path + "?token=\(token)", headers: [("Range", "bytes=0-99")])
        #expect(byQuery.status == 206)
        #expect(byQuery.body == Array(bytes.prefix(100)))
        #expect(try await self.call(port, .GET, path + "?token=\(wrong)").status == 401)
        // A range that ends anywhere up to Int.max is served to the end of the file (it once overflowed and
        // took policyd down).
        let huge = try await self.call(
            port,
            .GET,
            path,
            headers: [("Authorization", "Bearer \(token)"), ("Range", "bytes=1000-9223372036854775807")]
        )
        #expect(huge.status == 206)
        #expect(huge.body == Array(bytes[1000...]))
        // HEAD ignores Range and says how big the file is.
        let head = try await self.call(
            port,
            .HEAD,
            path,
            headers: [("Authorization", "Bearer \(token)"), ("Range", "bytes=0-9")]
        )
        #expect(head.status == 200)
        #expect(head.headers.first(name: "Content-Length") == String(bytes.count))
        // A download that already has everything resumes past the end: 416, with the size.
        let past = try await self.call(
            port,
            .GET,
            path,
            headers: [("Authorization", "Bearer \(token)"), ("Range", "bytes=\(bytes.count)-")]
        )
        #expect(past.status == 416)
        #expect(past.headers.first(name: "Content-Range") == "bytes */\(bytes.count)")
        let tail = try await self.call(
            port,
            .GET,
            path,
            headers: [("Authorization", "Bearer \(token)"), ("Range", "bytes=-100")]
        )
        #expect(tail.status == 206)
        #expect(tail.body == Array(bytes.suffix(100)))
        let missing = String(repeating: "a", count: 64)
        #expect(
            try await self.call(
                port,
                .GET,
                "/v1/package-files/\(missing)",
                headers: [("Authorization", "Bearer \(repository.downloadToken(sha256: missing))")]
            ).status == 404
        )

        // Delete, then it is gone with its file.
        #expect(try await self.call(port, .DELETE, "/v1/packages/otelcol-contrib/0.150.0").status == 204)
        #expect(try await self.call(port, .GET, "/v1/packages/otelcol-contrib/0.150.0").status == 404)
        #expect(!FileManager.default.fileExists(atPath: repository.file(sha256: sha).path))
    }

    /// Examples with `packages:` in fleet.yaml.
    static func withPackages(_ version: String) throws -> ApplyRequest {
        var request = try exampleApply(message: "collector \(version)")
        request.fleet +=
            "\npackages:\n  load_balancing:\n    otelcol-contrib: \(version)\n  sampling:\n    otelcol-contrib: \(version)\n"
        return request
    }

    @Test func upgradesRollOutInStagesAndABadVersionIsDowngradedEverywhere() async throws {
        var options = fastOptions()
        options.packageVersionGraceSeconds = 2
        let stack = try await TestStack(options: options, packages: true)
        defer { Task { await stack.stop() } }
        let port = stack.apiPort
        for version in ["0.150.0", "0.152.0", "0.153.0"] {
            #expect(try await self.push(port, version).status == 201)
        }
        let key = String(decoding: try await self.call(port, .GET, "/v1/packages/signing-key").body, as: UTF8.self)
        let fleet = await stack.startFleet(loadBalancers: 1, samplers: 4) { options in
            options.acceptsPackages = true
            options.packageSigningKeyPEM = key
            options.unhealthyPackageVersions = ["0.153.0"]
            options.interruptDownloadsAfterBytes = 200_000
        }
        // Version 1 pins 0.150.0 (what the agents say they run): each downloads and installs it.
        #expect(try await stack.applyAndWait(try exampleApply()).phase == .succeeded)
        let pin = try await Self.rollOut(stack, "0.150.0")
        let first = try await self.waitForEnd(stack, pin.rollout)
        #expect(first.phase == .succeeded, "\(first.failure ?? "")")
        for agent in fleet.agents() {
            #expect(agent.installedPackages["otelcol-contrib"]?.version == "0.150.0")
        }
        // The interrupted downloads resumed with range requests.
        #expect(fleet.statistics.resumes >= 5)

        // An upgrade through `packages rollout`: a new version with the same policies, staged and drain-aware.
        let upgrade = try await Self.rollOut(stack, "0.152.0")
        #expect(upgrade.result == "created")
        #expect(Set(upgrade.tiers) == [.sampling, .loadBalancing])
        let upgraded = try await self.waitForEnd(stack, upgrade.rollout)
        #expect(upgraded.phase == .succeeded, "\(upgraded.failure ?? "")")
        #expect(upgraded.outOfRing.count == 4, "every sampler was drained before it restarted on the new binary")
        for agent in fleet.agents() {
            #expect(agent.installedPackages["otelcol-contrib"]?.version == "0.152.0")
            #expect(agent.profile.version == "0.152.0")
        }
        let records = await stack.controller.agents()
        #expect(records.allSatisfy { $0.collectorVersion == "0.152.0" && $0.packageState == "installed" })
        let stored = try #require(try stack.server.store.version(upgrade.version))
        #expect(stored.packages?.sampling.first?.version == "0.152.0")

        // The console's packages page: every package, where it runs, the key agents pin, the collectors the
        // agents report; a rollout button for the packages not running.
        let page = try await self.call(port, .GET, "/packages")
        #expect(page.status == 200)
        let html = String(decoding: page.body, as: UTF8.self)
        let fingerprint = try #require(stack.controller.packages?.publicKeyFingerprint)
        #expect(html.contains(fingerprint))
        #expect(html.contains("<strong>otelcol-contrib</strong> 0.152.0") && html.contains("running: sampling, lb"))
        #expect(html.contains("data-post=\"/v1/packages/otelcol-contrib/0.153.0/rollout\""))
        #expect(!html.contains("data-post=\"/v1/packages/otelcol-contrib/0.152.0/rollout\""), "running already")
        #expect(html.contains("<td>sampling</td><td>0.152.0 ×4</td>"), "\(html)")
        #expect(html.contains("<td>load-balancing</td><td>0.152.0 ×1</td>"))
        // While agents move to 0.152.0, configs are rendered for the older collector, so either binary starts.
        #expect(stored.packages?.renderedFor == ["lb": "0.150.0", "sampling": "0.150.0"])
        #expect(stored.sources == (try stack.server.store.version(1))?.sources)
        #expect(stored.fleet == (try stack.server.store.version(1))?.fleet)

        // The version in use cannot be deleted.
        let refused = try await self.call(port, .DELETE, "/v1/packages/otelcol-contrib/0.152.0")
        #expect(refused.status == 409)

        // 0.153.0 makes the collector unhealthy: the rollout fails and offers 0.152.0 again to every agent it
        // reached, tracked until they all run it.
        // It crosses v0.153, where span limits became token buckets: `partner_api` (limit 500 spans/s, no burst)
        // relies on the old behaviour, so the move is refused, naming the change and the rule, and nothing is
        // stored, until the change is accepted.
        let versionsBefore = try stack.server.store.versions(limit: 100).count
        let crossing = try await self.call(
            port,
            .POST,
            "/v1/packages/otelcol-contrib/0.153.0/rollout",
            body: Array(#"{"tiers": ["sampling"]}"#.utf8)
        )
        #expect(crossing.status == 422)
        let problems = ((crossing.json?["error"] as? [String: Any])?["fleetDiagnostics"] as? [[String: Any]]) ?? []
        #expect(
            problems.contains {
                ($0["message"] as? String)?.contains("partner_api") == true
                    && ($0["suggestion"] as? String)?.contains("--accept-change rate-limit-token-bucket") == true
            },
            "\(problems)"
        )
        #expect(try stack.server.store.versions(limit: 100).count == versionsBefore)
        let bad = try await Self.rollOut(
            stack,
            "0.153.0",
            tiers: [.sampling],
            message: "try 0.153",
            accept: ["rate-limit-token-bucket"]
        )
        // 0.153.0 renames the load-balancing exporter; configs for the move keep 0.152's name.
        let badVersion = try #require(try stack.server.store.version(bad.version))
        #expect(badVersion.packages?.renderedFor == ["sampling": "0.152.0"])
        let failed = try await self.waitForEnd(stack, bad.rollout)
        #expect(failed.phase == .rolledBack)
        #expect(failed.failure?.contains("unhealthy") == true)
        #expect(
            await eventually {
                fleet.agents().allSatisfy { $0.installedPackages["otelcol-contrib"]?.version == "0.152.0" }
            }
        )
        #expect(fleet.agents().allSatisfy { $0.profile.version == "0.152.0" })
        #expect(try stack.server.store.version(bad.version)?.outcome == .failed)
        // And 0.153.0, offered to nobody now, can be deleted.
        #expect(
            await eventually {
                (try? await self.call(port, .DELETE, "/v1/packages/otelcol-contrib/0.153.0").status) == 204
            }
        )
    }

    /// `policyctl packages rollout otelcol-contrib VERSION`.
    static func rollOut(
        _ stack: TestStack,
        _ version: String,
        tiers: [AgentTier] = [],
        message: String? = nil,
        accept: [String] = []
    ) async throws(ControlPlaneError) -> ApplyResult {
        try await stack.controller.rolloutPackage(
            name: "otelcol-contrib",
            version: version,
            tiers: tiers,
            message: message,
            acceptChanges: accept,
            actor: "test",
            remote: "local"
        )
    }

    func waitForEnd(_ stack: TestStack, _ id: Int?) async throws -> Rollout {
        let id = try #require(id)
        _ = await eventually(timeout: 90) {
            (try? await stack.controller.rollout(id))?.rollout.phase.isTerminal == true
        }
        return try #require(try await stack.controller.rollout(id)).rollout
    }

    @Test func agentsRefuseACorruptedFileAndAForeignSignature() async throws {
        let stack = try await TestStack(packages: true)
        defer { Task { await stack.stop() } }
        let port = stack.apiPort
        let pushed = try await self.push(port, "0.150.0")
        let sha = try #require(pushed.json?["sha256"] as? String)
        // Agents pin a key that is not policyd's.
        let foreign = PackageSignature.publicKeyPEM(Curve25519.Signing.PrivateKey().publicKey)
        let fleet = await stack.startFleet(loadBalancers: 0, samplers: 2) { options in
            options.acceptsPackages = true
            options.packageSigningKeyPEM = foreign
        }
        var request = try Self.withPackages("0.150.0")
        request.fleet = request.fleet.replacingOccurrences(
            of: "  max_unavailable: 1",
            with: "  max_unavailable: 1\n  auto_rollback: false"
        )
        let refused = try await stack.applyAndWait(request)
        #expect(refused.phase == .failed)
        #expect(refused.failure?.contains("signature does not verify") == true, "\(refused.failure ?? "")")
        let records = await stack.controller.agents()
        #expect(records.contains { $0.packageState == "failed" && $0.packageError?.contains("signature") == true })
        _ = fleet

        // A file changed on policyd's disk: the agent's SHA-256 check catches it.
        let second = try await TestStack(packages: true)
        defer { Task { await second.stop() } }
        let pushedAgain = try await self.push(second.apiPort, "0.150.0")
        let file = try #require(second.controller.packages).file(
            sha256: try #require(pushedAgain.json?["sha256"] as? String)
        )
        var bytes = try [UInt8](Data(contentsOf: file))
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: file)
        await second.startFleet(loadBalancers: 0, samplers: 1) { options in options.acceptsPackages = true }
        let corrupted = try await second.applyAndWait(request)
        #expect(corrupted.phase == .failed)
        #expect(corrupted.failure?.contains("content hash mismatch") == true, "\(corrupted.failure ?? "")")
        _ = sha
    }

    @Test func anUpgradeThePoliciesCannotRunOnIsRefusedAndNothingIsStored() async throws {
        let stack = try await TestStack(packages: true)
        defer { Task { await stack.stop() } }
        let port = stack.apiPort
        #expect(try await self.push(port, "0.150.0").status == 201)
        #expect(try await self.push(port, "0.120.0").status == 201)
        // Packages that fleet.yaml declares are changed there, not behind its back.
        _ = try await stack.controller.apply(try Self.withPackages("0.150.0"), actor: "test", remote: "local")
        let declared = try await self.call(
            port,
            .POST,
            "/v1/packages/otelcol-contrib/0.120.0/rollout",
            body: Array(#"{"tiers": ["lb"]}"#.utf8)
        )
        #expect(declared.status == 409)
        #expect(declared.errorMessage.contains("fleet.yaml declares the packages of load_balancing"))
        // Pinned from the command line instead.
        var plain = try exampleApply(message: "no packages: in fleet.yaml, so they are inherited")
        plain.supersede = true
        _ = try await stack.controller.apply(plain, actor: "test", remote: "local")
        let before = try stack.server.store.versions(limit: 10).count
        let body = Array(#"{"tiers": ["sampling"]}"#.utf8)
        let answer = try await self.call(port, .POST, "/v1/packages/otelcol-contrib/0.120.0/rollout", body: body)
        #expect(answer.status == 422)
        let problems = ((answer.json?["error"] as? [String: Any])?["fleetDiagnostics"] as? [[String: Any]]) ?? []
        let messages = problems.compactMap { $0["message"] as? String }
        #expect(
            messages.contains { $0.contains("sampling tier on otelcol-contrib 0.120.0") && $0.contains("drop") },
            "\(messages)"
        )
        #expect(try stack.server.store.versions(limit: 10).count == before)
        // A package the repository does not have is named, with the fix.
        var missing = try exampleApply()
        missing.fleet += "\npackages:\n  sampling:\n    otelcol-contrib: 0.199.0\n"
        do {
            _ = try await stack.controller.apply(missing, actor: "test", remote: "local")
            Issue.record("an apply naming a package policyd does not have was accepted")
        } catch {
            #expect(error.message.contains("otelcol-contrib 0.199.0 is not in policyd's package repository"))
        }
        #expect(try stack.server.store.versions(limit: 10).count == before)
    }

    @Test func collectorChangesThatCouldNotBeUndoneOrLeaveAgentsBehindAreRefused() async throws {
        let stack = try await TestStack(packages: true)
        defer { Task { await stack.stop() } }
        let port = stack.apiPort
        for version in ["0.150.0", "0.152.0"] { #expect(try await self.push(port, version).status == 201) }
        // Package-capable samplers on 0.150.0, and two load balancers the supervisor runs (no AcceptsPackages).
        await stack.startFleet(loadBalancers: 0, samplers: 2) { $0.acceptsPackages = true }
        await stack.startFleet(loadBalancers: 2, samplers: 0, firstIndex: 10)
        _ = try await stack.applyAndWait(try exampleApply())
        let before = try stack.server.store.versions(limit: 10).count

        // The first pin is not what the samplers run: a failure would have nothing to go back to.
        do {
            _ = try await Self.rollOut(stack, "0.152.0", tiers: [.sampling])
            Issue.record("a first pin other than the running collector was accepted")
        } catch {
            #expect(error.message.contains("no collector pinned yet"), "\(error.message)")
            #expect(error.message.contains("0.150.0 ×2"), "\(error.message)")
        }
        // The load balancers cannot take packages: pinning another collector for them is refused.
        do {
            _ = try await Self.rollOut(stack, "0.150.0", tiers: [.loadBalancing, .sampling])
        } catch {
            Issue.record("pinning the collector everyone runs was refused: \(error.message)")
        }
        #expect(try stack.server.store.versions(limit: 10).count == before + 1)
        _ = await eventually {
            (try? await stack.controller.currentRollout())?.rollout.phase.isTerminal == true
        }
        do {
            _ = try await Self.rollOut(stack, "0.152.0", tiers: [.loadBalancing])
            Issue.record("an upgrade of agents that cannot take packages was accepted")
        } catch {
            #expect(
                error.message.contains("2 agents of the load-balancing tier cannot take packages"),
                "\(error.message)"
            )
        }
        #expect(try stack.server.store.versions(limit: 10).count == before + 1)
        let records = await stack.controller.agents()
        #expect(records.filter { $0.tier == .loadBalancing }.allSatisfy { $0.packageState == "upgrade by hand" })
    }

    @Test func aFailedInstallIsRolledBack() async throws {
        let stack = try await TestStack(packages: true)
        defer { Task { await stack.stop() } }
        let port = stack.apiPort
        for version in ["0.150.0", "0.152.0"] { #expect(try await self.push(port, version).status == 201) }
        let fleet = await stack.startFleet(loadBalancers: 1, samplers: 3) { options in
            options.acceptsPackages = true
            options.failingPackageVersions = ["0.152.0"]
        }
        #expect(try await stack.applyAndWait(try exampleApply()).phase == .succeeded)
        let pin = try await Self.rollOut(stack, "0.150.0")
        #expect(try await self.waitForEnd(stack, pin.rollout).phase == .succeeded)
        let result = try await Self.rollOut(stack, "0.152.0")
        let rollout = try await self.waitForEnd(stack, result.rollout)
        #expect(rollout.phase == .rolledBack)
        #expect(
            rollout.failure?.contains("install failed: installer exited with status 1") == true,
            "\(rollout.failure ?? "")"
        )
        #expect(fleet.agents().allSatisfy { $0.installedPackages["otelcol-contrib"]?.version == "0.150.0" })
        #expect(
            await eventually {
                await stack.controller.agents().allSatisfy {
                    $0.packageState == "installed" && $0.configState == "applied"
                }
            }
        )
    }

    @Test func aMoveSupersededHalfwayRendersForTheOldestCollectorAgentsMayRun() async throws {
        let stack = try await TestStack(packages: true)
        defer { Task { await stack.stop() } }
        for version in ["0.150.0", "0.152.0", "0.153.0"] {
            #expect(try await self.push(stack.apiPort, version).status == 201)
        }
        await stack.startFleet(loadBalancers: 0, samplers: 2) { $0.acceptsPackages = true }
        #expect(try await stack.applyAndWait(try exampleApply()).phase == .succeeded)
        let pin = try await Self.rollOut(stack, "0.150.0", tiers: [.sampling])
        #expect(try await self.waitForEnd(stack, pin.rollout).phase == .succeeded)
        // The move to 0.152.0 starts and is paused after its first batch: agents run 0.150.0 or 0.152.0.
        let move = try await Self.rollOut(stack, "0.152.0", tiers: [.sampling])
        _ = try await stack.controller.command(.pause, actor: "test", remote: "local")
        // Superseded by 0.153.0 halfway: its configs must still start on 0.150.0, not only on 0.152.0.
        let jump = try await stack.controller.rolloutPackage(
            name: "otelcol-contrib",
            version: "0.153.0",
            tiers: [.sampling],
            supersede: true,
            acceptChanges: ["rate-limit-token-bucket"],
            actor: "test",
            remote: "local"
        )
        #expect(try stack.server.store.version(move.version)?.packages?.renderedFor == ["sampling": "0.150.0"])
        #expect(try stack.server.store.version(jump.version)?.packages?.renderedFor == ["sampling": "0.150.0"])
    }
}
