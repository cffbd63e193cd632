import Foundation
import PolicyEngine
import Yams

/// Reads `fleet.yaml` into a ``Fleet``, reporting every problem with its line and column.
public enum FleetParser {
    /// Parses a fleet description. An empty document is the default fleet.
    /// - Parameters:
    ///   - text: the YAML text.
    ///   - path: shown in diagnostics.
    /// - Returns: the fleet, or every problem found.
    public static func parse(_ text: String, path: String = "fleet.yaml") -> Result<Fleet, FleetProblems> {
        let reader = FleetReader(path: path)
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            return .failure(FleetProblems(diagnostics: [reader.yamlError(error)]))
        } catch {
            return .failure(
                FleetProblems(diagnostics: [FleetDiagnostic(code: .invalidYAML, message: "\(error)", file: path)])
            )
        }
        var fleet = Fleet()
        if let root { reader.readFleet(root, into: &fleet) }
        if reader.diagnostics.isEmpty { return .success(fleet) }
        return .failure(FleetProblems(diagnostics: reader.diagnostics))
    }
}

/// Every problem found in one fleet description or rendering.
public struct FleetProblems: Error, Sendable, CustomStringConvertible {
    /// The problems, in file order.
    public var diagnostics: [FleetDiagnostic]

    /// Creates a list.
    public init(diagnostics: [FleetDiagnostic]) {
        self.diagnostics = diagnostics
    }

    public var description: String { self.diagnostics.map(\.description).joined(separator: "\n") }
}

/// Walks the YAML tree against the fleet schema. A class so nested readers share one diagnostic list.
final class FleetReader {
    let path: String
    private(set) var diagnostics: [FleetDiagnostic] = []

    init(path: String) {
        self.path = path
    }

    func yamlError(_ error: YamlError) -> FleetDiagnostic {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _):
            return FleetDiagnostic(
                code: .invalidYAML,
                message: "invalid YAML: \(problem)",
                file: self.path,
                line: mark.line,
                column: mark.column
            )
        default:
            return FleetDiagnostic(
                code: .invalidYAML,
                message: "invalid YAML: \(error)",
                file: self.path,
                line: 1,
                column: 1
            )
        }
    }

    func report(_ code: FleetDiagnostic.Code, _ message: String, at node: Node?, suggestion: String? = nil) {
        let mark = node?.mark
        self.diagnostics.append(
            FleetDiagnostic(
                code: code,
                message: message,
                file: self.path,
                line: mark?.line ?? 1,
                column: mark?.column ?? 1,
                suggestion: suggestion
            )
        )
    }

    // MARK: Primitive readers

    /// The fields of a mapping; unknown keys are reported with a suggestion.
    func fields(_ node: Node, _ context: String, allowed: [String]) -> [String: Node]? {
        guard case .mapping(let mapping) = node else {
            if case .scalar(let scalar) = node, scalar.string.isEmpty, scalar.tag.description.hasSuffix("null") {
                return [:]
            }
            self.report(.wrongType, "`\(context)` must be a mapping of keys to values", at: node)
            return nil
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else {
                self.report(.wrongType, "keys in `\(context)` must be strings", at: keyNode)
                continue
            }
            guard allowed.contains(key) else {
                let suggestion =
                    Spelling.closest(to: key, in: allowed).map { "did you mean `\($0)`?" }
                    ?? "`\(context)` takes " + allowed.map { "`\($0)`" }.joined(separator: ", ")
                self.report(.unknownKey, "unknown key `\(key)` in `\(context)`", at: keyNode, suggestion: suggestion)
                continue
            }
            result[key] = value
        }
        return result
    }

    func string(_ node: Node?, _ what: String) -> String? {
        guard let node else { return nil }
        guard case .scalar(let scalar) = node else {
            self.report(.wrongType, "`\(what)` must be a string", at: node)
            return nil
        }
        return scalar.string
    }

    func int(_ node: Node?, _ what: String, range: ClosedRange<Int> = 0...Int.max) -> Int? {
        guard let node else { return nil }
        guard case .scalar = node, let value = node.int else {
            self.report(.wrongType, "`\(what)` must be a whole number", at: node)
            return nil
        }
        guard range.contains(value) else {
            self.report(
                .invalidValue,
                "`\(what)` must be between \(range.lowerBound) and \(range.upperBound), not \(value)",
                at: node
            )
            return nil
        }
        return value
    }

    func bool(_ node: Node?, _ what: String) -> Bool? {
        guard let node else { return nil }
        guard case .scalar = node, let value = node.bool else {
            self.report(.wrongType, "`\(what)` must be `true` or `false`", at: node)
            return nil
        }
        return value
    }

    /// `500ms`, `10s`, `5m`, `1h` in milliseconds.
    func duration(_ node: Node?, _ what: String) -> Int64? {
        guard let text = self.string(node, what) else { return nil }
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (unit, factor) in units where text.hasSuffix(unit) {
            let number = text.dropLast(unit.count)
            if let value = Int64(number), value >= 0, !(unit == "m" && number.hasSuffix("m")) {
                // A number of seconds past Int64's milliseconds once trapped here (found by fuzz-fleet-render).
                let (milliseconds, overflow) = value.multipliedReportingOverflow(by: factor)
                guard !overflow, milliseconds <= 10 * 365 * 86_400_000 else {
                    self.report(
                        .invalidValue,
                        "`\(what)` is longer than ten years (`\(text)`)",
                        at: node,
                        suggestion: "write a duration such as `10s` or `5m`"
                    )
                    return nil
                }
                return milliseconds
            }
        }
        self.report(.invalidValue, "`\(what)` must be a duration such as `10s` or `500ms`, not `\(text)`", at: node)
        return nil
    }

    func oneOf(_ node: Node?, _ what: String, _ choices: [String]) -> String? {
        guard let text = self.string(node, what) else { return nil }
        guard choices.contains(text) else {
            let suggestion =
                Spelling.closest(to: text, in: choices).map { "did you mean `\($0)`?" }
                ?? "choose " + choices.map { "`\($0)`" }.joined(separator: ", ")
            self.report(.invalidValue, "`\(what)` cannot be `\(text)`", at: node, suggestion: suggestion)
            return nil
        }
        return text
    }

    // MARK: The fleet

    static let topLevelKeys = [
        "collector", "tiers", "samplers", "load_balancing", "backends", "receivers", "memory_limiter", "batch",
        "telemetry", "rollout", "packages",
    ]

    func readFleet(_ root: Node, into fleet: inout Fleet) {
        guard let top = self.fields(root, "fleet", allowed: Self.topLevelKeys) else { return }
        if let node = top["collector"],
            let collector = self.fields(node, "collector", allowed: ["version", "load_balancing_exporter"])
        {
            if let versionNode = collector["version"], let text = self.string(versionNode, "collector.version") {
                if let version = CollectorVersion(text) {
                    fleet.collectorVersion = version
                } else {
                    self.report(
                        .invalidValue,
                        "`collector.version` must look like `0.130` or `v0.130.0`, not `\(text)`",
                        at: versionNode
                    )
                }
            }
            if let type = self.oneOf(
                collector["load_balancing_exporter"],
                "collector.load_balancing_exporter",
                ["loadbalancing", "load_balancing"]
            ) {
                fleet.loadBalancingExporterType = type
            }
        }
        if let node = top["tiers"], let tiers = self.fields(node, "tiers", allowed: ["load_balancing", "sampling"]) {
            if let tier = tiers["load_balancing"].flatMap({ self.tier($0, "tiers.load_balancing") }) {
                fleet.loadBalancingTier = tier
            }
            if let tier = tiers["sampling"].flatMap({ self.tier($0, "tiers.sampling") }) { fleet.samplingTier = tier }
            if fleet.loadBalancingTier == fleet.samplingTier {
                self.report(
                    .invalidValue,
                    "both tiers are recognised by the same attribute value",
                    at: node,
                    suggestion: "give the tiers different `value`s"
                )
            }
        }
        if let node = top["packages"] { self.readPackages(node, into: &fleet.packages) }
        if let node = top["samplers"] { self.readSamplers(node, into: &fleet) }
        if let node = top["load_balancing"] { self.readLoadBalancing(node, into: &fleet.loadBalancing) }
        if let node = top["backends"] { self.readBackends(node, into: &fleet) }
        if let node = top["receivers"],
            let receivers = self.fields(node, "receivers", allowed: ["grpc", "http", "max_recv_msg_size_mib"])
        {
            if let grpc = receivers["grpc"] {
                fleet.receivers.grpcEndpoint = self.optionalEndpoint(grpc, "receivers.grpc")
            }
            if let http = receivers["http"] {
                fleet.receivers.httpEndpoint = self.optionalEndpoint(http, "receivers.http")
            }
            if let size = self.int(
                receivers["max_recv_msg_size_mib"],
                "receivers.max_recv_msg_size_mib",
                range: 1...2048
            ) {
                fleet.receivers.maxRecvMsgSizeMiB = size
            }
            if fleet.receivers.grpcEndpoint == nil {
                self.report(
                    .invalidValue,
                    "the sampling tier needs the gRPC receiver: the load balancers send OTLP/gRPC",
                    at: node
                )
            }
        }
        if let node = top["memory_limiter"],
            let limiter = self.fields(
                node,
                "memory_limiter",
                allowed: ["check_interval", "limit_percentage", "spike_limit_percentage"]
            )
        {
            if let value = self.duration(limiter["check_interval"], "memory_limiter.check_interval") {
                fleet.memoryLimiter.checkIntervalMs = value
            }
            if let value = self.int(limiter["limit_percentage"], "memory_limiter.limit_percentage", range: 1...100) {
                fleet.memoryLimiter.limitPercentage = value
            }
            if let value = self.int(
                limiter["spike_limit_percentage"],
                "memory_limiter.spike_limit_percentage",
                range: 0...100
            ) {
                fleet.memoryLimiter.spikeLimitPercentage = value
            }
            if fleet.memoryLimiter.spikeLimitPercentage >= fleet.memoryLimiter.limitPercentage {
                self.report(.invalidValue, "`spike_limit_percentage` must be below `limit_percentage`", at: node)
            }
        }
        if let node = top["batch"],
            let batch = self.fields(node, "batch", allowed: ["timeout", "send_batch_size", "send_batch_max_size"])
        {
            if let value = self.duration(batch["timeout"], "batch.timeout") { fleet.batch.timeoutMs = value }
            if let value = self.int(batch["send_batch_size"], "batch.send_batch_size", range: 1...1_000_000) {
                fleet.batch.sendBatchSize = value
            }
            if let value = self.int(batch["send_batch_max_size"], "batch.send_batch_max_size", range: 1...1_000_000) {
                fleet.batch.sendBatchMaxSize = value
                if value < fleet.batch.sendBatchSize {
                    self.report(
                        .invalidValue,
                        "`send_batch_max_size` must be at least `send_batch_size`",
                        at: batch["send_batch_max_size"]
                    )
                }
            }
        }
        if let node = top["telemetry"],
            let telemetry = self.fields(
                node,
                "telemetry",
                allowed: ["logs_level", "metrics_level", "metrics_port", "destinations"]
            )
        {
            if let destinations = telemetry["destinations"],
                let kinds = self.fields(destinations, "telemetry.destinations", allowed: ["metrics", "traces", "logs"])
            {
                for (kind, value) in kinds {
                    if let destination = self.readDestination(value, "telemetry.destinations.\(kind)") {
                        fleet.telemetry.destinations[kind] = destination
                    }
                }
            }
            if let level = self.oneOf(
                telemetry["logs_level"],
                "telemetry.logs_level",
                ["debug", "info", "warn", "error"]
            ) {
                fleet.telemetry.logsLevel = level
            }
            if let level = self.oneOf(
                telemetry["metrics_level"],
                "telemetry.metrics_level",
                ["none", "basic", "normal", "detailed"]
            ) {
                fleet.telemetry.metricsLevel = level
            }
            if let port = telemetry["metrics_port"] {
                if case .scalar(let scalar) = port, scalar.string == "none" {
                    fleet.telemetry.metricsPort = nil
                } else if let value = self.int(port, "telemetry.metrics_port", range: 1...65535) {
                    fleet.telemetry.metricsPort = value
                }
            }
        }
        if let node = top["rollout"] { self.readRollout(node, into: &fleet.rollout) }
    }

    /// Where collectors send their own telemetry (offered over OpAMP as `own_metrics`…).
    private func readDestination(_ node: Node, _ context: String) -> TelemetryDestination? {
        guard
            let fields = self.fields(
                node,
                context,
                allowed: ["endpoint", "headers", "ca_file", "insecure_skip_verify"]
            )
        else { return nil }
        guard let endpoint = self.string(fields["endpoint"], "\(context).endpoint") else {
            self.report(.missingKey, "`\(context)` needs an `endpoint` (a full OTLP/HTTP URL)", at: node)
            return nil
        }
        let lower = endpoint.lowercased()
        guard (lower.hasPrefix("http://") || lower.hasPrefix("https://")), endpoint.count > 8 else {
            self.report(
                .invalidValue,
                "`\(context).endpoint` must be an OTLP/HTTP URL such as `https://otel.example:4318/v1/metrics`",
                at: fields["endpoint"]
            )
            return nil
        }
        var destination = TelemetryDestination(endpoint: endpoint)
        if let headers = fields["headers"] {
            destination.headers = self.readHeaders(headers, "\(context).headers", holder: "policyd")
        }
        destination.caFile = self.string(fields["ca_file"], "\(context).ca_file")
        destination.insecureSkipVerify =
            self.bool(fields["insecure_skip_verify"], "\(context).insecure_skip_verify") ?? false
        return destination
    }

    private func optionalEndpoint(_ node: Node, _ what: String) -> String? {
        if case .scalar(let scalar) = node, scalar.string == "none" || scalar.string.isEmpty { return nil }
        guard let text = self.string(node, what) else { return nil }
        if !text.contains(":") {
            self.report(
                .invalidValue,
                "`\(what)` must be `host:port`, not `\(text)`",
                at: node,
                suggestion: "write `0.0.0.0:4317`"
            )
        }
        return text
    }

    private func tier(_ node: Node, _ context: String) -> TierMatch? {
        guard let fields = self.fields(node, context, allowed: ["attribute", "value"]) else { return nil }
        guard let attribute = self.string(fields["attribute"], "\(context).attribute"), !attribute.isEmpty,
            let value = self.string(fields["value"], "\(context).value"), !value.isEmpty
        else {
            self.report(
                .missingKey,
                "`\(context)` needs `attribute` and `value`",
                at: node,
                suggestion: "write `{attribute: service.name, value: otelcol-sampler}`"
            )
            return nil
        }
        return TierMatch(attribute: attribute, value: value)
    }

    /// `packages: {load_balancing: {NAME: VERSION}, sampling: {…}}`.
    private func readPackages(_ node: Node, into pins: inout PackagePins) {
        guard let tiers = self.fields(node, "packages", allowed: ["load_balancing", "sampling"]) else { return }
        for (key, tier) in [("load_balancing", Tier.loadBalancing), ("sampling", .sampling)] {
            guard let tierNode = tiers[key] else { continue }
            let context = "packages.\(key)"
            guard case .mapping(let mapping) = tierNode else {
                if case .scalar(let scalar) = tierNode, scalar.string.isEmpty || scalar.string == "null" {
                    pins[tier] = [:]  // declared empty: no packages managed for the tier
                } else {
                    self.report(.wrongType, "`\(context)` maps package names to versions", at: tierNode)
                }
                continue
            }
            var versions: [String: String] = [:]
            for (nameNode, versionNode) in mapping {
                guard let name = nameNode.string, let version = self.string(versionNode, "\(context).\(name)") else {
                    continue
                }
                let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
                if name.isEmpty || name.count > 100 || !name.allSatisfy(allowed.contains) {
                    self.report(
                        .invalidValue,
                        "`\(name)` is not a package name",
                        at: nameNode,
                        suggestion: "package names use letters, digits, `.`, `_` and `-`, as in `otelcol-contrib`"
                    )
                    continue
                }
                if version.isEmpty || version.count > 100 || !version.allSatisfy(allowed.union("+").contains) {
                    self.report(
                        .invalidValue,
                        "`\(version)` is not a package version",
                        at: versionNode,
                        suggestion: "write the version as published, for example `0.150.0`"
                    )
                    continue
                }
                versions[name] = version
            }
            pins[tier] = versions
        }
    }

    private func readSamplers(_ node: Node, into fleet: inout Fleet) {
        guard let fields = self.fields(node, "samplers", allowed: ["endpoint", "resolver", "dns", "k8s"]) else {
            return
        }
        if let templateNode = fields["endpoint"], let text = self.string(templateNode, "samplers.endpoint") {
            let template = EndpointTemplate(template: text)
            let parts = EndpointTemplate.parse(text)
            if template.placeholders.isEmpty {
                self.report(
                    .invalidTemplate,
                    "`samplers.endpoint` has no `${attribute}` placeholder, so every sampler would get the same ring entry",
                    at: templateNode,
                    suggestion: "write `${host.name}:4317`"
                )
            } else if parts.contains(where: { if case .text(let t) = $0 { t.contains("${") } else { false } })
                || template.placeholders.contains(where: \.isEmpty)
            {
                self.report(.invalidTemplate, "`samplers.endpoint` has an unclosed or empty `${…}`", at: templateNode)
            } else {
                fleet.samplerEndpoint = template
            }
        }
        let kind =
            self.oneOf(fields["resolver"], "samplers.resolver", ["static", "dns", "k8s"])
            ?? (fields["resolver"] == nil ? nil : "")
        switch kind {
        case "dns"?:
            guard let dnsNode = fields["dns"],
                let dns = self.fields(dnsNode, "samplers.dns", allowed: ["hostname", "port", "interval", "timeout"]),
                let hostname = self.string(dns["hostname"], "samplers.dns.hostname")
            else {
                self.report(
                    .missingKey,
                    "`resolver: dns` needs `dns: {hostname: …}`",
                    at: fields["resolver"],
                    suggestion: "add `dns: {hostname: samplers.observability.svc.cluster.local, port: 4317}`"
                )
                return
            }
            fleet.resolver = .dns(
                DNSResolver(
                    hostname: hostname,
                    port: self.int(dns["port"], "samplers.dns.port", range: 1...65535),
                    intervalMs: self.duration(dns["interval"], "samplers.dns.interval"),
                    timeoutMs: self.duration(dns["timeout"], "samplers.dns.timeout")
                )
            )
        case "k8s"?:
            guard let k8sNode = fields["k8s"],
                let k8s = self.fields(
                    k8sNode,
                    "samplers.k8s",
                    allowed: ["service", "ports", "timeout", "return_hostnames"]
                ),
                let service = self.string(k8s["service"], "samplers.k8s.service")
            else {
                self.report(
                    .missingKey,
                    "`resolver: k8s` needs `k8s: {service: …}`",
                    at: fields["resolver"],
                    suggestion: "add `k8s: {service: samplers.observability, ports: [4317]}`"
                )
                return
            }
            var ports = [4317]
            if let portsNode = k8s["ports"] {
                if case .sequence(let sequence) = portsNode {
                    ports = sequence.compactMap { self.int($0, "samplers.k8s.ports", range: 1...65535) }
                } else {
                    self.report(
                        .wrongType,
                        "`samplers.k8s.ports` must be a list",
                        at: portsNode,
                        suggestion: "write `ports: [4317]`"
                    )
                }
            }
            fleet.resolver = .k8s(
                KubernetesResolver(
                    service: service,
                    ports: ports,
                    timeoutMs: self.duration(k8s["timeout"], "samplers.k8s.timeout"),
                    returnHostnames: self.bool(k8s["return_hostnames"], "samplers.k8s.return_hostnames")
                )
            )
        default:
            for key in ["dns", "k8s"] where fields[key] != nil {
                self.report(
                    .invalidValue,
                    "`samplers.\(key)` is only read with `resolver: \(key)`",
                    at: fields[key],
                    suggestion: "set `resolver: \(key)` or remove `\(key)`"
                )
            }
        }
    }

    private func readTLS(_ node: Node, _ context: String) -> TLSSettings? {
        guard
            let fields = self.fields(
                node,
                context,
                allowed: [
                    "insecure", "insecure_skip_verify", "ca_file", "cert_file", "key_file", "server_name_override",
                ]
            )
        else {
            return nil
        }
        var tls = TLSSettings()
        tls.insecure = self.bool(fields["insecure"], "\(context).insecure") ?? false
        tls.insecureSkipVerify = self.bool(fields["insecure_skip_verify"], "\(context).insecure_skip_verify")
        tls.caFile = self.string(fields["ca_file"], "\(context).ca_file")
        tls.certFile = self.string(fields["cert_file"], "\(context).cert_file")
        tls.keyFile = self.string(fields["key_file"], "\(context).key_file")
        tls.serverNameOverride = self.string(fields["server_name_override"], "\(context).server_name_override")
        if (tls.certFile == nil) != (tls.keyFile == nil) {
            self.report(.missingKey, "`\(context)` needs both `cert_file` and `key_file` for mutual TLS", at: node)
        }
        if tls.insecure, tls.caFile != nil || tls.certFile != nil {
            self.report(.invalidValue, "`\(context)` sets certificates but `insecure: true` turns TLS off", at: node)
        }
        return tls
    }

    private func readRetry(_ node: Node, _ context: String, into retry: inout RetrySettings) {
        guard
            let fields = self.fields(
                node,
                context,
                allowed: ["enabled", "initial_interval", "max_interval", "max_elapsed_time"]
            )
        else { return }
        if let value = self.bool(fields["enabled"], "\(context).enabled") { retry.enabled = value }
        if let value = self.duration(fields["initial_interval"], "\(context).initial_interval") {
            retry.initialIntervalMs = value
        }
        if let value = self.duration(fields["max_interval"], "\(context).max_interval") { retry.maxIntervalMs = value }
        if let value = self.duration(fields["max_elapsed_time"], "\(context).max_elapsed_time") {
            retry.maxElapsedTimeMs = value
        }
    }

    private func readQueue(_ node: Node, _ context: String, into queue: inout QueueSettings) {
        guard let fields = self.fields(node, context, allowed: ["enabled", "num_consumers", "queue_size"]) else {
            return
        }
        if let value = self.bool(fields["enabled"], "\(context).enabled") { queue.enabled = value }
        if let value = self.int(fields["num_consumers"], "\(context).num_consumers", range: 1...1000) {
            queue.numConsumers = value
        }
        if let value = self.int(fields["queue_size"], "\(context).queue_size", range: 1...10_000_000) {
            queue.queueSize = value
        }
    }

    static let compressions = ["gzip", "zstd", "snappy", "none"]

    private func readLoadBalancing(_ node: Node, into settings: inout LoadBalancingSettings) {
        guard
            let fields = self.fields(
                node,
                "load_balancing",
                allowed: ["timeout", "compression", "tls", "retry", "queue"]
            )
        else { return }
        if let value = self.duration(fields["timeout"], "load_balancing.timeout") { settings.timeoutMs = value }
        if let value = self.oneOf(fields["compression"], "load_balancing.compression", Self.compressions) {
            settings.compression = value
        }
        if let tlsNode = fields["tls"], let tls = self.readTLS(tlsNode, "load_balancing.tls") { settings.tls = tls }
        if let retry = fields["retry"] { self.readRetry(retry, "load_balancing.retry", into: &settings.retry) }
        if let queue = fields["queue"] { self.readQueue(queue, "load_balancing.queue", into: &settings.queue) }
    }

    /// Header names that carry credentials; their values must come from the environment.
    static func looksSecret(_ header: String) -> Bool {
        let lowered = header.lowercased()
        return ["authorization", "token", "key", "secret", "password", "credential", "cookie", "signature"].contains {
            lowered.contains($0)
        }
    }

    private func readBackends(_ node: Node, into fleet: inout Fleet) {
        guard case .sequence(let sequence) = node else {
            self.report(
                .wrongType,
                "`backends` must be a list",
                at: node,
                suggestion: "write `backends:` followed by `- name: …` items"
            )
            return
        }
        var backends: [Backend] = []
        var seen: [String: Node] = [:]
        let allowed = ["name", "protocol", "endpoint", "tls", "headers", "compression", "timeout", "retry", "queue"]
        for item in sequence {
            guard let fields = self.fields(item, "backends[]", allowed: allowed) else { continue }
            guard let name = self.string(fields["name"], "backends[].name"),
                let endpoint = self.string(fields["endpoint"], "backends[].endpoint")
            else {
                self.report(.missingKey, "every backend needs `name` and `endpoint`", at: item)
                continue
            }
            if name.isEmpty || !name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) {
                self.report(
                    .invalidValue,
                    "backend name `\(name)` may hold only letters, digits, `_` and `-`",
                    at: fields["name"]
                )
                continue
            }
            if seen[name] != nil {
                self.report(.duplicateBackend, "backend `\(name)` is defined twice", at: fields["name"])
                continue
            }
            seen[name] = item
            // The current collector names (`otlp_grpc`, `otlp_http`, v0.144) are accepted too; the renderer
            // writes whichever name the target version knows.
            let proto =
                self.oneOf(fields["protocol"], "backends[].protocol", ["otlp", "otlphttp", "otlp_grpc", "otlp_http"])
                .map { $0 == "otlp_grpc" ? .otlp : $0 == "otlp_http" ? .otlphttp : BackendProtocol(rawValue: $0)! }
                ?? .otlp
            var backend = Backend(name: name, protocol: proto, endpoint: endpoint)
            if proto == .otlphttp, !(endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://")) {
                self.report(
                    .invalidValue,
                    "an `otlphttp` endpoint is a URL",
                    at: fields["endpoint"],
                    suggestion: "write `https://\(endpoint)`"
                )
            }
            if proto == .otlp, endpoint.contains("://") {
                self.report(
                    .invalidValue,
                    "an `otlp` (gRPC) endpoint is `host:port`, not a URL",
                    at: fields["endpoint"],
                    suggestion: "write the host and port only, or use `protocol: otlphttp`"
                )
            }
            if let tlsNode = fields["tls"], let tls = self.readTLS(tlsNode, "backends[\(name)].tls") {
                backend.tls = tls
            }
            if let value = self.oneOf(fields["compression"], "backends[\(name)].compression", Self.compressions) {
                backend.compression = value
            }
            backend.timeoutMs = self.duration(fields["timeout"], "backends[\(name)].timeout")
            if let retry = fields["retry"] { self.readRetry(retry, "backends[\(name)].retry", into: &backend.retry) }
            if let queue = fields["queue"] { self.readQueue(queue, "backends[\(name)].queue", into: &backend.queue) }
            if let headersNode = fields["headers"] {
                backend.headers = self.readHeaders(headersNode, "backends[\(name)].headers", holder: "the samplers")
            }
            backends.append(backend)
        }
        if backends.isEmpty, self.diagnostics.isEmpty {
            self.report(.missingKey, "`backends` is empty: kept traces would go nowhere", at: node)
        }
        fleet.backends = backends
    }

    private func readHeaders(_ node: Node, _ context: String, holder: String) -> [String: HeaderValue] {
        guard case .mapping(let mapping) = node else {
            self.report(.wrongType, "`\(context)` must be a mapping", at: node)
            return [:]
        }
        var headers: [String: HeaderValue] = [:]
        for (keyNode, value) in mapping {
            guard let name = keyNode.string, !name.isEmpty else { continue }
            switch value {
            case .mapping:
                guard let fields = self.fields(value, "headers.\(name)", allowed: ["env"]),
                    let variable = self.string(fields["env"], "headers.\(name).env")
                else { continue }
                guard !variable.isEmpty, variable.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }),
                    !(variable.first?.isNumber ?? true)
                else {
                    self.report(.invalidValue, "`\(variable)` is not an environment variable name", at: fields["env"])
                    continue
                }
                headers[name] = .environment(variable)
            case .scalar(let scalar):
                if scalar.string.hasPrefix("${env:") {
                    let variable = String(scalar.string.dropFirst(6).dropLast())
                    headers[name] = .environment(variable)
                } else if Self.looksSecret(name) {
                    self.report(
                        .inlineSecret,
                        "header `\(name)` looks like a credential; secrets are never written into configs",
                        at: value,
                        suggestion:
                            "write `\(name): {env: \(name.uppercased().replacingOccurrences(of: "-", with: "_"))}` and set that variable on \(holder)"
                    )
                } else {
                    headers[name] = .literal(scalar.string)
                }
            default:
                self.report(.wrongType, "header `\(name)` must be a string or `{env: NAME}`", at: value)
            }
        }
        return headers
    }

    private func readRollout(_ node: Node, into rollout: inout RolloutStrategy) {
        guard
            let fields = self.fields(
                node,
                "rollout",
                allowed: ["stages", "bake_time", "max_unavailable", "auto_rollback", "stage_timeout", "drain"]
            )
        else { return }
        if let value = self.duration(fields["stage_timeout"], "rollout.stage_timeout") {
            if value < 1000 {
                self.report(.invalidRollout, "`rollout.stage_timeout` must be at least 1s", at: fields["stage_timeout"])
            } else {
                rollout.stageTimeoutMs = value
            }
        }
        if let value = self.bool(fields["drain"], "rollout.drain") { rollout.drain = value }
        if let value = self.duration(fields["bake_time"], "rollout.bake_time") { rollout.bakeTimeMs = value }
        if let value = self.int(fields["max_unavailable"], "rollout.max_unavailable", range: 1...100_000) {
            rollout.maxUnavailable = value
        }
        if let value = self.bool(fields["auto_rollback"], "rollout.auto_rollback") { rollout.autoRollback = value }
        guard let stagesNode = fields["stages"] else { return }
        guard case .sequence(let sequence) = stagesNode, !sequence.isEmpty else {
            self.report(
                .invalidRollout,
                "`rollout.stages` must be a non-empty list",
                at: stagesNode,
                suggestion: "write `stages: [{canary: 1}, {percent: 25}, {percent: 100}]`"
            )
            return
        }
        var stages: [RolloutStrategy.Stage] = []
        var lastPercent = 0
        for item in sequence {
            guard let stage = self.fields(item, "rollout.stages[]", allowed: ["canary", "percent"]), stage.count == 1
            else {
                self.report(.invalidRollout, "each stage is `{canary: N}` or `{percent: N}`", at: item)
                continue
            }
            if let count = self.int(stage["canary"], "canary", range: 1...100_000) {
                if !stages.isEmpty {
                    self.report(.invalidRollout, "a canary stage comes first", at: item)
                }
                stages.append(.canary(count))
            } else if let percent = self.int(stage["percent"], "percent", range: 1...100) {
                if percent <= lastPercent {
                    self.report(
                        .invalidRollout,
                        "stage percentages must rise: \(percent)% after \(lastPercent)%",
                        at: item
                    )
                }
                lastPercent = percent
                stages.append(.percent(percent))
            }
        }
        if lastPercent != 100 {
            self.report(
                .invalidRollout,
                "the last stage must be `{percent: 100}` so the whole tier converges",
                at: stagesNode
            )
        }
        rollout.stages = stages
    }
}
