import ConfigRenderer
import PolicyEngine
import Testing

/// One golden snippet per fleet feature: the exact YAML a `fleet.yaml` setting becomes.
@Suite struct FleetRenderingTests {
    static let cases: [(String, Tier, String)] = [
        (
            "samplers:\n  resolver: dns\n  dns: {hostname: samplers.obs.svc, port: 4317, interval: 5s, timeout: 1s}\n",
            .loadBalancing,
            "    resolver:\n      dns:\n        hostname: samplers.obs.svc\n        port: \"4317\"\n        interval: 5s\n        timeout: 1s\n"
        ),
        (
            "samplers:\n  resolver: k8s\n  k8s: {service: samplers.obs, ports: [4317, 4318], timeout: 1m, return_hostnames: true}\n",
            .loadBalancing,
            "    resolver:\n      k8s:\n        service: samplers.obs\n        ports:\n          - 4317\n          - 4318\n        timeout: 1m\n        return_hostnames: true\n"
        ),
        (
            "samplers:\n  resolver: static\n",
            .loadBalancing,
            "    resolver:\n      static:  # 3 samplers, sorted: every load balancer builds the same ring\n        hostnames:\n          - sampler-a:4317\n          - sampler-b:4317\n          - sampler-c:4317\n"
        ),
        (
            "collector: {version: \"0.153\"}\n",
            .loadBalancing,
            "exporters:\n  load_balancing:\n    routing_key: traceID\n"
        ),
        (
            "load_balancing:\n  timeout: 5s\n  compression: zstd\n  tls: {ca_file: /tls/ca.pem, server_name_override: samplers}\n  retry: {enabled: false}\n  queue: {num_consumers: 4, queue_size: 100}\n",
            .loadBalancing,
            "      otlp:\n        timeout: 5s\n        tls:\n          insecure: false\n          ca_file: /tls/ca.pem\n          server_name_override: samplers\n        compression: zstd\n        retry_on_failure:  # retried in front of the ring, not per sampler\n          enabled: false\n        sending_queue:\n          enabled: false\n    resolver:\n      static:  # 3 samplers, sorted: every load balancer builds the same ring\n        hostnames:\n          - sampler-a:4317\n          - sampler-b:4317\n          - sampler-c:4317\n    retry_on_failure:\n      enabled: false\n      initial_interval: 5s\n      max_interval: 30s\n      max_elapsed_time: 5m\n    sending_queue:\n      enabled: true\n      num_consumers: 4\n      queue_size: 100\n"
        ),
        (
            "backends:\n  - name: vendor\n    protocol: otlphttp\n    endpoint: https://ingest.example.com\n    tls: {cert_file: /tls/c.pem, key_file: /tls/k.pem}\n    headers: {api-key: {env: VENDOR_KEY}, x-team: sre}\n    compression: gzip\n    timeout: 30s\n",
            .sampling,
            "exporters:\n  otlp_http/vendor:\n    endpoint: https://ingest.example.com\n    tls:\n      insecure: false\n      cert_file: /tls/c.pem\n      key_file: /tls/k.pem\n    headers:\n      api-key: ${env:VENDOR_KEY}\n      x-team: sre\n    compression: gzip\n    timeout: 30s\n"
        ),
        (
            "backends:\n  - {name: a, endpoint: \"a:4317\"}\n  - {name: b, endpoint: \"b:4317\"}\n",
            .sampling,
            "      exporters:\n        - otlp_grpc/a\n        - otlp_grpc/b\n"
        ),
        (
            "receivers: {grpc: \"0.0.0.0:14317\", http: none, max_recv_msg_size_mib: 32}\n",
            .sampling,
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: \"0.0.0.0:14317\"\n        max_recv_msg_size_mib: 32\nprocessors:\n"
        ),
        (
            "memory_limiter: {check_interval: 2s, limit_percentage: 70, spike_limit_percentage: 15}\nbatch: {timeout: 200ms, send_batch_size: 1024, send_batch_max_size: 2048}\n",
            .sampling,
            "  memory_limiter:\n    check_interval: 2s\n    limit_percentage: 70\n    spike_limit_percentage: 15\n"
        ),
        (
            "batch: {timeout: 200ms, send_batch_size: 1024, send_batch_max_size: 2048}\n",
            .sampling,
            "  batch:\n    timeout: 200ms\n    send_batch_size: 1024\n    send_batch_max_size: 2048\n"
        ),
        (
            "telemetry: {logs_level: warn, metrics_level: detailed, metrics_port: 9888}\n",
            .sampling,
            "  telemetry:\n    logs:\n      level: warn\n    metrics:\n      level: detailed\n      readers:\n        - pull:\n            exporter:\n              prometheus:\n                host: \"0.0.0.0\"\n                port: 9888\n"
        ),
        (
            "telemetry: {metrics_port: none}\n",
            .loadBalancing,
            "    metrics:\n      level: normal\n  pipelines:\n"
        ),
    ]

    @Test(arguments: cases)
    func rendersFleetFeature(fleetYAML: String, tier: Tier, expected: String) throws {
        let fleet = try FleetParser.parse(fleetYAML).get()
        let config = try #require(render(tier, policySet("keep errors when status == ERROR"), fleet: fleet))
        #expect(config.yaml.contains(expected), "got:\n\(config.yaml)")
    }
}
