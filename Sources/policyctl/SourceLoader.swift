import ArgumentParser
import ConfigRenderer
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

/// Finds and reads the fleet description: `--fleet FILE`, else `fleet.yaml` in the policy directory.
enum FleetLoader {
    /// The path of the fleet file that applies, if any.
    static func path(explicit: String?, near policyPath: String) -> String? {
        if let explicit { return explicit }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: policyPath, isDirectory: &isDirectory), isDirectory.boolValue
        else {
            return nil
        }
        let candidate = (policyPath as NSString).appendingPathComponent("fleet.yaml")
        return FileManager.default.fileExists(atPath: candidate) ? candidate : nil
    }

    /// Reads and checks the fleet; prints problems and throws the matching exit code.
    static func load(explicit: String?, near policyPath: String) throws -> Fleet {
        guard let path = self.path(explicit: explicit, near: policyPath) else { return Fleet() }
        guard let data = FileManager.default.contents(atPath: path) else {
            printError("\(path): cannot read file")
            throw Exit.usage
        }
        switch FleetParser.parse(String(decoding: data, as: UTF8.self), path: path) {
        case .success(let fleet): return fleet
        case .failure(let problems):
            FileHandle.standardError.write(Data((problems.description + "\n").utf8))
            throw Exit.problems
        }
    }
}
