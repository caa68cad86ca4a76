import LanceModel

/// Activation memory and weight-gradient cost of one trained layer, in the paper's convention
/// (method section 3.4–3.5): memory is the trained layer's input in float32; costs are
/// multiply-accumulates (MACs), forward plus weight gradient (the input gradient, equal for all
/// methods, is left out).
public struct LayerAccounting: Sendable, Equatable {
    /// The trained node.
    public var layer: String
    /// Convolution or linear.
    public var kind: TrainedLayer.Kind
    /// Whether it is the classifier head.
    public var isHead: Bool
    /// Its input shape at the accounted batch size.
    public var inputShape: [Int]
    /// Its output shape.
    public var outputShape: [Int]
    /// Bytes full backpropagation keeps: `numel(X) · 4`.
    public var fullBytes: Int
    /// Bytes LANCE keeps: `(∏ r_n + Σ d_n·r_n) · 4` (core plus factors); `nil` without bases or
    /// when the shape differs from the calibration shape.
    public var lanceBytes: Int?
    /// Per mode: dimension, rank, energy kept (with bases).
    public var modes: [ModeBasis]
    /// Full backprop: forward plus weight-gradient MACs.
    public var fullMACs: Int
    /// Full backprop: weight-gradient MACs.
    public var fullWeightGradientMACs: Int
    /// LANCE: forward (with projection) plus weight-gradient MACs.
    public var lanceMACs: Int?
    /// LANCE: weight-gradient MACs through the low-rank chain.
    public var lanceWeightGradientMACs: Int?

    /// `fullBytes / lanceBytes`.
    public var compressionRatio: Double? { lanceBytes.map { Double(fullBytes) / Double(max($0, 1)) } }
}

/// Bytes in a mebibyte, the unit of the paper's "MB".
public let bytesPerMiB = 1_048_576.0

extension Graph {
    /// The accounting of every trained layer at `batchSize` and, when given, another input
    /// `[height, width]`; LANCE figures come from `calibration` where its input shapes match.
    /// The classifier head keeps its input uncompressed under LANCE unless `compressHead` (as
    /// training does by default, following the authors' CNN code), so its LANCE figures then
    /// equal the full-backprop ones.
    public func accounting(for layers: [TrainedLayer], batchSize: Int, inputSize: [Int]? = nil,
                           calibration: CalibrationRecord? = nil, compressHead: Bool = false) throws(TrainingError) -> [LayerAccounting] {
        var inputShapes: [String: [Int]]
        do { inputShapes = try self.inputShapes(batchSize: batchSize) } catch { throw .graph(error) }
        if let inputSize {
            guard inputSize.count == 2, let input = inputs.first, var shape = inputShapes[input.name], shape.count == 4 else {
                throw .data(reason: "--input-size needs an image model with one [N, C, H, W] input")
            }
            shape[2] = inputSize[0]
            shape[3] = inputSize[1]
            inputShapes[input.name] = shape
            // The declared input shape is fixed; check the new one node by node instead.
            var graph = self
            graph.inputs[0].dimensions = [.symbolic("N"), .fixed(shape[1]), .fixed(shape[2]), .fixed(shape[3])]
            return try graph.accounting(for: layers, batchSize: batchSize, inputSize: nil, calibration: calibration,
                                        compressHead: compressHead)
        }
        let shapes: [String: [Int]]
        do { shapes = try inferShapes(inputShapes: inputShapes) } catch { throw .graph(error) }
        let nodesByName = Dictionary(nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let bases = Dictionary((calibration?.layers ?? []).map { ($0.layer, $0) }, uniquingKeysWith: { a, _ in a })
        return layers.map { layer in
            let input = shapes[layer.input] ?? []
            let node = nodesByName[layer.node]
            let output = node.flatMap { shapes[$0.output] } ?? []
            let weight = node.flatMap { $0.inputs.count > 1 ? shapes[$0.inputs[1]] : nil } ?? []
            var record = LayerAccounting(layer: layer.node, kind: layer.kind, isHead: layer.isHead, inputShape: input, outputShape: output,
                                         fullBytes: input.reduce(1, *) * 4, lanceBytes: nil, modes: [],
                                         fullMACs: 0, fullWeightGradientMACs: 0, lanceMACs: nil, lanceWeightGradientMACs: nil)
            let ranks: [Int]?
            if let layerBases = bases[layer.node], layerBases.inputShape == input {
                record.modes = layerBases.modes
                ranks = layerBases.modes.map(\.rank)
                let core = layerBases.modes.reduce(1) { $0 * $1.rank }
                let factors = layerBases.modes.reduce(0) { $0 + $1.dimension * $1.rank }
                record.lanceBytes = (core + factors) * 4
            } else {
                ranks = nil
            }
            if layer.kind == .linear, input.count == 2, output.count == 2 {
                let (b, i, o) = (input[0], input[1], output[1])
                record.fullWeightGradientMACs = i * o * b
                record.fullMACs = 2 * i * o * b
                if let ranks, ranks.count == 2 {
                    let (r0, r1) = (ranks[0], ranks[1])
                    let backward = o * b * r0 + r0 * r1 * i + o * r0 * i
                    record.lanceWeightGradientMACs = backward
                    record.lanceMACs = b * i * (r0 + r1) + b * i * o + backward
                }
            } else if input.count == 4, output.count == 4, weight.count == 4 {
                let (b, c, h, w) = (input[0], input[1], input[2], input[3])
                let (co, ho, wo) = (output[1], output[2], output[3])
                let (kh, kw) = (weight[2], weight[3])
                let forward = b * co * ho * wo * weight[1] * kh * kw
                record.fullWeightGradientMACs = forward
                record.fullMACs = 2 * forward
                if let ranks, ranks.count == 4 {
                    let (r0, r1, r2, r3) = (ranks[0], ranks[1], ranks[2], ranks[3])
                    let backward = r0 * co * ho * wo * b + h * r0 * r1 * r2 * r3 + h * w * r0 * r1 * r3
                        + co * r0 * r1 * kh * kw * ho * wo + co * c * kh * kw * r1
                    record.lanceWeightGradientMACs = backward
                    record.lanceMACs = b * c * h * w * (r0 + r1 + r2 + r3) + forward + backward
                }
            }
            if layer.isHead && !compressHead && record.lanceBytes != nil {
                record.lanceBytes = record.fullBytes
                record.lanceMACs = record.fullMACs
                record.lanceWeightGradientMACs = record.fullWeightGradientMACs
            }
            return record
        }
    }
}
