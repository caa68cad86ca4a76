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

/// Runs `body` over `0..<count` split into contiguous chunks shared by the worker threads (one
/// per core; on Linux a few chunks per thread, claimed as threads become free); small loops
/// (fewer than `minimumPerChunk` items per thread) run on the calling thread.
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
    #if os(Linux)
    let pieces = min(max(1, count / max(1, minimumPerChunk)), chunks * SpinningPool.piecesPerThread)
    let pieceBody = { (piece: Int) in body((count * piece / pieces)..<(count * (piece + 1) / pieces)) }
    if SpinningPool.shared.run(pieces: pieces, pieceBody) { return }
    #endif
    let chunkBody = { (chunk: Int) in body((count * chunk / chunks)..<(count * (chunk + 1) / chunks)) }
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

/// Worker threads for `parallelFor` that wait for the next loop by polling for a short while
/// before they sleep, so that the many short parallel loops of one forward pass (one or more per
/// layer) start in about a microsecond instead of paying a thread wake-up each.
///
/// A loop is cut into a few more pieces than there are threads, and the caller and the workers
/// claim pieces one at a time until none are left; a worker that the system has not scheduled
/// (a busy machine) therefore delays the loop by at most the piece it is running, instead of the
/// caller waiting for it. One loop runs on the pool at a time; a loop that finds it busy uses
/// Dispatch instead.
final class SpinningPool: @unchecked Sendable {
    static let shared = SpinningPool(workers: kernelThreadCount - 1)

    /// How long an idle worker polls for the next loop before it sleeps: first `spinChecks`
    /// plain checks (some microseconds), then `yieldChecks` checks each after a `sched_yield`,
    /// which lets other runnable threads on the core go first (about a hundred microseconds on
    /// an idle core).
    private static let spinChecks = 20_000
    private static let yieldChecks = 100

    /// Pieces per thread.
    static let piecesPerThread = 4

    let workers: Int
    private let busy = Atomic<Bool>(false)
    /// Bumped once per loop (after `claims` is set); idle workers wait for it to change.
    private let generation = Atomic<Int>(0)
    /// The current loop's claim state: generation (bits 32...), piece count (bits 16..<32) and
    /// the next unclaimed piece (bits 0..<16).
    private let claims = Atomic<Int>(0)
    /// Pieces of the current loop finished.
    private let finished = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let sleepLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wakeUp = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The current loop. Written before the loop is published; read only by a thread holding an
    /// unfinished piece of it (so the loop cannot end while it is read).
    private var job: ((Int) -> Void)?
    /// The caller's generation counter (only touched while `busy`).
    private var currentGeneration = 0

    private init(workers: Int) {
        self.workers = max(0, workers)
        sleepLock.initialize(to: pthread_mutex_t())
        wakeUp.initialize(to: pthread_cond_t())
        pthread_mutex_init(sleepLock, nil)
        pthread_cond_init(wakeUp, nil)
        for _ in 0..<self.workers {
            let context = Unmanaged.passRetained(self).toOpaque()
            var thread = pthread_t()
            pthread_create(&thread, nil, { raw in
                let pool = Unmanaged<SpinningPool>.fromOpaque(raw!).takeRetainedValue()
                pool.workerLoop()
                return nil
            }, context)
            pthread_detach(thread)
        }
    }

    /// Runs `body(piece)` for every piece in `0..<pieces` on the caller and the workers and
    /// returns when all are done; `false` without running anything when the pool is busy.
    func run(pieces: Int, _ body: (Int) -> Void) -> Bool {
        guard workers > 0, pieces > 0, pieces < 1 << 16,
              busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else { return false }
        withoutActuallyEscaping(body) { escapable in
            job = escapable
            currentGeneration = (currentGeneration + 1) & 0xFFFF_FFFF
            let generationValue = currentGeneration
            finished.store(0, ordering: .relaxed)
            claims.store(generationValue << 32 | pieces << 16, ordering: .releasing)
            generation.store(generationValue, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(sleepLock)
                pthread_cond_broadcast(wakeUp)
                pthread_mutex_unlock(sleepLock)
            }
            runPieces(generation: generationValue)
            var checks = 0
            while finished.load(ordering: .acquiring) < pieces {
                checks += 1
                if checks > 2_000 { sched_yield() }
            }
            job = nil
        }
        busy.store(false, ordering: .releasing)
        return true
    }

    /// Claims and runs pieces of loop `generation` until none are left.
    private func runPieces(generation expected: Int) {
        while true {
            var state = claims.load(ordering: .acquiring)
            var piece = 0
            while true {
                let pieces = (state >> 16) & 0xFFFF
                piece = state & 0xFFFF
                guard state >> 32 == expected, piece < pieces else { return }
                let (exchanged, original) = claims.compareExchange(expected: state, desired: state + 1,
                                                                    ordering: .acquiringAndReleasing)
                if exchanged { break }
                state = original
            }
            if let job { ParallelRegion.enter { job(piece) } }
            finished.wrappingAdd(1, ordering: .releasing)
        }
    }

    private func workerLoop() {
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
            runPieces(generation: seen)
        }
    }
}
#endif
