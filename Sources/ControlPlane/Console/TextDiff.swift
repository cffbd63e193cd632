/// A side-by-side line diff, for the console's version and agent config comparisons. The edit script comes
/// from the standard library's `CollectionDifference`; this only lays it out in rows and folds long unchanged
/// stretches.
struct TextDiff: Sendable, Hashable {
    /// One row of the side-by-side view.
    struct Row: Sendable, Hashable {
        enum Kind: String, Sendable {
            case same, removed, added, changed, folded
        }
        var kind: Kind
        /// 1-based line numbers (nil on the side that has no line).
        var leftNumber: Int?
        var rightNumber: Int?
        var left: String
        var right: String
        /// For `folded`: how many unchanged lines were left out.
        var folded: Int = 0
    }

    /// The rows, with unchanged stretches longer than twice the context folded.
    var rows: [Row]
    /// Lines removed and added.
    var removed: Int
    var added: Int

    /// True when the two texts are the same.
    var isEmpty: Bool { self.removed == 0 && self.added == 0 }

    /// Compares `old` with `new` line by line, keeping `context` unchanged lines around each change.
    init(old: String, new: String, context: Int = 3) {
        let a = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var removals = Set<Int>()
        var insertions = Set<Int>()
        for change in b.difference(from: a) {
            switch change {
            case .remove(let offset, _, _): removals.insert(offset)
            case .insert(let offset, _, _): insertions.insert(offset)
            }
        }
        var all: [Row] = []
        var i = 0
        var j = 0
        while i < a.count || j < b.count {
            let removing = i < a.count && removals.contains(i)
            let inserting = j < b.count && insertions.contains(j)
            if removing && inserting {
                all.append(Row(kind: .changed, leftNumber: i + 1, rightNumber: j + 1, left: a[i], right: b[j]))
                i += 1
                j += 1
            } else if removing {
                all.append(Row(kind: .removed, leftNumber: i + 1, rightNumber: nil, left: a[i], right: ""))
                i += 1
            } else if inserting {
                all.append(Row(kind: .added, leftNumber: nil, rightNumber: j + 1, left: "", right: b[j]))
                j += 1
            } else if i < a.count && j < b.count {
                all.append(Row(kind: .same, leftNumber: i + 1, rightNumber: j + 1, left: a[i], right: b[j]))
                i += 1
                j += 1
            } else {
                // Cannot happen for a valid edit script; stop rather than loop.
                break
            }
        }
        self.removed = removals.count
        self.added = insertions.count
        self.rows = Self.fold(all, context: context)
    }

    /// Replaces every unchanged run longer than `2 * context` (or `context` at either end) by one folded row.
    private static func fold(_ rows: [Row], context: Int) -> [Row] {
        var result: [Row] = []
        var index = 0
        while index < rows.count {
            guard rows[index].kind == .same else {
                result.append(rows[index])
                index += 1
                continue
            }
            var end = index
            while end < rows.count && rows[end].kind == .same { end += 1 }
            let keepBefore = index == 0 ? 0 : context
            let keepAfter = end == rows.count ? 0 : context
            let length = end - index
            if length > keepBefore + keepAfter + 1 {
                result += rows[index..<(index + keepBefore)]
                let hidden = length - keepBefore - keepAfter
                result.append(
                    Row(kind: .folded, leftNumber: nil, rightNumber: nil, left: "", right: "", folded: hidden)
                )
                result += rows[(end - keepAfter)..<end]
            } else {
                result += rows[index..<end]
            }
            index = end
        }
        return result
    }
}
