import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceTestSupport
import Testing

@Suite("IDX files (Fashion-MNIST)",
       .enabled(if: Fixtures.fashionMNISTAvailable,
                "needs Fashion-MNIST in /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist) or $LANCE_FASHION_MNIST; it is missing"))
struct IDXTests {
    static let trainImages = Fixtures.fashionMNIST("train-images-idx3-ubyte.gz")

    @Test("gzip training pair: 60000 grey 28×28 samples, first label 9 (ankle boot), known pixels")
    func gzipTrain() throws {
        let source = try openDataSource(Self.trainImages, preprocessing: Preprocessing(channels: 1))
        #expect(source.count == 60000)
        #expect(source.hasLabels)
        #expect(source.classNames == (0..<10).map(String.init))
        #expect(source.sampleDescription.contains("60000 grey 28×28"))
        let first = try source.sample(at: 0)
        #expect(first.label == 9)
        #expect(first.image.shape == [1, 28, 28])
        // Values computed independently with Python's gzip and NumPy.
        #expect(first.image[0, 14, 14] == 217)
        #expect((10..<20).map { first.image[0, 3, $0] } == [0, 0, 1, 0, 0, 13, 73, 0, 0, 1])
        #expect(first.image.scalars.reduce(0, +) == 76247)
        let labels = try (1..<10).map { try source.sample(at: $0).label }
        #expect(labels == [0, 0, 3, 0, 2, 7, 2, 5, 5])
        let last = try source.sample(at: 59999)
        #expect(last.label == 5 && last.image.scalars.reduce(0, +) == 16684)
    }

    @Test("the folder plus a split, and the FOLDER/SPLIT prefix, find the test pair")
    func splitAndPrefix() throws {
        let bySplit = try openDataSource(Fixtures.fashionMNISTRoot.path, preprocessing: Preprocessing(channels: 1), split: "t10k")
        let byPrefix = try openDataSource(Fixtures.fashionMNIST("t10k"), preprocessing: Preprocessing(channels: 1))
        for source in [bySplit, byPrefix] {
            #expect(source.count == 10000)
            let first = try source.sample(at: 0)
            #expect(first.label == 9 && first.image.scalars.reduce(0, +) == 33456 && first.image[0, 14, 14] == 110)
        }
        let error = dataError { _ = try openDataSource(Fixtures.fashionMNISTRoot.path, preprocessing: Preprocessing(channels: 1)) }
        guard case .invalidOption(let name, let reason)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(name == "split" && reason.contains("train") && reason.contains("t10k"))
        let unknown = dataError { _ = try openDataSource(Fixtures.fashionMNISTRoot.path, preprocessing: Preprocessing(channels: 1), split: "valid") }
        #expect(unknown?.description.contains("no IDX split 'valid'") == true)
    }

    @Test("uncompressed IDX files read the same as the gzip ones")
    func uncompressed() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
            try run("/bin/gzip", ["-dc", Fixtures.fashionMNIST(name + ".gz")], stdout: folder.appendingPathComponent(name).path)
        }
        let raw = try openDataSource(folder.appendingPathComponent("t10k-images-idx3-ubyte").path, preprocessing: unitScale)
        let compressed = try openDataSource(Fixtures.fashionMNIST("t10k-images-idx3-ubyte.gz"), preprocessing: unitScale)
        #expect(raw.count == 10000)
        for index in [0, 1, 4321, 9999] {
            let (a, b) = (try raw.sample(at: index), try compressed.sample(at: index))
            #expect(a.image == b.image && a.label == b.label)
        }
        #expect(abs(try raw.sample(at: 0).image[0, 14, 14] - Float(110) / 255) < 1e-7)
    }

    @Test("bad magic, truncated files, damaged gzip and a count mismatch are typed errors naming the file")
    func damagedFiles() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let rawImages = folder.appendingPathComponent("raw-images-idx3-ubyte").path
        try run("/bin/gzip", ["-dc", Fixtures.fashionMNIST("t10k-images-idx3-ubyte.gz")], stdout: rawImages)
        let rawLabels = folder.appendingPathComponent("raw-labels-idx1-ubyte").path
        try run("/bin/gzip", ["-dc", Fixtures.fashionMNIST("t10k-labels-idx1-ubyte.gz")], stdout: rawLabels)

        // Labels stored where the images should be: bad magic.
        let swapped = folder.appendingPathComponent("swap-images-idx3-ubyte").path
        try FileManager.default.copyItem(atPath: rawLabels, toPath: swapped)
        try FileManager.default.copyItem(atPath: rawLabels, toPath: folder.appendingPathComponent("swap-labels-idx1-ubyte").path)
        let magic = dataError { _ = try openDataSource(swapped, preprocessing: unitScale) }
        guard case .badMagic(let path, _, let found)? = magic else { Issue.record("got \(String(describing: magic))"); return }
        #expect(path == swapped && found.contains("00000801"))

        // Cut after 1000 bytes: truncated.
        let cut = folder.appendingPathComponent("cut-images-idx3-ubyte").path
        try writePrefix(of: rawImages, bytes: 1000, to: cut)
        try FileManager.default.copyItem(atPath: rawLabels, toPath: folder.appendingPathComponent("cut-labels-idx1-ubyte").path)
        let truncated = dataError { _ = try openDataSource(cut, preprocessing: unitScale) }
        guard case .truncatedFile(let truncatedPath, _)? = truncated else { Issue.record("got \(String(describing: truncated))"); return }
        #expect(truncatedPath == cut)

        // A gzip file cut in the middle.
        let cutGzip = folder.appendingPathComponent("gz-images-idx3-ubyte.gz").path
        try writePrefix(of: Fixtures.fashionMNIST("t10k-images-idx3-ubyte.gz"), bytes: 100_000, to: cutGzip)
        try FileManager.default.copyItem(atPath: Fixtures.fashionMNIST("t10k-labels-idx1-ubyte.gz"),
                                         toPath: folder.appendingPathComponent("gz-labels-idx1-ubyte.gz").path)
        let cutError = dataError { _ = try openDataSource(cutGzip, preprocessing: unitScale) }
        guard case .truncatedFile(let gzipPath, _)? = cutError else { Issue.record("got \(String(describing: cutError))"); return }
        #expect(gzipPath == cutGzip)

        // Damaged deflate data.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Fixtures.fashionMNIST("t10k-images-idx3-ubyte.gz"))))
        for offset in stride(from: 40, to: 400, by: 3) { bytes[offset] ^= 0x5A }
        let damaged = folder.appendingPathComponent("bad-images-idx3-ubyte.gz").path
        try Data(bytes).write(to: URL(fileURLWithPath: damaged))
        try FileManager.default.copyItem(atPath: rawLabels, toPath: folder.appendingPathComponent("bad-labels-idx1-ubyte").path)
        let corrupt = dataError { _ = try openDataSource(damaged, preprocessing: unitScale) }
        guard case .corruptCompressedData(let corruptPath, _)? = corrupt else { Issue.record("got \(String(describing: corrupt))"); return }
        #expect(corruptPath == damaged)

        // 10000 images with 60000 labels.
        let mixed = folder.appendingPathComponent("mix-images-idx3-ubyte").path
        try FileManager.default.copyItem(atPath: rawImages, toPath: mixed)
        try FileManager.default.copyItem(atPath: Fixtures.fashionMNIST("train-labels-idx1-ubyte.gz"),
                                         toPath: folder.appendingPathComponent("mix-labels-idx1-ubyte.gz").path)
        let mismatch = dataError { _ = try openDataSource(mixed, preprocessing: unitScale) }
        guard case .labelCountMismatch(_, 10000, _, 60000)? = mismatch else { Issue.record("got \(String(describing: mismatch))"); return }
        #expect(mismatch!.description.contains("mix-labels-idx1-ubyte.gz"))

        // Images without their labels file.
        let lonely = folder.appendingPathComponent("alone-images-idx3-ubyte").path
        try FileManager.default.copyItem(atPath: rawImages, toPath: lonely)
        let missing = dataError { _ = try openDataSource(lonely, preprocessing: unitScale) }
        guard case .missingFile(let missingPath, _)? = missing else { Issue.record("got \(String(describing: missing))"); return }
        #expect(missingPath.contains("alone-labels-idx1-ubyte"))

        // The labels file passed as the data.
        let labelsGiven = dataError { _ = try openDataSource(rawLabels, preprocessing: unitScale) }
        #expect(labelsGiven?.description.contains("pass the images file") == true)
    }

    @Test("60000 samples in batches of 256: fixed batch shapes and no memory growth")
    func memoryBound() throws {
        // Enlarged to 3×56×56, all samples together would take 2.2 GB; batch by batch, memory
        // must not grow by more than noise (other tests run in the same process at the same time).
        let preprocessing = Preprocessing(size: [56, 56], resize: .direct, scale: 1 / 255, channels: 3)
        let source = try openDataSource(Self.trainImages, preprocessing: preprocessing)
        var batches = try BatchIterator(source: source, batchSize: 256, shuffleSeed: 3)
        #expect(batches.batchCount == 235)
        var seen = 0, count = 0
        var labelCounts = [Int](repeating: 0, count: 10)
        let before = residentBytes()
        var largestGrowth = 0
        while let batch = try batches.next() {
            let expected = count == 234 ? 60000 - 234 * 256 : 256
            #expect(batch.images.shape == [expected, 3, 56, 56])
            #expect(batch.labels.count == expected)
            for label in batch.labels { labelCounts[label] += 1 }
            seen += batch.labels.count
            count += 1
            if let before, let now = residentBytes() { largestGrowth = max(largestGrowth, now - before) }
        }
        #expect(seen == 60000 && count == 235)
        #expect(labelCounts == [Int](repeating: 6000, count: 10))
        // Keeping the samples would add 2.2 GB; other tests of this process (real models) can add a
        // few hundred MiB meanwhile, so the bound is 1 GiB.
        #expect(largestGrowth < 1 << 30, "resident memory grew by \(largestGrowth >> 20) MiB")
        var dropped = try BatchIterator(source: source, batchSize: 256, dropLast: true, limit: 1000)
        var shapes: [[Int]] = []
        while let batch = try dropped.next() { shapes.append(batch.images.shape) }
        #expect(shapes == [[Int]](repeating: [256, 3, 56, 56], count: 3))
    }
}
