import Foundation
import OpAMPProtocol
import Synchronization

/// Identifies one transport connection (a WebSocket, or one HTTP request).
struct ConnectionID: Sendable, Hashable {
    let value: UInt64
}

/// All agents the server knows, their sessions and their live connections.
///
/// Thread-safe: transports call it from their event loops, the layer above from anywhere. Sessions are
/// pure state machines; the registry adds the lock, connection bookkeeping, instance UID assignment, pushes
/// to WebSocket connections and event subscriptions. Events are published and pushes are queued on their
/// connection under the lock, so both are in the order of the state changes that caused them.
///
/// **One instance UID, two connections.** A WebSocket that arrives with the UID of an agent whose old
/// socket is still open takes the identity over and the old socket is closed: that is a supervisor
/// restarting with its saved UID (sequence 0), or a client reconnecting over a half-open socket (its
/// sequence continues, perhaps with a gap of one). The newcomer gets a new UID, with the desired config
/// carried over, only on evidence of two live agents: the connection it would displace took the identity
/// over itself less than ``duplicateWindow`` ago and has spoken since, and the newcomer's sequence number
/// neither restarts nor continues the one the server has.
public final class AgentRegistry: Sendable {
    /// Queues a message on a live WebSocket connection (in call order, never synchronously); returns false
    /// when it could not (connection gone).
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
        /// Connections that took an identity over from another live connection, and when.
        var tookOver: [ConnectionID: Date] = [:]
        /// Of those, the ones that sent another message after taking over.
        var spokeAfterTakeover: Set<ConnectionID> = []
        /// Connections that lost their identity to a newer one and are being closed: their messages change nothing.
        var displaced: Set<ConnectionID> = []
        /// Connections told to use a new UID, with the UID they had: messages still in flight with the old one
        /// belong to the new one.
        var renamed: [ConnectionID: InstanceUID] = [:]
        /// Held weakly: a subscription its consumer dropped goes away by itself.
        var subscriptions: [UInt64: WeakSubscription] = [:]
        var nextSubscription: UInt64 = 0
        /// Component lists by available-components hash: a fleet runs few distinct builds.
        var components: [[UInt8]: Set<String>] = [:]
        var random = SystemRandomNumberGenerator()
    }

    private let state = Mutex(State())
    private let nextConnection = Atomic<UInt64>(1)
    private let capabilities: ServerCapabilities
    private let heartbeat: (intervalSeconds: UInt64, endpoint: String)?
    private let clock: @Sendable () -> Date
    /// How long after taking an identity over a connection counts as its fresh owner: a second takeover
    /// within this time, after the owner spoke, means two agents share the UID.
    let duplicateWindow: TimeInterval = 60

    /// Creates a registry.
    /// - Parameters:
    ///   - heartbeat: interval and endpoint offered to agents that report heartbeats (`nil`: no offer).
    ///   - clock: the time source (tests pass their own).
    public init(
        heartbeat: (intervalSeconds: UInt64, endpoint: String)? = nil,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.capabilities = .tailplane
        self.heartbeat = heartbeat
        self.clock = clock
    }

    deinit {
        for holder in self.state.withLock({ Array($0.subscriptions.values) }) { holder.subscription?.finish() }
    }

    func newConnection() -> ConnectionID {
        ConnectionID(value: self.nextConnection.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    /// Subscribes to agent events from now on. Read it continuously; a subscriber more than `bufferLimit`
    /// events behind is told with ``AgentEventDelivery/overflow(missed:)`` and resynchronises from
    /// ``snapshot()``. Call ``AgentEventSubscription/cancel()`` when done.
    public func subscribe(bufferLimit: Int = 100_000) -> AgentEventSubscription {
        self.state.withLock { state in
            state.subscriptions = state.subscriptions.filter { $0.value.subscription != nil }
            state.nextSubscription += 1
            let key = state.nextSubscription
            let subscription = AgentEventSubscription(bufferLimit: bufferLimit) { [weak self] in
                _ = self?.state.withLock { $0.subscriptions.removeValue(forKey: key) }
            }
            state.subscriptions[key] = WeakSubscription(subscription: subscription)
            return subscription
        }
    }

    /// Delivers events to every subscriber; called under the lock, so the order is the order of the changes.
    private func publish(_ events: [AgentEvent], at time: Date, to subscriptions: [UInt64: WeakSubscription]) {
        guard !events.isEmpty else { return }
        let records = events.map { AgentEventRecord(time: time, event: $0) }
        for holder in subscriptions.values { holder.subscription?.deliver(records) }
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
        return self.state.withLock { state -> OpAMP_ServerToAgent in
            // Read under the lock, so event times never go backwards.
            let now = self.clock()
            var context = AgentSession.Context(
                serverCapabilities: self.capabilities,
                heartbeat: self.heartbeat,
                now: now
            )
            var events: [AgentEvent] = []
            defer { self.publish(events, at: now, to: state.subscriptions) }
            if state.displaced.contains(connection) {
                // This socket lost its identity to a newer connection and is closing: answer, change nothing.
                var response = OpAMP_ServerToAgent()
                response.instanceUid = message.instanceUid
                response.capabilities = self.capabilities.rawValue
                return response
            }
            if message.hasAvailableComponents { context.knownComponents = state.components }
            var uid = uid
            if state.renamed[connection] == uid, let bound = state.bindings[connection] {
                uid = bound  // sent before the agent took in its new UID
            }
            var assigned: InstanceUID?
            var carried: RemoteConfig?
            if transport == .webSocket, let owner = state.owners[uid], owner != connection,
                state.connections[owner] != nil, state.bindings[connection] != uid
            {
                let last = state.sessions[uid]?.snapshot.sequenceNum ?? 0
                let sequence = message.sequenceNum
                let sameAgent = sequence == 0 || (sequence > last && sequence <= last &+ 2)
                if !sameAgent, let since = state.tookOver[owner], now.timeIntervalSince(since) < self.duplicateWindow,
                    state.spokeAfterTakeover.contains(owner)
                {
                    // The owner took this identity over moments ago and has spoken since, and now the agent it
                    // displaced is back: two live agents share the UID. The newcomer gets one of its own.
                    let fresh = Self.newUID(now: now, random: &state.random)
                    events.append(.instanceUIDReassigned(old: uid, new: fresh))
                    carried = state.sessions[uid]?.desired
                    state.renamed[connection] = uid
                    assigned = fresh
                    uid = fresh
                } else {
                    // A restarted supervisor or a reconnect over a half-open socket: the newer connection wins.
                    state.connections[owner]?.close()
                    state.displaced.insert(owner)
                    state.bindings[owner] = nil
                    state.owners[uid] = nil
                    state.tookOver[connection] = now
                }
            } else if state.tookOver[connection] != nil {
                state.spokeAfterTakeover.insert(connection)
            }
            var session =
                state.sessions.removeValue(forKey: uid)
                ?? AgentSession(instanceUID: uid, wireUID: assigned == nil ? message.instanceUid : nil, now: now)
            if let carried { _ = session.setDesired(carried) }
            // For HTTP every request is a new connection: it is a "first" message only when the agent was offline.
            let first = transport == .http ? session.snapshot.transport == nil : state.bindings[connection] != uid
            if first {
                events += session.connected(transport, now: now)
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
                    state.renamed[connection] = uid
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
    }

    /// Registers a new WebSocket connection: how to push to it and how to close it.
    func attach(_ connection: ConnectionID, pusher: @escaping Pusher, closer: @escaping Closer = {}) {
        self.state.withLock { $0.connections[connection] = Connection(push: pusher, close: closer) }
    }

    /// A connection closed.
    func connectionClosed(_ connection: ConnectionID, reason: String) {
        self.state.withLock { state in
            let now = self.clock()
            state.connections[connection] = nil
            state.tookOver[connection] = nil
            state.spokeAfterTakeover.remove(connection)
            state.displaced.remove(connection)
            state.renamed[connection] = nil
            guard let uid = state.bindings.removeValue(forKey: connection), state.owners[uid] == connection else {
                return
            }
            state.owners[uid] = nil
            self.publish(state.sessions[uid]?.disconnected(reason: reason) ?? [], at: now, to: state.subscriptions)
        }
    }

    /// Marks agents offline that have been silent too long (closing their WebSockets), and forgets agents
    /// offline for longer than `forgetAfter`, or the longest-offline ones beyond `maximumAgents`.
    func sweep(
        httpTimeout: TimeInterval,
        webSocketTimeout: TimeInterval,
        forgetAfter: TimeInterval = .infinity,
        maximumAgents: Int = .max
    ) {
        self.state.withLock { state in
            let now = self.clock()
            var offline: [(InstanceUID, Date)] = []
            for uid in Array(state.sessions.keys) {
                let snapshot = state.sessions[uid]!.snapshot
                guard let transport = snapshot.transport else {
                    offline.append((uid, snapshot.lastSeen))
                    continue
                }
                let timeout = transport == .http ? httpTimeout : webSocketTimeout
                guard now.timeIntervalSince(snapshot.lastSeen) > timeout else { continue }
                self.publish(
                    state.sessions[uid]!.disconnected(reason: "no message for \(Int(timeout))s"),
                    at: now,
                    to: state.subscriptions
                )
                offline.append((uid, snapshot.lastSeen))
                if let owner = state.owners.removeValue(forKey: uid) {
                    state.bindings[owner] = nil
                    state.connections[owner]?.close()
                }
            }
            offline.sort { $0.1 < $1.1 }
            let excess = state.sessions.count - maximumAgents
            for (index, (uid, lastSeen)) in offline.enumerated()
            where index < excess || now.timeIntervalSince(lastSeen) > forgetAfter {
                state.sessions[uid] = nil
            }
        }
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
        let now = self.clock()
        // A few agents per lock hold, so the event loops' own messages are not held up by a big batch.
        let entries = Array(configs)
        for start in stride(from: 0, to: entries.count, by: 64) {
            self.state.withLock { state in
                for (uid, config) in entries[start..<min(start + 64, entries.count)] {
                    var session = state.sessions.removeValue(forKey: uid) ?? AgentSession(instanceUID: uid, now: now)
                    // Queued under the lock: two quick changes reach the agent in the order they were made.
                    if let push = session.setDesired(config), let owner = state.owners[uid] {
                        _ = state.connections[owner]?.push(push)
                    }
                    state.sessions[uid] = session
                }
            }
        }
    }

    /// Sends a command; false when the agent does not accept it. Delivered at once over WebSocket, on the
    /// next poll over HTTP.
    @discardableResult
    public func send(_ command: AgentCommand, to uid: InstanceUID) -> Bool {
        self.state.withLock { state in
            guard var session = state.sessions[uid], session.snapshot.capabilities.contains(.acceptsRestartCommand)
            else {
                return false
            }
            let push = session.send(command)
            state.sessions[uid] = session
            if let push, let owner = state.owners[uid] { _ = state.connections[owner]?.push(push) }
            return true
        }
    }

    /// Offers new OpAMP connection settings. Returns why not when the offer is invalid or the agent does
    /// not accept connection settings; delivered at once over WebSocket, on the next poll over HTTP.
    @discardableResult
    public func offerConnectionSettings(_ offer: OpAMPConnectionOffer, to uid: InstanceUID) -> String? {
        if let problem = offer.problem { return problem }
        return self.state.withLock { state in
            guard var session = state.sessions[uid] else { return "unknown agent" }
            guard session.snapshot.capabilities.contains(.acceptsOpAMPConnectionSettings) else {
                return "the agent does not accept OpAMP connection settings"
            }
            let push = session.offer(offer)
            state.sessions[uid] = session
            if let push, let owner = state.owners[uid] { _ = state.connections[owner]?.push(push) }
            return nil
        }
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

/// A subscription the registry does not keep alive.
struct WeakSubscription {
    weak var subscription: AgentEventSubscription?
}
