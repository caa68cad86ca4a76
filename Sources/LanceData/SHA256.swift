import LanceCore

/// SHA-256 (FIPS 180-4), incremental: feed bytes with `update`, read the digest with `finalize`.
public struct SHA256: Sendable {
    private var state: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)
    private var pending: [UInt8] = []
    private var length: UInt64 = 0

    private static let roundConstants: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    /// A hasher with nothing fed yet.
    public init() { pending.reserveCapacity(64) }

    /// Feeds bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        var offset = 0
        if !pending.isEmpty {
            let take = min(64 - pending.count, bytes.count)
            pending += bytes[0..<take]
            offset = take
            if pending.count == 64 {
                pending.withUnsafeBytes { compress(block: $0) }
                pending.removeAll(keepingCapacity: true)
            }
        }
        while bytes.count - offset >= 64 {
            compress(block: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + 64)]))
            offset += 64
        }
        if offset < bytes.count { pending += bytes[offset...] }
    }

    /// Feeds bytes.
    public mutating func update(_ bytes: some Sequence<UInt8>) {
        let array = Array(bytes)
        array.withUnsafeBytes { update($0) }
    }

    /// Feeds a tensor's elements as little-endian IEEE float32, in row-major order (its shape is
    /// not fed).
    public mutating func update(_ tensor: Tensor) {
        tensor.withUnsafeBufferPointer { values in
            var chunk = [UInt32](repeating: 0, count: min(values.count, 4096))
            var start = 0
            while start < values.count {
                let end = min(start + chunk.count, values.count)
                for index in start..<end { chunk[index - start] = values[index].bitPattern.littleEndian }
                chunk.withUnsafeBytes { update(UnsafeRawBufferPointer(rebasing: $0[0..<((end - start) * 4)])) }
                start = end
            }
        }
    }

    /// Feeds an integer as 8 little-endian bytes.
    public mutating func update(_ value: Int64) {
        withUnsafeBytes(of: value.littleEndian) { update($0) }
    }

    /// The 32-byte digest of everything fed (the hasher itself is left unchanged).
    public func finalize() -> [UInt8] {
        var copy = self
        let bitLength = length &* 8
        var padding: [UInt8] = [0x80]
        padding += [UInt8](repeating: 0, count: (55 &- Int(length % 64) + 64) % 64)
        padding += (0..<8).map { UInt8(truncatingIfNeeded: bitLength >> (56 - 8 * UInt64($0))) }
        padding.withUnsafeBytes { copy.update($0) }
        let words = [copy.state.0, copy.state.1, copy.state.2, copy.state.3, copy.state.4, copy.state.5, copy.state.6, copy.state.7]
        return words.flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (24 - 8 * UInt32($0))) } }
    }

    /// The digest as 64 lowercase hexadecimal digits.
    public func hexDigest() -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: finalize().flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    /// The digest of `bytes` as hexadecimal.
    public static func hexDigest(of bytes: some Sequence<UInt8>) -> String {
        var hasher = SHA256()
        hasher.update(bytes)
        return hasher.hexDigest()
    }

    private mutating func compress(block: UnsafeRawBufferPointer) {
        var w = [UInt32](repeating: 0, count: 64)
        for index in 0..<16 {
            w[index] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
        }
        func rotate(_ value: UInt32, _ count: UInt32) -> UInt32 { (value >> count) | (value << (32 - count)) }
        for index in 16..<64 {
            let s0 = rotate(w[index - 15], 7) ^ rotate(w[index - 15], 18) ^ (w[index - 15] >> 3)
            let s1 = rotate(w[index - 2], 17) ^ rotate(w[index - 2], 19) ^ (w[index - 2] >> 10)
            w[index] = w[index - 16] &+ s0 &+ w[index - 7] &+ s1
        }
        var (a, b, c, d, e, f, g, h) = state
        for index in 0..<64 {
            let s1 = rotate(e, 6) ^ rotate(e, 11) ^ rotate(e, 25)
            let choice = (e & f) ^ (~e & g)
            let t1 = h &+ s1 &+ choice &+ Self.roundConstants[index] &+ w[index]
            let s0 = rotate(a, 2) ^ rotate(a, 13) ^ rotate(a, 22)
            let majority = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ majority
            h = g; g = f; f = e; e = d &+ t1
            d = c; c = b; b = a; a = t1 &+ t2
        }
        state = (state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d, state.4 &+ e, state.5 &+ f, state.6 &+ g, state.7 &+ h)
    }
}

/// The SHA-256 fingerprint of a source's preprocessed samples, as 64 hexadecimal digits: it
/// changes when the data, its order, its labels or the preprocessing change.
///
/// Bytes hashed, for each sample `i` in `0..<min(count, limit)` in index order: the sample's
/// shape `[C, H, W]` as three little-endian Int64, its values as little-endian float32 in CHW
/// order, and its label as a little-endian Int64 (`-1` without labels). Samples are read
/// `batchSize` at a time (on all cores), so memory stays bounded.
///
/// - Throws: the `DataError` of the first sample that cannot be read.
public func fingerprint(of source: any DataSource, limit: Int? = nil, batchSize: Int = 64) throws(DataError) -> String {
    var hasher = SHA256()
    let total = max(0, min(source.count, limit ?? source.count))
    var start = 0
    while start < total {
        let indices = Array(start..<min(start + max(batchSize, 1), total))
        start += indices.count
        let batch: Batch
        do {
            batch = try readBatch(source, indices: indices)
        } catch .inconsistentSampleShapes {
            // Samples of different shapes (no size in the preprocessing): one at a time.
            for index in indices {
                let sample = try source.sample(at: index)
                hasher.update(sample: sample.image, label: sample.label)
            }
            continue
        }
        let sampleShape = Array(batch.images.shape.dropFirst())
        let sampleSize = sampleShape.reduce(1, *)
        for slot in 0..<indices.count {
            let values = batch.images.withUnsafeBufferPointer { Array($0[(slot * sampleSize)..<((slot + 1) * sampleSize)]) }
            hasher.update(sample: Tensor(shape: sampleShape, scalars: values), label: batch.labels[slot])
        }
    }
    return hasher.hexDigest()
}

extension SHA256 {
    /// Feeds one sample as `fingerprint(of:)` does: shape (Int64 each), values (float32), label (Int64).
    public mutating func update(sample image: Tensor, label: Int) {
        for extent in image.shape { update(Int64(extent)) }
        update(image)
        update(Int64(label))
    }
}
