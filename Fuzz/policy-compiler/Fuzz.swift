// libFuzzer target: policy source bytes -> lex, parse, check, lower, format.
// Built by scripts/fuzz.sh (a package target only with TAILPLANE_FUZZ=1, never in a normal build).
//
// Beyond "no crash", it checks:
// - every diagnostic's start and end lie inside the file, start before end, and (for valid UTF-8 input)
//   on a character boundary;
// - a file that compiles cleanly formats to a file that compiles to the same IR (source positions aside),
//   and formatting that again changes nothing.
import Foundation

@testable import PolicyEngine

/// `precondition` that keeps its message in optimized builds (the fuzzers are built with -O).
private func require(_ condition: Bool, _ message: @autoclosure () -> String = "") {
    if !condition { fatalError(message()) }
}

private let path = "fuzz.policy"

private func offset(of location: SourceLocation, in bytes: [UInt8]) -> Int? {
    var line = 1
    var lineStart = 0
    if location.line < 1 || location.column < 1 { return nil }
    var index = 0
    while line < location.line {
        guard index < bytes.count else { return nil }
        if bytes[index] == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        index += 1
    }
    let offset = lineStart + location.column - 1
    return offset <= bytes.count ? offset : nil
}

/// The IR as JSON without source positions (formatting moves them).
private func comparable(_ set: PolicySet) -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let object = (try? JSONSerialization.jsonObject(with: (try? encoder.encode(set)) ?? Data())) ?? [:]
    func strip(_ value: Any) -> Any {
        if let dictionary = value as? [String: Any] {
            var out: [String: Any] = [:]
            for (key, inner) in dictionary where key != "origin" && key != "shareOrigin" { out[key] = strip(inner) }
            return out
        }
        if let array = value as? [Any] { return array.map(strip) }
        return value
    }
    return (try? JSONSerialization.data(withJSONObject: strip(object), options: [.sortedKeys])) ?? Data()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPolicyCompiler(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let file = SourceFile(path: path, bytes: bytes)
    let result = PolicyCompiler.compile([file])
    let validUTF8 = String(validating: bytes, as: UTF8.self) != nil
    for diagnostic in result.diagnostics {
        guard let start = offset(of: diagnostic.start, in: bytes), let end = offset(of: diagnostic.end, in: bytes)
        else {
            fatalError("diagnostic \(diagnostic.code) at \(diagnostic.start)-\(diagnostic.end) lies outside the file")
        }
        require(start <= end, "diagnostic \(diagnostic.code) ends before it starts")
        if validUTF8 {
            for position in [start, end] where position < bytes.count {
                require(bytes[position] & 0xC0 != 0x80, "diagnostic \(diagnostic.code) splits a character")
            }
        }
    }
    guard let policySet = result.policySet, let formatted = PolicyFormatter.format(file).formatted else { return 0 }
    let again = PolicyFormatter.format(SourceFile(path: path, text: formatted))
    require(again.formatted == formatted, "formatting a formatted file changed it")
    let recompiled = PolicyCompiler.compile([SourceFile(path: path, text: formatted)])
    guard let reformattedSet = recompiled.policySet else {
        fatalError("the formatted file does not compile: \(recompiled.diagnostics.map(\.message))")
    }
    require(comparable(reformattedSet) == comparable(policySet), "the formatted file compiles to another IR")
    return 0
}
