import AsyncHTTPClient
import ControlPlane
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// The HTTP API over real sockets: tokens and roles, errors that change nothing, and the OpenAPI document.
@Suite(.serialized) struct APITests {
    static let reader = APIToken(token: "read-token-0123456789", name: "dashboards", role: .read)
    static let writer = APIToken(token: "write-token-0123456789", name: "ci", role: .write)
    static let admin = APIToken(token: "admin-token-0123456789", name: "sre", role: .admin)

    struct Answer {
        var status: Int
        var body: [UInt8]
        var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(self.body))) as? [String: Any] }
    }

    func call(
        _ port: Int,
        _ method: HTTPMethod,
        _ path: String,
        token: APIToken? = nil,
        body: [UInt8]? = nil
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token.token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 64 * 1024 * 1024)
        return Answer(status: Int(response.status.code), body: Array(bytes.readableBytesView))
    }

    func encode(_ request: ApplyRequest) throws -> [UInt8] { Array(try JSONEncoder().encode(request)) }

    @Test func tokensAndRolesAreEnforced() async throws {
        let stack = try await TestStack(tokens: [Self.reader, Self.writer, Self.admin])
        let port = stack.apiPort
        #expect(try await self.call(port, .GET, "/healthz").status == 200)
        let anonymous = try await self.call(port, .GET, "/v1/versions")
        #expect(anonymous.status == 401)
        #expect((anonymous.json?["error"] as? [String: Any])?["code"] as? String == "unauthorized")
        let wrong = APIToken(token: "not-a-real-token-000", name: "x", role: .admin)
        #expect(try await self.call(port, .GET, "/v1/versions", token: wrong).status == 401)
        #expect(try await self.call(port, .GET, "/v1/versions", token: Self.reader).status == 200)
        let body = try self.encode(try exampleApply())
        let forbidden = try await self.call(port, .POST, "/v1/apply", token: Self.reader, body: body)
        #expect(forbidden.status == 403)
        #expect(try stack.server.store.versions(limit: 5).isEmpty)
        let created = try await self.call(port, .POST, "/v1/apply", token: Self.writer, body: body)
        #expect(created.status == 201)
        #expect(created.json?["version"] as? Int == 1)
        #expect(
            try await self.call(port, .POST, "/v1/apply", token: Self.writer, body: body).json?["result"] as? String
                == "unchanged"
        )
        // The audit log: admin only, and it names who applied.
        #expect(try await self.call(port, .GET, "/v1/audit", token: Self.writer).status == 403)
        let audit = try await self.call(port, .GET, "/v1/audit", token: Self.admin)
        #expect(audit.status == 200)
        let entries = try #require((try? JSONSerialization.jsonObject(with: Data(audit.body))) as? [[String: Any]])
        #expect(entries.first?["actor"] as? String == "ci" && entries.first?["action"] as? String == "apply")
        await stack.stop()
    }

    @Test func badRequestsGetJSONErrorsAndChangeNothing() async throws {
        let stack = try await TestStack()
        let port = stack.apiPort
        // Compile errors: 422 with the compiler's diagnostics.
        var request = try exampleApply()
        request.sources.append(
            SourceText(path: "bad.policy", text: "keep fast when service == \"a\" and duration < 2s\n")
        )
        let rejected = try await self.call(port, .POST, "/v1/apply", body: try self.encode(request))
        #expect(rejected.status == 422)
        let error = try #require(rejected.json?["error"] as? [String: Any])
        #expect(error["code"] as? String == "invalid_policy_set")
        let diagnostics = try #require(error["diagnostics"] as? [[String: Any]])
        #expect(diagnostics.contains { $0["code"] as? String == "TP3030" && $0["file"] as? String == "bad.policy" })
        // A fleet description with errors.
        var badFleet = try exampleApply()
        badFleet.fleet = "collector: {version: \"0.150\"}\nsamplerz: {}\n"
        let fleetRejected = try await self.call(port, .POST, "/v1/apply", body: try self.encode(badFleet))
        #expect(fleetRejected.status == 422)
        #expect(
            ((fleetRejected.json?["error"] as? [String: Any])?["fleetDiagnostics"] as? [[String: Any]])?.isEmpty
                == false
        )
        // Two files under one path: which one a diagnostic or a stored source meant would be a guess.
        var twice = try exampleApply()
        twice.sources.append(twice.sources[0])
        let duplicated = try await self.call(port, .POST, "/v1/apply", body: try self.encode(twice))
        #expect(duplicated.status == 422)
        let duplicateDiagnostics =
            (duplicated.json?["error"] as? [String: Any])?["fleetDiagnostics"] as? [[String: Any]]
        #expect(
            duplicateDiagnostics?.contains {
                ($0["message"] as? String)?.contains("two files named `\(twice.sources[0].path)`") == true
            } == true
        )
        // Not JSON, the wrong shape, too large.
        #expect(try await self.call(port, .POST, "/v1/apply", body: Array("{nope".utf8)).status == 400)
        #expect(try await self.call(port, .POST, "/v1/apply", body: Array("{\"sources\": 3}".utf8)).status == 400)
        let huge = Array(repeating: UInt8(ascii: " "), count: 17 * 1024 * 1024)
        #expect(try await self.call(port, .POST, "/v1/apply", body: huge).status == 413)
        #expect(try stack.server.store.versions(limit: 5).isEmpty)
        // Commands that do not fit: 409 naming why; unknown things: 404.
        let pause = try await self.call(port, .POST, "/v1/rollouts/current/pause")
        #expect(pause.status == 409)
        #expect(try await self.call(port, .GET, "/v1/versions/7").status == 404)
        #expect(try await self.call(port, .POST, "/v1/rollback", body: Array("{\"to\": 7}".utf8)).status == 404)
        await stack.stop()
    }

    @Test func eventsStreamAsServerSentEventsAndMetricsAreExposed() async throws {
        let stack = try await TestStack(tokens: [Self.reader, Self.writer])
        let port = stack.apiPort
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/events")
        request.headers.add(name: "Accept", value: "text/event-stream")
        request.headers.add(name: "Authorization", value: "Bearer \(Self.reader.token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        #expect(response.headers.first(name: "content-type") == "text/event-stream")
        let reader = Task {
            var text = ""
            for try await chunk in response.body {
                text += String(buffer: chunk)
                if text.contains("event: rollout_started") { return text }
            }
            return text
        }
        let body = try self.encode(try exampleApply())
        #expect(try await self.call(port, .POST, "/v1/apply", token: Self.writer, body: body).status == 201)
        let streamed = try await reader.value
        #expect(streamed.contains("\nevent: rollout_started\ndata: {"))
        #expect(streamed.hasPrefix("id: "))
        #expect(streamed.contains("\"message\":\"rollout 1: version none -> 1"))

        let unauthenticated = try await self.call(port, .GET, "/metrics")
        #expect(unauthenticated.status == 401)
        let metrics = String(
            decoding: try await self.call(port, .GET, "/metrics", token: Self.reader).body,
            as: UTF8.self
        )
        #expect(metrics.contains("tailplane_apply_duration_seconds_count 1"))
        #expect(metrics.contains("tailplane_api_request_duration_seconds_bucket{method=\"POST\""))
        #expect(
            await eventually {
                let text = String(
                    decoding: (try? await self.call(port, .GET, "/metrics", token: Self.reader).body) ?? [],
                    as: UTF8.self
                )
                return text.contains("tailplane_rollout_active ") && text.contains("tailplane_ring_size 0")
            }
        )
        await stack.stop()
    }

    @Test func everyRouteIsInTheOpenAPIDocument() async throws {
        let stack = try await TestStack()
        let routes = stack.server.routes()
        await stack.stop()
        #expect(routes.contains("POST /v1/apply") && routes.contains("GET /v1/versions/{number}"), "\(routes)")
        let text = try String(
            contentsOf: repositoryRoot.appendingPathComponent("docs/openapi.yaml"),
            encoding: .utf8
        )
        // Paths and their methods as the document lists them.
        var documented = Set<String>()
        var currentPath: String?
        for line in text.components(separatedBy: "\n") {
            if line.hasPrefix("  /"), line.hasSuffix(":") {
                currentPath = String(line.dropFirst(2).dropLast())
            } else if let path = currentPath, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()
                if ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(method) {
                    documented.insert("\(method) \(path)")
                }
            } else if !line.hasPrefix(" "), !line.isEmpty {
                currentPath = nil
            }
        }
        for route in routes {
            #expect(documented.contains(route), "\(route) is not in docs/openapi.yaml")
        }
        // Package files are served by a middleware (Hummingbird's file middleware behind the download token), not a
        // route.
        let middleware: Set = ["GET /v1/package-files/{sha256}"]
        #expect(middleware.isSubset(of: documented))
        #expect(
            documented.subtracting(middleware) == Set(routes),
            "documented but not served: \(documented.subtracting(middleware).subtracting(routes))"
        )
    }
}
