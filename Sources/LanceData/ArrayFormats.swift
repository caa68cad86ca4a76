import Foundation
import LanceHDF5
import ZIPFoundation

/// The array names looked for in `.npz` and HDF5 files, in order: the first images name found is
/// used with the labels name at the same position when present.
///
/// - without a split: `images`/`labels`, `x`/`y`, `X`/`Y`;
/// - with a split `S`: `S/images`/`S/labels` (HDF5 groups), `images_S`/`labels_S`, `x_S`/`y_S`, `X_S`/`Y_S`
///   (Keras' `mnist.npz` holds `x_train`, `y_train`, `x_test`, `y_test`).
func arrayNameCandidates(split: String?) -> [(images: String, labels: String)] {
    guard let split else { return [("images", "labels"), ("x", "y"), ("X", "Y")] }
    return [("\(split)/images", "\(split)/labels"), ("images_\(split)", "labels_\(split)"),
            ("x_\(split)", "y_\(split)"), ("X_\(split)", "Y_\(split)")]
}

// MARK: - .npy

/// A `.npy` images file, with labels from `labelsPath`, or else from a `.npy` beside it named like
/// the images with `images` → `labels` (`train_images.npy` → `train_labels.npy`), or else from
/// `labels.npy` beside it; without any of these the samples have no labels.
func openNPY(_ path: String, labelsPath: String?, layout: ArrayLayout, preprocessor: Preprocessor) throws(DataError) -> any DataSource {
    let data = try mappedFile(path, role: "data")
    let images = try NPY.parse(data, path: path).array
    var labelsFile = labelsPath
    if labelsFile == nil {
        let url = URL(fileURLWithPath: path)
        let name = url.lastPathComponent
        var candidates: [String] = []
        if name.contains("images") {
            candidates.append(url.deletingLastPathComponent().appendingPathComponent(name.replacingOccurrences(of: "images", with: "labels")).path)
        }
        candidates.append(url.deletingLastPathComponent().appendingPathComponent("labels.npy").path)
        labelsFile = candidates.first { $0 != path && FileManager.default.fileExists(atPath: $0) }
    }
    var labels: LabelArray?
    if let labelsFile {
        let labelData = try mappedFile(labelsFile, role: "labels file")
        labels = try LabelArray(NPY.parse(labelData, path: labelsFile).array, path: labelsFile, entry: "")
    }
    return try ArrayImageSource(path: path, format: ".npy", images: images, imagesEntry: "", labels: labels,
                                labelsPath: labelsFile ?? "", layout: layout, preprocessor: preprocessor)
}

/// The file's bytes, memory-mapped when possible.
func mappedFile(_ path: String, role: String) throws(DataError) -> Data {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw .missingFile(path: path, role: role) }
    guard !isDirectory.boolValue else { throw .unreadableFile(path: path, reason: "it is a folder, not a file") }
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
    } catch {
        throw .unreadableFile(path: path, reason: error.localizedDescription)
    }
}

// MARK: - .npz

/// A `.npz` archive (a zip of `.npy` files, as `numpy.savez` and `savez_compressed` write). The
/// arrays are chosen by `arrayNameCandidates`; without a split and without any of those names the
/// first array in the archive is the images and the second, if any, the labels. Only the two
/// chosen entries are extracted (kept as bytes).
func openNPZ(_ path: String, split: String?, layout: ArrayLayout, preprocessor: Preprocessor) throws(DataError) -> any DataSource {
    let archive: Archive
    do {
        archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
    } catch {
        throw .unreadableFile(path: path, reason: "not a readable .npz (zip) archive: \(error)")
    }
    let entries = Array(archive).filter { $0.type == .file && $0.path.hasSuffix(".npy") }
    let keys = entries.map { String($0.path.dropLast(4)) }
    func extract(_ key: String) throws(DataError) -> NumericArray {
        let entry = entries[keys.firstIndex(of: key)!]
        var bytes = Data()
        do {
            _ = try archive.extract(entry) { chunk in bytes.append(chunk) }
        } catch {
            throw .invalidArray(path: path, entry: entry.path, reason: "cannot extract it (\(error)); the archive may be damaged")
        }
        return try NPY.parse(bytes, path: "\(path) [\(entry.path)]").array
    }
    let candidates = arrayNameCandidates(split: split)
    var imagesKey = candidates.first { keys.contains($0.images) }?.images
    var labelsKey = candidates.first { keys.contains($0.images) && keys.contains($0.labels) }?.labels
    if imagesKey == nil {
        guard split == nil, let first = keys.first else {
            throw .missingArray(path: path, looked: candidates.map { "\($0.images).npy" }, found: entries.map(\.path))
        }
        imagesKey = first
        labelsKey = keys.count > 1 ? keys[1] : nil
    }
    let images = try extract(imagesKey!)
    var labels: LabelArray?
    if let labelsKey {
        let array = try extract(labelsKey)
        guard array.shape.count <= 2, array.shape.first == images.shape.first else {
            if imagesKey == keys.first && labelsKey == keys.dropFirst().first {
                throw .missingArray(path: path, looked: candidates.map { "\($0.images).npy + \($0.labels).npy" },
                                    found: entries.map(\.path))
            }
            throw .labelCountMismatch(imagesPath: "\(path) [\(imagesKey!).npy]", images: images.shape.first ?? 0,
                                      labelsPath: "\(path) [\(labelsKey).npy]", labels: array.shape.first ?? 0)
        }
        labels = try LabelArray(array, path: "\(path) [\(labelsKey).npy]", entry: "")
    }
    return try ArrayImageSource(path: path, format: ".npz", images: images, imagesEntry: "\(imagesKey!).npy", labels: labels,
                                labelsPath: "\(path) [\(labelsKey ?? "").npy]", layout: layout, preprocessor: preprocessor)
}

// MARK: - HDF5

/// An HDF5 file with an images dataset and optionally a labels dataset, chosen by
/// `arrayNameCandidates`. Class names come from a string attribute `class_names` on the labels
/// dataset or the root group when present. Each sample is read from the file when asked for
/// (a one-row hyperslab), so the file is never loaded whole.
final class HDF5ImageSource: DataSource {
    let path: String
    let preprocessor: Preprocessor
    let sampleDescription: String
    let file: HDF5File
    let images: HDF5Dataset
    let imagesName: String
    let integerPixels: Bool
    let geometry: ArrayGeometry
    let count: Int
    let labels: LabelArray?

    init(path: String, split: String?, layout: ArrayLayout, preprocessor: Preprocessor) throws(DataError) {
        func wrap(_ error: HDF5Error) -> DataError { .hdf5(path: path, reason: error.description) }
        do {
            file = try HDF5File(path: path)
        } catch {
            throw wrap(error)
        }
        let root = file.root
        let candidates = arrayNameCandidates(split: split)
        guard let names = candidates.first(where: { root.contains($0.images) }) else {
            throw .missingArray(path: path, looked: candidates.map(\.images), found: (try? root.childNames()) ?? [])
        }
        self.path = path
        self.preprocessor = preprocessor
        imagesName = names.images
        do {
            images = try root.dataset(names.images)
            let shape = try images.shape()
            integerPixels = !images.isFloatingPoint()
            geometry = try layout.geometry(of: shape, path: path, entry: names.images)
            count = shape[0]
            if root.contains(names.labels) {
                let labelSet = try root.dataset(names.labels)
                let labelShape = try labelSet.shape()
                let array: NumericArray
                if labelSet.isFloatingPoint() {
                    let values = try labelSet.readFloats()
                    array = NumericArray(storage: values.withUnsafeBytes { Data($0) }, offset: 0, shape: labelShape,
                                         elementType: .float(bytes: 4), bigEndian: false)
                } else {
                    let values = try labelSet.readIntegers().map { Int64($0) }
                    array = NumericArray(storage: values.withUnsafeBytes { Data($0) }, offset: 0, shape: labelShape,
                                         elementType: .signed(bytes: 8), bigEndian: false)
                }
                let names = (try? labelSet.stringArrayAttribute("class_names")) ?? (try? root.stringArrayAttribute("class_names"))
                let labelArray = try LabelArray(array, path: "\(path) [\(labelSet.name)]", entry: "", names: names)
                guard labelArray.values.count == count else {
                    throw DataError.labelCountMismatch(imagesPath: "\(path) [\(images.name)]", images: count,
                                                       labelsPath: "\(path) [\(labelSet.name)]", labels: labelArray.values.count)
                }
                labels = labelArray
            } else {
                labels = nil
            }
        } catch let error as HDF5Error {
            throw wrap(error)
        } catch let error as DataError {
            throw error
        } catch {
            throw .hdf5(path: path, reason: "\(error)")
        }
        let classes = labels.map { ", \($0.classNames.count) classes" } ?? ", no labels"
        sampleDescription = "HDF5 \(URL(fileURLWithPath: path).lastPathComponent) [\(imagesName)]: \(count) \(geometry.summary) samples\(classes)"
    }

    var hasLabels: Bool { labels != nil }
    var classNames: [String] { labels?.classNames ?? [] }
    func samplePath(at index: Int) -> String { path }

    func rawSample(at index: Int) throws(DataError) -> (image: RawImage, label: Int) {
        guard index >= 0 && index < count else {
            throw .invalidOption(name: "sample index", reason: "\(index) is outside 0..<\(count) of \(path)")
        }
        let values: [Float]
        do {
            values = try images.readFloats(rows: index..<(index + 1))
        } catch {
            throw .hdf5(path: path, reason: "sample \(index): \(error.description)")
        }
        let pixels: RawImage.Pixels = integerPixels && values.allSatisfy({ $0 >= 0 && $0 <= 255 })
            ? .bytes(values.map { UInt8($0) }) : .floats(values)
        return (geometry.image(from: pixels), labels?.values[index] ?? -1)
    }
}
