import CSystemZlib
import Foundation

/// gzip decompression over the system zlib.
enum Gzip {
    /// Whether `bytes` start with the gzip magic `1f 8b`.
    static func isCompressed(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
    }

    /// Decompresses a whole gzip file (all its members, as `gunzip` does) into one buffer (no
    /// second copy is made to hand it on).
    ///
    /// - Parameter path: the file's path, for errors.
    /// - Throws: `DataError.corruptCompressedData` for damaged data,
    ///   `DataError.truncatedFile` when the stream stops before its end.
    static func decompress(_ compressed: [UInt8], path: String) throws(DataError) -> Data {
        // The last four bytes hold the uncompressed size modulo 2^32 (of the last member): a
        // capacity hint only.
        var capacity = compressed.count * 4
        if compressed.count >= 18 {
            let tail = compressed.suffix(4).reversed().reduce(0) { $0 << 8 | Int($1) }
            // Bounded: a damaged trailer must not reserve gigabytes.
            capacity = max(capacity, min(tail, compressed.count * 1100, 1 << 28))
        }
        guard compressed.count < Int(UInt32.max) else {
            throw .unreadableFile(path: path, reason: "gzip files of 4 GiB or more are not supported; decompress it first")
        }
        var output = Data()
        output.reserveCapacity(capacity)
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var stream = z_stream()
        guard lance_inflate_init_gzip(&stream) == Z_OK else {
            throw .corruptCompressedData(path: path, reason: "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        let failure: DataError? = compressed.withUnsafeBufferPointer { input -> DataError? in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = uInt(input.count)
            while true {
                let status = chunk.withUnsafeMutableBufferPointer { buffer -> Int32 in
                    stream.next_out = buffer.baseAddress
                    stream.avail_out = uInt(buffer.count)
                    let status = inflate(&stream, Z_NO_FLUSH)
                    output.append(buffer.baseAddress!, count: buffer.count - Int(stream.avail_out))
                    return status
                }
                switch status {
                case Z_OK:
                    continue
                case Z_STREAM_END:
                    // Another member may follow (concatenated gzip files); zeros are padding.
                    let rest = UnsafeBufferPointer(start: stream.next_in, count: Int(stream.avail_in))
                    if rest.allSatisfy({ $0 == 0 }) { return nil }
                    guard inflateReset(&stream) == Z_OK else {
                        return .corruptCompressedData(path: path, reason: "zlib could not restart after a member")
                    }
                case Z_BUF_ERROR where stream.avail_in == 0:
                    return .truncatedFile(path: path, reason: "the gzip stream stops before its end marker")
                case Z_MEM_ERROR:
                    return .corruptCompressedData(path: path, reason: "out of memory while decompressing")
                default:
                    let message = stream.msg.map { String(cString: $0) } ?? "zlib status \(status)"
                    return .corruptCompressedData(path: path, reason: message)
                }
            }
        }
        if let failure { throw failure }
        return output
    }
}
