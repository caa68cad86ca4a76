import LanceCore
import LanceLinalg
import LanceModel

/// The gradients of ONNX Gemm `Y = alpha · op(A) · op(B) + beta · C`, every product through
/// `LanceLinalg.gemm` (OpenBLAS):
///
/// ```
/// d op(A) = alpha · dY · op(B)ᵀ      → dA = d op(A)  ([M, K]),  or its transpose ([K, M]) when transposeA
/// d op(B) = alpha · op(A)ᵀ · dY      → dB = d op(B)  ([K, N]),  or its transpose ([N, K]) when transposeB
/// dC      = beta · dY summed over the axes C was broadcast along (`sumToShape`)
/// ```
///
/// - Parameters:
///   - a: A `[M, K]` (`[K, M]` if `transposeA`).
///   - b: B `[K, N]` (`[N, K]` if `transposeB`; PyTorch's Linear weight `[out, in]`).
///   - c: the shape of C (broadcastable to `[M, N]`), or `nil` without C.
///   - outputGradient: dY `[M, N]`.
///   - parameters: alpha, beta and the transposes of the forward node.
/// - Returns: dA with A's shape, dB with B's shape, dC with `c`'s shape (or `nil`).
public func gemmGradients(a: Tensor, b: Tensor, cShape: [Int]?, outputGradient: Tensor,
                          parameters: Gemm) -> (a: Tensor, b: Tensor, c: Tensor?) {
    precondition(a.rank == 2 && b.rank == 2 && outputGradient.rank == 2, "Gemm gradients need 2-D A, B and dY")
    let (m, k) = parameters.transposeA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
    let n = parameters.transposeB ? b.shape[0] : b.shape[1]
    precondition((parameters.transposeB ? b.shape[1] : b.shape[0]) == k, "Gemm gradients: A \(a.shape) and B \(b.shape) disagree")
    precondition(outputGradient.shape == [m, n], "Gemm gradients: dY \(outputGradient.shape) is not [\(m), \(n)]")
    let alpha = parameters.alpha
    let aGradient = Tensor(shape: a.shape) { out in
        b.withUnsafeBufferPointer { w in
            outputGradient.withUnsafeBufferPointer { dy in
                if parameters.transposeA {
                    // dA[K, M] = alpha · op(B)[K, N] · dYᵀ[N, M]
                    gemm(transposeA: parameters.transposeB, transposeB: true, m: k, n: m, k: n, alpha: alpha,
                         a: w.baseAddress!, lda: b.shape[1], b: dy.baseAddress!, ldb: n,
                         beta: 0, c: out.baseAddress!, ldc: m)
                } else {
                    // dA[M, K] = alpha · dY[M, N] · op(B)ᵀ[N, K]
                    gemm(transposeA: false, transposeB: !parameters.transposeB, m: m, n: k, k: n, alpha: alpha,
                         a: dy.baseAddress!, lda: n, b: w.baseAddress!, ldb: b.shape[1],
                         beta: 0, c: out.baseAddress!, ldc: k)
                }
            }
        }
    }
    let bGradient = Tensor(shape: b.shape) { out in
        a.withUnsafeBufferPointer { x in
            outputGradient.withUnsafeBufferPointer { dy in
                if parameters.transposeB {
                    // dB[N, K] = alpha · dYᵀ[N, M] · op(A)[M, K]
                    gemm(transposeA: true, transposeB: parameters.transposeA, m: n, n: k, k: m, alpha: alpha,
                         a: dy.baseAddress!, lda: n, b: x.baseAddress!, ldb: a.shape[1],
                         beta: 0, c: out.baseAddress!, ldc: k)
                } else {
                    // dB[K, N] = alpha · op(A)ᵀ[K, M] · dY[M, N]
                    gemm(transposeA: !parameters.transposeA, transposeB: false, m: k, n: n, k: m, alpha: alpha,
                         a: x.baseAddress!, lda: a.shape[1], b: dy.baseAddress!, ldb: n,
                         beta: 0, c: out.baseAddress!, ldc: n)
                }
            }
        }
    }
    var cGradient: Tensor?
    if let cShape {
        var reduced = sumToShape(outputGradient, shape: cShape)
        reduced.withUnsafeMutableBufferPointer { values in
            for index in values.indices { values[index] *= parameters.beta }
        }
        cGradient = reduced
    }
    return (aGradient, bGradient, cGradient)
}

/// The gradients of numpy `matmul` `Y = A · B` with batch broadcasting (1-D operands promoted as
/// in the forward: A `[K]` → `[1, K]`, B `[K]` → `[K, 1]`):
///
/// ```
/// dA[p] += dY[p] · B[p]ᵀ      dB[p] += A[p]ᵀ · dY[p]
/// ```
/// for each broadcast batch index `p`, where a batch axis of extent 1 (or missing) in A or B
/// accumulates the products of every batch index it was broadcast to. Each product is one `gemm`.
///
/// - Parameters: `a` `[..., M, K]`, `b` `[..., K, N]`, `outputGradient` dY with the forward output's shape.
/// - Returns: dA with A's shape, dB with B's shape.
public func matMulGradients(_ a: Tensor, _ b: Tensor, outputGradient: Tensor) -> (a: Tensor, b: Tensor) {
    let a2 = a.rank == 1 ? a.reshaped(to: [1, a.count]) : a
    let b2 = b.rank == 1 ? b.reshaped(to: [b.count, 1]) : b
    let (m, k, n) = (a2.shape[a2.rank - 2], a2.shape[a2.rank - 1], b2.shape[b2.rank - 1])
    precondition(b2.shape[b2.rank - 2] == k, "MatMul gradients: A \(a.shape) and B \(b.shape) disagree")
    let aBatch = Array(a2.shape.dropLast(2)), bBatch = Array(b2.shape.dropLast(2))
    let rank = max(aBatch.count, bBatch.count)
    let aPadded = [Int](repeating: 1, count: rank - aBatch.count) + aBatch
    let bPadded = [Int](repeating: 1, count: rank - bBatch.count) + bBatch
    let batch = zip(aPadded, bPadded).map { max($0, $1) }
    precondition(outputGradient.count == batch.reduce(1, *) * m * n, "MatMul gradients: dY \(outputGradient.shape) does not fit")
    let aStrides = reductionStrides(aPadded, to: batch)
    let bStrides = reductionStrides(bPadded, to: batch)
    var aGradient = Tensor(shape: a2.shape)
    var bGradient = Tensor(shape: b2.shape)
    aGradient.withUnsafeMutableBufferPointer { da in
        bGradient.withUnsafeMutableBufferPointer { db in
            a2.withUnsafeBufferPointer { x in
                b2.withUnsafeBufferPointer { w in
                    outputGradient.withUnsafeBufferPointer { dy in
                        forEachBroadcastOffset(batch, aStrides, bStrides) { product, aOffset, bOffset in
                            let gradient = dy.baseAddress! + product * m * n
                            // dA_p[M, K] += dY_p[M, N] · B_pᵀ[N, K]
                            gemm(transposeB: true, m: m, n: k, k: n, a: gradient, lda: n,
                                 b: w.baseAddress! + bOffset * k * n, ldb: n,
                                 beta: 1, c: da.baseAddress! + aOffset * m * k, ldc: k)
                            // dB_p[K, N] += A_pᵀ[K, M] · dY_p[M, N]
                            gemm(transposeA: true, m: k, n: n, k: m, a: x.baseAddress! + aOffset * m * k, lda: k,
                                 b: gradient, ldb: n,
                                 beta: 1, c: db.baseAddress! + bOffset * k * n, ldc: n)
                        }
                    }
                }
            }
        }
    }
    return (aGradient.reshaped(to: a.shape), bGradient.reshaped(to: b.shape))
}
