import Foundation

/// The element type of an array stored as raw bytes.
enum ElementType: Sendable, Equatable {
    case float(bytes: Int)
    case signed(bytes: Int)
    case unsigned(bytes: Int)
    case bool

    var size: Int {
        switch self {
        case .float(let bytes), .signed(let bytes), .unsigned(let bytes): bytes
        case .bool: 1
        }
    }

    var isInteger: Bool {
        if case .float = self { return false }
        return true
    }
}

/// An n-dimensional array kept as its file bytes (a `.npy` body, a `.npz` entry, an IDX body)
/// and converted element by element when read, so a dataset stays in memory at its stored size
/// (one byte per pixel for 8-bit images) rather than as floats.
struct NumericArray: Sendable {
    /// The bytes holding the elements from `offset` on.
    let storage: Data
    /// Where the first element starts in `storage`.
    let offset: Int
    /// The extents; the first axis is the sample axis.
    let shape: [Int]
    let elementType: ElementType
    let bigEndian: Bool

    /// Elements in one sample (the product of the extents after the first).
    var sampleSize: Int { shape.dropFirst().reduce(1, *) }

    var elementCount: Int { shape.reduce(1, *) }

    /// Elements `range` converted to float (integers exact up to 2^24).
    func floats(_ range: Range<Int>) -> [Float] {
        let size = elementType.size
        return storage.withUnsafeBytes { raw -> [Float] in
            let base = offset + range.lowerBound * size
            func load<T: FixedWidthInteger>(_: T.Type) -> [T] {
                (0..<range.count).map { index in
                    let value = raw.loadUnaligned(fromByteOffset: base + index * size, as: T.self)
                    return bigEndian ? T(bigEndian: value) : T(littleEndian: value)
                }
            }
            switch elementType {
            case .float(4): return load(UInt32.self).map { Float(bitPattern: $0) }
            case .float(8): return load(UInt64.self).map { Float(Double(bitPattern: $0)) }
            case .float(2): return load(UInt16.self).map { Float(float16Bits: $0) }
            case .signed(1): return load(Int8.self).map { Float($0) }
            case .signed(2): return load(Int16.self).map { Float($0) }
            case .signed(4): return load(Int32.self).map { Float($0) }
            case .signed(8): return load(Int64.self).map { Float($0) }
            case .unsigned(1), .bool: return load(UInt8.self).map { Float($0) }
            case .unsigned(2): return load(UInt16.self).map { Float($0) }
            case .unsigned(4): return load(UInt32.self).map { Float($0) }
            case .unsigned(8): return load(UInt64.self).map { Float($0) }
            default: return [Float](repeating: .nan, count: range.count)
            }
        }
    }

    /// Elements `range` as integers (integer and boolean arrays; floats are truncated).
    func integers(_ range: Range<Int>) -> [Int] {
        let size = elementType.size
        return storage.withUnsafeBytes { raw -> [Int] in
            let base = offset + range.lowerBound * size
            func load<T: FixedWidthInteger>(_: T.Type) -> [Int] {
                (0..<range.count).map { index in
                    let value = raw.loadUnaligned(fromByteOffset: base + index * size, as: T.self)
                    return Int(truncatingIfNeeded: bigEndian ? T(bigEndian: value) : T(littleEndian: value))
                }
            }
            switch elementType {
            case .signed(1): return load(Int8.self)
            case .signed(2): return load(Int16.self)
            case .signed(4): return load(Int32.self)
            case .signed(8): return load(Int64.self)
            case .unsigned(1), .bool: return load(UInt8.self)
            case .unsigned(2): return load(UInt16.self)
            case .unsigned(4): return load(UInt32.self)
            case .unsigned(8): return load(UInt64.self)
            default:
                return floats(range).map { $0.isFinite ? Int($0) : Int.min }
            }
        }
    }

    /// Elements `range` as bytes, when the array is of unsigned bytes; otherwise `nil`.
    func bytes(_ range: Range<Int>) -> [UInt8]? {
        guard elementType == .unsigned(bytes: 1) else { return nil }
        return [UInt8](storage[(storage.startIndex + offset + range.lowerBound)..<(storage.startIndex + offset + range.upperBound)])
    }

    /// The pixels of sample `index` in stored order: bytes for 8-bit arrays and for integer arrays
    /// whose values all lie in 0…255, floats otherwise.
    func samplePixels(_ index: Int) -> RawImage.Pixels {
        let range = (index * sampleSize)..<((index + 1) * sampleSize)
        if let bytes = bytes(range) { return .bytes(bytes) }
        let values = floats(range)
        if elementType.isInteger, values.allSatisfy({ $0 >= 0 && $0 <= 255 }) {
            return .bytes(values.map { UInt8($0) })
        }
        return .floats(values)
    }
}

extension Float {
    /// The value of IEEE half-precision bits.
    init(float16Bits bits: UInt16) {
        let sign: Float = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 10) & 0x1f
        let mantissa = Float(bits & 0x3ff)
        if exponent == 0 { self = sign * mantissa * 0x1p-24; return }
        if exponent == 0x1f { self = mantissa == 0 ? sign * .infinity : .nan; return }
        self = sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
    }
}
