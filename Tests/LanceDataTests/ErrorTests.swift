import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceTestSupport
import Testing

@Suite("Bad input gives typed errors that name the file, never a crash")
struct ErrorTests {
    /// A temporary class folder `root/CLASS/NAME` holding the given files.
    func classFolder(_ files: [String: Data]) throws -> URL {
        let root = Fixtures.temporaryDirectory()
        for (relative, data) in files {
            let url = root.appendingPathComponent(relative)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: url)
        }
        return root
    }

    func sample(_ name: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: Fixtures.sampleData(name))) }

    @Test("missing paths, unknown formats, a single image")
    func unknownInputs() throws {
        let missing = dataError { _ = try openDataSource("/nonexistent/data.npy", preprocessing: unitScale) }
        guard case .missingFile(let path, _)? = missing else { Issue.record("got \(String(describing: missing))"); return }
        #expect(path == "/nonexistent/data.npy")
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let text = folder.appendingPathComponent("notes.txt")
        try Data("hello".utf8).write(to: text)
        let unknown = dataError { _ = try openDataSource(text.path, preprocessing: unitScale) }
        guard case .unknownFormat(let unknownPath, _)? = unknown else { Issue.record("got \(String(describing: unknown))"); return }
        #expect(unknownPath == text.path && unknown!.description.contains("68 65 6c 6c"))
        let image = dataError { _ = try openDataSource(Fixtures.sampleData("variants/rgba.png"), preprocessing: unitScale) }
        #expect(image?.description.contains("single image") == true)
        let empty = folder.appendingPathComponent("empty.bin")
        try Data().write(to: empty)
        #expect(dataError { _ = try openDataSource(empty.path, preprocessing: unitScale) }?.description.contains("empty") == true)
        // A damaged .npz and a damaged HDF5 file.
        let npz = folder.appendingPathComponent("cut.npz")
        try sample("tiny.npz").prefix(200).write(to: npz)
        let npzError = dataError { _ = try openDataSource(npz.path, preprocessing: unitScale) }
        #expect(npzError?.description.hasPrefix(npz.path) == true, "\(String(describing: npzError))")
        let h5 = folder.appendingPathComponent("cut.h5")
        try sample("tiny.h5").prefix(3000).write(to: h5)
        let h5Error = dataError { _ = try openDataSource(h5.path, preprocessing: unitScale) }
        #expect(h5Error?.description.contains(h5.path) == true, "\(String(describing: h5Error))")
        // An HDF5 file without images.
        let noImages = dataError { _ = try openDataSource(Fixtures.sampleData("tiny.h5"), preprocessing: unitScale, split: "valid") }
        guard case .missingArray? = noImages else { Issue.record("got \(String(describing: noImages))"); return }
    }

    @Test("truncated and garbage JPEG/PNG files: corruptImage naming the image file")
    func corruptImages() throws {
        let jpeg = try sample("images/airplane/b.jpg"), png = try sample("images/airplane/a.png")
        let root = try classFolder([
            "a/good.png": png,
            "a/truncated.jpg": jpeg.prefix(jpeg.count / 2),
            "a/truncated.png": png.prefix(png.count / 2),
            "b/garbage.jpg": Data([0xFF, 0xD8, 0xFF] + [UInt8](repeating: 0x42, count: 500)),
            "b/text.png": Data("not a png at all".utf8),
            "b/empty.jpg": Data(),
        ])
        defer { try? FileManager.default.removeItem(at: root) }
        let source = try openDataSource(root.path, preprocessing: Preprocessing(scale: 1 / 255, channels: 3))
        #expect(source.count == 6)
        #expect(try source.sample(at: 0).image.shape == [3, 32, 32])
        for index in 1..<6 {
            let error = dataError { _ = try source.sample(at: index) }
            guard case .corruptImage(let path, let reason)? = error else { Issue.record("sample \(index): got \(String(describing: error))"); continue }
            #expect(path == source.samplePath(at: index))
            #expect(!reason.isEmpty)
        }
        // In a batch, the first failing sample's error is thrown.
        var batches = try BatchIterator(source: source, batchSize: 6)
        let batchError = dataError { _ = try batches.next() }
        guard case .corruptImage(let batchPath, _)? = batchError else { Issue.record("got \(String(describing: batchError))"); return }
        #expect(batchPath.hasSuffix("a/truncated.jpg"))
    }

    @Test("empty class folders and loose images")
    func folderShapes() throws {
        let png = try sample("images/airplane/a.png")
        let emptyClass = try classFolder(["a/x.png": png, "b/readme.txt": Data("x".utf8)])
        defer { try? FileManager.default.removeItem(at: emptyClass) }
        let error = dataError { _ = try openDataSource(emptyClass.path, preprocessing: unitScale) }
        guard case .noImages(let path, let reason)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(path.hasSuffix("/b") && reason.contains("'b'"))
        let loose = try classFolder(["x.png": png])
        defer { try? FileManager.default.removeItem(at: loose) }
        #expect(dataError { _ = try openDataSource(loose.path, preprocessing: unitScale) }?.description.contains("one sub-folder per class") == true)
    }

    @Test("images of different sizes: batching without a size fails, a resize rule fixes it")
    func differentSizes() throws {
        let root = try classFolder(["a/small.png": try sample("images/airplane/a.png"),
                                    "a/wide.png": try sample("variants/grey16.png")])
        defer { try? FileManager.default.removeItem(at: root) }
        let plain = try openDataSource(root.path, preprocessing: Preprocessing(scale: 1 / 255, channels: 3))
        var batches = try BatchIterator(source: plain, batchSize: 2)
        let error = dataError { _ = try batches.next() }
        guard case .inconsistentSampleShapes(let path, 1, [3, 16, 24], [3, 32, 32])? = error else {
            Issue.record("got \(String(describing: error))"); return
        }
        #expect(path.hasSuffix("wide.png") && error!.description.contains("resize rule"))
        // Fingerprints still work sample by sample.
        #expect(try fingerprint(of: plain).count == 64)
        let strict = try openDataSource(root.path, preprocessing: Preprocessing(size: [32, 32], resize: .none, channels: 3))
        let mismatch = dataError { _ = try strict.sample(at: 1) }
        guard case .sampleSizeMismatch(_, 1, [16, 24], [32, 32], _)? = mismatch else { Issue.record("got \(String(describing: mismatch))"); return }
        for rule in [Preprocessing.Resize.direct, .shortSideThenCenterCrop] {
            let resized = try openDataSource(root.path, preprocessing: Preprocessing(size: [16, 16], resize: rule, channels: 3))
            var iterator = try BatchIterator(source: resized, batchSize: 2)
            #expect(try iterator.next()?.images.shape == [2, 3, 16, 16])
        }
    }

    @Test("channel mismatches and invalid preprocessing descriptions")
    func invalidPreprocessing() throws {
        let rgb = try openDataSource(Fixtures.sampleData("images"), preprocessing: Preprocessing(channels: 1))
        let error = dataError { _ = try rgb.sample(at: 0) }
        guard case .channelMismatch(let path, 0, 3, 1)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(path.hasSuffix("airplane/a.png"))
        let invalid: [Preprocessing] = [
            Preprocessing(resize: .direct),
            Preprocessing(size: [224], resize: .direct),
            Preprocessing(size: [224, 224], resize: .shortSideThenCenterCrop, resizeShortSide: 200),
            Preprocessing(mean: [0, 0]),
            Preprocessing(standardDeviation: [1, 0, 1]),
            Preprocessing(channels: 0),
        ]
        for preprocessing in invalid {
            let failure = dataError { _ = try Preprocessor(preprocessing) }
            guard case .invalidPreprocessing? = failure else { Issue.record("\(preprocessing): got \(String(describing: failure))"); continue }
        }
        let source = try openDataSource(Fixtures.sampleData("tiny.h5"), preprocessing: Preprocessing(channels: 3))
        #expect(dataError { _ = try source.sample(at: 10) }?.description.contains("outside 0..<10") == true)
        #expect(dataError { _ = try source.sample(at: -1) } != nil)
    }
}

@Suite("Damaged files never crash the readers")
struct DamagedFileTests {
    /// Copies of `data` with a few bytes changed or the end cut, reproducible from the seed.
    static func damagedCopies(of data: Data, count: Int, seed: UInt64) -> [Data] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { copy in
            var bytes = [UInt8](data)
            if copy % 4 == 3 {
                bytes.removeLast(Int(generator.uniform(below: UInt64(bytes.count))))
            } else {
                for _ in 0..<(1 + copy % 5) {
                    bytes[Int(generator.uniform(below: UInt64(bytes.count)))] = UInt8(truncatingIfNeeded: generator.next())
                }
            }
            return Data(bytes)
        }
    }

    @Test("flipped and cut JPEG, PNG, .npy, .npz and IDX files give a sample or a DataError",
          arguments: ["images/airplane/b.jpg", "variants/progressive.jpg", "images/airplane/a.png", "variants/palette.png",
                      "images_labels.npy", "tiny.npz", "idx"])
    func damaged(_ name: String) throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let original: Data
        if name == "idx" {
            // 3 images of 4×5 and their labels, as IDX files.
            original = Data([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5] + (0..<60).map { UInt8($0) })
            try Data([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]).write(to: folder.appendingPathComponent("d-labels-idx1-ubyte"))
        } else {
            original = try Data(contentsOf: URL(fileURLWithPath: Fixtures.sampleData(name)))
        }
        let isImage = name.hasSuffix(".jpg") || name.hasSuffix(".png")
        for (index, copy) in Self.damagedCopies(of: original, count: 40, seed: UInt64(name.utf8.count)).enumerated() {
            let target: URL
            switch name {
            case "idx": target = folder.appendingPathComponent("d-images-idx3-ubyte")
            case _ where isImage: target = folder.appendingPathComponent("c/\(index).\(name.suffix(3))")
            default: target = folder.appendingPathComponent("d\(index).\(name.split(separator: ".").last!)")
            }
            try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try copy.write(to: target)
            _ = dataError {
                let source = try openDataSource(isImage ? folder.path : target.path, preprocessing: Preprocessing(size: [8, 8], resize: .direct, channels: 3))
                for sample in 0..<source.count { _ = try? source.sample(at: sample) }
            }
            if isImage { try FileManager.default.removeItem(at: target) }
        }
    }
}
