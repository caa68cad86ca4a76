import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceTestSupport
import Testing

@Suite("Folders of class folders, JPEG and PNG decoding, resizing")
struct ImageFolderTests {
    static let folder = Fixtures.sampleData("images")
    static let imageNetNormalisation = (mean: [Float(0.485), 0.456, 0.406], std: [Float(0.229), 0.224, 0.225])

    static func preprocessing(size: Int, resize: Preprocessing.Resize, shortSide: Int? = nil) -> Preprocessing {
        Preprocessing(size: [size, size], resize: resize, resizeShortSide: shortSide, scale: 1 / 255,
                      mean: imageNetNormalisation.mean, standardDeviation: imageNetNormalisation.std, channels: 3)
    }

    @Test("classes are the sorted folder names; nested images count, hidden and non-image files do not")
    func listing() throws {
        let source = try ImageFolderSource(path: Self.folder, preprocessor: Preprocessor(Self.preprocessing(size: 40, resize: .direct)))
        #expect(source.classNames == ["airplane", "automobile", "cat"])
        #expect(source.files.map { String($0.path.dropFirst(Self.folder.count + 1)) }
                == ["airplane/a.png", "airplane/b.jpg", "automobile/a.png", "automobile/more/b.jpg", "cat/a.jpg", "cat/b.png", "cat/c.JPEG"])
        #expect(source.files.map(\.label) == [0, 0, 1, 1, 2, 2, 2])
        let opened = try openDataSource(Self.folder, preprocessing: Self.preprocessing(size: 40, resize: .direct))
        #expect(opened.count == 7 && opened.classNames == source.classNames)
        #expect(opened.sampleDescription == "image folder images: 7 JPEG/PNG images, 3 classes")
    }

    /// Compares the folder's batch with Pillow's output saved by make_data_samples.py.
    func compareWithPillow(_ preprocessing: Preprocessing, expected name: String) throws -> Float {
        let source = try openDataSource(Self.folder, preprocessing: preprocessing)
        var batches = try BatchIterator(source: source, batchSize: 16)
        let batch = try #require(try batches.next())
        let expected = try NPY.read(Fixtures.sampleData(name)).tensor
        let labels = try NPY.read(Fixtures.sampleData("images_labels.npy")).integers
        #expect(batch.labels == labels)
        #expect(batch.images.shape == expected.shape)
        return batch.images.maxAbsoluteDifference(to: expected)
    }

    @Test("JPEG/PNG, RGB and grey, enlarged 32→40 directly: equal to Pillow's BILINEAR within 2e-6")
    func enlargeMatchesPillow() throws {
        let difference = try compareWithPillow(Self.preprocessing(size: 40, resize: .direct), expected: "images_direct40.npy")
        // Measured: 4.8e-7, one float32 rounding step; the resized 8-bit pixels are Pillow's exactly.
        #expect(difference < 2e-6, "max |Δ| = \(difference)")
    }

    @Test("short side 28 then centre crop 24 (shrinking, antialiased): equal to Pillow within 2e-6")
    func shrinkMatchesPillow() throws {
        let difference = try compareWithPillow(Self.preprocessing(size: 24, resize: .shortSideThenCenterCrop, shortSide: 28),
                                               expected: "images_crop24.npy")
        // Measured: 4.8e-7, one float32 rounding step; the resized 8-bit pixels are Pillow's exactly.
        #expect(difference < 2e-6, "max |Δ| = \(difference)")
    }

    @Test("palette (with and without transparency), RGBA, 16-bit grey, grey and progressive JPEG decode to Pillow's pixels",
          arguments: ["palette.png", "palette_transparent.png", "rgba.png", "grey16.png", "grey.jpg", "progressive.jpg"])
    func decoderVariants(_ name: String) throws {
        let image = try ImageDecoder.decode(contentsOf: Fixtures.sampleData("variants/\(name)"))
        let expected = try NPY.read(Fixtures.sampleData("variants-expected/\(name.split(separator: ".")[0]).npy"))
        #expect([image.height, image.width, image.channels] == expected.shape)
        #expect(image.pixels == .bytes(expected.integers!.map { UInt8($0) }))
    }

    @Test("a grey image becomes RGB by repeating its channel")
    func greyToRGB() throws {
        let grey = RawImage(height: 1, width: 2, channels: 1, pixels: .bytes([10, 200]))
        let tensor = try Preprocessor(Preprocessing(scale: 1, channels: 3)).apply(to: grey, path: "grey", index: 0)
        #expect(tensor.shape == [3, 1, 2])
        #expect(tensor.scalars == [10, 200, 10, 200, 10, 200])
    }
}

@Suite("ImageNet preprocessing against the shared reference",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/data/imagenet20 (or $LANCE_SHARED); it is missing"))
struct ImageNetReferenceTests {
    @Test("20 JPEGs, short side 256, centre crop 224, ImageNet mean/std: within 2e-6 of images.npy (Pillow)")
    func imageNet20() throws {
        let folder = URL(fileURLWithPath: Fixtures.data("imagenet20"))
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".jpg") }.sorted()
        #expect(files.count == 20)
        let expected = try NPY.read(folder.appendingPathComponent("images.npy").path).tensor
        let preprocessor = try Preprocessor(.imageNet)
        var largest: Float = 0
        for (index, name) in files.enumerated() {
            let path = folder.appendingPathComponent(name).path
            let image = try preprocessor.apply(to: ImageDecoder.decode(contentsOf: path), path: path, index: index)
            #expect(image.shape == [3, 224, 224])
            largest = max(largest, image.maxAbsoluteDifference(to: row(expected, index)))
        }
        // Measured: 4.8e-7 (float32 rounding of values up to 2.64): the decoded and resized pixels
        // equal Pillow's, since libjpeg-turbo decodes alike and the resampling is Pillow's fixed-point one.
        #expect(largest < 2e-6, "max |Δ| = \(largest)")
    }
}
