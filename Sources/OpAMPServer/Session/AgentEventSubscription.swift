import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// One consumer's view of the registry's events: every event from the moment of subscribing, in order per
/// agent, each with its time.
///
/// A subscription buffers at most `bufferLimit` unread events. A consumer that falls further behind
/// loses the buffered events and is told so with one ``AgentEventDelivery/overflow(missed:)`` before the
/// events published after the loss: it then rebuilds its view from ``AgentRegistry/snapshot()``, which
/// already reflects everything it missed, and goes on with the events that follow (they may repeat what
/// the snapshot shows, never precede it). Any number of subscriptions may be open; each is read by one
/// task. The registry holds subscriptions weakly: keep a reference while reading. Iteration ends after
/// ``cancel()``, when the reading task is cancelled, or when the registry is gone.
public final class AgentEventSubscription: AsyncSequence, Sendable {
    public typealias Element = AgentEventDelivery

    private struct State {
        var buffer = CircularBuffer<AgentEventRecord>()
        var missed = 0
        var waiter: CheckedContinuation<AgentEventDelivery?, Never>?
        var finished = false
    }

    private let state = NIOLockedValueBox(State())
    private let bufferLimit: Int
    private let onCancel: @Sendable () -> Void

    init(bufferLimit: Int, onCancel: @escaping @Sendable () -> Void) {
        self.bufferLimit = Swift.max(1, bufferLimit)
        self.onCancel = onCancel
    }

    /// Hands records to the subscriber (called under the registry's lock, so in publication order).
    func deliver(_ records: some Sequence<AgentEventRecord>) {
        var wake: (CheckedContinuation<AgentEventDelivery?, Never>, AgentEventRecord)?
        self.state.withLockedValue { state in
            guard !state.finished else { return }
            for record in records {
                if wake == nil, let waiter = state.waiter {
                    state.waiter = nil
                    wake = (waiter, record)
                } else if state.buffer.count >= self.bufferLimit {
                    // Too far behind: drop what is buffered and this one, and say so before what comes next.
                    state.missed += state.buffer.count + 1
                    state.buffer.removeAll(keepingCapacity: false)
                } else {
                    state.buffer.append(record)
                }
            }
        }
        if let (waiter, record) = wake { waiter.resume(returning: .event(record)) }
    }

    /// Ends the subscription: the reader gets what is buffered, then the end.
    func finish() {
        let waiter = self.state.withLockedValue { state -> CheckedContinuation<AgentEventDelivery?, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Stops the subscription and releases its buffer; the registry stops delivering to it.
    public func cancel() {
        self.finish()
        self.state.withLockedValue { $0.buffer.removeAll() }
        self.onCancel()
    }

    private func next() async -> AgentEventDelivery? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<AgentEventDelivery?, Never>) in
                let ready = self.state.withLockedValue { state -> AgentEventDelivery?? in
                    if state.missed > 0 {
                        defer { state.missed = 0 }
                        return .some(.overflow(missed: state.missed))
                    }
                    if let record = state.buffer.popFirst() { return .some(.event(record)) }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            // The reading task is gone: end the subscription so nothing piles up for it.
            self.cancel()
        }
    }

    /// Events in order.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: AgentEventSubscription

        /// The next delivery, or `nil` once the subscription ended (or the reading task was cancelled).
        public mutating func next() async -> AgentEventDelivery? {
            await self.subscription.next()
        }
    }

    /// Iterates the subscription (one iterator at a time).
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(subscription: self)
    }
}
