import Foundation
import LanceTestSupport
import Testing

/// Runs a built tool from the products folder and returns its exit status and output.
func runTool(_ name: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var executable = products.appendingPathComponent(name)
    if !FileManager.default.fileExists(atPath: executable.path) {
        // Under `swift test` the runner lives in a bundle inside the products folder.
        executable = products.deletingLastPathComponent().appendingPathComponent(name)
        if !FileManager.default.fileExists(atPath: executable.path) {
            executable = Fixtures.projectRoot.appendingPathComponent(".build/debug/\(name)")
        }
    }
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

@Suite("lance-inspect and lance-eval")
struct CLITests {
    @Test("usage errors exit 64")
    func usageError() throws {
        let result = try runTool("lance-eval", ["model.onnx"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("--data"))
    }
}
