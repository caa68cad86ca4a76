import CLanceKernels

/// Bit masks of where values lie in an open interval, and gradients scaled by them: what a
/// piecewise-linear activation keeps for its backward (one bit per element instead of a float).
///
/// Layout: bit `k % 64` of word `k / 64` stands for element `k`; bits past the last element are 0.

/// Sets bit k when `lower < values[k]` and (`upper == nil` or `values[k] < upper`); NaN gives 0.
///
/// - Parameters:
///   - values: n floats.
///   - words: `(n + 63) / 64` words, overwritten.
public func intervalBits(_ values: UnsafeBufferPointer<Float>, lower: Float, upper: Float?,
                         into words: UnsafeMutableBufferPointer<UInt64>) {
    let count = values.count
    precondition(words.count == (count + 63) / 64, "\(count) values need \((count + 63) / 64) words, got \(words.count)")
    guard count > 0 else { return }
    if avx512Kernels {
        lance_interval_bits_avx512(values.baseAddress!, count, lower, upper ?? .infinity, upper == nil ? 1 : 0,
                                   words.baseAddress!)
        return
    }
    let upperBound = upper ?? .infinity
    for word in 0..<words.count {
        let start = word * 64
        var bits: UInt64 = 0
        for k in start..<min(start + 64, count) {
            let value = values[k]
            let inside: UInt64 = value > lower && (upper == nil || value < upperBound) ? 1 : 0
            bits |= inside << UInt64(k - start)
        }
        words[word] = bits
    }
}

/// In place: `values[k] *= bit k ? set : clear` (one multiplication, so `0 · ∞` is NaN as in the
/// dense product).
///
/// - Parameters:
///   - values: n floats.
///   - words: `(n + 63) / 64` words from `intervalBits`.
public func scaleByBits(_ values: UnsafeMutableBufferPointer<Float>, words: UnsafeBufferPointer<UInt64>,
                        clear: Float, set: Float) {
    let count = values.count
    precondition(words.count == (count + 63) / 64, "\(count) values need \((count + 63) / 64) words, got \(words.count)")
    guard count > 0 else { return }
    if avx512Kernels {
        lance_scale_by_bits_avx512(values.baseAddress!, count, words.baseAddress!, clear, set)
        return
    }
    for k in 0..<count {
        values[k] *= (words[k / 64] >> UInt64(k % 64)) & 1 == 1 ? set : clear
    }
}
