// libFuzzer target: a sequence of OpAMP events -> the agent registry and its sessions.
// Built by scripts/fuzz.sh (a package target only with TAILPLANE_FUZZ=1, never in a normal build).
//
// The input is a list of records `op slot length(2 bytes, big-endian) payload`, so one input drives many
// messages over several connections, like agents that connect, speak, reconnect and take identities over:
//   op % 6 == 0  payload is an AgentToServer message on WebSocket connection `slot % 4`
//            1  payload is an AgentToServer message over plain HTTP (a new connection each time)
//            2  WebSocket connection `slot % 4` closes
//            3  the server sets a desired config (the payload) for the agent last heard on that slot
//            4  the clock moves `length` seconds and the server sweeps silent agents
//            5  the server disconnects the agent last heard on that slot
// Beyond "no crash", it checks:
// - every response and every push encodes, and decodes back to the same message;
// - an error response carries nothing but the error and the instance UID;
// - when every connection has closed, no agent is still connected over WebSocket and no bookkeeping for a
//   connection is left behind; when the server then forgets offline agents, nothing is left at all: the
//   registry cannot grow without bound.
import Crypto
import Foundation
import OpAMPProtocol
import SwiftProtobuf
import Synchronization

@testable import OpAMPServer

/// `precondition` that keeps its message in optimized builds (the fuzzers are built with -O).
private func require(_ condition: Bool, _ message: @autoclosure () -> String = "") {
    if !condition { fatalError(message()) }
}

private let now = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
/// Connections the registry asked to close (a takeover, a server-side disconnect, a sweep): the transport
/// closes them, and reports it, after the call that asked.
private let closing = Mutex<Set<ConnectionID>>([])

private func check(_ message: OpAMP_ServerToAgent, _ what: String) {
    let bytes: [UInt8]
    do {
        bytes = try message.serializedBytes()
    } catch {
        fatalError("\(what) does not encode: \(error)")
    }
    guard let back = try? OpAMP_ServerToAgent(serializedBytes: bytes), back == message else {
        fatalError("\(what) does not decode back to itself")
    }
    if message.hasErrorResponse {
        var bare = OpAMP_ServerToAgent()
        bare.instanceUid = message.instanceUid
        bare.errorResponse = message.errorResponse
        bare.capabilities = message.capabilities
        require(message == bare, "\(what): an error response carries more than the error: \(message)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOpAMPSession(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    now.withLock { $0 = Date(timeIntervalSince1970: 1_800_000_000) }
    closing.withLock { $0 = [] }
    let registry = AgentRegistry(
        heartbeat: (intervalSeconds: 30, endpoint: "wss://policyd.example:4320/v1/opamp"),
        clock: { now.withLock { $0 } }
    )
    var slots: [ConnectionID?] = [nil, nil, nil, nil]
    var heard: [Data?] = [nil, nil, nil, nil]
    var index = 0
    var records = 0
    var pendingClose: Set<ConnectionID> = []
    while index + 4 <= input.count {
        // Connections the server closed go away one step later, as a socket does: a message can still
        // arrive on one that was displaced.
        for connection in pendingClose {
            registry.connectionClosed(connection, reason: "closed by the server")
            if let open = slots.firstIndex(of: connection) { slots[open] = nil }
        }
        pendingClose = closing.withLock { set in
            defer { set = [] }
            return set
        }
        if let problem = registry.consistencyProblem() {
            fatalError("after record \(records): \(problem)")
        }
        records += 1
        let op = input[index] % 6
        let slot = Int(input[index + 1] % 4)
        let length = Int(input[index + 2]) << 8 | Int(input[index + 3])
        index += 4
        let payload = Array(input[index..<min(input.count, index + length)])
        index += payload.count
        switch op {
        case 0, 1:
            guard let message = try? OpAMP_AgentToServer(serializedBytes: payload) else { continue }
            let connection: ConnectionID
            if op == 0 {
                if let open = slots[slot] {
                    connection = open
                } else {
                    connection = registry.newConnection()
                    registry.attach(
                        connection,
                        pusher: { push in
                            check(push, "a push")
                            return true
                        },
                        closer: { _ = closing.withLock { $0.insert(connection) } }
                    )
                    slots[slot] = connection
                }
            } else {
                connection = registry.newConnection()
            }
            let handled = registry.process(
                message,
                connection: connection,
                transport: op == 0 ? .webSocket : .http,
                principal: .anonymous
            )
            check(handled.response, "a response")
            heard[slot] =
                handled.response.agentIdentification.newInstanceUid.isEmpty
                ? message.instanceUid : handled.response.agentIdentification.newInstanceUid
        case 2:
            if let open = slots[slot] {
                registry.connectionClosed(open, reason: "closed by the fuzzer")
                slots[slot] = nil
            }
        case 3:
            guard let wire = heard[slot], let uid = InstanceUID(wire: wire) else { continue }
            let body = payload
            registry.setDesiredConfig(
                RemoteConfig(
                    files: ["collector.yaml": ConfigFile(body: body, contentType: "text/yaml")],
                    hash: Array(SHA256.hash(data: body))
                ),
                for: uid
            )
        case 4:
            now.withLock { $0 += TimeInterval(length) }
            registry.sweep(httpTimeout: 90, webSocketTimeout: 90, forgetAfter: 3600, maximumAgents: 64)
        default:
            guard let wire = heard[slot], let uid = InstanceUID(wire: wire) else { continue }
            registry.disconnect(uid, reason: "disconnected by the fuzzer")
        }
    }
    for connection in pendingClose { registry.connectionClosed(connection, reason: "closed by the server") }
    if let problem = registry.consistencyProblem() { fatalError("at the end: \(problem)") }
    for case let open? in slots { registry.connectionClosed(open, reason: "end of input") }
    for agent in registry.snapshot() {
        require(
            agent.transport != .webSocket,
            "agent \(agent.instanceUID) is still connected over WebSocket after every connection closed"
        )
    }
    var counts = registry.bookkeeping()
    for key in ["bindings", "owners", "connections", "tookOver", "spokeAfterTakeover", "displaced", "renamed"] {
        require(counts[key] == 0, "\(counts[key]!) \(key) left after every connection closed: \(counts)")
    }
    closing.withLock { $0 = [] }
    now.withLock { $0 += 7200 }
    registry.sweep(httpTimeout: 90, webSocketTimeout: 90, forgetAfter: 3600)
    counts = registry.bookkeeping()
    require(counts["sessions"] == 0, "\(counts["sessions"]!) agents kept after forgetting every offline agent")
    return 0
}
