import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1

/// On a follower, API writes go to the leader: the request as it came (method, path, query, headers with the
/// caller's token, body streamed), the leader's answer as it comes. Reads stay here: they see the database.
/// With no leader known yet the answer is 503 with `Retry-After`.
struct LeaderForwardingMiddleware: RouterMiddleware {
    typealias Context = APIContext

    let leadership: Leadership

    /// Headers that belong to one connection, not to the request.
    static let hopByHop: Set<String> = [
        "host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect",
        "proxy-authorization", "proxy-connection",
    ]

    /// Marks a forwarded request, so a replica that is not the leader (leadership moving) does not send it on.
    static var forwardedHeader: HTTPField.Name { HTTPField.Name("Tailplane-Forwarded-By")! }
    /// The host a forwarded request was sent to (the follower's): the leader checks a browser's `Origin`
    /// against it, so the console works on any replica. Browsers cannot set it on a request to another site
    /// without a CORS preflight, which policyd does not grant.
    static var forwardedHostHeader: HTTPField.Name { HTTPField.Name("Tailplane-Forwarded-Host")! }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        guard request.method != .get, request.method != .head, request.uri.path.hasPrefix("/v1/"),
            case .follower(let leaderAPI) = self.leadership.role
        else {
            return try await next(request, context)
        }
        guard let leaderAPI, request.headers[Self.forwardedHeader] == nil else {
            return try APIError(
                .serviceUnavailable,
                code: "no_leader",
                message: request.headers[Self.forwardedHeader] == nil
                    ? "no replica leads yet: retry in a few seconds"
                    : "leadership is moving between replicas: retry in a few seconds",
                retryAfterSeconds: 2
            ).response(from: request, context: context)
        }
        var forwarded = HTTPClientRequest(url: leaderAPI + request.uri.description)
        forwarded.method = NIOHTTP1.HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers
        where !Self.hopByHop.contains(field.name.canonicalName) && field.name != Self.forwardedHostHeader {
            forwarded.headers.add(name: field.name.rawName, value: field.value)
        }
        forwarded.headers.add(name: Self.forwardedHeader.rawName, value: self.leadership.replica)
        if let host = request.head.authority {
            forwarded.headers.add(name: Self.forwardedHostHeader.rawName, value: host)
        }
        // The leader's audit log names the caller, not this replica.
        forwarded.headers.add(name: "X-Forwarded-For", value: context.remote)
        if let length = request.headers[.contentLength].flatMap(Int64.init) {
            forwarded.body = .stream(request.body, length: .known(length))
        } else {
            forwarded.body = .stream(request.body, length: .unknown)
        }
        let response: HTTPClientResponse
        do {
            response = try await self.leadership.forwarding.execute(forwarded, timeout: .seconds(600))
        } catch {
            // Not `no_leader`: the leader may have acted on the request before the answer was lost, so a
            // client must not repeat it blindly.
            return try APIError(
                .serviceUnavailable,
                code: "leader_unreachable",
                message: "the leader (\(leaderAPI)) did not answer: \(error); check whether it acted, then retry",
                retryAfterSeconds: 2
            ).response(from: request, context: context)
        }
        var headers = HTTPFields()
        for (name, value) in response.headers
        where !Self.hopByHop.contains(name.lowercased()) && name.lowercased() != "content-length" {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        if let length = response.headers.first(name: "content-length").flatMap(Int.init) {
            return Response(
                status: .init(code: Int(response.status.code)),
                headers: headers,
                body: ResponseBody(contentLength: length) { writer in
                    for try await chunk in response.body { try await writer.write(chunk) }
                    try await writer.finish(nil)
                }
            )
        }
        return Response(
            status: .init(code: Int(response.status.code)),
            headers: headers,
            body: ResponseBody(asyncSequence: response.body)
        )
    }
}
