// swift-tools-version: 6.1
import PackageDescription

// Benchmarks live in their own package so the main build and CI never compile them.
// Build and run them with `bash Benchmarks/forward.sh` (see docs/performance.md).
let package = Package(
    name: "LanceBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Lance", path: "../"),
    ],
    targets: [
        .executableTarget(
            name: "lance-forward-bench",
            dependencies: [
                .product(name: "LanceCore", package: "Lance"),
                .product(name: "LanceONNX", package: "Lance"),
                .product(name: "LanceRuntime", package: "Lance"),
                .product(name: "LanceData", package: "Lance"),
                .product(name: "LanceCLI", package: "Lance"),
                .product(name: "LanceLinalg", package: "Lance"),
            ]
        ),
        .executableTarget(
            name: "lance-train-bench",
            dependencies: [
                .product(name: "LanceCore", package: "Lance"),
                .product(name: "LanceData", package: "Lance"),
                .product(name: "LanceModel", package: "Lance"),
                .product(name: "LanceONNX", package: "Lance"),
                .product(name: "LanceTrain", package: "Lance"),
            ]
        ),
        .executableTarget(
            name: "lance-container-bench",
            dependencies: [
                .product(name: "LanceFormat", package: "Lance"),
                .product(name: "LanceModel", package: "Lance"),
                .product(name: "LanceONNX", package: "Lance"),
            ]
        ),
    ]
)
