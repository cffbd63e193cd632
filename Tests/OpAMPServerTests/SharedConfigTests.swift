import Foundation
import NIOCore
import OpAMPProtocol
import SwiftProtobuf
import Testing

@testable import OpAMPServer

/// One encoding of each config for every agent it goes to, and the waiting budget counting it once.
@Suite struct SharedConfigTests {
    /// A ring-sized config (more than 2^14 bytes, so its length takes three varint bytes), told apart by `n`.
    static func ringConfig(_ n: Int, hash: String? = nil) -> OpAMP_AgentRemoteConfig {
        var file = OpAMP_AgentConfigFile()
        file.body = Data("# ring \(n)\n\(String(repeating: "- sampler-00042:4317\n", count: 20_000))".utf8)
        file.contentType = "text/yaml"
        var other = OpAMP_AgentConfigFile()
        other.body = Data("extra: \(n)".utf8)
        var config = OpAMP_AgentRemoteConfig()
        config.config.configMap = ["collector.yaml": file, "extra.yaml": other]
        config.configHash = Data((hash ?? "ring \(n)").utf8)
        return config
    }

    /// A config whose encoding is a little over `size` bytes.
    static func smallConfig(_ size: Int) -> OpAMP_AgentRemoteConfig {
        OpAMP_AgentRemoteConfig.with {
            $0.config.configMap[""] = OpAMP_AgentConfigFile.with { $0.body = Data(repeating: 0x61, count: size) }
            $0.configHash = Data("small \(size)".utf8)
        }
    }

    static func message(to agent: UInt64, _ config: OpAMP_AgentRemoteConfig?) -> OpAMP_ServerToAgent {
        var message = OpAMP_ServerToAgent()
        message.instanceUid = Data(uid(agent).bytes)
        message.capabilities =
            ServerCapabilities.acceptsStatus.rawValue | ServerCapabilities.offersRemoteConfig.rawValue
        message.flags = agent % 2 == 0 ? 0 : UInt64(OpAMP_ServerToAgentFlags.reportFullState.rawValue)
        if let config { message.remoteConfig = config }
        return message
    }

    static func wire(_ encoded: EncodedServerMessage) -> [UInt8] {
        Array(encoded.head.readableBytesView) + (encoded.config.map { Array($0.bytes.readableBytesView) } ?? [])
    }

    @Test func theAgentsPartAndTheSharedConfigTogetherAreTheMessage() throws {
        let shared = SharedConfigs()
        for agent: UInt64 in [1, 2] {
            let message = Self.message(to: agent, Self.ringConfig(1))
            let encoded = try shared.encode(message, leading: WebSocketFraming.header)
            #expect(encoded.config != nil)
            let decoded = try WebSocketFraming.decodeServerMessage(Self.wire(encoded))
            #expect(decoded == message)
            let whole: [UInt8] = try message.serializedBytes()
            #expect(encoded.count == 1 + whole.count)
        }
        // Lengths of one and two varint bytes, and an empty config (present, with nothing in it).
        for config in [
            OpAMP_AgentRemoteConfig.with { $0.configHash = Data([1]) }, Self.smallConfig(100), Self.smallConfig(300),
        ] {
            let message = Self.message(to: 4, config)
            let decoded = try WebSocketFraming.decodeServerMessage(
                Self.wire(try shared.encode(message, leading: WebSocketFraming.header))
            )
            #expect(decoded == message)
        }
        let empty = try OpAMP_ServerToAgent(
            serializedBytes: Self.wire(try shared.encode(Self.message(to: 5, OpAMP_AgentRemoteConfig())))
        )
        #expect(empty.hasRemoteConfig && empty.remoteConfig == OpAMP_AgentRemoteConfig())
        // Over HTTP: no header byte; a message without a config is all the agent's own.
        let plain = Self.message(to: 3, nil)
        let encoded = try shared.encode(plain)
        #expect(encoded.config == nil)
        #expect(try OpAMP_ServerToAgent(serializedBytes: Self.wire(encoded)) == plain)
    }

    @Test func eachDistinctConfigIsEncodedOnce() throws {
        let shared = SharedConfigs(capacity: 2)
        // Built separately for each agent (as each push builds its message): equal content is one encoding.
        let first = try #require(try shared.encode(Self.message(to: 1, Self.ringConfig(1))).config)
        let second = try #require(try shared.encode(Self.message(to: 2, Self.ringConfig(1))).config)
        #expect(first === second)
        // The same hash over other content is another config: never confused with the first.
        let impostor = Self.ringConfig(2, hash: "ring 1")
        let encoded = try shared.encode(Self.message(to: 3, impostor))
        #expect(encoded.config !== first)
        #expect(try OpAMP_ServerToAgent(serializedBytes: Self.wire(encoded)).remoteConfig == impostor)
        // The last `capacity` configs are kept: a third pushes the oldest out, which is then encoded anew.
        let two = try #require(try shared.encode(Self.message(to: 1, Self.ringConfig(2))).config)
        let three = try #require(try shared.encode(Self.message(to: 1, Self.ringConfig(3))).config)
        #expect(try shared.encode(Self.message(to: 2, Self.ringConfig(3))).config === three)
        #expect(try shared.encode(Self.message(to: 2, Self.ringConfig(2))).config === two)
        #expect(try shared.encode(Self.message(to: 2, impostor)).config !== encoded.config)
    }

    @Test func theKeptConfigsAreBoundedInBytes() throws {
        let one = try SharedConfigs().encoded(Self.ringConfig(1), allocator: ByteBufferAllocator()).bytes.readableBytes
        // Room for one config (it and its encoding), not two: each new one pushes the older out.
        let shared = SharedConfigs(capacity: 16, maxBytes: 3 * one)
        let first = try shared.encode(Self.message(to: 1, Self.ringConfig(1))).config
        _ = try shared.encode(Self.message(to: 1, Self.ringConfig(2)))
        #expect(try shared.encode(Self.message(to: 2, Self.ringConfig(1))).config !== first)
        // Larger than the limit alone: still kept (the newest always is), so its agents share it.
        let tiny = SharedConfigs(capacity: 16, maxBytes: 1)
        let kept = try tiny.encode(Self.message(to: 1, Self.ringConfig(3))).config
        #expect(try tiny.encode(Self.message(to: 2, Self.ringConfig(3))).config === kept)
    }

    @Test func aSharedConfigCountsOnceAgainstTheWaitingBudget() throws {
        let shared = SharedConfigs()
        let messages = try (1...3).map { try shared.encode(Self.message(to: $0, Self.ringConfig(1))) }
        let size = try #require(messages[0].config).bytes.readableBytes
        let heads = messages.reduce(0) { $0 + $1.head.readableBytes }
        let budget = WaitingConfigs(limit: size + heads)
        for message in messages { #expect(budget.hold(message, always: false)) }
        #expect(budget.bytes == size + heads, "three agents waiting for one config hold it once")
        // Another config would pass the limit: refused and not counted, unless it replaces one that waits.
        let other = try shared.encode(Self.message(to: 4, Self.ringConfig(2)))
        #expect(!budget.hold(other, always: false))
        #expect(budget.bytes == size + heads)
        budget.release(messages[0])
        #expect(budget.hold(other, always: true))
        #expect(budget.bytes > budget.limit)
        for message in messages.dropFirst() + [other] { budget.release(message) }
        #expect(budget.bytes == 0)
    }
}
