import Foundation
import NIOConcurrencyHelpers
import OpAMPProtocol
import Testing

@testable import OpAMPServer

/// What a rollout engine must be able to trust about agents (issue 7): who an agent is across reconnects,
/// whether it runs what it was given, in which order it was given it, and when each change happened.
/// Each case failed on the code before its fix.
@Suite(.serialized) struct IdentityAndStateTests {
    let clock = TestClock()

    // MARK: Identity across reconnects (real sockets)

    @Test func aRestartedSupervisorKeepsItsSavedUIDAndGetsItsConfig() async throws {
        let (server, port) = try await startTestServer()
        defer { Task { await server.stop() } }
        let old = try await TestWebSocketAgent.connect(port: port)
        try await old.send(fullState(uid(80), seq: 0))
        _ = try await old.receive()
        for seq in 1...5 {
            try await old.send(heartbeat(uid(80), seq: UInt64(seq)))
            _ = try await old.receive()
        }
        let desired = config("processors: {tail_sampling: {}}")
        server.registry.setDesiredConfig(desired, for: uid(80))
        _ = try await old.receive()
        // The supervisor restarts with the UID it saved and starts counting at 0 again; its old socket is
        // still open on the server's side (half open).
        let restarted = try await TestWebSocketAgent.connect(port: port)
        try await restarted.send(fullState(uid(80), seq: 0))
        let response = try await restarted.receive()
        #expect(!response.hasAgentIdentification)
        #expect(response.remoteConfig.configHash == Data(desired.hash))
        let deadline = Date().addingTimeInterval(5)
        while !old.inbox.isClosed, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(old.inbox.isClosed)
        #expect(server.registry.snapshot().map(\.instanceUID) == [uid(80)])
        #expect(server.registry.agent(uid(80))?.desiredConfigHash == desired.hash)
        await restarted.close()
    }

    @Test func aClientThatLostAMessageInAHalfOpenSocketKeepsItsUID() async throws {
        let (server, port) = try await startTestServer()
        defer { Task { await server.stop() } }
        let old = try await TestWebSocketAgent.connect(port: port)
        try await old.send(fullState(uid(81), seq: 0))
        _ = try await old.receive()
        try await old.send(heartbeat(uid(81), seq: 1))
        _ = try await old.receive()
        // opamp-go counted message 2 when it queued it on the dead socket; the reconnect carries 3.
        let new = try await TestWebSocketAgent.connect(port: port)
        try await new.send(heartbeat(uid(81), seq: 3))
        let response = try await new.receive()
        #expect(!response.hasAgentIdentification)
        // A sequence gap on a compressed message: the server asks for the full state.
        #expect(response.asksForFullState)
        #expect(server.registry.agent(uid(81))?.connected == true)
        #expect(server.registry.snapshot().count == 1)
        await new.close()
    }

    @Test func aUIDGivenToADuplicateKeepsTheDesiredConfig() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connections = (0..<3).map { _ in
            let connection = registry.newConnection()
            registry.attach(connection, pusher: { _ in true })
            return connection
        }
        let desired = config("sampling v1")
        _ = registry.handle(fullState(uid(82)), connection: connections[0], transport: .webSocket)
        registry.setDesiredConfig(desired, for: uid(82))
        _ = registry.handle(fullState(uid(82)), connection: connections[1], transport: .webSocket)
        _ = registry.handle(heartbeat(uid(82), seq: 1), connection: connections[1], transport: .webSocket)
        // Another machine with the same UID and a sequence of its own.
        let response = registry.handle(fullState(uid(82), seq: 40), connection: connections[2], transport: .webSocket)
        let fresh = InstanceUID(bytes: response.agentIdentification.newInstanceUid)
        #expect(fresh != nil && fresh != uid(82))
        #expect(response.remoteConfig.configHash == Data(desired.hash))
        #expect(registry.agent(fresh ?? uid(82))?.desiredConfigHash == desired.hash)
    }

    @Test func aTakeoverLongAgoIsNotADuplicate() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connections = (0..<3).map { _ in
            let connection = registry.newConnection()
            registry.attach(connection, pusher: { _ in true })
            return connection
        }
        _ = registry.handle(fullState(uid(83)), connection: connections[0], transport: .webSocket)
        _ = registry.handle(fullState(uid(83)), connection: connections[1], transport: .webSocket)
        _ = registry.handle(heartbeat(uid(83), seq: 1), connection: connections[1], transport: .webSocket)
        self.clock.advance(registry.duplicateWindow + 1)
        let response = registry.handle(fullState(uid(83), seq: 40), connection: connections[2], transport: .webSocket)
        #expect(!response.hasAgentIdentification)
        #expect(registry.snapshot().count == 1)
    }

    @Test func oneAgentOnAFlappingLinkKeepsItsUID() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connections = (0..<3).map { _ in
            let connection = registry.newConnection()
            registry.attach(connection, pusher: { _ in true })
            return connection
        }
        _ = registry.handle(fullState(uid(90), seq: 0), connection: connections[0], transport: .webSocket)
        _ = registry.handle(heartbeat(uid(90), seq: 2), connection: connections[1], transport: .webSocket)
        _ = registry.handle(fullState(uid(90), seq: 3), connection: connections[1], transport: .webSocket)
        // The link drops again: the next socket continues the sequence (one message lost on the way).
        let response = registry.handle(heartbeat(uid(90), seq: 5), connection: connections[2], transport: .webSocket)
        #expect(!response.hasAgentIdentification)
        #expect(registry.snapshot().count == 1)
    }

    @Test func aDisplacedSocketCannotTakeItsUIDBack() {
        let registry = AgentRegistry(clock: self.clock.function)
        let closed = NIOLockedValueBox<[Int]>([])
        let connections = (0..<2).map { index in
            let connection = registry.newConnection()
            registry.attach(connection, pusher: { _ in true }, closer: { closed.withLockedValue { $0.append(index) } })
            return connection
        }
        _ = registry.handle(fullState(uid(91), seq: 0), connection: connections[0], transport: .webSocket)
        _ = registry.handle(fullState(uid(91), seq: 0), connection: connections[1], transport: .webSocket)
        // A frame the old socket had already delivered: answered, but it changes nothing.
        let late = registry.handle(heartbeat(uid(91), seq: 1), connection: connections[0], transport: .webSocket)
        #expect(late.instanceUid == Data(uid(91).bytes))
        #expect(closed.withLockedValue { $0 } == [0])
        #expect(registry.agent(uid(91))?.connected == true)
        let next = registry.handle(heartbeat(uid(91), seq: 1), connection: connections[1], transport: .webSocket)
        #expect(!next.hasAgentIdentification)
    }

    @Test func messagesInFlightWithTheOldUIDBelongToTheNewOne() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connection = registry.newConnection()
        registry.attach(connection, pusher: { _ in true })
        var asking = fullState(uid(92))
        asking.flags = UInt64(OpAMP_AgentToServerFlags.requestInstanceUid.rawValue)
        let response = registry.handle(asking, connection: connection, transport: .webSocket)
        let fresh = InstanceUID(bytes: response.agentIdentification.newInstanceUid)
        // Sent before the agent read its new UID.
        let inFlight = registry.handle(heartbeat(uid(92), seq: 1), connection: connection, transport: .webSocket)
        #expect(!inFlight.hasAgentIdentification)
        #expect(registry.snapshot().map(\.instanceUID) == [fresh].compactMap { $0 })
        #expect(registry.agent(fresh!)?.sequenceNum == 1)
    }

    // MARK: Rejection

    @Test func aLaterAppliedForTheSameHashClearsTheRejection() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connection = registry.newConnection()
        registry.attach(connection, pusher: { _ in true })
        _ = registry.handle(fullState(uid(84)), connection: connection, transport: .webSocket)
        let desired = config("v2")
        registry.setDesiredConfig(desired, for: uid(84))
        _ = registry.handle(
            status(uid(84), seq: 1, hash: desired.hash, .failed, error: "port in use"),
            connection: connection,
            transport: .webSocket
        )
        #expect(registry.agent(uid(84))?.rejectedConfigHash == desired.hash)
        // The port is free now: the agent's retry works.
        _ = registry.handle(
            status(uid(84), seq: 2, hash: desired.hash, .applied),
            connection: connection,
            transport: .webSocket
        )
        #expect(registry.agent(uid(84))?.rejectedConfigHash == nil)
        // And it is managed again: a drift to another hash is corrected.
        let drifted = registry.handle(
            status(uid(84), seq: 3, hash: Array("other".utf8), .applied),
            connection: connection,
            transport: .webSocket
        )
        #expect(drifted.remoteConfig.configHash == Data(desired.hash))
    }

    // MARK: Push order

    @Test func pushesReachTheAgentInTheOrderOfTheDesiredState() async throws {
        let (server, port) = try await startTestServer { $0.threads = 2 }
        defer { Task { await server.stop() } }
        // The supervisor's default: accepts remote config, reports no remote config status.
        let capabilities: AgentCapabilities = [
            .reportsStatus, .acceptsRemoteConfig, .reportsEffectiveConfig, .reportsHealth,
        ]
        let agent = try await TestWebSocketAgent.connect(port: port)
        try await agent.send(fullState(uid(85), capabilities: capabilities))
        _ = try await agent.receive()
        let registry = server.registry
        let versions = (0..<400).map { config("version \($0)") }
        // Two writers race; each change is made under the registry's lock, so the agent must end on the
        // config the registry ends on, having received each push in the order the changes were made.
        await withTaskGroup(of: Void.self) { group in
            for half in 0..<2 {
                group.addTask {
                    for index in stride(from: half, to: versions.count, by: 2) {
                        registry.setDesiredConfig(versions[index], for: uid(85))
                    }
                }
            }
        }
        let final = try #require(registry.agent(uid(85))?.desiredConfigHash)
        var last: Data?
        while let message = try? await agent.receive(timeout: .milliseconds(500)) {
            if message.hasRemoteConfig { last = message.remoteConfig.configHash }
        }
        #expect(last == Data(final))
        await agent.close()
    }

    // MARK: Full-state requests

    @Test func aMessageInFlightIsNotTakenAsTheFullState() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connection = registry.newConnection()
        // An unknown agent's first message lacks its description: the server asks for the full state.
        #expect(
            registry.handle(heartbeat(uid(86), seq: 7), connection: connection, transport: .webSocket).asksForFullState
        )
        // Messages the agent sent before it saw the request are no answer; after a few the request is lost.
        for seq in 8...(8 + UInt64(AgentSession.fullStateWait)) {
            #expect(
                !registry.handle(heartbeat(uid(86), seq: seq), connection: connection, transport: .webSocket)
                    .asksForFullState
            )
        }
        #expect(
            registry.handle(
                heartbeat(uid(86), seq: 9 + UInt64(AgentSession.fullStateWait)),
                connection: connection,
                transport: .webSocket
            )
            .asksForFullState
        )
    }

    @Test func whatAnAgentLackedIsAskedForAgainOnItsNextConnection() {
        let registry = AgentRegistry(clock: self.clock.function)
        var message = fullState(uid(87))
        message.clearEffectiveConfig()  // It says it reports one, but has none yet.
        let first = registry.newConnection()
        #expect(registry.handle(message, connection: first, transport: .webSocket).asksForFullState)
        message.sequenceNum = 1
        #expect(!registry.handle(message, connection: first, transport: .webSocket).asksForFullState)
        #expect(!registry.handle(heartbeat(uid(87), seq: 2), connection: first, transport: .webSocket).asksForFullState)
        registry.connectionClosed(first, reason: "restart")
        let second = registry.newConnection()
        #expect(registry.handle(heartbeat(uid(87), seq: 3), connection: second, transport: .webSocket).asksForFullState)
    }

    // MARK: Events and times

    @Test func everySubscriberGetsEveryEventWithItsTime() async {
        let registry = AgentRegistry(clock: self.clock.function)
        let one = EventLog(registry)
        let two = EventLog(registry)
        let connection = registry.newConnection()
        _ = registry.handle(fullState(uid(88)), connection: connection, transport: .webSocket)
        let start = self.clock.date
        self.clock.advance(7)
        var unhealthy = heartbeat(uid(88), seq: 1)
        unhealthy.health.healthy = false
        unhealthy.health.lastError = "exporter failing"
        _ = registry.handle(unhealthy, connection: connection, transport: .webSocket)
        for log in [one, two] {
            // Events are delivered asynchronously: wait for the last one (the health change), not for a count
            // the first message's events alone can reach.
            #expect(
                await log.wait { events in
                    events.count >= 3
                        && events.contains {
                            if case .healthChanged(_, let health) = $0 { !health.healthy } else { false }
                        }
                }
            )
            #expect(log.all.first == .connected(uid(88), .webSocket))
            #expect(log.timed.first?.time == start)
            #expect(log.timed.last?.time == start.addingTimeInterval(7))
            #expect(log.all.contains { if case .healthChanged(_, let health) = $0 { !health.healthy } else { false } })
        }
    }

    @Test func aSubscriberThatFallsBehindIsToldAndCanResynchronise() async {
        let registry = AgentRegistry(clock: self.clock.function)
        let subscription = registry.subscribe(bufferLimit: 10)
        defer { subscription.cancel() }
        for index in 0..<50 {
            let connection = registry.newConnection()
            _ = registry.handle(fullState(uid(900 + UInt64(index))), connection: connection, transport: .webSocket)
        }
        let late = registry.newConnection()
        _ = registry.handle(fullState(uid(999)), connection: late, transport: .webSocket)
        var iterator = subscription.makeAsyncIterator()
        guard case .overflow(let missed) = await iterator.next() else {
            Issue.record("no overflow signal")
            return
        }
        #expect(missed > 10)
        // After the signal, events published since the loss still arrive; the snapshot has everyone.
        #expect(registry.snapshot().count == 51)
        var sawLate = false
        for _ in 0..<10 {
            guard case .event(let record) = await iterator.next() else { break }
            if record.event.instanceUID == uid(999) {
                sawLate = true
                break
            }
        }
        #expect(sawLate)
    }

    @Test func theSnapshotSaysSinceWhenStatusAndHealthHold() {
        let registry = AgentRegistry(clock: self.clock.function)
        let connection = registry.newConnection()
        let start = self.clock.date
        _ = registry.handle(fullState(uid(89)), connection: connection, transport: .webSocket)
        #expect(registry.agent(uid(89))?.connectedSince == start)
        #expect(registry.agent(uid(89))?.healthySince == start)
        self.clock.advance(5)
        let desired = config("v3")
        registry.setDesiredConfig(desired, for: uid(89))
        _ = registry.handle(
            status(uid(89), seq: 1, hash: desired.hash, .applying),
            connection: connection,
            transport: .webSocket
        )
        self.clock.advance(5)
        _ = registry.handle(
            status(uid(89), seq: 2, hash: desired.hash, .applied),
            connection: connection,
            transport: .webSocket
        )
        #expect(registry.agent(uid(89))?.remoteConfigStatusSince == start.addingTimeInterval(10))
        // Healthy reports keep "healthy since"; an unhealthy one clears it; the next healthy one restarts it.
        var healthy = heartbeat(uid(89), seq: 3)
        healthy.health.healthy = true
        _ = registry.handle(healthy, connection: connection, transport: .webSocket)
        #expect(registry.agent(uid(89))?.healthySince == start)
        var sick = heartbeat(uid(89), seq: 4)
        sick.health.healthy = false
        _ = registry.handle(sick, connection: connection, transport: .webSocket)
        #expect(registry.agent(uid(89))?.healthySince == nil)
        self.clock.advance(3)
        healthy.sequenceNum = 5
        _ = registry.handle(healthy, connection: connection, transport: .webSocket)
        #expect(registry.agent(uid(89))?.healthySince == start.addingTimeInterval(13))
        registry.connectionClosed(connection, reason: "gone")
        #expect(registry.agent(uid(89))?.connectedSince == nil)
    }

    /// UIDs from the system's generator (the form ThreadSanitizer builds can run; see InstanceUID.version7):
    /// the time in the top 48 bits, version 7, the RFC 4122 variant, and random bits that differ.
    @Test func version7UIDsFromTheSystemGenerator() {
        let milliseconds: UInt64 = 1_800_000_000_123
        let uids = (0..<64).map { _ in InstanceUID.version7(unixMilliseconds: milliseconds) }
        for uid in uids {
            #expect(uid.high >> 16 == milliseconds)
            #expect((uid.high >> 12) & 0xF == 7)
            #expect(uid.low >> 62 == 0b10)
        }
        #expect(Set(uids).count == uids.count)
    }
}
