import NIOCore
import NIOWebSocket
import OpAMPProtocol
import Synchronization

/// The messages waiting for one agent's WebSocket, written one at a time, in order.
///
/// A message waits while the one before it is still held by the server (the kernel's socket buffer is
/// full: the agent reads more slowly than it is sent to). At most one config waits: a newer config replaces
/// the waiting one (and takes the last place in line), since only the latest config matters, and a load
/// balancer's config lists the whole ring (hundreds of kilobytes at tens of thousands of samplers), so
/// queueing every ring change for a slow reader would hold gigabytes across a fleet. Other messages
/// (responses, commands, offers) all wait in order.
///
/// An agent that takes no byte of the current message for `stalledAfter`, or for which more than
/// `maxQueuedBytes` of other messages wait, has stopped reading: `stop` is called (the handler closes the
/// connection). Confined to the channel's event loop.
final class AgentOutbox {
    private struct Item {
        var frame: WebSocketFrame
        var replaceable: Bool
        var size: Int { self.frame.data.readableBytes }
    }

    private let channel: any Channel
    /// Bytes of waiting configs across the server, and the most allowed.
    private let waitingConfigs: WaitingConfigs?
    private let maxQueuedBytes: Int
    private let stalledAfter: TimeAmount
    private let stop: (String) -> Void
    private var writing = false
    /// Counts writes, so a timer or a look belongs to the write it was made for.
    private var generation = 0
    private var queue: [Item] = []
    /// Bytes of waiting messages other than the config (that one is bounded by being alone).
    private var queuedBytes = 0
    private var stall: Scheduled<Void>?
    /// Bytes the channel still held at the last look (progress resets the stall timer).
    private var unsentAtLastLook = 0
    private var stopped = false
    /// Close once what waits is written (a refusal told, then closed).
    private var closeFrame: WebSocketFrame?

    init(
        channel: any Channel,
        waitingConfigs: WaitingConfigs? = nil,
        maxQueuedBytes: Int,
        stalledAfter: TimeAmount,
        stop: @escaping (String) -> Void
    ) {
        self.channel = channel
        self.waitingConfigs = waitingConfigs
        self.maxQueuedBytes = maxQueuedBytes
        self.stalledAfter = stalledAfter
        self.stop = stop
    }

    /// Writes `message` now or after those before it (see the type's description).
    func send(_ message: OpAMP_ServerToAgent) {
        guard let frame = try? WebSocketFraming.encode(message) else { return }
        self.send(frame: frame, replaceable: message.isConfigOnly)
    }

    /// Writes an encoded message (see ``send(_:)``).
    func send(frame bytes: [UInt8], replaceable: Bool) {
        guard !self.stopped, self.closeFrame == nil, self.channel.isActive else { return }
        var buffer = self.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        self.enqueue(Item(frame: WebSocketFrame(fin: true, opcode: .binary, data: buffer), replaceable: replaceable))
    }

    /// Writes a close frame after what waits, then closes the channel.
    func close(with frame: WebSocketFrame) {
        guard !self.stopped, self.closeFrame == nil else { return }
        self.closeFrame = frame
        if !self.writing { self.writeNext() }
    }

    private func enqueue(_ item: Item) {
        guard self.writing else {
            self.write(item)
            return
        }
        if item.replaceable {
            var freed = 0
            if let waiting = self.queue.firstIndex(where: \.replaceable) {
                freed = self.queue.remove(at: waiting).size
            }
            if let budget = self.waitingConfigs {
                let held = budget.bytes.add(item.size - freed, ordering: .relaxed).newValue
                if held > budget.limit, freed == 0 {
                    budget.bytes.subtract(item.size, ordering: .relaxed)
                    self.halt("configs waiting for slow readers hold more than \(budget.limit) bytes")
                    return
                }
            }
            self.queue.append(item)
            return
        }
        self.queue.append(item)
        self.queuedBytes += item.size
        if self.queuedBytes > self.maxQueuedBytes {
            self.halt("more than \(self.maxQueuedBytes) bytes of messages wait for it")
        }
    }

    private func writeNext() {
        if !self.queue.isEmpty {
            let next = self.queue.removeFirst()
            if next.replaceable {
                self.waitingConfigs?.bytes.subtract(next.size, ordering: .relaxed)
            } else {
                self.queuedBytes -= next.size
            }
            self.write(next)
        } else if let close = self.closeFrame {
            self.stopped = true
            let channel = self.channel
            channel.writeAndFlush(close).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func write(_ item: Item) {
        self.writing = true
        self.generation += 1
        let mine = self.generation
        let written = self.channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { result in
            self.stall?.cancel()
            self.stall = nil
            self.writing = false
            guard case .success = result else {
                self.halt("a write failed")
                return
            }
            guard !self.stopped else { return }
            self.writeNext()
        }
        self.channel.writeAndFlush(item.frame, promise: written)
        // Still this write (it did not complete at once, nor did a later one start): watch its progress.
        if self.writing, self.generation == mine {
            self.unsentAtLastLook = self.unsent
            self.armStallTimer(for: mine)
        }
    }

    /// Bytes the channel holds that the kernel did not take yet.
    private var unsent: Int {
        (try? self.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
    }

    /// Every `stalledAfter` while a message is being written: no byte taken since the last look stops it.
    private func armStallTimer(for write: Int) {
        self.stall = self.channel.eventLoop.assumeIsolated().scheduleTask(in: self.stalledAfter) {
            guard self.writing, self.generation == write, !self.stopped else { return }
            let unsent = self.unsent
            if unsent < self.unsentAtLastLook {
                self.unsentAtLastLook = unsent
                self.armStallTimer(for: write)
            } else {
                self.halt("it took no byte for \(self.stalledAfter.nanoseconds / 1_000_000_000) s")
            }
        }
    }

    private func halt(_ reason: String) {
        guard !self.stopped else { return }
        self.stopped = true
        self.stall?.cancel()
        self.discard()
        self.stop(reason)
    }

    /// Drops what waits (the connection ended), giving its share of the server's budget back.
    func discard() {
        self.stall?.cancel()
        self.stall = nil
        if let waiting = self.queue.first(where: \.replaceable) {
            self.waitingConfigs?.bytes.subtract(waiting.size, ordering: .relaxed)
        }
        self.queue = []
        self.queuedBytes = 0
    }
}

/// Bytes of configs waiting for slow readers across a server's connections, and the most allowed
/// (``OpAMPServerConfiguration/maxWaitingConfigBytes``).
final class WaitingConfigs: Sendable {
    let bytes = Atomic<Int>(0)
    let limit: Int

    init(limit: Int) {
        self.limit = limit
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
