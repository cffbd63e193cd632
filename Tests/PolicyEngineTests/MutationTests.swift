import Testing

@testable import PolicyEngine

/// Thousands of randomly damaged copies of the examples: the compiler never crashes, every
/// diagnostic points inside its file, and whatever still formats, formats idempotently.
@Suite struct MutationTests {
    static let fragments: [[UInt8]] =
        [
            "(", ")", "[", "]", "{", "}", "\"", "#", "==", "=", "!", "..", "/", ",", "and", "or", "not", "keep", "drop",
            "budget", "sampler", "when", "sample", "limit", "share", "salt", "burst", "0", "-1", "99999999999999999999",
            "0%", "150%", "1h30m", "500us", "\u{0}", "\n", " ", "\t", "status", "duration", "spans", "attr[\"x\"]",
            "ottl",
            "matches", "in", "µ", "“",
        ].map { Array($0.utf8) } + [[0xFF], [0xC3], [0xE2, 0x82]]

    static func mutate(_ bytes: [UInt8], using generator: inout SeededGenerator) -> [UInt8] {
        var bytes = bytes
        let edits = Int.random(in: 1...4, using: &generator)
        for _ in 0..<edits {
            let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &generator)
            switch Int.random(in: 0..<5, using: &generator) {
            case 0 where !bytes.isEmpty:
                let length = min(bytes.count - position, Int.random(in: 1...12, using: &generator))
                bytes.removeSubrange(position..<(position + length))
            case 1:
                bytes.insert(contentsOf: fragments.randomElement(using: &generator)!, at: position)
            case 2 where !bytes.isEmpty:
                bytes[position] = UInt8.random(in: 0...255, using: &generator)
            case 3 where !bytes.isEmpty:
                let length = min(bytes.count - position, Int.random(in: 1...40, using: &generator))
                let chunk = Array(bytes[position..<(position + length)])
                let target = Int.random(in: 0...bytes.count, using: &generator)
                bytes.insert(contentsOf: chunk, at: target)
            default:
                bytes.insert(UInt8.random(in: 0x20...0x7E, using: &generator), at: position)
            }
        }
        return bytes
    }

    @Test(arguments: 0..<8)
    func mutatedExamplesNeverCrash(seed: Int) throws {
        let originals = try examplePolicies()
        var generator = SeededGenerator(state: UInt64(seed) &* 0x1234_5678_9ABC)
        var compiledWithErrors = 0
        for round in 0..<400 {
            let original = originals[round % originals.count]
            let file = SourceFile(path: original.path, bytes: Self.mutate(original.bytes, using: &generator))
            let result = PolicyCompiler.compile([file])
            if result.hasErrors { compiledWithErrors += 1 }
            expectValidLocations(result.diagnostics, in: file)
            for diagnostic in result.diagnostics {
                _ = DiagnosticFormatter.text(diagnostic, source: file)
            }
            if let formatted = PolicyFormatter.format(file).formatted {
                let again = PolicyFormatter.format(SourceFile(path: file.path, text: formatted)).formatted
                #expect(again == formatted, "formatting is not idempotent for mutation \(round) of seed \(seed)")
            }
        }
        // The mutations must actually break things, or this test proves nothing.
        #expect(compiledWithErrors > 100)
    }
}
