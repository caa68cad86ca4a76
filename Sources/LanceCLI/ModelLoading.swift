import ArgumentParser
import Foundation
import LanceKeras
import LanceModel
import LanceONNX

/// Errors of the command-line tools themselves (the libraries' errors pass through unchanged).
public enum CommandError: Error, CustomStringConvertible {
    /// The model file's extension names no format the tools read.
    case unknownModelFormat(path: String)
    /// Data given on the command line does not fit the model.
    case dataMismatch(path: String, reason: String)

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .unknownModelFormat(let path):
            "\(path): unknown model format; expected .onnx, .h5 or .keras"
        case .dataMismatch(let path, let reason):
            "\(path): \(reason)"
        }
    }
}

/// Loads a model file by its extension: `.onnx`, Keras `.h5` / `.keras`, or Keras weights-only
/// `.h5` when `architecture` (the `model.to_json()` file) is given.
public func loadModel(_ path: String, architecture: String? = nil) throws -> Graph {
    switch URL(fileURLWithPath: path).pathExtension.lowercased() {
    case "onnx":
        return try ONNXImporter.importModel(at: path)
    case "h5", "hdf5", "keras":
        if let architecture { return try KerasImporter.importModel(weightsAt: path, architectureAt: architecture) }
        return try KerasImporter.importModel(at: path)
    default:
        throw CommandError.unknownModelFormat(path: path)
    }
}

/// Runs a command body, printing the operator table of an unsupported-operator error on stderr
/// before the error itself.
func reportingUnsupportedOperators<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ONNXError {
        if let table = error.operatorTable {
            FileHandle.standardError.write(Data("Error: \(error.description)\n\(table)\n".utf8))
            throw ExitCode.failure
        }
        throw error
    } catch let error as KerasError {
        if let table = error.layerTable {
            FileHandle.standardError.write(Data("Error: \(error.description)\n\(table)\n".utf8))
            throw ExitCode.failure
        }
        throw error
    }
}

/// Writes a line to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
