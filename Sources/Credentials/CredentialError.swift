import Foundation

/// Why a credential operation failed. Messages never contain key material or tokens.
public struct CredentialError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure.
    public enum Kind: String, Sendable, Hashable {
        /// A file is missing or unreadable.
        case unreadable
        /// A file or value is not the PEM or DER it should be.
        case malformed
        /// A certificate signing request failed a check (signature, key, identity).
        case rejectedRequest
        /// The CA exists already (on `init`) or does not (on load).
        case authorityState
        /// Writing a file failed.
        case unwritable
    }

    /// What kind of failure.
    public var kind: Kind
    /// A sentence for the operator or the agent.
    public var message: String

    /// Creates an error.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { self.message }
}
