import Crypto
import Foundation
import HTTPTypes
import Hummingbird

/// Who is calling, and how they proved it.
public struct Caller: Sendable, Hashable {
    /// The token's name (the audit log's actor), or `anonymous` when no tokens are configured.
    public var name: String
    /// The token's role (`admin` when no tokens are configured).
    public var role: APIRole
    /// The session cookie of the console, not a bearer header: state-changing requests then need the
    /// CSRF token.
    public var byCookie: Bool
    /// The CSRF token of this caller's console session.
    public var csrfToken: String
}

/// The console's cookies and the header that carries the CSRF token.
enum ConsoleSession {
    /// The session cookie: a digest of the API token, never the token itself.
    static let cookie = "tailplane_session"
    /// A random value the login form echoes (login CSRF).
    static let loginCookie = "tailplane_login"
    /// State-changing requests made with the session cookie carry the CSRF token here.
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!
    /// A session lasts twelve hours; the token's own revocation ends it sooner.
    static let lifetimeSeconds = 12 * 3600

    /// The cookie value for a token: `EXPIRY.MAC`, the expiry in Unix seconds and an HMAC of it keyed with the
    /// token. The browser never holds the bearer secret; the server keeps no session table (any replica, any
    /// restart accepts it) and refuses it after the expiry whatever the browser does with `Max-Age`.
    static func cookieValue(forToken token: String, expires: Int) -> String {
        "\(expires).\(Self.sessionMAC(token: token, expires: expires))"
    }

    static func sessionMAC(token: String, expires: Int) -> String {
        let key = SymmetricKey(data: Array(token.utf8))
        return Array(HMAC<SHA256>.authenticationCode(for: Array("tailplane-session-v1:\(expires)".utf8), using: key))
            .hexString
    }

    /// The token a session cookie was made for, if it is one of `tokens` and has not expired.
    static func token(ofCookie value: String, tokens: [APIToken], now: Date) -> APIToken? {
        let parts = value.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let expires = Int(parts[0]), Double(expires) > now.timeIntervalSince1970,
            Double(expires) <= now.timeIntervalSince1970 + Double(Self.lifetimeSeconds) + 60
        else { return nil }
        let mac = String(parts[1])
        // Every token is tried, in full, so the time taken says nothing about which one came close.
        var found: APIToken?
        for token in tokens where Self.constantTimeEqual(mac, Self.sessionMAC(token: token.token, expires: expires)) {
            found = token
        }
        return found
    }

    /// Without tokens the API only answers requests addressed to this machine by a loopback name: a page
    /// elsewhere that rebinds its DNS name to 127.0.0.1 (DNS rebinding) then gets nothing, not even a page
    /// with a CSRF token.
    static func isLoopbackHost(_ authority: String?) -> Bool {
        guard let authority else { return true }  // HTTP/1.0 without Host: not a browser
        var host = authority.lowercased()
        if host.hasPrefix("[") {
            host = String(host.dropFirst().prefix { $0 != "]" })
        } else if let colon = host.lastIndex(of: ":") {
            host = String(host[..<colon])
        }
        return host == "localhost" || host == "127.0.0.1" || host == "::1" || host.hasSuffix(".localhost")
    }

    /// The CSRF token for a secret (the API token, or the server's own key when there are no tokens).
    static func csrfToken(secret: SymmetricKey) -> String {
        Array(HMAC<SHA256>.authenticationCode(for: Array("tailplane-csrf-v1".utf8), using: secret)).hexString
    }

    /// Equal strings, compared in time that does not depend on where they differ.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }
}

extension HTTPRequest.Method {
    /// GET, HEAD and OPTIONS change nothing; everything else needs CSRF protection when a browser sends it.
    var isSafe: Bool { self == .get || self == .head || self == .options }
}

extension ControlPlaneAPI {
    /// The caller of a request: a bearer token, the console's session cookie, or anonymous when no tokens are
    /// configured. Throws 401 when tokens are configured and neither credential is valid.
    func caller(_ request: Request) throws -> Caller {
        if let header = request.headers[.authorization] {
            guard header.lowercased().hasPrefix("bearer "),
                let token = self.tokens[String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)]
            else {
                throw APIError(.unauthorized, code: "unauthorized", message: "a bearer token is required")
            }
            return self.caller(token, byCookie: false)
        }
        if let session = request.cookies[ConsoleSession.cookie]?.value,
            let token = ConsoleSession.token(ofCookie: session, tokens: self.tokenList, now: Date())
        {
            return self.caller(token, byCookie: true)
        }
        guard self.tokens.isEmpty else {
            throw APIError(.unauthorized, code: "unauthorized", message: "a bearer token is required")
        }
        guard ConsoleSession.isLoopbackHost(request.head.authority) else {
            throw APIError(
                .forbidden,
                code: "forbidden",
                message:
                    "without API tokens policyd answers only requests addressed to localhost, 127.0.0.1 or [::1] (configure tokens to reach it by another name)"
            )
        }
        return Caller(
            name: "anonymous",
            role: .admin,
            byCookie: false,
            csrfToken: ConsoleSession.csrfToken(secret: self.anonymousKey)
        )
    }

    private func caller(_ token: APIToken, byCookie: Bool) -> Caller {
        Caller(
            name: token.name,
            role: token.role,
            byCookie: byCookie,
            csrfToken: ConsoleSession.csrfToken(secret: SymmetricKey(data: Array(token.token.utf8)))
        )
    }

    /// Who may call: the caller's name. Refuses a role below `role` (403), and a state-changing request from
    /// a browser (the session cookie, or an `Origin` header) without the caller's CSRF token or from another
    /// origin (403).
    func authorize(_ request: Request, _ role: APIRole) throws -> String {
        let caller = try self.caller(request)
        guard caller.role >= role else {
            throw APIError(
                .forbidden,
                code: "forbidden",
                message: "token `\(caller.name)` has role \(caller.role.rawValue); this needs \(role.rawValue)"
            )
        }
        if !request.method.isSafe { try self.checkBrowserRequest(request, caller: caller) }
        return caller.name
    }

    /// A state-changing request from a browser must come from this origin and carry the CSRF token. Bearer
    /// requests are exempt: a page on another site cannot make a browser send a bearer header.
    /// `formToken` is the CSRF token of a plain HTML form (which cannot send headers).
    func checkBrowserRequest(_ request: Request, caller: Caller, formToken: String? = nil) throws {
        let origin = request.headers[.origin]
        // A console write a follower forwarded here was sent to the follower: the origin must be that host.
        let host =
            request.headers[LeaderForwardingMiddleware.forwardedHeader] != nil
            ? request.headers[LeaderForwardingMiddleware.forwardedHostHeader] ?? request.head.authority
            : request.head.authority
        if let origin, !Self.sameOrigin(origin, host: host) {
            throw APIError(
                .forbidden,
                code: "forbidden",
                message: "a request from another origin (\(origin)) is refused"
            )
        }
        let fromBrowser = caller.byCookie || (origin != nil && request.headers[.authorization] == nil)
        guard fromBrowser else { return }
        guard let sent = formToken ?? request.headers[ConsoleSession.csrfHeader],
            ConsoleSession.constantTimeEqual(sent, caller.csrfToken)
        else {
            throw APIError(
                .forbidden,
                code: "forbidden",
                message: "the request has no valid CSRF token (reload the page and try again)"
            )
        }
    }

    /// An `Origin` (`scheme://host[:port]`) names the host the request was sent to.
    static func sameOrigin(_ origin: String, host: String?) -> Bool {
        guard let host, let components = URLComponents(string: origin), let originHost = components.host else {
            return false
        }
        let bracketed = originHost.contains(":") && !originHost.hasPrefix("[") ? "[\(originHost)]" : originHost
        let originAuthority = components.port.map { "\(bracketed):\($0)" } ?? bracketed
        return originAuthority.lowercased() == host.lowercased()
    }
}
