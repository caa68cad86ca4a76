import LanceNN
import Testing

@Suite("Interval bit masks (activation masks)")
struct IntervalBitsTests {
    /// Values around the bounds, NaN and infinities, at every tail length up to three words.
    static func values(count: Int, seed: UInt64) -> [Float] {
        var state = seed
        let specials: [Float] = [0, -0.0, 6, 1, -1, .nan, .infinity, -.infinity, 5.999_999_5, 1e-30]
        return (0..<count).map { index in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            if index % 7 == 3 { return specials[Int(state >> 60) % specials.count] }
            return Float(Int64(bitPattern: state >> 11) % 20_000) / 2_000  // in (-10, 10)
        }
    }

    @Test("bits equal the definition lower < x (< upper), NaN clear, nothing past the end; scaling is one product per element",
          arguments: [(Float(0), Float?.none), (Float(0), Float?(6)), (Float(-1), Float?(1)), (Float(0), Float?(.infinity))])
    func matchesDefinition(lower: Float, upper: Float?) {
        for count in [0, 1, 15, 16, 17, 63, 64, 65, 100, 128, 191, 192] {
            let values = Self.values(count: count, seed: UInt64(count) + 1)
            var words = [UInt64](repeating: .max, count: (count + 63) / 64)
            values.withUnsafeBufferPointer { v in words.withUnsafeMutableBufferPointer { intervalBits(v, lower: lower, upper: upper, into: $0) } }
            for (k, value) in values.enumerated() {
                let expected = value > lower && (upper.map { value < $0 } ?? true)
                #expect(((words[k / 64] >> UInt64(k % 64)) & 1 == 1) == expected, "count \(count), element \(k) = \(value)")
            }
            if count % 64 != 0, let last = words.last {
                #expect(last >> UInt64(count % 64) == 0, "bits past the end are set for count \(count)")
            }
            var scaled = values
            scaled.withUnsafeMutableBufferPointer { v in words.withUnsafeBufferPointer { scaleByBits(v, words: $0, clear: 0.25, set: 3) } }
            var zeroed = values
            zeroed.withUnsafeMutableBufferPointer { v in words.withUnsafeBufferPointer { scaleByBits(v, words: $0, clear: 0, set: 1) } }
            for (k, value) in values.enumerated() {
                let bit = (words[k / 64] >> UInt64(k % 64)) & 1 == 1
                let expected = value * (bit ? 3 : 0.25), expectedZeroed = value * (bit ? 1 : 0)
                #expect(scaled[k].bitPattern == expected.bitPattern || (scaled[k].isNaN && expected.isNaN), "element \(k)")
                #expect(zeroed[k].bitPattern == expectedZeroed.bitPattern || (zeroed[k].isNaN && expectedZeroed.isNaN), "element \(k)")
            }
        }
    }
}
