import Foundation
import LanceCore
import LanceModel
import LanceRuntime
import LanceTestSupport
import LanceTrain
import Testing

@Suite("Training: optimizers, clipping, schedule")
struct TrainingOptimizerTests {
    static let start = Tensor(shape: [2], scalars: [1, -2])
    static let gradients = [Tensor(shape: [2], scalars: [0.5, 0.25]), Tensor(shape: [2], scalars: [0.1, -0.3]),
                            Tensor(shape: [2], scalars: [-0.2, 0.05])]

    static func close(_ actual: Tensor, _ expected: [Double], tolerance: Double = 1e-6) -> Bool {
        zip(actual.scalars, expected).allSatisfy { abs(Double($0) - $1) <= tolerance * max(1, abs($1)) }
    }

    @Test("SGD with momentum and weight decay follows torch.optim.SGD")
    func sgd() {
        var optimizer = Optimizer(.sgd(momentum: 0.9, weightDecay: 0.01))
        var parameters = ["p": Self.start]
        optimizer.update(&parameters, gradients: ["p": Self.gradients[0]], learningRate: 0.1)
        // d = g + 0.01·p = [0.51, 0.23]; b = d; p − 0.1·b
        #expect(Self.close(parameters["p"]!, [0.949, -2.023]))
        optimizer.update(&parameters, gradients: ["p": Self.gradients[1]], learningRate: 0.1)
        // d = [0.1 + 0.00949, −0.3 − 0.02023]; b = 0.9·[0.51, 0.23] + d = [0.56849, −0.11323]
        #expect(Self.close(parameters["p"]!, [0.892151, -2.011677]))
        #expect(optimizer.step == 2)
        #expect(Self.close(optimizer.slots["momentum/p"]!, [0.56849, -0.11323]))
    }

    @Test("AdamW follows torch.optim.AdamW (decoupled decay, bias correction)")
    func adamW() {
        var optimizer = Optimizer(.adamW(beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01))
        var parameters = ["p": Self.start]
        optimizer.update(&parameters, gradients: ["p": Self.gradients[0]], learningRate: 0.1)
        // p·(1 − 0.001) − 0.1 · m̂ / (√v̂ + ε) with m̂ = g, √v̂ = |g|: [0.999 − 0.1, −1.998 − 0.1]
        #expect(Self.close(parameters["p"]!, [0.899, -2.098]))
        // Two more steps against the formula in double precision.
        var p = [0.899, -2.098]
        var m = Self.gradients[0].scalars.map { 0.1 * Double($0) }
        var v = Self.gradients[0].scalars.map { 0.001 * Double($0) * Double($0) }
        for t in 2...3 {
            let g = Self.gradients[t - 1].scalars.map(Double.init)
            optimizer.update(&parameters, gradients: ["p": Self.gradients[t - 1]], learningRate: 0.1)
            for k in 0..<2 {
                p[k] *= 1 - 0.1 * 0.01
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v[k] = 0.999 * v[k] + 0.001 * g[k] * g[k]
                let denominator = v[k].squareRoot() / (1 - pow(0.999, Double(t))).squareRoot() + 1e-8
                p[k] -= 0.1 / (1 - pow(0.9, Double(t))) * m[k] / denominator
            }
            #expect(Self.close(parameters["p"]!, p, tolerance: 1e-5), "step \(t)")
        }
    }

    @Test("gradient clipping scales by maxNorm / (norm + 1e-6) over all parameters together")
    func clipping() {
        var gradients = ["a": Tensor(shape: [2], scalars: [3, 4]), "b": Tensor(shape: [1], scalars: [12])]
        let norm = clipGradientNorm(&gradients, maxNorm: 2)
        #expect(norm == 13)
        let factor = Float(2 / (13 + 1e-6))
        #expect(gradients["a"]!.scalars == [3 * factor, 4 * factor] && gradients["b"]!.scalars == [12 * factor])
        #expect(abs(globalGradientNorm(gradients) - 2) < 1e-5)
        var small = ["a": Tensor(shape: [2], scalars: [0.3, 0.4])]
        #expect(clipGradientNorm(&small, maxNorm: 2) == 0.5)
        #expect(small["a"]!.scalars == [0.3, 0.4])
    }

    @Test("cosine annealing from η₀ to 0.01·η₀ (PyTorch CosineAnnealingLR)")
    func cosine() {
        let schedule = CosineSchedule(baseLearningRate: 0.05, length: 10)
        #expect(schedule.minimumLearningRate == 0.0005)
        #expect(schedule.learningRate(at: 0) == 0.05)
        #expect(abs(schedule.learningRate(at: 5) - 0.02525) < 1e-8)
        #expect(abs(schedule.learningRate(at: 10) - 0.0005) < 1e-9)
        #expect(abs(schedule.learningRate(at: 30) - 0.0005) < 1e-9)
        let expected = 0.0005 + 0.0495 * (1 + cos(Double.pi * 0.2)) / 2
        #expect(abs(Double(schedule.learningRate(at: 2)) - expected) < 1e-8)
        // Per epoch by default: steps do not move it.
        #expect(schedule.learningRate(step: 7, epoch: 2) == schedule.learningRate(at: 2))
        let perStep = CosineSchedule(baseLearningRate: 0.05, length: 10, perStep: true)
        #expect(perStep.learningRate(step: 7, epoch: 2) == perStep.learningRate(at: 7))
    }

    @Test("a saved and restored optimizer continues exactly like an uninterrupted run", arguments: [
        OptimizerKind.paperSGD, OptimizerKind.defaultAdamW,
    ])
    func roundTrip(kind: OptimizerKind) throws {
        let graph = SmallNetwork.graph()
        let layers = try SmallNetwork.layers(graph)
        let configuration = TrainerConfiguration(optimizer: kind, learningRate: 0.05, scheduleLength: 4, schedulePerStep: true)
        let batches = (0..<4).map { SmallNetwork.images(seed: 200 + UInt64($0)) }
        var uninterrupted = try Trainer(graph: graph, layers: layers, method: .full, configuration: configuration)
        for batch in batches { _ = try uninterrupted.step(images: batch, labels: SmallNetwork.labels) }

        var first = try Trainer(graph: graph, layers: layers, method: .full, configuration: configuration)
        for batch in batches.prefix(2) { _ = try first.step(images: batch, labels: SmallNetwork.labels) }
        let snapshot = first.snapshot
        #expect(snapshot.kind == kind.name && snapshot.step == 2)
        #expect(snapshot.hyperparameters["learning_rate"] == Double(Float(0.05)))
        #expect(!snapshot.slots.isEmpty)
        var resumed = try Trainer(graph: first.graph, layers: layers, method: .full, configuration: configuration)
        try resumed.restore(snapshot)
        #expect(resumed.learningRate == first.learningRate)
        for batch in batches.suffix(2) { _ = try resumed.step(images: batch, labels: SmallNetwork.labels) }
        #expect(resumed.graph.parameters == uninterrupted.graph.parameters)
        #expect(resumed.snapshot == uninterrupted.snapshot)
        // Without the restore the run differs (the test can fail).
        var fresh = try Trainer(graph: first.graph, layers: layers, method: .full, configuration: configuration)
        for batch in batches.suffix(2) { _ = try fresh.step(images: batch, labels: SmallNetwork.labels) }
        #expect(fresh.graph.parameters != uninterrupted.graph.parameters)
    }

    @Test("a restore with another optimizer kind is refused")
    func restoreMismatch() throws {
        let graph = SmallNetwork.graph()
        var trainer = try Trainer(graph: graph, layers: try SmallNetwork.layers(graph), method: .full)
        #expect(throws: TrainingError.self) {
            try trainer.restore(Optimizer(.defaultAdamW).snapshot)
        }
    }
}

@Suite("Trainer")
struct TrainingTrainerTests {
    /// A linear classifier of 2-D points from two separated clusters.
    static func separable(seed: UInt64) -> (images: Tensor, labels: [Int]) {
        var generator = SeededGenerator(seed: seed)
        var scalars: [Float] = []
        var labels: [Int] = []
        for n in 0..<16 {
            let label = n % 2
            labels.append(label)
            let center: Float = label == 0 ? -1 : 1
            scalars += [center + Float.random(in: -0.5...0.5, using: &generator), -center + Float.random(in: -0.5...0.5, using: &generator)]
        }
        return (Tensor(shape: [16, 2], scalars: scalars), labels)
    }

    static func linearGraph() -> Graph {
        Graph(name: "linear", inputs: [ValueInfo(name: "x", dimensions: [.symbolic("N"), .fixed(2)])],
              outputs: [ValueInfo(name: "y", dimensions: [.symbolic("N"), .fixed(2)])],
              nodes: [Node(name: "fc", operation: .gemm(Gemm(transposeB: true)), inputs: ["x", "w", "b"], output: "y")],
              parameters: [Parameter(name: "w", tensor: Tensor(shape: [2, 2], scalars: [0.3, 0.2, 0.1, 0.4])),
                           Parameter(name: "b", tensor: Tensor(shape: [2], scalars: [0, 0]))],
              provenance: Provenance(sourceFormat: "test", producer: "", formatVersion: ""))
    }

    @Test("SGD and AdamW drive the loss down on a separable problem", arguments: [OptimizerKind.paperSGD, OptimizerKind.defaultAdamW])
    func convergence(kind: OptimizerKind) throws {
        let graph = Self.linearGraph()
        let (images, labels) = Self.separable(seed: 3)
        var trainer = try Trainer(graph: graph, layers: try graph.trainedLayers(.last(0)), method: .full,
                                  configuration: TrainerConfiguration(optimizer: kind, learningRate: 0.1, scheduleLength: 0))
        let before = try trainer.evaluate(images: images, labels: labels)
        var last: StepResult?
        for _ in 0..<40 { last = try trainer.step(images: images, labels: labels) }
        let after = try trainer.evaluate(images: images, labels: labels)
        #expect(after.loss < 0.5 * before.loss, "loss \(before.loss) → \(after.loss)")
        #expect(after.accuracy == 1)
        #expect(last?.learningRate == 0.1)
    }

    @Test("lance training on the small CNN lowers the loss on its batch")
    func lanceConvergence() throws {
        let graph = SmallNetwork.graph()
        let calibration = try SmallNetwork.calibration(graph, energy: 0.9)
        var trainer = try Trainer(graph: graph, layers: try SmallNetwork.layers(graph), method: .lance(calibration),
                                  configuration: TrainerConfiguration(learningRate: 0.05, scheduleLength: 0))
        let images = SmallNetwork.images(seed: 100)  // a calibration batch
        var losses: [Float] = []
        for _ in 0..<30 { losses.append(try trainer.step(images: images, labels: SmallNetwork.labels).loss) }
        #expect(losses.last! < 0.7 * losses.first!, "\(losses.first!) → \(losses.last!)")
        #expect(trainer.optimizer.step == 30)
    }

    @Test("evaluate scores with the current weights: after a step, and in a copy that trained differently")
    func evaluationFollowsWeights() throws {
        let graph = SmallNetwork.graph()
        let images = SmallNetwork.images(seed: 3)
        func reference(_ trainer: Trainer) throws -> Tensor { try InferenceSession(graph: trainer.graph).run(images) }
        var trainer = try Trainer(graph: graph, layers: try SmallNetwork.layers(graph), method: .full,
                                  configuration: TrainerConfiguration(learningRate: 0.5, scheduleLength: 0))
        let before = try trainer.evaluate(images: images, labels: SmallNetwork.labels).logits
        #expect(before.isClose(to: try reference(trainer), absolute: 1e-6, relative: 1e-5))
        var copy = trainer
        _ = try trainer.step(images: SmallNetwork.images(seed: 4), labels: SmallNetwork.labels)
        _ = try copy.step(images: SmallNetwork.images(seed: 5), labels: [3, 2, 1, 0].map { $0 % 3 })
        let after = try trainer.evaluate(images: images, labels: SmallNetwork.labels).logits
        let copied = try copy.evaluate(images: images, labels: SmallNetwork.labels).logits
        #expect(after.maxAbsoluteDifference(to: before) > 1e-3)
        #expect(after.isClose(to: try reference(trainer), absolute: 1e-6, relative: 1e-5))
        #expect(copied.isClose(to: try reference(copy), absolute: 1e-6, relative: 1e-5))
        #expect(try trainer.evaluate(images: images, labels: SmallNetwork.labels).logits == after)
    }

    @Test("a NaN loss throws and leaves the parameters and the optimizer untouched")
    func nonFinite() throws {
        let graph = SmallNetwork.graph()
        var trainer = try Trainer(graph: graph, layers: try SmallNetwork.layers(graph), method: .full)
        var images = SmallNetwork.images(seed: 1)
        images[0, 0, 0, 0] = .nan
        #expect {
            try trainer.step(images: images, labels: SmallNetwork.labels)
        } throws: { error in
            guard case TrainingError.numeric(let reason) = error else { return false }
            return reason.contains("not applied")
        }
        #expect(trainer.graph == graph)
        #expect(trainer.optimizer.step == 0)
        #expect(throws: TrainingError.self) { try trainer.step(images: SmallNetwork.images(seed: 1), labels: [0, 1, 2, 3]) }
    }

    @Test("a new head: PyTorch Linear initialisation bounds, seeded, new class count in the output")
    func headReplacement() throws {
        let graph = SmallNetwork.graph()
        let replaced = try replaceHead(in: graph, classes: 7, seed: 5)
        let weight = try #require(replaced.parametersByName[ReplacedHead.weightName])
        let bias = try #require(replaced.parametersByName[ReplacedHead.biasName])
        #expect(weight.tensor.shape == [7, 4] && bias.tensor.shape == [7] && weight.trainable && bias.trainable)
        let bound: Float = 1 / 2  // 1/√4
        #expect(weight.tensor.scalars.allSatisfy { abs($0) <= bound } && bias.tensor.scalars.allSatisfy { abs($0) <= bound })
        #expect(weight.tensor.scalars.map(abs).max()! > 0.3)
        #expect(replaced.parametersByName["wf"] == nil && replaced.parametersByName["bf"] == nil)
        #expect(replaced.outputs[0].dimensions == [.symbolic("N"), .fixed(7)])
        #expect(try replaceHead(in: graph, classes: 7, seed: 5) == replaced)
        #expect(try replaceHead(in: graph, classes: 7, seed: 6) != replaced)
        let layers = try replaced.trainedLayers(.names(["conv2", "fc"]))
        var trainer = try Trainer(graph: replaced, layers: layers, method: .full)
        let result = try trainer.step(images: SmallNetwork.images(seed: 2), labels: [6, 5, 0, 3])
        #expect(result.loss.isFinite)
        #expect(trainer.runner.trainedParameterNames == ["w2", "b2", ReplacedHead.weightName, ReplacedHead.biasName])
    }
}
