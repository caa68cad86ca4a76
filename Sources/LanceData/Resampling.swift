import Foundation

/// Bilinear resampling with antialiasing, computed the way Pillow's `Image.resize(…, BILINEAR)`
/// does (`libImaging/Resample.c`):
///
/// - separable: a horizontal pass, then a vertical pass;
/// - each output pixel `i` is centred at input coordinate `c = (i + 0.5) · scale` with
///   `scale = inSize / outSize`, and is the normalised sum of the inputs `j` within
///   `support = max(scale, 1)` of it, weighted by the triangle `max(0, 1 − |j + 0.5 − c| / max(scale, 1))`.
///   When enlarging this is ordinary bilinear interpolation (half-pixel centres, edge clamping);
///   when shrinking the triangle widens so every input pixel contributes (antialiasing), like
///   Pillow and torchvision's `antialias=True`;
/// - 8-bit images use Pillow's 22-bit fixed-point weights and round to 8 bits after each pass,
///   so they match Pillow's output exactly; float images are computed in double precision.
///
/// Only the output rows and columns asked for are computed, so resize-then-centre-crop costs
/// the crop, with the same values as resizing everything and cropping.
enum Resampling {
    /// The weights of one axis: for output index `i`, input indices `first[i] ..< first[i] + count[i]`
    /// with weights `weights[i * taps ..< i * taps + count[i]]`.
    struct Axis {
        var first: [Int]
        var count: [Int]
        var taps: Int
        var weights: [Double]
        var fixedWeights: [Int32]

        static let precisionBits = 32 - 8 - 2

        init(inputSize: Int, outputSize: Int) {
            let scale = Double(inputSize) / Double(outputSize)
            let filterScale = max(scale, 1)
            let support = 1.0 * filterScale
            taps = Int(support.rounded(.up)) * 2 + 1
            first = [Int](repeating: 0, count: outputSize)
            count = [Int](repeating: 0, count: outputSize)
            weights = [Double](repeating: 0, count: outputSize * taps)
            for output in 0..<outputSize {
                let center = (Double(output) + 0.5) * scale
                let low = max(Int(center - support + 0.5), 0)
                let high = min(Int(center + support + 0.5), inputSize)
                var total = 0.0
                for input in low..<max(high, low) {
                    let distance = abs((Double(input) - center + 0.5) / filterScale)
                    let weight = distance < 1 ? 1 - distance : 0
                    weights[output * taps + input - low] = weight
                    total += weight
                }
                if total != 0 {
                    for tap in 0..<(high - low) { weights[output * taps + tap] /= total }
                }
                first[output] = low
                count[output] = max(high - low, 0)
            }
            let unit = Double(1 << Axis.precisionBits)
            fixedWeights = weights.map { weight in
                Int32(weight < 0 ? (-0.5 + weight * unit).rounded(.towardZero) : (0.5 + weight * unit).rounded(.towardZero))
            }
        }
    }

    /// Resizes `image` to `outputHeight × outputWidth` and returns the crop rows `rows`, columns
    /// `columns` of the result (HWC, same channels and pixel kind).
    static func resize(_ image: RawImage, toHeight outputHeight: Int, width outputWidth: Int,
                       rows: Range<Int>, columns: Range<Int>) -> RawImage {
        let horizontal = Axis(inputSize: image.width, outputSize: outputWidth)
        let vertical = Axis(inputSize: image.height, outputSize: outputHeight)
        // Input rows the vertical pass reads for the requested output rows.
        let firstRow = rows.isEmpty ? 0 : vertical.first[rows.lowerBound]
        let lastRow = rows.isEmpty ? 0 : rows.map { vertical.first[$0] + vertical.count[$0] }.max()!
        let channels = image.channels
        switch image.pixels {
        case .bytes(let input):
            let widened = horizontalPass8(input, width: image.width, channels: channels, rows: firstRow..<lastRow,
                                          axis: horizontal, columns: columns)
            let result = verticalPass8(widened, width: columns.count, channels: channels, rowOffset: firstRow,
                                       axis: vertical, rows: rows)
            return RawImage(height: rows.count, width: columns.count, channels: channels, pixels: .bytes(result))
        case .floats(let input):
            let widened = horizontalPassFloat(input, width: image.width, channels: channels, rows: firstRow..<lastRow,
                                              axis: horizontal, columns: columns)
            let result = verticalPassFloat(widened, width: columns.count, channels: channels, rowOffset: firstRow,
                                           axis: vertical, rows: rows)
            return RawImage(height: rows.count, width: columns.count, channels: channels, pixels: .floats(result))
        }
    }

    @inline(__always)
    private static func clip8(_ sum: Int32) -> UInt8 {
        if sum >= Int32(1) << (Axis.precisionBits + 8) { return 255 }
        if sum <= 0 { return 0 }
        return UInt8(truncatingIfNeeded: sum >> Axis.precisionBits)
    }

    private static func horizontalPass8(_ input: [UInt8], width: Int, channels: Int, rows: Range<Int>,
                                        axis: Axis, columns: Range<Int>) -> [UInt8] {
        let outputWidth = columns.count
        var output = [UInt8](repeating: 0, count: rows.count * outputWidth * channels)
        let half = Int32(1) << (Axis.precisionBits - 1)
        input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                axis.fixedWeights.withUnsafeBufferPointer { weights in
                    for (rowIndex, row) in rows.enumerated() {
                        let rowBase = row * width * channels
                        for (columnIndex, column) in columns.enumerated() {
                            let first = axis.first[column], taps = axis.count[column]
                            let weightBase = column * axis.taps
                            for channel in 0..<channels {
                                var sum = half
                                var position = rowBase + first * channels + channel
                                for tap in 0..<taps {
                                    sum &+= Int32(source[position]) &* weights[weightBase + tap]
                                    position += channels
                                }
                                target[(rowIndex * outputWidth + columnIndex) * channels + channel] = clip8(sum)
                            }
                        }
                    }
                }
            }
        }
        return output
    }

    private static func verticalPass8(_ input: [UInt8], width: Int, channels: Int, rowOffset: Int,
                                      axis: Axis, rows: Range<Int>) -> [UInt8] {
        let rowLength = width * channels
        var output = [UInt8](repeating: 0, count: rows.count * rowLength)
        let half = Int32(1) << (Axis.precisionBits - 1)
        input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                axis.fixedWeights.withUnsafeBufferPointer { weights in
                    for (rowIndex, row) in rows.enumerated() {
                        let first = axis.first[row] - rowOffset, taps = axis.count[row]
                        let weightBase = row * axis.taps
                        for element in 0..<rowLength {
                            var sum = half
                            var position = first * rowLength + element
                            for tap in 0..<taps {
                                sum &+= Int32(source[position]) &* weights[weightBase + tap]
                                position += rowLength
                            }
                            target[rowIndex * rowLength + element] = clip8(sum)
                        }
                    }
                }
            }
        }
        return output
    }

    private static func horizontalPassFloat(_ input: [Float], width: Int, channels: Int, rows: Range<Int>,
                                            axis: Axis, columns: Range<Int>) -> [Float] {
        let outputWidth = columns.count
        var output = [Float](repeating: 0, count: rows.count * outputWidth * channels)
        input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                axis.weights.withUnsafeBufferPointer { weights in
                    for (rowIndex, row) in rows.enumerated() {
                        let rowBase = row * width * channels
                        for (columnIndex, column) in columns.enumerated() {
                            let first = axis.first[column], taps = axis.count[column]
                            let weightBase = column * axis.taps
                            for channel in 0..<channels {
                                var sum = 0.0
                                var position = rowBase + first * channels + channel
                                for tap in 0..<taps {
                                    sum += Double(source[position]) * weights[weightBase + tap]
                                    position += channels
                                }
                                target[(rowIndex * outputWidth + columnIndex) * channels + channel] = Float(sum)
                            }
                        }
                    }
                }
            }
        }
        return output
    }

    private static func verticalPassFloat(_ input: [Float], width: Int, channels: Int, rowOffset: Int,
                                          axis: Axis, rows: Range<Int>) -> [Float] {
        let rowLength = width * channels
        var output = [Float](repeating: 0, count: rows.count * rowLength)
        input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                axis.weights.withUnsafeBufferPointer { weights in
                    for (rowIndex, row) in rows.enumerated() {
                        let first = axis.first[row] - rowOffset, taps = axis.count[row]
                        let weightBase = row * axis.taps
                        for element in 0..<rowLength {
                            var sum = 0.0
                            var position = first * rowLength + element
                            for tap in 0..<taps {
                                sum += Double(source[position]) * weights[weightBase + tap]
                                position += rowLength
                            }
                            target[rowIndex * rowLength + element] = Float(sum)
                        }
                    }
                }
            }
        }
        return output
    }
}
