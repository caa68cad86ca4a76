#if _endian(big)
#error("LanceFormat stores little-endian payloads by reinterpreting memory; big-endian hosts are not supported")
#endif

/// The fixed parts of the byte layout (normative description: `docs/container-format.md`).
enum ContainerLayout {
    /// `"LANCE\r\n"` then `0x1A` (the bytes break on text-mode and line-ending conversions).
    static let magic: [UInt8] = [0x4C, 0x41, 0x4E, 0x43, 0x45, 0x0D, 0x0A, 0x1A]
    /// The major version this build writes and the highest it reads.
    static let majorVersion: UInt16 = 1
    /// The minor version this build writes.
    static let minorVersion: UInt16 = 0
    /// Bytes of the fixed header; the manifest starts here.
    static let headerSize = 40
    /// Bytes 0..<12 (magic, major, minor) keep their meaning in every version.
    static let versionPrefixSize = 12
    /// Every blob starts at a multiple of this.
    static let blobAlignment = 64

    /// `value` rounded up to a multiple of `blobAlignment`.
    static func aligned(_ value: Int) -> Int {
        (value + blobAlignment - 1) / blobAlignment * blobAlignment
    }
}

/// The 40-byte header. All integers are little-endian.
///
/// ```
/// 0   8  magic
/// 8   2  major version (u16)
/// 10  2  minor version (u16)
/// 12  4  flags (u32; 0, reserved)
/// 16  8  file length in bytes (u64)
/// 24  8  manifest length in bytes (u64)
/// 32  4  manifest CRC-32C (u32)
/// 36  4  header CRC-32C of bytes 0..<36 (u32)
/// ```
struct ContainerHeader: Equatable {
    var majorVersion: UInt16 = ContainerLayout.majorVersion
    var minorVersion: UInt16 = ContainerLayout.minorVersion
    var flags: UInt32 = 0
    var fileLength: UInt64
    var manifestLength: UInt64
    var manifestChecksum: UInt32

    /// The 40 header bytes, checksum included.
    func encoded() -> [UInt8] {
        var bytes = ContainerLayout.magic
        func append<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        append(majorVersion)
        append(minorVersion)
        append(flags)
        append(fileLength)
        append(manifestLength)
        append(manifestChecksum)
        append(CRC32C.checksum(bytes))
        return bytes
    }

    /// Decodes and checks the header at the start of `file` (`count` bytes available): magic,
    /// version, header checksum, recorded length against the actual length.
    static func decode(_ file: UnsafeRawBufferPointer, path: String) throws(ContainerError) -> ContainerHeader {
        let magic = ContainerLayout.magic
        let available = min(file.count, magic.count)
        for index in 0..<available where file[index] != magic[index] { throw .notAContainer(path: path) }
        guard file.count >= ContainerLayout.versionPrefixSize else {
            throw .truncated(path: path, expectedBytes: ContainerLayout.headerSize, actualBytes: file.count)
        }
        func read<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
            T(littleEndian: file.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        let major = read(UInt16.self, at: 8)
        let minor = read(UInt16.self, at: 10)
        guard major <= ContainerLayout.majorVersion else {
            throw .newerMajorVersion(path: path, fileMajor: Int(major), fileMinor: Int(minor),
                                     supportedMajor: Int(ContainerLayout.majorVersion))
        }
        guard major >= 1 else {
            throw .malformedManifest(path: path, field: "header.major_version", reason: "version 0 was never written by any LANCE release")
        }
        guard file.count >= ContainerLayout.headerSize else {
            // The recorded length cannot be verified yet; it is still the best estimate of what is missing.
            var expected = ContainerLayout.headerSize
            if file.count >= 24, let recorded = Int(exactly: read(UInt64.self, at: 16)), recorded > expected { expected = recorded }
            throw .truncated(path: path, expectedBytes: expected, actualBytes: file.count)
        }
        let storedChecksum = read(UInt32.self, at: 36)
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: file[0..<36])) == storedChecksum else {
            throw .headerChecksumMismatch(path: path)
        }
        let header = ContainerHeader(majorVersion: major, minorVersion: minor, flags: read(UInt32.self, at: 12),
                                     fileLength: read(UInt64.self, at: 16), manifestLength: read(UInt64.self, at: 24),
                                     manifestChecksum: read(UInt32.self, at: 32))
        if header.fileLength > UInt64(file.count) {
            throw .truncated(path: path, expectedBytes: Int(clamping: header.fileLength), actualBytes: file.count)
        }
        if header.fileLength < UInt64(file.count) {
            throw .unexpectedTrailingBytes(path: path, expectedBytes: Int(header.fileLength), actualBytes: file.count)
        }
        guard header.manifestLength <= UInt64(file.count - ContainerLayout.headerSize) else {
            throw .malformedManifest(path: path, field: "header.manifest_length",
                                     reason: "the manifest of \(header.manifestLength) bytes does not fit in the file of \(file.count) bytes")
        }
        return header
    }
}
