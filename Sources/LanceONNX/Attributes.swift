import CONNXProto

/// A node attribute decoded from `AttributeProto`.
enum AttributeValue {
    case float(Float)
    case int(Int)
    case string(String)
    case tensor(ONNXTensor)
    case floats([Float])
    case ints([Int])
    case strings([String])
    case unsupported(String)
}

/// The attributes of one node, with typed accessors that fail naming the node.
struct Attributes {
    let values: [String: AttributeValue]
    let fail: (String) -> ONNXError

    init(_ node: Onnx__NodeProto, decoder: TensorDecoder, fail: @escaping (String) -> ONNXError) throws(ONNXError) {
        self.fail = fail
        var values: [String: AttributeValue] = [:]
        for index in 0..<node.n_attribute {
            guard let attribute = node.attribute[index]?.pointee, let rawName = attribute.name else { continue }
            let name = String(cString: rawName)
            let type = attribute.has_type != 0 ? attribute.type : ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED
            switch type {
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: values[name] = .float(attribute.f)
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: values[name] = .int(Int(attribute.i))
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
                values[name] = .string(Self.string(attribute.s))
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR:
                guard let tensor = attribute.t else { throw fail("attribute '\(name)' has no tensor") }
                values[name] = .tensor(try decoder.decode(tensor, fallbackName: name))
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
                values[name] = .floats(Array(UnsafeBufferPointer(start: attribute.floats, count: attribute.n_floats)))
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
                values[name] = .ints(UnsafeBufferPointer(start: attribute.ints, count: attribute.n_ints).map { Int($0) })
            case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
                values[name] = .strings(UnsafeBufferPointer(start: attribute.strings, count: attribute.n_strings).map(Self.string))
            default:
                values[name] = .unsupported("attribute '\(name)' has a type LANCE does not read (\(type.rawValue))")
            }
        }
        self.values = values
    }

    static func string(_ data: ProtobufCBinaryData) -> String {
        guard data.len > 0, let bytes = data.data else { return "" }
        return String(decoding: UnsafeBufferPointer(start: bytes, count: data.len), as: UTF8.self)
    }

    func has(_ name: String) -> Bool { values[name] != nil }

    func int(_ name: String, default fallback: Int) throws(ONNXError) -> Int {
        guard let value = values[name] else { return fallback }
        guard case .int(let result) = value else { throw fail("attribute '\(name)' must be an integer") }
        return result
    }

    func float(_ name: String, default fallback: Float) throws(ONNXError) -> Float {
        guard let value = values[name] else { return fallback }
        switch value {
        case .float(let result): return result
        case .int(let result): return Float(result)
        default: throw fail("attribute '\(name)' must be a float")
        }
    }

    func string(_ name: String, default fallback: String) throws(ONNXError) -> String {
        guard let value = values[name] else { return fallback }
        guard case .string(let result) = value else { throw fail("attribute '\(name)' must be a string") }
        return result
    }

    func ints(_ name: String) throws(ONNXError) -> [Int]? {
        guard let value = values[name] else { return nil }
        switch value {
        case .ints(let result): return result
        case .int(let result): return [result]
        default: throw fail("attribute '\(name)' must be a list of integers")
        }
    }

    func floats(_ name: String) throws(ONNXError) -> [Float]? {
        guard let value = values[name] else { return nil }
        switch value {
        case .floats(let result): return result
        case .float(let result): return [result]
        default: throw fail("attribute '\(name)' must be a list of floats")
        }
    }
}
