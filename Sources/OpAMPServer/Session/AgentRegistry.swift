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
/// to WebSocket connections and the event stream (events are published under the lock, so they are in
/// order per agent).
public final class AgentRegistry: Sendable {
    /// Writes a message to a live WebSocket connection; returns false when it could not (connection gone or
    /// not reading).
    typealias Pusher = @Sendable (OpAMP_ServerToAgent) -> Bool
    /// Closes a WebSocket connection.
    typealias Closer = @Sendable () -> Void

    private struct Connection {
        var push: Pusher
        var close: Closer
    }

    private struct State: ~Copyable {
        var sessions: [InstanceUID: AgentSession] = [:]
        /// Which agent each live connection speaks for.
        var bindings: [ConnectionID: InstanceUID] = [:]
        /// The live WebSocket connection of each agent.
        var owners: [InstanceUID: ConnectionID] = [:]
        var connections: [ConnectionID: Connection] = [:]
        /// Component lists by available-components hash: a fleet runs few distinct builds.
        var components: [[UInt8]: Set<String>] = [:]
        var random = SystemRandomNumberGenerator()
    }

    private let state = Mutex(State())
    private let nextConnection = Atomic<UInt64>(1)
    private let capabilities: ServerCapabilities
    private let heartbeat: (intervalSeconds: UInt64, endpoint: String)?
    private let continuation: AsyncStream<AgentEvent>.Continuation
    /// Every agent event, in order per agent. Consume it continuously: it keeps at most
    /// ``eventBufferLimit`` unread events and then drops the oldest.
    public let events: AsyncStream<AgentEvent>
    private let clock: @Sendable () -> Date
    /// Unread events kept before the oldest are dropped.
    public static let eventBufferLimit = 1_000_000

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
        (self.events, self.continuation) = AsyncStream.makeStream(
            of: AgentEvent.self,
            bufferingPolicy: .bufferingNewest(Self.eventBufferLimit)
        )
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
        var stale: Closer?
        let response = self.state.withLock { state -> OpAMP_ServerToAgent in
            var events: [AgentEvent] = []
            defer { self.publish(events) }
            if message.hasAvailableComponents { context.knownComponents = state.components }
            var uid = uid
            var assigned: InstanceUID?
            if transport == .webSocket, let owner = state.owners[uid], owner != connection,
                state.connections[owner] != nil,
                state.bindings[connection] != uid
            {
                if let session = state.sessions[uid], message.sequenceNum == session.snapshot.sequenceNum &+ 1 {
                    // The same agent reconnecting while its old socket is still half open: keep its identity
                    // and drop the old connection.
                    stale = state.connections[owner]?.close
                    state.bindings[owner] = nil
                    state.owners[uid] = nil
                } else {
                    // Another agent using the same UID: give this connection an identity of its own.
                    let fresh = Self.newUID(now: now, random: &state.random)
                    events.append(.instanceUIDReassigned(old: uid, new: fresh))
                    assigned = fresh
                    uid = fresh
                }
            }
            var session =
                state.sessions.removeValue(forKey: uid)
                ?? AgentSession(instanceUID: uid, wireUID: assigned == nil ? message.instanceUid : nil, now: now)
            // For HTTP every request is a new connection: it is a "first" message only when the agent was offline.
            let first = transport == .http ? session.snapshot.transport == nil : state.bindings[connection] != uid
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
            if assigned != nil { session.rekey(to: uid) }
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
        stale?()
        return response
    }

    /// Registers a new WebSocket connection: how to push to it and how to close it.
    func attach(_ connection: ConnectionID, pusher: @escaping Pusher, closer: @escaping Closer = {}) {
        self.state.withLock { $0.connections[connection] = Connection(push: pusher, close: closer) }
    }

    /// A connection closed.
    func connectionClosed(_ connection: ConnectionID, reason: String) {
        self.state.withLock { state in
            state.connections[connection] = nil
            guard let uid = state.bindings.removeValue(forKey: connection), state.owners[uid] == connection else {
                return
            }
            state.owners[uid] = nil
            self.publish(state.sessions[uid]?.disconnected(reason: reason) ?? [])
        }
    }

    /// Marks agents offline that have been silent too long (closing their WebSockets), and forgets agents
    /// offline for longer than `forgetAfter`, or the longest-offline ones beyond `maximumAgents`.
    public func sweep(
        httpTimeout: TimeInterval,
        webSocketTimeout: TimeInterval,
        forgetAfter: TimeInterval = .infinity,
        maximumAgents: Int = .max
    ) {
        let now = self.clock()
        let closers = self.state.withLock { state -> [Closer] in
            var closers: [Closer] = []
            var offline: [(InstanceUID, Date)] = []
            for uid in Array(state.sessions.keys) {
                let snapshot = state.sessions[uid]!.snapshot
                guard let transport = snapshot.transport else {
                    offline.append((uid, snapshot.lastSeen))
                    continue
                }
                let timeout = transport == .http ? httpTimeout : webSocketTimeout
                guard now.timeIntervalSince(snapshot.lastSeen) > timeout else { continue }
                self.publish(state.sessions[uid]!.disconnected(reason: "no message for \(Int(timeout))s"))
                offline.append((uid, snapshot.lastSeen))
                if let owner = state.owners.removeValue(forKey: uid) {
                    state.bindings[owner] = nil
                    if let close = state.connections[owner]?.close { closers.append(close) }
                }
            }
            offline.sort { $0.1 < $1.1 }
            let excess = state.sessions.count - maximumAgents
            for (index, (uid, lastSeen)) in offline.enumerated()
            where index < excess || now.timeIntervalSince(lastSeen) > forgetAfter {
                state.sessions[uid] = nil
            }
            return closers
        }
        for close in closers { close() }
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
                    let connection = state.connections[owner]
                {
                    pushes.append((connection.push, push))
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
            if let push, let owner = state.owners[uid], let connection = state.connections[owner] {
                return (true, (connection.push, push))
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
            if let push, let owner = state.owners[uid], let connection = state.connections[owner] {
                return (nil, (connection.push, push))
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
