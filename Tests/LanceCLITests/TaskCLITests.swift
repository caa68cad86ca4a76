import Foundation
import LanceCore
import LanceData
import LanceFormat
import LanceTestSupport
import Testing

@Suite("lance-train --add-task",
       .enabled(if: Fixtures.sharedAvailable && Fixtures.fashionMNISTAvailable,
                "needs ../shared/models (or $LANCE_SHARED) and Fashion-MNIST (apt-get install dataset-fashion-mnist)"))
struct TaskCLITests {
    static let train = TrainCLITests.train
    static let test = TrainCLITests.test

    /// MobileNetV2 at 64×64, last:2 shared, protected on Fashion-MNIST classes 0–4 (batches of 8) as task "base".
    static func protectedContainer(in folder: URL) throws -> String {
        let path = folder.appendingPathComponent("protected.lance").path
        let result = try runTool("lance-convert", [TrainCLITests.model, "-o", path, "--input-size", "64,64", "--preprocessing", "imagenet",
                                                   "--resize", "direct", "--calibration", train, "--batch-size", "8",
                                                   "--calibration-batches", "2", "--train-layers", "last:2", "--protect",
                                                   "--protect-batches", "2", "--task-name", "base"])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("protected bases"), "\(result.stdout)")
        return path
    }

    static func fileBytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    @Test("a task is added (with --flip) with its head and protected directions; eval and inspect select it; the first task's head is kept")
    func addTask() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.protectedContainer(in: folder)
        let before = try ContainerFile.read(source)
        #expect(before.tasks.map(\.name) == ["base"])
        #expect(before.calibration?.protection?.energy == 0.97)
        #expect(before.tasks[0].protectedBases.count == 2)

        let output = folder.appendingPathComponent("tasks.lance").path
        let result = try runTool("lance-train", [source, "-o", output, "--add-task", "sandals-shirts", "--classes", "2",
                                                 "--select-classes", "5,6", "--class-names", "sandal,shirt", "--data", Self.train,
                                                 "--eval-data", Self.test, "--limit", "48", "--batch-size", "8", "--epochs", "1",
                                                 "--protect-batches", "2", "--flip"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("random horizontal flips"), "\(result.stdout)")
        let after = try ContainerFile.read(output)
        #expect(after.tasks.map(\.name) == ["base", "sandals-shirts"])
        let task = after.tasks[1]
        #expect(task.classes == 2 && task.classNames == ["sandal", "shirt"])
        #expect(task.head.map(\.tensor.shape) == [[2, 1280], [2]])
        #expect(task.metrics["accuracy"] != nil)
        // The new directions are orthogonal to the first task's.
        for (layer, added) in task.protectedBases {
            let old = after.tasks[0].protectedBases[layer]!
            var worst: Float = 0
            for i in 0..<old.shape[1] { for j in 0..<added.shape[1] {
                var dot: Float = 0
                for k in 0..<old.shape[0] { dot += old.scalars[k * old.shape[1] + i] * added.scalars[k * added.shape[1] + j] }
                worst = max(worst, abs(dot))
            } }
            #expect(worst < 1e-5, "\(layer)")
        }
        // The graph still ends in the first task's 1000-class head; shared biases did not move.
        let sharedNodes = after.calibration!.layers.map(\.layer).dropLast()
        let sharedWeights = after.graph.nodes.filter { sharedNodes.contains($0.name) }.map { $0.inputs[1] }
        let moved = after.graph.parameters.filter { before.graph.parametersByName[$0.name]?.tensor != $0.tensor }.map(\.name)
        #expect(moved.sorted() == sharedWeights.sorted(), "\(moved)")
        #expect(after.graph.outputs == before.graph.outputs && after.graph.nodes == before.graph.nodes)

        let eval = try runTool("lance-eval", [output, "--task", "sandals-shirts", "--data", Self.test, "--select-classes", "5,6",
                                              "--limit", "16"])
        #expect(eval.status == 0, "\(eval.stderr)")
        #expect(eval.stdout.contains("outputs [16, 2]"), "\(eval.stdout)")
        let unknown = try runTool("lance-eval", [output, "--task", "nope", "--data", Self.test, "--limit", "8"])
        #expect(unknown.status == 1 && unknown.stderr.contains("has no task 'nope'") && unknown.stderr.contains("sandals-shirts"), "\(unknown.stderr)")

        let inspect = try runTool("lance-inspect", [output, "--tasks", "--json"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        let layers = json?["layers"] as? [[String: Any]] ?? []
        #expect(layers.count == 2)
        for layer in layers {
            let features = layer["features"] as? Int ?? 0, protected = layer["protected"] as? Int ?? -1, free = layer["free"] as? Int ?? -1
            #expect(protected + free == features && (layer["protectedByTask"] as? [String: Int])?.keys.sorted() == ["base", "sandals-shirts"])
        }
        // Fine-tuning in place would move the shared layers under every task: refused, nothing written.
        let tasksBytes = try Self.fileBytes(output)
        let inPlace = try runTool("lance-train", [output, "--data", Self.train, "--limit", "16", "--batch-size", "8", "--epochs", "1", "--classes", "10"])
        #expect(inPlace.status == 1 && inPlace.stderr.contains("holds 2 tasks"), "\(inPlace.stderr)")
        #expect(try Self.fileBytes(output) == tasksBytes)

        let text = try runTool("lance-inspect", [output, "--tasks"])
        #expect(text.stdout.contains("sandals-shirts") && text.stdout.contains("free"), "\(text.stdout)")

        // Export one task's head, and all heads as separate outputs.
        let inputs = folder.appendingPathComponent("inputs.npy").path
        try NPY.write(Tensor.random(shape: [3, 3, 64, 64], in: -2...2, seed: 5), to: inputs)
        let exported = folder.appendingPathComponent("task.onnx").path
        let export = try runTool("lance-export", [output, "--task", "sandals-shirts", "-o", exported])
        #expect(export.status == 0, "\(export.stderr)")
        let fromContainer = folder.appendingPathComponent("container.npy").path, fromExport = folder.appendingPathComponent("export.npy").path
        #expect(try runTool("lance-eval", [output, "--task", "sandals-shirts", "--data", inputs, "--dump-outputs", fromContainer]).status == 0)
        #expect(try runTool("lance-eval", [exported, "--data", inputs, "--dump-outputs", fromExport]).status == 0)
        let a = try NPY.read(fromContainer).tensor, b = try NPY.read(fromExport).tensor
        #expect(a.shape == [3, 2] && a.maxAbsoluteDifference(to: b) < 1e-5)
        let all = folder.appendingPathComponent("all.onnx").path
        let exportAll = try runTool("lance-export", [output, "--all-tasks", "-o", all])
        #expect(exportAll.status == 0, "\(exportAll.stderr)")
        let allInspect = try runTool("lance-inspect", [all, "--json"])
        let outputs = ((try JSONSerialization.jsonObject(with: Data(allInspect.stdout.utf8)) as? [String: Any])?["outputs"] as? [[String: Any]])?
            .compactMap { $0["name"] as? String }
        #expect(outputs?.count == 2 && outputs?.last == "logits_sandals-shirts", "\(allInspect.stdout)")
    }

    @Test("adding a task with more classes than the data has, a used name, or to a container without protected bases fails and changes nothing")
    func refusals() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.protectedContainer(in: folder)
        let original = try Self.fileBytes(source)
        func addTask(_ container: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            try runTool("lance-train", [container, "--data", Self.train, "--select-classes", "5,6", "--limit", "16", "--batch-size", "8",
                                        "--epochs", "1"] + arguments)
        }
        let tooMany = try addTask(source, ["--add-task", "t1", "--classes", "3"])
        #expect(tooMany.status == 1 && tooMany.stderr.contains("has 2 classes, fewer than --classes 3"), "\(tooMany.stderr)")
        let usedName = try addTask(source, ["--add-task", "base", "--classes", "2"])
        #expect(usedName.status == 1 && usedName.stderr.contains("already has a task named 'base'"), "\(usedName.stderr)")
        #expect(try Self.fileBytes(source) == original)

        let plain = try TrainCLITests.calibratedContainer(in: folder)
        let plainBytes = try Self.fileBytes(plain)
        let unprotected = try addTask(plain, ["--add-task", "t1", "--classes", "2"])
        #expect(unprotected.status == 1 && unprotected.stderr.contains("has no protected bases"), "\(unprotected.stderr)")
        #expect(try Self.fileBytes(plain) == plainBytes)
        let baseline = try addTask(plain, ["--method", "gpm"])
        #expect(baseline.status == 64 && baseline.stderr.contains("--add-task"), "\(baseline.stderr)")
    }
}
