import CLAPACKE

/// Why a linear-algebra routine failed.
public enum LinalgError: Error, Sendable, Equatable, CustomStringConvertible {
    /// LAPACK reported failure (`info` is its code).
    case lapackFailure(routine: String, info: Int)

    /// One sentence.
    public var description: String {
        switch self {
        case .lapackFailure(let routine, let info):
            "\(routine) failed (info \(info)); the matrix may contain NaN or infinite values"
        }
    }
}

/// Eigen-decomposition of a symmetric matrix, `A = V · diag(λ) · Vᵀ`, through LAPACK's
/// divide-and-conquer driver in double precision. Calls `LAPACKE_dsyevd`.
///
/// - Parameters:
///   - matrix: `n × n` symmetric, row-major (only the upper triangle is read).
///   - dimension: `n`.
/// - Returns: the eigenvalues in descending order and the matching eigenvectors as the columns of
///   an `n × n` row-major matrix (`vectors[i * n + k]` is component `i` of eigenvector `k`).
public func symmetricEigen(_ matrix: [Double], dimension n: Int) throws(LinalgError) -> (values: [Double], vectors: [Double]) {
    precondition(matrix.count == n * n, "symmetricEigen: \(matrix.count) values for a \(n)×\(n) matrix")
    guard n > 0 else { return ([], []) }
    // The row-major upper triangle is the column-major lower one: LAPACK works on the buffer as
    // it is (no transposed copies), and returns the eigenvectors column-major, in place.
    var a = matrix
    var w = [Double](repeating: 0, count: n)
    let info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, Int8(UInt8(ascii: "V")), Int8(UInt8(ascii: "L")), Int32(n), &a, Int32(n), &w)
    guard info == 0 else { throw .lapackFailure(routine: "LAPACKE_dsyevd", info: Int(info)) }
    // LAPACK returns ascending eigenvalues; reverse to descending, columns with them.
    let values = Array(w.reversed())
    let vectors = [Double](unsafeUninitializedCapacity: n * n) { buffer, initialized in
        for i in 0..<n {
            for k in 0..<n { buffer[i * n + k] = a[(n - 1 - k) * n + i] }
        }
        initialized = n * n
    }
    return (values, vectors)
}
