import CLAPACKE

/// Singular value decomposition of a general matrix, `A = U · diag(σ) · Vᵀ`, in double precision
/// through LAPACK's divide-and-conquer driver (thin form). Calls `LAPACKE_dgesdd`.
///
/// - Parameters:
///   - matrix: `rows × columns`, row-major.
///   - rows: m. - columns: n.
/// - Returns: the `min(m, n)` singular values in descending order and the left singular vectors as
///   the columns of an `m × min(m, n)` row-major matrix (`leftVectors[i * min(m, n) + k]` is
///   component `i` of vector `k`). The right singular vectors are not returned.
public func singularValueDecomposition(_ matrix: [Double], rows m: Int, columns n: Int)
    throws(LinalgError) -> (values: [Double], leftVectors: [Double]) {
    precondition(matrix.count == m * n, "singularValueDecomposition: \(matrix.count) values for a \(m)×\(n) matrix")
    let k = min(m, n)
    guard k > 0 else { return ([], []) }
    var a = matrix
    var s = [Double](repeating: 0, count: k)
    var u = [Double](repeating: 0, count: m * k)
    var vt = [Double](repeating: 0, count: k * n)
    let info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "S")), Int32(m), Int32(n), &a, Int32(n), &s,
                              &u, Int32(k), &vt, Int32(n))
    guard info == 0 else { throw .lapackFailure(routine: "LAPACKE_dgesdd", info: Int(info)) }
    return (s, u)
}
