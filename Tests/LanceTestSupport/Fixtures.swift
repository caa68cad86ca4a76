import Foundation
import LanceCore

/// Locates the reference material tests run on: `shared/` next to the project (pretrained models
/// and reference outputs) and the Debian ONNX conformance suite.
public enum Fixtures {
    /// The project's root folder (three levels above this file).
    public static let projectRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `shared/` beside the project, or `$LANCE_SHARED` when set.
    public static let sharedRoot: URL = {
        if let override = ProcessInfo.processInfo.environment["LANCE_SHARED"], !override.isEmpty {
            return URL(fileURLWithPath: override)
        }
        return projectRoot.deletingLastPathComponent().appendingPathComponent("shared")
    }()

    /// Whether the shared models and data are present. When they are missing, the tests that need
    /// them are skipped with a message naming the folder, unless `LANCE_REQUIRE_SHARED=1` (set by
    /// `.ci/run`), which turns their absence into a failure.
    public static var sharedAvailable: Bool {
        let present = FileManager.default.fileExists(atPath: sharedRoot.appendingPathComponent("models").path)
        if !present && ProcessInfo.processInfo.environment["LANCE_REQUIRE_SHARED"] == "1" {
            fatalError("LANCE_REQUIRE_SHARED=1 but \(sharedRoot.path)/models does not exist")
        }
        return present
    }


    /// A file under `shared/models`.
    public static func model(_ name: String) -> String { sharedRoot.appendingPathComponent("models/\(name)").path }

    /// A file under `shared/data`.
    public static func data(_ name: String) -> String { sharedRoot.appendingPathComponent("data/\(name)").path }

    /// The ONNX conformance suite's node tests (Debian package `libonnx-testdata`), or
    /// `$LANCE_ONNX_TESTDATA`.
    public static let conformanceRoot: URL = {
        if let override = ProcessInfo.processInfo.environment["LANCE_ONNX_TESTDATA"], !override.isEmpty {
            return URL(fileURLWithPath: override)
        }
        return URL(fileURLWithPath: "/usr/share/libonnx-testdata/data/node")
    }()

    /// Whether the conformance suite is installed (`apt-get install libonnx-testdata`).
    public static var conformanceAvailable: Bool {
        FileManager.default.fileExists(atPath: conformanceRoot.path)
    }

    /// Fashion-MNIST's IDX files (Debian package `dataset-fashion-mnist`), or
    /// `$LANCE_FASHION_MNIST`.
    public static let fashionMNISTRoot: URL = {
        if let override = ProcessInfo.processInfo.environment["LANCE_FASHION_MNIST"], !override.isEmpty {
            return URL(fileURLWithPath: override)
        }
        return URL(fileURLWithPath: "/usr/share/datasets/fashion-mnist")
    }()

    /// Whether Fashion-MNIST is installed (`apt-get install dataset-fashion-mnist`).
    public static var fashionMNISTAvailable: Bool {
        FileManager.default.fileExists(atPath: fashionMNISTRoot.appendingPathComponent("train-images-idx3-ubyte.gz").path)
    }

    /// A file of Fashion-MNIST (`train-images-idx3-ubyte.gz`, ...).
    public static func fashionMNIST(_ name: String) -> String { fashionMNISTRoot.appendingPathComponent(name).path }

    /// A file under `Samples/data` (the LanceData fixtures made by `Samples/make-samples/make_data_samples.sh`).
    public static func sampleData(_ name: String) -> String {
        projectRoot.appendingPathComponent("Samples/data/\(name)").path
    }

    /// A fresh empty temporary folder.
    public static func temporaryDirectory() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lance-tests-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Deterministic pseudo-random numbers for reproducible test inputs.
public typealias SeededGenerator = SplitMix64

extension Tensor {
    /// A tensor of uniform values in `range`, reproducible from `seed`.
    public static func random(shape: [Int], in range: ClosedRange<Float> = -1...1, seed: UInt64) -> Tensor {
        var generator = SeededGenerator(seed: seed)
        return Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in Float.random(in: range, using: &generator) })
    }

    /// Whether every element is within `absolute + relative · |expected|` of `expected`.
    public func isClose(to expected: Tensor, absolute: Float = 1e-5, relative: Float = 1e-4) -> Bool {
        guard shape == expected.shape else { return false }
        return zip(scalars, expected.scalars).allSatisfy { actual, wanted in
            if actual.isNaN || wanted.isNaN { return actual.isNaN && wanted.isNaN }
            if actual.isInfinite || wanted.isInfinite { return actual == wanted }
            return abs(actual - wanted) <= absolute + relative * abs(wanted)
        }
    }
}
