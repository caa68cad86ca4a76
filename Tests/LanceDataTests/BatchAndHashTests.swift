import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceTestSupport
import Testing

@Suite("Shuffling, batches and fingerprints")
struct BatchAndHashTests {
    @Test("SplitMix64 and the Fisher–Yates order match an independent Python implementation")
    func shuffleIsPinned() {
        var generator = SplitMix64(seed: 0)
        #expect(generator.next() == 16_294_208_416_658_607_535)
        var other = SplitMix64(seed: 1_234_567)
        #expect(other.next() == 6_457_827_717_110_365_317)
        #expect(shuffledIndices(count: 10, seed: 42) == [8, 3, 6, 5, 4, 0, 9, 2, 1, 7])
        #expect(shuffledIndices(count: 12, seed: 0) == [5, 11, 6, 7, 3, 1, 2, 9, 8, 0, 4, 10])
        #expect(shuffledIndices(count: 0, seed: 5).isEmpty && shuffledIndices(count: 1, seed: 5) == [0])
        let large = shuffledIndices(count: 1000, seed: 9)
        #expect(large.sorted() == Array(0..<1000) && large != Array(0..<1000))
    }

    @Test("the same seed gives the same batches, another seed another order; limit and dropLast cut the order")
    func deterministicBatches() throws {
        let source = try openDataSource(Fixtures.sampleData("tiny.h5"), preprocessing: Preprocessing(scale: 1 / 255, channels: 3))
        func read(seed: UInt64?, batchSize: Int = 3, dropLast: Bool = false, limit: Int? = nil) throws -> [Batch] {
            var iterator = try BatchIterator(source: source, batchSize: batchSize, shuffleSeed: seed, dropLast: dropLast, limit: limit)
            var batches: [Batch] = []
            while let batch = try iterator.next() { batches.append(batch) }
            return batches
        }
        let first = try read(seed: 17), again = try read(seed: 17), other = try read(seed: 18)
        #expect(first.map(\.indices) == again.map(\.indices))
        #expect(zip(first, again).allSatisfy { $0.images == $1.images && $0.labels == $1.labels })
        #expect(first.map(\.indices) != other.map(\.indices))
        #expect(first.flatMap(\.indices) == shuffledIndices(count: 10, seed: 17))
        #expect(first.map(\.images.shape) == [[3, 3, 12, 10], [3, 3, 12, 10], [3, 3, 12, 10], [1, 3, 12, 10]])
        #expect(try read(seed: nil).flatMap(\.indices) == Array(0..<10))
        #expect(try read(seed: nil, dropLast: true).map(\.indices.count) == [3, 3, 3])
        #expect(try read(seed: 17, limit: 5).flatMap(\.indices) == Array(shuffledIndices(count: 10, seed: 17).prefix(5)))
        // A batch's sample equals the sample read alone.
        let sample = try source.sample(at: first[1].indices[2])
        #expect(row(first[1].images, 2) == sample.image && first[1].labels[2] == sample.label)
        #expect(dataError { _ = try BatchIterator(source: source, batchSize: 0) }?.description.contains("batch size") == true)
        #expect(dataError { _ = try BatchIterator(source: source, batchSize: 2, limit: -1) } != nil)
    }

    @Test("SHA-256 of the FIPS 180-4 test vectors, fed at once and in pieces")
    func sha256Vectors() {
        #expect(SHA256.hexDigest(of: []) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexDigest(of: Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let twoBlocks = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hexDigest(of: twoBlocks) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let long = Array("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu".utf8)
        #expect(SHA256.hexDigest(of: long) == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
        var million = SHA256()
        let chunk = [UInt8](repeating: 0x61, count: 1000)
        for _ in 0..<1000 { million.update(chunk) }
        #expect(million.hexDigest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // Odd piece sizes across block boundaries.
        var pieces = SHA256()
        var offset = 0
        for size in [1, 62, 3, 64, 7, 0, 129] where offset < long.count {
            pieces.update(long[offset..<min(offset + size, long.count)])
            offset += size
        }
        pieces.update(long[min(offset, long.count)...])
        #expect(pieces.hexDigest() == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    }

    @Test("the fingerprint is stable, follows the batch size not at all, and changes with the preprocessing")
    func fingerprints() throws {
        let path = Fixtures.sampleData("tiny.h5")
        let source = try openDataSource(path, preprocessing: Preprocessing(scale: 1 / 255, channels: 3))
        let once = try fingerprint(of: source)
        #expect(once.count == 64)
        #expect(try fingerprint(of: source, batchSize: 3) == once)
        #expect(try fingerprint(of: openDataSource(Fixtures.sampleData("tiny.npz"), preprocessing: Preprocessing(scale: 1 / 255, channels: 3))) == once)
        #expect(try fingerprint(of: source, limit: 9) != once)
        let other = try openDataSource(path, preprocessing: Preprocessing(scale: 1 / 256, channels: 3))
        #expect(try fingerprint(of: other) != once)
        // By hand: the same bytes fed sample by sample.
        var hasher = SHA256()
        for index in 0..<source.count {
            let sample = try source.sample(at: index)
            hasher.update(sample: sample.image, label: sample.label)
        }
        #expect(hasher.hexDigest() == once)
    }
}
