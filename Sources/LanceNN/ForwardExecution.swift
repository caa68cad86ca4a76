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
