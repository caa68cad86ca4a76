import LanceLinalg

/// How the forward kernels share the machine's cores, for executors that schedule whole passes.
///
/// LANCE's kernels split their loops over the cores themselves (`parallelFor`) and call OpenBLAS
/// single-threaded, so that OpenBLAS's own threads do not spin on cores the kernels need.
public enum ForwardExecution {
    /// The number of threads a kernel called from here splits its work over: one per core, or 1
    /// inside `concurrentForEach` (each item then runs on one core).
    public static var threads: Int { availableKernelThreads }

    /// Runs `body` with OpenBLAS limited to one thread (`BLASThreads.withSingleThread`): wrap a
    /// whole forward pass in it so that no `sgemm` in it starts OpenBLAS's thread pool.
    public static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
        try BLASThreads.withSingleThread(body)
    }

    /// Runs `body(index)` for every index in `0..<count` on all cores, handing out one index at a
    /// time; kernels called inside run single-threaded. `body` must only write memory that
    /// belongs to its index.
    public static func concurrentForEach(_ count: Int, _ body: (Int) -> Void) {
        LanceLinalg.concurrentForEach(count, body)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LanceCore

/// Dead intermediate tensors kept for reuse as later outputs of the same element count, most
/// recently freed first, so that a layer writes its output into memory a recent layer touched
/// (still in the caches, pages mapped) instead of fresh memory from the allocator.
///
/// An executor hands tensors it no longer needs to `recycle(_:)` and runs its kernels inside
/// `providing(_:)`; the forward kernels that support it (convolutions) then take their output
/// from here. Every element of a reused tensor is overwritten, so results do not depend on
/// reuse. A tensor still referenced elsewhere is safe to recycle (writing to it copies first,
/// copy on write), just not useful. Thread-safe; at most `capacityBytes` are kept.
public final class TensorRecycler: @unchecked Sendable {
    /// Kept tensors by element count, most recently recycled last.
    private var free: [Int: [Tensor]] = [:]
    private var order: [Int] = []
    private var bytes = 0
    public let capacityBytes: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init(capacityBytes: Int = 32 << 20) {
        self.capacityBytes = capacityBytes
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Keeps `tensor` for a later output of its element count.
    public func recycle(_ tensor: consuming Tensor) {
        let count = tensor.count
        let size = count * MemoryLayout<Float>.size
        guard size > 0, size <= capacityBytes else { return }
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        free[count, default: []].append(tensor)
        order.append(count)
        bytes += size
        // Over capacity: drop the oldest.
        while bytes > capacityBytes, let count = order.first {
            order.removeFirst()
            if var list = free[count], !list.isEmpty {
                list.removeFirst()
                free[count] = list.isEmpty ? nil : list
                bytes -= count * MemoryLayout<Float>.size
            }
        }
    }

    /// Drops every kept tensor.
    public func removeAll() {
        pthread_mutex_lock(mutex)
        free = [:]
        order = []
        bytes = 0
        pthread_mutex_unlock(mutex)
    }

    /// A kept tensor of `shape`'s element count, reshaped to `shape`, or `nil`.
    func take(shape: [Int]) -> Tensor? {
        let count = shape.reduce(1, *)
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        guard var list = free[count], let last = list.popLast() else { return nil }
        free[count] = list.isEmpty ? nil : list
        if let index = order.lastIndex(of: count) { order.remove(at: index) }
        bytes -= count * MemoryLayout<Float>.size
        return (consume last).reshaped(to: shape)
    }

    /// Runs `body` with `self` as the calling thread's recycler for forward kernels.
    public func providing<R>(_ body: () throws -> R) rethrows -> R {
        let previous = pthread_getspecific(Self.key)
        pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
        defer { pthread_setspecific(Self.key, previous) }
        return try body()
    }

    /// The calling thread's recycler (see `providing(_:)`).
    static var current: TensorRecycler? {
        pthread_getspecific(key).map { Unmanaged<TensorRecycler>.fromOpaque($0).takeUnretainedValue() }
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
}

/// A kernel's output tensor of `shape` whose every element `initializer` writes: from the calling
/// thread's `TensorRecycler` when it has one of that size, else newly allocated.
func makeOutput(shape: [Int], _ initializer: (UnsafeMutableBufferPointer<Float>) -> Void) -> Tensor {
    if let recycler = TensorRecycler.current, var tensor = recycler.take(shape: shape) {
        tensor.withUnsafeMutableBufferPointer { initializer($0) }
        return tensor
    }
    return Tensor(shape: shape, unsafeUninitializedCapacity: initializer)
}
