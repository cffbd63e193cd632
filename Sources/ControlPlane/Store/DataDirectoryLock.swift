import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An exclusive lock on a data directory (`policyd.lock`), held for the life of the value: two policyd never
/// share one directory, whichever store they use.
public final class DataDirectoryLock: Sendable {
    private let descriptor: Int32

    /// Creates `directory` if needed and locks it.
    /// - Throws: ``StoreError`` when the directory cannot be used or another process holds it.
    public init(directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let lockPath = directory.appendingPathComponent("policyd.lock").path
        let descriptor = open(lockPath, O_CREAT | O_RDWR, 0o600)
        guard descriptor >= 0 else { throw StoreError("cannot open \(lockPath): \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw StoreError("another policyd is using \(directory.path) (\(lockPath) is locked)")
        }
        self.descriptor = descriptor
    }

    deinit {
        flock(self.descriptor, LOCK_UN)
        close(self.descriptor)
    }
}
