import LanceCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Softmax cross-entropy with integer class labels, averaged over the batch:
///
/// ```
/// loss = (1/N) Σ_n ( logsumexp(z_n) − z_n[y_n] ),   logsumexp(z) = max(z) + log Σ_k e^(z_k − max(z))
/// ∂loss/∂z_n[k] = (softmax(z_n)[k] − [k == y_n]) / N
/// ```
///
/// Numerically stable (the row maximum is subtracted before exponentiating; sums in double
/// precision), so large logits neither overflow nor lose the loss.
///
/// - Parameters:
///   - logits: z `[N, K]`.
///   - labels: `N` class indices in `0..<K`.
/// - Returns: the mean loss and its gradient with respect to the logits, `[N, K]`.
public func softmaxCrossEntropy(logits: Tensor, labels: [Int]) -> (loss: Float, logitsGradient: Tensor) {
    precondition(logits.rank == 2, "softmax cross-entropy needs [N, K] logits, got \(logits.shape)")
    let (batch, classes) = (logits.shape[0], logits.shape[1])
    precondition(labels.count == batch, "\(labels.count) labels for a batch of \(batch)")
    precondition(labels.allSatisfy { $0 >= 0 && $0 < classes }, "labels must lie in 0..<\(classes)")
    var total: Double = 0
    let gradient = Tensor(shape: logits.shape) { out in
        logits.withUnsafeBufferPointer { z in
            for n in 0..<batch {
                let row = n * classes
                var largest = -Double.infinity
                for k in 0..<classes { largest = max(largest, Double(z[row + k])) }
                var sum: Double = 0
                for k in 0..<classes { sum += exp(Double(z[row + k]) - largest) }
                let logSumExp = largest + log(sum)
                total += logSumExp - Double(z[row + labels[n]])
                for k in 0..<classes {
                    let probability = exp(Double(z[row + k]) - logSumExp)
                    out[row + k] = Float((probability - (k == labels[n] ? 1 : 0)) / Double(batch))
                }
            }
        }
    }
    return (Float(total / Double(max(batch, 1))), gradient)
}
