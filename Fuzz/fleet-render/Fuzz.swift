// libFuzzer target: fleet.yaml bytes -> FleetParser -> render both tiers with the example policy set.
// Built by scripts/fuzz.sh (a package target only with TAILPLANE_FUZZ=1, never in a normal build).
//
// Beyond "no crash", it checks:
// - a rejected fleet description says why (at least one diagnostic, each with a message);
// - every rendered config parses back as YAML into exactly the tree the renderer built: no value a fleet
//   description carries (endpoints, names, headers, comments) can change the config's structure or turn a
//   string into a number, a boolean or null;
// - rendering is deterministic: the same inputs give the same bytes and hash.
import Foundation
import Yams

@testable import ConfigRenderer
@testable import PolicyEngine

/// `precondition` that keeps its message in optimized builds (the fuzzers are built with -O).
private func require(_ condition: Bool, _ message: @autoclosure () -> String = "") {
    if !condition { fatalError(message()) }
}

/// The example policy set (policies/ at the repository's root), compiled once.
private let policySet: PolicySet = {
    let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("policies")
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
        .filter { $0.hasSuffix(".policy") }.sorted()
    let files = names.compactMap { name -> SourceFile? in
        guard let text = try? String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8) else {
            return nil
        }
        return SourceFile(path: name, text: text)
    }
    guard !files.isEmpty, let set = PolicyCompiler.compile(files).policySet else {
        fatalError("fuzz-fleet-render needs the example policies at \(directory.path)")
    }
    return set
}()

/// Whether Yams' reading of a rendered config is the tree the renderer wrote.
private func same(_ node: YAMLNode, _ value: Any?, at path: String) -> String? {
    switch node {
    case .map(let entries):
        guard let map = value as? [AnyHashable: Any] else {
            // An empty mapping is written `{}`; nothing else may vanish.
            return entries.isEmpty && value == nil
                ? nil : "\(path): expected a mapping, read \(String(describing: value))"
        }
        guard Set(entries.map(\.key)).count == entries.count else { return "\(path): a key written twice" }
        guard map.count == entries.count else {
            return "\(path): \(entries.count) keys written, \(map.count) read"
        }
        for entry in entries {
            guard let inner = map[AnyHashable(entry.key)] else {
                return "\(path): key \(entry.key.debugDescription) lost"
            }
            if let problem = same(entry.value, inner, at: path + "." + entry.key) { return problem }
        }
        return nil
    case .list(let items):
        guard let list = value as? [Any] else {
            // An empty list is written `[]`, which reads back as an empty list; nothing else may stand for it.
            return "\(path): expected a list, read \(String(describing: value))"
        }
        guard list.count == items.count else { return "\(path): \(items.count) items written, \(list.count) read" }
        for (index, item) in items.enumerated() {
            if let problem = same(item, list[index], at: "\(path)[\(index)]") { return problem }
        }
        return nil
    case .string(let text):
        return value as? String == text
            ? nil : "\(path): wrote \(text.debugDescription), read \(String(describing: value))"
    case .int(let number):
        return (value as? Int).map(Int64.init) == number
            ? nil : "\(path): wrote \(number), read \(String(describing: value))"
    case .double(let number):
        if let read = value as? Double, read == number || (read.isNaN && number.isNaN) { return nil }
        if let read = value as? Int, Double(read) == number { return nil }
        return "\(path): wrote \(number), read \(String(describing: value))"
    case .bool(let flag):
        return value as? Bool == flag ? nil : "\(path): wrote \(flag), read \(String(describing: value))"
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFleetRender(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let fleet: Fleet
    switch FleetParser.parse(text) {
    case .failure(let problems):
        require(!problems.diagnostics.isEmpty, "a fleet description was rejected without a diagnostic")
        for diagnostic in problems.diagnostics {
            require(!diagnostic.message.isEmpty, "a fleet diagnostic without a message: \(diagnostic)")
        }
        return 0
    case .success(let parsed):
        fleet = parsed
    }
    let membership = Membership(samplers: ["sampler-0.samplers:4317", "sampler-1.samplers:4317"], samplerCount: 2)
    for tier in Tier.allCases {
        var context = RenderContext(fleet: fleet, membership: membership, settings: policySet.settings)
        let root = tier == .loadBalancing ? context.loadBalancingConfig() : context.samplingConfig(policySet)
        guard context.problems.isEmpty else { continue }
        let yaml = YAMLWriter.write(root, header: ["fuzz"])
        let parsed: Any?
        do {
            parsed = try Yams.load(yaml: yaml)
        } catch {
            fatalError("the rendered \(tier.rawValue) config is not YAML (\(error)):\n\(yaml)")
        }
        if let problem = same(root, parsed, at: tier.rawValue) {
            fatalError("the rendered \(tier.rawValue) config reads back differently: \(problem)\n\(yaml)")
        }
        let first = ConfigRenderer.render(tier, policySet: policySet, fleet: fleet, membership: membership)
        let second = ConfigRenderer.render(tier, policySet: policySet, fleet: fleet, membership: membership)
        switch (first, second) {
        case (.success(let a), .success(let b)):
            require(a.yaml == b.yaml && a.hash == b.hash, "rendering the same inputs twice differs")
            require(a.yaml.hasSuffix(yaml.drop { $0 != "\n" }.dropFirst()), "render() and the tree it wrote differ")
        case (.failure(let a), .failure(let b)):
            require(a.diagnostics == b.diagnostics, "rendering the same inputs twice gives different problems")
        default:
            fatalError("rendering the same inputs twice succeeded once and failed once")
        }
    }
    return 0
}
