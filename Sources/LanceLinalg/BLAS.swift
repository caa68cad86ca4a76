import COpenBLAS

/// Row-major single-precision matrix multiply through OpenBLAS:
///
/// ```
/// C[m×n] = alpha · op(A) · op(B) + beta · C
/// ```
///
/// where `op(A)` is `[m × k]` (A stored `[k × m]` when `transposeA`) and `op(B)` is `[k × n]`
/// (B stored `[n × k]` when `transposeB`). Leading dimensions are row strides in elements.
/// Calls `cblas_sgemm`.
@inlinable
public func gemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                 alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    guard m > 0, n > 0 else { return }
    guard k > 0 else {
        // OpenBLAS rejects k == 0; the product is empty, so only C's scaling remains.
        for row in 0..<m {
            for column in 0..<n { c[row * ldc + column] = beta == 0 ? 0 : beta * c[row * ldc + column] }
        }
        return
    }
    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// The OpenBLAS library in use: its kernel family and thread count.
public enum BLASThreads {
    /// The CPU kernel family OpenBLAS selected at load time (`SkylakeX`, `Haswell`, ...; the
    /// generic `Prescott` when it does not recognise the CPU). Calls `openblas_get_corename`.
    public static var coreName: String {
        openblas_get_corename().map { String(cString: $0) } ?? "unknown"
    }

    /// The current thread count. Calls `openblas_get_num_threads`.
    public static var count: Int { Int(openblas_get_num_threads()) }

    /// Sets the thread count for all later calls. Calls `openblas_set_num_threads`.
    public static func set(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, count)))
    }

    /// Runs `body` with OpenBLAS limited to one thread, so that the caller can run several
    /// `gemm` calls side by side on its own worker threads (`parallelFor`) without OpenBLAS's
    /// threads competing with them or serialising the calls. OpenBLAS's thread count is one
    /// process-wide setting: while any `withSingleThread` is running (calls may nest and overlap
    /// across threads), every `gemm` in the process is single-threaded; the count in force
    /// before the first one is restored when the last one returns.
    public static func withSingleThread<R>(_ body: () throws -> R) rethrows -> R {
        singleThreadScope.withLock {
            if singleThreadDepth == 0 {
                singleThreadSaved = count
                if singleThreadSaved != 1 { set(1) }
            }
            singleThreadDepth += 1
        }
        defer {
            singleThreadScope.withLock {
                singleThreadDepth -= 1
                if singleThreadDepth == 0 && singleThreadSaved != 1 { set(singleThreadSaved) }
            }
        }
        return try body()
    }

    private static let singleThreadScope = PThreadMutex()
    // Guarded by singleThreadScope.
    nonisolated(unsafe) private static var singleThreadDepth = 0
    nonisolated(unsafe) private static var singleThreadSaved = 1
}

/// Row-major double-precision matrix multiply, `C[m×n] = op(A) · op(B)` (no scaling, C
/// overwritten), with the conventions of `gemm`. Calls `cblas_dgemm`. For small dense
/// factorisation work (subspace updates) where float32 would lose the orthogonality.
public func doublePrecisionGemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                                a: [Double], lda: Int, b: [Double], ldb: Int) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    guard m > 0, n > 0, k > 0 else { return c }
    cblas_dgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), 0, &c, Int32(n))
    return c
}
