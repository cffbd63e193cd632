import CZlib
import Foundation
import PolicyEngine

/// Reads OTLP/JSON trace files as the collector's file exporter writes them (one JSON document per line)
/// or as one document per file (an OTLP/HTTP body, pretty-printed or not), plain or gzip-compressed
/// (several gzip members too). Streams: memory holds one chunk and one line, never the file.
public enum TraceFiles {
    /// A file that cannot be read or decoded, with the line it failed at.
    public struct ReadError: Error, Sendable, CustomStringConvertible {
        /// The file.
        public var file: String
        /// The 1-based line (in the decompressed text), or 0 for the file as a whole.
        public var line: Int
        /// What is wrong.
        public var message: String

        public var description: String {
            self.line > 0 ? "\(self.file):\(self.line): \(self.message)" : "\(self.file): \(self.message)"
        }
    }

    /// What was read.
    public struct Summary: Sendable, Hashable {
        /// JSON documents decoded.
        public var documents = 0
        /// Spans decoded.
        public var spans = 0
        /// Documents skipped as invalid (`skipInvalid`).
        public var skipped = 0
        /// The first problems skipped, for the report.
        public var skippedErrors: [String] = []
    }

    /// Reads every file in order, handing each span batch to `body`. A bad document stops the read with its
    /// location, or with `skipInvalid` is counted and skipped. `documentEnd` runs after each document's
    /// batches. `progress` gets the compressed bytes read so far and the total size of the files.
    public static func read(
        _ paths: [String],
        skipInvalid: Bool = false,
        progress: ((Int64, Int64) -> Void)? = nil,
        documentEnd: () throws -> Void = {},
        body: (SpanBatch) throws -> Void
    ) throws -> Summary {
        var summary = Summary()
        let total = paths.reduce(Int64(0)) { sum, path in
            sum + ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int64) ?? 0)
        }
        var before: Int64 = 0
        for path in paths {
            var readSoFar: Int64 = 0
            let report: (Int64) -> Void = { bytes in
                readSoFar = bytes
                progress?(before + bytes, total)
            }
            if try Self.isWholeDocument(path) {
                let data = try Self.decompressedContents(path, progress: report)
                let result = data.withUnsafeBytes { Self.decodeResult($0) }
                try Self.deliver(result, file: path, line: 0, skipInvalid: skipInvalid, into: &summary, body)
                try documentEnd()
            } else {
                // Lines are decoded a group at a time on every core, and the next group decodes while the
                // previous one is handed over (in file order) and evaluated.
                var group = LineGroup()
                var lineNumber = 0
                var decoding: (lineNumbers: [Int], results: PendingDecode)?
                func handOver() throws {
                    guard let (lineNumbers, pending) = decoding else { return }
                    decoding = nil
                    for (index, result) in pending.wait().enumerated() {
                        try Self.deliver(
                            result,
                            file: path,
                            line: lineNumbers[index],
                            skipInvalid: skipInvalid,
                            into: &summary,
                            body
                        )
                        try documentEnd()
                    }
                }
                func flush(_ group: inout LineGroup) throws {
                    guard !group.lines.isEmpty else { return }
                    let started = PendingDecode(group.lines)
                    try handOver()
                    decoding = (group.lineNumbers, started)
                    group = LineGroup()
                }
                try Self.forEachLine(path, progress: report) { line in
                    lineNumber += 1
                    guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0d }) else { return }
                    group.append(line, number: lineNumber)
                    if group.isFull { try flush(&group) }
                }
                try flush(&group)
                try handOver()
            }
            before += readSoFar
        }
        return summary
    }

    /// Decodes one document into a result (so a group of them can be decoded on other threads).
    static func decodeResult(_ raw: UnsafeRawBufferPointer) -> Result<[SpanBatch], OTLPJSON.DecodingError> {
        do throws(OTLPJSON.DecodingError) {
            return .success(try OTLPJSON.decode(bytes: raw))
        } catch {
            return .failure(error)
        }
    }

    private static func deliver(
        _ result: Result<[SpanBatch], OTLPJSON.DecodingError>,
        file: String,
        line: Int,
        skipInvalid: Bool,
        into summary: inout Summary,
        _ body: (SpanBatch) throws -> Void
    ) throws {
        let batches: [SpanBatch]
        switch result {
        case .success(let decoded):
            batches = decoded
        case .failure(let error):
            let problem = ReadError(file: file, line: line, message: error.message)
            guard skipInvalid else { throw problem }
            summary.skipped += 1
            if summary.skippedErrors.count < 5 { summary.skippedErrors.append(problem.description) }
            return
        }
        summary.documents += 1
        for batch in batches {
            summary.spans += batch.spans.count
            try body(batch)
        }
    }

    /// A file is one document unless its first non-blank line is a complete JSON value.
    private static func isWholeDocument(_ path: String) throws -> Bool {
        var first: Data?
        do {
            try Self.forEachLine(path, progress: { _ in }) { line in
                guard first == nil else { throw StopReading() }
                if line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0d }) {
                    first = Data(line)
                    throw StopReading()
                }
            }
        } catch is StopReading {}
        guard let first else { return false }
        return (try? JSONSerialization.jsonObject(with: first)) == nil
    }

    private struct StopReading: Error {}

    private static func decompressedContents(_ path: String, progress: (Int64) -> Void) throws -> Data {
        var data = Data()
        try Self.forEachChunk(path, progress: progress) { chunk in data.append(chunk) }
        return data
    }

    /// Calls `body` with each line (without its newline) of the decompressed file. A line that spans chunks
    /// is gathered in a buffer; the rest are handed over in place.
    static func forEachLine(
        _ path: String,
        progress: (Int64) -> Void,
        _ body: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        var pending: [UInt8] = []
        try Self.forEachChunk(path, progress: progress) { chunk in
            try chunk.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                guard let base = raw.baseAddress else { return }
                var start = 0
                while start < raw.count,
                    let found = memchr(base + start, 0x0a, raw.count - start)
                {
                    let end = base.distance(to: UnsafeRawPointer(found))
                    if pending.isEmpty {
                        try body(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
                    } else {
                        pending.append(contentsOf: raw[start..<end])
                        try pending.withUnsafeBytes { try body($0) }
                        pending.removeAll(keepingCapacity: true)
                    }
                    start = end + 1
                }
                if start < raw.count { pending.append(contentsOf: raw[start...]) }
            }
        }
        if !pending.isEmpty { try pending.withUnsafeBytes { try body($0) } }
    }

    /// Calls `body` with each chunk of the file's contents, inflating gzip.
    static func forEachChunk(_ path: String, progress: (Int64) -> Void, _ body: (Data) throws -> Void) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw ReadError(file: path, line: 0, message: "cannot open the file")
        }
        defer { try? handle.close() }
        let chunkSize = 1 << 20
        var read: Int64 = 0
        var inflater: Inflater?
        var first = true
        while true {
            let chunk: Data
            do {
                chunk = try handle.read(upToCount: chunkSize) ?? Data()
            } catch {
                throw ReadError(file: path, line: 0, message: "cannot read: \(error.localizedDescription)")
            }
            if chunk.isEmpty { break }
            read += Int64(chunk.count)
            progress(read)
            if first {
                first = false
                if chunk.count >= 2, chunk[chunk.startIndex] == 0x1f, chunk[chunk.startIndex + 1] == 0x8b {
                    inflater = try Inflater(file: path)
                }
            }
            if inflater != nil {
                try inflater!.inflate(chunk, body)
            } else {
                try body(chunk)
            }
        }
        if let inflater, !inflater.finished {
            throw ReadError(file: path, line: 0, message: "the gzip stream ends early (truncated file?)")
        }
    }
}

/// Lines waiting to be decoded together, one per core.
struct LineGroup {
    private(set) var lines: [[UInt8]] = []
    private(set) var lineNumbers: [Int] = []
    private var bytes = 0

    /// Enough to keep every core busy, little enough to bound memory (a few megabytes).
    var isFull: Bool { self.lines.count >= 4 * LineGroup.workers || self.bytes >= 16 << 20 }

    static let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)

    mutating func append(_ line: UnsafeRawBufferPointer, number: Int) {
        self.lines.append([UInt8](line))
        self.lineNumbers.append(number)
        self.bytes += line.count
    }

    static func decode(_ line: [UInt8]) -> Result<[SpanBatch], OTLPJSON.DecodingError> {
        line.withUnsafeBytes { TraceFiles.decodeResult($0) }
    }
}

/// A group of lines being decoded on other threads (all cores); `wait()` gives the results in line order.
final class PendingDecode: @unchecked Sendable {
    private let results: ResultSlots
    private let done = DispatchSemaphore(value: 0)

    init(_ lines: [[UInt8]]) {
        let results = ResultSlots(count: lines.count)
        self.results = results
        let done = self.done
        DispatchQueue.global().async {
            if lines.count == 1 || LineGroup.workers == 1 {
                for index in lines.indices { results.set(index, LineGroup.decode(lines[index])) }
            } else {
                DispatchQueue.concurrentPerform(iterations: lines.count) { index in
                    results.set(index, LineGroup.decode(lines[index]))
                }
            }
            done.signal()
        }
    }

    func wait() -> [Result<[SpanBatch], OTLPJSON.DecodingError>] {
        self.done.wait()
        return self.results.values
    }
}

/// One slot per line, each written by exactly one worker of `concurrentPerform` and read after it returns.
final class ResultSlots: @unchecked Sendable {
    private var slots: [Result<[SpanBatch], OTLPJSON.DecodingError>?]
    private let lock = NSLock()

    init(count: Int) { self.slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ value: Result<[SpanBatch], OTLPJSON.DecodingError>) {
        self.lock.lock()
        self.slots[index] = value
        self.lock.unlock()
    }

    var values: [Result<[SpanBatch], OTLPJSON.DecodingError>] {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.slots.map { $0! }
    }
}

/// A streaming gzip decompressor over zlib.
struct Inflater: ~Copyable {
    private var stream: UnsafeMutablePointer<z_stream>
    private let file: String
    private(set) var finished = false

    init(file: String) throws {
        self.file = file
        self.stream = .allocate(capacity: 1)
        self.stream.initialize(to: z_stream())
        // 16 + MAX_WBITS: a gzip header and trailer.
        let status = inflateInit2_(self.stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            self.stream.deallocate()
            throw TraceFiles.ReadError(file: file, line: 0, message: "cannot start gzip decompression (\(status))")
        }
    }

    deinit {
        inflateEnd(self.stream)
        self.stream.deallocate()
    }

    mutating func inflate(_ input: Data, _ body: (Data) throws -> Void) throws {
        var input = input
        var output = [UInt8](repeating: 0, count: 1 << 18)
        try input.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) in
            guard let base = raw.baseAddress?.assumingMemoryBound(to: Bytef.self) else { return }
            self.stream.pointee.next_in = base
            self.stream.pointee.avail_in = uInt(raw.count)
            var more = true
            while more {
                if self.finished {
                    guard self.stream.pointee.avail_in > 0 else { break }
                    // Another gzip member follows.
                    inflateReset(self.stream)
                    self.finished = false
                }
                let status = output.withUnsafeMutableBufferPointer { buffer -> Int32 in
                    self.stream.pointee.next_out = buffer.baseAddress
                    self.stream.pointee.avail_out = uInt(buffer.count)
                    return CZlib.inflate(self.stream, Z_NO_FLUSH)
                }
                let produced = output.count - Int(self.stream.pointee.avail_out)
                if produced > 0 { try body(Data(output[0..<produced])) }
                switch status {
                case Z_STREAM_END: self.finished = true
                case Z_OK, Z_BUF_ERROR: break
                default:
                    throw TraceFiles.ReadError(
                        file: self.file,
                        line: 0,
                        message: "invalid gzip data (zlib status \(status))"
                    )
                }
                // Go on while input is left, or while the output filled up (zlib may hold more).
                more = self.stream.pointee.avail_in > 0 || produced == output.count
                if status == Z_BUF_ERROR, produced == 0 { more = false }
            }
        }
    }
}
