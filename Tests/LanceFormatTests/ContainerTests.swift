import Foundation
import LanceCore
import LanceModel
import LanceONNX
@testable import LanceFormat
import LanceTestSupport
import Testing

@Suite("Checksums and float16")
struct PrimitiveTests {
    @Test("CRC-32C matches the RFC 3720 and common check vectors")
    func crcVectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
        #expect(CRC32C.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x2262_0404)
    }

    @Test("Slicing-by-8 agrees with the bitwise definition at every length and alignment, in pieces or at once")
    func crcAgainstBitwise() {
        func bitwise(_ bytes: ArraySlice<UInt8>) -> UInt32 {
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in bytes {
                crc ^= UInt32(byte)
                for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            }
            return crc ^ 0xFFFF_FFFF
        }
        var generator = SeededGenerator(seed: 7)
        let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &generator) }
        for start in 0..<9 {
            for end in stride(from: start, through: data.count, by: 7) {
                let slice = data[start..<end]
                let expected = bitwise(slice)
                #expect(slice.withUnsafeBytes { CRC32C.checksum($0) } == expected)
                var pieces = CRC32C()
                let middle = start + (end - start) / 3
                data[start..<middle].withUnsafeBytes { pieces.update($0) }
                data[middle..<end].withUnsafeBytes { pieces.update($0) }
                #expect(pieces.value == expected)
            }
        }
    }

    @Test("float16 → float32 is exact for all 65 536 bit patterns")
    func halfToFloatExhaustive() {
        for bits in 0...UInt16.max {
            let ours = HalfPrecision.float(fromHalfBits: bits)
            let reference = Float(Float16(bitPattern: bits))
            if reference.isNaN {
                #expect(ours.isNaN && ours.sign == reference.sign, "pattern \(bits)")
            } else {
                #expect(ours.bitPattern == reference.bitPattern, "pattern \(bits)")
            }
        }
    }

    @Test("float32 → float16 rounds to nearest even like the platform's Float16, for edge cases and 2M random patterns")
    func floatToHalf() {
        var values: [Float] = [0, -0.0, 1, -1, 65504, 65519.996, 65520, -65520, 1e10, .infinity, -.infinity, .nan, -.nan,
                               Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFC0_0000),
                               0x1p-14, 0x1p-24, 0x1p-25, 0x1.0p-25 * 1.0000001, 0x1.8p-24, 0x1.8p-25, 0x1.4p-24, 0x1.cp-24,
                               0x1p-26, .leastNonzeroMagnitude, .leastNormalMagnitude, 0x1.ffcp-15, 0x1.ffep-15,
                               1.0009765625, 1.00048828125, 1.00146484375, 2049, 2051, 4097, 1 / 3]
        for exponent in -30...17 {
            for mantissa: UInt32 in [0, 0x1000, 0x1001, 0x0FFF, 0x3000, 0x7F_E000, 0x7F_F000, 0x7F_FFFF] {
                values.append(Float(bitPattern: UInt32(exponent + 127) << 23 | mantissa))
                values.append(-Float(bitPattern: UInt32(exponent + 127) << 23 | mantissa))
            }
        }
        var generator = SeededGenerator(seed: 99)
        for _ in 0..<2_000_000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))) }
        var mismatches = 0
        for value in values {
            let ours = HalfPrecision.halfBits(from: value)
            let reference = Float16(value).bitPattern
            if value.isNaN {
                if (ours & 0x7C00) != 0x7C00 || (ours & 0x3FF) == 0 || (ours & 0x8000) != (reference & 0x8000) { mismatches += 1 }
            } else if ours != reference {
                mismatches += 1
                if mismatches < 5 { Issue.record("\(value) (0x\(String(value.bitPattern, radix: 16))): ours \(ours), Float16 \(reference)") }
            }
        }
        #expect(mismatches == 0)
    }
}

@Suite("Round trips")
struct RoundTripTests {
    @Test("A container with every operator, calibration bases, tasks, optimizer state and metrics round-trips bit-exactly")
    func everything() throws {
        let folder = Fixtures.temporaryDirectory()
        let path = folder.appendingPathComponent("every.lance").path
        let container = Samples.fullContainer()
        try ContainerFile.write(container, to: path)
        let read = try ContainerFile.read(path)
        #expect(bitwiseDifference(container, read) == nil, "\(bitwiseDifference(container, read) ?? "")")
        // Every Operator case is present in the sample.
        let kinds = Set(read.graph.nodes.map { String(describing: $0.operation).prefix(while: { $0 != "(" }) })
        #expect(kinds.count == 20, "\(kinds.sorted())")
        // Writing what was read gives the same bytes (deterministic output).
        let again = folder.appendingPathComponent("again.lance").path
        try ContainerFile.write(read, to: again)
        #expect(fileBytes(path) == fileBytes(again))
        // No temporary files stay behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["again.lance", "every.lance"])
    }

    @Test("Containers with nothing optional, and with a graph of no parameters, round-trip")
    func minimal() throws {
        let folder = Fixtures.temporaryDirectory()
        let path = folder.appendingPathComponent("minimal.lance").path
        var container = Samples.tinyContainer()
        container.tasks = []
        try ContainerFile.write(container, to: path)
        #expect(try ContainerFile.read(path) == container)
        container.graph.parameters = []
        container.preprocessing = Preprocessing(size: nil, resize: .direct, resizeShortSide: nil, scale: 0.5, mean: [], standardDeviation: [2, 3])
        try ContainerFile.write(container, to: path)
        #expect(try ContainerFile.read(path) == container)
    }

    @Test("Layout: blobs are 64-byte aligned, in order, each with a CRC-32C of its bytes; the header records the lengths")
    func layout() throws {
        let path = Fixtures.temporaryDirectory().appendingPathComponent("layout.lance").path
        try ContainerFile.write(Samples.fullContainer(), to: path)
        let bytes = fileBytes(path)
        #expect(Array(bytes[0..<8]) == [0x4C, 0x41, 0x4E, 0x43, 0x45, 0x0D, 0x0A, 0x1A])
        func integer<T: FixedWidthInteger>(_ type: T.Type, _ offset: Int) -> T {
            bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        }
        #expect(integer(UInt16.self, 8) == 1)
        #expect(integer(UInt16.self, 10) == 0)
        #expect(integer(UInt64.self, 16) == UInt64(bytes.count))
        let manifestLength = Int(integer(UInt64.self, 24))
        #expect(integer(UInt32.self, 32) == CRC32C.checksum(Array(bytes[40..<(40 + manifestLength)])))
        #expect(integer(UInt32.self, 36) == CRC32C.checksum(Array(bytes[0..<36])))
        let blobs = try blobTable(path)
        var previousEnd = 40 + manifestLength
        for blob in blobs {
            #expect(blob.offset % 64 == 0 && blob.offset >= previousEnd && blob.offset - previousEnd < 64)
            #expect(CRC32C.checksum(Array(bytes[blob.offset..<(blob.offset + blob.byteCount)])) == blob.checksum)
            #expect(bytes[previousEnd..<blob.offset].allSatisfy { $0 == 0 })
            previousEnd = blob.offset + blob.byteCount
        }
        #expect(previousEnd == bytes.count)
        #expect(Set(blobs.map(\.name)).count == blobs.count)
        #expect(blobs.contains { $0.name == "parameter/conv.weight" && $0.shape == [8, 4, 3, 3] && $0.elementType == .float32 })
        #expect(blobs.contains { $0.name == "calibration/conv_0/channel" })
        #expect(blobs.contains { $0.name == "task/fmnist-1/protected/gemm_34" })
        #expect(blobs.contains { $0.name == "optimizer/first_moment/fc.weight" })
    }

    @Test("readManifestOnly describes the container without loading payloads")
    func manifestOnly() throws {
        let path = Fixtures.temporaryDirectory().appendingPathComponent("manifest.lance").path
        let container = Samples.fullContainer()
        try ContainerFile.write(container, to: path, halfPrecision: true)
        let manifest = try ContainerFile.readManifestOnly(path)
        #expect(manifest.majorVersion == 1 && manifest.minorVersion == 0)
        #expect(manifest.fileByteCount == fileBytes(path).count)
        #expect(manifest.writer == "LanceFormat 1.0")
        #expect(manifest.nodes == container.graph.nodes)
        #expect(manifest.inputs == container.graph.inputs && manifest.outputs == container.graph.outputs)
        #expect(manifest.provenance == container.graph.provenance)
        #expect(manifest.parameters.map(\.name) == container.graph.parameters.map(\.name))
        #expect(manifest.parameters.map(\.storage.shape) == container.graph.parameters.map(\.tensor.shape))
        #expect(manifest.parameters.map { $0.storage.elementType == .float16 } == container.graph.parameters.map { !$0.trainable })
        #expect(manifest.preprocessing == container.preprocessing)
        #expect(manifest.calibration?.layers.map(\.layer) == ["conv_0", "gemm_34"])
        #expect(manifest.calibration?.layers[0].modes.map(\.rank) == [3, 4, 2, 0])
        #expect(manifest.tasks.map(\.name) == ["imagenet", "fmnist-1"])
        #expect(manifest.tasks[1].classNames == ["t-shirt", "trouser", ""])
        #expect(manifest.optimizerState?.step == 1234 && manifest.optimizerState?.kind == "adamw")
        #expect(manifest.metrics.map(\.scope) == container.metrics.map(\.scope))
    }

    @Test("float16 storage: frozen weights and bases within float16 precision, trainable weights and slots exact, smaller file")
    func halfPrecision() throws {
        let folder = Fixtures.temporaryDirectory()
        let full = folder.appendingPathComponent("full.lance").path
        let half = folder.appendingPathComponent("half.lance").path
        let container = Samples.fullContainer()
        try ContainerFile.write(container, to: full)
        try ContainerFile.write(container, to: half, halfPrecision: true)
        let read = try ContainerFile.read(half)
        func close(_ a: Tensor, _ b: Tensor) -> Bool {
            a.shape == b.shape && zip(a.scalars, b.scalars).allSatisfy { x, y in
                if x.isNaN { return y.isNaN }
                if abs(x) > 65504 { return y.isInfinite && y.sign == x.sign }
                return abs(x - y) <= max(abs(x) * 0x1p-11, 0x1p-25)
            }
        }
        for (original, loaded) in zip(container.graph.parameters, read.graph.parameters) {
            if original.trainable {
                #expect(original.tensor.scalars.map(\.bitPattern) == loaded.tensor.scalars.map(\.bitPattern), "\(original.name)")
            } else {
                #expect(close(original.tensor, loaded.tensor), "\(original.name)")
            }
        }
        for (original, loaded) in zip(container.calibration!.layers.flatMap(\.modes), read.calibration!.layers.flatMap(\.modes)) {
            #expect(close(original.factor, loaded.factor))
            #expect(original.spectrum == loaded.spectrum)
        }
        for (key, value) in container.tasks[1].protectedBases { #expect(close(value, read.tasks[1].protectedBases[key]!)) }
        #expect(read.optimizerState == container.optimizerState)
        #expect(read.tasks[1].head[0] == container.tasks[1].head[0])
        #expect(fileBytes(half).count < fileBytes(full).count)
    }
}

@Suite("MobileNetV2 containers", .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models (set LANCE_SHARED)"))
struct MobileNetTests {
    static func container() throws -> Container {
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet_bn.onnx"))
        return Container(graph: graph, sourceSHA256: String(repeating: "f", count: 64), preprocessing: .imageNet,
                         tasks: [TaskRecord(name: "imagenet", classes: 1000)])
    }

    @Test("fp32 round trip is bit-exact, the file is at most 1.02× the weights; fp16 with a frozen backbone is about half")
    func roundTripAndSize() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let container = try Self.container()
        let weightBytes = container.graph.parameters.reduce(0) { $0 + 4 * $1.tensor.count }
        let full = folder.appendingPathComponent("mobilenet.lance").path
        let (_, writeTime) = try seconds { try ContainerFile.write(container, to: full) }
        let (read, readTime) = try seconds { try ContainerFile.read(full) }
        #expect(bitwiseDifference(container, read) == nil)
        let fullSize = fileBytes(full).count
        #expect(Double(fullSize) <= 1.02 * Double(weightBytes))

        // Everything frozen (a backbone whose new head lives in a task): about half.
        var allFrozen = container
        for index in allFrozen.graph.parameters.indices { allFrozen.graph.parameters[index].trainable = false }
        let frozenPath = folder.appendingPathComponent("mobilenet-frozen-fp16.lance").path
        let (_, halfWriteTime) = try seconds { try ContainerFile.write(allFrozen, to: frozenPath, halfPrecision: true) }
        let (halfRead, halfReadTime) = try seconds { try ContainerFile.read(frozenPath) }
        let frozenSize = fileBytes(frozenPath).count
        #expect(Double(frozenSize) <= 0.51 * Double(fullSize))
        var worst: Float = 0
        for (original, loaded) in zip(allFrozen.graph.parameters, halfRead.graph.parameters) {
            for (x, y) in zip(original.tensor.scalars, loaded.tensor.scalars) {
                worst = max(worst, abs(x - y) / max(abs(x), 0x1p-14))
            }
        }
        #expect(worst <= 0x1p-11)

        // The classifier trainable: it stays float32, the rest is halved.
        var frozen = container
        let last = frozen.graph.parameters.count - 2
        for index in frozen.graph.parameters.indices { frozen.graph.parameters[index].trainable = index >= last }
        let half = folder.appendingPathComponent("mobilenet-fp16.lance").path
        try ContainerFile.write(frozen, to: half, halfPrecision: true)
        let halfSize = fileBytes(half).count
        let trainableBytes = frozen.graph.parameters.filter(\.trainable).reduce(0) { $0 + 4 * $1.tensor.count }
        #expect(Double(halfSize) <= 1.02 * Double(trainableBytes + (weightBytes - trainableBytes) / 2))
        let trainableRead = try ContainerFile.read(half)
        #expect(trainableRead.graph.parameters.suffix(2) == frozen.graph.parameters.suffix(2))
        let (_, manifestTime) = try seconds { try ContainerFile.readManifestOnly(full) }
        func format(_ value: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", value) }
        print("""
            MobileNetV2 (bn): \(container.graph.parameters.count) parameters, weights \(weightBytes) bytes; \
            fp32 container \(fullSize) bytes (\(format(Double(fullSize) / Double(weightBytes), 4))× weights), \
            write \(format(writeTime)) s, read \(format(readTime)) s, manifest only \(format(manifestTime, 4)) s; \
            fp16 all frozen \(frozenSize) bytes (\(format(Double(frozenSize) / Double(fullSize)))× fp32), \
            write \(format(halfWriteTime)) s, read \(format(halfReadTime)) s, worst relative error \(worst); \
            fp16 with the classifier (\(trainableBytes) bytes) trainable \(halfSize) bytes \
            (\(format(Double(halfSize) / Double(fullSize)))× fp32)
            """)
    }

    @Test("Flipping a byte anywhere in a sample of MobileNetV2's blobs names that tensor")
    func corruptionSample() throws {
        let path = Fixtures.temporaryDirectory().appendingPathComponent("mobilenet.lance").path
        try ContainerFile.write(try Self.container(), to: path)
        let blobs = try blobTable(path)
        let chosen = [0, 1, blobs.count / 3, blobs.count / 2, blobs.count - 2, blobs.count - 1]
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var generator = SeededGenerator(seed: 3)
        for index in chosen {
            let blob = blobs[index]
            var positions = [blob.offset, blob.offset + blob.byteCount - 1]
            for _ in 0..<3 { positions.append(blob.offset + Int.random(in: 0..<blob.byteCount, using: &generator)) }
            for position in positions {
                try handle.seek(toOffset: UInt64(position))
                let original = try handle.read(upToCount: 1)![0]
                try handle.seek(toOffset: UInt64(position))
                try handle.write(contentsOf: [original ^ 0x10])
                #expect(readError(path) == .blobChecksumMismatch(path: path, tensor: "'\(blob.name)'"), "byte \(position)")
                try handle.seek(toOffset: UInt64(position))
                try handle.write(contentsOf: [original])
            }
        }
        #expect(readError(path) == nil)
    }
}

@Suite("Damaged files")
struct DamagedFileTests {
    @Test("Flipping any byte of any blob of a tiny container gives a checksum error naming that tensor")
    func everyBlobByte() throws {
        let path = Fixtures.temporaryDirectory().appendingPathComponent("tiny.lance").path
        try ContainerFile.write(Samples.tinyContainer(), to: path)
        let original = fileBytes(path)
        let blobs = try blobTable(path)
        #expect(blobs.map(\.name) == ["parameter/w", "task/t/protected/gemm"])
        for blob in blobs {
            for position in blob.offset..<(blob.offset + blob.byteCount) {
                for mask: UInt8 in [0x01, 0x80] {
                    var bytes = original
                    bytes[position] ^= mask
                    writeBytes(bytes, to: path)
                    #expect(readError(path) == .blobChecksumMismatch(path: path, tensor: "'\(blob.name)'"))
                }
            }
        }
    }

    @Test("Flipping any byte of the header or manifest gives a precise error, never a crash")
    func everyHeaderAndManifestByte() throws {
        let path = Fixtures.temporaryDirectory().appendingPathComponent("tiny.lance").path
        try ContainerFile.write(Samples.fullContainer(), to: path)
        let original = fileBytes(path)
        let manifestEnd = 40 + Int(original.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt64.self) })
        for position in 0..<manifestEnd {
            var bytes = original
            bytes[position] ^= 0x04
            writeBytes(bytes, to: path)
            let error = readError(path)
            switch position {
            case 0..<8: #expect(error == .notAContainer(path: path))
            case 8: #expect(error == .newerMajorVersion(path: path, fileMajor: 5, fileMinor: 0, supportedMajor: 1))
            case 9: #expect(error == .newerMajorVersion(path: path, fileMajor: 0x0401, fileMinor: 0, supportedMajor: 1))
            case 10..<40: #expect(error == .headerChecksumMismatch(path: path), "byte \(position)")
            default: #expect(error == .manifestChecksumMismatch(path: path), "byte \(position)")
            }
        }
    }

    @Test("Truncating at any length gives 'truncated (expected N bytes, found M)'")
    func truncated() throws {
        let path = Fixtures.temporaryDirectory().appendingPathComponent("tiny.lance").path
        try ContainerFile.write(Samples.tinyContainer(), to: path)
        let original = fileBytes(path)
        for length in 0..<original.count {
            writeBytes(Array(original.prefix(length)), to: path)
            let expected = length < 24 ? 40 : original.count
            #expect(readError(path) == .truncated(path: path, expectedBytes: expected, actualBytes: length), "length \(length)")
            if length < 40 { continue }
            #expect(throws: ContainerError.self) { try ContainerFile.readManifestOnly(path) }
        }
        writeBytes(original + [0], to: path)
        #expect(readError(path) == .unexpectedTrailingBytes(path: path, expectedBytes: original.count, actualBytes: original.count + 1))
    }

    @Test("Wrong magic, another format, a folder and a missing file give precise errors")
    func notContainers() throws {
        let folder = Fixtures.temporaryDirectory()
        let path = folder.appendingPathComponent("x.lance").path
        writeBytes(Array("LANCE\n\r\u{1A}".utf8) + [UInt8](repeating: 0, count: 100), to: path)
        #expect(readError(path) == .notAContainer(path: path))
        writeBytes(Array("PK\u{3}\u{4}".utf8), to: path)
        #expect(readError(path) == .notAContainer(path: path))
        writeBytes(Array("LAN".utf8), to: path)
        #expect(readError(path) == .truncated(path: path, expectedBytes: 40, actualBytes: 3))
        #expect(readError(folder.path) == .unreadable(path: folder.path, reason: "it is not a regular file"))
        let missing = folder.appendingPathComponent("missing.lance").path
        #expect(readError(missing) == .unreadable(path: missing, reason: "No such file or directory"))
        let description = ContainerError.notAContainer(path: path).description
        #expect(description.contains(path) && description.contains("not a LANCE container"))
    }

    @Test("A newer major version is refused; a newer minor version with unknown manifest fields is read")
    func versions() throws {
        let path = Fixtures.temporaryDirectory().appendingPathComponent("v.lance").path
        let container = Samples.tinyContainer()
        try ContainerFile.write(container, to: path)
        var bytes = fileBytes(path)
        bytes[8] = 2
        bytes[10] = 7
        writeBytes(bytes, to: path)
        let error = readError(path)
        #expect(error == .newerMajorVersion(path: path, fileMajor: 2, fileMinor: 7, supportedMajor: 1))
        #expect(error?.description.contains("v2.7") == true && error?.description.contains("v1") == true)

        // v1.3: the manifest gains an unknown field (number 1000, a string) and the blobs move by 64 bytes.
        try ContainerFile.write(container, to: path)
        let v10 = fileBytes(path)
        let manifestLength = Int(v10.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt64.self) })
        let manifest = Array(v10[40..<(40 + manifestLength)])
        let blobs = try blobTable(path)
        // Rebuild the manifest with shifted blob offsets by re-encoding through the writer, then append the field.
        let unknownField: [UInt8] = [0xC2, 0x3E, 0x05] + Array("later".utf8)  // tag (1000 << 3 | 2) as varint, length 5
        var extended = manifest + unknownField
        let shift = ContainerLayout.aligned(40 + extended.count) - ContainerLayout.aligned(40 + manifestLength)
        if shift != 0 {
            // Offsets are fixed64 little-endian; patch each one where it occurs in the manifest.
            for blob in blobs {
                let old = withUnsafeBytes(of: UInt64(blob.offset).littleEndian, Array.init)
                let new = withUnsafeBytes(of: UInt64(blob.offset + shift).littleEndian, Array.init)
                let at = (0...(extended.count - 8)).first { Array(extended[$0..<($0 + 8)]) == old }!
                extended.replaceSubrange(at..<(at + 8), with: new)
            }
        }
        let dataStart = ContainerLayout.aligned(40 + extended.count)
        let payload = Array(v10[blobs[0].offset...])
        let header = ContainerHeader(majorVersion: 1, minorVersion: 3, flags: 0,
                                     fileLength: UInt64(dataStart + payload.count), manifestLength: UInt64(extended.count),
                                     manifestChecksum: CRC32C.checksum(extended))
        var file = header.encoded() + extended
        file += [UInt8](repeating: 0, count: dataStart - file.count) + payload
        writeBytes(file, to: path)
        #expect(try ContainerFile.read(path) == container)
        #expect(try ContainerFile.readManifestOnly(path).minorVersion == 3)
    }

    @Test("A manifest that is not a protobuf, or that breaks the schema's rules, is reported as malformed")
    func malformedManifest() throws {
        let path = Fixtures.temporaryDirectory().appendingPathComponent("m.lance").path
        func file(manifest: [UInt8], payload: [UInt8] = []) -> [UInt8] {
            let dataStart = ContainerLayout.aligned(40 + manifest.count)
            let length = payload.isEmpty ? 40 + manifest.count : dataStart + payload.count
            var bytes = ContainerHeader(fileLength: UInt64(length), manifestLength: UInt64(manifest.count),
                                        manifestChecksum: CRC32C.checksum(manifest)).encoded() + manifest
            if !payload.isEmpty { bytes += [UInt8](repeating: 0, count: dataStart - bytes.count) + payload }
            return bytes
        }
        func check(_ manifest: [UInt8], payload: [UInt8] = [], field: String, _ comment: Comment) {
            writeBytes(file(manifest: manifest, payload: payload), to: path)
            let error = readError(path)
            guard case .malformedManifest(let errorPath, let errorField, _)? = error else {
                Issue.record("\(comment): expected a malformed manifest error, got \(String(describing: error))")
                return
            }
            #expect(errorPath == path && errorField.hasPrefix(field), comment)
        }
        check([0xFF, 0xFF, 0xFF], field: "manifest", "garbage")
        check([0x0A, 0x10, 0x01], field: "manifest", "a length beyond the message")
        check([], field: "graph", "an empty manifest has no graph")
        // Manifest { graph {} blobs { name "b" offset .. byte_length .. element_type .. shape .. crc } }
        func blob(offset: UInt64, length: UInt64, type: UInt8, shape: [UInt8], crc: UInt32 = 0) -> [UInt8] {
            var body: [UInt8] = [0x0A, 0x01, 0x62]
            body += [0x11] + withUnsafeBytes(of: offset.littleEndian, Array.init)
            body += [0x19] + withUnsafeBytes(of: length.littleEndian, Array.init)
            body += [0x20, type]
            body += [0x2A, UInt8(shape.count)] + shape
            body += [0x35] + withUnsafeBytes(of: crc.littleEndian, Array.init)
            return [0x42, UInt8(body.count)] + body
        }
        let graph: [UInt8] = [0x0A, 0x00]
        check(graph + blob(offset: 128, length: 16, type: 1, shape: [4]), payload: [UInt8](repeating: 0, count: 8),
              field: "blobs[0]", "a blob beyond the end of the file")
        check(graph + blob(offset: 65, length: 16, type: 1, shape: [4]), payload: [UInt8](repeating: 0, count: 16),
              field: "blobs[0]", "a misaligned blob")
        check(graph + blob(offset: 128, length: 12, type: 1, shape: [4]), payload: [UInt8](repeating: 0, count: 16),
              field: "blobs[0]", "a length that does not match the shape")
        check(graph + blob(offset: 128, length: 16, type: 9, shape: [4]), payload: [UInt8](repeating: 0, count: 16),
              field: "blobs[0]", "an unknown element type")
        check(graph + blob(offset: 128, length: 16, type: 1, shape: [0x7F]), payload: [UInt8](repeating: 0, count: 16),
              field: "blobs[0]", "a wrong shape")
        check(graph + blob(offset: 128, length: 0, type: 1, shape: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
              payload: [UInt8](repeating: 0, count: 16), field: "blobs[0]", "a negative extent")
        check(graph + blob(offset: 0, length: 16, type: 1, shape: [4]), payload: [UInt8](repeating: 0, count: 16),
              field: "blobs[0]", "a blob over the header")
        // graph { parameters { name "p" } } : no blob reference; then a reference to blob 3 of 0.
        check([0x0A, 0x05, 0x2A, 0x03, 0x0A, 0x01, 0x70], field: "graph.parameters[0].blob", "a parameter without blob")
        check([0x0A, 0x07, 0x2A, 0x05, 0x0A, 0x01, 0x70, 0x10, 0x03], field: "graph.parameters[0].blob", "a dangling blob index")
        // graph { nodes { name "n" } } : a node without operator; a convolution without window.
        check([0x0A, 0x05, 0x22, 0x03, 0x0A, 0x01, 0x6E], field: "graph.nodes[0] ('n').operation", "a node without operator")
        check([0x0A, 0x07, 0x22, 0x05, 0x0A, 0x01, 0x6E, 0x52, 0x00], field: "graph.nodes[0] ('n').convolution.window", "a convolution without window")
        // activation { kind 99 }
        check([0x0A, 0x09, 0x22, 0x07, 0x0A, 0x01, 0x6E, 0x62, 0x02, 0x08, 0x63], field: "graph.nodes[0] ('n').activation.kind", "an unknown activation")
        // convolution { window { kernel_size [3] } }
        check([0x0A, 0x0D, 0x22, 0x0B, 0x0A, 0x01, 0x6E, 0x52, 0x06, 0x0A, 0x04, 0x0A, 0x02, 0x03, 0x03],
              field: "graph.nodes[0] ('n').convolution.window.strides", "a window without strides")
    }
}

@Suite("Atomic writes")
struct AtomicWriteTests {
    @Test("A write that stops part-way (as a crash would) leaves the previous file intact and readable")
    func abandonedWrites() throws {
        let folder = Fixtures.temporaryDirectory()
        let path = folder.appendingPathComponent("model.lance").path
        let old = Samples.tinyContainer()
        try ContainerFile.write(old, to: path)
        let oldBytes = fileBytes(path)
        let new = Samples.fullContainer()
        let sizePath = folder.appendingPathComponent("size.lance").path
        try ContainerFile.write(new, to: sizePath)
        let newSize = fileBytes(sizePath).count
        try FileManager.default.removeItem(atPath: sizePath)
        for limit in [0, 1, 39, 40, 41, 500, newSize / 2, newSize - 1] {
            try ContainerFile.write(new, to: path, halfPrecision: false, interruption: .abandon(afterBytes: limit))
            #expect(fileBytes(path) == oldBytes)
            #expect(try ContainerFile.read(path) == old)
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0 != "model.lance" }
            #expect(leftovers.count == 1 && leftovers[0].hasPrefix(".model.lance.tmp-"))
            for leftover in leftovers { try FileManager.default.removeItem(atPath: folder.appendingPathComponent(leftover).path) }
        }
    }

    @Test("An output that cannot be written reports it, removes the temporary file and keeps the old file")
    func unwritable() throws {
        let folder = Fixtures.temporaryDirectory()
        let missing = folder.appendingPathComponent("no/such/folder/x.lance").path
        #expect(throws: ContainerError.self) { try ContainerFile.write(Samples.tinyContainer(), to: missing) }
        do {
            try ContainerFile.write(Samples.tinyContainer(), to: missing)
        } catch {
            guard case .unwritableOutput(let errorPath, let reason) = error else { Issue.record("got \(error)"); return }
            #expect(errorPath == missing && reason.contains("temporary file"))
        }
        // The target is a non-empty folder: the rename fails after the temporary file was written.
        let target = folder.appendingPathComponent("target.lance")
        try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: target.appendingPathComponent("keep").path, contents: Data([1]))
        #expect(throws: ContainerError.self) { try ContainerFile.write(Samples.tinyContainer(), to: target.path) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["target.lance"])
        #expect(FileManager.default.fileExists(atPath: target.appendingPathComponent("keep").path))
        // A name the manifest cannot store is refused before anything is written.
        var container = Samples.tinyContainer()
        container.graph.name = "a\u{0}b"
        let path = folder.appendingPathComponent("nul.lance").path
        #expect(throws: ContainerError.self) { try ContainerFile.write(container, to: path) }
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}

/// A writer really killed mid-write (SIGKILL: no cleanup, no unwinding) must leave the previous
/// file intact.
///
/// How: the test binary is started again as a child process running only
/// `WriterChildProcess.writeUntilKilled`, which reads its target and byte budget from the
/// environment and writes through the writer's internal test hook `.killProcess(afterBytes:)`,
/// which sends SIGKILL to its own process once that many bytes have been written. The parent
/// checks that the child died of SIGKILL and that the target still holds the old container. A
/// control run with a budget larger than the file checks that the child does write the target.
/// Nothing in the library reads the environment; the variables are read by the child test only.
@Suite("Killed writer")
struct KilledWriterTests {
    static let targetVariable = "LANCE_FORMAT_TEST_CHILD_TARGET"
    static let budgetVariable = "LANCE_FORMAT_TEST_CHILD_KILL_AFTER_BYTES"

    /// Runs the child; returns how it ended.
    static func runChild(target: String, killAfterBytes: Int) throws -> (reason: Process.TerminationReason, status: Int32) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["--testing-library", "swift-testing", "--filter", "WriterChildProcess"]
        var environment = ProcessInfo.processInfo.environment
        environment[targetVariable] = target
        environment[budgetVariable] = String(killAfterBytes)
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return (process.terminationReason, process.terminationStatus)
    }

    @Test("A writer process killed with SIGKILL part-way leaves the previous file intact", .timeLimit(.minutes(2)))
    func killedWriter() throws {
        let folder = Fixtures.temporaryDirectory()
        let path = folder.appendingPathComponent("model.lance").path
        let old = Samples.tinyContainer()
        try ContainerFile.write(old, to: path)
        let oldBytes = fileBytes(path)
        let sizePath = folder.appendingPathComponent("size.lance").path
        try ContainerFile.write(Samples.fullContainer(), to: sizePath)
        let newSize = fileBytes(sizePath).count
        try FileManager.default.removeItem(atPath: sizePath)
        for budget in [0, 40, newSize / 2, newSize - 1] {
            let ending = try Self.runChild(target: path, killAfterBytes: budget)
            #expect(ending.reason == .uncaughtSignal && ending.status == SIGKILL, "budget \(budget): \(ending)")
            #expect(fileBytes(path) == oldBytes, "budget \(budget)")
            #expect(try ContainerFile.read(path) == old)
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasPrefix(".model.lance.tmp-") }
        #expect(leftovers.count == 4)
        // Control: with a budget beyond the file the child completes and replaces the file.
        let ending = try Self.runChild(target: path, killAfterBytes: Int.max)
        #expect(ending.reason == .exit && ending.status == 0)
        #expect(bitwiseDifference(try ContainerFile.read(path), Samples.fullContainer()) == nil)
    }
}

/// The child side of `KilledWriterTests` (does nothing unless started by it).
@Suite("Writer child process")
struct WriterChildProcess {
    @Test("Writes a container until killed (only when started by KilledWriterTests)")
    func writeUntilKilled() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let target = environment[KilledWriterTests.targetVariable],
              let budget = environment[KilledWriterTests.budgetVariable].flatMap({ Int($0) }) else { return }
        try ContainerFile.write(Samples.fullContainer(), to: target, halfPrecision: false,
                                interruption: .killProcess(afterBytes: budget))
    }
}
