import Foundation
import LanceCore

/// Why a NumPy file could not be read or written.
public enum DataError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file cannot be opened or read.
    case unreadableFile(path: String, reason: String)
    /// The file is not a valid `.npy` array of a supported type.
    case invalidNPY(path: String, reason: String)
    /// The output cannot be written.
    case unwritableFile(path: String, reason: String)

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason): "\(path): cannot read the file: \(reason)"
        case .invalidNPY(let path, let reason): "\(path): not a usable .npy array: \(reason)"
        case .unwritableFile(let path, let reason): "\(path): cannot write the file: \(reason)"
        }
    }
}

/// An array read from a NumPy `.npy` file (format versions 1.0 to 3.0, C order, little endian).
public struct NPYArray: Sendable, Equatable {
    /// The array's extents.
    public var shape: [Int]
    /// The NumPy type string of the file (`<f4`, `<i8`, ...).
    public var dtype: String
    /// The values converted to float32 (integers exactly up to 2^24).
    public var floats: [Float]
    /// The values as integers, for integer and boolean arrays.
    public var integers: [Int]?

    /// The values as a float32 tensor of the array's shape.
    public var tensor: Tensor { Tensor(shape: shape, scalars: floats) }
}

/// Reads and writes NumPy `.npy` files.
public enum NPY {
    /// Reads a `.npy` file holding a float (`f2`, `f4`, `f8`), integer (`i1`…`i8`, `u1`…`u8`) or
    /// boolean array in C order.
    ///
    /// - Throws: `DataError` naming the file and what is wrong (magic, header, type, size).
    public static func read(_ path: String) throws(DataError) -> NPYArray {
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe))
        } catch {
            throw .unreadableFile(path: path, reason: FileManager.default.fileExists(atPath: path) ? error.localizedDescription : "no such file")
        }
        func fail(_ reason: String) -> DataError { .invalidNPY(path: path, reason: reason) }
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw fail("missing the \\x93NUMPY magic")
        }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1: headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = (8...11).reduce(0) { $0 | Int(bytes[$1]) << (8 * ($1 - 8)) }
            headerStart = 12
        default: throw fail("format version \(major) is not supported")
        }
        guard headerStart + headerLength <= bytes.count else { throw fail("truncated header") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        guard let dtype = field("descr", in: header).map({ $0.trimmingCharacters(in: CharacterSet(charactersIn: "'\" ")) }) else {
            throw fail("header has no 'descr'")
        }
        if field("fortran_order", in: header)?.contains("True") == true {
            throw fail("Fortran-ordered arrays are not supported; save with np.ascontiguousarray")
        }
        guard let shapeText = header.range(of: "'shape':").map({ header[$0.upperBound...] }),
              let open = shapeText.firstIndex(of: "("), let close = shapeText.firstIndex(of: ")") else {
            throw fail("header has no 'shape'")
        }
        let shape = try shapeText[shapeText.index(after: open)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { (text: String) throws(DataError) -> Int in
                guard let value = Int(text), value >= 0 else { throw fail("invalid shape entry '\(text)'") }
                return value
            }
        let count = shape.reduce(1, *)
        let body = Array(bytes[(headerStart + headerLength)...])
        guard dtype.count >= 3, let size = Int(dtype.dropFirst(2)) else { throw fail("unsupported dtype '\(dtype)'") }
        let order = dtype.first!, kind = dtype[dtype.index(after: dtype.startIndex)]
        guard order == "<" || order == "|" || (order == "=" ) else {
            throw fail("big-endian dtype '\(dtype)' is not supported")
        }
        guard body.count >= count * size else {
            throw fail("holds \(body.count) data bytes but shape \(shape) of \(dtype) needs \(count * size)")
        }
        func load<T: FixedWidthInteger>(_: T.Type) -> [T] {
            body.withUnsafeBytes { raw in (0..<count).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * size, as: T.self)) } }
        }
        var array = NPYArray(shape: shape, dtype: dtype, floats: [], integers: nil)
        switch (kind, size) {
        case ("f", 4): array.floats = load(UInt32.self).map { Float(bitPattern: $0) }
        case ("f", 8): array.floats = load(UInt64.self).map { Float(Double(bitPattern: $0)) }
        case ("f", 2): array.floats = load(UInt16.self).map { Float(Float16Bits($0)) }
        case ("i", 1): array.integers = load(Int8.self).map { Int($0) }
        case ("i", 2): array.integers = load(Int16.self).map { Int($0) }
        case ("i", 4): array.integers = load(Int32.self).map { Int($0) }
        case ("i", 8): array.integers = load(Int64.self).map { Int($0) }
        case ("u", 1), ("b", 1): array.integers = load(UInt8.self).map { Int($0) }
        case ("u", 2): array.integers = load(UInt16.self).map { Int($0) }
        case ("u", 4): array.integers = load(UInt32.self).map { Int($0) }
        case ("u", 8): array.integers = load(UInt64.self).map { Int(truncatingIfNeeded: $0) }
        default: throw fail("unsupported dtype '\(dtype)'")
        }
        if let integers = array.integers { array.floats = integers.map { Float($0) } }
        return array
    }

    private static func field(_ key: String, in header: String) -> String? {
        guard let range = header.range(of: "'\(key)':") else { return nil }
        let rest = header[range.upperBound...]
        let end = rest.firstIndex(of: ",") ?? rest.endIndex
        return String(rest[..<end])
    }

    /// Writes a float32 tensor as a version 1.0 `.npy` file (`<f4`, C order), atomically: the
    /// data goes to a temporary file in the same folder that is renamed over `path`.
    public static func write(_ tensor: Tensor, to path: String) throws(DataError) {
        let shapeText = tensor.shape.count == 1 ? "(\(tensor.shape[0]),)" : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        let length = header.utf8.count
        bytes += [UInt8(length & 0xff), UInt8(length >> 8)]
        bytes += Array(header.utf8)
        tensor.withUnsafeBufferPointer { values in
            bytes += values.flatMap { value -> [UInt8] in
                let bits = value.bitPattern.littleEndian
                return [UInt8(bits & 0xff), UInt8((bits >> 8) & 0xff), UInt8((bits >> 16) & 0xff), UInt8(bits >> 24)]
            }
        }
        try writeAtomically(bytes, to: path)
    }
}

/// Writes bytes to `path` through a temporary file in the same folder and a rename, so a reader
/// never sees a half-written file and a failure leaves any old file intact.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws(DataError) {
    let url = URL(fileURLWithPath: path)
    let temporary = url.deletingLastPathComponent()
        .appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
    do {
        try Data(bytes).write(to: temporary)
    } catch {
        try? FileManager.default.removeItem(at: temporary)
        throw .unwritableFile(path: path, reason: error.localizedDescription)
    }
    guard rename(temporary.path, url.path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: temporary)
        throw .unwritableFile(path: path, reason: reason)
    }
}

/// IEEE half-precision bits to float.
private func Float16Bits(_ bits: UInt16) -> Float {
    let sign: Float = bits & 0x8000 != 0 ? -1 : 1
    let exponent = Int(bits >> 10) & 0x1f
    let mantissa = Float(bits & 0x3ff)
    if exponent == 0 { return sign * mantissa * 0x1p-24 }
    if exponent == 0x1f { return mantissa == 0 ? sign * .infinity : .nan }
    return sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
}
