/// Why data could not be read, decoded, preprocessed or written. Every case names the file (and,
/// where there is one, the sample index or the archive entry); `description` is one sentence a
/// user can act on.
public enum DataError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file cannot be opened or read.
    case unreadableFile(path: String, reason: String)
    /// The file is not a valid `.npy` array of a supported type.
    case invalidNPY(path: String, reason: String)
    /// The output cannot be written.
    case unwritableFile(path: String, reason: String)
    /// A file or folder the data needs does not exist. `role` says what it was looked for as
    /// ("data", "IDX labels file for train-images-idx3-ubyte.gz", ...).
    case missingFile(path: String, role: String)
    /// The path is not in any format LanceData reads.
    case unknownFormat(path: String, reason: String)
    /// The file starts with other bytes than its format requires.
    case badMagic(path: String, expected: String, found: String)
    /// The file ends before the data its header announces.
    case truncatedFile(path: String, reason: String)
    /// A gzip stream is damaged.
    case corruptCompressedData(path: String, reason: String)
    /// An image file cannot be decoded (damaged, truncated, or an unsupported variant such as CMYK).
    case corruptImage(path: String, reason: String)
    /// An array (a `.npy` file, a `.npz` entry, an HDF5 dataset, an IDX file) has an unusable
    /// shape, type or layout. `entry` names the array inside the file (empty for a `.npy`/IDX file).
    case invalidArray(path: String, entry: String, reason: String)
    /// A `.npz` or HDF5 file lacks the arrays the reader looks for.
    case missingArray(path: String, looked: [String], found: [String])
    /// Images and labels disagree in number.
    case labelCountMismatch(imagesPath: String, images: Int, labelsPath: String, labels: Int)
    /// A label is not an integer in `0..<1_000_000`.
    case invalidLabel(path: String, index: Int, value: String)
    /// A folder of class folders holds no images at all, or a class folder is empty.
    case noImages(path: String, reason: String)
    /// A sample's size cannot be brought to the requested one with the chosen resize rule.
    case sampleSizeMismatch(path: String, index: Int, size: [Int], expected: [Int], advice: String)
    /// Samples in one batch have different preprocessed shapes: the preprocessing has no size.
    case inconsistentSampleShapes(path: String, index: Int, shape: [Int], firstShape: [Int])
    /// A sample's channel count cannot be turned into the model's.
    case channelMismatch(path: String, index: Int, channels: Int, expected: Int)
    /// The preprocessing description cannot be applied (e.g. a resize rule without a size).
    case invalidPreprocessing(reason: String)
    /// A reading option is out of range (batch size, limit, sample index, layout, split).
    case invalidOption(name: String, reason: String)
    /// An HDF5 file could not be read; `reason` is the HDF5 reader's sentence.
    case hdf5(path: String, reason: String)

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason): "\(path): cannot read the file: \(reason)"
        case .invalidNPY(let path, let reason): "\(path): not a usable .npy array: \(reason)"
        case .unwritableFile(let path, let reason): "\(path): cannot write the file: \(reason)"
        case .missingFile(let path, let role):
            "\(path): no such file or folder (looked for it as the \(role)); check the path and the file names"
        case .unknownFormat(let path, let reason):
            "\(path): not a data format LanceData reads (\(reason)); use a folder of class folders with JPEG/PNG images, .npy, .npz, HDF5 (.h5) or IDX (MNIST) files"
        case .badMagic(let path, let expected, let found):
            "\(path): expected \(expected) at the start of the file but found \(found); the file is of another kind or damaged"
        case .truncatedFile(let path, let reason):
            "\(path): the file is truncated (\(reason)); download or copy it again"
        case .corruptCompressedData(let path, let reason):
            "\(path): the gzip data is damaged (\(reason)); download or copy the file again"
        case .corruptImage(let path, let reason):
            "\(path): cannot decode the image (\(reason)); re-save it as an RGB or greyscale JPEG/PNG, or remove it"
        case .invalidArray(let path, let entry, let reason):
            "\(path)\(entry.isEmpty ? "" : " [\(entry)]"): unusable array: \(reason)"
        case .missingArray(let path, let looked, let found):
            "\(path): found no \(looked.joined(separator: " / ")) (the file holds \(found.isEmpty ? "nothing readable" : found.joined(separator: ", "))); store the arrays under those names"
        case .labelCountMismatch(let imagesPath, let images, let labelsPath, let labels):
            "\(imagesPath) holds \(images) images but \(labelsPath) holds \(labels) labels; pair each image with exactly one label"
        case .invalidLabel(let path, let index, let value):
            "\(path): label \(value) of sample \(index) is not a class index (an integer from 0 to 999999); fix the labels"
        case .noImages(let path, let reason): "\(path): \(reason)"
        case .sampleSizeMismatch(let path, let index, let size, let expected, let advice):
            "\(path): sample \(index) is \(size[0])×\(size[1]) but \(expected[0])×\(expected[1]) is needed; \(advice)"
        case .inconsistentSampleShapes(let path, let index, let shape, let firstShape):
            "\(path): sample \(index) preprocesses to \(shape) but an earlier sample of the batch to \(firstShape); set a size and a resize rule (direct or short-side-crop) so every sample has one shape"
        case .channelMismatch(let path, let index, let channels, let expected):
            "\(path): sample \(index) has \(channels) channels but the preprocessing produces \(expected); only grey→RGB (1→3) is converted, so set channels to \(channels) or convert the data"
        case .invalidPreprocessing(let reason): "invalid preprocessing: \(reason)"
        case .invalidOption(let name, let reason): "invalid \(name): \(reason)"
        case .hdf5(let path, let reason): "\(path): \(reason)"
        }
    }
}
