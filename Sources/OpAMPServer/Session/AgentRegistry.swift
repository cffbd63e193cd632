import Foundation
import OpAMPProtocol
import Synchronization

/// Identifies one transport connection (a WebSocket, or one HTTP request).
public struct ConnectionID: Sendable, Hashable {
    let value: UInt64
}

/// All agents the server knows, their sessions and their live connections.
///
/// Thread-safe: transports call it from their event loops, the layer above from anywhere. Sessions are
/// pure state machines; the registry adds the lock, connection bookkeeping, instance UID assignment, pushes
/// to WebSocket connections and the event stream.
public final class AgentRegistry: Sendable {
    /// Writes a message to a live WebSocket connection; returns false when it could not (connection gone or
    /// not reading).
    typealias Pusher = @Sendable (OpAMP_ServerToAgent) -> Bool

    private struct State: ~Copyable {
        var sessions: [InstanceUID: AgentSession] = [:]
        /// Which agent each live connection speaks for.
        var bindings: [ConnectionID: InstanceUID] = [:]
        /// The live WebSocket connection of each agent.
        var owners: [InstanceUID: ConnectionID] = [:]
        var pushers: [ConnectionID: Pusher] = [:]
        /// Component lists by available-components hash: a fleet runs few distinct builds.
        var components: [[UInt8]: Set<String>] = [:]
        var random = SystemRandomNumberGenerator()
    }

    private let state = Mutex(State())
    private let nextConnection = Atomic<UInt64>(1)
    private let capabilities: ServerCapabilities
    private let heartbeat: (intervalSeconds: UInt64, endpoint: String)?
    private let continuation: AsyncStream<AgentEvent>.Continuation
    /// Every agent event, in order per agent. Consume it continuously; it is unbounded.
    public let events: AsyncStream<AgentEvent>
    private let clock: @Sendable () -> Date

    /// Creates a registry.
    /// - Parameters:
    ///   - capabilities: what the server advertises.
    ///   - heartbeat: interval and endpoint offered to agents that report heartbeats (`nil`: no offer).
    ///   - clock: the time source (tests pass their own).
    public init(
        capabilities: ServerCapabilities = .tailplane,
        heartbeat: (intervalSeconds: UInt64, endpoint: String)? = nil,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.capabilities = capabilities
        self.heartbeat = heartbeat
        self.clock = clock
        (self.events, self.continuation) = AsyncStream.makeStream(of: AgentEvent.self)
    }

    deinit {
        self.continuation.finish()
    }

    func newConnection() -> ConnectionID {
        ConnectionID(value: self.nextConnection.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    private func publish(_ events: [AgentEvent]) {
        for event in events { self.continuation.yield(event) }
    }

    // MARK: Transport side

    /// Handles one decoded agent message and returns the response to send on the same connection.
    func handle(_ message: OpAMP_AgentToServer, connection: ConnectionID, transport: TransportKind)
        -> OpAMP_ServerToAgent
    {
        guard let uid = InstanceUID(wire: message.instanceUid) else {
            return Self.badRequest(
                "instance_uid must be 16 bytes (or a 26-character ULID); got \(message.instanceUid.count) bytes",
                echo: message.instanceUid
            )
        }
        let now = self.clock()
        var context = AgentSession.Context(serverCapabilities: self.capabilities, heartbeat: self.heartbeat, now: now)
        var events: [AgentEvent] = []
        let response = self.state.withLock { state -> OpAMP_ServerToAgent in
            if message.hasAvailableComponents { context.knownComponents = state.components }
            var uid = uid
            var assigned: InstanceUID?
            // The same UID live on another WebSocket: give this connection an agent of its own.
            if transport == .webSocket, let owner = state.owners[uid], owner != connection, state.pushers[owner] != nil,
                state.bindings[connection] != uid
            {
                let fresh = Self.newUID(now: now, random: &state.random)
                events.append(.instanceUIDReassigned(old: uid, new: fresh))
                assigned = fresh
                uid = fresh
            }
            var session = state.sessions.removeValue(forKey: uid) ?? AgentSession(instanceUID: uid, now: now)
            let first = state.bindings[connection] != uid
            if first {
                events += session.connected(transport)
                if transport == .webSocket {
                    if let previous = state.bindings[connection], state.owners[previous] == connection {
                        state.owners[previous] = nil
                    }
                    state.bindings[connection] = uid
                    state.owners[uid] = connection
                }
            }
            var output = session.receive(message, firstOnConnection: first, context: context)
            events += output.events
            if let learned = output.learnedComponents, state.components.count < 1000 {
                state.components[learned.hash] = learned.names
            }
            if output.wantsNewInstanceUID, assigned == nil {
                let fresh = Self.newUID(now: now, random: &state.random)
                session.rekey(to: fresh)
                events.append(.instanceUIDReassigned(old: uid, new: fresh))
                if transport == .webSocket {
                    state.owners[uid] = nil
                    state.owners[fresh] = connection
                    state.bindings[connection] = fresh
                }
                assigned = fresh
                uid = fresh
            }
            if let assigned {
                output.response.agentIdentification.newInstanceUid = Data(assigned.bytes)
            }
            if output.disconnecting {
                events += session.disconnected(reason: "agent disconnected")
                if state.owners[uid] == connection { state.owners[uid] = nil }
                state.bindings[connection] = nil
            }
            state.sessions[uid] = session
            return output.response
        }
        self.publish(events)
        return response
    }

    /// Registers the pusher of a new WebSocket connection.
    func attach(_ connection: ConnectionID, pusher: @escaping Pusher) {
        self.state.withLock { $0.pushers[connection] = pusher }
    }

    /// A connection closed (or an HTTP request finished, for which nothing is kept).
    func connectionClosed(_ connection: ConnectionID, reason: String) {
        let events = self.state.withLock { state -> [AgentEvent] in
            state.pushers[connection] = nil
            guard let uid = state.bindings.removeValue(forKey: connection), state.owners[uid] == connection else {
                return []
            }
            state.owners[uid] = nil
            return state.sessions[uid]?.disconnected(reason: reason) ?? []
        }
        self.publish(events)
    }

    /// Marks agents offline that have been silent too long (HTTP agents poll; WebSocket agents send heartbeats).
    public func sweep(httpTimeout: TimeInterval, webSocketTimeout: TimeInterval) {
        let now = self.clock()
        let events = self.state.withLock { state -> [AgentEvent] in
            var events: [AgentEvent] = []
            for uid in Array(state.sessions.keys) {
                guard let transport = state.sessions[uid]?.snapshot.transport,
                    let lastSeen = state.sessions[uid]?.snapshot.lastSeen
                else {
                    continue
                }
                let timeout = transport == .http ? httpTimeout : webSocketTimeout
                if now.timeIntervalSince(lastSeen) > timeout {
                    events += state.sessions[uid]!.disconnected(reason: "no message for \(Int(timeout))s")
                    if let owner = state.owners.removeValue(forKey: uid) { state.bindings[owner] = nil }
                }
            }
            return events
        }
        self.publish(events)
    }

    static func newUID(now: Date, random: inout SystemRandomNumberGenerator) -> InstanceUID {
        InstanceUID.version7(unixMilliseconds: UInt64(max(0, now.timeIntervalSince1970 * 1000)), using: &random)
    }

    static func badRequest(_ text: String, echo: Data = Data()) -> OpAMP_ServerToAgent {
        var response = OpAMP_ServerToAgent()
        response.instanceUid = echo
        response.errorResponse.type = .badRequest
        response.errorResponse.errorMessage = text
        return response
    }

    // MARK: The API for the layer above

    /// Sets the config an agent should run (`nil` to stop managing it). WebSocket agents get it at once,
    /// HTTP agents on their next poll; agents that do not accept remote config never get it.
    public func setDesiredConfig(_ config: RemoteConfig?, for uid: InstanceUID) {
        self.setDesiredConfig([uid: config])
    }

    /// Sets the desired config of many agents at once.
    public func setDesiredConfig(_ configs: [InstanceUID: RemoteConfig?]) {
        let pushes = self.state.withLock { state -> [(Pusher, OpAMP_ServerToAgent)] in
            var pushes: [(Pusher, OpAMP_ServerToAgent)] = []
            let now = self.clock()
            for (uid, config) in configs {
                var session = state.sessions.removeValue(forKey: uid) ?? AgentSession(instanceUID: uid, now: now)
                if let push = session.setDesired(config), let owner = state.owners[uid],
                    let pusher = state.pushers[owner]
                {
                    pushes.append((pusher, push))
                }
                state.sessions[uid] = session
            }
            return pushes
        }
        for (pusher, message) in pushes { _ = pusher(message) }
    }

    /// Sends a command; false when the agent does not accept it. Delivered at once over WebSocket, on the
    /// next poll over HTTP.
    @discardableResult
    public func send(_ command: AgentCommand, to uid: InstanceUID) -> Bool {
        let result = self.state.withLock { state -> (Bool, (Pusher, OpAMP_ServerToAgent)?) in
            guard var session = state.sessions[uid], session.snapshot.capabilities.contains(.acceptsRestartCommand)
            else {
                return (false, nil)
            }
            let push = session.send(command)
            state.sessions[uid] = session
            if let push, let owner = state.owners[uid], let pusher = state.pushers[owner] {
                return (true, (pusher, push))
            }
            return (true, nil)
        }
        if let (pusher, message) = result.1 { _ = pusher(message) }
        return result.0
    }

    /// Offers new OpAMP connection settings. Returns why not when the offer is invalid or the agent does
    /// not accept connection settings; delivered at once over WebSocket, on the next poll over HTTP.
    @discardableResult
    public func offerConnectionSettings(_ offer: OpAMPConnectionOffer, to uid: InstanceUID) -> String? {
        if let problem = offer.problem { return problem }
        let result = self.state.withLock { state -> (String?, (Pusher, OpAMP_ServerToAgent)?) in
            guard var session = state.sessions[uid] else { return ("unknown agent", nil) }
            guard session.snapshot.capabilities.contains(.acceptsOpAMPConnectionSettings) else {
                return ("the agent does not accept OpAMP connection settings", nil)
            }
            let push = session.offer(offer)
            state.sessions[uid] = session
            if let push, let owner = state.owners[uid], let pusher = state.pushers[owner] {
                return (nil, (pusher, push))
            }
            return (nil, nil)
        }
        if let (pusher, message) = result.1 { _ = pusher(message) }
        return result.0
    }

    /// One agent's state.
    public func agent(_ uid: InstanceUID) -> AgentSnapshot? {
        self.state.withLock { $0.sessions[uid]?.snapshot }
    }

    /// Every agent's state, sorted by instance UID.
    public func snapshot() -> [AgentSnapshot] {
        self.state.withLock { state in state.sessions.values.map(\.snapshot) }.sorted {
            $0.instanceUID < $1.instanceUID
        }
    }

    /// Number of agents connected now.
    public var connectedCount: Int {
        self.state.withLock { state in state.sessions.values.filter { $0.snapshot.transport != nil }.count }
    }
}
