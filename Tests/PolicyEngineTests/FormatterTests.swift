import Foundation
import Testing

@testable import PolicyEngine

@Suite struct FormatterTests {
    private static let messy = """
        # header comment

        sampler {   decision_wait 30s  max_traces 200000  cache sampled 500000 unsampled 1000000 }   # after the block
        keep   errors   when status==ERROR # trailing
        keep slow_checkout when service=="checkout"
           and duration>500ms   # inside a wrapped rule


        budget b 100 spans/s { # on the brace
          keep a when status == ERROR share 50%
          # about c
          keep c share 50%
          # before the closing brace
        }
        keep vip when attr["customer.tier"] in ["gold","platinum"]  sample 50%
        keep x when not (status == ERROR or spans>=10)
        # final
        """

    @Test func canonicalForm() throws {
        let formatted = try #require(PolicyFormatter.format(SourceFile(path: "m.policy", text: Self.messy)).formatted)
        #expect(
            formatted == """
                # header comment

                sampler {
                    decision_wait 30s
                    max_traces 200000
                    cache sampled 500000 unsampled 1000000
                }  # after the block
                keep errors when status == ERROR  # trailing
                keep slow_checkout when service == "checkout" and duration > 500ms  # inside a wrapped rule

                budget b 100 spans/s {  # on the brace
                    keep a when status == ERROR share 50%
                    # about c
                    keep c share 50%
                    # before the closing brace
                }
                keep vip when attr["customer.tier"] in ["gold", "platinum"] sample 50%
                keep x when not (status == ERROR or spans >= 10)
                # final

                """
        )
    }

    @Test func idempotentOnMessyInput() throws {
        let once = try #require(PolicyFormatter.format(SourceFile(path: "m.policy", text: Self.messy)).formatted)
        let twice = try #require(PolicyFormatter.format(SourceFile(path: "m.policy", text: once)).formatted)
        #expect(once == twice)
    }

    @Test func examplesAreCanonicalAndIdempotent() throws {
        for file in try examplePolicies() {
            let formatted = try #require(PolicyFormatter.format(file).formatted)
            #expect(Array(formatted.utf8) == file.bytes, "\(file.path) is not in canonical form; run policyctl fmt")
            let again = PolicyFormatter.format(SourceFile(path: file.path, text: formatted)).formatted
            #expect(again == formatted)
        }
    }

    @Test func keepsEveryComment() throws {
        let formatted = try #require(PolicyFormatter.format(SourceFile(path: "m.policy", text: Self.messy)).formatted)
        let comments = Self.messy.split(separator: "\n").compactMap { line in
            line.firstIndex(of: "#").map { String(line[$0...]).trimmingCharacters(in: .whitespaces) }
        }
        for comment in comments {
            #expect(formatted.contains(comment), "lost comment \(comment)")
        }
    }

    @Test func formattingKeepsMeaning() throws {
        for file in try examplePolicies() + [SourceFile(path: "m.policy", text: Self.messy)] {
            let formatted = try #require(PolicyFormatter.format(file).formatted)
            let before = PolicyCompiler.compile([file]).policySet.map(Self.withoutOrigins)
            let after = PolicyCompiler.compile([SourceFile(path: file.path, text: formatted)]).policySet.map(
                Self.withoutOrigins
            )
            #expect(before == after, "\(file.path) means something else after formatting")
        }
    }

    @Test func refusesFilesWithSyntaxErrors() {
        let result = PolicyFormatter.format(SourceFile(path: "bad.policy", text: "keep a when (status == ERROR\n"))
        #expect(result.formatted == nil)
        #expect(result.diagnostics.first?.code == .expectedToken)
    }

    static func withoutOrigins(_ set: PolicySet) -> [Policy] {
        set.policies.map { policy in
            var copy = policy
            copy.origin = nil
            return copy
        }
    }
}
