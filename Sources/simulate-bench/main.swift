import Foundation
import PolicyEngine
import PolicyTesting

/// Benchmarks for the decision simulator. Prints figures; never run as a test.
///
///     swift build -c release --product simulate-bench && .build/release/simulate-bench [policy dir] [spans]
///
/// 1. Evaluation alone: synthetic traces already in memory, decided by the example policies on 3 samplers.
/// 2. `policyctl estimate` end to end: an OTLP/JSON file of about `spans` spans read, assembled and decided.
let arguments = CommandLine.arguments
let policyDirectory = arguments.count > 1 ? arguments[1] : "policies"
let targetSpans = arguments.count > 2 ? Int(arguments[2]) ?? 1_000_000 : 1_000_000

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func peakRSSMiB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024  // kilobytes on Linux
}

let names =
    (try? FileManager.default.contentsOfDirectory(atPath: policyDirectory))?.filter { $0.hasSuffix(".policy") }
    .sorted() ?? []
let sources = names.map { name in
    SourceFile(
        path: "\(policyDirectory)/\(name)",
        bytes: [UInt8](FileManager.default.contents(atPath: "\(policyDirectory)/\(name)") ?? Data())
    )
}
guard let set = PolicyCompiler.compile(sources).policySet, !set.policies.isEmpty else {
    print("cannot compile the policies in \(policyDirectory)")
    exit(1)
}
let options = SimulationOptions(samplers: 3, collectorMinorVersion: 150)

// 1. Evaluation throughput on one core, parsing excluded.
var generator = SyntheticTraces(seed: 42)
var traces: [SimulatedTrace] = []
var spans = 0
while spans < max(targetSpans, 2_000_000) {
    let trace = generator.next()
    spans += trace.spans.count
    traces.append(trace)
}
var kept = 0
var best = Double.infinity
for _ in 0..<3 {
    var simulation = SamplingSimulation(policySet: set, options: options)
    kept = 0
    let start = ContinuousClock.now
    for trace in traces where simulation.decide(trace).decision == .keep { kept += 1 }
    best = min(best, seconds(ContinuousClock.now - start))
}
print(
    String(
        format:
            "evaluate: %d traces, %d spans, %d policies, 3 samplers: best of 3 %.3f s = %.2f M spans/s, %.0f k traces/s (kept %d)",
        traces.count,
        spans,
        set.policies.count,
        best,
        Double(spans) / best / 1e6,
        Double(traces.count) / best / 1e3,
        kept
    )
)
traces = []

// 2. End to end: write the file, then read, assemble and decide it as `policyctl estimate` does.
let file = FileManager.default.temporaryDirectory.appendingPathComponent("simulate-bench-\(getpid()).jsonl").path
_ = FileManager.default.createFile(atPath: file, contents: nil)
let handle = FileHandle(forWritingAtPath: file)!
var written = 0
var writtenTraces = 0
generator = SyntheticTraces(seed: 7)
while written < targetSpans {
    let batch = (0..<50).map { _ in generator.next() }
    written += batch.reduce(0) { $0 + $1.spans.count }
    writtenTraces += batch.count
    handle.write(Data((OTLPJSONWriter.line(batch) + "\n").utf8))
}
try? handle.close()
defer { try? FileManager.default.removeItem(atPath: file) }
let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int64) ?? 0
let rssBefore = peakRSSMiB()

var decodeOnly = 0
let decodeStart = ContinuousClock.now
_ = try TraceFiles.read([file]) { batch in decodeOnly += batch.spans.count }
let decodeSeconds = seconds(ContinuousClock.now - decodeStart)

let start = ContinuousClock.now
var estimator = Estimator([set], options: options)
var assembler = estimator.assembler()
var maxInFlight = 0
let summary = try TraceFiles.read(
    [file],
    documentEnd: {
        maxInFlight = max(maxInFlight, assembler.inFlight)
        for ready in assembler.releaseDue() { estimator.add(ready.trace, decisionTime: ready.decisionTime) }
    }
) { batch in assembler.add(batch) }
for ready in assembler.finish() { estimator.add(ready.trace, decisionTime: ready.decisionTime) }
let total = seconds(ContinuousClock.now - start)
print(
    String(
        format: "read+decode: %d spans, %.1f MiB of OTLP/JSON in %.2f s (%.0f MiB/s)",
        decodeOnly,
        Double(size) / 1_048_576,
        decodeSeconds,
        Double(size) / 1_048_576 / decodeSeconds
    )
)
print(
    String(
        format:
            "estimate end to end: %d traces, %d spans in %.2f s (%.2f M spans/s); at most %d traces in flight; peak RSS %.0f MiB (%.0f MiB before reading)",
        estimator.estimates[0].traces,
        summary.spans,
        total,
        Double(summary.spans) / total / 1e6,
        maxInFlight,
        peakRSSMiB(),
        rssBefore
    )
)
