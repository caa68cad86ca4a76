import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The number of worker threads kernels split their loops over (the machine's active cores).
public let kernelThreadCount: Int = max(1, sysconfThreads())

private func sysconfThreads() -> Int {
    #if canImport(Glibc) || canImport(Darwin)
    return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    #else
    return 1
    #endif
}

/// The number of threads a `parallelFor` called from here would use: `kernelThreadCount`, or 1
/// inside the body of another parallel loop (nested loops run serially).
public var availableKernelThreads: Int { ParallelRegion.isActive ? 1 : kernelThreadCount }

/// Runs `body` over `0..<count` split into contiguous chunks, one per worker thread; small
/// loops (fewer than `minimumPerChunk` items per thread) run on the calling thread.
///
/// A `parallelFor` (or `concurrentForEach`) inside the body of another runs serially on the
/// worker that calls it, so coarse-grained parallelism (for example one sample per core) makes
/// every kernel inside it single-threaded without further changes.
///
/// `body` receives a range of indices and must only write memory that belongs to those indices.
public func parallelFor(_ count: Int, minimumPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let chunks = min(kernelThreadCount, max(1, count / max(1, minimumPerChunk)))
    if chunks <= 1 || ParallelRegion.isActive {
        body(0..<count)
        return
    }
    let chunkBody = { (chunk: Int) in body((count * chunk / chunks)..<(count * (chunk + 1) / chunks)) }
    #if os(Linux)
    if SpinningPool.shared.run(chunks: chunks, chunkBody) { return }
    #endif
    withoutActuallyEscaping(chunkBody) { escapable in
        // The caller guarantees that chunks touch disjoint memory (see above).
        nonisolated(unsafe) let work = escapable
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            ParallelRegion.enter { work(chunk) }
        }
    }
}

/// Runs `body(index)` for every index in `0..<count`, handing indices out one at a time to
/// the worker threads (one per core) as they become free, so uneven or disturbed items still
/// balance. Runs serially inside another `parallelFor` or `concurrentForEach`.
///
/// `body` must only write memory that belongs to its index.
public func concurrentForEach(_ count: Int, _ body: (Int) -> Void) {
    let workers = min(kernelThreadCount, count)
    if workers <= 1 || ParallelRegion.isActive {
        for index in 0..<count { body(index) }
        return
    }
    let counter = SharedCounter()
    withoutActuallyEscaping(body) { escapable in
        nonisolated(unsafe) let work = escapable
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            ParallelRegion.enter {
                while true {
                    let index = counter.next()
                    if index >= count { break }
                    work(index)
                }
            }
        }
    }
}

/// Marks the threads currently running a chunk of a parallel loop (a thread-specific flag).
enum ParallelRegion {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Whether the calling thread runs inside a parallel loop's body.
    static var isActive: Bool { pthread_getspecific(key) != nil }

    @inline(__always)
    static func enter(_ body: () -> Void) {
        let previous = pthread_getspecific(key)
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1))
        body()
        pthread_setspecific(key, previous)
    }
}

/// A mutex over a heap-allocated `pthread_mutex_t` (stable address).
final class PThreadMutex: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always)
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// `next()` returns 0, 1, 2, ... across threads.
private final class SharedCounter: @unchecked Sendable {
    private let lock = PThreadMutex()
    private var value = 0

    func next() -> Int {
        lock.withLock {
            defer { value += 1 }
            return value
        }
    }
}

#if os(Linux)
import Synchronization

/// Worker threads for `parallelFor` that wait for the next loop by spinning for a short while
/// before they sleep, so that the many short parallel loops of one forward pass (one or more per
/// layer) start in well under a microsecond instead of paying a thread wake-up each. One loop runs
/// on the pool at a time; a loop that finds it busy uses Dispatch instead.
final class SpinningPool: @unchecked Sendable {
    static let shared = SpinningPool(workers: kernelThreadCount - 1)

    /// How long an idle worker polls for the next loop before it sleeps: first `spinChecks`
    /// plain checks of the job counter (some microseconds), then `yieldChecks` checks each after
    /// a `sched_yield`, which lets other runnable threads on the core go first (about a hundred
    /// microseconds on an idle core).
    private static let spinChecks = 20_000
    private static let yieldChecks = 100

    private let workers: Int
    private let busy = Atomic<Bool>(false)
    /// Bumped once per loop; workers wait for it to change.
    private let generation = Atomic<Int>(0)
    /// Chunks of the current loop not finished yet by the workers.
    private let pending = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let sleepLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wakeUp = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The current loop, written before `generation` is bumped and read by workers after they see it.
    private var job: ((Int) -> Void)?

    private init(workers: Int) {
        self.workers = max(0, workers)
        sleepLock.initialize(to: pthread_mutex_t())
        wakeUp.initialize(to: pthread_cond_t())
        pthread_mutex_init(sleepLock, nil)
        pthread_cond_init(wakeUp, nil)
        for index in 0..<self.workers {
            let context = Unmanaged.passRetained(WorkerContext(pool: self, chunk: index + 1)).toOpaque()
            var thread = pthread_t()
            pthread_create(&thread, nil, { raw in
                let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                context.pool.workerLoop(chunk: context.chunk)
                return nil
            }, context)
            pthread_detach(thread)
        }
    }

    private final class WorkerContext {
        let pool: SpinningPool
        let chunk: Int
        init(pool: SpinningPool, chunk: Int) { (self.pool, self.chunk) = (pool, chunk) }
    }

    /// Runs `body(chunk)` for chunk 0 (on the caller) through `workers` (one per worker thread),
    /// and returns when all are done; `false` without running anything when the pool is busy.
    func run(chunks: Int, _ body: (Int) -> Void) -> Bool {
        guard chunks == workers + 1, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else { return false }
        withoutActuallyEscaping(body) { escapable in
            job = escapable
            pending.store(workers, ordering: .relaxed)
            generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(sleepLock)
                pthread_cond_broadcast(wakeUp)
                pthread_mutex_unlock(sleepLock)
            }
            ParallelRegion.enter { escapable(0) }
            var checks = 0
            while pending.load(ordering: .acquiring) > 0 {
                checks += 1
                if checks > 1_000 { sched_yield() }
            }
            job = nil
        }
        busy.store(false, ordering: .releasing)
        return true
    }

    private func workerLoop(chunk: Int) {
        // Generation 0 is the state before the first loop (the thread may start after it was posted).
        var seen = 0
        while true {
            var checks = 0
            while generation.load(ordering: .acquiring) == seen {
                checks += 1
                if checks < Self.spinChecks { continue }
                if checks < Self.spinChecks + Self.yieldChecks {
                    sched_yield()
                    continue
                }
                pthread_mutex_lock(sleepLock)
                sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen {
                    pthread_cond_wait(wakeUp, sleepLock)
                }
                sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(sleepLock)
            }
            seen = generation.load(ordering: .acquiring)
            if let job { ParallelRegion.enter { job(chunk) } }
            pending.wrappingSubtract(1, ordering: .releasing)
        }
    }
}
#endif
