import NIOCore
import NIOWebSocket
import OpAMPProtocol

/// The messages waiting for one agent's WebSocket, written one at a time, in order.
///
/// A message waits while the one before it is still held by the server (the kernel's socket buffer is
/// full: the agent reads more slowly than it is sent to). A config that waits behind another config is
/// replaced by a newer one rather than queued after it: only the latest config matters, and a load balancer's
/// config lists the whole ring (hundreds of kilobytes at tens of thousands of samplers), so queueing every
/// ring change for a slow reader would hold gigabytes across a fleet. Other messages (responses, commands,
/// offers) all wait in order.
///
/// An agent whose current message has not been taken for `stalledAfter`, or for which more than
/// `maxQueuedBytes` wait, has stopped reading: `stop` is called (the handler closes the connection).
/// Confined to the channel's event loop.
final class AgentOutbox {
    private struct Item {
        var frame: [UInt8]
        var replaceable: Bool
    }

    private let channel: any Channel
    private let maxQueuedBytes: Int
    private let stalledAfter: TimeAmount
    private let stop: (String) -> Void
    private var writing = false
    private var queue: [Item] = []
    private var queuedBytes = 0
    private var stall: Scheduled<Void>?
    private var stopped = false

    /// How many configs were replaced while waiting (for tests and logs).
    private(set) var replaced = 0

    init(channel: any Channel, maxQueuedBytes: Int, stalledAfter: TimeAmount, stop: @escaping (String) -> Void) {
        self.channel = channel
        self.maxQueuedBytes = maxQueuedBytes
        self.stalledAfter = stalledAfter
        self.stop = stop
    }

    /// Writes `message` now, or after those before it; a config-only message replaces a config-only message
    /// still waiting last in line.
    func send(_ message: OpAMP_ServerToAgent) {
        guard let frame = try? WebSocketFraming.encode(message) else { return }
        self.send(frame: frame, replaceable: message.isConfigOnly)
    }

    /// Writes an encoded message (see ``send(_:)``).
    func send(frame: [UInt8], replaceable: Bool) {
        guard !self.stopped, self.channel.isActive else { return }
        let item = Item(frame: frame, replaceable: replaceable)
        guard self.writing else {
            self.write(item)
            return
        }
        if replaceable, let last = self.queue.last, last.replaceable {
            self.queuedBytes -= last.frame.count
            self.queue[self.queue.count - 1] = item
            self.replaced += 1
        } else {
            self.queue.append(item)
        }
        self.queuedBytes += item.frame.count
        if self.queuedBytes > self.maxQueuedBytes {
            self.halt("more than \(self.maxQueuedBytes) bytes of messages wait for it")
        }
    }

    private func write(_ item: Item) {
        self.writing = true
        var buffer = self.channel.allocator.buffer(capacity: item.frame.count)
        buffer.writeBytes(item.frame)
        let loop = self.channel.eventLoop.assumeIsolated()
        self.stall = loop.scheduleTask(in: self.stalledAfter) {
            self.halt("it took no message for \(self.stalledAfter.nanoseconds / 1_000_000_000) s")
        }
        let written = self.channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { result in
            self.stall?.cancel()
            self.stall = nil
            self.writing = false
            guard case .success = result, !self.stopped, !self.queue.isEmpty else { return }
            let next = self.queue.removeFirst()
            self.queuedBytes -= next.frame.count
            self.write(next)
        }
        self.channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: buffer), promise: written)
    }

    private func halt(_ reason: String) {
        guard !self.stopped else { return }
        self.stopped = true
        self.stall?.cancel()
        self.queue = []
        self.queuedBytes = 0
        self.stop(reason)
    }
}

extension OpAMP_ServerToAgent {
    /// Carries a remote config and nothing a newer config would not carry again (no flags, command, offer,
    /// error or identification): such a message may be replaced by a newer one before it is sent.
    var isConfigOnly: Bool {
        self.hasRemoteConfig && self.flags == 0 && !self.hasErrorResponse && !self.hasConnectionSettings
            && !self.hasPackagesAvailable && !self.hasAgentIdentification && !self.hasCommand
            && !self.hasCustomCapabilities && !self.hasCustomMessage
    }
}
