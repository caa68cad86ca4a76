/// A `.lance` file that cannot be read or written. Every case names the file and, where one is at
/// fault, the tensor or manifest field; `description` is one sentence a user can act on.
public enum ContainerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file does not start with the LANCE magic bytes.
    case notAContainer(path: String)
    /// The file is shorter than its header (or its blob table) says it must be.
    case truncated(path: String, expectedBytes: Int, actualBytes: Int)
    /// The file is longer than the length its header records.
    case unexpectedTrailingBytes(path: String, expectedBytes: Int, actualBytes: Int)
    /// The file was written by a newer major version of the format, which this build cannot read.
    case newerMajorVersion(path: String, fileMajor: Int, fileMinor: Int, supportedMajor: Int)
    /// The fixed-size header's CRC-32C does not match its bytes.
    case headerChecksumMismatch(path: String)
    /// The manifest's CRC-32C does not match its bytes.
    case manifestChecksumMismatch(path: String)
    /// A tensor payload's CRC-32C does not match the blob table.
    case blobChecksumMismatch(path: String, tensor: String)
    /// The manifest cannot be decoded, or a field in it is missing, out of range or inconsistent.
    case malformedManifest(path: String, field: String, reason: String)
    /// The file could not be opened, inspected or mapped.
    case unreadable(path: String, reason: String)
    /// The output (or its temporary file) could not be created, written, flushed or renamed.
    case unwritableOutput(path: String, reason: String)
    /// The container cannot be stored as given (for example two tensors needing the same name).
    case invalidContainer(path: String, reason: String)

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .notAContainer(let path):
            "\(path) is not a LANCE container: its first 8 bytes are not the LANCE magic \"LANCE\\r\\n\\u{1A}\""
        case .truncated(let path, let expected, let actual):
            "\(path) is truncated: expected \(expected) bytes, found \(actual); the copy or download was cut short, write it again"
        case .unexpectedTrailingBytes(let path, let expected, let actual):
            "\(path) has \(actual) bytes but its header records \(expected); bytes were appended to the container or its header is damaged"
        case .newerMajorVersion(let path, let major, let minor, let supported):
            "\(path) is a LANCE container of format v\(major).\(minor), but this build reads up to v\(supported).x; update LANCE to read it"
        case .headerChecksumMismatch(let path):
            "\(path): checksum mismatch of the header; the file is damaged"
        case .manifestChecksumMismatch(let path):
            "\(path): checksum mismatch of the manifest; the file is damaged"
        case .blobChecksumMismatch(let path, let tensor):
            "\(path): checksum mismatch of blob \(tensor); the file is damaged"
        case .malformedManifest(let path, let field, let reason):
            "\(path): malformed manifest at \(field): \(reason)"
        case .unreadable(let path, let reason):
            "\(path) cannot be read: \(reason)"
        case .unwritableOutput(let path, let reason):
            "\(path) cannot be written: \(reason); the previous file, if any, is unchanged"
        case .invalidContainer(let path, let reason):
            "cannot write \(path): \(reason)"
        }
    }
}
