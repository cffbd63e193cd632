import Foundation
import PolicyEngine

/// Text, Markdown and JSON renderings of estimates and explanations.
public enum Reports {
    /// How an estimate is printed.
    public enum Format: String, Sendable, CaseIterable {
        case table, markdown, json
    }

    /// An estimate, or a comparison when `before` is given (`estimate` is then the "after").
    public static func estimate(_ estimate: Estimate, before: Estimate?, format: Format, source: String) -> String {
        switch format {
        case .json:
            return self.json(EstimateJSON(after: estimate, before: before, source: source))
        case .table, .markdown:
            let markdown = format == .markdown
            var out = ""
            let header =
                "\(Self.count(estimate.traces)) traces, \(Self.count(estimate.spans)) spans, \(Self.bytes(estimate.bytes)) (\(source)); \(estimate.samplers) sampler\(estimate.samplers == 1 ? "" : "s")"
            out += markdown ? "**Sampling estimate**: \(header)\n\n" : header + "\n\n"
            var rows: [[String]]
            if let before {
                rows = [["rule", "action", "decided before", "decided after", "change"]]
                var names = estimate.rules.map(\.rule)
                for rule in before.rules where !names.contains(rule.rule) { names.append(rule.rule) }
                for name in names {
                    let a = before.rules.first { $0.rule == name }
                    let b = estimate.rules.first { $0.rule == name }
                    let change = (b?.decided ?? 0) - (a?.decided ?? 0)
                    rows.append([
                        name + (a == nil ? " (new)" : b == nil ? " (removed)" : ""),
                        (b ?? a)!.action,
                        a.map { Self.count($0.decided) } ?? "-", b.map { Self.count($0.decided) } ?? "-",
                        change == 0 ? "0" : (change > 0 ? "+" : "") + Self.count(change),
                    ])
                }
            } else {
                rows = [["rule", "action", "matched", "decided", "spans", "bytes"]]
                for rule in estimate.rules {
                    rows.append([
                        rule.rule, rule.action, Self.count(rule.matched), Self.count(rule.decided),
                        Self.count(rule.decidedSpans), Self.bytes(rule.decidedBytes),
                    ])
                }
            }
            out += Self.table(rows, markdown: markdown)
            out += "\n"
            let totals: [(String, Int64, Int64, Int64?, Int64?)] = [
                (
                    "traces", Int64(estimate.keptTraces), Int64(estimate.traces), before.map { Int64($0.keptTraces) },
                    before.map { Int64($0.traces) }
                ),
                (
                    "spans", Int64(estimate.keptSpans), Int64(estimate.spans), before.map { Int64($0.keptSpans) },
                    before.map { Int64($0.spans) }
                ),
                ("bytes", estimate.keptBytes, estimate.bytes, before.map(\.keptBytes), before.map(\.bytes)),
            ]
            for (name, kept, total, keptBefore, totalBefore) in totals {
                let after = Estimate.percent(kept, total)
                let amount = name == "bytes" ? Self.bytes(kept) : Self.count(kept)
                var line = "kept \(name): \(amount) (\(Self.pct(after)))"
                if let keptBefore, let totalBefore {
                    let previous = Estimate.percent(keptBefore, totalBefore)
                    let delta = after - previous
                    line =
                        "kept \(name): \(Self.pct(previous)) -> \(Self.pct(after)) (\(delta >= 0 ? "+" : "")\(String(format: "%.1f", delta)) points)"
                }
                out += markdown ? "- \(line)\n" : line + "\n"
            }
            if estimate.tracesWithUnsimulatedRules > 0 {
                out +=
                    "\nnote: \(Self.count(estimate.tracesWithUnsimulatedRules)) traces met a rule outside the simulated OTTL subset; their decisions assume it did not vote (see `policyctl explain`).\n"
            }
            return out
        }
    }

    struct EstimateJSON: Encodable {
        var after: Estimate
        var before: Estimate?
        var source: String
    }

    /// One trace's explanation as text.
    public static func explain(_ verdict: Verdict, samplers: Int) -> String {
        let by = verdict.decidingRule.map { " by \($0)" } ?? (verdict.decision == .drop ? " (no rule kept it)" : "")
        var out =
            "trace \(verdict.traceID.hex): \(verdict.decision.rawValue)\(by) (sampler \(verdict.sampler + 1) of \(samplers), \(verdict.spanCount) span\(verdict.spanCount == 1 ? "" : "s"), \(Self.bytes(verdict.sizeBytes)))\n"
        let width = verdict.votes.map(\.policy.count).max() ?? 0
        for vote in verdict.votes {
            let name = vote.policy.padding(toLength: width, withPad: " ", startingAt: 0)
            let voteText = vote.vote.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0)
            out += "  \(name)  \(voteText)\(vote.detail ?? "")\n"
        }
        if !verdict.unsimulated.isEmpty {
            out +=
                "  note: not simulated: \(verdict.unsimulated.joined(separator: ", ")); the decision assumes no vote from them\n"
        }
        return out
    }

    /// One trace's explanation as one line of JSON, keys in a fixed order:
    /// `{"trace_id", "decision", "rule", "sampler", "spans", "bytes", "rules": [{"rule", "policy", "vote",
    /// "detail"}], "unsimulated"}`.
    public static func explainJSON(_ verdict: Verdict) -> String {
        let q = OTLPJSONWriter.quoted
        var out = "{\"trace_id\":\(q(verdict.traceID.hex)),\"decision\":\(q(verdict.decision.rawValue))"
        out += ",\"rule\":" + (verdict.decidingRule.map(q) ?? "null")
        out +=
            ",\"sampler\":\(verdict.sampler),\"spans\":\(verdict.spanCount),\"bytes\":\(verdict.sizeBytes),\"rules\":["
        for (index, vote) in verdict.votes.enumerated() {
            if index > 0 { out += "," }
            out += "{\"rule\":\(q(vote.rule)),\"policy\":\(q(vote.policy)),\"vote\":\(q(vote.vote.rawValue))"
            out += ",\"detail\":" + (vote.detail.map(q) ?? "null") + "}"
        }
        out += "],\"unsimulated\":[" + verdict.unsimulated.map(q).joined(separator: ",") + "]}\n"
        return out
    }

    // MARK: Rule tests

    /// `policyctl test`'s report: each test, a failure with its votes, the totals and the rules no test
    /// sees deciding.
    public static func testResults(_ results: [RuleTestResult], uncovered: [String]) -> String {
        var out = ""
        var currentFile = ""
        for result in results {
            if result.file != currentFile {
                currentFile = result.file
                out += "\(result.file)\n"
            }
            if result.passed {
                let how =
                    result.verdicts.first.map { "\($0.decision.rawValue)\($0.decidingRule.map { " by \($0)" } ?? "")" }
                    ?? ""
                out += "  ok    \(result.name) (\(how))\n"
                continue
            }
            out += "  FAIL  \(result.name)  \(result.file):\(result.line)\n"
            for failure in result.failures { out += "        \(failure)\n" }
            for verdict in result.verdicts {
                out += "        trace \(verdict.traceID.hex): votes\n"
                let width = verdict.votes.map(\.policy.count).max() ?? 0
                for vote in verdict.votes {
                    let name = vote.policy.padding(toLength: width, withPad: " ", startingAt: 0)
                    out +=
                        "          \(name)  \(vote.vote.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0))\(vote.detail ?? "")\n"
                }
            }
        }
        let failed = results.filter { !$0.passed }.count
        out += "\n\(results.count - failed) passed, \(failed) failed\n"
        if !uncovered.isEmpty {
            out += "rules no test sees deciding: \(uncovered.joined(separator: ", "))\n"
        }
        return out
    }

    struct JSONResult: Encodable {
        var file: String
        var line: Int
        var name: String
        var passed: Bool
        var failures: [String]
        var decisions: [String]
    }

    struct JSONReport: Encodable {
        var passed: Int
        var failed: Int
        var tests: [JSONResult]
        var uncovered_rules: [String]
    }

    /// The same as one JSON document.
    public static func testResultsJSON(_ results: [RuleTestResult], uncovered: [String]) -> String {
        let report = JSONReport(
            passed: results.filter(\.passed).count,
            failed: results.filter { !$0.passed }.count,
            tests: results.map { result in
                JSONResult(
                    file: result.file,
                    line: result.line,
                    name: result.name,
                    passed: result.passed,
                    failures: result.failures,
                    decisions: result.verdicts.map {
                        "\($0.decision.rawValue)\($0.decidingRule.map { " by \($0)" } ?? "")"
                    }
                )
            },
            uncovered_rules: uncovered
        )
        return Self.json(report)
    }

    // MARK: Helpers

    static func json(_ value: some Encodable, pretty: Bool = true, sorted: Bool = true) -> String {
        let encoder = JSONEncoder()
        var formatting: JSONEncoder.OutputFormatting = [.withoutEscapingSlashes]
        if pretty { formatting.insert(.prettyPrinted) }
        if sorted { formatting.insert(.sortedKeys) }
        encoder.outputFormatting = formatting
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    static func table(_ rows: [[String]], markdown: Bool) -> String {
        guard let header = rows.first else { return "" }
        var widths = header.map(\.count)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        func pad(_ cell: String, _ index: Int) -> String {
            // Text columns left, figures right.
            let numeric = index > 1 || (index == 1 && rows.count > 1 && Double(rows[1][1].filter { $0 != "," }) != nil)
            let gap = String(repeating: " ", count: widths[index] - cell.count)
            return numeric ? gap + cell : cell + gap
        }
        var out = ""
        for (rowIndex, row) in rows.enumerated() {
            let cells = row.enumerated().map { pad($0.element, $0.offset) }
            out += markdown ? "| " + cells.joined(separator: " | ") + " |\n" : cells.joined(separator: "  ") + "\n"
            if rowIndex == 0, markdown {
                out +=
                    "|"
                    + widths.enumerated().map { index, width in
                        index > 1
                            ? " " + String(repeating: "-", count: max(3, width - 1)) + ": "
                            : " " + String(repeating: "-", count: max(3, width)) + " "
                    }.joined(separator: "|") + "|\n"
            }
        }
        return out
    }

    static func count(_ value: some BinaryInteger) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (index, char) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(char)
        }
        return (value < 0 ? "-" : "") + out
    }

    static func pct(_ value: Double) -> String { String(format: "%.1f %%", value) }

    /// A size in bytes as people read it: `512 B`, `96.4 MiB`.
    public static func bytes(_ value: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var amount = Double(value)
        var unit = 0
        while amount >= 1024, unit < units.count - 1 {
            amount /= 1024
            unit += 1
        }
        return unit == 0 ? "\(value) B" : String(format: "%.1f %@", amount, units[unit])
    }
}
