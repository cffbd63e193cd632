/// The settings a `sampler { … }` block accepts, and the collector names people tend to type instead.
enum SamplerSettingSchema {
    /// DSL name → collector key, in documentation order.
    static let settings: [(name: String, collectorKey: String)] = [
        ("decision_wait", "decision_wait"),
        ("decision_wait_after_root", "decision_wait_after_root_received"),
        ("max_traces", "num_traces"),
        ("expected_traces", "expected_new_traces_per_sec"),
        ("block_on_overflow", "block_on_overflow"),
        ("cache", "decision_cache"),
        ("sample_on_first_match", "sample_on_first_match"),
        ("drop_pending_on_shutdown", "drop_pending_traces_on_shutdown"),
        ("max_trace_size", "maximum_trace_size_bytes"),
        ("ottl_error_mode", "error_mode"),
    ]

    static let names: Set<String> = Set(settings.map(\.name))

    /// Collector keys (and other likely spellings) mapped to the DSL name.
    static let aliases: [String: String] = Dictionary(
        uniqueKeysWithValues: settings.filter { $0.name != $0.collectorKey }.map { ($0.collectorKey, $0.name) }
    )

    static func isSettingName(_ word: String) -> Bool {
        names.contains(word) || aliases[word] != nil
    }
}

extension Checker {
    /// Validates one `sampler` block into settings.
    mutating func checkSampler(_ sampler: SamplerDeclaration, into settings: inout SamplerSettings) {
        var seen: [String: SourceRange] = [:]
        var reader = ValueReader(sink: self.sink)
        defer { self.sink = reader.sink }
        for setting in sampler.settings {
            let name = setting.name.name
            guard SamplerSettingSchema.names.contains(name) else {
                let suggestion: String
                if let dslName = SamplerSettingSchema.aliases[name] {
                    suggestion = "write `\(dslName)` (the collector's `\(name)`)"
                } else if let close = Spelling.closest(to: name, in: SamplerSettingSchema.names) {
                    suggestion = "did you mean `\(close)`?"
                } else {
                    suggestion =
                        "settings are " + SamplerSettingSchema.settings.map { "`\($0.name)`" }.joined(separator: ", ")
                }
                reader.sink.emit(
                    .unknownSetting,
                    "unknown sampler setting `\(name)`",
                    at: setting.name.range,
                    suggestion: suggestion
                )
                continue
            }
            if let previous = seen[name] {
                reader.sink.emit(
                    .duplicateSetting,
                    "`\(name)` is set twice",
                    at: setting.name.range,
                    suggestion: "keep one `\(name)`",
                    notes: [Diagnostic.Note(message: "first set here", location: reader.sink.reference(previous))]
                )
                continue
            }
            seen[name] = setting.name.range
            let values = setting.values
            func single() -> Value? {
                guard values.count == 1 else {
                    reader.sink.emit(
                        .invalidSettingValue,
                        values.isEmpty ? "`\(name)` needs a value" : "`\(name)` takes one value, found \(values.count)",
                        at: values.isEmpty ? setting.name.range : setting.range,
                        suggestion: Self.settingExample(name)
                    )
                    return nil
                }
                return values[0]
            }
            switch name {
            case "decision_wait":
                guard let value = single(), let ms = reader.durationMs(value, what: "`decision_wait`") else { continue }
                if ms <= 0 {
                    reader.sink.emit(
                        .invalidSettingValue,
                        "`decision_wait` must be positive",
                        at: value.range,
                        suggestion: "write `decision_wait 30s`"
                    )
                    continue
                }
                if ms < 1000 {
                    reader.sink.emit(
                        .decisionWaitTooShort,
                        "`decision_wait` under 1s acts as 1s: the collector decides on a one-second tick",
                        at: value.range,
                        suggestion:
                            "write `decision_wait 1s` or longer; for early decisions use `decision_wait_after_root`"
                    )
                }
                settings.decisionWaitMs = ms
            case "decision_wait_after_root":
                guard let value = single(), let ms = reader.durationMs(value, what: "`decision_wait_after_root`") else {
                    continue
                }
                settings.decisionWaitAfterRootMs = ms
            case "max_traces":
                guard let value = single(), let count = reader.integer(value, what: "`max_traces`", minimum: 1) else {
                    continue
                }
                settings.maxTraces = count
            case "expected_traces":
                guard let value = single() else { continue }
                var amount = value
                if case .rate(let inner, let unit, _) = value {
                    if let unit, unit.name != "traces" {
                        reader.sink.emit(
                            .wrongValueType,
                            "`expected_traces` counts traces, not \(unit.name)",
                            at: unit.range,
                            suggestion: "write `expected_traces 1000/s`"
                        )
                        continue
                    }
                    amount = inner
                }
                guard let count = reader.integer(amount, what: "`expected_traces`", minimum: 0) else { continue }
                settings.expectedNewTracesPerSecond = count
            case "block_on_overflow", "sample_on_first_match", "drop_pending_on_shutdown":
                guard let value = single(), let flag = reader.bool(value, what: "`\(name)`") else { continue }
                switch name {
                case "block_on_overflow": settings.blockOnOverflow = flag
                case "sample_on_first_match": settings.sampleOnFirstMatch = flag
                default: settings.dropPendingTracesOnShutdown = flag
                }
            case "cache":
                self.checkCache(setting, reader: &reader, into: &settings)
            case "max_trace_size":
                guard let value = single(), let bytes = reader.sizeBytes(value, what: "`max_trace_size`") else {
                    continue
                }
                if bytes <= 0 {
                    reader.sink.emit(
                        .invalidSettingValue,
                        "`max_trace_size` must be positive",
                        at: value.range,
                        suggestion: "write `max_trace_size 16MiB`"
                    )
                    continue
                }
                settings.maximumTraceSizeBytes = bytes
            case "ottl_error_mode":
                guard let value = single() else { continue }
                guard case .identifier(let identifier) = value, let mode = OTTLErrorMode(rawValue: identifier.name)
                else {
                    reader.sink.emit(
                        .invalidSettingValue,
                        "`ottl_error_mode` is `propagate`, `ignore` or `silent`, not \(ValueReader.describe(value))",
                        at: value.range,
                        suggestion: "write `ottl_error_mode ignore`"
                    )
                    continue
                }
                settings.ottlErrorMode = mode
            default:
                break
            }
        }
        let maxTraces = settings.maxTraces ?? 50_000
        for (size, label) in [(settings.sampledCacheSize, "sampled"), (settings.nonSampledCacheSize, "unsampled")] {
            if let size, size > 0, size < maxTraces, let range = seen["cache"] {
                reader.sink.emit(
                    .decisionCacheTooSmall,
                    "the \(label) decision cache (\(size)) is smaller than `max_traces` (\(maxTraces)); late spans of evicted decisions are decided again",
                    at: range,
                    suggestion: "size the cache well above `max_traces`, for example `cache \(label) \(maxTraces * 10)`"
                )
            }
        }
    }

    private mutating func checkCache(
        _ setting: Setting,
        reader: inout ValueReader,
        into settings: inout SamplerSettings
    ) {
        var index = 0
        var any = false
        let values = setting.values
        while index < values.count {
            guard case .identifier(let which) = values[index], which.name == "sampled" || which.name == "unsampled"
            else {
                reader.sink.emit(
                    .invalidSettingValue,
                    "expected `sampled` or `unsampled` in `cache`, found \(ValueReader.describe(values[index]))",
                    at: values[index].range,
                    suggestion: "write `cache sampled 500000 unsampled 1000000`"
                )
                return
            }
            guard index + 1 < values.count else {
                reader.sink.emit(
                    .invalidSettingValue,
                    "`\(which.name)` needs a size",
                    at: which.range,
                    suggestion: "write `cache \(which.name) 500000`"
                )
                return
            }
            guard let size = reader.integer(values[index + 1], what: "the \(which.name) cache size", minimum: 0) else {
                return
            }
            if which.name == "sampled" { settings.sampledCacheSize = size } else { settings.nonSampledCacheSize = size }
            any = true
            index += 2
        }
        if !any {
            reader.sink.emit(
                .invalidSettingValue,
                "`cache` needs at least one size",
                at: setting.range,
                suggestion: "write `cache sampled 500000 unsampled 1000000`"
            )
        }
    }

    static func settingExample(_ name: String) -> String {
        switch name {
        case "decision_wait": "write `decision_wait 30s`"
        case "decision_wait_after_root": "write `decision_wait_after_root 5s`"
        case "max_traces": "write `max_traces 200000`"
        case "expected_traces": "write `expected_traces 1000/s`"
        case "max_trace_size": "write `max_trace_size 16MiB`"
        case "ottl_error_mode": "write `ottl_error_mode ignore`"
        default: "write `\(name) true`"
        }
    }
}
