// swift-tools-version: 6.1
import PackageDescription

/// Numeric kernels are compiled with optimisation even in debug builds: unoptimised Swift runs
/// them hundreds of times slower, which would make `swift test` on real models impractical.
let optimisedKernels: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "Lance",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "LanceCore", targets: ["LanceCore"]),
        .library(name: "LanceLinalg", targets: ["LanceLinalg"]),
        .library(name: "LanceModel", targets: ["LanceModel"]),
        .library(name: "LanceNN", targets: ["LanceNN"]),
        .library(name: "LanceRuntime", targets: ["LanceRuntime"]),
        .library(name: "LanceONNX", targets: ["LanceONNX"]),
        .library(name: "LanceData", targets: ["LanceData"]),
        .library(name: "LanceFormat", targets: ["LanceFormat"]),
        .library(name: "LanceTrain", targets: ["LanceTrain"]),
        .library(name: "LanceHDF5", targets: ["LanceHDF5"]),
        .library(name: "LanceKeras", targets: ["LanceKeras"]),
        .library(name: "LanceCLI", targets: ["LanceCLI"]),
        .executable(name: "lance-inspect", targets: ["lance-inspect"]),
        .executable(name: "lance-eval", targets: ["lance-eval"]),
        .executable(name: "lance-convert", targets: ["lance-convert"]),
        .executable(name: "lance-export", targets: ["lance-export"]),
        .executable(name: "lance-train", targets: ["lance-train"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
    ],
    targets: [
        // C libraries from the system (Debian -dev packages), each imported by exactly one module.
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c",
                       providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLAPACKE", pkgConfig: "lapacke",
                       providers: [.apt(["liblapacke-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5", providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg62-turbo-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CSystemZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // protoc-c output for Schemas/onnx.proto (regenerate with Schemas/generate.sh).
        .target(name: "CONNXProto", dependencies: ["CProtobufC"]),
        // protoc-c output for Schemas/lance.proto (the container manifest).
        .target(name: "CLanceProto", dependencies: ["CProtobufC"]),

        .target(name: "LanceCore"),
        .target(name: "LanceLinalg", dependencies: ["LanceCore", "COpenBLAS", "CLAPACKE"],
                swiftSettings: optimisedKernels),
        .target(name: "LanceModel", dependencies: ["LanceCore"]),
        // AVX-512 forward kernels (depthwise and 3×3 convolution, GEMM prologue/epilogue) chosen at run time.
        .target(name: "CLanceKernels", cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]),
        .target(name: "LanceNN", dependencies: ["LanceCore", "LanceLinalg", "LanceModel", "CLanceKernels"],
                swiftSettings: optimisedKernels),
        .target(name: "LanceRuntime", dependencies: ["LanceCore", "LanceModel", "LanceNN"],
                swiftSettings: optimisedKernels),
        .target(name: "LanceONNX", dependencies: ["LanceCore", "LanceModel", "CONNXProto"],
                swiftSettings: optimisedKernels),
        .target(name: "LanceData", dependencies: ["LanceCore", "LanceModel", "LanceHDF5", "CJPEG", "CPNG", "CSystemZlib", "ZIPFoundation"],
                swiftSettings: optimisedKernels),
        .target(name: "LanceFormat", dependencies: ["LanceCore", "LanceModel", "CLanceProto"], swiftSettings: optimisedKernels),
        .target(name: "LanceTrain", dependencies: ["LanceCore", "LanceLinalg", "LanceModel", "LanceNN", "LanceRuntime", "LanceData"],
                swiftSettings: optimisedKernels),
        .target(name: "LanceHDF5", dependencies: ["CHDF5"]),
        .target(name: "LanceKeras", dependencies: ["LanceCore", "LanceModel", "LanceHDF5", "ZIPFoundation"],
                swiftSettings: optimisedKernels),
        .target(name: "LanceCLI", dependencies: [
            "LanceCore", "LanceModel", "LanceNN", "LanceRuntime", "LanceONNX", "LanceKeras", "LanceData", "LanceFormat",
            "LanceTrain",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "lance-inspect", dependencies: ["LanceCLI"]),
        .executableTarget(name: "lance-eval", dependencies: ["LanceCLI"]),
        .executableTarget(name: "lance-convert", dependencies: ["LanceCLI"]),
        .executableTarget(name: "lance-export", dependencies: ["LanceCLI"]),
        // The library API example of docs/library.md (built with the package so it keeps compiling).
        .executableTarget(name: "lance-example-fine-tune",
                          dependencies: ["LanceCore", "LanceData", "LanceFormat", "LanceModel", "LanceTrain"],
                          path: "Examples/fine-tune"),
        .executableTarget(name: "lance-train", dependencies: ["LanceCLI"]),

        .target(name: "LanceTestSupport", dependencies: ["LanceCore"], path: "Tests/LanceTestSupport"),
        .testTarget(name: "CShimTests",
                    dependencies: ["CProtobufC", "COpenBLAS", "CLAPACKE", "CHDF5", "CONNXProto"]),
        .testTarget(name: "LanceHDF5Tests", dependencies: ["LanceHDF5", "LanceTestSupport"]),
        .testTarget(name: "LanceDataTests", dependencies: ["LanceCore", "LanceModel", "LanceData", "LanceTestSupport"]),
        .testTarget(name: "LanceFormatTests",
                    dependencies: ["LanceCore", "LanceModel", "LanceFormat", "LanceONNX", "LanceTestSupport"]),
        .testTarget(name: "LanceTrainTests",
                    dependencies: ["LanceCore", "LanceLinalg", "LanceModel", "LanceNN", "LanceRuntime", "LanceData", "LanceTrain",
                                   "LanceONNX", "LanceTestSupport"]),
        .testTarget(name: "LanceKerasTests",
                    dependencies: ["LanceCore", "LanceModel", "LanceRuntime", "LanceKeras", "LanceData", "LanceTestSupport",
                                   "LanceONNX", "LanceFormat"]),
        .testTarget(name: "LanceNNTests",
                    dependencies: ["LanceCore", "LanceLinalg", "LanceModel", "LanceNN",
                                   "LanceTestSupport"]),
        .testTarget(name: "LanceONNXTests",
                    dependencies: ["LanceCore", "LanceModel", "LanceRuntime", "LanceONNX",
                                   "LanceData", "LanceTestSupport"]),
        .testTarget(name: "LanceCLITests",
                    dependencies: ["LanceCLI", "LanceCore", "LanceData", "LanceFormat", "LanceTestSupport",
                                   "lance-inspect", "lance-eval", "lance-convert", "lance-export", "lance-train"]),
    ]
)
