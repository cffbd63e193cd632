import Foundation
import PolicyEngine

/// Finds and reads policy files. The only place policy sources touch the file system.
enum SourceLoader {
    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// Expands directories to their `*.policy` files (recursively, sorted) and reads every file.
    static func load(_ paths: [String]) throws(LoadError) -> [SourceFile] {
        var files: [String] = []
        let manager = FileManager.default
        for path in paths {
            var isDirectory: ObjCBool = false
            guard manager.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw LoadError(description: "\(path): no such file or directory")
            }
            if isDirectory.boolValue {
                guard let enumerator = manager.enumerator(atPath: path) else {
                    throw LoadError(description: "\(path): cannot list directory")
                }
                var found: [String] = []
                while let entry = enumerator.nextObject() as? String {
                    if entry.hasSuffix(".policy") {
                        found.append((path as NSString).appendingPathComponent(entry))
                    }
                }
                if found.isEmpty {
                    throw LoadError(description: "\(path): no .policy files in this directory")
                }
                files.append(contentsOf: found.sorted())
            } else {
                files.append(path)
            }
        }
        var seen = Set<String>()
        var sources: [SourceFile] = []
        for path in files where seen.insert(path).inserted {
            guard let data = manager.contents(atPath: path) else {
                throw LoadError(description: "\(path): cannot read file")
            }
            sources.append(SourceFile(path: path, bytes: [UInt8](data)))
        }
        return sources
    }
}
