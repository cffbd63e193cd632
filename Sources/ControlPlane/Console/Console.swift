import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Mustache
import NIOCore
import OpAMPServer
import PolicyTesting

/// The console's templates, stylesheet and script, embedded in the binary at build time.
enum ConsoleAssets {
    static let css = String(decoding: PackageResources.console_css, as: UTF8.self)
    static let script = String(decoding: PackageResources.console_js, as: UTF8.self)
    /// Content-addressed paths, so browsers may cache them for good.
    static let cssPath = "/console/static/console.\(Self.digest(Self.css)).css"
    static let scriptPath = "/console/static/console.\(Self.digest(Self.script)).js"

    static let library: MustacheLibrary = {
        let sources: [(String, [UInt8])] = [
            ("layout", PackageResources.layout_mustache),
            ("fleet", PackageResources.fleet_mustache),
            ("fleet-summary", PackageResources.fleet_summary_mustache),
            ("agent", PackageResources.agent_mustache),
            ("diff-section", PackageResources.diff_section_mustache),
            ("policies", PackageResources.policies_mustache),
            ("versions", PackageResources.versions_mustache),
            ("packages", PackageResources.packages_mustache),
            ("version-diff", PackageResources.version_diff_mustache),
            ("rollout", PackageResources.rollout_mustache),
            ("rollout-progress", PackageResources.rollout_progress_mustache),
            ("login", PackageResources.login_mustache),
            ("error", PackageResources.error_mustache),
            ("message", PackageResources.message_mustache),
        ]
        var templates: [String: MustacheTemplate] = [:]
        for (name, bytes) in sources {
            do {
                templates[name] = try MustacheTemplate(string: String(decoding: bytes, as: UTF8.self))
            } catch {
                // The templates are part of the binary and a test renders every one: this cannot ship.
                preconditionFailure("console template \(name) does not parse: \(error)")
            }
        }
        return MustacheLibrary(templates: templates)
    }()

    static func digest(_ text: String) -> String {
        String(Array(SHA256.hash(data: Array(text.utf8))).hexString.prefix(12))
    }

    /// Renders a template; the view is a value of one of ``ConsoleView``'s types.
    static func render(_ template: String, _ view: Any) -> String {
        Self.library.render(view, withTemplate: template) ?? "template \(template) is missing"
    }
}

/// The headers of every console page: no caching of pages with fleet data, no framing, no inline script.
let consoleSecurityHeaders: HTTPFields = [
    .contentSecurityPolicy:
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    .xContentTypeOptions: "nosniff",
    HTTPField.Name("Referrer-Policy")!: "same-origin",
    HTTPField.Name("X-Frame-Options")!: "DENY",
]

extension ControlPlaneAPI {
    /// An HTML response with the console's security headers.
    func html(_ text: String, status: HTTPResponse.Status = .ok, cookies: [Cookie] = []) -> Response {
        var headers = consoleSecurityHeaders
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        var response = Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
        for cookie in cookies { response.setCookie(cookie) }
        return response
    }

    func redirect(_ location: String, cookies: [Cookie] = []) -> Response {
        var headers = consoleSecurityHeaders
        headers[.location] = location
        headers[.cacheControl] = "no-store"
        var response = Response(status: .seeOther, headers: headers)
        for cookie in cookies { response.setCookie(cookie) }
        return response
    }

    func chrome(_ caller: Caller, title: String) -> ConsoleView.Chrome {
        ConsoleView.Chrome(
            title: title,
            user: caller.name,
            role: caller.role.rawValue,
            canWrite: caller.role >= .write,
            signedIn: !self.tokens.isEmpty,
            csrf: caller.csrfToken,
            css: ConsoleAssets.cssPath,
            script: ConsoleAssets.scriptPath
        )
    }

    /// The caller of a console page, or a redirect to the sign-in page.
    func consoleCaller(_ request: Request) -> (caller: Caller?, redirect: Response?) {
        do {
            return (try self.caller(request), nil)
        } catch let error as APIError where error.status == .forbidden {
            return (
                nil,
                self.html(ConsoleAssets.render("message", ["style": "bad", "text": error.message]), status: .forbidden)
            )
        } catch {
            var components = URLComponents()
            components.path = "/login"
            let next = request.uri.description
            if next != "/" { components.queryItems = [URLQueryItem(name: "next", value: next)] }
            return (nil, self.redirect(components.string ?? "/login"))
        }
    }

    /// A console page: signs the caller in (or redirects), renders, and turns errors into an error page.
    func page(
        _ request: Request,
        _ build: @Sendable (Caller) async throws -> (template: String, view: Any)
    ) async -> Response {
        let access = self.consoleCaller(request)
        guard let caller = access.caller else { return access.redirect ?? self.redirect("/login") }
        do {
            let (template, view) = try await build(caller)
            return self.html(ConsoleAssets.render(template, view))
        } catch let error as APIError {
            return self.errorPage(caller, status: error.status, message: error.message)
        } catch {
            return self.errorPage(caller, status: .internalServerError, message: "\(error)")
        }
    }

    func errorPage(_ caller: Caller, status: HTTPResponse.Status, message: String) -> Response {
        let view = ConsoleView.ErrorPage(
            chrome: self.chrome(caller, title: "\(status.code) \(status.reasonPhrase)"),
            status: status.code,
            message: message
        )
        return self.html(ConsoleAssets.render("error", view), status: status)
    }

    /// A fragment the console's script fetches to update part of a page; 401 when the session ended.
    func fragment(
        _ request: Request,
        _ build: @Sendable (Caller) async throws -> (template: String, view: Any)
    ) async -> Response {
        guard let caller = try? self.caller(request) else {
            return self.html("<p>Your session has ended: reload to sign in again.</p>", status: .unauthorized)
        }
        do {
            let (template, view) = try await build(caller)
            return self.html(ConsoleAssets.render(template, view))
        } catch let error as APIError {
            return self.html(
                ConsoleAssets.render("message", ["style": "bad", "text": error.message]),
                status: error.status
            )
        } catch {
            return self.html(
                ConsoleAssets.render("message", ["style": "bad", "text": "\(error)"]),
                status: .internalServerError
            )
        }
    }

    /// The web console's routes (docs/console.md). Pages read what the `/v1` API serves, through the same
    /// queries and the same tokens and roles; every change is made by the page's script calling `/v1`.
    func addConsoleRoutes(to router: Router<APIContext>) {
        router.get("/console/static/:file") { request, context -> Response in
            let file = context.parameters.get("file") ?? ""
            let (text, type): (String, String)
            if "/console/static/\(file)" == ConsoleAssets.cssPath || file == "console.css" {
                (text, type) = (ConsoleAssets.css, "text/css; charset=utf-8")
            } else if "/console/static/\(file)" == ConsoleAssets.scriptPath || file == "console.js" {
                (text, type) = (ConsoleAssets.script, "text/javascript; charset=utf-8")
            } else {
                throw APIError(.notFound, code: "not_found", message: "no such file")
            }
            let immutable =
                "/console/static/\(file)" == ConsoleAssets.cssPath
                || "/console/static/\(file)" == ConsoleAssets.scriptPath
            return Response(
                status: .ok,
                headers: [
                    .contentType: type, .xContentTypeOptions: "nosniff",
                    .cacheControl: immutable ? "public, max-age=31536000, immutable" : "no-cache",
                ],
                body: .init(byteBuffer: ByteBuffer(string: text))
            )
        }
        self.addLoginRoutes(to: router)
        router.get("/") { request, _ in
            await self.page(request) { caller in
                let query = request.uri.queryParameters
                var filter = ConsoleView.FleetQuery()
                filter.tier = query.get("tier") ?? ""
                filter.state = query.get("state") ?? ""
                filter.version = query.get("version") ?? ""
                filter.text = (query.get("q") ?? "").trimmingCharacters(in: .whitespaces)
                filter.page = query.get("page", as: Int.self) ?? 1
                return ("fleet", try await self.fleetPage(caller, filter: filter))
            }
        }
        router.get("/console/fragments/fleet-summary") { request, _ in
            await self.fragment(request) { _ in
                let (agents, summary) = try await self.controller.fleet()
                return ("fleet-summary", ConsolePages.summary(summary, agents: agents, now: Date()))
            }
        }
        router.get("/agents/:uid") { request, context in
            await self.page(request) { caller in
                let uid = context.parameters.get("uid") ?? ""
                guard let detail = await self.controller.agentDetail(uid) else {
                    throw APIError(.notFound, code: "not_found", message: "no agent \(uid) is known to this server")
                }
                return ("agent", self.agentPage(caller, detail))
            }
        }
        router.get("/policies") { request, _ in
            await self.page(request) { caller in ("policies", try await self.policiesPage(caller)) }
        }
        router.get("/versions") { request, _ in
            await self.page(request) { caller in ("versions", try await self.versionsPage(caller)) }
        }
        router.get("/versions/diff") { request, _ in
            await self.page(request) { caller in
                let query = request.uri.queryParameters
                guard let from = query.get("from", as: Int.self), let to = query.get("to", as: Int.self) else {
                    throw APIError(.badRequest, code: "bad_request", message: "choose two versions to compare")
                }
                return ("version-diff", try self.diffPage(caller, from: from, to: to))
            }
        }
        router.get("/packages") { request, _ in
            await self.page(request) { caller in ("packages", try await self.packagesPage(caller)) }
        }
        router.get("/rollout") { request, _ in
            await self.page(request) { caller in ("rollout", try await self.rolloutPage(caller, id: nil)) }
        }
        router.get("/rollout/:id") { request, context in
            await self.page(request) { caller in
                guard let id = context.parameters.get("id", as: Int.self) else {
                    throw APIError(.badRequest, code: "bad_request", message: "a rollout is a number")
                }
                return ("rollout", try await self.rolloutPage(caller, id: id))
            }
        }
        router.get("/console/fragments/rollout/:id") { request, context in
            await self.fragment(request) { caller in
                guard let id = context.parameters.get("id", as: Int.self),
                    let report = try await self.controller.rollout(id)
                else {
                    throw APIError(.notFound, code: "not_found", message: "no such rollout")
                }
                let progress = ConsolePages.progress(
                    report,
                    agents: await self.controller.agents(),
                    canWrite: caller.role >= .write,
                    now: Date()
                )
                return ("rollout-progress", progress)
            }
        }
    }

    // MARK: Pages

    func fleetPage(_ caller: Caller, filter: ConsoleView.FleetQuery) async throws -> ConsoleView.FleetPage {
        let now = Date()
        let (agents, summary) = try await self.controller.fleet()
        let (rows, paging) = ConsolePages.table(agents, query: filter, now: now)
        let versions = Set(agents.compactMap(\.runningVersion)).sorted(by: >)
        var chrome = self.chrome(caller, title: "Fleet")
        chrome.navFleet = true
        return ConsoleView.FleetPage(
            chrome: chrome,
            summary: ConsolePages.summary(summary, agents: agents, now: now),
            query: filter.text,
            tierOptions: ConsolePages.options(
                [AgentTier.loadBalancing, .sampling, .unmanaged].map { ($0.rawValue, ConsolePages.tierLabel($0)) },
                selected: filter.tier,
                all: "every tier"
            ),
            stateOptions: ConsolePages.options(
                ["failed", "unhealthy", "applying", "pending", "applied", "unverified", "offline", "unmanaged"].map {
                    ($0, $0)
                },
                selected: filter.state,
                all: "every state"
            ),
            versionOptions: ConsolePages.options(
                versions.map { ("\($0)", "v\($0)") },
                selected: filter.version,
                all: "every version"
            ),
            rows: rows,
            paging: paging,
            filtered: filter.isFiltered,
            eventsAfter: await self.controller.events(after: Int.max).last
        )
    }

    func agentPage(_ caller: Caller, _ detail: AgentDetail) -> ConsoleView.AgentPage {
        let now = Date()
        let agent = detail.agent
        var chrome = self.chrome(caller, title: "Agent \(agent.hostName ?? agent.instanceUID)")
        chrome.navFleet = true
        let pairs: ([String: String]) -> [ConsoleView.KeyValue] = { attributes in
            attributes.sorted { $0.key < $1.key }.map { ConsoleView.KeyValue(key: $0.key, value: $0.value) }
        }
        let effective = (detail.effectiveConfig ?? []).enumerated().map { index, file in
            ConsoleView.File(path: file.path, text: Self.clipped(file.text), index: index, first: index == 0)
        }
        var diff: ConsoleView.DiffSection?
        var diffTooLarge: String?
        // The supervisor reports the merged config under one name; a plain agent, the file it was given.
        let reported = detail.effectiveConfig.flatMap { files in
            files.first { $0.path == "collector.yaml" } ?? files.first
        }
        if let desired = detail.desiredConfig, detail.effectiveConfig != nil,
            !Self.comparable(desired) || !Self.comparable(reported?.text ?? "")
        {
            // An agent decides how large a config it reports; a diff of two huge texts is for a terminal.
            diffTooLarge =
                "The configs are too large to compare here (over \(Self.diffLimitLines) lines or \(Self.diffLimitBytes / 1024) KiB); compare them with `policyctl agents` and a diff tool."
        } else if let desired = detail.desiredConfig, detail.effectiveConfig != nil {
            diff = ConsolePages.diffSection(
                title: "what it runs against what it should run",
                leftTitle: "effective config" + (reported.map { " (\($0.path))" } ?? " (none reported)"),
                rightTitle: "desired config (v\(agent.desiredVersion.map(String.init) ?? "?"))",
                old: reported?.text ?? "",
                new: desired
            )
        }
        return ConsoleView.AgentPage(
            chrome: chrome,
            row: ConsolePages.row(agent, now: now),
            identifying: pairs(detail.identifyingAttributes),
            nonIdentifying: pairs(detail.nonIdentifyingAttributes),
            capabilities: detail.capabilities.joined(separator: ", "),
            connectedSince: detail.connectedSince.map { "\(ConsolePages.time($0)) (\(ConsolePages.ago($0, now: now)))" }
                ?? "offline",
            lastSeen: "\(ConsolePages.time(agent.lastSeen)) (\(ConsolePages.ago(agent.lastSeen, now: now)))",
            healthySince: detail.healthySince.map(ConsolePages.time),
            healthStatus: ConsoleView.text(detail.healthStatus),
            healthError: ConsoleView.text(agent.healthError),
            configState: agent.configState,
            configError: ConsoleView.text(agent.configError),
            configStatusSince: ConsoleView.text(ConsolePages.time(detail.remoteConfigStatusSince)),
            credential: ConsoleView.text(agent.credential),
            components: detail.components.map {
                ConsoleView.Component(path: $0.path, healthy: $0.healthy, status: $0.status, error: $0.lastError)
            },
            hasComponents: !detail.components.isEmpty,
            effective: effective,
            desiredYAML: detail.desiredConfig.map(Self.clipped),
            diff: diff,
            diffTooLarge: diffTooLarge
        )
    }

    static let diffLimitLines = 5000
    static let diffLimitBytes = 512 * 1024
    /// Shown in full up to 1 MiB.
    static let displayLimitBytes = 1024 * 1024

    static func comparable(_ text: String) -> Bool {
        text.utf8.count <= Self.diffLimitBytes && text.utf8.lazy.filter { $0 == 0x0a }.count < Self.diffLimitLines
    }

    static func clipped(_ text: String) -> String {
        guard text.utf8.count > Self.displayLimitBytes else { return text }
        let head = String(decoding: text.utf8.prefix(Self.displayLimitBytes), as: UTF8.self)
        return head + "\n… (\(text.utf8.count - Self.displayLimitBytes) more bytes not shown)"
    }

    func policiesPage(_ caller: Caller) async throws -> ConsoleView.PoliciesPage {
        var chrome = self.chrome(caller, title: "Policies")
        chrome.navPolicies = true
        let number = try await self.controller.targetVersion() ?? self.store.versions(limit: 1).first?.number
        let version = try number.flatMap { try self.store.version($0) }
        let rendered = try number.map { try self.store.rendered(version: $0) } ?? []
        let sources = version?.sources ?? [SourceText(path: "rules.policy", text: "")]
        return ConsoleView.PoliciesPage(
            chrome: chrome,
            version: version.map { "v\($0.number)" } ?? "none yet",
            hasVersion: version != nil,
            files: sources.enumerated().map { index, source in
                ConsoleView.File(path: source.path, text: source.text, index: index, first: index == 0)
            },
            fleet: version?.fleet ?? "",
            rendered: [AgentTier.loadBalancing, .sampling].compactMap { tier in
                rendered.last { $0.tier == tier }.map {
                    ConsoleView.Rendered(
                        tier: tier.rawValue,
                        label: ConsolePages.tierLabel(tier),
                        yaml: $0.yaml,
                        hash: $0.hash
                    )
                }
            }
        )
    }

    func versionsPage(_ caller: Caller) async throws -> ConsoleView.VersionsPage {
        var chrome = self.chrome(caller, title: "Versions")
        chrome.navVersions = true
        let versions = try self.store.versions(limit: 200)
        let summary = try await self.controller.summary()
        let blocked = summary.rollout.map {
            "rollout \($0) is \(summary.rolloutPhase?.rawValue ?? "active"): abort it or let it finish to roll back"
        }
        let rows = versions.enumerated().map { index, version in
            ConsoleView.VersionRow(
                number: version.number,
                created: ConsolePages.time(version.createdAt),
                author: version.author,
                message: version.message,
                outcome: version.outcome.rawValue,
                outcomeStyle: ConsolePages.style(ofState: version.outcome.rawValue),
                failure: ConsoleView.text(version.failureReason),
                revision: ConsoleView.text(version.gitRevision),
                current: version.number == summary.currentVersion,
                canRollback: caller.role >= .write && blocked == nil && version.number != summary.currentVersion,
                rollbackLabel: version.number < (summary.currentVersion ?? 0)
                    ? "Roll back to v\(version.number)" : "Roll out v\(version.number) again",
                rollbackBody: "{\"to\":\(version.number)}",
                previous: index + 1 < versions.count ? versions[index + 1].number : nil
            )
        }
        let numbers = versions.map(\.number)
        return ConsoleView.VersionsPage(
            chrome: chrome,
            rows: rows,
            options: numbers.enumerated().map { .init(value: "\($1)", label: "v\($1)", selected: $0 == 1) },
            optionsTo: numbers.enumerated().map { .init(value: "\($1)", label: "v\($1)", selected: $0 == 0) },
            rollbackBlocked: caller.role >= .write ? blocked : nil
        )
    }

    /// Packages in the repository, where each runs, and the collectors the fleet reports.
    func packagesPage(_ caller: Caller) async throws -> ConsoleView.PackagesPage {
        var chrome = self.chrome(caller, title: "Packages")
        chrome.navPackages = true
        let agents = await self.controller.agents()
        var collectors: [ConsoleView.CollectorRow] = []
        for tier in [AgentTier.sampling, .loadBalancing] {
            let members = agents.filter { $0.tier == tier && $0.connected }
            guard !members.isEmpty else { continue }
            let counted = Dictionary(grouping: members) { $0.collectorVersion ?? "not reported" }
                .map { "\($0.key) ×\($0.value.count)" }.sorted().joined(separator: ", ")
            collectors.append(
                ConsoleView.CollectorRow(
                    tier: tier == .sampling ? "sampling" : "load-balancing",
                    versions: counted,
                    byHand: members.filter { $0.packageState == "upgrade by hand" }.count
                )
            )
        }
        guard let repository = self.controller.packages else {
            return ConsoleView.PackagesPage(chrome: chrome, repository: false, rows: [], collectors: collectors)
        }
        let summary = try await self.controller.summary()
        let versions = try self.store.versions(limit: 200)
        let running = versions.first { $0.number == summary.currentVersion }
        let blocked = summary.rollout.map {
            "rollout \($0) is \(summary.rolloutPhase?.rawValue ?? "active"): wait for it or abort it to roll a package out"
        }
        var rows: [ConsoleView.PackageRow] = []
        for record in try repository.records() {
            let tiers = [
                ("sampling", running?.packages?.sampling ?? []), ("lb", running?.packages?.loadBalancing ?? []),
            ]
            .filter { $0.1.contains(record.pin) }.map(\.0)
            let newest = versions.first { version in
                guard let pins = version.packages else { return false }
                return pins.sampling.contains(record.pin) || pins.loadBalancing.contains(record.pin)
            }
            let path = "/v1/packages/\(Self.pathSegment(record.name))/\(Self.pathSegment(record.version))/rollout"
            rows.append(
                ConsoleView.PackageRow(
                    name: record.name,
                    version: record.version,
                    kind: record.kind.rawValue,
                    size: Reports.bytes(record.size),
                    sha: String(record.sha256.prefix(16)),
                    uploader: record.uploader,
                    pushed: ConsolePages.time(record.uploadedAt),
                    agents: await self.controller.agentsUsing(record).count,
                    running: tiers.isEmpty ? nil : tiers.joined(separator: ", "),
                    pinnedBy: newest.flatMap { $0.number == running?.number ? nil : "v\($0.number)" },
                    canRollout: caller.role >= .write && blocked == nil && tiers.isEmpty,
                    rolloutURL: path,
                    rolloutLabel: "Roll out \(record.name) \(record.version)"
                )
            )
        }
        return ConsoleView.PackagesPage(
            chrome: chrome,
            repository: true,
            rows: rows,
            collectors: collectors,
            signingKeyFingerprint: repository.publicKeyFingerprint,
            rolloutBlocked: caller.role >= .write ? blocked : nil
        )
    }

    /// A name or version as one URL path segment.
    static func pathSegment(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/")))
            ?? text
    }

    func diffPage(_ caller: Caller, from: Int, to: Int) throws -> ConsoleView.DiffPage {
        var chrome = self.chrome(caller, title: "v\(from) → v\(to)")
        chrome.navVersions = true
        guard let old = try self.store.version(from) else {
            throw APIError(.notFound, code: "not_found", message: "no version \(from)")
        }
        guard let new = try self.store.version(to) else {
            throw APIError(.notFound, code: "not_found", message: "no version \(to)")
        }
        let sections = ConsolePages.versionDiff(
            from: old,
            to: new,
            oldRendered: try self.store.rendered(version: from),
            newRendered: try self.store.rendered(version: to)
        )
        let numbers = try self.store.versions(limit: 200).map(\.number)
        return ConsoleView.DiffPage(
            chrome: chrome,
            from: from,
            to: to,
            options: numbers.map { .init(value: "\($0)", label: "v\($0)", selected: $0 == from) },
            optionsTo: numbers.map { .init(value: "\($0)", label: "v\($0)", selected: $0 == to) },
            sections: sections,
            changedFiles: sections.filter { !$0.same }.count
        )
    }

    func rolloutPage(_ caller: Caller, id: Int?) async throws -> ConsoleView.RolloutPage {
        var chrome = self.chrome(caller, title: id.map { "Rollout \($0)" } ?? "Rollout")
        chrome.navRollout = true
        let report: RolloutReport?
        if let id {
            guard let found = try await self.controller.rollout(id) else {
                throw APIError(.notFound, code: "not_found", message: "no rollout \(id)")
            }
            report = found
        } else {
            report = try await self.controller.currentRollout()
        }
        // The rollout shown above is left out: its line here would not follow the live updates.
        let recent = try self.store.rollouts(limit: 11).filter { $0.id != report?.rollout.id }.prefix(10).map {
            rollout in
            ConsoleView.KeyValue(
                key: "\(rollout.id)",
                value:
                    "\(rollout.from.map { "v\($0)" } ?? "nothing") → v\(rollout.to): \(rollout.phase.rawValue.replacingOccurrences(of: "_", with: " ")), \(ConsolePages.time(rollout.startedAt))"
            )
        }
        let agents = report == nil ? [] : await self.controller.agents()
        return ConsoleView.RolloutPage(
            chrome: chrome,
            progress: report.map {
                ConsolePages.progress($0, agents: agents, canWrite: caller.role >= .write, now: Date())
            },
            recent: recent,
            eventsAfter: await self.controller.events(after: Int.max).last
        )
    }
}
