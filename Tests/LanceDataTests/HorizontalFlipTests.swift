import LanceCore
import LanceData
import LanceTestSupport
import Testing

@Suite("Random horizontal flip")
struct HorizontalFlipTests {
    @Test("the chosen samples of a batch are mirrored along the width, the others left as they are")
    func mirrorsChosenSamples() {
        // [2, 2, 2, 3]: value = 100·sample + 10·(channel·2 + row) + column.
        let values: [Float] = (0..<24).map { (index: Int) -> Float in
            let sample = index / 12, plane = (index % 12) / 3, column = index % 3
            return Float(100 * sample + 10 * plane + column)
        }
        var images = Tensor(shape: [2, 2, 2, 3], scalars: values)
        let original = images
        flipHorizontally(&images, where: [false, true])
        for sample in 0..<2 {
            for plane in 0..<4 {
                for column in 0..<3 {
                    let mirroredColumn = sample == 1 ? 2 - column : column
                    let row = sample * 12 + plane * 3
                    #expect(images.scalars[row + column] == original.scalars[row + mirroredColumn])
                }
            }
        }
        flipHorizontally(&images, where: [false, true])
        #expect(images == original)
    }

    @Test("the choices depend on seed, epoch and sample only: about half flip, and epochs and seeds differ")
    func choicesAreSeeded() throws {
        let flip = HorizontalFlip(seed: 7)
        let epoch1 = (0..<10_000).map { flip.flips(sample: $0, epoch: 1) }
        let epoch2 = (0..<10_000).map { flip.flips(sample: $0, epoch: 2) }
        let otherSeed = (0..<10_000).map { HorizontalFlip(seed: 8).flips(sample: $0, epoch: 1) }
        // Binomial(10 000, 1/2): the standard deviation is 50, so these bounds are 4 of them.
        #expect((4_800...5_200).contains(epoch1.filter { $0 }.count))
        #expect((4_800...5_200).contains(zip(epoch1, epoch2).filter { $0 == $1 }.count))
        #expect((4_800...5_200).contains(zip(epoch1, otherSeed).filter { $0 == $1 }.count))
        #expect(epoch1 == (0..<10_000).map { HorizontalFlip(seed: 7).flips(sample: $0, epoch: 1) })
        // A batch is flipped by its samples' own choices, wherever they sit in it.
        var batch = Tensor(shape: [4, 1, 1, 2], scalars: [0, 1, 2, 3, 4, 5, 6, 7])
        let firstFlipped = try #require((0..<100).first { flip.flips(sample: $0, epoch: 1) })
        let firstKept = try #require((0..<100).first { !flip.flips(sample: $0, epoch: 1) })
        let samples = [42, firstFlipped, 7, firstKept]
        flip.apply(to: &batch, samples: samples, epoch: 1)
        for (row, sample) in samples.enumerated() {
            let pair = Array(batch.scalars[(2 * row)..<(2 * row + 2)])
            #expect(pair == (flip.flips(sample: sample, epoch: 1) ? [Float(2 * row + 1), Float(2 * row)] : [Float(2 * row), Float(2 * row + 1)]))
        }
    }
}
