import ArgumentParser
import Foundation
import Yams

/// `policyd serve --config FILE`: the same settings as the flags, in YAML, one key per flag
/// (`opamp_port: 4320`, `data_dir: /var/lib/tailplane`, `drain: false`). Flags given on the command line
/// win over the file.
enum ConfigFile {
    /// The keys a config file may hold (the `serve` flags, with `_` for `-`).
    static let keys: Set<String> = [
        "opamp_port", "bind", "api_port", "api_bind", "data_dir", "database", "replica_name", "advertised_api_url",
        "api_tokens_file", "agent_tokens_file",
        "advertised_endpoint", "heartbeat_interval", "max_message_size", "max_connections", "log_level", "drain",
        "stage_timeout", "tls_cert", "tls_key", "tls_ca", "client_ca", "require_client_cert", "ca_dir",
        "enrolment_tokens_file",
        "cert_lifetime_days", "cert_renew_at", "package_base_url", "max_package_size",
        "package_signing_key",
    ]

    /// The file as command-line arguments.
    static func arguments(_ path: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read --config \(path)")
        }
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: text)
        } catch {
            throw ValidationError("\(path): not YAML: \(error)")
        }
        guard let mapping = loaded as? [String: Any] else {
            if loaded == nil { return [] }
            throw ValidationError("\(path): expected a mapping of settings, such as `api_port: 4321`")
        }
        var arguments: [String] = []
        for key in mapping.keys.sorted() {
            guard Self.keys.contains(key) else {
                throw ValidationError(
                    "\(path): unknown setting `\(key)`; settings are \(Self.keys.sorted().joined(separator: ", "))"
                )
            }
            let flag = "--" + key.replacingOccurrences(of: "_", with: "-")
            switch mapping[key] {
            case let value as Bool:
                arguments.append(value ? flag : "--no-" + key.replacingOccurrences(of: "_", with: "-"))
            case let value as Int: arguments += [flag, String(value)]
            case let value as Double: arguments += [flag, String(value)]
            case let value as String: arguments += [flag, value]
            default:
                throw ValidationError("\(path): `\(key)` must be a number, a string or true/false")
            }
        }
        return arguments
    }

    /// The command line with `--config FILE` replaced by the file's settings, placed before the flags given
    /// on the command line so those win.
    static func expand(_ arguments: [String]) throws -> [String] {
        guard let index = arguments.firstIndex(where: { $0 == "--config" || $0.hasPrefix("--config=") }) else {
            return arguments
        }
        var rest = arguments
        let path: String
        if rest[index].hasPrefix("--config=") {
            path = String(rest[index].dropFirst("--config=".count))
            rest.remove(at: index)
        } else {
            guard index + 1 < rest.count else { throw ValidationError("--config needs a file") }
            path = rest[index + 1]
            rest.removeSubrange(index...(index + 1))
        }
        let position = rest.first == "serve" ? 1 : 0
        rest.insert(contentsOf: try Self.arguments(path), at: position)
        return rest
    }
}
