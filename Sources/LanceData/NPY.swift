import Foundation
import LanceCore

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
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            throw .unreadableFile(path: path, reason: FileManager.default.fileExists(atPath: path) ? error.localizedDescription : "no such file")
        }
        let (array, dtype) = try parse(data, path: path)
        var result = NPYArray(shape: array.shape, dtype: dtype, floats: [], integers: nil)
        if array.elementType.isInteger {
            let integers = array.integers(0..<array.elementCount)
            result.integers = integers
            result.floats = integers.map { Float($0) }
        } else {
            result.floats = array.floats(0..<array.elementCount)
        }
        return result
    }

    /// The array in `.npy` bytes, kept as bytes, and its NumPy type string.
    ///
    /// - Parameter path: the file (and entry) named in errors.
    static func parse(_ bytes: Data, path: String) throws(DataError) -> (array: NumericArray, dtype: String) {
        func fail(_ reason: String) -> DataError { .invalidNPY(path: path, reason: reason) }
        let start = bytes.startIndex
        func byte(_ index: Int) -> UInt8 { bytes[start + index] }
        guard bytes.count >= 10, byte(0) == 0x93, (1...5).map(byte) == Array("NUMPY".utf8) else {
            throw fail("missing the \\x93NUMPY magic")
        }
        let major = byte(6)
        let headerLength: Int, headerStart: Int
        switch major {
        case 1: headerLength = Int(byte(8)) | Int(byte(9)) << 8; headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = (8...11).reduce(0) { $0 | Int(byte($1)) << (8 * ($1 - 8)) }
            headerStart = 12
        default: throw fail("format version \(major) is not supported")
        }
        guard headerStart + headerLength <= bytes.count else { throw fail("truncated header") }
        let header = String(decoding: bytes[(start + headerStart)..<(start + headerStart + headerLength)], as: UTF8.self)
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
        guard dtype.count >= 3, let size = Int(dtype.dropFirst(2)) else { throw fail("unsupported dtype '\(dtype)'") }
        let order = dtype.first!, kind = dtype[dtype.index(after: dtype.startIndex)]
        guard order == "<" || order == "|" || order == "=" else {
            throw fail("big-endian dtype '\(dtype)' is not supported")
        }
        let elementType: ElementType
        switch (kind, size) {
        case ("f", 2), ("f", 4), ("f", 8): elementType = .float(bytes: size)
        case ("i", 1), ("i", 2), ("i", 4), ("i", 8): elementType = .signed(bytes: size)
        case ("u", 1), ("u", 2), ("u", 4), ("u", 8): elementType = .unsigned(bytes: size)
        case ("b", 1): elementType = .bool
        default: throw fail("unsupported dtype '\(dtype)'")
        }
        let (count, overflow) = shape.reduce((1, false)) { partial, extent in
            let product = partial.0.multipliedReportingOverflow(by: extent)
            return (product.partialValue, partial.1 || product.overflow)
        }
        let body = bytes.count - headerStart - headerLength
        guard !overflow, count <= body / size else {
            throw fail("holds \(body) data bytes but shape \(shape) of \(dtype) needs \(overflow ? "more" : String(count * size))")
        }
        return (NumericArray(storage: bytes, offset: headerStart + headerLength, shape: shape, elementType: elementType,
                             bigEndian: false), dtype)
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
