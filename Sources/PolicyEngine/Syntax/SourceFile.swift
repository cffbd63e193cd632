/// One policy source file held in memory: its path (as given by the caller) and its raw bytes.
///
/// The engine never reads files itself; callers load bytes and hand them over. Offsets are byte
/// offsets into ``bytes``; lines and columns are computed only when a diagnostic is reported.
/// Columns count bytes from 1, as clang and gcc do.
public struct SourceFile: Sendable {
    /// The path shown in diagnostics, for example `policies/errors.policy`.
    public let path: String
    /// The file's contents, unchanged (not necessarily valid UTF-8).
    public let bytes: [UInt8]
    /// Byte offset of the first byte of every line; `lineStarts[0] == 0`.
    let lineStarts: [Int]

    /// Creates a source file from raw bytes.
    public init(path: String, bytes: [UInt8]) {
        self.path = path
        self.bytes = bytes
        var starts = [0]
        for (index, byte) in bytes.enumerated() where byte == UInt8(ascii: "\n") {
            starts.append(index + 1)
        }
        self.lineStarts = starts
    }

    /// Creates a source file from text (UTF-8 encoded).
    public init(path: String, text: String) {
        self.init(path: path, bytes: Array(text.utf8))
    }

    /// The 1-based line and column of a byte offset (clamped to the file).
    public func location(of offset: Int) -> SourceLocation {
        let offset = max(0, min(offset, self.bytes.count))
        var low = 0
        var high = self.lineStarts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if self.lineStarts[mid] <= offset { low = mid } else { high = mid - 1 }
        }
        return SourceLocation(line: low + 1, column: offset - self.lineStarts[low] + 1)
    }

    /// The text of a 1-based line without its line break; invalid UTF-8 shows as U+FFFD.
    public func lineText(_ line: Int) -> String {
        guard line >= 1, line <= self.lineStarts.count else { return "" }
        let start = self.lineStarts[line - 1]
        var end = line < self.lineStarts.count ? self.lineStarts[line] - 1 : self.bytes.count
        if end > start, self.bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        return String(decoding: self.bytes[start..<max(start, end)], as: UTF8.self)
    }

    /// The text of a byte range, decoded leniently.
    func text(_ range: SourceRange) -> String {
        let lower = max(0, min(range.start, self.bytes.count))
        let upper = max(lower, min(range.end, self.bytes.count))
        return String(decoding: self.bytes[lower..<upper], as: UTF8.self)
    }
}

/// A 1-based line and column.
public struct SourceLocation: Sendable, Hashable, Codable, Comparable {
    /// 1-based line number.
    public var line: Int
    /// 1-based column, counted in bytes.
    public var column: Int

    /// Creates a location.
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public static func < (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
    }
}

/// A half-open byte range `start..<end` inside one source file.
public struct SourceRange: Sendable, Hashable {
    /// First byte.
    public var start: Int
    /// One past the last byte.
    public var end: Int

    /// Creates a range; `end` is raised to `start` when smaller.
    public init(start: Int, end: Int) {
        self.start = start
        self.end = max(start, end)
    }

    /// The smallest range covering both.
    func union(_ other: SourceRange) -> SourceRange {
        SourceRange(start: min(self.start, other.start), end: max(self.end, other.end))
    }
}

/// Where a rule came from: file path plus line and column. Carried into the IR.
public struct SourceReference: Sendable, Hashable, Codable {
    /// The file path as given to the compiler.
    public var file: String
    /// 1-based line.
    public var line: Int
    /// 1-based column.
    public var column: Int

    /// Creates a reference.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }
}

extension SourceReference: CustomStringConvertible {
    public var description: String { "\(self.file):\(self.line):\(self.column)" }
}
