import SwiftProtobuf

/// OpAMP's WebSocket message framing: a varint header (currently always 0, so one `0x00` byte) followed by
/// the protobuf bytes.
public enum WebSocketFraming {
    /// The header every frame starts with: a varint, always 0 today.
    public static let header: [UInt8] = [0x00]

    /// The frame for an agent message (used by test agents and the fleet simulator).
    public static func encode(_ message: OpAMP_AgentToServer) throws -> [UInt8] {
        let body: [UInt8] = try message.serializedBytes()
        return Self.header + body
    }

    /// The protobuf bytes of a received frame. A leading `0x00` is the header and is removed; frames without
    /// it (the format before the header existed) are taken whole, as opamp-go does. This is unambiguous
    /// because a protobuf message never starts with `0x00` (field number 0 does not exist).
    public static func payload(of frame: [UInt8]) -> ArraySlice<UInt8> {
        if let first = frame.first, first == 0x00 { return frame[1...] }
        return frame[...]
    }

    /// Decodes an agent message from a frame.
    public static func decodeAgentMessage(_ frame: [UInt8]) throws -> OpAMP_AgentToServer {
        try OpAMP_AgentToServer(serializedBytes: Array(self.payload(of: frame)))
    }

    /// Decodes a server message from a frame.
    public static func decodeServerMessage(_ frame: [UInt8]) throws -> OpAMP_ServerToAgent {
        try OpAMP_ServerToAgent(serializedBytes: Array(self.payload(of: frame)))
    }
}
