import Foundation

/// A folder of class folders of JPEG and PNG images, as torchvision's `ImageFolder` reads them:
///
/// ```
/// root/cat/0001.jpg     label 0, class "cat"
/// root/cat/more/7.png   label 0 (images in nested folders belong to their top class folder)
/// root/dog/a.jpeg       label 1, class "dog"
/// ```
///
/// Class folders are sorted by name in Unicode code-point order (Python's `sorted`), and their
/// label is their position. Files ending in `.jpg`, `.jpeg` or `.png` (any case) are samples, in
/// code-point order of their path inside the class folder; other files and everything whose name
/// starts with `.` are ignored. The format of each image is taken from its content, not its name.
/// Images are decoded when a sample is read; only the list of files is kept.
public final class ImageFolderSource: DataSource {
    /// The root folder.
    public let path: String
    /// The preprocessing applied by `sample(at:)`.
    public let preprocessor: Preprocessor
    /// The class folder names, indexed by label.
    public let classNames: [String]
    /// Every image file with its label, in sample order.
    public let files: [(path: String, label: Int)]

    /// The file extensions read (compared lowercased).
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    /// Lists the class folders of `path` and their images.
    ///
    /// - Throws: `DataError.missingFile` when the folder does not exist, `DataError.noImages` when
    ///   it has no class folders or a class folder has no images.
    public init(path: String, preprocessor: Preprocessor) throws(DataError) {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .missingFile(path: path, role: "folder of class folders")
        }
        let root = URL(fileURLWithPath: path)
        let entries: [String]
        do {
            entries = try manager.contentsOfDirectory(atPath: path)
        } catch {
            throw .unreadableFile(path: path, reason: error.localizedDescription)
        }
        let classes = entries.filter { name in
            var folder: ObjCBool = false
            return !name.hasPrefix(".") && manager.fileExists(atPath: root.appendingPathComponent(name).path, isDirectory: &folder)
                && folder.boolValue
        }.sorted(by: codePointOrder)
        guard !classes.isEmpty else {
            let looseImages = entries.contains { Self.imageExtensions.contains(URL(fileURLWithPath: $0).pathExtension.lowercased()) }
            throw .noImages(path: path, reason: looseImages
                ? "the images must be in one sub-folder per class (\(path)/CLASS/IMAGE.jpg); move them into class folders"
                : "found no class folders; put the images in one sub-folder per class (\(path)/CLASS/IMAGE.jpg)")
        }
        var files: [(path: String, label: Int)] = []
        for (label, name) in classes.enumerated() {
            let folder = root.appendingPathComponent(name)
            let images = (manager.subpaths(atPath: folder.path) ?? []).filter { relative in
                !relative.split(separator: "/").contains { $0.hasPrefix(".") }
                    && Self.imageExtensions.contains(URL(fileURLWithPath: relative).pathExtension.lowercased())
            }.sorted(by: codePointOrder)
            guard !images.isEmpty else {
                throw .noImages(path: folder.path, reason: "the class folder '\(name)' holds no .jpg, .jpeg or .png images; add images or remove the folder")
            }
            files += images.map { (folder.appendingPathComponent($0).path, label) }
        }
        self.path = path
        self.preprocessor = preprocessor
        self.classNames = classes
        self.files = files
    }

    /// The number of images.
    public var count: Int { files.count }
    /// Always true: the class folder is the label.
    public var hasLabels: Bool { true }

    /// `image folder NAME: N JPEG/PNG images, K classes`.
    public var sampleDescription: String {
        "image folder \(URL(fileURLWithPath: path).lastPathComponent): \(files.count) JPEG/PNG images, \(classNames.count) classes"
    }

    /// The image file of sample `index`.
    public func samplePath(at index: Int) -> String {
        index >= 0 && index < files.count ? files[index].path : path
    }

    /// Decodes image `index` (8-bit grey or RGB, HWC).
    public func rawSample(at index: Int) throws(DataError) -> (image: RawImage, label: Int) {
        guard index >= 0 && index < files.count else {
            throw .invalidOption(name: "sample index", reason: "\(index) is outside 0..<\(files.count) of \(path)")
        }
        let file = files[index]
        return (try ImageDecoder.decode(contentsOf: file.path), file.label)
    }
}

/// Unicode code-point order, as Python's `sorted` on strings.
func codePointOrder(_ left: String, _ right: String) -> Bool {
    left.unicodeScalars.lexicographicallyPrecedes(right.unicodeScalars) { $0.value < $1.value }
}
