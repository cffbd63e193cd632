import AsyncHTTPClient
import ControlPlane
import Foundation
import NIOCore
import NIOHTTP1
import OpAMPProtocol
import PolicyTesting
import SwiftProtobuf
import Testing

@testable import ControlPlane

/// The web console over real sockets: every page and fragment, sign-in and sessions, roles, CSRF, and
/// escaping of what agents send.
@Suite(.serialized) struct ConsoleTests {
    static let reader = APIToken(token: "read-token-0123456789", name: "dashboards", role: .read)
    static let writer = APIToken(token: "write-token-0123456789", name: "ci", role: .write)

    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: String
        var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(self.body.utf8))) as? [String: Any]
        }
        /// `name=value` of a Set-Cookie header, with its attributes.
        func cookie(_ name: String) -> String? {
            self.headers["set-cookie"].first { $0.hasPrefix("\(name)=") }
        }
    }

    /// A client that does not follow redirects: the tests look at them.
    static let client = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: .init(redirectConfiguration: .disallow)
    )

    func call(
        _ port: Int,
        _ method: HTTPMethod,
        _ path: String,
        headers: [(String, String)] = [],
        body: String? = nil
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await Self.client.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 64 * 1024 * 1024)
        return Answer(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
    }

    /// The value of `<meta name="csrf-token">` in a page.
    func csrf(in page: String) -> String? {
        guard let range = page.range(of: #"<meta name="csrf-token" content=""#) else { return nil }
        return String(page[range.upperBound...].prefix { $0 != "\"" })
    }

    /// Signs in with a token through the form, as a browser does; returns the session cookie header.
    func signIn(_ port: Int, _ token: APIToken) async throws -> String {
        let form = try await self.call(port, .GET, "/login")
        #expect(form.status == 200)
        let nonceCookie = try #require(form.cookie("tailplane_login"))
        let nonce = String(nonceCookie.dropFirst("tailplane_login=".count).prefix { $0 != ";" })
        let answer = try await self.call(
            port,
            .POST,
            "/login",
            headers: [
                ("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", "tailplane_login=\(nonce)"),
                ("Origin", "http://127.0.0.1:\(port)"),
            ],
            body: "token=\(token.token)&nonce=\(nonce)&next=%2Fversions"
        )
        #expect(answer.status == 303)
        #expect(answer.headers["location"].first == "/versions")
        let session = try #require(answer.cookie("tailplane_session"))
        // The cookie is the browser's only credential: script cannot read it, other sites cannot send it.
        #expect(session.contains("HttpOnly") && session.contains("SameSite=Strict") && session.contains("Path=/"))
        #expect(!session.contains("Secure"), "no TLS here, so no Secure flag")
        #expect(!session.contains(token.token), "the cookie never holds the API token itself")
        return String(session.prefix { $0 != ";" })
    }

    @Test func everyPageRendersTheFleetItServes() async throws {
        let stack = try await TestStack()
        let port = stack.apiPort
        await stack.startFleet(loadBalancers: 2, samplers: 3)
        let first = try await stack.applyAndWait(try exampleApply(message: "first"))
        #expect(first.phase == .succeeded)
        var second = try exampleApply(message: "second")
        second.sources[0].text += "\n# a comment that changes the hash\n"
        let rollout = try await stack.applyAndWait(second)
        #expect(rollout.phase == .succeeded)

        let fleet = try await self.call(port, .GET, "/")
        #expect(fleet.status == 200)
        #expect(fleet.headers["content-type"].first == "text/html; charset=utf-8")
        let policy = try #require(fleet.headers["content-security-policy"].first)
        #expect(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"))
        #expect(fleet.body.contains("<p class=\"big\">v2</p>"), "the current version")
        #expect(fleet.body.contains("1–5 of 5 agents"))
        #expect(fleet.body.contains("<strong>2</strong>") && fleet.body.contains("<strong>3</strong>"))
        #expect(fleet.body.contains("100 %"), "every agent converged")
        // Filters work on the server: three samplers, two load balancers.
        let samplers = try await self.call(port, .GET, "/?tier=sampling")
        #expect(samplers.body.contains("1–3 of 3 agents"))
        let none = try await self.call(port, .GET, "/?q=no-such-host")
        #expect(none.body.contains("No agent matches."))
        // The API filters the same way, and pages.
        let paged = try await self.call(port, .GET, "/v1/agents?tier=sampling&limit=2&offset=1")
        #expect(paged.headers["x-total-count"].first == "3")
        #expect((try JSONSerialization.jsonObject(with: Data(paged.body.utf8)) as? [Any])?.count == 2)
        let onVersion = try await self.call(port, .GET, "/v1/agents?version=v2&q=sampler")
        #expect(onVersion.headers["x-total-count"].first == "3")
        #expect(try await self.call(port, .GET, "/v1/agents?state=unhealthy").headers["x-total-count"].first == "0")

        let agents = await stack.controller.agents()
        let sampler = try #require(agents.first { $0.tier == .sampling })
        let agent = try await self.call(port, .GET, "/agents/\(sampler.instanceUID)")
        #expect(agent.status == 200)
        #expect(agent.body.contains(sampler.instanceUID))
        #expect(agent.body.contains("tail_sampling"), "the desired config is shown")
        #expect(agent.body.contains("host.name"))
        #expect(try await self.call(port, .GET, "/agents/not-a-uid").status == 404)

        let policies = try await self.call(port, .GET, "/policies")
        #expect(policies.status == 200)
        #expect(policies.body.contains("data-source=\"00-sampler.policy\""))
        #expect(policies.body.contains("a comment that changes the hash"), "the current version's sources")
        #expect(policies.body.contains("id=\"apply-form\""), "anonymous on loopback may apply")

        let versions = try await self.call(port, .GET, "/versions")
        #expect(versions.body.contains("<strong>v2</strong>") && versions.body.contains("second"))
        #expect(versions.body.contains("data-post=\"/v1/rollback\""))
        let diff = try await self.call(port, .GET, "/versions/diff?from=1&to=2")
        #expect(diff.status == 200)
        #expect(diff.body.contains("a comment that changes the hash"))
        #expect(diff.body.contains("class=\"added\""))
        #expect(try await self.call(port, .GET, "/versions/diff?from=1&to=9").status == 404)

        let page = try await self.call(port, .GET, "/rollout")
        #expect(page.body.contains("Rollout \(rollout.id)") && page.body.contains("succeeded"))
        #expect(page.body.contains("100 %"))
        let fragment = try await self.call(port, .GET, "/console/fragments/rollout/\(rollout.id)")
        #expect(fragment.status == 200 && fragment.body.hasPrefix("<div class=\"rollout\""))
        let summary = try await self.call(port, .GET, "/console/fragments/fleet-summary")
        #expect(summary.status == 200 && summary.body.contains("Converged"))
        // Without a package repository the packages page says so, and lists the collectors agents report.
        let packages = try await self.call(port, .GET, "/packages")
        #expect(packages.status == 200 && packages.body.contains("has no package repository"))
        #expect(packages.body.contains("<td>sampling</td>") && packages.body.contains("<td>load-balancing</td>"))

        // Assets are content-addressed and cached for good.
        let script = try #require(fleet.body.firstRange(of: #/src="(/console/static/console\.[0-9a-f]+\.js)"/#))
        let asset = try await self.call(port, .GET, String(fleet.body[script].dropFirst(5).dropLast()))
        #expect(asset.status == 200 && asset.body.contains("EventSource"))
        #expect(asset.headers["cache-control"].first?.contains("immutable") == true)
        #expect(try await self.call(port, .GET, "/console/static/other.js").status == 404)
        await stack.stop()
    }

    @Test func signInSessionsRolesAndCSRF() async throws {
        let stack = try await TestStack(tokens: [Self.reader, Self.writer])
        let port = stack.apiPort
        // Not signed in: pages send you to the sign-in page and back; API calls get 401.
        let anonymous = try await self.call(port, .GET, "/policies")
        #expect(anonymous.status == 303)
        #expect(anonymous.headers["location"].first == "/login?next=/policies")
        #expect(try await self.call(port, .GET, "/console/fragments/fleet-summary").status == 401)

        // A wrong token, a missing nonce, a form from another site: refused.
        let form = try await self.call(port, .GET, "/login")
        let nonce = String(try #require(form.cookie("tailplane_login")).dropFirst(16).prefix { $0 != ";" })
        let wrong = try await self.call(
            port,
            .POST,
            "/login",
            headers: [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", "tailplane_login=\(nonce)")],
            body: "token=not-the-token-00000&nonce=\(nonce)"
        )
        #expect(wrong.status == 401 && wrong.body.contains("That token is not valid."))
        #expect(wrong.cookie("tailplane_session") == nil)
        let forged = try await self.call(
            port,
            .POST,
            "/login",
            headers: [("Content-Type", "application/x-www-form-urlencoded")],
            body: "token=\(Self.writer.token)&nonce=guessed"
        )
        #expect(forged.status == 403 && forged.cookie("tailplane_session") == nil)
        let crossSite = try await self.call(
            port,
            .POST,
            "/login",
            headers: [
                ("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", "tailplane_login=\(nonce)"),
                ("Origin", "https://evil.example"),
            ],
            body: "token=\(Self.writer.token)&nonce=\(nonce)"
        )
        #expect(crossSite.status == 403 && crossSite.cookie("tailplane_session") == nil)
        // `next` stays on this server.
        #expect(ControlPlaneAPI.localPath("//evil.example/x") == "/")
        #expect(ControlPlaneAPI.localPath("https://evil.example") == "/")
        #expect(ControlPlaneAPI.localPath("/\\evil.example") == "/")
        #expect(ControlPlaneAPI.localPath("/versions?x=1") == "/versions?x=1")
        // Browsers drop tabs and newlines from URLs: `/<TAB>/evil.example` would be `//evil.example` (review).
        #expect(ControlPlaneAPI.localPath("/\t/evil.example") == "/")
        #expect(ControlPlaneAPI.localPath("/\n/evil.example") == "/")
        #expect(ControlPlaneAPI.localPath("/ /evil.example") == "/")
        let tabbed = try await self.call(port, .GET, "/login?next=/%09/evil.example")
        #expect(tabbed.body.contains("name=\"next\" value=\"/\""))
        // A session cookie is refused after its expiry, and when its MAC was made with another token.
        let now = Date()
        let fresh = ConsoleSession.cookieValue(
            forToken: Self.reader.token,
            expires: Int(now.timeIntervalSince1970) + 60
        )
        #expect(ConsoleSession.token(ofCookie: fresh, tokens: [Self.writer, Self.reader], now: now) == Self.reader)
        #expect(ConsoleSession.token(ofCookie: fresh, tokens: [Self.writer], now: now) == nil)
        #expect(ConsoleSession.token(ofCookie: fresh, tokens: [Self.reader], now: now.addingTimeInterval(61)) == nil)
        let expired = ConsoleSession.cookieValue(
            forToken: Self.writer.token,
            expires: Int(now.timeIntervalSince1970) - 1
        )
        #expect(
            try await self.call(port, .GET, "/v1/versions", headers: [("Cookie", "tailplane_session=\(expired)")])
                .status == 401
        )
        let forever = ConsoleSession.cookieValue(
            forToken: Self.writer.token,
            expires: Int(now.timeIntervalSince1970) + 86400 * 365
        )
        #expect(
            ConsoleSession.token(ofCookie: forever, tokens: [Self.writer], now: now) == nil,
            "no longer than a session lasts"
        )

        // A read session sees everything and gets no write controls; the server refuses its writes too.
        let readCookie = try await self.signIn(port, Self.reader)
        let readPage = try await self.call(port, .GET, "/policies", headers: [("Cookie", readCookie)])
        #expect(readPage.status == 200 && readPage.body.contains("dashboards"))
        #expect(!readPage.body.contains("id=\"apply-form\"") && readPage.body.contains("readonly"))
        let readCSRF = try #require(self.csrf(in: readPage.body))
        let body = String(decoding: try JSONEncoder().encode(try exampleApply()), as: UTF8.self)
        let refused = try await self.call(
            port,
            .POST,
            "/v1/apply",
            headers: [("Cookie", readCookie), ("X-CSRF-Token", readCSRF), ("Content-Type", "application/json")],
            body: body
        )
        #expect(refused.status == 403)

        // A write session: without the CSRF token, or from another origin, nothing happens.
        let writeCookie = try await self.signIn(port, Self.writer)
        let writePage = try await self.call(port, .GET, "/policies", headers: [("Cookie", writeCookie)])
        #expect(writePage.body.contains("id=\"apply-form\""))
        let csrf = try #require(self.csrf(in: writePage.body))
        #expect(csrf != readCSRF)
        let noToken = try await self.call(
            port,
            .POST,
            "/v1/apply",
            headers: [("Cookie", writeCookie), ("Content-Type", "application/json")],
            body: body
        )
        #expect(noToken.status == 403)
        #expect(
            (noToken.json?["error"] as? [String: Any])?["message"] as? String
                == "the request has no valid CSRF token (reload the page and try again)"
        )
        let otherToken = try await self.call(
            port,
            .POST,
            "/v1/apply",
            headers: [("Cookie", writeCookie), ("X-CSRF-Token", readCSRF), ("Content-Type", "application/json")],
            body: body
        )
        #expect(otherToken.status == 403)
        let otherOrigin = try await self.call(
            port,
            .POST,
            "/v1/apply",
            headers: [
                ("Cookie", writeCookie), ("X-CSRF-Token", csrf), ("Content-Type", "application/json"),
                ("Origin", "https://evil.example"),
            ],
            body: body
        )
        #expect(otherOrigin.status == 403)
        // The host a follower says it received the request on counts only on a forwarded request, and still
        // must match the origin.
        let claimedHost = try await self.call(
            port,
            .POST,
            "/v1/apply",
            headers: [
                ("Cookie", writeCookie), ("X-CSRF-Token", csrf), ("Content-Type", "application/json"),
                ("Origin", "https://follower.example:4321"), ("Tailplane-Forwarded-Host", "follower.example:4321"),
            ],
            body: body
        )
        #expect(claimedHost.status == 403)
        let forwardedFromElsewhere = try await self.call(
            port,
            .POST,
            "/v1/apply",
            headers: [
                ("Cookie", writeCookie), ("X-CSRF-Token", csrf), ("Content-Type", "application/json"),
                ("Origin", "https://evil.example"), ("Tailplane-Forwarded-By", "replica-b"),
                ("Tailplane-Forwarded-Host", "follower.example:4321"),
            ],
            body: body
        )
        #expect(forwardedFromElsewhere.status == 403)
        #expect(try stack.server.store.versions(limit: 5).isEmpty, "nothing was stored")
        let applied = try await self.call(
            port,
            .POST,
            "/v1/apply",
            headers: [
                ("Cookie", writeCookie), ("X-CSRF-Token", csrf), ("Content-Type", "application/json"),
                ("Origin", "http://127.0.0.1:\(port)"),
            ],
            body: body
        )
        #expect(applied.status == 201)
        // A console write a follower forwarded (the console open on that replica): checked against the host
        // the follower received it on.
        var throughFollower = try exampleApply(message: "through a follower")
        throughFollower.supersede = true
        throughFollower.sources.append(
            SourceText(path: "98-extra.policy", text: "keep extra when service == \"tailplane-extra\"\n")
        )
        let forwardedBody = String(decoding: try JSONEncoder().encode(throughFollower), as: UTF8.self)
        let forwarded = try await self.call(
            port,
            .POST,
            "/v1/apply",
            headers: [
                ("Cookie", writeCookie), ("X-CSRF-Token", csrf), ("Content-Type", "application/json"),
                ("Origin", "https://follower.example:4321"), ("Tailplane-Forwarded-By", "replica-b"),
                ("Tailplane-Forwarded-Host", "follower.example:4321"),
            ],
            body: forwardedBody
        )
        #expect(forwarded.status == 201, "\(forwarded.body)")
        let audit = try stack.server.store.audit(limit: 5)
        #expect(audit.first?.actor == "ci", "the console acts as the token it signed in with")
        // Reading needs no CSRF token.
        #expect(try await self.call(port, .GET, "/v1/versions", headers: [("Cookie", readCookie)]).status == 200)

        // Signing out needs the CSRF token and clears the cookie.
        let badLogout = try await self.call(
            port,
            .POST,
            "/logout",
            headers: [("Cookie", writeCookie), ("Content-Type", "application/x-www-form-urlencoded")],
            body: "csrf=wrong"
        )
        #expect(badLogout.status == 403)
        let logout = try await self.call(
            port,
            .POST,
            "/logout",
            headers: [("Cookie", writeCookie), ("Content-Type", "application/x-www-form-urlencoded")],
            body: "csrf=\(csrf)"
        )
        #expect(logout.status == 303 && logout.headers["location"].first == "/login")
        #expect(logout.cookie("tailplane_session")?.contains("Max-Age=0") == true)
        // A cookie for a token that is no longer configured is worth nothing.
        #expect(
            try await self.call(port, .GET, "/v1/versions", headers: [("Cookie", "tailplane_session=00ff")]).status
                == 401
        )
        await stack.stop()
    }

    @Test func withoutTokensOnlyLoopbackNamesAreAnswered() async throws {
        // DNS rebinding: a page on evil.example rebinds its name to 127.0.0.1; the browser then sends
        // `Host: evil.example:PORT`. Without tokens everyone is admin, so such requests get nothing.
        let stack = try await TestStack()
        let port = stack.apiPort
        let rebound = try await self.call(port, .GET, "/", headers: [("Host", "evil.example:\(port)")])
        #expect(rebound.status == 403 && self.csrf(in: rebound.body) == nil)
        #expect(try await self.call(port, .GET, "/v1/versions", headers: [("Host", "evil.example")]).status == 403)
        for host in ["127.0.0.1:\(port)", "localhost:\(port)", "[::1]:\(port)", "localhost"] {
            #expect(try await self.call(port, .GET, "/v1/versions", headers: [("Host", host)]).status == 200, "\(host)")
        }
        await stack.stop()
    }

    @Test func aCommandForARolloutThatIsNoLongerCurrentIsRefused() async throws {
        var options = fastOptions()
        options.bakeSecondsOverride = 30
        let stack = try await TestStack(options: options)
        let port = stack.apiPort
        await stack.startFleet(loadBalancers: 1, samplers: 2)
        let started = try await stack.controller.apply(try exampleApply(), actor: "test", remote: "local")
        let id = try #require(started.rollout)
        let stale = try await self.call(port, .POST, "/v1/rollouts/current/abort?rollout=\(id + 1)")
        #expect(stale.status == 409)
        #expect(try await stack.controller.currentRollout()?.rollout.phase == .progressing, "nothing was done")
        let current = try await self.call(port, .POST, "/v1/rollouts/current/pause?rollout=\(id)")
        #expect(current.status == 200)
        await stack.stop()
    }

    @Test func validateCompilesAndRendersWithoutStoring() async throws {
        let stack = try await TestStack()
        let port = stack.apiPort
        var request = try exampleApply()
        struct Body: Encodable {
            var sources: [SourceText]
            var fleet: String
        }
        func validate(_ request: ApplyRequest) async throws -> Answer {
            let body = try JSONEncoder().encode(Body(sources: request.sources, fleet: request.fleet))
            return try await self.call(
                port,
                .POST,
                "/v1/validate",
                headers: [("Content-Type", "application/json")],
                body: String(decoding: body, as: UTF8.self)
            )
        }
        let valid = try await validate(request)
        #expect(valid.status == 200)
        #expect(valid.json?["valid"] as? Bool == true)
        let rendered = try #require(valid.json?["rendered"] as? [[String: Any]])
        #expect(Set(rendered.compactMap { $0["tier"] as? String }) == ["lb", "sampling"])
        #expect(
            (rendered.first { $0["tier"] as? String == "sampling" }?["yaml"] as? String)?.contains("tail_sampling")
                == true
        )
        // No sampler is connected: the load balancers' config is shown with a placeholder, and says so.
        let notes = try #require(valid.json?["fleetDiagnostics"] as? [[String: Any]])
        #expect(notes.contains { $0["code"] as? String == "TP5102" && $0["severity"] as? String == "warning" })

        // A typo on line 2, column 16 of a file: the diagnostic says exactly where.
        request.sources.append(SourceText(path: "typo.policy", text: "# a rule\nkeep slow when duraton > 2s\n"))
        let invalid = try await validate(request)
        #expect(invalid.status == 200)
        #expect(invalid.json?["valid"] as? Bool == false)
        let diagnostics = try #require(invalid.json?["diagnostics"] as? [[String: Any]])
        let typo = try #require(diagnostics.first { $0["file"] as? String == "typo.policy" })
        #expect(typo["severity"] as? String == "error")
        let start = try #require(typo["start"] as? [String: Any])
        #expect(start["line"] as? Int == 2 && start["column"] as? Int == 16)
        #expect((typo["suggestion"] as? String)?.contains("duration") == true)
        #expect(try stack.server.store.versions(limit: 5).isEmpty, "validate stores nothing")
        let malformed = try await self.call(port, .POST, "/v1/validate", body: "{\"sources\": 3}")
        #expect(malformed.status == 400)
        await stack.stop()
    }

    @Test func estimateComparesTheEditWithTheCurrentVersionOnATraceSample() async throws {
        let stack = try await TestStack()
        let port = stack.apiPort
        await stack.startFleet(loadBalancers: 1, samplers: 2)
        let current = try exampleApply()
        #expect(try await stack.applyAndWait(current).phase == .succeeded)
        var generator = SyntheticTraces(seed: 5)
        let sample = (0..<40).map { _ in OTLPJSONWriter.line((0..<25).map { _ in generator.next() }) }.joined(
            separator: "\n"
        )
        struct Body: Encodable {
            var sources: [SourceText]
            var fleet: String
            var traces: String
        }
        // The edit: keep every trace (a catch-all before the rest).
        var edited = current
        edited.sources.insert(SourceText(path: "01-everything.policy", text: "keep everything\n"), at: 0)
        let answer = try await self.call(
            port,
            .POST,
            "/v1/estimate",
            headers: [("Content-Type", "application/json")],
            body: String(
                decoding: try JSONEncoder().encode(Body(sources: edited.sources, fleet: edited.fleet, traces: sample)),
                as: UTF8.self
            )
        )
        #expect(answer.status == 200, "\(answer.body.prefix(400))")
        let before = try #require(answer.json?["before"] as? [String: Any])
        let after = try #require(answer.json?["after"] as? [String: Any])
        #expect(answer.json?["currentVersion"] as? Int == 1)
        #expect(after["traces"] as? Int == 1000 && before["traces"] as? Int == 1000)
        let kept = try #require(before["keptTraces"] as? Int)
        let keptAfter = try #require(after["keptTraces"] as? Int)
        #expect(kept > 0 && kept < keptAfter, "the examples keep some of it; the edit keeps more")
        // Drop rules still win over a keep (the collector's precedence), so the edit keeps all but the dropped.
        let rules = try #require(after["rules"] as? [[String: Any]])
        let dropped = rules.filter { $0["action"] as? String == "drop" }.compactMap { $0["decided"] as? Int }
        #expect(keptAfter + dropped.reduce(0, +) == 1000, "\(rules)")
        #expect(rules.contains { $0["rule"] as? String == "everything" && ($0["matched"] as? Int ?? 0) >= keptAfter })
        #expect(try stack.server.store.versions(limit: 5).count == 1, "an estimate stores nothing")
        // Bad samples say what is wrong.
        let bad = try await self.call(
            port,
            .POST,
            "/v1/estimate",
            headers: [("Content-Type", "application/json")],
            body: String(
                decoding: try JSONEncoder().encode(
                    Body(sources: edited.sources, fleet: edited.fleet, traces: "{\"resourceSpans\": 3}")
                ),
                as: UTF8.self
            )
        )
        #expect(bad.status == 400)
        #expect(
            ((bad.json?["error"] as? [String: Any])?["message"] as? String)?.hasPrefix(
                "the trace sample is not OTLP/JSON"
            ) == true
        )
        await stack.stop()
    }

    @Test func whatAgentsSendIsEscapedEverywhere() async throws {
        let stack = try await TestStack()
        let port = stack.apiPort
        let hostile = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">"
        let uid = try await Self.connectHostileAgent(opampPort: stack.opampPort, text: hostile)
        #expect(await eventually { await stack.controller.agents().contains { $0.instanceUID == uid } })
        let escaped = "&lt;script&gt;window.__xss=1&lt;/script&gt;&lt;img src=x onerror=&quot;window.__xss=2&quot;&gt;"
        for path in ["/", "/?q=script", "/agents/\(uid)"] {
            let page = try await self.call(port, .GET, path)
            #expect(page.status == 200)
            #expect(!page.body.contains("<script>window.__xss"), "\(path) carries the agent's script")
            #expect(!page.body.contains("<img src=x"), "\(path) carries the agent's markup")
            #expect(page.body.contains(escaped), "\(path) shows the text, escaped")
        }
        let detail = try await self.call(port, .GET, "/agents/\(uid)")
        #expect(detail.body.contains("service.name"))
        #expect(detail.body.components(separatedBy: escaped).count >= 4, "name, error, attributes and config")
        await stack.stop()
    }

    /// An agent over OpAMP's HTTP transport whose every free-text field is `text`; returns its UID.
    static func connectHostileAgent(opampPort: Int, text: String) async throws -> String {
        let uid = InstanceUID.version7(unixMilliseconds: UInt64(Date().timeIntervalSince1970 * 1000))
        var message = OpAMP_AgentToServer()
        message.instanceUid = Data(uid.bytes)
        message.sequenceNum = 0
        message.capabilities = 0x1 | 0x2 | 0x4 | 0x800 | 0x1000
        func attribute(_ key: String, _ value: String) -> OpAMP_KeyValue {
            var pair = OpAMP_KeyValue()
            pair.key = key
            pair.value.stringValue = value
            return pair
        }
        message.agentDescription.identifyingAttributes = [attribute("service.name", text)]
        message.agentDescription.nonIdentifyingAttributes = [attribute("host.name", text), attribute(text, "key")]
        message.health.healthy = false
        message.health.lastError = text
        message.health.status = text
        var file = OpAMP_AgentConfigFile()
        file.body = Data("receivers: {}\n# \(text)\n".utf8)
        message.effectiveConfig.configMap.configMap["collector.yaml"] = file
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(opampPort)/v1/opamp")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-protobuf")
        request.body = .bytes(ByteBuffer(bytes: try message.serializedBytes() as [UInt8]))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 20)
        #expect(response.status == .ok)
        return uid.description
    }

    @Test func sideBySideDiffs() {
        let same = TextDiff(old: "a\nb\nc", new: "a\nb\nc")
        #expect(same.isEmpty && same.rows.count == 1 && same.rows[0].kind == .folded)
        let old = (1...20).map { "line \($0)" }.joined(separator: "\n")
        var lines = (1...20).map { "line \($0)" }
        lines[9] = "line ten"
        lines.insert("inserted", at: 15)
        lines.remove(at: 0)
        let diff = TextDiff(old: old, new: lines.joined(separator: "\n"))
        #expect(diff.removed == 2 && diff.added == 2)
        let kinds = diff.rows.map(\.kind)
        #expect(kinds.first == .removed)
        let changed = diff.rows.first { $0.kind == .changed }
        #expect(changed?.left == "line 10" && changed?.right == "line ten")
        #expect(changed?.leftNumber == 10 && changed?.rightNumber == 9)
        #expect(diff.rows.contains { $0.kind == .added && $0.right == "inserted" })
        // Unchanged stretches fold, keeping three lines of context on each side of a change.
        #expect(kinds.contains(.folded))
        // Lines 2-9 fold to 3 + 3, lines 11-15 (five) stay, the three after the insertion stay.
        #expect(diff.rows.filter { $0.kind == .same }.count == 6 + 5 + 3)
        #expect(diff.rows.filter { $0.kind == .folded }.map(\.folded) == [2, 2])
    }
}
