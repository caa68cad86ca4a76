import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceTestSupport
import Testing

/// Preprocessing that only converts bytes to [0, 1] (no resize, no normalisation).
let unitScale = Preprocessing(scale: 1 / 255, channels: 1)

/// Runs `body` and returns the `DataError` it throws (nil when it throws none; any other error
/// is recorded as a test failure).
func dataError(_ body: () throws -> Void) -> DataError? {
    do {
        try body()
        return nil
    } catch let error as DataError {
        return error
    } catch {
        Issue.record("expected a DataError, got \(error)")
        return nil
    }
}

/// Runs a program and waits for it; returns its standard output.
@discardableResult
func run(_ executable: String, _ arguments: [String], stdout path: String? = nil) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let path {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    }
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

/// The first `count` bytes of `source` written to `destination`.
func writePrefix(of source: String, bytes count: Int, to destination: String) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: source))
    try data.prefix(count).write(to: URL(fileURLWithPath: destination))
}

/// Sample `index` of a `[N, ...]` tensor as a tensor of the remaining axes.
func row(_ tensor: Tensor, _ index: Int) -> Tensor {
    let size = tensor.shape.dropFirst().reduce(1, *)
    return Tensor(shape: Array(tensor.shape.dropFirst()),
                  scalars: Array(tensor.scalars[(index * size)..<((index + 1) * size)]))
}

/// The resident memory of this process in bytes (Linux `/proc/self/statm`), or nil elsewhere.
func residentBytes() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}
