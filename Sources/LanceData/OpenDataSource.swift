import Foundation
import LanceModel

/// Opens the dataset at `path`, choosing the reader from what the path is:
///
/// | path | reader |
/// | --- | --- |
/// | a folder holding `*-images-idx3-ubyte[.gz]` files | IDX pair (`split` picks one when there are several) |
/// | another folder | class folders of JPEG/PNG images (`ImageFolderSource`) |
/// | `FOLDER/SPLIT` where `FOLDER/SPLIT-images-idx3-ubyte[.gz]` exists | IDX pair |
/// | a file starting with `\x93NUMPY` | `.npy` images (labels: `labelsPath`, or `…labels….npy` / `labels.npy` beside it) |
/// | a zip file (`PK\x03\x04`) | `.npz` arrays `images`/`labels`, `x`/`y` (or `x_SPLIT`/`y_SPLIT`), else the first two |
/// | an HDF5 file (`\x89HDF`) | datasets `images`/`labels`, `x`/`y` (or `SPLIT/images`, `x_SPLIT`, …) |
/// | an IDX file (`00 00 08 03`), gzip-compressed or not | IDX images with the labels file named like it (`images`→`labels`, `idx3`→`idx1`) |
///
/// Files are recognised by their first bytes, never by their extension.
///
/// - Parameters:
///   - path: the file, folder or IDX prefix.
///   - preprocessing: applied to every sample by `sample(at:)`; checked here.
///   - layout: how 4-dimensional arrays (`.npy`, `.npz`, HDF5) order their axes; `auto` decides
///     from the shape (see `ArrayLayout.auto`).
///   - split: the IDX split (`train`, `t10k`) or the array-name suffix in `.npz`/HDF5 files.
///   - labelsPath: the labels `.npy` for a `.npy` images file.
/// - Throws: `DataError`: `.missingFile`, `.unknownFormat`, `.invalidPreprocessing`, and the
///   reader's errors (bad magic, truncated file, label count mismatch, …).
public func openDataSource(_ path: String, preprocessing: Preprocessing, layout: ArrayLayout = .auto,
                           split: String? = nil, labelsPath: String? = nil) throws(DataError) -> any DataSource {
    let preprocessor = try Preprocessor(preprocessing)
    let manager = FileManager.default
    var isDirectory: ObjCBool = false
    let exists = manager.fileExists(atPath: path, isDirectory: &isDirectory)
    if exists && isDirectory.boolValue {
        if let pair = try IDX.locatePair(path, split: split) {
            return try IDXSource(imagesPath: pair.images, labelsPath: pair.labels, layout: layout, preprocessor: preprocessor)
        }
        return try ImageFolderSource(path: path, preprocessor: preprocessor)
    }
    guard exists else {
        if let pair = try IDX.locatePair(path, split: split) {
            return try IDXSource(imagesPath: pair.images, labelsPath: pair.labels, layout: layout, preprocessor: preprocessor)
        }
        throw .missingFile(path: path, role: "data (a file, a folder of class folders, or an IDX prefix such as FOLDER/train)")
    }
    let head = try fileHead(path, count: 8)
    if head.starts(with: [0x93] + Array("NUMPY".utf8)) {
        return try openNPY(path, labelsPath: labelsPath, layout: layout, preprocessor: preprocessor)
    }
    if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x50, 0x4B, 0x05, 0x06]) {
        return try openNPZ(path, split: split, layout: layout, preprocessor: preprocessor)
    }
    if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) {
        return try HDF5ImageSource(path: path, split: split, layout: layout, preprocessor: preprocessor)
    }
    if IDX.looksLikeIDX(head) || Gzip.isCompressed(head) {
        guard let pair = try IDX.locatePair(path, split: split) else {
            if Gzip.isCompressed(head) && !IDX.isImagesFileName(URL(fileURLWithPath: path).lastPathComponent) {
                throw .unknownFormat(path: path, reason: "a gzip file whose name is not NAME-images-idx3-ubyte.gz")
            }
            throw .missingFile(path: path, role: "IDX images file named NAME-images-idx3-ubyte[.gz], so that its labels file NAME-labels-idx1-ubyte[.gz] can be found")
        }
        return try IDXSource(imagesPath: pair.images, labelsPath: pair.labels, layout: layout, preprocessor: preprocessor)
    }
    if ImageDecoder.kind(of: head) != nil {
        throw .unknownFormat(path: path, reason: "a single image; put the images in one sub-folder per class and pass the folder")
    }
    let shown = head.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")
    throw .unknownFormat(path: path, reason: head.isEmpty ? "the file is empty" : "it starts with \(shown)")
}

/// The first `count` bytes of a file (fewer when it is shorter). Plain POSIX reads: Foundation's
/// `FileHandle.read(upToCount:)` can trap on Linux.
private func fileHead(_ path: String, count: Int) throws(DataError) -> [UInt8] {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else {
        throw .unreadableFile(path: path, reason: String(cString: strerror(errno)))
    }
    defer { close(descriptor) }
    var bytes = [UInt8](repeating: 0, count: count)
    var filled = 0
    while filled < count {
        let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + filled, count - filled) }
        if got < 0 && errno == EINTR { continue }
        guard got >= 0 else { throw .unreadableFile(path: path, reason: String(cString: strerror(errno))) }
        if got == 0 { break }
        filled += got
    }
    return Array(bytes.prefix(filled))
}

/// An IDX images file and its labels file (MNIST, Fashion-MNIST, EMNIST), gzip-compressed or not.
/// Both are decompressed into memory at their stored size (47 MB for 60 000 28×28 images).
final class IDXSource: DataSource {
    let path: String
    let labelsPath: String
    let preprocessor: Preprocessor
    let images: ArrayImageSource

    init(imagesPath: String, labelsPath: String, layout: ArrayLayout, preprocessor: Preprocessor) throws(DataError) {
        path = imagesPath
        self.labelsPath = labelsPath
        self.preprocessor = preprocessor
        let imageArray = try IDX.read(imagesPath, expectedMagic: IDX.imagesMagic, role: "IDX images file")
        let labelArray = try IDX.read(labelsPath, expectedMagic: IDX.labelsMagic, role: "IDX labels file")
        let labels = try LabelArray(labelArray, path: labelsPath, entry: "")
        images = try ArrayImageSource(path: imagesPath, format: "IDX", images: imageArray, imagesEntry: "", labels: labels,
                                      labelsPath: labelsPath, layout: layout, preprocessor: preprocessor)
    }

    var count: Int { images.count }
    var hasLabels: Bool { true }
    var classNames: [String] { images.classNames }
    var sampleDescription: String { images.sampleDescription }
    func samplePath(at index: Int) -> String { path }
    func rawSample(at index: Int) throws(DataError) -> (image: RawImage, label: Int) { try images.rawSample(at: index) }
}
