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
/// readers catch up); now every agent's message points at one encoding. The last `capacity` configs are
/// kept; a config is found again by its hash and then compared in full, so two configs that share a hash
/// are never confused.
final class SharedConfigs: Sendable {
    private struct Entry {
        var config: OpAMP_AgentRemoteConfig
        var encoded: EncodedConfig
    }

    private let entries = Mutex<[Entry]>([])
    private let capacity: Int

    init(capacity: Int = 8) {
        self.capacity = max(1, capacity)
    }

    /// `message` encoded after `leading` (the WebSocket header byte, or nothing over HTTP).
    func encode(
        _ message: OpAMP_ServerToAgent,
        leading: [UInt8] = [],
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) throws -> EncodedServerMessage {
        guard message.hasRemoteConfig else {
            let body: [UInt8] = try message.serializedBytes()
            var head = allocator.buffer(capacity: leading.count + body.count)
            head.writeBytes(leading)
            head.writeBytes(body)
            return EncodedServerMessage(head: head, config: nil)
        }
        let config = try self.encoded(message.remoteConfig, allocator: allocator)
        var rest = message
        rest.clearRemoteConfig()
        let body: [UInt8] = try rest.serializedBytes()
        var head = allocator.buffer(capacity: leading.count + body.count + 11)
        head.writeBytes(leading)
        head.writeBytes(body)
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
        let found = self.entries.withLock { entries -> EncodedConfig? in
            guard let index = entries.firstIndex(where: { $0.config.configHash == config.configHash }) else {
                return nil
            }
            // Same hash: the full comparison (a few tens of microseconds for a ring-sized config) decides.
            guard entries[index].config == config else { return nil }
            let entry = entries.remove(at: index)
            entries.append(entry)
            return entry.encoded
        }
        if let found { return found }
        // Encoded outside the lock: two threads may both encode a new config; one of them is kept.
        let bytes: [UInt8] = try config.serializedBytes()
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        let encoded = EncodedConfig(bytes: buffer)
        self.entries.withLock { entries in
            entries.removeAll { $0.config.configHash == config.configHash }
            entries.append(Entry(config: config, encoded: encoded))
            if entries.count > self.capacity { entries.removeFirst(entries.count - self.capacity) }
        }
        return encoded
    }
}
