// libFuzzer target: a `POST /v1/apply` body -> the JSON decoding the API does -> VersionBuilder (compile the
// sources, parse fleet.yaml, render both tiers): everything an apply runs before it touches the store.
// Built by scripts/fuzz.sh (a package target only with TAILPLANE_FUZZ=1, never in a normal build).
//
// Beyond "no crash", it checks:
// - a refused apply says why: at least one diagnostic, and every policy diagnostic names one of the files
//   that were sent (so the client can show it at its line);
// - an accepted one is deterministic (the same body gives the same content hash and IR), its hash covers
//   the sources and the fleet text, and both tiers render to YAML that parses back.
import ConfigRenderer
import Foundation
import PolicyEngine
import Yams

@testable import ControlPlane

/// `precondition` that keeps its message in optimized builds (the fuzzers are built with -O).
private func require(_ condition: Bool, _ message: @autoclosure () -> String = "") {
    if !condition { fatalError(message()) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAPIApply(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Data(UnsafeBufferPointer(start: data, count: size))
    guard let request = try? JSONDecoder().decode(ApplyRequest.self, from: body) else { return 0 }
    switch VersionBuilder.compile(sources: request.sources, fleet: request.fleet) {
    case .failure(let rejection):
        require(
            !rejection.diagnostics.isEmpty || !rejection.fleetDiagnostics.isEmpty,
            "an apply was refused without a diagnostic"
        )
        let paths = Set(request.sources.map(\.path))
        for diagnostic in rejection.diagnostics {
            require(paths.contains(diagnostic.file), "a diagnostic names a file that was not sent: \(diagnostic.file)")
        }
    case .success(let set):
        require(set.contentHash.count == 64, "a content hash that is not SHA-256 hex")
        guard
            case .success(let again) = VersionBuilder.compile(sources: request.sources.reversed(), fleet: request.fleet)
        else {
            fatalError("the same apply compiled once and was refused the second time")
        }
        require(again.contentHash == set.contentHash && again.irJSON == set.irJSON, "an apply is not deterministic")
        if case .success(let other) = VersionBuilder.compile(sources: request.sources, fleet: request.fleet + "\n#") {
            require(other.contentHash != set.contentHash, "the content hash ignores the fleet text")
        }
        for tier in [AgentTier.loadBalancing, .sampling] {
            // compile() already rendered both tiers for one sampler; a ring of one must render too.
            let rendered: RenderedConfig
            switch VersionBuilder.render(set, tier: tier, ring: ["s-0:4317"], samplerCount: 1) {
            case .success(let config): rendered = config
            case .failure(let problems): fatalError("an accepted apply does not render: \(problems)")
            }
            do {
                _ = try Yams.load(yaml: rendered.yaml)
            } catch {
                fatalError("a rendered config is not YAML (\(error)):\n\(rendered.yaml)")
            }
        }
    }
    return 0
}
