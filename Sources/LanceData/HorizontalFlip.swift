import LanceCore

/// Random horizontal flip, the one augmentation of LANCE's fine-tuning recipe: every sample is
/// mirrored left to right with probability 1/2.
///
/// The choice depends only on the seed, the epoch and the sample's index in its source, not on the
/// batch the sample lands in, the order of the epoch or the number of cores. So a resumed run
/// repeats the flips of the run it continues, and a cache of features can key a sample's two
/// versions by index.
public struct HorizontalFlip: Sendable, Equatable {
    /// The seed the choices derive from.
    public let seed: UInt64

    /// Flips seeded by `seed`.
    public init(seed: UInt64) { self.seed = seed }

    /// Whether sample `sample` is mirrored in epoch `epoch`: the top bit of a SplitMix64 output
    /// seeded from the seed, then the epoch, then the sample.
    public func flips(sample: Int, epoch: Int) -> Bool {
        var seedGenerator = SplitMix64(seed: seed)
        var epochGenerator = SplitMix64(seed: seedGenerator.next() &+ UInt64(truncatingIfNeeded: epoch))
        var sampleGenerator = SplitMix64(seed: epochGenerator.next() &+ UInt64(truncatingIfNeeded: sample))
        return sampleGenerator.next() >> 63 == 1
    }

    /// Mirrors the chosen samples of an NCHW batch in place.
    ///
    /// - Parameters:
    ///   - images: `[B, C, H, W]` (any rank ≥ 2: the last axis is reversed, per sample of the first).
    ///   - samples: the `B` source indices of the batch's samples.
    ///   - epoch: the epoch the batch belongs to.
    public func apply(to images: inout Tensor, samples: [Int], epoch: Int) {
        flipHorizontally(&images, where: samples.map { flips(sample: $0, epoch: epoch) })
    }
}

/// Reverses the last axis (the width of NCHW images) of the samples of `images` whose entry in
/// `mirrored` is true: `out[b, c, h, w] = in[b, c, h, W − 1 − w]` for those, the others unchanged.
///
/// - Parameters:
///   - images: `[B, …, W]`, rank at least 2.
///   - mirrored: `B` choices.
public func flipHorizontally(_ images: inout Tensor, where mirrored: [Bool]) {
    precondition(images.rank >= 2 && images.shape[0] == mirrored.count,
                 "flipHorizontally: \(mirrored.count) choices for a batch of shape \(images.shape)")
    guard mirrored.contains(true) else { return }
    let width = images.shape[images.rank - 1]
    let sampleSize = images.count / max(images.shape[0], 1)
    images.withUnsafeMutableBufferPointer { values in
        for (sample, flip) in mirrored.enumerated() where flip {
            var row = values.baseAddress! + sample * sampleSize
            for _ in 0..<(sampleSize / max(width, 1)) {
                var mirroredRow = UnsafeMutableBufferPointer(start: row, count: width)
                mirroredRow.reverse()
                row += width
            }
        }
    }
}
