import Foundation
import CJPEG
import CPNG

/// One sample as stored, before preprocessing: `height × width` pixels of `channels` interleaved
/// values (HWC order, row-major).
public struct RawImage: Sendable, Equatable {
    /// The pixel values, HWC order.
    public enum Pixels: Sendable, Equatable {
        /// 8-bit values 0…255: image files, IDX files, and integer arrays whose values all lie in
        /// 0…255. Resizing rounds to 8 bits after each pass, as Pillow does.
        case bytes([UInt8])
        /// Any other values (float arrays, integers outside 0…255), resized in floating point.
        case floats([Float])

        var count: Int {
            switch self {
            case .bytes(let values): values.count
            case .floats(let values): values.count
            }
        }
    }

    /// Rows.
    public var height: Int
    /// Columns.
    public var width: Int
    /// Values per pixel (1 grey, 3 RGB, or what an array holds).
    public var channels: Int
    /// `height · width · channels` values in HWC order.
    public var pixels: Pixels

    /// Creates an image; `pixels` must hold `height · width · channels` values in HWC order.
    public init(height: Int, width: Int, channels: Int, pixels: Pixels) {
        precondition(pixels.count == height * width * channels,
                     "\(height)×\(width)×\(channels) needs \(height * width * channels) values, got \(pixels.count)")
        self.height = height
        self.width = width
        self.channels = channels
        self.pixels = pixels
    }

    /// The values as floats, HWC order.
    public var floatValues: [Float] {
        switch pixels {
        case .bytes(let values): values.map { Float($0) }
        case .floats(let values): values
        }
    }
}

/// JPEG and PNG decoding over the system libjpeg-turbo and libpng.
public enum ImageDecoder {
    /// The image file kinds recognised by their first bytes.
    enum Kind { case jpeg, png }

    /// The kind of image `bytes` hold, from the JPEG (`FF D8 FF`) or PNG signature.
    static func kind(of bytes: some Collection<UInt8>) -> Kind? {
        let head = Array(bytes.prefix(8))
        if head.count >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF { return .jpeg }
        if head == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] { return .png }
        return nil
    }

    /// Decodes a JPEG or PNG file to 8-bit grey (1 channel) or RGB (3 channels): palettes are
    /// expanded, 16-bit PNG samples keep their high byte, alpha is dropped (not composited),
    /// greyscale JPEGs stay grey; CMYK JPEGs are refused.
    ///
    /// - Throws: `DataError.missingFile`/`.unreadableFile` when the file cannot be read,
    ///   `DataError.corruptImage` when it is neither JPEG nor PNG or cannot be decoded.
    public static func decode(contentsOf path: String) throws(DataError) -> RawImage {
        let bytes = try readFile(path, role: "image")
        return try decode(bytes, path: path)
    }

    /// Decodes JPEG or PNG bytes; `path` names them in errors.
    public static func decode(_ bytes: [UInt8], path: String) throws(DataError) -> RawImage {
        switch kind(of: bytes) {
        case .jpeg?:
            var image = lance_jpeg_image()
            let ok = bytes.withUnsafeBufferPointer { lance_jpeg_decode($0.baseAddress, UInt($0.count), &image) }
            guard ok == 1, let pixels = image.pixels else { throw .corruptImage(path: path, reason: message(of: &image.message)) }
            defer { lance_jpeg_free(pixels) }
            let count = Int(image.width) * Int(image.height) * Int(image.channels)
            return RawImage(height: Int(image.height), width: Int(image.width), channels: Int(image.channels),
                            pixels: .bytes(Array(UnsafeBufferPointer(start: pixels, count: count))))
        case .png?:
            var image = lance_png_image()
            let ok = bytes.withUnsafeBufferPointer { lance_png_decode($0.baseAddress, $0.count, &image) }
            guard ok == 1, let pixels = image.pixels else { throw .corruptImage(path: path, reason: message(of: &image.message)) }
            defer { lance_png_free(pixels) }
            let count = Int(image.width) * Int(image.height) * Int(image.channels)
            return RawImage(height: Int(image.height), width: Int(image.width), channels: Int(image.channels),
                            pixels: .bytes(Array(UnsafeBufferPointer(start: pixels, count: count))))
        case nil:
            let head = bytes.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")
            throw .corruptImage(path: path, reason: bytes.isEmpty ? "the file is empty" : "neither a JPEG nor a PNG signature (starts with \(head))")
        }
    }

    /// The NUL-terminated C message in a fixed-size tuple field.
    private static func message<T>(of field: inout T) -> String {
        let text = withUnsafeBytes(of: &field) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return text.isEmpty ? "the decoder gave no reason" : text
    }
}

/// The whole file at `path`.
///
/// - Throws: `DataError.missingFile` when there is no such file (`role` says what it was looked
///   for as), `DataError.unreadableFile` when it cannot be read.
func readFile(_ path: String, role: String) throws(DataError) -> [UInt8] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw .missingFile(path: path, role: role)
    }
    guard !isDirectory.boolValue else { throw .unreadableFile(path: path, reason: "it is a folder, not a file") }
    do {
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    } catch {
        throw .unreadableFile(path: path, reason: error.localizedDescription)
    }
}
