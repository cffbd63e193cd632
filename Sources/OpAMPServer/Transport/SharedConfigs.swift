import NIOCore
import OpAMPProtocol
import SwiftProtobuf
import Synchronization

/// An encoded remote config, shared by every message that carries it (its bytes are held once, however many
/// agents it is written to or waits for).
final class EncodedConfig: Sendable {
    /// The `AgentRemoteConfig` protobuf bytes.
    let bytes: ByteBuffer

    init(bytes: ByteBuffer) {
        self.bytes = bytes
    }
}

/// A server message as it goes out: everything but the remote config (ending with the config field's tag
/// and length), then the config's bytes, shared with every other message carrying the same config.
///
/// Together they are the message's protobuf encoding: fields may come in any order, so the remote config
/// (field 3) may follow fields with higher numbers.
struct EncodedServerMessage: Sendable {
    /// The agent's own part (its instance UID, flags, capabilities…), after `leading`.
    var head: ByteBuffer
    /// The remote config, when the message carries one.
    var config: EncodedConfig?

    /// Bytes on the wire.
    var count: Int { self.head.readableBytes + (self.config?.bytes.readableBytes ?? 0) }
}

/// Encodes each distinct remote config once for the whole server.
///
/// A load balancer's config lists the whole ring: hundreds of kilobytes at tens of thousands of samplers,
/// the same for every load balancer of a group. Encoding it for each agent cost a copy per agent on every
/// ring change (gigabytes per round across thousands of load balancers, all alive at once while slow
/// readers catch up); now every agent's message points at one encoding. The last configs are kept, at most
/// `capacity` of them and `maxBytes` in all (the newest is always kept); a config is found again by its hash
/// and then compared in full, so two configs that share a hash are never confused.
final class SharedConfigs: Sendable {
    private struct Entry {
        var config: OpAMP_AgentRemoteConfig
        var encoded: EncodedConfig
        /// What the entry holds: the config and its encoding.
        var bytes: Int { 2 * self.encoded.bytes.readableBytes }
    }

    private let entries = Mutex<[Entry]>([])
    private let capacity: Int
    private let maxBytes: Int

    init(capacity: Int = 16, maxBytes: Int = 128 << 20) {
        self.capacity = max(1, capacity)
        self.maxBytes = maxBytes
    }

    /// `message` encoded after `leading` (the WebSocket header byte, or nothing over HTTP).
    func encode(
        _ message: OpAMP_ServerToAgent,
        leading: [UInt8] = [],
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) throws -> EncodedServerMessage {
        let config = message.hasRemoteConfig ? try self.encoded(message.remoteConfig, allocator: allocator) : nil
        var rest = message
        rest.clearRemoteConfig()
        let body: [UInt8] = try rest.serializedBytes()
        var head = allocator.buffer(capacity: leading.count + body.count + 11)
        head.writeBytes(leading)
        head.writeBytes(body)
        guard let config else { return EncodedServerMessage(head: head, config: nil) }
        // Field 3 (remote_config), wire type 2 (length-delimited), then the length as a varint.
        head.writeInteger(UInt8(3 << 3 | 2))
        var length = UInt64(config.bytes.readableBytes)
        while length >= 0x80 {
            head.writeInteger(UInt8(truncatingIfNeeded: length) | 0x80)
            length >>= 7
        }
        head.writeInteger(UInt8(length))
        return EncodedServerMessage(head: head, config: config)
    }

    /// The shared encoding of `config`, made now if it is not among the last ones.
    func encoded(_ config: OpAMP_AgentRemoteConfig, allocator: ByteBufferAllocator) throws -> EncodedConfig {
        if let found = self.find(config) { return found }
        // Encoded outside the lock; a thread that encoded the same config meanwhile wins (one copy is shared).
        let bytes: [UInt8] = try config.serializedBytes()
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        let made = Entry(config: config, encoded: EncodedConfig(bytes: buffer))
        return self.entries.withLock { entries in
            if let index = entries.firstIndex(where: { $0.config.configHash == config.configHash }) {
                if entries[index].config == config { return entries[index].encoded }
                entries.remove(at: index)
            }
            entries.append(made)
            var held = entries.reduce(0) { $0 + $1.bytes }
            while entries.count > 1, entries.count > self.capacity || held > self.maxBytes {
                held -= entries.removeFirst().bytes
            }
            return made.encoded
        }
    }

    /// The kept encoding of a config equal to `config`, now the most recently used.
    private func find(_ config: OpAMP_AgentRemoteConfig) -> EncodedConfig? {
        guard
            let candidate = self.entries.withLock({ entries in
                entries.first { $0.config.configHash == config.configHash }
            })
        else { return nil }
        // Same hash: the full comparison (a few tens of microseconds for a ring-sized config) decides, outside
        // the lock every event loop and push shares.
        guard candidate.config == config else { return nil }
        let found = candidate.encoded
        self.entries.withLock { entries in
            guard let index = entries.firstIndex(where: { $0.encoded === found }) else { return }
            entries.append(entries.remove(at: index))
        }
        return found
    }
}
