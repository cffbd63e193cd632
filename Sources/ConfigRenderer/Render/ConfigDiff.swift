/// Unified diffs of rendered configs, for reviewing what a policy change does to the collectors.
public enum ConfigDiff {
    /// A unified diff (`---`/`+++` headers, `@@` hunks with three lines of context); empty when equal.
    public static func unified(old: String, new: String, oldName: String, newName: String, context: Int = 3) -> String {
        let oldLines = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let newLines = new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let difference = newLines.difference(from: oldLines)
        guard !difference.isEmpty else { return "" }
        var removed = Set<Int>()
        var inserted = Set<Int>()
        for change in difference {
            switch change {
            case .remove(let offset, _, _): removed.insert(offset)
            case .insert(let offset, _, _): inserted.insert(offset)
            }
        }
        // The edit script: (kind, old index, new index).
        enum Kind { case same, remove, insert }
        var script: [(Kind, Int, Int)] = []
        var i = 0
        var j = 0
        while i < oldLines.count || j < newLines.count {
            if i < oldLines.count, removed.contains(i) {
                script.append((.remove, i, j))
                i += 1
            } else if j < newLines.count, inserted.contains(j) {
                script.append((.insert, i, j))
                j += 1
            } else {
                script.append((.same, i, j))
                i += 1
                j += 1
            }
        }
        var out = "--- \(oldName)\n+++ \(newName)\n"
        var index = 0
        while index < script.count {
            guard script[index].0 != .same else {
                index += 1
                continue
            }
            // Grow a hunk until `context * 2` unchanged lines separate changes.
            let start = max(0, index - context)
            var end = index
            var lastChange = index
            while end < script.count {
                if script[end].0 != .same { lastChange = end }
                if end - lastChange > context * 2 { break }
                end += 1
            }
            end = min(script.count, lastChange + context + 1)
            let hunk = script[start..<end]
            let oldStart = hunk.first!.1
            let newStart = hunk.first!.2
            let oldCount = hunk.filter { $0.0 != .insert }.count
            let newCount = hunk.filter { $0.0 != .remove }.count
            out +=
                "@@ -\(oldStart + (oldCount > 0 ? 1 : 0)),\(oldCount) +\(newStart + (newCount > 0 ? 1 : 0)),\(newCount) @@\n"
            for (kind, oldIndex, newIndex) in hunk {
                switch kind {
                case .same: out += " " + oldLines[oldIndex] + "\n"
                case .remove: out += "-" + oldLines[oldIndex] + "\n"
                case .insert: out += "+" + newLines[newIndex] + "\n"
                }
            }
            index = end
        }
        return out
    }
}
