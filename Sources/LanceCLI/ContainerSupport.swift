import Foundation
import LanceFormat
import LanceModel

/// A model file or a `.lance` container, loaded.
struct LoadedModel {
    var graph: Graph
    var container: Container?
}

/// Loads a `.lance` container, or imports a model file (`loadModel`).
func loadModelOrContainer(_ path: String, architecture: String? = nil) throws -> LoadedModel {
    if URL(fileURLWithPath: path).pathExtension.lowercased() == "lance" {
        let container = try ContainerFile.read(path)
        return LoadedModel(graph: container.graph, container: container)
    }
    return LoadedModel(graph: try loadModel(path, architecture: architecture), container: nil)
}

/// Whether a container stores some tensors as float16 (`lance-convert --fp16`), so that tools
/// writing it back keep that storage.
func storesHalfPrecision(_ path: String) -> Bool {
    (try? ContainerFile.readManifestOnly(path))?.blobs.contains { $0.elementType == .float16 } ?? false
}

/// What `lance-inspect` shows of a container beyond the model table.
struct ContainerReport: Codable {
    struct Calibration: Codable {
        var energy: Float
        var batchSize: Int
        var batches: Int
        var accumulation: String
        var layerRule: String
        var data: String
        var dataFingerprint: String
    }

    struct Task: Codable {
        var name: String
        var classes: Int
        var classNames: [String]
        var metrics: [String: Double]
    }

    var sourceSHA256: String
    var preprocessing: Preprocessing?
    var calibration: Calibration?
    var tasks: [Task]
    var metrics: [String: Double]

    init(_ container: Container) {
        sourceSHA256 = container.sourceSHA256
        preprocessing = container.preprocessing
        calibration = container.calibration.map {
            Calibration(energy: $0.energy, batchSize: $0.batchSize, batches: $0.batches, accumulation: $0.accumulation,
                        layerRule: $0.layerRule, data: $0.dataDescription, dataFingerprint: $0.dataFingerprint)
        }
        tasks = container.tasks.map { Task(name: $0.name, classes: $0.classes, classNames: $0.classNames, metrics: $0.metrics) }
        metrics = Dictionary(container.metrics.map { ("\($0.scope)/\($0.name)", $0.value) }, uniquingKeysWith: { _, last in last })
    }

    var lines: [String] {
        var lines = ["source    sha256 \(sourceSHA256)"]
        if let preprocessing {
            let size = preprocessing.size.map { "\($0[0])x\($0[1])" } ?? "as stored"
            lines.append("inputs    \(size), resize \(preprocessing.resize.rawValue), scale \(preprocessing.scale), mean \(preprocessing.mean), "
                         + "std \(preprocessing.standardDeviation), \(preprocessing.channels) channels")
        }
        if let calibration {
            lines.append("calibration  ε \(calibration.energy), \(calibration.batches) batches of \(calibration.batchSize), "
                         + "\(calibration.accumulation), layers \(calibration.layerRule)")
            lines.append("          data \(calibration.data), sha256 \(calibration.dataFingerprint)")
        } else {
            lines.append("calibration  none (lance-convert CONTAINER --calibration DATA -o OUT.lance adds bases)")
        }
        for task in tasks {
            lines.append("task      \(task.name): \(task.classes) classes"
                         + (task.metrics.isEmpty ? "" : ", " + task.metrics.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")))
        }
        return lines
    }
}
