import ArgumentParser
import Foundation
import LanceCore
import LanceData
import LanceFormat
import LanceModel
import LanceTrain

/// The model of one task of a container: the shared layers with that task's head installed (the
/// graph as stored for the first task, whose head the graph holds).
///
/// - Throws: `CommandError.dataMismatch` naming the container when no task has that name.
func taskGraph(_ container: Container, task name: String?, path: String) throws -> Graph {
    guard let name else { return container.graph }
    guard let index = container.tasks.firstIndex(where: { $0.name == name }) else {
        throw CommandError.dataMismatch(path: path, reason: container.tasks.isEmpty
            ? "has no task registry; there is no task '\(name)' (lance-convert --protect starts one)"
            : "has no task '\(name)'; its tasks are \(container.tasks.map(\.name).joined(separator: ", "))")
    }
    if index == 0 { return container.graph }
    let head = container.tasks[index].head
    guard let weight = head.first(where: { $0.name == ReplacedHead.weightName })?.tensor,
          let bias = head.first(where: { $0.name == ReplacedHead.biasName })?.tensor else {
        throw CommandError.dataMismatch(path: path, reason: "task '\(name)' has no head weights")
    }
    return try installHead(in: container.graph, weight: weight, bias: bias)
}

/// The parameters of the graph's classifier head (weight, then bias), empty without a head.
func headParameters(of graph: Graph) -> [Parameter] {
    guard let head = (try? graph.trainedLayers(.last(0)))?.first(where: \.isHead),
          let node = graph.nodes.first(where: { $0.name == head.node }) else { return [] }
    return node.inputs.dropFirst().compactMap { graph.parametersByName[$0] }
}

/// The model's class count: the last axis of its first output at batch size 1.
func outputClasses(of graph: Graph) throws -> Int? {
    guard let output = graph.outputs.first?.name else { return nil }
    let shapes = try graph.inferShapes(inputShapes: graph.inputShapes(batchSize: 1))
    return shapes[output]?.last
}

/// The layers tasks share (the calibration's trained layers without the head).
func sharedLayers(of container: Container, path: String) throws -> [TrainedLayer] {
    guard let calibration = container.calibration else {
        throw CommandError.dataMismatch(path: path, reason: "has no calibration record naming the shared layers")
    }
    return try container.graph.trainedLayers(.names(calibration.layers.map(\.layer))).filter { !$0.isHead }
}

/// A layer's whole protected basis: its tasks' parts in task order (`nil` when none protect it).
func protectedBasis(of container: Container, layer: String) -> Tensor? {
    concatenatedColumns(container.tasks.compactMap { $0.protectedBases[layer] })
}

/// `0,1` → `[0, 1]`.
func parseClassList(_ text: String, option: String) throws -> [Int] {
    let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let values = parts.compactMap { Int($0) }
    guard !parts.isEmpty, values.count == parts.count else {
        throw ValidationError("\(option) takes class numbers separated by commas, e.g. 0,1; got '\(text)'")
    }
    return values
}

/// Opens a data source, keeping only the classes `selection` names (relabelled in that order).
func openDataSource(_ path: String, preprocessing: Preprocessing, selecting selection: [Int]?) throws -> any DataSource {
    let source = try openDataSource(path, preprocessing: preprocessing)
    guard let selection else { return source }
    return try ClassSubsetSource(base: source, classes: selection)
}

/// Per shared layer, how much of its input-feature space each task protects and how much is free
/// (`lance-inspect --tasks`).
struct TaskRoomReport: Codable {
    struct Layer: Codable {
        var layer: String
        var features: Int
        /// Protected directions per task, in task order.
        var protectedByTask: [String: Int]
        var protected: Int
        var free: Int
    }

    struct Task: Codable {
        var name: String
        var classes: Int
        var classNames: [String]
        var headParameters: Int
        var protectedDirections: Int
        var metrics: [String: Double]
    }

    var protectEnergy: Float?
    var protectEnergyStep: Float?
    var tasks: [Task]
    var layers: [Layer]

    init(_ container: Container) {
        protectEnergy = container.calibration?.protection?.energy
        protectEnergyStep = container.calibration?.protection?.energyStep
        tasks = container.tasks.map { task in
            Task(name: task.name, classes: task.classes, classNames: task.classNames,
                 headParameters: task.head.reduce(0) { $0 + $1.tensor.count },
                 protectedDirections: task.protectedBases.values.reduce(0) { $0 + $1.shape[1] }, metrics: task.metrics)
        }
        let layerNames = container.calibration?.layers.map(\.layer) ?? []
        layers = layerNames.compactMap { name in
            let parts = container.tasks.compactMap { task in task.protectedBases[name].map { (task.name, $0) } }
            guard let features = parts.first?.1.shape[0] else { return nil }
            let byTask = Dictionary(parts.map { ($0.0, $0.1.shape[1]) }, uniquingKeysWith: { a, _ in a })
            let protected = byTask.values.reduce(0, +)
            return Layer(layer: name, features: features, protectedByTask: byTask, protected: protected, free: features - protected)
        }
    }

    var lines: [String] {
        var lines: [String] = []
        if let protectEnergy {
            lines.append("protection  ε_cl \(protectEnergy) + \(protectEnergyStep ?? 0) per task")
        } else {
            lines.append("protection  none (lance-convert --calibration DATA --protect computes the protected bases)")
        }
        lines.append("")
        let taskWidth = max(tasks.map(\.name.count).max() ?? 0, 4) + 2
        lines.append(pad("task", taskWidth) + pad("classes", 9) + pad("head params", 13) + pad("protected dirs", 16) + "metrics")
        for task in tasks {
            lines.append(pad(task.name, taskWidth) + pad("\(task.classes)", 9) + pad("\(task.headParameters)", 13)
                         + pad("\(task.protectedDirections)", 16)
                         + task.metrics.sorted { $0.key < $1.key }.map { "\($0.key) \(metricText($0.value))" }.joined(separator: ", "))
        }
        guard !layers.isEmpty else { return lines }
        lines.append("")
        let names = tasks.map(\.name)
        let layerWidth = max(layers.map(\.layer.count).max() ?? 0, 5) + 2
        lines.append(pad("layer", layerWidth) + pad("features", 10) + names.map { pad($0, max($0.count + 2, 8)) }.joined() + pad("protected", 11) + "free")
        for layer in layers {
            let share = names.map { name in
                pad("\(layer.protectedByTask[name] ?? 0)", max(name.count + 2, 8))
            }.joined()
            let freeShare = String(100 * Double(layer.free) / Double(max(layer.features, 1)), decimals: 1)
            lines.append(pad(layer.layer, layerWidth) + pad("\(layer.features)", 10) + share + pad("\(layer.protected)", 11)
                         + "\(layer.free) (\(freeShare)%)")
        }
        return lines
    }

    /// Whole numbers without decimals, others with four.
    private func metricText(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value, decimals: 4)
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

/// The model with every task's head as its own output, for exporting all tasks at once: the graph
/// as stored (the first task's head and output), plus per later task a `Gemm` on the same head
/// input with that task's weights, output `logits_<task>` `[N, classes]` (parameters
/// `<task>.head.weight` `[classes, features]` and `<task>.head.bias`).
func allTasksGraph(_ container: Container, path: String) throws -> Graph {
    var graph = container.graph
    guard container.tasks.count > 1 else { return graph }
    guard let head = try graph.trainedLayers(.last(0)).first(where: \.isHead) else {
        throw CommandError.dataMismatch(path: path, reason: "the model has no classifier head to add the tasks' heads beside")
    }
    let batch: ShapeDimension = graph.outputs.first?.dimensions?.first ?? .symbolic("N")
    for task in container.tasks.dropFirst() {
        guard let weight = task.head.first(where: { $0.name == ReplacedHead.weightName }),
              let bias = task.head.first(where: { $0.name == ReplacedHead.biasName }) else {
            throw CommandError.dataMismatch(path: path, reason: "task '\(task.name)' has no head weights")
        }
        let output = "logits_\(task.name)"
        guard !graph.nodes.contains(where: { $0.output == output || $0.name == "\(task.name).head" }) else {
            throw CommandError.dataMismatch(path: path, reason: "task '\(task.name)' clashes with a value or node of the model named '\(output)'")
        }
        graph.parameters.append(Parameter(name: "\(task.name).head.weight", tensor: weight.tensor, trainable: false))
        graph.parameters.append(Parameter(name: "\(task.name).head.bias", tensor: bias.tensor, trainable: false))
        graph.nodes.append(Node(name: "\(task.name).head", operation: .gemm(Gemm(alpha: 1, beta: 1, transposeA: false, transposeB: true)),
                                inputs: [head.input, "\(task.name).head.weight", "\(task.name).head.bias"], output: output))
        graph.outputs.append(ValueInfo(name: output, dimensions: [batch, .fixed(task.classes)]))
    }
    return graph
}
