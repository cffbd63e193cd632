/// An agent's instance UID: 16 raw bytes, shown as a canonical UUID string.
///
/// Agents from before 2024 sent a 26-character ULID string in the same field; ``init(wire:)`` accepts both.
public struct InstanceUID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The 16 bytes, high byte first.
    public let high: UInt64
    /// Low 8 bytes.
    public let low: UInt64

    /// Creates a UID from two halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates a UID from exactly 16 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    /// Reads the `instance_uid` field as sent: 16 raw bytes, or a legacy 26-character ULID string.
    public init?(wire bytes: some Collection<UInt8>) {
        if bytes.count == 16 {
            self.init(bytes: bytes)
        } else if bytes.count == 26, let ulid = Self.decodeULID(Array(bytes)) {
            self = ulid
        } else {
            return nil
        }
    }

    /// Parses `0190a0b1-...` (canonical UUID text).
    public init?(uuidString: String) {
        let hex = uuidString.filter { $0 != "-" }
        guard hex.count == 32, uuidString.count == 36 || uuidString.count == 32 else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.init(bytes: bytes)
    }

    /// The 16 bytes, as sent on the wire.
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: self.high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: self.low >> (56 - 8 * $0)) }
    }

    /// Canonical lower-case UUID text.
    public var description: String {
        let hex = self.bytes.map { byte in
            let text = String(byte, radix: 16)
            return byte < 16 ? "0" + text : text
        }.joined()
        var out = ""
        for (index, character) in hex.enumerated() {
            if [8, 12, 16, 20].contains(index) { out.append("-") }
            out.append(character)
        }
        return out
    }

    public static func < (lhs: InstanceUID, rhs: InstanceUID) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// A UUIDv7: 48-bit Unix milliseconds, version 7, RFC 4122 variant, random rest from the system's generator.
    public static func version7(unixMilliseconds: UInt64) -> InstanceUID {
        // Not `version7(unixMilliseconds:using:)` with a SystemRandomNumberGenerator: that generator has no
        // stored properties, and ThreadSanitizer builds crash on the inout access to it inside generic code
        // (the compiler skips the check for empty types only where it knows the type; swiftlang/swift#35579).
        let high = (unixMilliseconds & 0xFFFF_FFFF_FFFF) << 16 | 0x7000 | UInt64.random(in: 0...0x0FFF)
        let low = UInt64.random(in: 0...0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return InstanceUID(high: high, low: low)
    }

    /// A UUIDv7 with its random bits from `generator` (a seeded one gives repeatable UIDs).
    public static func version7(unixMilliseconds: UInt64, using generator: inout some RandomNumberGenerator)
        -> InstanceUID
    {
        let random = generator.next() as UInt64
        let randomLow = generator.next() as UInt64
        let high = (unixMilliseconds & 0xFFFF_FFFF_FFFF) << 16 | 0x7000 | (random & 0x0FFF)
        let low = (randomLow & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return InstanceUID(high: high, low: low)
    }

    private static let crockford: [UInt8: UInt8] = {
        var table: [UInt8: UInt8] = [:]
        for (value, character) in "0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8.enumerated() {
            table[character] = UInt8(value)
            if character >= UInt8(ascii: "A") { table[character + 32] = UInt8(value) }
        }
        return table
    }()

    /// Decodes a 26-character Crockford base32 ULID (the first character carries only 3 bits).
    static func decodeULID(_ text: [UInt8]) -> InstanceUID? {
        guard text.count == 26, let first = crockford[text[0]], first <= 7 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for character in text {
            guard let value = crockford[character] else { return nil }
            // Shift the 128-bit number left by 5 and add the value (the top 2 bits fall off by design).
            high = high << 5 | low >> 59
            low = low << 5 | UInt64(value)
        }
        return InstanceUID(high: high, low: low)
    }
}
