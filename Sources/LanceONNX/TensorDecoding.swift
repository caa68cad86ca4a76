import CONNXProto
import Foundation
import LanceCore

/// A tensor read from an ONNX file: float data, integer data, or a type LANCE does not compute with.
public struct ONNXTensor: Sendable, Equatable {
    /// The tensor's name in the file.
    public var name: String
    /// Its extents.
    public var shape: [Int]
    /// The ONNX element type name (`FLOAT`, `INT64`, ...).
    public var elementType: String
    /// Values of a floating-point tensor (FLOAT, FLOAT16, DOUBLE, BFLOAT16), as float32.
    public var floats: [Float]?
    /// Values of an integer or boolean tensor.
    public var integers: [Int]?

    /// The float values as a `Tensor`, or `nil` for integer and unsupported types.
    public var tensor: Tensor? {
        floats.map { Tensor(shape: shape, scalars: $0) }
    }
}

enum ElementType: Int32 {
    case float = 1, uint8 = 2, int8 = 3, uint16 = 4, int16 = 5, int32 = 6, int64 = 7, string = 8, bool = 9
    case float16 = 10, double = 11, uint32 = 12, uint64 = 13, complex64 = 14, complex128 = 15, bfloat16 = 16

    static func name(of raw: Int32) -> String {
        guard let type = ElementType(rawValue: raw) else { return "type \(raw)" }
        return "\(type)".uppercased()
    }

    /// Bytes per element in `raw_data`, or nil for variable-size types.
    var rawSize: Int? {
        switch self {
        case .float, .int32, .uint32: 4
        case .uint8, .int8, .bool: 1
        case .uint16, .int16, .float16, .bfloat16: 2
        case .int64, .uint64, .double, .complex64: 8
        case .complex128: 16
        case .string: nil
        }
    }
}

/// Converts IEEE half-precision bits to a float.
func floatFromHalf(_ bits: UInt16) -> Float {
    let sign = UInt32(bits & 0x8000) << 16
    let exponent = Int(bits >> 10) & 0x1f
    let mantissa = UInt32(bits & 0x3ff)
    if exponent == 0 {
        // Zero or subnormal: mantissa · 2^-24.
        let value = Float(mantissa) * 0x1p-24
        return sign == 0 ? value : -value
    }
    if exponent == 0x1f {
        return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
    }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
}

/// Decodes `TensorProto` messages, reading external data relative to the model's folder.
struct TensorDecoder {
    /// The model file (named in errors).
    let path: String
    /// The folder external-data locations are relative to.
    let directory: URL

    func error(_ tensor: String, _ reason: String) -> ONNXError {
        .invalidTensor(path: path, tensor: tensor, reason: reason)
    }

    func decode(_ proto: UnsafePointer<Onnx__TensorProto>, fallbackName: String = "") throws(ONNXError) -> ONNXTensor {
        let message = proto.pointee
        let name = message.name.map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? fallbackName
        var shape: [Int] = []
        for index in 0..<message.n_dims {
            let extent = message.dims[index]
            guard extent >= 0 && extent < (1 << 40) else { throw error(name, "invalid extent \(extent) in its dims") }
            shape.append(Int(extent))
        }
        var count = 1
        for extent in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: extent)
            guard !overflow && product < (1 << 40) else { throw error(name, "dims \(shape) are too large") }
            count = product
        }
        let rawType = message.has_data_type != 0 ? message.data_type : 0
        guard let type = ElementType(rawValue: rawType) else {
            throw error(name, "has unknown or missing data_type \(rawType)")
        }
        var tensor = ONNXTensor(name: name, shape: shape, elementType: ElementType.name(of: rawType))
        if message.n_string_data > 0 || type == .string {
            return tensor  // strings: kept as an unusable type
        }
        let raw: [UInt8]?
        if message.has_data_location != 0 && message.data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL {
            raw = try readExternal(message, name: name, type: type, count: count)
        } else if message.has_raw_data != 0 || message.raw_data.len > 0 {
            raw = message.raw_data.len == 0 ? [] : Array(UnsafeBufferPointer(start: message.raw_data.data, count: message.raw_data.len))
        } else {
            raw = nil
        }
        if let raw {
            guard let size = type.rawSize, raw.count == count * size else {
                throw error(name, "raw_data holds \(raw.count) bytes but \(shape) of \(tensor.elementType) needs \(count * (type.rawSize ?? 0))")
            }
            try decodeRaw(raw, type: type, into: &tensor)
        } else {
            try decodeTyped(message, type: type, count: count, into: &tensor)
        }
        return tensor
    }

    private func decodeRaw(_ raw: [UInt8], type: ElementType, into tensor: inout ONNXTensor) throws(ONNXError) {
        func load<T: FixedWidthInteger>(_: T.Type) -> [T] {
            raw.withUnsafeBytes { bytes in
                (0..<(raw.count / MemoryLayout<T>.size)).map {
                    T(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self))
                }
            }
        }
        switch type {
        case .float:
            tensor.floats = [Float](unsafeUninitializedCapacity: raw.count / 4) { buffer, initialized in
                raw.withUnsafeBytes { bytes in
                    _ = memcpy(buffer.baseAddress!, bytes.baseAddress!, raw.count)
                }
                initialized = raw.count / 4
            }
            #if _endian(big)
            tensor.floats = tensor.floats?.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) }
            #endif
        case .double: tensor.floats = load(UInt64.self).map { Float(Double(bitPattern: $0)) }
        case .float16: tensor.floats = load(UInt16.self).map(floatFromHalf)
        case .bfloat16: tensor.floats = load(UInt16.self).map { Float(bitPattern: UInt32($0) << 16) }
        case .int64: tensor.integers = load(Int64.self).map { Int($0) }
        case .int32: tensor.integers = load(Int32.self).map { Int($0) }
        case .int16: tensor.integers = load(Int16.self).map { Int($0) }
        case .int8: tensor.integers = load(Int8.self).map { Int($0) }
        case .uint8, .bool: tensor.integers = raw.map { Int($0) }
        case .uint16: tensor.integers = load(UInt16.self).map { Int($0) }
        case .uint32: tensor.integers = load(UInt32.self).map { Int($0) }
        case .uint64: tensor.integers = load(UInt64.self).map { Int(truncatingIfNeeded: $0) }
        case .string, .complex64, .complex128: break
        }
    }

    private func decodeTyped(_ message: Onnx__TensorProto, type: ElementType, count: Int, into tensor: inout ONNXTensor) throws(ONNXError) {
        func check(_ available: Int, _ field: String) throws(ONNXError) {
            guard available == count else {
                throw error(tensor.name, "\(field) holds \(available) values but \(tensor.shape) needs \(count)")
            }
        }
        switch type {
        case .float:
            try check(message.n_float_data, "float_data")
            tensor.floats = Array(UnsafeBufferPointer(start: message.float_data, count: count))
        case .double:
            try check(message.n_double_data, "double_data")
            tensor.floats = UnsafeBufferPointer(start: message.double_data, count: count).map { Float($0) }
        case .float16, .bfloat16:
            try check(message.n_int32_data, "int32_data")
            let bits = UnsafeBufferPointer(start: message.int32_data, count: count).map { UInt16(truncatingIfNeeded: $0) }
            tensor.floats = type == .float16 ? bits.map(floatFromHalf) : bits.map { Float(bitPattern: UInt32($0) << 16) }
        case .int64:
            try check(message.n_int64_data, "int64_data")
            tensor.integers = UnsafeBufferPointer(start: message.int64_data, count: count).map { Int($0) }
        case .int32, .int16, .int8, .uint16, .uint8, .bool:
            try check(message.n_int32_data, "int32_data")
            tensor.integers = UnsafeBufferPointer(start: message.int32_data, count: count).map { Int($0) }
        case .uint32, .uint64:
            try check(message.n_uint64_data, "uint64_data")
            tensor.integers = UnsafeBufferPointer(start: message.uint64_data, count: count).map { Int(truncatingIfNeeded: $0) }
        case .string, .complex64, .complex128:
            break
        }
    }

    private func readExternal(_ message: Onnx__TensorProto, name: String, type: ElementType, count: Int) throws(ONNXError) -> [UInt8] {
        var entries: [String: String] = [:]
        for index in 0..<message.n_external_data {
            guard let entry = message.external_data[index]?.pointee, let key = entry.key else { continue }
            entries[String(cString: key)] = entry.value.map { String(cString: $0) } ?? ""
        }
        guard let location = entries["location"], !location.isEmpty else {
            throw error(name, "is stored externally but has no 'location'")
        }
        guard !location.hasPrefix("/"), !location.split(separator: "/").contains("..") else {
            throw error(name, "external data location '\(location)' must be a path inside the model's folder")
        }
        let offset = Int(entries["offset"] ?? "0") ?? -1
        let expected = count * (type.rawSize ?? 0)
        let length = entries["length"].flatMap { Int($0) } ?? expected
        guard offset >= 0, length >= 0 else { throw error(name, "invalid external data offset or length") }
        let file = directory.appendingPathComponent(location)
        guard let handle = try? FileHandle(forReadingFrom: file) else {
            throw error(name, "external data file '\(location)' cannot be opened next to the model")
        }
        defer { try? handle.close() }
        do {
            try handle.seek(toOffset: UInt64(offset))
            let data = try handle.read(upToCount: length) ?? Data()
            guard data.count == length else {
                throw error(name, "external data file '\(location)' ends before offset \(offset) + length \(length)")
            }
            return [UInt8](data)
        } catch let failure as ONNXError {
            throw failure
        } catch {
            throw self.error(name, "reading external data file '\(location)' failed: \(error.localizedDescription)")
        }
    }
}

/// Reads one serialized `TensorProto` file (as the ONNX conformance suite stores test inputs and
/// outputs in `input_0.pb`, `output_0.pb`).
///
/// - Throws: `ONNXError` naming the file when it cannot be read or decoded.
public func readONNXTensorFile(at path: String) throws(ONNXError) -> ONNXTensor {
    let file = try mappedFile(path)
    let decoder = TensorDecoder(path: path, directory: URL(fileURLWithPath: path).deletingLastPathComponent())
    let proto: UnsafeMutablePointer<Onnx__TensorProto>? = file.withUnsafeBytes {
        onnx__tensor_proto__unpack(nil, $0.count, $0.bindMemory(to: UInt8.self).baseAddress)
    }
    guard let proto else { throw .notAnONNXModel(path: path) }
    defer { onnx__tensor_proto__free_unpacked(proto, nil) }
    return try decoder.decode(proto, fallbackName: URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent)
}

/// A file's bytes, memory mapped where the file system allows (never copied into an array).
func mappedFile(_ path: String) throws(ONNXError) -> Data {
    guard FileManager.default.fileExists(atPath: path) else {
        throw .unreadableFile(path: path, reason: "no such file")
    }
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
    } catch {
        throw .unreadableFile(path: path, reason: error.localizedDescription)
    }
}
