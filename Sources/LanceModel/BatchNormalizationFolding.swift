import Foundation
import LanceCore

/// Folds inference-form BatchNormalization into the Conv or Gemm before it (ONNX export's
/// `foldBatchNormalization`, and every `InferenceSession`, which then runs one operator instead of
/// two).
///
/// With `s = scale / sqrt(variance + epsilon)` per output channel, `BN(W·x + b)` is
/// `(s·W)·x + (s·(b − mean) + B)`. A BatchNormalization is folded when its input is produced by a
/// Conv, or by a Gemm with `alpha = 1` (and `beta = 1` when it has a C), that nothing else reads and
/// that is not a graph output, and when the weights involved are parameters used by those two
/// nodes only. The Conv or Gemm keeps its name and its weight's name and takes over the
/// BatchNormalization's output; a bias it lacked takes the BatchNormalization bias's name.
public enum BatchNormalizationFolding {
    /// The graph with every foldable BatchNormalization folded, and the folded nodes' names.
    public static func fold(_ graph: Graph) -> (graph: Graph, folded: [String]) {
        var graph = graph
        var folded: [String] = []
        var index = 0
        while index < graph.nodes.count {
            if let producerIndex = foldableProducer(of: index, in: graph) {
                fold(batchNormalization: index, into: producerIndex, graph: &graph)
                folded.append(graph.nodes[index].name)
                graph.nodes.remove(at: index)
            } else {
                index += 1
            }
        }
        let used = Set(graph.nodes.flatMap(\.inputs))
        graph.parameters.removeAll { !used.contains($0.name) }
        return (graph, folded)
    }

    /// How many node inputs name each value.
    static func useCounts(_ graph: Graph) -> [String: Int] {
        var counts: [String: Int] = [:]
        for node in graph.nodes { for input in node.inputs { counts[input, default: 0] += 1 } }
        for output in graph.outputs { counts[output.name, default: 0] += 1 }
        return counts
    }

    static func foldableProducer(of index: Int, in graph: Graph) -> Int? {
        let node = graph.nodes[index]
        guard case .batchNormalization = node.operation, node.inputs.count == 5 else { return nil }
        let parameters = graph.parametersByName
        let counts = useCounts(graph)
        guard node.inputs[1...].allSatisfy({ parameters[$0] != nil }),
              let producerIndex = graph.nodes.firstIndex(where: { $0.output == node.inputs[0] }),
              counts[node.inputs[0]] == 1 else { return nil }
        let producer = graph.nodes[producerIndex]
        let channels = parameters[node.inputs[1]]!.tensor.count
        guard node.inputs[1...].allSatisfy({ parameters[$0]!.tensor.count == channels }),
              producer.inputs.count >= 2, let weight = parameters[producer.inputs[1]], counts[producer.inputs[1]] == 1 else { return nil }
        if producer.inputs.count > 2 {
            guard let bias = parameters[producer.inputs[2]], counts[producer.inputs[2]] == 1, bias.tensor.count == channels else { return nil }
        }
        switch producer.operation {
        case .convolution:
            return weight.tensor.rank == 4 && weight.tensor.shape[0] == channels ? producerIndex : nil
        case .gemm(let gemm):
            guard gemm.alpha == 1, producer.inputs.count < 3 || gemm.beta == 1, weight.tensor.rank == 2 else { return nil }
            return weight.tensor.shape[gemm.transposeB ? 0 : 1] == channels ? producerIndex : nil
        default:
            return nil
        }
    }

    static func fold(batchNormalization index: Int, into producerIndex: Int, graph: inout Graph) {
        let node = graph.nodes[index]
        guard case .batchNormalization(let epsilon) = node.operation else { return }
        let parameters = graph.parametersByName
        let gamma = parameters[node.inputs[1]]!.tensor.scalars, beta = parameters[node.inputs[2]]!.tensor.scalars
        let mean = parameters[node.inputs[3]]!.tensor.scalars, variance = parameters[node.inputs[4]]!.tensor.scalars
        let scales = (0..<gamma.count).map { Double(gamma[$0]) / (Double(variance[$0]) + Double(epsilon)).squareRoot() }
        var producer = graph.nodes[producerIndex]
        let weightName = producer.inputs[1]
        guard let weightIndex = graph.parameters.firstIndex(where: { $0.name == weightName }) else { return }
        var weight = graph.parameters[weightIndex].tensor
        let channels = gamma.count
        // Which output channel each weight element belongs to.
        let channelOf: (Int) -> Int
        switch producer.operation {
        case .gemm(let gemm) where !gemm.transposeB:
            channelOf = { $0 % channels }
        default:  // Conv [M, C/g, kH, kW], Gemm with transB [N, K]: output channel first
            let perChannel = weight.count / channels
            channelOf = { $0 / perChannel }
        }
        weight.withUnsafeMutableBufferPointer { values in
            for position in values.indices {
                values[position] = Float(Double(values[position]) * scales[channelOf(position)])
            }
        }
        graph.parameters[weightIndex].tensor = weight
        let oldBias: [Float]
        if producer.inputs.count > 2, let biasIndex = graph.parameters.firstIndex(where: { $0.name == producer.inputs[2] }) {
            oldBias = graph.parameters[biasIndex].tensor.scalars
            graph.parameters[biasIndex].tensor = Tensor(shape: [channels], scalars: foldedBias(oldBias, scales, mean, beta))
        } else {
            oldBias = [Float](repeating: 0, count: channels)
            let betaParameter = parameters[node.inputs[2]]!
            let counts = useCounts(graph)
            let name = counts[betaParameter.name] == 1 ? betaParameter.name : uniqueName("\(producer.name)/bias", in: graph)
            let bias = Parameter(name: name, tensor: Tensor(shape: [channels], scalars: foldedBias(oldBias, scales, mean, beta)),
                                 trainable: betaParameter.trainable)
            if let betaIndex = graph.parameters.firstIndex(where: { $0.name == name }) {
                graph.parameters[betaIndex] = bias
            } else {
                graph.parameters.append(bias)
            }
            producer.inputs.append(name)
        }
        producer.output = node.output
        graph.nodes[producerIndex] = producer
    }

    static func foldedBias(_ bias: [Float], _ scales: [Double], _ mean: [Float], _ beta: [Float]) -> [Float] {
        (0..<bias.count).map { Float((Double(bias[$0]) - Double(mean[$0])) * scales[$0] + Double(beta[$0])) }
    }

    static func uniqueName(_ base: String, in graph: Graph) -> String {
        let taken = Set(graph.parameters.map(\.name) + graph.nodes.map(\.output) + graph.inputs.map(\.name))
        var candidate = base
        var counter = 1
        while taken.contains(candidate) {
            candidate = "\(base)_\(counter)"
            counter += 1
        }
        return candidate
    }
}
