import ConfigRenderer
import Foundation
import PolicyEngine

/// Benchmarks for the policy compiler and the config renderer. Prints figures; never run as a test.
///
///     swift run -c release policy-bench [rules] [iterations]
let ruleCount = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1000 : 1000
let iterations = CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 50 : 50

/// A generated policy set that uses every construct, spread over 10 files.
func generatePolicySet(rules: Int) -> [SourceFile] {
    var files = Array(repeating: "", count: 10)
    files[0] +=
        "sampler {\n    decision_wait 30s\n    max_traces 200000\n    cache sampled 2000000 unsampled 4000000\n}\n"
    for index in 0..<rules {
        let line: String
        switch index % 10 {
        case 0: line = "drop noise_\(index) when attr[\"http.route\"] matches \"/health/\(index)|/ready/\(index)\""
        case 1: line = "keep errors_\(index) when status == ERROR and service == \"svc-\(index)\""
        case 2: line = "keep slow_\(index) when service == \"svc-\(index)\" and duration > \(100 + index)ms"
        case 3: line = "keep tier_\(index) when attr[\"tier\"] in [\"gold-\(index)\", \"platinum-\(index)\"] sample 50%"
        case 4: line = "keep big_\(index) when spans >= \(10 + index) and not attr[\"internal\"] == true"
        case 5:
            line =
                "keep codes_\(index) when attr[\"http.status\"] in 500..\(600 + index) or tracestate[\"t\"] == \"v\(index)\""
        case 6: line = "keep sample_\(index) when service == \"svc-\(index)\" sample 10% limit \(index + 1) spans/s"
        case 7: line = "keep ottl_\(index) when ottl span \"attributes[\\\"n\\\"] == \(index)\""
        case 8: line = "keep bytes_\(index) when service == \"exp-\(index)\" limit \(index + 1)MiB/s"
        default:
            line = """
                budget b_\(index) \(1000 + index) spans/s {
                    keep b_\(index)_errors when service == "b-\(index)" and status == ERROR share 60%
                    keep b_\(index)_rest when service == "b-\(index)" share 40%
                }
                """
        }
        files[index % 10] += line + "\n"
    }
    return files.enumerated().map { SourceFile(path: "bench/\($0.offset).policy", text: $0.element) }
}

let files = generatePolicySet(rules: ruleCount)
let bytes = files.reduce(0) { $0 + $1.bytes.count }
let first = PolicyCompiler.compile(files)
guard let set = first.policySet else {
    print("generated set does not compile: \(first.diagnostics.prefix(3))")
    exit(1)
}
var timings: [Double] = []
for _ in 0..<iterations {
    let start = ContinuousClock.now
    let result = PolicyCompiler.compile(files)
    let elapsed = ContinuousClock.now - start
    precondition(result.policySet?.policies.count == set.policies.count)
    timings.append(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)
}
timings.sort()
let median = timings[timings.count / 2]
print(
    "compile: \(ruleCount) rules, \(set.policies.count) top-level policies, \(files.count) files, \(bytes / 1024) KiB"
)
print(
    String(
        format: "compile: median %.2f ms, min %.2f ms, max %.2f ms over %d runs",
        median,
        timings.first!,
        timings.last!,
        iterations
    )
)

var formatTimings: [Double] = []
for _ in 0..<iterations {
    let start = ContinuousClock.now
    for file in files { _ = PolicyFormatter.format(file) }
    let elapsed = ContinuousClock.now - start
    formatTimings.append(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)
}
formatTimings.sort()
print(String(format: "fmt: median %.2f ms for the same %d rules", formatTimings[formatTimings.count / 2], ruleCount))

// Rendering: both tiers for 500 samplers.
let samplers = (0..<500).map { "sampler-\($0).observability.svc.cluster.local:4317" }
let membership = Membership(samplers: samplers)
let fleet = Fleet()
func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.attoseconds) / 1e15 + Double(duration.components.seconds) * 1000
}
var renderTimings: [Double] = []
var sizes: [Tier: Int] = [:]
for _ in 0..<iterations {
    let start = ContinuousClock.now
    guard case .success(let configs) = ConfigRenderer.renderAll(policySet: set, fleet: fleet, membership: membership)
    else {
        print("render failed")
        exit(1)
    }
    renderTimings.append(milliseconds(ContinuousClock.now - start))
    for config in configs { sizes[config.tier] = config.yaml.utf8.count }
}
renderTimings.sort()
print(
    String(
        format:
            "render: both tiers, %d rules, %d samplers: median %.2f ms, min %.2f ms (lb %d KiB, sampling %d KiB, incl. SHA-256)",
        ruleCount,
        samplers.count,
        renderTimings[renderTimings.count / 2],
        renderTimings.first!,
        (sizes[.loadBalancing] ?? 0) / 1024,
        (sizes[.sampling] ?? 0) / 1024
    )
)
