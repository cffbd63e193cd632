#!/usr/bin/env python3
"""Regenerates docs/diagnostics.md: for each code, an example, what policyctl prints, and the fix.

Run after building policyctl:  swift build && python3 scripts/diagnostics-doc.py
"""
import os, subprocess, tempfile, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICYCTL = os.path.join(ROOT, ".build", "debug", "policyctl")

# code: (title, why, bad source (bytes or str), fixed source)
ENTRIES = [
 ("TP1001", "Unexpected character", "A character that is not part of the language, such as `@`, `&&` or a typographic quote.",
  'keep errors when status == ERROR && spans > 10\n', 'keep errors when status == ERROR and spans > 10\n'),
 ("TP1002", "Invalid UTF-8", "Policy files are UTF-8 text. The byte is reported where it is, in strings and comments too.",
  b'keep eu when service == "caf\xe9"\n', 'keep eu when service == "café"\n'),
 ("TP1003", "Unterminated string", "A string must close on the line it opens.",
  'keep checkout when service == "checkout\n', 'keep checkout when service == "checkout"\n'),
 ("TP1004", "NUL byte", "A NUL byte usually means a binary or UTF-16 file was saved as a policy.",
  b'keep errors when status == ERROR\x00\n', 'keep errors when status == ERROR\n'),
 ("TP1005", "Not a number with one unit", "Values take one unit; compound durations such as `1h30m` are not supported.",
  'keep slow when duration > 1h30m\n', 'keep slow when duration > 90m\n'),
 ("TP1006", "Empty file", "A policy file with nothing in it is almost always a mistake. A file with only comments is fine.",
  '\n', '# placeholder: rules for the search team go here\n'),
 ("TP1007", "`=` instead of `==`", "Conditions compare with `==`.",
  'keep errors when status = ERROR\n', 'keep errors when status == ERROR\n'),
 ("TP1099", "Too many errors", "After 100 errors in one file the rest are not reported; fix the first ones and run again.",
  None, None),
 ("TP2001", "Expected a declaration", "Every declaration starts with `keep`, `drop`, `budget` or `sampler`.",
  'kep errors when status == ERROR\n', 'keep errors when status == ERROR\n'),
 ("TP2002", "Expected a rule name", "Every rule has a name; it becomes the collector policy name and shows in metrics.",
  'keep when status == ERROR\n', 'keep errors when status == ERROR\n'),
 ("TP2003", "Expected a condition", "`when` must be followed by a condition.",
  'keep errors when sample 10%\n', 'keep errors when status == ERROR sample 10%\n'),
 ("TP2004", "Expected a token", "A closing bracket, a comma, a key in quotes or similar is missing.",
  'keep errors when (status == ERROR or spans > 100\n', 'keep errors when (status == ERROR or spans > 100)\n'),
 ("TP2005", "Unexpected token", "Something follows a complete rule that does not belong to it.",
  'keep errors when status == ERROR spans > 100\n', 'keep errors when status == ERROR and spans > 100\n'),
 ("TP2006", "Nested too deeply", "Conditions may nest parentheses and `not` at most 64 levels deep.",
  'keep a when ' + '(' * 65 + 'status == ERROR' + ')' * 65 + '\n', 'keep a when status == ERROR\n'),
 ("TP2007", "Keyword used as a name", "Words such as `and`, `or`, `not`, `in`, `salt` cannot name rules.",
  'keep and when status == ERROR\n', 'keep and_errors when status == ERROR\n'),
 ("TP2008", "Clause given twice", "Each of `when`, `sample`, `limit` and `share` appears at most once per rule.",
  'keep errors when status == ERROR when spans > 10\n', 'keep errors when status == ERROR and spans > 10\n'),
 ("TP2009", "Expected a value", "An operator or clause is missing its value.",
  'keep errors when status ==\n', 'keep errors when status == ERROR\n'),
 ("TP3001", "Unknown field", "Conditions test `status`, `duration`, `spans`, `service`, `attr[\"key\"]`, `tracestate[\"key\"]`, `sampled_flag` and `ottl`.",
  'keep errors when stauts == ERROR\n', 'keep errors when status == ERROR\n'),
 ("TP3002", "Operator not supported", "Each field supports its own operators; `status` has no order, `duration` has no exact equality.",
  'keep errors when status > OK\n', 'keep errors when status == ERROR\n'),
 ("TP3003", "Wrong kind of value", "The value does not fit the field: a string where a duration belongs, a list where a string belongs, and so on.",
  'keep slow when duration > "500ms"\n', 'keep slow when duration > 500ms\n'),
 ("TP3004", "Unknown unit", "Durations take `ms`, `s`, `m`, `h`; sizes take `B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`; rates are `spans/s` or `bytes/s`.",
  'keep slow when duration > 500mss\n', 'keep slow when duration > 500ms\n'),
 ("TP3005", "Unknown status code", "Status codes are `OK`, `ERROR` and `UNSET`, in upper case as the collector spells them.",
  'keep errors when status == error\n', 'keep errors when status == ERROR\n'),
 ("TP3006", "Duplicate rule name", "Rule names are unique across the whole policy set (every file), because they become collector policy names.",
  'keep errors when status == ERROR\nkeep errors when spans > 100\n', 'keep errors when status == ERROR\nkeep big_traces when spans > 100\n'),
 ("TP3007", "Second `sampler` block", "A policy set has one `sampler` block.",
  'sampler { max_traces 100000 }\nsampler { decision_wait 10s }\n', 'sampler {\n    max_traces 100000\n    decision_wait 10s\n}\n'),
 ("TP3008", "Unknown sampler setting", "The setting does not exist; collector key names are recognised and mapped to the language's name.",
  'sampler { num_traces 100000 }\n', 'sampler { max_traces 100000 }\n'),
 ("TP3009", "Invalid setting value", "The setting exists but its value does not fit.",
  'sampler { ottl_error_mode loud }\n', 'sampler { ottl_error_mode ignore }\n'),
 ("TP3010", "Numeric bound of 0", "The collector's `numeric_attribute` reads a bound of 0 as \"no bound\", so a test that needs 0 as a bound would silently mean something else.",
  'keep retried when attr["retry.count"] >= 0\n', 'keep retried when ottl span "attributes[\\"retry.count\\"] >= 0"\n'),
 ("TP3011", "Negation that cannot be compiled faithfully", "The collector allows `not` only as a whole top-level policy. Negated attribute tests can be nested (as `invert_match`); negated status, tracestate, flag and OTTL tests cannot. Note that `not status == OK` means *no span is OK*; if you mean *some span is not OK*, say so with `status in [ERROR, UNSET]`, which nests.",
  'keep odd when service == "search" and not status == OK\n', 'keep odd when service == "search" and status in [ERROR, UNSET]\n'),
 ("TP3012", "`limit` with `or`", "`or` becomes separate collector policies, and each would get the full limit.",
  'keep noisy when service == "a" or service == "b" limit 100 spans/s\n', 'keep noisy when service in ["a", "b"] limit 100 spans/s\n'),
 ("TP3013", "`or` in a budget rule", "A budget member is one composite sub-policy with one share.",
  'budget b 100 spans/s {\n    keep x when status == ERROR or spans > 50 share 100%\n}\n',
  'budget b 100 spans/s {\n    keep x when status == ERROR share 50%\n    keep y when spans > 50 share 50%\n}\n'),
 ("TP3014", "Budget rule without a share", "The collector gives a composite member without an allocation nothing at all.",
  'budget b 100 spans/s {\n    keep x when status == ERROR\n}\n', 'budget b 100 spans/s {\n    keep x when status == ERROR share 100%\n}\n'),
 ("TP3015", "Shares over 100%", "Shares are parts of the budget.",
  'budget b 100 spans/s {\n    keep x when status == ERROR share 70%\n    keep y share 50%\n}\n',
  'budget b 100 spans/s {\n    keep x when status == ERROR share 70%\n    keep y share 30%\n}\n'),
 ("TP3016", "`share` outside a budget", "Only members of a `budget` have shares.",
  'keep errors when status == ERROR share 50%\n', 'keep errors when status == ERROR\n'),
 ("TP3017", "Invalid regular expression", "Patterns must compile and use only what Go's RE2 supports (no lookaround, backreferences, atomic groups or possessive quantifiers).",
  'keep api when attr["http.route"] matches "/api/(?!internal).*"\n', 'keep api when attr["http.route"] matches "/api/.*" and not attr["http.route"] matches "/api/internal.*"\n'),
 ("TP3018", "Empty string", "The collector ignores empty strings in `values`, so the test could never match.",
  'keep anonymous when attr["user.id"] == ""\n', 'keep anonymous when ottl span "attributes[\\"user.id\\"] == \\"\\""\n'),
 ("TP3019", "Sub-millisecond duration", "The collector measures trace duration in whole milliseconds.",
  'keep slow when duration > 500us\n', 'keep slow when duration > 1ms\n'),
 ("TP3020", "Too many alternatives", "A condition expands (through `or`, and `not` over `and`) into more than 32 top-level policies.",
  'keep x when (' + ' or '.join(f'service == "s{i}"' for i in range(6)) + ') and (' + ' or '.join(f'spans == {i+1}' for i in range(1, 7)) + ')\n',
  'keep x when service in ["s0", "s1", "s2", "s3", "s4", "s5"] and spans in 2..7\n'),
 ("TP3021", "Value out of range", "The number does not fit the collector's field, or two values contradict each other (a burst smaller than the rate).",
  'keep huge when spans > 99999999999999999999\n', 'keep huge when spans > 100000\n'),
 ("TP3022", "`drop` in a budget", "A budget holds `keep` rules; drop rules run before everything anyway.",
  'budget b 100 spans/s {\n    drop noise when service == "noise"\n    keep rest share 100%\n}\n',
  'drop noise when service == "noise"\nbudget b 100 spans/s {\n    keep rest share 100%\n}\n'),
 ("TP3023", "Empty list", "`in []` never matches.",
  'keep vip when attr["tier"] in []\n', 'keep vip when attr["tier"] in ["gold"]\n'),
 ("TP3024", "Reversed range", "A range is written low..high.",
  'keep mid when spans in 100..10\n', 'keep mid when spans in 10..100\n'),
 ("TP3025", "Empty budget", "A budget needs at least one member.",
  'budget b 100 spans/s { }\n', 'budget b 100 spans/s {\n    keep everything share 100%\n}\n'),
 ("TP3026", "Setting given twice", "Each sampler setting appears once.",
  'sampler { max_traces 1000 max_traces 2000 }\n', 'sampler { max_traces 2000 }\n'),
 ("TP3027", "Invalid percentage", "Percentages are not negative, and a share must be above 0% (the collector turns a 0% allocation into an equal share).",
  'keep base sample -5%\n', 'keep base sample 5%\n'),
 ("TP3028", "`limit` in a budget", "A budget member is limited by its share.",
  'budget b 100 spans/s {\n    keep x limit 10 spans/s share 100%\n}\n', 'budget b 100 spans/s {\n    keep x share 100%\n}\n'),
 ("TP3029", "`drop` with an upper bound on `duration`", "The collector tests an upper duration bound on the duration seen so far as it reads a trace's spans, so a drop rule with one would drop long traces whose first spans were short.",
  'drop short when duration < 500ms\n', 'keep short when duration < 500ms\n'),
 ("TP3030", "Upper bound on `duration` with other tests", "The collector tests an upper duration bound on the duration seen so far as it reads a trace's spans. Without a lower bound (or with one of 1 ms or less) the test passes as soon as the first spans are short, so inside `and`, in a budget member, or with `sample` or `limit`, it matches nearly every trace. `duration < D` alone in a `keep` rule is exact (it compiles to `not` of a lower bound).",
  'keep fast_search when service == "search" and duration < 200ms\n', 'keep fast when duration < 200ms\n'),
 ("TP4001", "Duplicate condition (warning)", "Two rules compile to the same test; the second never changes a decision.",
  'keep errors when status == ERROR\nkeep failures when status == ERROR\n', 'keep errors when status == ERROR\n'),
 ("TP4002", "Shadowed by a rule that keeps everything (warning)", "The collector ORs keep rules, so after `keep all` no other keep rule changes a decision.",
  'keep all\nkeep errors when status == ERROR\n', 'keep errors when status == ERROR\nkeep baseline sample 10%\n'),
 ("TP4003", "Rule never matches (warning)", "The condition contradicts itself, or `sample 0%` / a limit of 0 keeps nothing. The rule is left out of the compiled set.",
  'keep odd when spans > 100 and spans < 10\n', 'keep odd when spans > 100 or spans < 10\n'),
 ("TP4004", "Condition always true (warning)", "Part of the condition holds for every trace (every trace has at least one span and lasts at least 0 ms).",
  'keep checkout when service == "checkout" and spans >= 1\n', 'keep checkout when service == "checkout"\n'),
 ("TP4005", "Drop never matches (warning)", "A drop rule whose condition can never be true.",
  'drop tiny when spans > 10 and spans < 5\n', 'drop tiny when spans < 2\n'),
 ("TP4006", "Percentage over 100 (warning)", "Read as 100%.",
  'keep vip sample 150%\n', 'keep vip sample 100%\n'),
 ("TP4007", "Unreachable budget member (warning)", "The collector gives a trace to the first member that matches, with no fall-through; a member after one that matches everything is never reached.",
  'budget b 100 spans/s {\n    keep rest share 50%\n    keep errors when status == ERROR share 50%\n}\n',
  'budget b 100 spans/s {\n    keep errors when status == ERROR share 50%\n    keep rest share 50%\n}\n'),
 ("TP4008", "Unused budget (warning)", "Shares add up to less than 100%; the collector never lends the rest to other members.",
  'budget b 100 spans/s {\n    keep errors when status == ERROR share 50%\n}\n', 'budget b 100 spans/s {\n    keep errors when status == ERROR share 100%\n}\n'),
 ("TP4009", "Drop everything (warning)", "A drop rule without a condition drops every trace.",
  'drop everything\n', 'drop noise when service == "noise"\n'),
 ("TP4010", "Separate attribute tests (warning)", "Each attribute test may match a different span, so two bounds on one key do not test one value.",
  'keep server_errors when attr["http.status"] >= 500 and attr["http.status"] <= 599\n', 'keep server_errors when attr["http.status"] in 500..599\n'),
 ("TP4011", "`decision_wait` under 1s (warning)", "The collector decides on a one-second tick.",
  'sampler { decision_wait 500ms }\n', 'sampler { decision_wait 1s }\n'),
 ("TP4012", "Decision cache smaller than `max_traces` (warning)", "Late spans whose decision fell out of the cache are decided again on partial data.",
  'sampler { max_traces 200000 cache sampled 1000 }\n', 'sampler { max_traces 200000 cache sampled 2000000 }\n'),
 ("TP4013", "Duration window (warning)", "A range on `duration` combined with other tests compiles to a latency window, which the collector tests on the duration seen so far as it reads spans: a trace longer than the upper end can still match once a prefix of it fell inside. `duration < D` alone in a `keep` rule is exact.",
  'keep mid_search when service == "search" and duration in 100ms..200ms\n', 'keep slow_search when service == "search" and duration >= 200ms\n'),
]

def run(source):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "example.policy")
        with open(path, "wb") as f:
            f.write(source if isinstance(source, bytes) else source.encode())
        out = subprocess.run([POLICYCTL, "validate", path], capture_output=True, cwd=d)
        text = out.stderr.decode("utf-8", "replace").replace(path, "example.policy")
        return out.returncode, text

def main():
    lines = ["# Diagnostics", "",
             "Every problem `policyctl` reports has a stable code. Errors (`TP1xxx` reading, `TP2xxx` grammar,",
             "`TP3xxx` meaning) stop the policy set from compiling; warnings (`TP4xxx`) do not, unless",
             "`policyctl validate --strict` is used. Output looks like this:", "",
             "```", "path:line:col: error: message [TPnnnn]", "    the source line", "    ^~~~ under the exact span",
             "    help: what to write instead", "```", "",
             "`--format json` prints the same diagnostics as JSON (file, start/end line and column, code, severity,",
             "message, suggestion, notes); `--format github` prints GitHub Actions annotations.", "",
             "This file is generated by `scripts/diagnostics-doc.py` from the examples below; a test checks that",
             "every code has a section.", ""]
    for code, title, why, bad, good in ENTRIES:
        lines += [f"## {code} {title}", "", why, ""]
        if bad is None:
            lines += ["Example: a file with 150 stray `@` characters reports 100 errors, then `TP1099`.", ""]
            continue
        status, output = run(bad)
        if code not in output:
            print(f"example for {code} does not produce it:\n{output}", file=sys.stderr)
            sys.exit(1)
        shown = bad.decode("utf-8", "replace") if isinstance(bad, bytes) else bad
        lines += ["```", shown.rstrip("\n"), "```", "", "```"]
        lines += [l for l in output.rstrip("\n").split("\n") if not l.startswith("1 file")]
        lines += ["```", "", "Fix:", "", "```", good.rstrip("\n"), "```", ""]
        status, output = run(good)
        if status != 0 or "warning:" in output:
            print(f"fix for {code} is not clean:\n{output}", file=sys.stderr)
            sys.exit(1)
    with open(os.path.join(ROOT, "docs", "diagnostics.md"), "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")

main()
