import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceTestSupport
import Testing

@Suite("HDF5, .npz and .npy arrays")
struct ArrayFormatTests {
    static let identityRGB = Preprocessing(scale: 1 / 255, channels: 3)

    /// All samples of a source as one batch.
    func everything(_ source: any DataSource) throws -> Batch {
        var batches = try BatchIterator(source: source, batchSize: source.count)
        return try #require(try batches.next())
    }

    @Test("HDF5 images (uint8 NHWC) and labels with class names from an attribute")
    func hdf5() throws {
        let source = try openDataSource(Fixtures.sampleData("tiny.h5"), preprocessing: Self.identityRGB)
        #expect(source.count == 10)
        #expect(source.classNames == ["circle", "square", "star", "triangle"])
        #expect(source.sampleDescription == "HDF5 tiny.h5 [images]: 10 RGB 12×10 samples, 4 classes")
        let batch = try everything(source)
        let expected = try NPY.read(Fixtures.sampleData("tiny_h5_expected.npy")).tensor
        #expect(batch.images.shape == [10, 3, 12, 10])
        #expect(batch.images.maxAbsoluteDifference(to: expected) < 1e-6)
        let npz = try openDataSource(Fixtures.sampleData("tiny.npz"), preprocessing: Self.identityRGB)
        let npzBatch = try everything(npz)
        #expect(npzBatch.images == batch.images && npzBatch.labels == batch.labels)
        #expect(npz.classNames == ["0", "1", "2", "3"])
    }

    @Test("an HDF5 split group of float NCHW images, resized directly like Pillow's float mode")
    func hdf5SplitFloat() throws {
        let plain = try openDataSource(Fixtures.sampleData("tiny.h5"), preprocessing: Preprocessing(channels: 3), split: "test")
        #expect(plain.count == 4)
        let batch = try everything(plain)
        #expect(batch.labels == [3, 0, 2, 1])
        #expect(batch.images.shape == [4, 3, 12, 10])
        let resized = try openDataSource(Fixtures.sampleData("tiny.h5"),
                                         preprocessing: Preprocessing(size: [6, 5], resize: .direct, channels: 3), split: "test")
        let expected = try NPY.read(Fixtures.sampleData("tiny_h5_test_resized.npy")).tensor
        let difference = try everything(resized).images.maxAbsoluteDifference(to: expected)
        #expect(difference < 1e-6, "max |Δ| = \(difference)")
    }

    @Test("Keras-style .npz: x_SPLIT/y_SPLIT by split, the first two arrays without")
    func kerasStyleNPZ() throws {
        let path = Fixtures.sampleData("keras_style.npz")
        let test = try openDataSource(path, preprocessing: unitScale, split: "test")
        #expect(test.count == 3 && test.sampleDescription.contains("3 grey 8×8"))
        #expect(try everything(test).labels == [0, 1, 2])
        let first = try openDataSource(path, preprocessing: unitScale)
        #expect(first.count == 5)
        #expect(try everything(first).labels == [0, 1, 2, 3, 4])
        let missing = dataError { _ = try openDataSource(path, preprocessing: unitScale, split: "valid") }
        guard case .missingArray(let missingPath, _, let found)? = missing else { Issue.record("got \(String(describing: missing))"); return }
        #expect(missingPath == path && found.contains("x_train.npy"))
    }

    @Test(".npy in NHWC and NCHW with labels beside it; the auto layout rule and an explicit layout")
    func npyLayouts() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        // 4 samples of 5×6 RGB, values encode (sample, row, column, channel).
        let nhwc = Tensor(shape: [4, 5, 6, 3], scalars: (0..<360).map { Float($0) })
        let nhwcPath = folder.appendingPathComponent("train_images.npy").path
        try NPY.write(nhwc, to: nhwcPath)
        try NPY.write(Tensor(shape: [4], scalars: [2, 0, 1, 1]), to: folder.appendingPathComponent("train_labels.npy").path)
        let source = try openDataSource(nhwcPath, preprocessing: Preprocessing(channels: 3))
        #expect(source.hasLabels && source.classNames == ["0", "1", "2"])
        let sample = try source.sample(at: 2)
        #expect(sample.label == 1 && sample.image.shape == [3, 5, 6])
        #expect(sample.image[1, 4, 5] == nhwc[2, 4, 5, 1])

        // The same values stored NCHW read back to the same samples.
        var nchwValues = [Float](repeating: 0, count: 360)
        for n in 0..<4 { for h in 0..<5 { for w in 0..<6 { for c in 0..<3 {
            nchwValues[((n * 3 + c) * 5 + h) * 6 + w] = nhwc[n, h, w, c]
        } } } }
        let nchwPath = folder.appendingPathComponent("nchw.npy").path
        try NPY.write(Tensor(shape: [4, 3, 5, 6], scalars: nchwValues), to: nchwPath)
        let nchw = try openDataSource(nchwPath, preprocessing: Preprocessing(channels: 3), labelsPath: folder.appendingPathComponent("train_labels.npy").path)
        #expect(try nchw.sample(at: 2).image == sample.image)

        // [N, 3, H, 3] is ambiguous: the error asks for the layout, and an explicit one works.
        let ambiguousPath = folder.appendingPathComponent("ambiguous.npy").path
        try NPY.write(Tensor(shape: [2, 3, 4, 3]), to: ambiguousPath)
        let ambiguous = dataError { _ = try openDataSource(ambiguousPath, preprocessing: Preprocessing(channels: 3)) }
        #expect(ambiguous?.description.contains("give the layout") == true)
        let explicit = try openDataSource(ambiguousPath, preprocessing: Preprocessing(channels: 3), layout: .nhwc)
        #expect(try explicit.sample(at: 0).image.shape == [3, 3, 4])
        #expect(explicit.hasLabels == false)
        #expect(try explicit.sample(at: 1).label == -1)

        // Labels of another length.
        let mismatch = dataError {
            _ = try openDataSource(nhwcPath, preprocessing: Preprocessing(channels: 3), labelsPath: ambiguousPath)
        }
        #expect(mismatch != nil)
        let shortLabels = folder.appendingPathComponent("short.npy").path
        try NPY.write(Tensor(shape: [3], scalars: [0, 1, 2]), to: shortLabels)
        let counted = dataError { _ = try openDataSource(nhwcPath, preprocessing: Preprocessing(channels: 3), labelsPath: shortLabels) }
        guard case .labelCountMismatch(_, 4, let labelsPath, 3)? = counted else { Issue.record("got \(String(describing: counted))"); return }
        #expect(labelsPath == shortLabels)
        let negative = folder.appendingPathComponent("negative.npy").path
        try NPY.write(Tensor(shape: [4], scalars: [0, 1, -1, 2]), to: negative)
        let invalid = dataError { _ = try openDataSource(nhwcPath, preprocessing: Preprocessing(channels: 3), labelsPath: negative) }
        guard case .invalidLabel(_, 2, _)? = invalid else { Issue.record("got \(String(describing: invalid))"); return }
    }

    @Test("the shared CIFAR-10 .npy (NHWC float) reads like the PNGs",
          .enabled(if: Fixtures.sharedAvailable, "needs ../shared/data/cifar10-20 (or $LANCE_SHARED); it is missing"))
    func cifarNHWC() throws {
        let source = try openDataSource(Fixtures.data("cifar10-20/images_nhwc.npy"), preprocessing: Preprocessing(channels: 3))
        #expect(source.count == 20 && source.hasLabels)
        let sample = try source.sample(at: 3)
        #expect(sample.label == 0)
        let png = try ImageDecoder.decode(contentsOf: Fixtures.data("cifar10-20/cifar10_03_0.png"))
        let direct = try Preprocessor(Preprocessing(channels: 3)).apply(to: png, path: "png", index: 3)
        #expect(sample.image == direct)
    }
}
