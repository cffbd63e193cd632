import Foundation
import OpAMPProtocol

/// Reads protobuf sub-messages into the server's value types.
enum ProtobufConversion {
    static func string(_ value: OpAMP_AnyValue) -> String {
        switch value.value {
        case .stringValue(let text)?: return text
        case .boolValue(let flag)?: return flag ? "true" : "false"
        case .intValue(let number)?: return String(number)
        case .doubleValue(let number)?: return String(number)
        case .bytesValue(let data)?: return data.base64EncodedString()
        case .arrayValue(let array)?: return "[" + array.values.map(self.string).joined(separator: ", ") + "]"
        case .kvlistValue(let list)?:
            return "{" + list.values.map { "\($0.key): \(self.string($0.value))" }.joined(separator: ", ") + "}"
        case nil: return ""
        }
    }

    static func attributes(_ list: [OpAMP_KeyValue]) -> [String: String] {
        var result: [String: String] = [:]
        for pair in list { result[pair.key] = self.string(pair.value) }
        return result
    }

    static func description(_ message: OpAMP_AgentDescription) -> AgentDescription {
        AgentDescription(
            identifying: self.attributes(message.identifyingAttributes),
            nonIdentifying: self.attributes(message.nonIdentifyingAttributes)
        )
    }

    static func health(_ message: OpAMP_ComponentHealth, depth: Int = 0) -> AgentHealth {
        var components: [String: AgentHealth] = [:]
        if depth < 16 {
            for (name, child) in message.componentHealthMap { components[name] = self.health(child, depth: depth + 1) }
        }
        return AgentHealth(
            healthy: message.healthy,
            lastError: message.lastError,
            status: message.status,
            startTimeUnixNano: message.startTimeUnixNano,
            components: components
        )
    }

    static func files(_ map: OpAMP_AgentConfigMap) -> [String: ConfigFile] {
        map.configMap.mapValues { ConfigFile(body: [UInt8]($0.body), contentType: $0.contentType) }
    }

    /// `receivers → {otlp, …}` becomes `receivers/otlp`, ….
    static func components(_ available: OpAMP_AvailableComponents) -> Set<String> {
        var names = Set<String>()
        for (kind, details) in available.components {
            if details.subComponentMap.isEmpty { names.insert(kind) }
            for type in details.subComponentMap.keys { names.insert("\(kind)/\(type)") }
        }
        return names
    }

    static func report(_ status: OpAMP_RemoteConfigStatus) -> RemoteConfigReport {
        let state: RemoteConfigReport.State
        switch status.status {
        case .applied: state = .applied
        case .applying: state = .applying
        case .failed: state = .failed
        default: state = .unset
        }
        return RemoteConfigReport(
            hash: [UInt8](status.lastRemoteConfigHash),
            state: state,
            errorMessage: status.errorMessage
        )
    }

    static func remoteConfig(_ config: RemoteConfig) -> OpAMP_AgentRemoteConfig {
        var message = OpAMP_AgentRemoteConfig()
        message.configHash = Data(config.hash)
        var map = OpAMP_AgentConfigMap()
        for (name, file) in config.files {
            var entry = OpAMP_AgentConfigFile()
            entry.body = Data(file.body)
            entry.contentType = file.contentType
            map.configMap[name] = entry
        }
        message.config = map
        return message
    }
}
