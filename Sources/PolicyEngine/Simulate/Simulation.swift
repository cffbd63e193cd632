/// N sampler replicas behind the load-balancing exporter's ring: each trace goes to the replica the ring
/// picks for its trace ID and is decided there, with that replica's limiters and budgets.
public struct SamplingSimulation {
    /// The ring the load balancers build.
    public let ring: LoadBalancingRing
    /// The options the simulation runs with.
    public let options: SimulationOptions
    private var replicas: [SamplerEvaluator]
    /// The source rules in the order the collector evaluates them (drop rules first), each once, and
    /// whether it keeps or drops.
    public let rules: [(rule: String, action: TraceDecision)]
    /// When the collector decides, relative to the trace's first span: `decision_wait` (30 s by default).
    public let decisionWaitNanos: UInt64
    /// `decision_wait_after_root_received`, when set.
    public let afterRootNanos: UInt64?

    /// Creates the replicas. Without explicit endpoints the ring holds `samplers` synthetic entries
    /// (`sampler-0:4317`, …), which spreads traces as evenly as any real set of names would.
    public init(policySet: PolicySet, options: SimulationOptions) {
        var options = options
        if options.samplerEndpoints.isEmpty {
            options.samplerEndpoints = (0..<options.samplers).map { "sampler-\($0):4317" }
        }
        let ring = LoadBalancingRing(endpoints: options.samplerEndpoints)
        options.samplers = ring.endpoints.count
        self.ring = ring
        self.options = options
        let plan = EvaluationPlan(policySet: policySet, options: options)
        var rules: [(rule: String, action: TraceDecision)] = []
        for (index, rule) in plan.ruleNames.enumerated() where !rules.contains(where: { $0.rule == rule }) {
            rules.append((rule, plan.drops[index] ? .drop : .keep))
        }
        self.rules = rules
        self.replicas = Array(repeating: SamplerEvaluator(plan: plan), count: max(1, ring.endpoints.count))
        // The collector keeps `max(1, whole seconds of decision_wait)` one-second batches and moves a trace whose
        // root arrived to the batch `decision_wait_after_root_received` (whole seconds) ahead.
        let waitSeconds = max(1, (policySet.settings.decisionWaitMs ?? 30_000) / 1000)
        self.decisionWaitNanos = UInt64(waitSeconds) * 1_000_000_000
        self.afterRootNanos = policySet.settings.decisionWaitAfterRootMs.map {
            UInt64(max(0, $0 / 1000)) * 1_000_000_000
        }
    }

    /// Decides a trace on the replica its trace ID routes to. `nowNanos` defaults to the decision time the
    /// collector would use (see ``decisionTime(of:)``); decide traces in that order for faithful limits.
    public mutating func decide(_ trace: SimulatedTrace, nowNanos: UInt64? = nil, explain: Bool = false) -> Verdict {
        let replica = self.ring.endpointIndex(for: trace.traceID) ?? 0
        return self.replicas[replica].decide(
            trace,
            nowNanos: nowNanos ?? self.decisionTime(of: trace),
            explain: explain,
            sampler: replica
        )
    }

    /// When the collector decides a trace: at the one-second tick `decision_wait` after its first span
    /// arrived (spans are taken to arrive when they end), or `decision_wait_after_root_received` after its
    /// root span, if that is sooner. Traces decided at one tick share its instant.
    public func decisionTime(of trace: SimulatedTrace) -> UInt64 {
        trace.spans.withUnsafeBufferPointer { spans in
            var firstArrival = UInt64.max
            var rootEnd: UInt64?
            for index in spans.indices {
                firstArrival = min(firstArrival, spans[index].endNanos)
                if rootEnd == nil, spans[index].isRoot { rootEnd = spans[index].endNanos }
            }
            return DecisionClock.due(
                firstArrival: spans.isEmpty ? 0 : firstArrival,
                rootArrival: rootEnd,
                wait: self.decisionWaitNanos,
                afterRoot: self.afterRootNanos
            )
        }
    }
}

/// The collector's decision timing: a trace joins the one-second batch of the second its first span arrived
/// in, and is decided at the tick `decision_wait` later (earlier after its root, with the after-root wait).
enum DecisionClock {
    static let second: UInt64 = 1_000_000_000

    static func tick(_ time: UInt64) -> UInt64 { (time / Self.second + 1) * Self.second }

    static func due(firstArrival: UInt64, rootArrival: UInt64?, wait: UInt64, afterRoot: UInt64?) -> UInt64 {
        var due = Self.tick(firstArrival) &+ wait &- Self.second
        if let afterRoot, let rootArrival {
            due = min(due, Self.tick(rootArrival) &+ (afterRoot >= Self.second ? afterRoot &- Self.second : 0))
        }
        return due
    }
}

/// Groups a stream of spans into traces and releases each trace, in decision order, once the stream's clock
/// (the latest span end seen) is a grace period past its decision time: memory holds only the traces in
/// flight, however long the input. The grace lets input that is not quite in time order (a trace's spans
/// written together when it started, or files from a trace backend) still arrive whole; a trace is
/// decided at its decision time whenever it is released. Spans of a trace already released are late.
public struct TraceAssembler {
    private var pending: [TraceID: Builder] = [:]
    private var queue = MinHeap()
    private var watermark: UInt64 = 0
    private let decisionWaitNanos: UInt64
    private let afterRootNanos: UInt64?
    private let graceNanos: UInt64
    /// Traces decided, remembered for ``memoryNanos`` of stream time after their decision so their late
    /// spans are counted, then forgotten: a span after that starts a new trace, as in a collector whose
    /// decision caches no longer hold the ID. Bounds memory on long inputs.
    private var released: Set<TraceID> = []
    private var releasedOrder: [(time: UInt64, id: TraceID)] = []
    private var releasedHead = 0
    /// How long decided trace IDs are remembered (5 minutes of stream time).
    public var memoryNanos: UInt64 = 300_000_000_000
    private var batchSerial: UInt64 = 0
    /// Spans that arrived for a trace already decided.
    public private(set) var lateSpans = 0
    /// Traces held now.
    public var inFlight: Int { self.pending.count }

    struct Builder {
        var trace: SimulatedTrace
        var decisionTime: UInt64
        var firstArrival: UInt64 = .max
        var rootArrival: UInt64?
        /// The batch this trace last took spans from, and the resource/scope index it gave them.
        var lastBatch: UInt64 = 0
        var lastIndex = 0
    }

    /// Creates an assembler with the simulation's decision timing and a grace period (30 s by default).
    public init(decisionWaitNanos: UInt64, afterRootNanos: UInt64?, graceNanos: UInt64 = 30_000_000_000) {
        self.decisionWaitNanos = decisionWaitNanos
        self.afterRootNanos = afterRootNanos
        self.graceNanos = graceNanos
    }

    /// Creates an assembler for a simulation.
    public init(for simulation: SamplingSimulation, graceNanos: UInt64 = 30_000_000_000) {
        self.init(
            decisionWaitNanos: simulation.decisionWaitNanos,
            afterRootNanos: simulation.afterRootNanos,
            graceNanos: graceNanos
        )
    }

    /// Adds one batch (spans under one resource and scope).
    public mutating func add(_ batch: SpanBatch) {
        self.batchSerial &+= 1
        var index = 0
        let spans = batch.spans
        while index < spans.count {
            // A run of spans of one trace (the usual layout) costs one lookup.
            let traceID = spans[index].0
            var end = index + 1
            while end < spans.count, spans[end].0 == traceID { end += 1 }
            defer { index = end }
            if self.released.contains(traceID) {
                self.lateSpans += end - index
                continue
            }
            var builder =
                self.pending.removeValue(forKey: traceID)
                ?? Builder(
                    trace: SimulatedTrace(traceID: traceID, resources: [], scopes: [], spans: [], sizeBytes: 0),
                    decisionTime: .max
                )
            // Each batch a trace's spans came in carries its resource and scope, as the collector keeps them.
            if builder.lastBatch != self.batchSerial {
                builder.lastBatch = self.batchSerial
                builder.lastIndex = builder.trace.resources.count
                builder.trace.resources.append(batch.resource)
                builder.trace.scopes.append(batch.scope)
            }
            for position in index..<end {
                var span = spans[position].1
                span.resource = builder.lastIndex
                span.scope = builder.lastIndex
                if builder.trace.spans.isEmpty { builder.firstArrival = span.endNanos }
                if span.isRoot, builder.rootArrival == nil { builder.rootArrival = span.endNanos }
                self.watermark = max(self.watermark, span.endNanos)
                builder.trace.spans.append(span)
            }
            let due = DecisionClock.due(
                firstArrival: builder.firstArrival,
                rootArrival: builder.rootArrival,
                wait: self.decisionWaitNanos,
                afterRoot: self.afterRootNanos
            )
            if due != builder.decisionTime {
                builder.decisionTime = due
                self.queue.push(due, traceID)
            }
            self.pending[traceID] = builder
        }
    }

    /// The traces now due, oldest decision first. Call it between documents, so that a document's spans are
    /// all in before any of its traces is decided.
    public mutating func releaseDue() -> [(trace: SimulatedTrace, decisionTime: UInt64)] {
        guard self.watermark > self.graceNanos else { return [] }
        return self.releaseDue(upTo: self.watermark - self.graceNanos)
    }

    /// Releases every trace still held (the end of the input), in decision order.
    public mutating func finish() -> [(trace: SimulatedTrace, decisionTime: UInt64)] {
        self.releaseDue(upTo: .max)
    }

    private mutating func forgetOld() {
        guard self.watermark > self.memoryNanos else { return }
        let horizon = self.watermark - self.memoryNanos
        while self.releasedHead < self.releasedOrder.count, self.releasedOrder[self.releasedHead].time < horizon {
            self.released.remove(self.releasedOrder[self.releasedHead].id)
            self.releasedHead += 1
        }
        if self.releasedHead > 4096, self.releasedHead * 2 > self.releasedOrder.count {
            self.releasedOrder.removeFirst(self.releasedHead)
            self.releasedHead = 0
        }
    }

    private mutating func releaseDue(upTo time: UInt64) -> [(trace: SimulatedTrace, decisionTime: UInt64)] {
        self.forgetOld()
        var out: [(trace: SimulatedTrace, decisionTime: UInt64)] = []
        while let (due, traceID) = self.queue.peek(), due <= time {
            self.queue.pop()
            guard let builder = self.pending[traceID], builder.decisionTime == due else { continue }
            self.pending[traceID] = nil
            self.released.insert(traceID)
            self.releasedOrder.append((due, traceID))
            var trace = builder.trace
            // Spans that arrive after the decision are not part of it: they are late.
            if trace.spans.contains(where: { $0.endNanos > due }) {
                let before = trace.spans.count
                trace.spans.removeAll { $0.endNanos > due }
                self.lateSpans += before - trace.spans.count
            }
            trace.sizeBytes = trace.estimatedProtobufSize()
            out.append((trace, due))
        }
        return out
    }
}

/// Spans that arrived together under one resource and scope (one OTLP `ScopeSpans`).
public struct SpanBatch: Sendable {
    /// The resource's attributes.
    public var resource: Attributes
    /// The scope.
    public var scope: InstrumentationScope
    /// Spans with their trace IDs.
    public var spans: [(TraceID, TraceSpan)]

    /// Creates a batch.
    public init(resource: Attributes, scope: InstrumentationScope, spans: [(TraceID, TraceSpan)]) {
        self.resource = resource
        self.scope = scope
        self.spans = spans
    }
}

/// A binary min-heap of (time, trace) pairs.
struct MinHeap {
    private var items: [(UInt64, TraceID)] = []

    func peek() -> (UInt64, TraceID)? { self.items.first }

    mutating func push(_ time: UInt64, _ id: TraceID) {
        self.items.append((time, id))
        var child = self.items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard self.items[child].0 < self.items[parent].0 else { break }
            self.items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() {
        guard !self.items.isEmpty else { return }
        self.items.swapAt(0, self.items.count - 1)
        self.items.removeLast()
        var parent = 0
        while true {
            let left = parent * 2 + 1
            let right = left + 1
            var smallest = parent
            if left < self.items.count, self.items[left].0 < self.items[smallest].0 { smallest = left }
            if right < self.items.count, self.items[right].0 < self.items[smallest].0 { smallest = right }
            if smallest == parent { break }
            self.items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
