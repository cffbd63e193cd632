import Crypto
import Foundation
import OpAMPProtocol

/// What a package is to the agent (`PackageType`): the agent itself, or something added to it.
public enum PackageKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// The agent's own executable (for a collector: the collector binary).
    case topLevel = "top-level"
    /// An add-on the agent loads.
    case addon
}

/// One package offered to an agent (`PackageAvailable` with its `DownloadableFile`).
public struct OfferedPackage: Sendable, Hashable {
    /// Package name (the `PackagesAvailable.packages` key).
    public var name: String
    /// Top-level or add-on.
    public var kind: PackageKind
    /// Version string as published (`0.150.0`).
    public var version: String
    /// Where the agent downloads the file (HTTP GET; ranges supported).
    public var downloadURL: String
    /// SHA-256 of the file's content.
    public var contentHash: [UInt8]
    /// Detached signature the agent verifies (see docs/packages.md for what is signed).
    public var signature: [UInt8]
    /// Headers the agent sends with the download (for example a bearer token).
    public var headers: [String: String]

    /// Creates an offered package.
    public init(
        name: String,
        kind: PackageKind,
        version: String,
        downloadURL: String,
        contentHash: [UInt8],
        signature: [UInt8],
        headers: [String: String] = [:]
    ) {
        self.name = name
        self.kind = kind
        self.version = version
        self.downloadURL = downloadURL
        self.contentHash = contentHash
        self.signature = signature
        self.headers = headers
    }

    /// `PackageAvailable.hash`: SHA-256 over the kind, the name, the version, the content hash and the
    /// signature, each length-prefixed. The URL and headers are left out on purpose: moving the server or
    /// changing a download token is not a new package, and must not make every agent reinstall.
    public var hash: [UInt8] {
        var hasher = SHA256()
        for field in [self.kind.rawValue, self.name, self.version] {
            hasher.update(data: Array("\(field.utf8.count):".utf8) + Array(field.utf8))
        }
        for bytes in [self.contentHash, self.signature] {
            hasher.update(data: Array("\(bytes.count):".utf8) + bytes)
        }
        return Array(hasher.finalize())
    }
}

/// Everything an agent should have installed (`PackagesAvailable`). Only agents with AcceptsPackages get it.
public struct PackageOffer: Sendable, Hashable, CustomStringConvertible {
    /// Packages by name.
    public var packages: [String: OfferedPackage]

    /// Creates an offer; each package is filed under its own name.
    public init(_ packages: [OfferedPackage]) {
        self.packages = Dictionary(packages.map { ($0.name, $0) }, uniquingKeysWith: { _, last in last })
    }

    /// `all_packages_hash`: SHA-256 over every package's name and hash, in name order. Stable: the same
    /// packages give the same hash whatever order they were added in.
    public var allPackagesHash: [UInt8] {
        var hasher = SHA256()
        hasher.update(data: Array("packages \(self.packages.count)\n".utf8))
        for name in self.packages.keys.sorted() {
            hasher.update(data: Array("\(name.utf8.count):".utf8) + Array(name.utf8))
            hasher.update(data: self.packages[name]!.hash)
        }
        return Array(hasher.finalize())
    }

    /// Names and versions; URLs and headers may carry secrets.
    public var description: String {
        "PackageOffer("
            + self.packages.keys.sorted().map { "\($0) \(self.packages[$0]!.version)" }.joined(separator: ", ")
            + ")"
    }

    /// The message.
    var message: OpAMP_PackagesAvailable {
        var message = OpAMP_PackagesAvailable()
        for (name, package) in self.packages {
            var available = OpAMP_PackageAvailable()
            available.type = package.kind == .topLevel ? .topLevel : .addon
            available.version = package.version
            available.hash = Data(package.hash)
            var file = OpAMP_DownloadableFile()
            file.downloadURL = package.downloadURL
            file.contentHash = Data(package.contentHash)
            file.signature = Data(package.signature)
            if !package.headers.isEmpty {
                var headers = OpAMP_Headers()
                headers.headers = package.headers.sorted { $0.key < $1.key }.map { key, value in
                    var header = OpAMP_Header()
                    header.key = key
                    header.value = value
                    return header
                }
                file.headers = headers
            }
            available.file = file
            message.packages[name] = available
        }
        message.allPackagesHash = Data(self.allPackagesHash)
        return message
    }
}

/// What an agent reports about one package (`PackageStatus`).
public struct PackageStatusReport: Sendable, Hashable {
    /// `PackageStatusEnum`.
    public enum State: String, Sendable, Hashable, Codable {
        case installed
        case installPending = "install_pending"
        case installing
        case installFailed = "install_failed"
        case downloading
    }

    /// Package name.
    public var name: String
    /// The version it has installed ("" when none).
    public var agentHasVersion: String
    /// The hash (`PackageAvailable.hash`) of what it has installed.
    public var agentHasHash: [UInt8]
    /// The version the server offered, as the agent understood it.
    public var serverOfferedVersion: String
    /// The hash of the offered package, as the agent understood it.
    public var serverOfferedHash: [UInt8]
    /// Where it is with the offered package.
    public var state: State
    /// Why the install failed.
    public var errorMessage: String
    /// Download progress, 0–100, while downloading.
    public var downloadPercent: Double?

    /// Creates a report.
    public init(
        name: String,
        agentHasVersion: String = "",
        agentHasHash: [UInt8] = [],
        serverOfferedVersion: String = "",
        serverOfferedHash: [UInt8] = [],
        state: State,
        errorMessage: String = "",
        downloadPercent: Double? = nil
    ) {
        self.name = name
        self.agentHasVersion = agentHasVersion
        self.agentHasHash = agentHasHash
        self.serverOfferedVersion = serverOfferedVersion
        self.serverOfferedHash = serverOfferedHash
        self.state = state
        self.errorMessage = errorMessage
        self.downloadPercent = downloadPercent
    }
}

/// Everything an agent reports about its packages (`PackageStatuses`).
public struct PackageStatuses: Sendable, Hashable {
    /// Per package, by name.
    public var packages: [String: PackageStatusReport]
    /// The `all_packages_hash` of the offer the agent last processed.
    public var serverProvidedAllPackagesHash: [UInt8]
    /// An error about the offer as a whole.
    public var errorMessage: String

    /// Creates statuses.
    public init(
        packages: [String: PackageStatusReport],
        serverProvidedAllPackagesHash: [UInt8],
        errorMessage: String = ""
    ) {
        self.packages = packages
        self.serverProvidedAllPackagesHash = serverProvidedAllPackagesHash
        self.errorMessage = errorMessage
    }

    init(_ message: OpAMP_PackageStatuses) {
        var packages: [String: PackageStatusReport] = [:]
        for (key, status) in message.packages {
            let state: PackageStatusReport.State =
                switch status.status {
                case .installed: .installed
                case .installPending: .installPending
                case .installing: .installing
                case .installFailed: .installFailed
                case .downloading: .downloading
                case .UNRECOGNIZED: .installPending
                }
            // The map key is the name (the spec says they are equal); the key wins if an agent disagrees.
            packages[key] = PackageStatusReport(
                name: key,
                agentHasVersion: status.agentHasVersion,
                agentHasHash: [UInt8](status.agentHasHash),
                serverOfferedVersion: status.serverOfferedVersion,
                serverOfferedHash: [UInt8](status.serverOfferedHash),
                state: state,
                errorMessage: status.errorMessage,
                downloadPercent: status.hasDownloadDetails ? status.downloadDetails.downloadPercent : nil
            )
        }
        self.init(
            packages: packages,
            serverProvidedAllPackagesHash: [UInt8](message.serverProvidedAllPackagesHash),
            errorMessage: message.errorMessage
        )
    }
}
