/// Renders rows as a text table with a header, columns left- or right-aligned.
func renderTable(header: [String], rows: [[String]], rightAligned: Set<Int> = []) -> String {
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    func line(_ cells: [String]) -> String {
        var text = ""
        for (column, cell) in cells.enumerated() {
            let padding = String(repeating: " ", count: widths[column] - cell.count)
            text += rightAligned.contains(column) ? padding + cell : cell + padding
            if column < cells.count - 1 { text += "  " }
        }
        while text.last == " " { text.removeLast() }
        return text
    }
    return ([line(header), line(widths.map { String(repeating: "-", count: $0) })] + rows.map(line)).joined(separator: "\n")
}

/// `1,234,567`.
func grouped(_ value: Int) -> String {
    let digits = String(value.magnitude)
    var result = ""
    for (index, digit) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { result.append(",") }
        result.append(digit)
    }
    return (value < 0 ? "-" : "") + result
}

/// `300.8 M`, `1.2 G`.
func abbreviated(_ value: Int) -> String {
    let magnitude = Double(value)
    if magnitude >= 1e9 { return String(format1: magnitude / 1e9) + " G" }
    if magnitude >= 1e6 { return String(format1: magnitude / 1e6) + " M" }
    if magnitude >= 1e3 { return String(format1: magnitude / 1e3) + " k" }
    return "\(value)"
}

/// `[1, 3, 224, 224]`.
func shapeText(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}

extension String {
    /// A number with one decimal.
    init(format1 value: Double) {
        let scaled = (value * 10).rounded() / 10
        self = scaled == scaled.rounded() ? "\(Int(scaled)).0" : "\(scaled)"
    }

    /// A number with `digits` decimals.
    init(_ value: Double, decimals digits: Int) {
        var factor = 1.0
        for _ in 0..<digits { factor *= 10 }
        let rounded = (value * factor).rounded() / factor
        var text = "\(rounded)"
        if let dot = text.firstIndex(of: ".") {
            let decimals = text.distance(from: dot, to: text.endIndex) - 1
            if decimals < digits { text += String(repeating: "0", count: digits - decimals) }
        } else if digits > 0 {
            text += "." + String(repeating: "0", count: digits)
        }
        self = text
    }
}
