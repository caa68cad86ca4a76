import LanceCore
import LanceLinalg
import LanceModel

/// `Y = alpha · op(A) · op(B) + beta · C` (ONNX Gemm) through `cblas_sgemm`, with an optional
/// fused activation. A `[M, K]` (`[K, M]` if `transposeA`), B `[K, N]` (`[N, K]` if
/// `transposeB`), C broadcast to `[M, N]`; output `[M, N]`.
public func gemm(_ a: Tensor, _ b: Tensor, _ c: Tensor?, parameters: Gemm, activation: Activation? = nil) -> Tensor {
    let (m, k) = parameters.transposeA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
    let n = parameters.transposeB ? b.shape[0] : b.shape[1]
    var output: Tensor
    var beta: Float = 0
    if let c, parameters.beta != 0 {
        output = c.shape == [m, n] ? c : binary(Tensor(shape: [m, n]), c, .add)
        beta = parameters.beta
    } else {
        output = Tensor(shape: [m, n])
    }
    // Column tiles of a fixed width (from the weight's shape only, never the batch), each one
    // single-threaded `sgemm` over all rows, shared by the cores: at batch 1 the product is a
    // matrix-vector product bound by reading the weight, which one core alone does at half speed.
    let columnTile = n * k >= 1 << 16 ? max(16, (n + 7) / 8) : n
    let tiles = (n + columnTile - 1) / columnTile
    output.withUnsafeMutableBufferPointer { y in
        a.withUnsafeBufferPointer { x in
            b.withUnsafeBufferPointer { w in
                nonisolated(unsafe) let (x, w, y) = (x.baseAddress!, w.baseAddress!, y.baseAddress!)
                let (lda, ldb) = (a.shape[1], b.shape[1])
                BLASThreads.withSingleThread {
                    parallelFor(tiles) { range in
                        for tile in range {
                            let first = tile * columnTile
                            let columns = min(n, first + columnTile) - first
                            LanceLinalg.gemm(transposeA: parameters.transposeA, transposeB: parameters.transposeB,
                                             m: m, n: columns, k: k, alpha: parameters.alpha,
                                             a: x, lda: lda, b: w + (parameters.transposeB ? first * ldb : first), ldb: ldb,
                                             beta: beta, c: y + first, ldc: n)
                            if let activation {
                                for row in 0..<m { applyActivation(activation, to: y + row * n + first, count: columns) }
                            }
                        }
                    }
                }
            }
        }
    }
    return output
}

/// numpy `matmul`: 1-D operands are promoted (and the added axis removed afterwards), leading
/// batch axes broadcast; each `[M, K] · [K, N]` product runs through `cblas_sgemm`.
public func matMul(_ a: Tensor, _ b: Tensor) -> Tensor {
    let a2 = a.rank == 1 ? a.reshaped(to: [1, a.count]) : a
    let b2 = b.rank == 1 ? b.reshaped(to: [b.count, 1]) : b
    let (m, k, n) = (a2.shape[a2.rank - 2], a2.shape[a2.rank - 1], b2.shape[b2.rank - 1])
    let aBatch = Array(a2.shape.dropLast(2)), bBatch = Array(b2.shape.dropLast(2))
    let batch = (try? broadcastShape(aBatch, bBatch)) ?? aBatch
    let batchCount = batch.reduce(1, *)
    let aStrides = broadcastStrides([Int](repeating: 1, count: batch.count - aBatch.count) + aBatch, to: batch)
    let bStrides = broadcastStrides([Int](repeating: 1, count: batch.count - bBatch.count) + bBatch, to: batch)
    var shape = batch
    if a.rank > 1 { shape.append(m) }
    if b.rank > 1 { shape.append(n) }
    return Tensor(shape: shape) { out in
        a2.withUnsafeBufferPointer { x in
            b2.withUnsafeBufferPointer { w in
                var index = [Int](repeating: 0, count: batch.count)
                for product in 0..<batchCount {
                    var aOffset = 0, bOffset = 0
                    for axis in 0..<batch.count {
                        aOffset += index[axis] * aStrides[axis]
                        bOffset += index[axis] * bStrides[axis]
                    }
                    LanceLinalg.gemm(m: m, n: n, k: k, a: x.baseAddress! + aOffset * m * k, lda: k,
                                     b: w.baseAddress! + bOffset * k * n, ldb: n,
                                     c: out.baseAddress! + product * m * n, ldc: n)
                    var axis = batch.count - 1
                    while axis >= 0 {
                        index[axis] += 1
                        if index[axis] < batch[axis] { break }
                        index[axis] = 0
                        axis -= 1
                    }
                }
            }
        }
    }
}
