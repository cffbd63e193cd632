import Foundation
import PolicyEngine

/// Holds one render's inputs and collects its problems.
struct RenderContext {
    let fleet: Fleet
    let membership: Membership
    let settings: SamplerSettings
    private(set) var problems: [FleetDiagnostic] = []
    /// Warnings that do not stop the render; they travel with the rendered config.
    private(set) var warnings: [FleetDiagnostic] = []

    init(fleet: Fleet, membership: Membership, settings: SamplerSettings) {
        self.fleet = fleet
        self.membership = membership
        self.settings = settings
    }

    /// Refuses a feature the target collector lacks (once per feature).
    mutating func require(_ feature: CollectorFeature, for subject: String) {
        guard self.fleet.collectorVersion < feature.since else { return }
        let diagnostic = FleetDiagnostic(
            code: .featureNeedsNewerCollector,
            message:
                "\(feature.rawValue) need otelcol-contrib \(feature.since) or newer; the fleet targets \(self.fleet.collectorVersion) (used by \(subject))",
            suggestion:
                "raise `collector.version` in fleet.yaml once every collector runs \(feature.since), or change \(subject)"
        )
        if !self.problems.contains(where: { $0.code == diagnostic.code && $0.message.hasPrefix(feature.rawValue) }) {
            self.problems.append(diagnostic)
        }
    }

    mutating func problem(_ code: FleetDiagnostic.Code, _ message: String, suggestion: String? = nil) {
        self.problems.append(FleetDiagnostic(code: code, message: message, suggestion: suggestion))
    }

    /// Records a problem located in a policy file; `severity` decides whether it stops the render.
    mutating func report(
        _ code: FleetDiagnostic.Code,
        _ message: String,
        at origin: SourceReference?,
        suggestion: String?,
        severity: Severity
    ) {
        let diagnostic = FleetDiagnostic(
            code: code,
            message: message,
            file: origin?.file,
            line: origin?.line ?? 0,
            column: origin?.column ?? 0,
            suggestion: suggestion,
            severity: severity
        )
        if severity == .error { self.problems.append(diagnostic) } else { self.warnings.append(diagnostic) }
    }

    // MARK: Shared pieces

    /// A string from the policies or the fleet description, with `$` doubled: the collector expands `${…}` in
    /// config values at start-up and reads `$$` as a literal `$`, so a regex anchor, an OTTL string, a path
    /// or an endpoint survives unchanged.
    func literal(_ text: String) -> YAMLNode {
        .string(text.replacingOccurrences(of: "$", with: "$$"))
    }

    func tls(_ tls: TLSSettings) -> YAMLNode {
        var map = MapBuilder()
        map.add("insecure", .bool(tls.insecure))
        map.add("insecure_skip_verify", tls.insecureSkipVerify.map(YAMLNode.bool))
        map.add("ca_file", tls.caFile.map(self.literal))
        map.add("cert_file", tls.certFile.map(self.literal))
        map.add("key_file", tls.keyFile.map(self.literal))
        map.add("server_name_override", tls.serverNameOverride.map(self.literal))
        return map.node
    }

    func retry(_ retry: RetrySettings) -> YAMLNode {
        var map = MapBuilder()
        map.add("enabled", .bool(retry.enabled))
        map.add("initial_interval", .duration(retry.initialIntervalMs))
        map.add("max_interval", .duration(retry.maxIntervalMs))
        map.add("max_elapsed_time", .duration(retry.maxElapsedTimeMs))
        return map.node
    }

    func queue(_ queue: QueueSettings) -> YAMLNode {
        var map = MapBuilder()
        map.add("enabled", .bool(queue.enabled))
        map.add("num_consumers", .int(queue.numConsumers))
        map.add("queue_size", .int(queue.queueSize))
        return map.node
    }

    func otlpReceiver() -> YAMLNode {
        var protocols = MapBuilder()
        if let grpc = self.fleet.receivers.grpcEndpoint {
            var map = MapBuilder()
            map.add("endpoint", self.literal(grpc))
            map.add("max_recv_msg_size_mib", self.fleet.receivers.maxRecvMsgSizeMiB.map(YAMLNode.int))
            protocols.add("grpc", map.node)
        }
        if let http = self.fleet.receivers.httpEndpoint {
            protocols.add("http", .map([.init("endpoint", self.literal(http))]))
        }
        return .map([.init("protocols", protocols.node)])
    }

    func memoryLimiter() -> YAMLNode {
        .map([
            .init("check_interval", .duration(self.fleet.memoryLimiter.checkIntervalMs)),
            .init("limit_percentage", .int(self.fleet.memoryLimiter.limitPercentage)),
            .init("spike_limit_percentage", .int(self.fleet.memoryLimiter.spikeLimitPercentage)),
        ])
    }

    func telemetry() -> YAMLNode {
        var metrics = MapBuilder()
        metrics.add("level", .string(self.fleet.telemetry.metricsLevel))
        if let port = self.fleet.telemetry.metricsPort, self.fleet.telemetry.metricsLevel != "none",
            self.fleet.collectorVersion < CollectorFeature.telemetryReaders
        {
            metrics.add("address", .string("0.0.0.0:\(port)"))
        } else if let port = self.fleet.telemetry.metricsPort, self.fleet.telemetry.metricsLevel != "none" {
            let prometheus = YAMLNode.map([.init("host", .string("0.0.0.0")), .init("port", .int(port))])
            let reader = YAMLNode.map([
                .init("pull", .map([.init("exporter", .map([.init("prometheus", prometheus)]))]))
            ])
            metrics.add("readers", .list([reader]))
        }
        return .map([
            .init("logs", .map([.init("level", .string(self.fleet.telemetry.logsLevel))])),
            .init("metrics", metrics.node),
        ])
    }

    func service(processors: [String], exporters: [String]) -> YAMLNode {
        let traces = YAMLNode.map([
            .init("receivers", .strings(["otlp"])),
            .init("processors", .strings(processors)),
            .init("exporters", .strings(exporters)),
        ])
        return .map([
            .init("telemetry", self.telemetry()),
            .init("pipelines", .map([.init("traces", traces)])),
        ])
    }

    // MARK: Load-balancing tier

    mutating func loadBalancingConfig() -> YAMLNode {
        let type = self.fleet.effectiveLoadBalancingExporterType
        if type == "load_balancing" { self.require(.loadBalancingTypeName, for: "`collector.load_balancing_exporter`") }
        let settings = self.fleet.loadBalancing
        // Where the exporter has its own queue (v0.116 and later), the queue and retries sit in front of the
        // ring: a batch that fails is routed again on the current ring, and nothing is queued per sampler, so a
        // ring change loses nothing (contrib #35378). Older releases only have the per-sampler ones.
        let topLevelQueue = self.fleet.collectorVersion >= CollectorFeature.loadBalancingTopLevelQueue
        var otlp = MapBuilder()
        otlp.add("timeout", .duration(settings.timeoutMs))
        otlp.add("tls", self.tls(settings.tls))
        otlp.add("compression", settings.compression.map(YAMLNode.string))
        if topLevelQueue {
            otlp.add(
                "retry_on_failure",
                .map([.init("enabled", .bool(false))]),
                comment: "retried in front of the ring, not per sampler"
            )
            // Written even when the exporter's own queue is off: the collector only turns the per-sampler
            // queue off when the top-level one is on, and a per-sampler queue is lost with its sampler.
            otlp.add("sending_queue", .map([.init("enabled", .bool(false))]))
        } else {
            otlp.add("retry_on_failure", self.retry(settings.retry))
            otlp.add("sending_queue", self.queue(settings.queue))
        }

        let resolver: YAMLNode
        switch self.fleet.resolver {
        case .static:
            if self.membership.samplers.isEmpty {
                self.problem(
                    .noSamplers,
                    "the static resolver needs the sampler membership, and none was given",
                    suggestion:
                        "pass the samplers (`--samplers host-a:4317,host-b:4317`), or use the dns or k8s resolver"
                )
            }
            for sampler in self.membership.samplers where sampler.isEmpty || sampler.contains(where: \.isWhitespace) {
                self.problem(.invalidSamplerEndpoint, "sampler endpoint `\(sampler)` is empty or contains white space")
            }
            resolver = .map([
                .init(
                    "static",
                    .map([.init("hostnames", .list(self.membership.samplers.map(self.literal)))]),
                    comment:
                        "\(self.membership.samplers.count) samplers, sorted: every load balancer builds the same ring"
                )
            ])
        case .dns(let dns):
            var map = MapBuilder()
            map.add("hostname", self.literal(dns.hostname))
            map.add("port", dns.port.map { .string(String($0)) })
            map.add("interval", dns.intervalMs.map(YAMLNode.duration))
            map.add("timeout", dns.timeoutMs.map(YAMLNode.duration))
            resolver = .map([.init("dns", map.node)])
        case .k8s(let k8s):
            var map = MapBuilder()
            map.add("service", self.literal(k8s.service))
            map.add("ports", .list(k8s.ports.map(YAMLNode.int)))
            if let timeout = k8s.timeoutMs {
                self.require(.kubernetesTimeout, for: "`samplers.k8s.timeout`")
                map.add("timeout", .duration(timeout))
            }
            if let returnHostnames = k8s.returnHostnames {
                self.require(.kubernetesReturnHostnames, for: "`samplers.k8s.return_hostnames`")
                map.add("return_hostnames", .bool(returnHostnames))
            }
            resolver = .map([.init("k8s", map.node)])
        }
        var exporter = MapBuilder()
        exporter.add("routing_key", .string("traceID"))
        exporter.add("protocol", .map([.init("otlp", otlp.node)]))
        exporter.add("resolver", resolver)
        if topLevelQueue {
            exporter.add("retry_on_failure", self.retry(settings.retry))
            exporter.add("sending_queue", self.queue(settings.queue))
        }
        return .map([
            .init("receivers", .map([.init("otlp", self.otlpReceiver())])),
            .init("processors", .map([.init("memory_limiter", self.memoryLimiter())])),
            .init("exporters", .map([.init(type, exporter.node)])),
            .init("service", self.service(processors: ["memory_limiter"], exporters: [type])),
        ])
    }

    // MARK: Sampling tier

    mutating func samplingConfig(_ policySet: PolicySet) -> YAMLNode {
        if self.membership.samplerCount < 1, let dependent = ConfigRenderer.firstCountDependentPolicy(policySet) {
            self.problem(
                .noSamplers,
                "`\(dependent)` has a fleet-wide limit or budget, divided among the samplers, and no sampler count was given",
                suggestion: "pass the samplers (`--samplers host-a:4317,host-b:4317`) or `--sampler-count N`"
            )
        }
        if policySet.policies.isEmpty {
            self.problem(
                .unrepresentable,
                "the policy set has no policies; the collector requires at least one",
                suggestion: "add a rule such as `keep errors when status == ERROR`"
            )
        }
        var exporters = MapBuilder()
        for backend in self.fleet.backends {
            exporters.add(backend.exporterID(for: self.fleet.collectorVersion), self.backend(backend))
        }
        return .map([
            .init("receivers", .map([.init("otlp", self.otlpReceiver())])),
            .init(
                "processors",
                .map([
                    .init("memory_limiter", self.memoryLimiter()),
                    .init("tail_sampling", self.tailSampling(policySet)),
                    .init("batch", self.batch()),
                ])
            ),
            .init("exporters", exporters.node),
            .init(
                "service",
                self.service(
                    processors: ["memory_limiter", "tail_sampling", "batch"],
                    exporters: self.fleet.backends.map { $0.exporterID(for: self.fleet.collectorVersion) }
                )
            ),
        ])
    }

    func batch() -> YAMLNode {
        var map = MapBuilder()
        map.add("timeout", .duration(self.fleet.batch.timeoutMs))
        map.add("send_batch_size", .int(self.fleet.batch.sendBatchSize))
        map.add("send_batch_max_size", self.fleet.batch.sendBatchMaxSize.map(YAMLNode.int))
        return map.node
    }

    func backend(_ backend: Backend) -> YAMLNode {
        var map = MapBuilder()
        map.add("endpoint", self.literal(backend.endpoint))
        map.add("tls", self.tls(backend.tls))
        if !backend.headers.isEmpty {
            let headers = backend.headers.keys.sorted().map { name in
                YAMLNode.Entry(name, .string(backend.headers[name]!.rendered))
            }
            map.add("headers", .map(headers))
        }
        map.add("compression", backend.compression.map(YAMLNode.string))
        map.add("timeout", backend.timeoutMs.map(YAMLNode.duration))
        map.add("retry_on_failure", self.retry(backend.retry))
        map.add("sending_queue", self.queue(backend.queue))
        return map.node
    }
}
