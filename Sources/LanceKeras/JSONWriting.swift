/// A JSON document to write, with object keys kept in the order given (Keras's own files list
/// `class_name` before `config`, and readers diff them more easily that way).
indirect enum OrderedJSON {
    case null
    case bool(Bool)
    case integer(Int)
    /// Written with the shortest digits that read back as the same `Float`.
    case number(Float)
    case string(String)
    case array([OrderedJSON])
    case object([(String, OrderedJSON)])

    /// `[null, 32, 32, 3]`: a Keras shape with an unknown batch axis.
    static func batchShape(_ shape: [Int]) -> OrderedJSON {
        .array([.null] + shape.map { .integer($0) })
    }

    static func integers(_ values: [Int]) -> OrderedJSON { .array(values.map { .integer($0) }) }

    /// The serialized text (compact, `", "` and `": "` separators as Python's `json.dumps`).
    var text: String {
        var output = ""
        write(to: &output)
        return output
    }

    private func write(to output: inout String) {
        switch self {
        case .null: output += "null"
        case .bool(let value): output += value ? "true" : "false"
        case .integer(let value): output += String(value)
        case .number(let value):
            // Callers check finiteness; JSON has no spelling for infinities or NaN.
            output += value.isFinite ? "\(value)" : "null"
        case .string(let value): Self.quote(value, into: &output)
        case .array(let values):
            output += "["
            for (index, value) in values.enumerated() {
                if index > 0 { output += ", " }
                value.write(to: &output)
            }
            output += "]"
        case .object(let members):
            output += "{"
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { output += ", " }
                Self.quote(key, into: &output)
                output += ": "
                value.write(to: &output)
            }
            output += "}"
        }
    }

    private static func quote(_ text: String, into output: inout String) {
        output += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }
}
