import ConfigRenderer
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PolicyEngine

/// API roles: each includes the ones before it.
public enum APIRole: String, Sendable, Hashable, Codable, Comparable {
    case read, write, admin

    private var rank: Int {
        switch self {
        case .read: 0
        case .write: 1
        case .admin: 2
        }
    }

    public static func < (lhs: APIRole, rhs: APIRole) -> Bool { lhs.rank < rhs.rank }
}

/// A bearer token, its name (the audit log's actor) and its role.
public struct APIToken: Sendable, Hashable {
    public var token: String
    public var name: String
    public var role: APIRole

    /// Creates a token.
    public init(token: String, name: String, role: APIRole) {
        self.token = token
        self.name = name
        self.role = role
    }

    /// Reads `ROLE NAME TOKEN` lines (`#` comments, blank lines), as in `--api-tokens-file`, or
    /// `role:name:token` items separated by commas, as in `POLICYD_API_TOKENS`.
    public static func parse(_ text: String) throws -> [APIToken] {
        var tokens: [APIToken] = []
        let separators: (Character) -> Bool = { $0 == "\n" || $0 == "," }
        for (index, rawLine) in text.split(whereSeparator: separators).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts =
                line.contains(":") && !line.contains(" ")
                ? line.split(separator: ":", maxSplits: 2).map(String.init)
                : line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard parts.count == 3, let role = APIRole(rawValue: parts[0].lowercased()), parts[2].count >= 16 else {
                throw StoreError(
                    "API token entry \(index + 1): expected `ROLE NAME TOKEN` with ROLE read, write or admin and a token of at least 16 characters"
                )
            }
            tokens.append(APIToken(token: parts[2], name: parts[1], role: role))
        }
        return tokens
    }
}

/// The request context of the API: who is calling, from where.
public struct APIContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Peer address.
    public var remote: String

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remote = source.channel.remoteAddress?.description ?? "unknown"
    }

    /// Policy sets are text: 16 MiB is far above any real one.
    public var maxUploadSize: Int { 16 * 1024 * 1024 }

    public var responseEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

/// An API error: JSON `{"error": {"code", "message", "diagnostics"?, "fleet_diagnostics"?}}`.
public struct APIError: HTTPResponseError {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    public var rejection: ApplyRejection?
    /// Sent as `Retry-After` (a refusal the caller should try again later).
    public var retryAfterSeconds: Int?

    public init(
        _ status: HTTPResponse.Status,
        code: String,
        message: String,
        rejection: ApplyRejection? = nil,
        retryAfterSeconds: Int? = nil
    ) {
        self.status = status
        self.code = code
        self.message = message
        self.rejection = rejection
        self.retryAfterSeconds = retryAfterSeconds
    }

    struct Body: Encodable {
        struct Inner: Encodable {
            var code: String
            var message: String
            var diagnostics: [Diagnostic]?
            var fleetDiagnostics: [FleetDiagnostic]?
        }
        var error: Inner
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = Body(
            error: .init(
                code: self.code,
                message: self.message,
                diagnostics: self.rejection?.diagnostics,
                fleetDiagnostics: self.rejection?.fleetDiagnostics
            )
        )
        var headers: HTTPFields = [.contentType: "application/json"]
        if self.status == .unauthorized { headers[.wwwAuthenticate] = "Bearer realm=\"policyd\"" }
        if let seconds = self.retryAfterSeconds { headers[.retryAfter] = String(seconds) }
        return Response(
            status: self.status,
            headers: headers,
            body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(body)))
        )
    }

    static func from(_ error: any Error) -> APIError {
        guard let error = error as? ControlPlaneError else {
            return APIError(.internalServerError, code: "internal", message: "\(error)")
        }
        return switch error {
        case .rejected(let rejection):
            APIError(.unprocessableContent, code: "invalid_policy_set", message: error.message, rejection: rejection)
        case .conflict(let text): APIError(.conflict, code: "conflict", message: text)
        case .notFound(let text): APIError(.notFound, code: "not_found", message: text)
        case .badRequest(let text): APIError(.badRequest, code: "bad_request", message: text)
        case .store(let text): APIError(.internalServerError, code: "store_error", message: text)
        case .tooLarge(let text): APIError(.contentTooLarge, code: "too_large", message: text)
        case .leadershipMoved(let text):
            APIError(.serviceUnavailable, code: "no_leader", message: text, retryAfterSeconds: 2)
        }
    }
}

/// A JSON body with the API's encoder.
struct JSON<Value: Encodable & Sendable>: ResponseGenerator {
    var value: Value
    var status: HTTPResponse.Status = .ok

    init(_ value: Value, status: HTTPResponse.Status = .ok) {
        self.value = value
        self.status = status
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Response(
            status: self.status,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(self.value)))
        )
    }
}

/// A version without its sources, for lists.
public struct VersionSummary: Sendable, Hashable, Codable {
    public var number: Int
    public var contentHash: String
    public var author: String
    public var message: String
    public var gitRevision: String?
    public var createdAt: Date
    public var outcome: VersionOutcome
    public var failureReason: String?

    init(_ version: PolicyVersion) {
        self.number = version.number
        self.contentHash = version.contentHash
        self.author = version.author
        self.message = version.message
        self.gitRevision = version.gitRevision
        self.createdAt = version.createdAt
        self.outcome = version.outcome
        self.failureReason = version.failureReason
    }
}

/// A version with everything: sources, fleet, IR and the configs rendered for it.
public struct VersionDetail: Sendable, Hashable, Codable {
    public var version: PolicyVersion
    public var rendered: [RenderedRecord]
}

/// The API routes over a ``Controller``. Used by `policyd serve` and `policyd demo`.
public struct ControlPlaneAPI: Sendable {
    let controller: Controller
    let store: any ControlPlaneStore
    let tokens: [String: APIToken]
    /// The tokens, in configuration order (console session cookies are checked against each).
    let tokenList: [APIToken]
    /// With no tokens configured, the console's CSRF token is derived from this key (new at every start).
    let anonymousKey = SymmetricKey(size: .bits256)
    /// Mark the console's cookies `Secure` (the API is served over TLS).
    let secureCookies: Bool

    /// Creates the API. With no tokens every request is allowed (`policyd` then listens on loopback only).
    /// `secureCookies` marks the console's cookies `Secure`: set it when the API is served over TLS.
    public init(controller: Controller, store: any ControlPlaneStore, tokens: [APIToken], secureCookies: Bool = false) {
        self.controller = controller
        self.store = store
        self.tokens = Dictionary(tokens.map { ($0.token, $0) }, uniquingKeysWith: { first, _ in first })
        self.tokenList = tokens
        self.secureCookies = secureCookies
    }

    /// Every route the router registers, as `METHOD /path/{parameter}` (the OpenAPI coverage test reads it).
    public func routes() -> [String] {
        self.router(console: false).routes.map { route in
            let path = "\(route.path)".split(separator: "/").map { part in
                part.hasPrefix(":") ? "{\(part.dropFirst())}" : String(part)
            }.joined(separator: "/")
            return "\(route.method) /\(path)"
        }.sorted()
    }

    /// A JSON body: 413 over 16 MiB, 400 naming what was `expected` otherwise.
    static func body<Body: Decodable>(
        _ request: Request,
        _ context: APIContext,
        as type: Body.Type,
        expected: String
    ) async throws -> Body {
        do {
            return try await request.decode(as: type, context: context)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, code: "too_large", message: "the body is over 16 MiB")
        } catch {
            throw APIError(.badRequest, code: "bad_request", message: "expected \(expected): \(error)")
        }
    }

    /// Who made a request, for the audit log: the peer, and for a write a follower forwarded, the caller it
    /// names first (`10.0.0.5 via 10.0.0.12`; the header alone proves nothing, so the peer stays).
    func caller(_ request: Request, _ context: APIContext) -> String {
        guard request.headers[LeaderForwardingMiddleware.forwardedHeader] != nil,
            let forwarded = request.headers[HTTPField.Name("X-Forwarded-For")!], !forwarded.isEmpty
        else { return context.remote }
        return "\(forwarded.prefix(100)) via \(context.remote)"
    }

    /// The router: the API, and with `console` the web console at `/` (docs/console.md).
    public func router(console: Bool = true) -> Router<APIContext> {
        let router = Router(context: APIContext.self)
        let metrics = self.controller.metrics
        router.add(middleware: RequestMetricsMiddleware(metrics: metrics))
        if let leadership = self.controller.leadership {
            router.add(middleware: LeaderForwardingMiddleware(leadership: leadership))
        }
        if let repository = self.controller.packages {
            router.add(middleware: PackageDownloadMiddleware(repository: repository))
        }
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/metrics") { request, _ -> Response in
            _ = try self.authorize(request, .read)
            // A lease that lapsed shows at once, even while the controller's step still waits on the database
            // (the controller sets 1 only once it took over).
            if let leadership = self.controller.leadership, leadership.leaderEpoch == nil {
                metrics.recordNotLeading()
            }
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.exposition()))
            )
        }
        // With several replicas: ready while the database answers (a replica cut off from it can neither
        // follow the leader nor publish its agents, so new agents should go to another).
        router.get("/readyz") { request, context -> Response in
            if let reason = self.controller.leadership?.notReadyReason {
                return try APIError(.serviceUnavailable, code: "not_ready", message: reason, retryAfterSeconds: 2)
                    .response(from: request, context: context)
            }
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: "ready\n"))
            )
        }
        let v1 = router.group("/v1")
        v1.post("/apply") { request, context -> JSON<ApplyResult> in
            let actor = try self.authorize(request, .write)
            let body: ApplyRequest
            do {
                body = try await request.decode(as: ApplyRequest.self, context: context)
            } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
                throw APIError(.contentTooLarge, code: "too_large", message: "the body is over 16 MiB")
            } catch {
                throw APIError(.badRequest, code: "bad_request", message: "the body is not an apply request: \(error)")
            }
            do {
                let result = try await self.controller.apply(body, actor: actor, remote: self.caller(request, context))
                return JSON(result, status: result.result == "created" ? .created : .ok)
            } catch {
                throw APIError.from(error)
            }
        }
        v1.get("/versions") { request, _ -> JSON<[VersionSummary]> in
            _ = try self.authorize(request, .read)
            let limit = request.uri.queryParameters.get("limit", as: Int.self) ?? 100
            return JSON(try self.store.versions(limit: max(1, min(limit, 1000))).map(VersionSummary.init))
        }
        v1.get("/versions/:number") { request, context -> JSON<VersionDetail> in
            _ = try self.authorize(request, .read)
            guard let number = context.parameters.get("number", as: Int.self) else {
                throw APIError(.badRequest, code: "bad_request", message: "a version is a number")
            }
            guard let version = try self.store.version(number) else {
                throw APIError(.notFound, code: "not_found", message: "no version \(number)")
            }
            return JSON(VersionDetail(version: version, rendered: try self.store.rendered(version: number)))
        }
        v1.get("/rollouts") { request, _ -> JSON<[Rollout]> in
            _ = try self.authorize(request, .read)
            return JSON(try self.store.rollouts(limit: 100))
        }
        v1.get("/rollouts/current") { request, _ -> JSON<RolloutReport> in
            _ = try self.authorize(request, .read)
            guard let report = try await self.controller.currentRollout() else {
                throw APIError(.notFound, code: "not_found", message: "no rollout yet")
            }
            return JSON(report)
        }
        v1.get("/rollouts/:id") { request, context -> JSON<RolloutReport> in
            _ = try self.authorize(request, .read)
            guard let id = context.parameters.get("id", as: Int.self),
                let report = try await self.controller.rollout(id)
            else {
                throw APIError(.notFound, code: "not_found", message: "no such rollout")
            }
            return JSON(report)
        }
        for command in [RolloutEngine.Command.pause, .resume, .abort] {
            v1.post("/rollouts/current/\(command.rawValue)") { request, context -> JSON<Rollout> in
                let actor = try self.authorize(request, .write)
                // `?rollout=ID`: only if that rollout is still the current one (a page showing rollout 4 must
                // not abort rollout 5, which replaced it a moment ago).
                if let expected = request.uri.queryParameters.get("rollout", as: Int.self),
                    let current = try await self.controller.currentRollout()?.rollout.id, current != expected
                {
                    throw APIError(
                        .conflict,
                        code: "conflict",
                        message:
                            "rollout \(expected) is no longer the current one (rollout \(current) is); nothing was done"
                    )
                }
                do {
                    return JSON(
                        try await self.controller.command(command, actor: actor, remote: self.caller(request, context))
                    )
                } catch {
                    throw APIError.from(error)
                }
            }
        }
        struct RollbackRequest: Decodable { var to: Int }
        struct RollbackResult: Encodable, Sendable { var rollout: Int }
        v1.post("/rollback") { request, context -> JSON<RollbackResult> in
            let actor = try self.authorize(request, .write)
            let body: RollbackRequest
            do {
                body = try await request.decode(as: RollbackRequest.self, context: context)
            } catch {
                throw APIError(.badRequest, code: "bad_request", message: "expected {\"to\": VERSION}")
            }
            do {
                let id = try await self.controller.rollback(
                    to: body.to,
                    actor: actor,
                    remote: self.caller(request, context)
                )
                return JSON(RollbackResult(rollout: id), status: .created)
            } catch {
                throw APIError.from(error)
            }
        }
        v1.get("/agents") { request, context -> Response in
            _ = try self.authorize(request, .read)
            let query = request.uri.queryParameters
            // The same filter as the console's fleet page.
            var filter = ConsoleView.FleetQuery()
            filter.tier = query.get("tier") ?? ""
            filter.state = query.get("state") ?? ""
            filter.version = query.get("version") ?? ""
            filter.text = query.get("q") ?? ""
            let agents = await self.controller.agents().filter { ConsolePages.matches($0, filter) }
            let offset = max(0, query.get("offset", as: Int.self) ?? 0)
            let limit = max(0, query.get("limit", as: Int.self) ?? agents.count)
            var response = try JSON(Array(agents.dropFirst(offset).prefix(limit))).response(
                from: request,
                context: context
            )
            response.headers[HTTPField.Name("X-Total-Count")!] = String(agents.count)
            return response
        }
        v1.get("/fleet") { request, _ -> JSON<FleetSummary> in
            _ = try self.authorize(request, .read)
            return JSON(try await self.controller.summary())
        }
        struct RingReport: Encodable, Sendable {
            var current: RingRecord
            var history: [RingRecord]
        }
        v1.get("/ring") { request, _ -> JSON<RingReport> in
            _ = try self.authorize(request, .read)
            let summary = try await self.controller.summary()
            return JSON(RingReport(current: summary.ring, history: try self.store.ringHistory(limit: 50)))
        }
        struct EventPage: Encodable, Sendable {
            var events: [EngineEvent]
            var last: Int
        }
        v1.get("/events") { request, context -> Response in
            _ = try self.authorize(request, .read)
            let after = request.uri.queryParameters.get("after", as: Int.self) ?? 0
            guard request.headers[.accept]?.contains("text/event-stream") == true else {
                let page = await self.controller.events(after: after)
                return try JSON(EventPage(events: page.events, last: page.last)).response(
                    from: request,
                    context: context
                )
            }
            // Server-Sent Events: every event as it happens, `id` = its sequence number (resume with ?after=).
            let controller = self.controller
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                body: .init { writer in
                    let encoder = JSONEncoder()
                    encoder.dateEncodingStrategy = .iso8601
                    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                    var last = after
                    var quiet = 0
                    while !Task.isCancelled {
                        let page = await controller.events(after: last)
                        var text = ""
                        let first = page.last - page.events.count + 1
                        for (offset, event) in page.events.enumerated() {
                            let data = String(decoding: try encoder.encode(event), as: UTF8.self)
                            text += "id: \(first + offset)\nevent: \(event.kind.rawValue)\ndata: \(data)\n\n"
                        }
                        last = page.last
                        quiet = text.isEmpty ? quiet + 1 : 0
                        if quiet >= 60 {
                            text = ": keep-alive\n\n"
                            quiet = 0
                        }
                        if !text.isEmpty { try await writer.write(ByteBuffer(string: text)) }
                        try await Task.sleep(for: .milliseconds(250))
                    }
                    try await writer.finish(nil)
                }
            )
        }
        struct ValidateRequest: Decodable {
            var sources: [SourceText]
            var fleet: String?
        }
        v1.post("/validate") { request, context -> JSON<ValidationReport> in
            _ = try self.authorize(request, .read)
            let body = try await Self.body(
                request,
                context,
                as: ValidateRequest.self,
                expected: #"{"sources": [{"path", "text"}], "fleet": TEXT}"#
            )
            return JSON(await self.controller.validate(sources: body.sources, fleet: body.fleet ?? ""))
        }
        struct EstimateRequest: Decodable {
            var sources: [SourceText]
            var fleet: String?
            var traces: String
        }
        v1.post("/estimate") { request, context -> JSON<EstimateReport> in
            _ = try self.authorize(request, .read)
            let body = try await Self.body(
                request,
                context,
                as: EstimateRequest.self,
                expected: #"{"sources": [{"path", "text"}], "fleet": TEXT, "traces": OTLP_JSON}"#
            )
            do {
                return JSON(
                    try await self.controller.estimate(
                        sources: body.sources,
                        fleet: body.fleet ?? "",
                        traces: body.traces
                    )
                )
            } catch {
                throw APIError.from(error)
            }
        }
        v1.get("/agents/:uid") { request, context -> JSON<AgentDetail> in
            _ = try self.authorize(request, .read)
            let uid = context.parameters.get("uid") ?? ""
            guard let detail = await self.controller.agentDetail(uid) else {
                throw APIError(.notFound, code: "not_found", message: "no agent \(uid)")
            }
            return JSON(detail)
        }
        self.addSecurityRoutes(to: v1)
        self.addPackageRoutes(to: v1)
        v1.get("/audit") { request, _ -> JSON<[AuditEntry]> in
            _ = try self.authorize(request, .admin)
            return JSON(try self.store.audit(limit: 500))
        }
        if console { self.addConsoleRoutes(to: router) }
        return router
    }
}
