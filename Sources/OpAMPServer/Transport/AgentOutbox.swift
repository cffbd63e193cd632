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
        var message: EncodedServerMessage
        var replaceable: Bool
        var size: Int { self.message.count }
        /// One WebSocket frame: the agent's own part first, then the shared config, each written as it is
        /// (NIO writes a frame's extension data and its data as separate buffers, so neither is copied; no
        /// extension is negotiated, so the agent reads both as the payload).
        var frame: WebSocketFrame {
            guard let config = self.message.config else {
                return WebSocketFrame(fin: true, opcode: .binary, data: self.message.head)
            }
            return WebSocketFrame(fin: true, opcode: .binary, data: config.bytes, extensionData: self.message.head)
        }
    }

    private let channel: any Channel
    /// Bytes of waiting configs across the server, and the most allowed.
    private let waitingConfigs: WaitingConfigs
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
        waitingConfigs: WaitingConfigs,
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

    /// Writes an encoded message (its `head` starting with the WebSocket header byte) now or after those
    /// before it; a `replaceable` one (a config alone) is replaced by a newer one while it waits (see the
    /// type's description).
    func send(_ message: EncodedServerMessage, replaceable: Bool) {
        guard !self.stopped, self.closeFrame == nil, self.channel.isActive else { return }
        self.enqueue(Item(message: message, replaceable: replaceable))
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
            var replaced: Item?
            if let waiting = self.queue.firstIndex(where: \.replaceable) {
                replaced = self.queue.remove(at: waiting)
            }
            if let replaced { self.waitingConfigs.release(replaced.message) }
            // A replacement always waits (it frees what it replaces); a new waiter only within the budget.
            guard self.waitingConfigs.hold(item.message, always: replaced != nil) else {
                self.halt("configs waiting for slow readers hold more than \(self.waitingConfigs.limit) bytes")
                return
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
                self.waitingConfigs.release(next.message)
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
            self.waitingConfigs.release(waiting.message)
        }
        self.queue = []
        self.queuedBytes = 0
    }
}

/// Bytes of configs waiting for slow readers across a server's connections, and the most allowed
/// (``OpAMPServerConfiguration/maxWaitingConfigBytes``).
///
/// What waiting holds in memory is counted: each message's own part, and each shared config once, however
/// many agents wait for it (thousands of load balancers waiting for one ring change hold it once).
final class WaitingConfigs: Sendable {
    private struct State {
        var bytes = 0
        /// Each shared config waiting messages hold, and how many hold it.
        var holders: [ObjectIdentifier: (config: EncodedConfig, count: Int)] = [:]
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Bytes held now.
    var bytes: Int { self.state.withLock { $0.bytes } }

    /// Counts `message` as waiting, unless that would pass the limit and not `always` (then nothing is counted
    /// and the answer is false).
    func hold(_ message: EncodedServerMessage, always: Bool) -> Bool {
        self.state.withLock { state in
            var added = message.head.readableBytes
            if let config = message.config, state.holders[ObjectIdentifier(config)] == nil {
                added += config.bytes.readableBytes
            }
            guard always || state.bytes + added <= self.limit else { return false }
            state.bytes += added
            if let config = message.config {
                state.holders[ObjectIdentifier(config), default: (config, 0)].count += 1
            }
            return true
        }
    }

    /// `message`, counted by ``hold(_:always:)``, no longer waits.
    func release(_ message: EncodedServerMessage) {
        self.state.withLock { state in
            state.bytes -= message.head.readableBytes
            guard let config = message.config, let held = state.holders[ObjectIdentifier(config)] else { return }
            if held.count <= 1 {
                state.holders[ObjectIdentifier(config)] = nil
                state.bytes -= config.bytes.readableBytes
            } else {
                state.holders[ObjectIdentifier(config)] = (config, held.count - 1)
            }
            assert(state.bytes >= 0, "released more than was held")
        }
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
