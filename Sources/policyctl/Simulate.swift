import ArgumentParser
import ConfigRenderer
import Foundation
import PolicyEngine
import PolicyTesting

/// The fleet description and the collector version it targets, for commands that render or simulate.
struct FleetFlags: ParsableArguments {
    @Option(help: "Oldest otelcol-contrib version in the fleet, e.g. 0.150 (overrides fleet.yaml).")
    var targetVersion: String?

    @Option(help: "Fleet description (default: fleet.yaml in the policy directory, or built-in defaults).")
    var fleet: String?

    func validate() throws {
        if let version = self.targetVersion, CollectorVersion(version) == nil {
            throw ValidationError("--target-version must look like 0.150 or v0.150.0")
        }
    }

    /// The fleet near a policy path, with `--target-version` applied.
    func fleet(near path: String) throws -> Fleet {
        var fleet = try FleetLoader.load(explicit: self.fleet, near: path)
        if let version = self.targetVersion.flatMap(CollectorVersion.init) { fleet.collectorVersion = version }
        return fleet
    }
}

/// Options every simulating command shares.
struct SimulationFlags: ParsableArguments {
    @Option(help: "Sampler replicas to simulate behind the load balancers (fleet-wide limits are divided among them).")
    var samplers: Int?

    @Option(help: "Sampler ring entries, comma-separated (host:port); sets the replicas and how traces are routed.")
    var samplerEndpoints: String?

    @OptionGroup var fleetFlags: FleetFlags

    func validate() throws {
        if let samplers, samplers < 1 { throw ValidationError("--samplers must be at least 1") }
    }

    func options(near path: String) throws -> SimulationOptions {
        let fleet = try self.fleetFlags.fleet(near: path)
        let endpoints = (self.samplerEndpoints ?? "").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        return SimulationOptions(
            samplers: self.samplers ?? max(1, endpoints.count),
            samplerEndpoints: endpoints,
            collectorMinorVersion: fleet.collectorVersion.minor
        )
    }
}

/// Trace files and how to treat bad documents in them.
struct TraceInputFlags: ParsableArguments {
    @Option(
        name: .customLong("traces"),
        parsing: .upToNextOption,
        help: "Trace files (OTLP/JSON, one document per line or per file; gzip accepted)."
    )
    var files: [String] = []

    @Flag(help: "Skip documents that cannot be decoded (they are counted) instead of stopping.")
    var skipInvalid = false

    func validate() throws {
        if self.files.isEmpty { throw ValidationError("give the traces: --traces FILE…") }
    }
}

/// Compiles a policy directory (or files); prints errors and exits 1 on any, 2 when unreadable.
func compiledPolicies(_ path: String) throws -> PolicySet {
    let sources: [SourceFile]
    do {
        sources = try SourceLoader.load([path])
    } catch {
        printError(error.description)
        throw Exit.usage
    }
    let result = PolicyCompiler.compile(sources)
    DiagnosticPrinter.print(result.diagnostics.filter { $0.severity == .error }, sources: sources, format: .text)
    guard let set = result.policySet, !result.hasErrors else { throw Exit.problems }
    return set
}

/// Streams trace files through the assembler, calling `body` with each trace when the collector would decide
/// it. Reports the files' problems with their location and exits 2 (or skips them with `skipInvalid`).
func streamTraces(
    _ input: TraceInputFlags,
    assembler: TraceAssembler,
    showProgress: Bool,
    _ body: (SimulatedTrace, UInt64) -> Void
) throws -> (TraceFiles.Summary, lateSpans: Int) {
    var assembler = assembler
    let bar = ProgressBar(enabled: showProgress && isatty(STDERR_FILENO) == 1)
    defer { bar.finish() }
    let summary: TraceFiles.Summary
    do {
        summary = try TraceFiles.read(
            input.files,
            skipInvalid: input.skipInvalid,
            progress: bar.update,
            documentEnd: { for ready in assembler.releaseDue() { body(ready.trace, ready.decisionTime) } }
        ) { batch in assembler.add(batch) }
    } catch let error as TraceFiles.ReadError {
        bar.finish()
        printError("\(error)\(input.skipInvalid ? "" : " (pass --skip-invalid to skip bad documents)")")
        throw Exit.usage
    }
    for ready in assembler.finish() { body(ready.trace, ready.decisionTime) }
    if summary.skipped > 0 {
        printError("skipped \(summary.skipped) invalid document\(summary.skipped == 1 ? "" : "s"), for example:")
        for problem in summary.skippedErrors { FileHandle.standardError.write(Data("  \(problem)\n".utf8)) }
    }
    return (summary, assembler.lateSpans)
}

/// A one-line progress bar on standard error, for large inputs on a terminal.
final class ProgressBar: @unchecked Sendable {
    private let enabled: Bool
    private var lastPercent = -1
    private var shown = false

    init(enabled: Bool) { self.enabled = enabled }

    func update(_ done: Int64, _ total: Int64) {
        guard self.enabled, total > 0 else { return }
        let percent = Int(done * 100 / total)
        guard percent != self.lastPercent else { return }
        self.lastPercent = percent
        self.shown = true
        let width = 30
        let filled = width * percent / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        FileHandle.standardError.write(Data("\r[\(bar)] \(percent)%".utf8))
    }

    func finish() {
        guard self.shown else { return }
        self.shown = false
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}

extension Policyctl {
    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Explain why each trace is kept or dropped: the deciding rule and every rule's vote.",
            discussion: """
                Traces are OTLP/JSON (one document per line, as the file exporter writes, or one per file; gzip \
                accepted). For a rule that did not match, the first condition that failed and the value it saw.
                """
        )

        @Argument(help: "Policy directory (or files).")
        var path: String

        @OptionGroup var input: TraceInputFlags

        @Option(help: "Explain only this trace (32 hexadecimal digits).")
        var traceID: String?

        @Option(name: .long, help: "text (default) or json (one object per trace and line).")
        var output: OutputFormat = .text

        @OptionGroup var simulation: SimulationFlags

        enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

        func validate() throws {
            if let id = self.traceID, TraceID(hex: id) == nil {
                throw ValidationError("--trace-id must be 32 hexadecimal digits")
            }
        }

        func run() throws {
            let set = try compiledPolicies(self.path)
            var sim = SamplingSimulation(policySet: set, options: try self.simulation.options(near: self.path))
            let wanted = self.traceID.flatMap(TraceID.init(hex:))
            var found = 0
            let samplers = sim.ring.endpoints.count
            _ = try streamTraces(self.input, assembler: TraceAssembler(for: sim), showProgress: false) { trace, time in
                // Every trace is decided in order, so limits and budgets see the traffic before the one asked for.
                let verdict = sim.decide(trace, nowNanos: time, explain: wanted == nil || trace.traceID == wanted)
                guard wanted == nil || trace.traceID == wanted else { return }
                found += 1
                switch self.output {
                case .json: print(Reports.explainJSON(verdict), terminator: "")
                case .text: print(Reports.explain(verdict, samplers: samplers))
                }
            }
            if let wanted, found == 0 {
                printError("trace \(wanted.hex) is not in the input")
                throw Exit.problems
            }
        }
    }

    struct Estimate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Estimate what the policies keep of a trace sample, per rule and in total.",
            discussion: """
                With --against, runs both policy sets over the same traces and shows the change per rule and in \
                kept traces, spans and bytes, for a pull request: `--format markdown`.
                """
        )

        @Argument(help: "Policy directory (or files) under study.")
        var path: String

        @OptionGroup var input: TraceInputFlags

        @Option(help: "Another policy directory to compare with (the current rules, for a change under review).")
        var against: String?

        @Option(help: "table (default), markdown or json.")
        var format: Reports.Format = .table

        @OptionGroup var simulation: SimulationFlags

        func run() throws {
            let set = try compiledPolicies(self.path)
            var sets = [set]
            if let against = self.against { sets.append(try compiledPolicies(against)) }
            let options = try self.simulation.options(near: self.path)
            var estimator = Estimator(sets, options: options)
            let (summary, late) = try streamTraces(
                self.input,
                assembler: estimator.assembler(),
                showProgress: true
            ) { trace, time in estimator.add(trace, decisionTime: time) }
            let files = self.input.files.count
            var source = "\(files) file\(files == 1 ? "" : "s")"
            if late > 0 { source += ", \(late) late spans" }
            if summary.skipped > 0 { source += ", \(summary.skipped) invalid documents skipped" }
            print(
                Reports.estimate(
                    estimator.estimates[0],
                    before: estimator.estimates.count > 1 ? estimator.estimates[1] : nil,
                    format: self.format,
                    source: source
                ),
                terminator: ""
            )
        }
    }

    struct Test: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run sampling-rule tests: traces and the decision each must get (docs/testing.md).",
            discussion: "Test files default to PATH/tests/*.yaml. Exit 1 when any test fails."
        )

        @Argument(help: "Policy directory (or files).")
        var path: String

        @Argument(help: "Test files or directories (default: PATH/tests).")
        var tests: [String] = []

        @Option(help: "text (default) or json.")
        var format: Explain.OutputFormat = .text

        @OptionGroup var fleetFlags: FleetFlags

        func run() throws {
            let set = try compiledPolicies(self.path)
            let fleet = try self.fleetFlags.fleet(near: self.path)
            let options = SimulationOptions(collectorMinorVersion: fleet.collectorVersion.minor)
            let files = try self.testFiles()
            if files.isEmpty {
                printError(
                    "no test files (looked for \(self.tests.isEmpty ? "\(self.path)/tests/*.yaml" : self.tests.joined(separator: ", ")))"
                )
                throw Exit.usage
            }
            var results: [RuleTestResult] = []
            var fileProblems = 0
            for file in files {
                let text: String
                do {
                    text = try String(contentsOfFile: file, encoding: .utf8)
                } catch {
                    printError("\(file): cannot read file")
                    throw Exit.usage
                }
                do {
                    let parsed = try RuleTestFile.parse(text, path: file)
                    results += RuleTestRunner.run(parsed, policySet: set, options: options)
                } catch {
                    FileHandle.standardError.write(Data("\(error)\n".utf8))
                    fileProblems += 1
                }
            }
            let uncovered = RuleTestRunner.uncoveredRules(results, policySet: set)
            switch self.format {
            case .json:
                print(Reports.testResultsJSON(results, uncovered: uncovered), terminator: "")
            case .text:
                print(Reports.testResults(results, uncovered: uncovered), terminator: "")
            }
            if fileProblems > 0 || results.contains(where: { !$0.passed }) { throw Exit.problems }
        }

        private func testFiles() throws -> [String] {
            let roots = self.tests.isEmpty ? [(self.path as NSString).appendingPathComponent("tests")] : self.tests
            var files: [String] = []
            for root in roots {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) else {
                    if !self.tests.isEmpty {
                        printError("\(root): no such file or directory")
                        throw Exit.usage
                    }
                    continue
                }
                if isDirectory.boolValue {
                    let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
                    files += names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted().map {
                        (root as NSString).appendingPathComponent($0)
                    }
                } else {
                    files.append(root)
                }
            }
            return files
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write synthetic traces (a storefront's traffic) as OTLP/JSON lines, for trying rules out.",
            discussion: "Deterministic for a seed. Output ending in .gz is not compressed: pipe through gzip."
        )

        @Option(help: "Number of traces.")
        var traces: Int = 10_000

        @Option(help: "Random seed.")
        var seed: UInt64 = 1

        @Option(help: "Traces per line (one ExportTraceServiceRequest each).")
        var perLine: Int = 50

        @Option(name: .shortAndLong, help: "Output file (default: standard output).")
        var output: String?

        func validate() throws {
            if self.traces < 1 { throw ValidationError("--traces must be at least 1") }
            if self.perLine < 1 { throw ValidationError("--per-line must be at least 1") }
        }

        func run() throws {
            var generator = SyntheticTraces(seed: self.seed)
            let handle: FileHandle
            if let output = self.output {
                guard FileManager.default.createFile(atPath: output, contents: nil),
                    let file = FileHandle(forWritingAtPath: output)
                else {
                    printError("\(output): cannot write")
                    throw Exit.usage
                }
                handle = file
            } else {
                handle = FileHandle.standardOutput
            }
            var left = self.traces
            var spans = 0
            while left > 0 {
                let count = min(self.perLine, left)
                let batch = (0..<count).map { _ in generator.next() }
                spans += batch.reduce(0) { $0 + $1.spans.count }
                handle.write(Data((OTLPJSONWriter.line(batch) + "\n").utf8))
                left -= count
            }
            if self.output != nil {
                try? handle.close()
                FileHandle.standardError.write(
                    Data("wrote \(self.traces) traces, \(spans) spans to \(self.output!)\n".utf8)
                )
            }
        }
    }
}

extension Reports.Format: ExpressibleByArgument {}
