import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers

/// Writes a replica's agent records and published views to the shared database on a thread of its own, so a
/// controller step never waits for them.
///
/// With thousands of agents changing at once (a stage, a replica's agents arriving after a failover), these
/// writes took seconds per step on a loaded database, and the rollout, the ring and every push waited
/// meanwhile. Now the step hands over what changed and goes on. Only the latest of each agent is kept: what
/// arrives while a write is under way replaces what waits for the same agent, so a slow database gets fewer,
/// larger writes and never a backlog. A write that fails is retried a second later with whatever is newest.
/// Views are written before records, each batch in the order the steps made it.
final class AgentStateWriter: Sendable {
    private struct Pending {
        var records: [String: AgentRecord] = [:]
        /// Views to publish (connected) or withdraw (not connected), by agent.
        var views: [String: PublishedView] = [:]
        var writing = false
        var stopped = false
        var isEmpty: Bool { self.records.isEmpty && self.views.isEmpty }
    }

    private let pending = NIOLockedValueBox(Pending())
    private let wake = DispatchSemaphore(value: 0)
    private let store: any ControlPlaneStore
    private let coordination: any ReplicaCoordination
    private let replica: String
    private let logger: Logger

    /// Starts the writer's thread; ``stop()`` ends it.
    init(store: any ControlPlaneStore, coordination: any ReplicaCoordination, replica: String, logger: Logger) {
        self.store = store
        self.coordination = coordination
        self.replica = replica
        self.logger = logger
        let thread = Thread { [self] in self.loop() }
        thread.name = "tailplane-agent-writer"
        thread.start()
    }

    /// Records to write (the latest of each agent wins).
    func record(_ records: [AgentRecord]) {
        guard !records.isEmpty else { return }
        self.pending.withLockedValue { pending in
            for record in records { pending.records[record.instanceUID] = record }
        }
        self.wake.signal()
    }

    /// Views to publish, and views of agents no longer connected here to withdraw (the latest of each agent
    /// wins).
    func publish(changed: [PublishedView], gone: [PublishedView]) {
        guard !changed.isEmpty || !gone.isEmpty else { return }
        self.pending.withLockedValue { pending in
            for view in changed + gone { pending.views[view.view.uid] = view }
        }
        self.wake.signal()
    }

    /// Waits until everything handed over so far is written (or failed once), at most `timeout`. True when
    /// nothing waits.
    @discardableResult
    func flush(timeout: Duration = .seconds(10)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if self.pending.withLockedValue({ $0.isEmpty && !$0.writing }) { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return self.pending.withLockedValue { $0.isEmpty && !$0.writing }
    }

    /// Ends the thread after the write under way; what waits is dropped (``flush(timeout:)`` first to keep it).
    func stop() {
        self.pending.withLockedValue { $0.stopped = true }
        self.wake.signal()
    }

    private func loop() {
        while true {
            _ = self.wake.wait(timeout: .now() + .seconds(1))
            let taken = self.pending.withLockedValue { pending -> Pending? in
                guard !pending.stopped, !pending.isEmpty else { return nil }
                let taken = pending
                pending.records = [:]
                pending.views = [:]
                pending.writing = true
                return taken
            }
            if self.pending.withLockedValue({ $0.stopped }) { return }
            guard let taken else { continue }
            var failed = Pending()
            do {
                let views = Array(taken.views.values)
                try self.coordination.publishViews(
                    replica: self.replica,
                    changed: views.filter(\.view.connected),
                    gone: views.filter { !$0.view.connected }
                )
            } catch {
                self.logger.warning("cannot publish agent views; retried", metadata: ["error": "\(error)"])
                failed.views = taken.views
            }
            do {
                try self.store.recordAgents(Array(taken.records.values))
            } catch {
                self.logger.warning("cannot record agent state; retried", metadata: ["error": "\(error)"])
                failed.records = taken.records
            }
            self.pending.withLockedValue { pending in
                // Put back what failed unless something newer arrived meanwhile.
                pending.views.merge(failed.views) { newer, _ in newer }
                pending.records.merge(failed.records) { newer, _ in newer }
                pending.writing = false
            }
            if !failed.isEmpty { Thread.sleep(forTimeInterval: 1) }
        }
    }
}
