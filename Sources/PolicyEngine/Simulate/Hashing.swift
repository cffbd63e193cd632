/// The hashes the collector uses to decide and to route, reproduced bit for bit.
public enum CollectorHash {
    /// The salt the `probabilistic` policy uses when `hash_salt` is empty.
    public static let defaultSalt = "default-hash-seed"

    /// FNV-1a, 64 bits, over the salt's bytes followed by the 16 trace-ID bytes (probabilistic.go).
    public static func fnv1a64(salt: String, traceID: TraceID) -> UInt64 {
        self.fnv1a64(saltState: self.fnv1a64State(salt: salt), traceID: traceID)
    }

    /// The FNV-1a state after the salt's bytes, so a policy hashes its salt once.
    static func fnv1a64State(salt: String) -> UInt64 {
        var hash: UInt64 = 14_695_981_039_346_656_037
        for byte in salt.utf8 {
            hash ^= UInt64(byte)
            hash &*= 1_099_511_628_211
        }
        return hash
    }

    /// FNV-1a continued from a salt's state over the 16 trace-ID bytes.
    static func fnv1a64(saltState: UInt64, traceID: TraceID) -> UInt64 {
        var hash = saltState
        traceID.forEachByte { byte in
            hash ^= UInt64(byte)
            hash &*= 1_099_511_628_211
        }
        return hash
    }

    /// `calculateThreshold(percentage / 100)`: `MaxUint64 × ratio` multiplied as a 64-bit-precision
    /// `big.Float` (round to nearest, ties to even) and truncated to an integer; saturates at both ends.
    public static func probabilisticThreshold(percentage: Double) -> UInt64 {
        let ratio = percentage / 100
        guard ratio > 0 else { return 0 }
        if ratio >= 1 { return UInt64.max }
        // ratio = mantissa × 2^exponent with a 53-bit integer mantissa.
        let mantissa = UInt64(ratio.significandBitPattern) | (ratio.isNormal ? 1 << 52 : 0)
        var exponent = Int(ratio.exponent) - 52
        if !ratio.isNormal { exponent = -1074 }
        // The exact product MaxUint64 × mantissa fits in 117 bits.
        let product = UInt128(UInt64.max) * UInt128(mantissa)
        let bits = 128 - product.leadingZeroBitCount
        var significand = product
        var scale = exponent
        if bits > 64 {
            let shift = bits - 64
            var kept = product >> shift
            let remainder = product & ((UInt128(1) << shift) - 1)
            let half = UInt128(1) << (shift - 1)
            if remainder > half || (remainder == half && kept & 1 == 1) { kept += 1 }
            scale += shift
            if kept >> 64 != 0 {
                kept >>= 1
                scale += 1
            }
            significand = kept
        }
        // value = significand × 2^scale, truncated toward zero.
        if scale >= 0 {
            if scale >= 64 || significand.leadingZeroBitCount < 64 + scale { return UInt64.max }
            return UInt64(significand << scale)
        }
        let down = -scale
        if down >= 128 { return 0 }
        return UInt64(truncatingIfNeeded: significand >> down)
    }

    /// Whether the `probabilistic` policy samples the trace: `fnv1a64(salt, id) <= threshold`.
    public static func probabilisticSamples(traceID: TraceID, salt: String?, percentage: Double) -> Bool {
        let salt = (salt?.isEmpty ?? true) ? Self.defaultSalt : salt!
        return self.fnv1a64(salt: salt, traceID: traceID) <= self.probabilisticThreshold(percentage: percentage)
    }

    private static let crcTable: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    @inline(__always)
    static func crcStep(_ crc: UInt32, _ byte: UInt8) -> UInt32 {
        Self.crcTable[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8)
    }

    /// CRC-32 (IEEE), as Go's `crc32.ChecksumIEEE`.
    public static func crc32(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc = Self.crcTable[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8)
        }
        return crc ^ 0xFFFF_FFFF
    }
}

/// The load-balancing exporter's consistent-hash ring (consistent_hashing.go): 36,000 positions, 100
/// points per endpoint at `crc32(endpoint || byte(i)) % 36000`, a taken position kept by the endpoint
/// that comes first in sorted order, and a trace routed to the first point at or after
/// `crc32(trace ID) % 36000`, wrapping around.
public struct LoadBalancingRing: Sendable, Hashable {
    /// Ring positions.
    public static let positions: UInt32 = 36_000
    /// Points per endpoint (`defaultWeight`).
    public static let pointsPerEndpoint = 100

    /// The endpoints, sorted, as the resolver hands them over.
    public let endpoints: [String]
    private let points: [(position: UInt32, endpoint: Int)]

    /// Builds the ring for these exact endpoint strings.
    public init(endpoints: [String]) {
        let sorted = Array(Set(endpoints)).sorted()
        self.endpoints = sorted
        var taken = Set<UInt32>()
        var points: [(position: UInt32, endpoint: Int)] = []
        for (index, endpoint) in sorted.enumerated() {
            let bytes = Array(endpoint.utf8)
            for point in 0..<Self.pointsPerEndpoint {
                let position = CollectorHash.crc32(bytes + [UInt8(point)]) % Self.positions
                if taken.insert(position).inserted { points.append((position, index)) }
            }
        }
        self.points = points.sorted { $0.position < $1.position }
    }

    /// The endpoint index a trace is routed to; `nil` for an empty ring.
    public func endpointIndex(for traceID: TraceID) -> Int? {
        guard !self.points.isEmpty else { return nil }
        var crc: UInt32 = 0xFFFF_FFFF
        traceID.forEachByte { byte in crc = CollectorHash.crcStep(crc, byte) }
        let key = (crc ^ 0xFFFF_FFFF) % Self.positions
        var low = 0
        var high = self.points.count
        while low < high {
            let middle = (low + high) / 2
            if self.points[middle].position < key { low = middle + 1 } else { high = middle }
        }
        return self.points[low == self.points.count ? 0 : low].endpoint
    }

    /// The endpoint a trace is routed to.
    public func endpoint(for traceID: TraceID) -> String? {
        self.endpointIndex(for: traceID).map { self.endpoints[$0] }
    }

    public static func == (lhs: LoadBalancingRing, rhs: LoadBalancingRing) -> Bool { lhs.endpoints == rhs.endpoints }
    public func hash(into hasher: inout Hasher) { hasher.combine(self.endpoints) }
}
