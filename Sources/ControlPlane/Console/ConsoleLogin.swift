import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension ControlPlaneAPI {
    /// Only a path on this server, never `//host` or a URL: the sign-in page must not redirect elsewhere.
    static func localPath(_ next: String?) -> String {
        // Browsers drop tabs and newlines from URLs and read `\` as `/`, so `/\t/evil.example` would be
        // `//evil.example`: no control character, space or backslash at all, and one leading slash.
        guard let next, next.hasPrefix("/"), !next.hasPrefix("//"),
            !next.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7f || $0 == "\\" }),
            let components = URLComponents(string: next), components.scheme == nil, components.host == nil
        else { return "/" }
        return next
    }

    /// A form body (`application/x-www-form-urlencoded`), at most 64 KiB.
    static func form<T: Decodable>(_ request: Request, as type: T.Type) async throws -> T {
        let body = try await request.body.collect(upTo: 64 * 1024)
        return try URLEncodedFormDecoder().decode(type, from: String(buffer: body))
    }

    /// A console cookie: HttpOnly, SameSite=Strict, and Secure when the API is served over TLS.
    func consoleCookie(_ name: String, value: String, maxAge: Int, path: String) -> Cookie {
        Cookie(
            name: name,
            value: value,
            maxAge: maxAge,
            path: path,
            secure: self.secureCookies,
            httpOnly: true,
            sameSite: .strict
        )
    }

    func loginPage(next: String, error: String?, status: HTTPResponse.Status = .ok) -> Response {
        let nonce = Array((0..<16).map { _ in UInt8.random(in: 0...255) }).hexString
        let view = ConsoleView.LoginPage(css: ConsoleAssets.cssPath, nonce: nonce, next: next, error: error)
        let cookie = self.consoleCookie(ConsoleSession.loginCookie, value: nonce, maxAge: 3600, path: "/login")
        return self.html(ConsoleAssets.render("login", view), status: status, cookies: [cookie])
    }

    func addLoginRoutes(to router: Router<APIContext>) {
        router.get("/login") { request, _ -> Response in
            let next = Self.localPath(request.uri.queryParameters.get("next"))
            // Nothing to sign in to, or signed in already.
            if self.tokens.isEmpty || (try? self.caller(request))?.byCookie == true { return self.redirect(next) }
            return self.loginPage(next: next, error: nil)
        }
        struct LoginForm: Decodable {
            var token: String
            var nonce: String
            var next: String?
        }
        router.post("/login") { request, _ -> Response in
            guard !self.tokens.isEmpty else { return self.redirect("/") }
            guard let form = try? await Self.form(request, as: LoginForm.self) else {
                return self.loginPage(
                    next: "/",
                    error: "The form was incomplete: enter your API token.",
                    status: .badRequest
                )
            }
            let next = Self.localPath(form.next)
            // The nonce in the form must match the one this browser got with the form (a login CSRF check),
            // and the form must come from this origin.
            let origin = request.headers[.origin]
            let sameOrigin = origin.map { Self.sameOrigin($0, host: request.head.authority) } ?? true
            guard sameOrigin, let cookie = request.cookies[ConsoleSession.loginCookie]?.value,
                ConsoleSession.constantTimeEqual(cookie, form.nonce)
            else {
                return self.loginPage(next: next, error: "The sign-in form expired: try again.", status: .forbidden)
            }
            guard let token = self.tokens[form.token.trimmingCharacters(in: .whitespacesAndNewlines)] else {
                self.controller.metrics.consoleLogin(accepted: false)
                return self.loginPage(next: next, error: "That token is not valid.", status: .unauthorized)
            }
            self.controller.metrics.consoleLogin(accepted: true)
            let session = self.consoleCookie(
                ConsoleSession.cookie,
                value: ConsoleSession.cookieValue(
                    forToken: token.token,
                    expires: Int(Date().timeIntervalSince1970) + ConsoleSession.lifetimeSeconds
                ),
                maxAge: ConsoleSession.lifetimeSeconds,
                path: "/"
            )
            let spent = self.consoleCookie(ConsoleSession.loginCookie, value: "", maxAge: 0, path: "/login")
            return self.redirect(next, cookies: [session, spent])
        }
        struct LogoutForm: Decodable { var csrf: String }
        router.post("/logout") { request, _ -> Response in
            let caller = try self.caller(request)
            let form = try? await Self.form(request, as: LogoutForm.self)
            try self.checkBrowserRequest(request, caller: caller, formToken: form?.csrf)
            let cleared = self.consoleCookie(ConsoleSession.cookie, value: "", maxAge: 0, path: "/")
            return self.redirect(self.tokens.isEmpty ? "/" : "/login", cookies: [cleared])
        }
    }
}
