/// IEEE 754 binary16 ↔ binary32 conversion on bit patterns (portable: no dependence on the
/// platform's `Float16`).
///
/// Narrowing rounds to nearest, ties to even; values beyond the largest half (65504, after rounding)
/// become ±infinity, values below half the smallest subnormal (2⁻²⁵) become ±0, infinities stay
/// infinities and NaNs stay NaNs (quiet, keeping the top mantissa bits and the sign). Widening is
/// exact.
public enum HalfPrecision {
    /// The binary16 bit pattern nearest to `value`.
    @inlinable
    public static func halfBits(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF)
        let mantissa = bits & 0x7F_FFFF
        if exponent == 0xFF {
            if mantissa == 0 { return sign | 0x7C00 }
            return sign | 0x7E00 | UInt16(truncatingIfNeeded: mantissa >> 13)
        }
        let halfExponent = exponent - 127 + 15
        if halfExponent >= 31 { return sign | 0x7C00 }
        if halfExponent <= 0 {
            // Subnormal (or zero) half: value = m · 2⁻²⁴ with m = significand >> (14 − halfExponent).
            let shift = 14 - halfExponent
            if shift > 24 { return sign }
            let significand = mantissa | 0x80_0000
            var result = significand >> UInt32(shift)
            let remainder = significand & ((1 << UInt32(shift)) - 1)
            let halfway: UInt32 = 1 << UInt32(shift - 1)
            if remainder > halfway || (remainder == halfway && (result & 1) == 1) { result += 1 }
            return sign | UInt16(truncatingIfNeeded: result)
        }
        var result = UInt32(halfExponent) << 10 | (mantissa >> 13)
        let remainder = mantissa & 0x1FFF
        if remainder > 0x1000 || (remainder == 0x1000 && (result & 1) == 1) { result += 1 }  // may carry into ∞
        return sign | UInt16(truncatingIfNeeded: result)
    }

    /// The float32 value of a binary16 bit pattern (exact).
    @inlinable
    public static func float(fromHalfBits half: UInt16) -> Float {
        let sign = UInt32(half & 0x8000) << 16
        let exponent = UInt32((half >> 10) & 0x1F)
        let mantissa = UInt32(half & 0x3FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13) }
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }
            let magnitude = Float(mantissa) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        }
        return Float(bitPattern: sign | (exponent + 112) << 23 | mantissa << 13)
    }

    /// Narrows every element.
    public static func halfBits(from values: UnsafeBufferPointer<Float>) -> [UInt16] {
        [UInt16](unsafeUninitializedCapacity: values.count) { buffer, initialized in
            for index in 0..<values.count { buffer[index] = halfBits(from: values[index]) }
            initialized = values.count
        }
    }
}
