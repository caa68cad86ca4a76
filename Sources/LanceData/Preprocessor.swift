import Foundation
import LanceCore
import LanceModel

/// Applies a `Preprocessing` description to one raw sample, producing a `[C, H, W]` float32 tensor.
///
/// The steps, in order:
/// 1. **Resize** (only when `size` is set):
///    - `none`: the sample must already be `size`;
///    - `direct`: bilinear (antialiased) resize to `size`, ignoring the aspect ratio;
///    - `shortSideThenCenterCrop`: bilinear (antialiased) resize so the short side is
///      `resizeShortSide ?? min(size)` and the long side keeps the aspect ratio
///      (`round(long · short / shortSide)`), then the centre `size` crop at
///      `top = (h − H) / 2`, `left = (w − W) / 2` (integer division).
///    See `Resampling` for the filter (Pillow's `BILINEAR`); 8-bit samples are rounded to 8 bits
///    after each resize pass, as Pillow does.
/// 2. **Channels**: a 1-channel sample becomes 3 channels by repeating it when `channels` is 3;
///    otherwise the sample's channels must equal `channels`.
/// 3. **Values**: `x = (pixel · scale − mean[c]) / standardDeviation[c]`, computed in double
///    precision and stored as float32 (`mean`/`standardDeviation` hold one value or one per channel).
/// 4. **Layout**: HWC → CHW.
public struct Preprocessor: Sendable {
    /// The description applied.
    public let preprocessing: Preprocessing

    /// Checks `preprocessing` and prepares to apply it.
    ///
    /// - Throws: `DataError.invalidPreprocessing` when the description cannot be applied: a size
    ///   that is not `[height, width]` of positive numbers, a resize rule without a size, a short
    ///   side smaller than the crop, mean/standard-deviation counts other than 1 or `channels`, a
    ///   zero standard deviation, or `channels` below 1.
    public init(_ preprocessing: Preprocessing) throws(DataError) {
        if let size = preprocessing.size {
            guard size.count == 2, size.allSatisfy({ $0 > 0 }) else {
                throw .invalidPreprocessing(reason: "size must be [height, width] of positive numbers, got \(size)")
            }
            if preprocessing.resize == .shortSideThenCenterCrop, let shortSide = preprocessing.resizeShortSide,
               shortSide < size.min()! {
                throw .invalidPreprocessing(reason: "the short side \(shortSide) is smaller than the \(size[0])×\(size[1]) crop; use a short side of at least \(size.min()!)")
            }
        } else if preprocessing.resize != .none {
            throw .invalidPreprocessing(reason: "the resize rule '\(preprocessing.resize.rawValue)' needs a size [height, width]")
        }
        guard preprocessing.channels >= 1 else {
            throw .invalidPreprocessing(reason: "channels must be at least 1, got \(preprocessing.channels)")
        }
        for (name, values) in [("mean", preprocessing.mean), ("standard deviation", preprocessing.standardDeviation)] {
            guard values.count == 1 || values.count == preprocessing.channels else {
                throw .invalidPreprocessing(reason: "\(name) has \(values.count) values; give 1 or one per channel (\(preprocessing.channels))")
            }
            guard values.allSatisfy(\.isFinite) else {
                throw .invalidPreprocessing(reason: "\(name) \(values) holds a value that is not a finite number")
            }
        }
        guard preprocessing.standardDeviation.allSatisfy({ $0 != 0 }) else {
            throw .invalidPreprocessing(reason: "a standard deviation of 0 would divide by zero")
        }
        guard preprocessing.scale.isFinite else {
            throw .invalidPreprocessing(reason: "scale \(preprocessing.scale) is not a finite number")
        }
        self.preprocessing = preprocessing
    }

    /// The `[C, H, W]` shape samples of `height × width` come out with (the size after resizing).
    public func outputShape(height: Int, width: Int) -> [Int] {
        let size = preprocessing.size ?? [height, width]
        return [preprocessing.channels, size[0], size[1]]
    }

    /// Preprocesses one sample.
    ///
    /// - Parameters:
    ///   - image: the sample as stored, HWC.
    ///   - path: the file (or the file and entry), for errors.
    ///   - index: the sample's index in its source, for errors.
    /// - Returns: a `[channels, height, width]` tensor.
    /// - Throws: `DataError.sampleSizeMismatch` (resize rule `none` and another size, or an image
    ///   too small for the crop), `DataError.channelMismatch`.
    public func apply(to image: RawImage, path: String, index: Int) throws(DataError) -> Tensor {
        let resized = try resize(image, path: path, index: index)
        let outputChannels = preprocessing.channels
        guard resized.channels == outputChannels || (resized.channels == 1 && outputChannels == 3) else {
            throw .channelMismatch(path: path, index: index, channels: resized.channels, expected: outputChannels)
        }
        let height = resized.height, width = resized.width, sourceChannels = resized.channels
        let plane = height * width
        let scale = Double(preprocessing.scale)
        let means = (0..<outputChannels).map { Double(preprocessing.mean.count == 1 ? preprocessing.mean[0] : preprocessing.mean[$0]) }
        let deviations = (0..<outputChannels).map {
            Double(preprocessing.standardDeviation.count == 1 ? preprocessing.standardDeviation[0] : preprocessing.standardDeviation[$0])
        }
        func fill<T>(_ values: [T], _ convert: (T) -> Double) -> Tensor {
            Tensor(shape: [outputChannels, height, width]) { target in
                values.withUnsafeBufferPointer { source in
                    for channel in 0..<outputChannels {
                        let sourceChannel = sourceChannels == 1 ? 0 : channel
                        let mean = means[channel], deviation = deviations[channel]
                        for pixel in 0..<plane {
                            let value = convert(source[pixel * sourceChannels + sourceChannel])
                            target[channel * plane + pixel] = Float((value * scale - mean) / deviation)
                        }
                    }
                }
            }
        }
        switch resized.pixels {
        case .bytes(let values): return fill(values) { Double($0) }
        case .floats(let values): return fill(values) { Double($0) }
        }
    }

    /// Step 1: the sample brought to `size` by the resize rule (unchanged without a size).
    public func resize(_ image: RawImage, path: String, index: Int) throws(DataError) -> RawImage {
        guard let size = preprocessing.size else { return image }
        let targetHeight = size[0], targetWidth = size[1]
        if image.height == targetHeight && image.width == targetWidth && preprocessing.resize != .shortSideThenCenterCrop {
            return image
        }
        guard image.height > 0 && image.width > 0 else {
            throw .sampleSizeMismatch(path: path, index: index, size: [image.height, image.width], expected: size,
                                      advice: "the sample is empty")
        }
        switch preprocessing.resize {
        case .none:
            throw .sampleSizeMismatch(path: path, index: index, size: [image.height, image.width], expected: size,
                                      advice: "choose the resize rule direct or short-side-crop, or resize the data beforehand")
        case .direct:
            return Resampling.resize(image, toHeight: targetHeight, width: targetWidth,
                                     rows: 0..<targetHeight, columns: 0..<targetWidth)
        case .shortSideThenCenterCrop:
            let shortSide = preprocessing.resizeShortSide ?? min(targetHeight, targetWidth)
            let sourceShort = Double(min(image.height, image.width))
            let resizedHeight = image.height <= image.width ? shortSide : Int((Double(image.height) * Double(shortSide) / sourceShort).rounded())
            let resizedWidth = image.width < image.height ? shortSide : Int((Double(image.width) * Double(shortSide) / sourceShort).rounded())
            guard resizedHeight >= targetHeight && resizedWidth >= targetWidth else {
                throw .sampleSizeMismatch(path: path, index: index, size: [image.height, image.width], expected: size,
                                          advice: "resized to \(resizedHeight)×\(resizedWidth) it is smaller than the crop; raise the short side")
            }
            let top = (resizedHeight - targetHeight) / 2, left = (resizedWidth - targetWidth) / 2
            if resizedHeight == image.height && resizedWidth == image.width {
                return crop(image, rows: top..<(top + targetHeight), columns: left..<(left + targetWidth))
            }
            return Resampling.resize(image, toHeight: resizedHeight, width: resizedWidth,
                                     rows: top..<(top + targetHeight), columns: left..<(left + targetWidth))
        }
    }

    private func crop(_ image: RawImage, rows: Range<Int>, columns: Range<Int>) -> RawImage {
        if rows == 0..<image.height && columns == 0..<image.width { return image }
        let channels = image.channels
        func cut<T>(_ values: [T]) -> [T] {
            var result: [T] = []
            result.reserveCapacity(rows.count * columns.count * channels)
            for row in rows {
                let start = (row * image.width + columns.lowerBound) * channels
                result += values[start..<(start + columns.count * channels)]
            }
            return result
        }
        switch image.pixels {
        case .bytes(let values):
            return RawImage(height: rows.count, width: columns.count, channels: channels, pixels: .bytes(cut(values)))
        case .floats(let values):
            return RawImage(height: rows.count, width: columns.count, channels: channels, pixels: .floats(cut(values)))
        }
    }
}
