import Foundation
import NIOConcurrencyHelpers
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

    private struct State {
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
    }

    private let state = NIOLockedValueBox(State())
    private let nextConnection = Atomic<UInt64>(1)
    private let capabilities: ServerCapabilities
    private let heartbeat: (intervalSeconds: UInt64, endpoint: String)?
    private let clock: @Sendable () -> Date
    /// Who may connect and speak for which agent; CSRs.
    let access: any AgentAccessPolicy
    /// CA certificates (PEM) agents should trust for this server's TLS certificate, sent with certificates.
    public let serverCAPEM: String?
    private let refusals = NIOLockedValueBox(RefusalCounts())
    /// How long after taking an identity over a connection counts as its fresh owner: a second takeover
    /// within this time, after the owner spoke, means two agents share the UID.
    let duplicateWindow: TimeInterval = 60

    /// Creates a registry.
    /// - Parameters:
    ///   - heartbeat: interval and endpoint offered to agents that report heartbeats (`nil`: no offer).
    ///   - clock: the time source (tests pass their own).
    ///   - access: who may connect and speak for which agent, and what happens to CSRs (default: anyone).
    public init(
        heartbeat: (intervalSeconds: UInt64, endpoint: String)? = nil,
        access: any AgentAccessPolicy = SharedTokenAccess(tokens: []),
        serverCAPEM: String? = nil,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.capabilities = .tailplane
        self.heartbeat = heartbeat
        self.access = access
        self.serverCAPEM = serverCAPEM
        self.clock = clock
    }

    /// The endpoint and heartbeat interval agents are told to use (from the advertised endpoint), for
    /// connection settings offers; nil when no endpoint is advertised.
    public var advertisedConnection: (endpoint: String, heartbeatIntervalSeconds: UInt64)? {
        self.heartbeat.map { ($0.endpoint, $0.intervalSeconds) }
    }

    /// Connection settings that carry a client certificate: the advertised endpoint and heartbeat interval
    /// (never empty or zero, see opamp.md §5) and the server's CA for `tls.ca_pem_contents`. Nil when no
    /// endpoint is advertised.
    public func certificateOffer(_ certificate: OfferedCertificate) -> OpAMPConnectionOffer? {
        self.heartbeat.map {
            OpAMPConnectionOffer(
                endpoint: $0.endpoint,
                heartbeatIntervalSeconds: $0.intervalSeconds,
                certificate: certificate,
                serverCAPEM: self.serverCAPEM
            )
        }
    }

    /// Counts a refusal (the transports log it).
    func count(_ refusal: AccessRefusal) {
        self.refusals.withLockedValue { $0.byKind[refusal.kind, default: 0] += 1 }
    }

    /// Refusals since the server started, by kind (for `/metrics`).
    public func refusalCounts() -> RefusalCounts {
        self.refusals.withLockedValue { $0 }
    }

    deinit {
        for holder in self.state.withLockedValue({ Array($0.subscriptions.values) }) { holder.subscription?.finish() }
    }

    func newConnection() -> ConnectionID {
        ConnectionID(value: self.nextConnection.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    /// Subscribes to agent events from now on. Read it continuously; a subscriber more than `bufferLimit`
    /// events behind is told with ``AgentEventDelivery/overflow(missed:)`` and resynchronises from
    /// ``snapshot()``. Call ``AgentEventSubscription/cancel()`` when done.
    public func subscribe(bufferLimit: Int = 100_000) -> AgentEventSubscription {
        self.state.withLockedValue { state in
            state.subscriptions = state.subscriptions.filter { $0.value.subscription != nil }
            state.nextSubscription += 1
            let key = state.nextSubscription
            let subscription = AgentEventSubscription(bufferLimit: bufferLimit) { [weak self] in
                _ = self?.state.withLockedValue { $0.subscriptions.removeValue(forKey: key) }
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

    /// The answer to one agent message.
    struct Handled {
        /// The response to send on the same connection.
        var response: OpAMP_ServerToAgent
        /// Set when the message was refused for its credentials: the transport logs it and closes.
        var refusal: AccessRefusal?
    }

    /// Handles one decoded agent message from an anonymous connection and returns the response.
    func handle(_ message: OpAMP_AgentToServer, connection: ConnectionID, transport: TransportKind)
        -> OpAMP_ServerToAgent
    {
        self.process(message, connection: connection, transport: transport, principal: .anonymous).response
    }

    /// Handles one decoded agent message from a connection admitted as `principal`.
    func process(
        _ message: OpAMP_AgentToServer,
        connection: ConnectionID,
        transport: TransportKind,
        principal: AgentPrincipal
    ) -> Handled {
        guard let uid = InstanceUID(wire: message.instanceUid) else {
            return Handled(
                response: Self.badRequest(
                    "instance_uid must be 16 bytes (or a 26-character ULID); got \(message.instanceUid.count) bytes",
                    echo: message.instanceUid
                )
            )
        }
        return self.state.withLockedValue { state -> Handled in
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
                return Handled(response: response)
            }
            if message.hasAvailableComponents { context.knownComponents = state.components }
            var uid = uid
            if state.renamed[connection] == uid, let bound = state.bindings[connection] {
                uid = bound  // sent before the agent took in its new UID
            }
            // Credentials first: a refused message changes nothing. An error response carries nothing else.
            if let refusal = self.check(principal, uid: uid, message: message, state: state) {
                self.count(refusal)
                return Handled(response: Self.badRequest(refusal.reason, echo: message.instanceUid), refusal: refusal)
            }
            if message.hasConnectionSettingsRequest {
                switch self.certificateRequest(message, uid: uid, principal: principal, state: state) {
                case .failure(let refusal):
                    // A bad CSR gets BAD_REQUEST and nothing else changes; the connection stays open.
                    self.count(refusal)
                    return Handled(response: Self.badRequest(refusal.reason, echo: message.instanceUid))
                case .success(let offer):
                    context.issuedCertificate = offer
                }
            }
            var assigned: InstanceUID?
            var carried: RemoteConfig?
            // Whether this message took an identity over from another live connection.
            var tookOverNow = false
            // An agent that asks for a UID of its own while another live connection owns this one is a clone.
            let asksForOwnUID = message.flags & UInt64(OpAMP_AgentToServerFlags.requestInstanceUid.rawValue) != 0
            if transport == .webSocket, principal.instanceUID == nil, let owner = state.owners[uid],
                owner != connection,
                state.connections[owner] != nil, state.bindings[connection] != uid
            {
                let last = state.sessions[uid]?.snapshot.sequenceNum ?? 0
                let sequence = message.sequenceNum
                let sameAgent = sequence == 0 || (sequence > last && sequence <= last &+ 2)
                // A newcomer that asks for a UID of its own is not the owner coming back: it is a clone, and
                // taking the identity over would hand the owner's agent (and its config) to it.
                if asksForOwnUID
                    || (!sameAgent
                        && state.tookOver[owner].map { now.timeIntervalSince($0) < self.duplicateWindow } == true
                        && state.spokeAfterTakeover.contains(owner))
                {
                    // The newcomer asked for a UID of its own, or the owner took this identity over moments ago
                    // and has spoken since and now the agent it displaced is back: two live agents share the
                    // UID. The newcomer gets one of its own.
                    let fresh = Self.newUID(now: now)
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
                    tookOverNow = true
                }
            } else if transport == .http, principal.instanceUID == nil,
                asksForOwnUID,
                let owner = state.owners[uid], state.connections[owner] != nil
            {
                // An OpAMP client speaks over one transport, so a request over HTTP for a UID whose agent is
                // connected over a WebSocket comes from another process (a cloned collector). It asks for a UID
                // of its own: it gets one, with the desired config of the agent it was cloned from, and the
                // agent on the WebSocket keeps its identity (renaming that one would leave its socket bound to
                // a UID no agent has; found by fuzz-opamp-session).
                let fresh = Self.newUID(now: now)
                events.append(.instanceUIDReassigned(old: uid, new: fresh))
                carried = state.sessions[uid]?.desired
                assigned = fresh
                uid = fresh
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
                if transport == .webSocket, let previous = state.bindings[connection] {
                    // One WebSocket speaks for one agent. The one it spoke for until now is no longer connected
                    // through it (it would otherwise show as connected until the sweep), and what this connection
                    // remembered about that identity (a rename, a takeover) no longer applies.
                    if state.owners[previous] == connection {
                        state.owners[previous] = nil
                        events +=
                            state.sessions[previous]?.disconnected(reason: "its connection now speaks for \(uid)") ?? []
                    }
                    if assigned == nil { state.renamed[connection] = nil }
                    if !tookOverNow {
                        state.tookOver[connection] = nil
                        state.spokeAfterTakeover.remove(connection)
                    }
                }
                events += session.connected(transport, now: now)
                if transport == .webSocket {
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
            session.notePrincipal(principal)
            if output.wantsNewInstanceUID, assigned == nil, principal.instanceUID == nil {
                let fresh = Self.newUID(now: now)
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
                // Said on its WebSocket or (oddly) over HTTP while a WebSocket is open: either way that socket no
                // longer counts as the agent's connection; a later message on it connects the agent again.
                if let owner = state.owners.removeValue(forKey: uid) { state.bindings[owner] = nil }
                state.bindings[connection] = nil
            }
            state.sessions[uid] = session
            return Handled(response: output.response)
        }
    }

    /// Whether `principal` may send this message as `uid`: a per-agent credential speaks for its own UID
    /// only, and the access policy sees the first message of each connection and every description change.
    private func check(
        _ principal: AgentPrincipal,
        uid: InstanceUID,
        message: OpAMP_AgentToServer,
        state: borrowing State
    ) -> AccessRefusal? {
        if let bound = principal.instanceUID, bound != uid {
            return AccessRefusal(
                kind: "instance_uid",
                reason: "this connection's credential belongs to agent \(bound); it cannot speak for \(uid)"
            )
        }
        // Every message: a revocation, an expired enrolment token or a fleet change applies at once.
        let described = message.hasAgentDescription ? ProtobufConversion.description(message.agentDescription) : nil
        return self.access.authorize(
            principal,
            instanceUID: uid,
            description: described ?? state.sessions[uid]?.snapshot.description
        )
    }

    /// Runs a CSR through the access policy: the settings to answer with, or why not.
    private func certificateRequest(
        _ message: OpAMP_AgentToServer,
        uid: InstanceUID,
        principal: AgentPrincipal,
        state: borrowing State
    ) -> Result<OpAMPConnectionOffer?, AccessRefusal> {
        let csr = message.connectionSettingsRequest.opamp.certificateRequest.csr
        guard !csr.isEmpty, let pem = String(data: csr, encoding: .utf8) else {
            return .failure(AccessRefusal(kind: "csr", reason: "connection_settings_request carries no PEM CSR"))
        }
        // opamp-go hands `connection_settings.opamp` to the agent only with this capability: without it the
        // certificate would be signed and never arrive.
        guard AgentCapabilities(rawValue: message.capabilities).contains(.acceptsOpAMPConnectionSettings) else {
            return .failure(
                AccessRefusal(
                    kind: "csr",
                    reason:
                        "a CSR needs the AcceptsOpAMPConnectionSettings capability: the certificate comes back in connection_settings.opamp"
                )
            )
        }
        guard self.heartbeat != nil else {
            // Connection settings need a destination endpoint, and without an advertised one there is none.
            return .failure(
                AccessRefusal(
                    kind: "csr",
                    reason: "this server has no advertised endpoint, so it cannot offer certificates"
                )
            )
        }
        let description =
            message.hasAgentDescription
            ? ProtobufConversion.description(message.agentDescription) : state.sessions[uid]?.snapshot.description
        switch self.access.certificateRequest(pem, instanceUID: uid, description: description, principal: principal) {
        case .issued(let certificate, let ca):
            return .success(
                self.certificateOffer(
                    OfferedCertificate(certificatePEM: certificate, privateKeyPEM: nil, caCertificatePEM: ca)
                )
            )
        case .pending:
            return .success(nil)
        case .refused(let reason):
            return .failure(AccessRefusal(kind: "csr", reason: "certificate request refused: \(reason)"))
        }
    }

    /// Closes the live connection of an agent (after its credential was revoked); HTTP agents are refused on
    /// their next poll by the access policy.
    public func disconnect(_ uid: InstanceUID, reason: String) {
        self.state.withLockedValue { state in
            let now = self.clock()
            if let owner = state.owners.removeValue(forKey: uid) {
                state.bindings[owner] = nil
                state.connections[owner]?.close()
            }
            if var session = state.sessions[uid] {
                self.publish(session.disconnected(reason: reason), at: now, to: state.subscriptions)
                state.sessions[uid] = session
            }
        }
    }

    /// Registers a new WebSocket connection: how to push to it and how to close it.
    func attach(_ connection: ConnectionID, pusher: @escaping Pusher, closer: @escaping Closer = {}) {
        self.state.withLockedValue { $0.connections[connection] = Connection(push: pusher, close: closer) }
    }

    /// How many entries each piece of connection bookkeeping holds (tests and the session fuzzer check that
    /// closing every connection leaves none behind, and that forgetting agents empties the registry).
    func bookkeeping() -> [String: Int] {
        self.state.withLockedValue { state in
            [
                "sessions": state.sessions.count, "bindings": state.bindings.count, "owners": state.owners.count,
                "connections": state.connections.count, "tookOver": state.tookOver.count,
                "spokeAfterTakeover": state.spokeAfterTakeover.count, "displaced": state.displaced.count,
                "renamed": state.renamed.count, "components": state.components.count,
            ]
        }
    }

    /// The first disagreement among the registry's bookkeeping, or nil: every WebSocket owner is bound to its
    /// agent, has a live connection and an agent shown connected (over it, or over HTTP when the agent also posts
    /// there), and every agent shown connected over WebSocket has an owner. (Checked by the session fuzzer after
    /// every step.)
    func consistencyProblem() -> String? {
        self.state.withLockedValue { state -> String? in
            for (uid, owner) in state.owners {
                if state.bindings[owner] != uid {
                    return "\(uid)'s WebSocket is bound to \(String(describing: state.bindings[owner]))"
                }
                if state.connections[owner] == nil { return "\(uid)'s WebSocket is not a live connection" }
                if state.sessions[uid]?.snapshot.connected != true {
                    return "\(uid) has a WebSocket but is shown offline"
                }
            }
            for (connection, uid) in state.bindings where state.owners[uid] != connection {
                return "a connection is bound to \(uid), which another connection (or none) owns"
            }
            for (uid, session) in state.sessions where session.snapshot.transport == .webSocket {
                if state.owners[uid] == nil { return "\(uid) is shown connected over WebSocket without a connection" }
            }
            return nil
        }
    }

    /// A connection closed.
    func connectionClosed(_ connection: ConnectionID, reason: String) {
        self.state.withLockedValue { state in
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
        self.state.withLockedValue { state in
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
            var forgot = false
            for (index, (uid, lastSeen)) in offline.enumerated()
            where index < excess || now.timeIntervalSince(lastSeen) > forgetAfter {
                state.sessions[uid] = nil
                forgot = true
            }
            if forgot, !state.components.isEmpty {
                // Component lists no remaining agent reports go too.
                let used = Set(state.sessions.values.compactMap(\.snapshot.availableComponentsHash))
                state.components = state.components.filter { used.contains($0.key) }
            }
        }
    }

    static func newUID(now: Date) -> InstanceUID {
        InstanceUID.version7(unixMilliseconds: UInt64(max(0, now.timeIntervalSince1970 * 1000)))
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
        self.update(configs) { session, config in session.setDesired(config) }
    }

    /// Changes many sessions (made when missing), a few agents per lock hold so the event loops' own messages
    /// are not held up by a big batch, and pushes what each change calls for. Queued under the lock: two quick
    /// changes reach an agent in the order they were made.
    private func update<Value>(
        _ values: [InstanceUID: Value],
        _ change: (inout AgentSession, Value) -> OpAMP_ServerToAgent?
    ) {
        let now = self.clock()
        let entries = Array(values)
        for start in stride(from: 0, to: entries.count, by: 64) {
            self.state.withLockedValue { state in
                for (uid, value) in entries[start..<min(start + 64, entries.count)] {
                    var session = state.sessions.removeValue(forKey: uid) ?? AgentSession(instanceUID: uid, now: now)
                    if let push = change(&session, value), let owner = state.owners[uid] {
                        _ = state.connections[owner]?.push(push)
                    }
                    state.sessions[uid] = session
                }
            }
        }
    }

    /// Sets where agents should send their own telemetry (`nil`: no offer). WebSocket agents get a changed
    /// offer at once, HTTP agents on their next poll; each kind goes only to agents that report it.
    public func setDesiredTelemetry(_ offers: [InstanceUID: TelemetryOffer?]) {
        let now = self.clock()
        let entries = Array(offers)
        for start in stride(from: 0, to: entries.count, by: 64) {
            self.state.withLockedValue { state in
                for (uid, offer) in entries[start..<min(start + 64, entries.count)] {
                    guard var session = state.sessions[uid] else { continue }
                    let (push, events) = session.setTelemetry(offer, now: now)
                    state.sessions[uid] = session
                    self.publish(events, at: now, to: state.subscriptions)
                    if let push, let owner = state.owners[uid] { _ = state.connections[owner]?.push(push) }
                }
            }
        }
    }

    /// Sets the packages agents should have (`nil`: packages are not managed for the agent). WebSocket
    /// agents get a changed offer at once, HTTP agents on their next poll; only agents with AcceptsPackages
    /// are offered anything.
    public func setDesiredPackages(_ offers: [InstanceUID: PackageOffer?]) {
        self.update(offers) { session, offer in session.setPackages(offer) }
    }

    /// Sends a command; false when the agent does not accept it. Delivered at once over WebSocket, on the
    /// next poll over HTTP.
    @discardableResult
    public func send(_ command: AgentCommand, to uid: InstanceUID) -> Bool {
        self.state.withLockedValue { state in
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
        return self.state.withLockedValue { state in
            guard var session = state.sessions[uid] else { return "unknown agent" }
            guard session.snapshot.capabilities.contains(.acceptsOpAMPConnectionSettings) else {
                return "the agent does not accept OpAMP connection settings"
            }
            let now = self.clock()
            let (push, events) = session.offer(offer, now: now)
            state.sessions[uid] = session
            self.publish(events, at: now, to: state.subscriptions)
            if let push, let owner = state.owners[uid] { _ = state.connections[owner]?.push(push) }
            return nil
        }
    }

    /// One agent's state.
    public func agent(_ uid: InstanceUID) -> AgentSnapshot? {
        self.state.withLockedValue { $0.sessions[uid]?.snapshot }
    }

    /// Every agent's state, sorted by instance UID.
    public func snapshot() -> [AgentSnapshot] {
        self.state.withLockedValue { state in state.sessions.values.map(\.snapshot) }.sorted {
            $0.instanceUID < $1.instanceUID
        }
    }

    /// Number of agents connected now.
    public var connectedCount: Int {
        self.state.withLockedValue { state in state.sessions.values.filter { $0.snapshot.transport != nil }.count }
    }
}

/// A subscription the registry does not keep alive.
struct WeakSubscription {
    weak var subscription: AgentEventSubscription?
}
