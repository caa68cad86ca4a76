import Foundation

/// IDX files (the MNIST format): a 4-byte magic `00 00 TT DD` (type `TT`, `DD` dimensions),
/// `DD` big-endian 32-bit extents, then the elements, big-endian, row-major. Image files are
/// `00 00 08 03` (`[N, rows, columns]` of unsigned bytes), label files `00 00 08 01` (`[N]`).
/// Files may be gzip-compressed (`.gz`); they are recognised by content, not by name.
enum IDX {
    /// The magic number of an IDX image file of unsigned bytes.
    static let imagesMagic: UInt32 = 0x0000_0803
    /// The magic number of an IDX label file of unsigned bytes.
    static let labelsMagic: UInt32 = 0x0000_0801

    /// Whether `bytes` (already decompressed) start like an IDX file.
    static func looksLikeIDX(_ bytes: some Collection<UInt8>) -> Bool {
        let head = Array(bytes.prefix(4))
        return head.count == 4 && head[0] == 0 && head[1] == 0 && [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E].contains(head[2])
            && (1...4).contains(head[3])
    }

    /// Reads an IDX file, decompressing it first when it is gzip.
    ///
    /// - Parameters:
    ///   - expectedMagic: `imagesMagic` or `labelsMagic`: the file must start with exactly it.
    ///   - role: what the file is read as, for errors.
    static func read(_ path: String, expectedMagic: UInt32, role: String) throws(DataError) -> NumericArray {
        let bytes = try readFile(path, role: role)
        return try parse(Gzip.isCompressed(bytes) ? try Gzip.decompress(bytes, path: path) : Data(bytes), path: path,
                         expectedMagic: expectedMagic)
    }

    /// Parses decompressed IDX bytes.
    static func parse(_ bytes: Data, path: String, expectedMagic: UInt32) throws(DataError) -> NumericArray {
        let expected = String(format: "the IDX magic %08x (%@)", expectedMagic, expectedMagic == imagesMagic ? "images" : "labels")
        guard bytes.count >= 4 else {
            throw .truncatedFile(path: path, reason: "\(bytes.count) bytes is shorter than the 4-byte IDX magic")
        }
        let magic = bytes[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard magic == expectedMagic else {
            let found = String(format: "%08x", magic)
            if magic == imagesMagic || magic == labelsMagic {
                let kind = magic == imagesMagic ? "an IDX images file" : "an IDX labels file"
                throw .badMagic(path: path, expected: expected, found: "\(found), \(kind)")
            }
            throw .badMagic(path: path, expected: expected, found: found)
        }
        let rank = Int(bytes[3])
        let headerSize = 4 + 4 * rank
        guard bytes.count >= headerSize else {
            throw .truncatedFile(path: path, reason: "the header needs \(headerSize) bytes, the file has \(bytes.count)")
        }
        let shape = (0..<rank).map { axis in
            bytes[(4 + 4 * axis)..<(8 + 4 * axis)].reduce(0) { $0 << 8 | Int($1) }
        }
        let elementType: ElementType
        switch bytes[2] {
        case 0x08: elementType = .unsigned(bytes: 1)
        case 0x09: elementType = .signed(bytes: 1)
        case 0x0B: elementType = .signed(bytes: 2)
        case 0x0C: elementType = .signed(bytes: 4)
        case 0x0D: elementType = .float(bytes: 4)
        default: elementType = .float(bytes: 8)
        }
        let (count, overflow) = shape.reduce((1, false)) { partial, extent in
            let product = partial.0.multipliedReportingOverflow(by: extent)
            return (product.partialValue, partial.1 || product.overflow)
        }
        guard !overflow, count <= (bytes.count - headerSize) / elementType.size else {
            let needed = overflow ? "more" : String(count * elementType.size)
            throw .truncatedFile(path: path, reason: "shape \(shape) needs \(needed) data bytes but only \(bytes.count - headerSize) follow the header")
        }
        return NumericArray(storage: bytes, offset: headerSize, shape: shape, elementType: elementType, bigEndian: true)
    }

    /// The IDX images file a path names, and its labels partner.
    ///
    /// `path` may be
    /// - the images file itself (`…/train-images-idx3-ubyte.gz`); the labels file is the same name
    ///   with `images` → `labels` and `idx3` → `idx1` (`train-labels-idx1-ubyte.gz`), compressed or not;
    /// - a folder plus `split` (`…/fashion-mnist` + `train` → `train-images-idx3-ubyte[.gz]`), where
    ///   the split may be left out when the folder holds one images file;
    /// - a prefix (`…/fashion-mnist/t10k`) that names `t10k-images-idx3-ubyte[.gz]`.
    ///
    /// Both `NAME-images-idx3-ubyte` and `NAME-images.idx3-ubyte` spellings are recognised.
    ///
    /// - Returns: `nil` when `path` is none of these (another format).
    static func locatePair(_ path: String, split: String?) throws(DataError) -> (images: String, labels: String)? {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        let exists = manager.fileExists(atPath: path, isDirectory: &isDirectory)
        let url = URL(fileURLWithPath: path)
        var images: String?
        if exists && isDirectory.boolValue {
            let names = ((try? manager.contentsOfDirectory(atPath: path)) ?? []).sorted()
            let candidates = names.filter(isImagesFileName)
            if let split {
                images = candidates.first { splitName(of: $0) == split }.map { url.appendingPathComponent($0).path }
                if images == nil && !candidates.isEmpty {
                    let available = candidates.compactMap(splitName).joined(separator: ", ")
                    throw .invalidOption(name: "split", reason: "\(path) has no IDX split '\(split)'; it has \(available)")
                }
            } else if candidates.count == 1 {
                images = url.appendingPathComponent(candidates[0]).path
            } else if candidates.count > 1 {
                let available = candidates.compactMap(splitName).joined(separator: ", ")
                throw .invalidOption(name: "split", reason: "\(path) holds several IDX image files (\(available)); name the split")
            }
        } else if exists {
            guard isImagesFileName(url.lastPathComponent) || isLabelsFileName(url.lastPathComponent) else { return nil }
            images = path
        } else {
            // A prefix: FOLDER/SPLIT.
            let folder = url.deletingLastPathComponent()
            let prefix = url.lastPathComponent
            images = ["-images-idx3-ubyte", "-images.idx3-ubyte"].flatMap { [$0 + ".gz", $0] }
                .map { folder.appendingPathComponent(prefix + $0).path }
                .first { manager.fileExists(atPath: $0) }
        }
        guard let images else { return nil }
        let name = URL(fileURLWithPath: images).lastPathComponent
        if isLabelsFileName(name) {
            throw .invalidOption(name: "data path", reason: "\(images) is an IDX labels file; pass the images file (…-images-idx3-ubyte) instead")
        }
        let folder = URL(fileURLWithPath: images).deletingLastPathComponent()
        var labelsName = name.replacingOccurrences(of: "images", with: "labels").replacingOccurrences(of: "idx3", with: "idx1")
        if labelsName.hasSuffix(".gz") { labelsName.removeLast(3) }
        let labels = [labelsName + ".gz", labelsName].map { folder.appendingPathComponent($0).path }
            .first { manager.fileExists(atPath: $0) }
        guard let labels else {
            throw .missingFile(path: folder.appendingPathComponent(labelsName).path + "[.gz]",
                               role: "IDX labels file paired with \(name)")
        }
        return (images, labels)
    }

    static func isImagesFileName(_ name: String) -> Bool {
        name.contains("images") && name.contains("idx3")
    }

    static func isLabelsFileName(_ name: String) -> Bool {
        name.contains("labels") && name.contains("idx1")
    }

    /// `train` for `train-images-idx3-ubyte.gz`.
    static func splitName(of name: String) -> String? {
        guard let range = name.range(of: "-images") else { return nil }
        return String(name[..<range.lowerBound])
    }
}
