import Foundation
import LanceCore
import LanceModel

/// A dataset read one sample at a time: what calibration and training iterate over.
///
/// Sources keep at most their stored bytes in memory (an IDX or `.npy` file's bytes, a `.npz`
/// entry, the list of image files); every call to `sample(at:)` decodes and preprocesses one
/// sample afresh, so nothing grows with the number of samples read. Sources are immutable and
/// safe to read from several threads.
public protocol DataSource: Sendable {
    /// The file or folder the samples come from.
    var path: String { get }
    /// The number of samples.
    var count: Int { get }
    /// Whether the samples have class labels (image folders and IDX pairs always do; arrays when a
    /// labels array was found). Without labels every label is `-1`.
    var hasLabels: Bool { get }
    /// The class names, indexed by label: folder names for image folders, `"0"`, `"1"`, … up to the
    /// largest label otherwise (or names stored with the data). Empty without labels.
    var classNames: [String] { get }
    /// One line saying what the source is, e.g. `IDX train-images-idx3-ubyte.gz: 60000 grey 28×28 samples, 10 classes`.
    var sampleDescription: String { get }
    /// The preprocessing applied by `sample(at:)`, already checked.
    var preprocessor: Preprocessor { get }

    /// Sample `index` as stored, before preprocessing (HWC), and its label (`-1` without labels).
    func rawSample(at index: Int) throws(DataError) -> (image: RawImage, label: Int)

    /// The file sample `index` comes from, for errors (the image file for an image folder).
    func samplePath(at index: Int) -> String
}

extension DataSource {
    /// Sample `index` after preprocessing, as a `[C, H, W]` float32 tensor, and its label (`-1`
    /// without labels).
    ///
    /// - Throws: `DataError.invalidOption` for an index outside `0..<count`, and the reading,
    ///   decoding and preprocessing errors of the sample, naming its file and index.
    public func sample(at index: Int) throws(DataError) -> (image: Tensor, label: Int) {
        guard index >= 0 && index < count else {
            throw .invalidOption(name: "sample index", reason: "\(index) is outside 0..<\(count) of \(path)")
        }
        let (raw, label) = try rawSample(at: index)
        return (try preprocessor.apply(to: raw, path: samplePath(at: index), index: index), label)
    }

    /// The preprocessing description.
    public var preprocessing: Preprocessing { preprocessor.preprocessing }
}

/// How the axes of a 4-dimensional image array are ordered. Arrays of rank 3 (`[N, H, W]`) are
/// one-channel images whatever the layout.
public enum ArrayLayout: String, Sendable, CaseIterable, Codable {
    /// Decide from the shape `[N, a, b, c]`: NHWC when the last axis is 1 or 3 and the second is
    /// not; NCHW when the second axis is 1 or 3 and the last is not; otherwise (both or neither
    /// are 1 or 3) the layout must be given.
    case auto
    /// `[N, C, H, W]` (PyTorch, ONNX).
    case nchw
    /// `[N, H, W, C]` (Keras, TensorFlow, most `.npy` exports of images).
    case nhwc

    /// The per-sample geometry of an array of `shape`.
    ///
    /// - Throws: `DataError.invalidArray` for ranks other than 3 and 4, and when `auto` cannot tell.
    func geometry(of shape: [Int], path: String, entry: String) throws(DataError) -> ArrayGeometry {
        switch shape.count {
        case 3:
            return ArrayGeometry(height: shape[1], width: shape[2], channels: 1, channelsFirst: false)
        case 4:
            var layout = self
            if layout == .auto {
                let secondIsChannels = shape[1] == 1 || shape[1] == 3
                let lastIsChannels = shape[3] == 1 || shape[3] == 3
                switch (secondIsChannels, lastIsChannels) {
                case (false, true): layout = .nhwc
                case (true, false): layout = .nchw
                default:
                    throw .invalidArray(path: path, entry: entry,
                                        reason: "cannot tell whether shape \(shape) is NCHW or NHWC; give the layout (nchw or nhwc) explicitly")
                }
            }
            return layout == .nchw
                ? ArrayGeometry(height: shape[2], width: shape[3], channels: shape[1], channelsFirst: true)
                : ArrayGeometry(height: shape[1], width: shape[2], channels: shape[3], channelsFirst: false)
        default:
            throw .invalidArray(path: path, entry: entry,
                                reason: "images must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape \(shape)")
        }
    }
}

/// One sample's extents in an image array and whether its channels come first (CHW) or last (HWC).
struct ArrayGeometry: Sendable, Equatable {
    var height: Int
    var width: Int
    var channels: Int
    var channelsFirst: Bool

    /// Stored sample values (CHW or HWC) as an HWC image.
    func image(from pixels: RawImage.Pixels) -> RawImage {
        guard channelsFirst && channels > 1 else {
            return RawImage(height: height, width: width, channels: channels, pixels: pixels)
        }
        func interleave<T>(_ values: [T]) -> [T] {
            let plane = height * width
            return [T](unsafeUninitializedCapacity: values.count) { buffer, initialized in
                for channel in 0..<channels {
                    for pixel in 0..<plane { buffer[pixel * channels + channel] = values[channel * plane + pixel] }
                }
                initialized = values.count
            }
        }
        switch pixels {
        case .bytes(let values): return RawImage(height: height, width: width, channels: channels, pixels: .bytes(interleave(values)))
        case .floats(let values): return RawImage(height: height, width: width, channels: channels, pixels: .floats(interleave(values)))
        }
    }

    var summary: String {
        let kind = channels == 1 ? "grey" : channels == 3 ? "RGB" : "\(channels)-channel"
        return "\(kind) \(height)×\(width)"
    }
}

/// Class labels read from an array: `[N]`, `[N, 1]`, or one-hot / scores `[N, K]` (the arg-max is
/// taken). Values must be integers in `0..<1_000_000`.
struct LabelArray: Sendable {
    /// Labels must be below this (a damaged file could otherwise ask for billions of class names).
    static let maximumClassCount = 1_000_000

    var values: [Int]
    var classNames: [String]

    init(_ array: NumericArray, path: String, entry: String, names: [String]? = nil) throws(DataError) {
        let shape = array.shape
        switch shape.count {
        case 1:
            values = array.integers(0..<array.elementCount)
            if !array.elementType.isInteger {
                let floats = array.floats(0..<array.elementCount)
                if let bad = floats.firstIndex(where: { $0.rounded() != $0 }) {
                    throw .invalidLabel(path: path, index: bad, value: "\(floats[bad])")
                }
            }
        case 2 where shape[1] == 1:
            values = array.integers(0..<array.elementCount)
        case 2:
            let classes = shape[1]
            values = (0..<shape[0]).map { row in
                let scores = array.floats((row * classes)..<((row + 1) * classes))
                return scores.indices.max { scores[$0] < scores[$1] } ?? 0
            }
        default:
            throw .invalidArray(path: path, entry: entry, reason: "labels must be [N], [N, 1] or one-hot [N, K], got shape \(shape)")
        }
        if let bad = values.firstIndex(where: { $0 < 0 || $0 >= LabelArray.maximumClassCount }) {
            throw .invalidLabel(path: path, index: bad, value: "\(values[bad])")
        }
        let classCount = max(values.max().map { $0 + 1 } ?? 0, shape.count == 2 && shape[1] > 1 ? shape[1] : 0)
        if let names, names.count >= classCount {
            classNames = names
        } else {
            classNames = (0..<classCount).map(String.init)
        }
    }
}

/// Images held in an array in memory at their stored size (`.npy`, `.npz` entries, IDX files),
/// with optional labels.
final class ArrayImageSource: DataSource {
    let path: String
    let preprocessor: Preprocessor
    let sampleDescription: String
    let images: NumericArray
    let geometry: ArrayGeometry
    let labels: LabelArray?

    init(path: String, format: String, images: NumericArray, imagesEntry: String, labels: LabelArray?, labelsPath: String,
         layout: ArrayLayout, preprocessor: Preprocessor) throws(DataError) {
        self.path = path
        self.preprocessor = preprocessor
        self.images = images
        self.geometry = try layout.geometry(of: images.shape, path: path, entry: imagesEntry)
        if let labels, labels.values.count != images.shape[0] {
            throw .labelCountMismatch(imagesPath: path + (imagesEntry.isEmpty ? "" : " [\(imagesEntry)]"), images: images.shape[0],
                                      labelsPath: labelsPath, labels: labels.values.count)
        }
        self.labels = labels
        let classes = labels.map { ", \($0.classNames.count) classes" } ?? ", no labels"
        sampleDescription = "\(format) \(URL(fileURLWithPath: path).lastPathComponent): \(images.shape[0]) \(geometry.summary) samples\(classes)"
    }

    var count: Int { images.shape[0] }
    var hasLabels: Bool { labels != nil }
    var classNames: [String] { labels?.classNames ?? [] }
    func samplePath(at index: Int) -> String { path }

    func rawSample(at index: Int) throws(DataError) -> (image: RawImage, label: Int) {
        guard index >= 0 && index < count else {
            throw .invalidOption(name: "sample index", reason: "\(index) is outside 0..<\(count) of \(path)")
        }
        return (geometry.image(from: images.samplePixels(index)), labels?.values[index] ?? -1)
    }
}
