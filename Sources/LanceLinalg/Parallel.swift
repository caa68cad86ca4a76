import Dispatch

/// The number of worker threads kernels split their loops over (the machine's active cores).
public let kernelThreadCount: Int = max(1, sysconfThreads())

private func sysconfThreads() -> Int {
    #if canImport(Glibc) || canImport(Darwin)
    return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    #else
    return 1
    #endif
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs `body` over `0..<count` split into contiguous chunks, one per worker thread; small
/// loops (fewer than `minimumPerChunk` items per thread) run on the calling thread.
///
/// `body` receives a range of indices and must only write memory that belongs to those indices.
public func parallelFor(_ count: Int, minimumPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let chunks = min(kernelThreadCount, max(1, count / max(1, minimumPerChunk)))
    if chunks <= 1 {
        body(0..<count)
        return
    }
    withoutActuallyEscaping(body) { escapable in
        // The caller guarantees that chunks touch disjoint memory (see above).
        nonisolated(unsafe) let work = escapable
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let start = count * chunk / chunks
            let end = count * (chunk + 1) / chunks
            work(start..<end)
        }
    }
}
