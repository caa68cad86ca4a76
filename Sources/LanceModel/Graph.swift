import LanceCore

/// One extent of a declared input or output shape.
public enum ShapeDimension: Sendable, Equatable, CustomStringConvertible {
    /// A fixed extent.
    case fixed(Int)
    /// An extent chosen at run time, such as the batch axis `N`.
    case symbolic(String)

    /// `224` or `N`.
    public var description: String {
        switch self {
        case .fixed(let extent): "\(extent)"
        case .symbolic(let name): name.isEmpty ? "?" : name
        }
    }
}

/// A named graph input or output with its declared shape.
public struct ValueInfo: Sendable, Equatable {
    /// The value's name.
    public var name: String
    /// The declared extents; `nil` when the source did not declare a shape.
    public var dimensions: [ShapeDimension]?

    /// Creates a value description.
    public init(name: String, dimensions: [ShapeDimension]?) {
        self.name = name
        self.dimensions = dimensions
    }

    /// `[N, 3, 224, 224]`, or `[?]` when unknown.
    public var shapeDescription: String {
        guard let dimensions else { return "[?]" }
        return "[" + dimensions.map(\.description).joined(separator: ", ") + "]"
    }
}

/// A named weight tensor of the model.
public struct Parameter: Sendable, Equatable {
    /// The name the source format gave it (kept through export).
    public var name: String
    /// The values, in the canonical layout (OIHW for convolution kernels).
    public var tensor: Tensor
    /// Whether fine-tuning may change it.
    public var trainable: Bool
    /// How the canonical tensor was made from the source's array, so an exporter can invert it
    /// exactly (`nil`: stored as in the source).
    public var layoutChange: LayoutChange?
    /// Whether the source has no such weight and the importer made up a constant for an operand
    /// the source leaves implicit (a Keras BatchNormalization without scale has no gamma: 1s; a
    /// Rescaling's factor is configuration). Synthesized parameters do not count as the model's
    /// parameters and are not exported as weights.
    public var synthesized: Bool

    /// Creates a parameter.
    public init(name: String, tensor: Tensor, trainable: Bool = true, layoutChange: LayoutChange? = nil,
                synthesized: Bool = false) {
        self.name = name
        self.tensor = tensor
        self.trainable = trainable && !synthesized
        self.layoutChange = layoutChange
        self.synthesized = synthesized
    }
}

/// A layout change applied at import: the source array is viewed with `sourceShape`, its axes are
/// permuted (canonical axis `i` is source axis `permutation[i]`), and the result is viewed with the
/// canonical shape.
///
/// Examples: a Keras Conv2D kernel HWIO → OIHW is `sourceShape [kH, kW, I, O]`, `permutation
/// [3, 2, 0, 1]`; the rows of a Dense kernel after an NHWC Flatten, `[H·W·C, out]` → `[C·H·W, out]`,
/// are `sourceShape [H, W, C, out]`, `permutation [2, 0, 1, 3]`.
public struct LayoutChange: Sendable, Equatable {
    /// The shape the source array is viewed with before permuting.
    public var sourceShape: [Int]
    /// The axis permutation.
    public var permutation: [Int]

    /// Creates a layout change.
    public init(sourceShape: [Int], permutation: [Int]) {
        self.sourceShape = sourceShape
        self.permutation = permutation
    }
}

/// One operation applied to named values.
public struct Node: Sendable, Equatable {
    /// A unique name (from the source, or synthesised from the operator and position).
    public var name: String
    /// What the node computes.
    public var operation: Operator
    /// Names of the input values: graph inputs, parameters or outputs of earlier nodes.
    public var inputs: [String]
    /// Name of the single output value.
    public var output: String

    /// Creates a node.
    public init(name: String, operation: Operator, inputs: [String], output: String) {
        self.name = name
        self.operation = operation
        self.inputs = inputs
        self.output = output
    }
}

/// Where a model came from.
public struct Provenance: Sendable, Equatable {
    /// `onnx`, `keras-h5`, ...
    public var sourceFormat: String
    /// The program that wrote the source file, with its version.
    public var producer: String
    /// The ONNX opset or Keras version of the source.
    public var formatVersion: String
    /// Further facts worth showing (IR version, domain, ...), in display order.
    public var details: [(key: String, value: String)]

    /// Creates a provenance record.
    public init(sourceFormat: String, producer: String, formatVersion: String, details: [(key: String, value: String)] = []) {
        self.sourceFormat = sourceFormat
        self.producer = producer
        self.formatVersion = formatVersion
        self.details = details
    }

    public static func == (lhs: Provenance, rhs: Provenance) -> Bool {
        lhs.sourceFormat == rhs.sourceFormat && lhs.producer == rhs.producer
            && lhs.formatVersion == rhs.formatVersion
            && lhs.details.map(\.key) == rhs.details.map(\.key)
            && lhs.details.map(\.value) == rhs.details.map(\.value)
    }
}

/// The format-neutral model: nodes in topological order over named values.
///
/// Every importer produces a `Graph` and every exporter and executor consumes one. Values are
/// named; a node input names a graph input, a parameter, or the output of an earlier node.
public struct Graph: Sendable, Equatable {
    /// The graph's name in its source.
    public var name: String
    /// Runtime inputs (parameters are not listed here).
    public var inputs: [ValueInfo]
    /// The values the graph produces.
    public var outputs: [ValueInfo]
    /// Operations in an order where every input is defined before use.
    public var nodes: [Node]
    /// The weights, in source order.
    public var parameters: [Parameter]
    /// Where the model came from.
    public var provenance: Provenance

    /// Creates a graph.
    public init(name: String, inputs: [ValueInfo], outputs: [ValueInfo], nodes: [Node],
                parameters: [Parameter], provenance: Provenance) {
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.nodes = nodes
        self.parameters = parameters
        self.provenance = provenance
    }

    /// Parameters by name.
    public var parametersByName: [String: Parameter] {
        Dictionary(parameters.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// The concrete input shapes for a batch size: symbolic first axes become `batchSize`, other
    /// symbolic axes are an error because they cannot be guessed.
    public func inputShapes(batchSize: Int) throws(ModelError) -> [String: [Int]] {
        var shapes: [String: [Int]] = [:]
        for input in inputs {
            guard let dimensions = input.dimensions else { throw .unknownInputShape(input: input.name) }
            shapes[input.name] = try dimensions.enumerated().map { (axis, dimension) throws(ModelError) -> Int in
                switch dimension {
                case .fixed(let extent): return extent
                case .symbolic: if axis == 0 { return batchSize }
                    throw .unknownInputShape(input: input.name)
                }
            }
        }
        return shapes
    }

    /// Checks that a concrete input shape matches the declared one (symbolic axes match anything).
    public func checkInputShape(_ shape: [Int], for input: ValueInfo) throws(ModelError) {
        guard let dimensions = input.dimensions else { return }
        let matches = dimensions.count == shape.count && zip(dimensions, shape).allSatisfy { dimension, extent in
            if case .fixed(let expected) = dimension { return expected == extent }
            return extent >= 0
        }
        if !matches { throw .inputShapeMismatch(input: input.name, expected: input.shapeDescription, actual: shape) }
    }

    /// The largest number of elements one value may have (16 GiB of float32).
    public static let maximumElementCount = 1 << 32

    /// Infers the shape of every value for the given input shapes, checking every node on the way:
    /// inputs defined before use, parameter shapes consistent with the operation, and outputs
    /// defined. Returns the shapes of all values, parameters and inputs included.
    public func inferShapes(inputShapes: [String: [Int]]) throws(ModelError) -> [String: [Int]] {
        var shapes: [String: [Int]] = [:]
        for parameter in parameters { shapes[parameter.name] = parameter.tensor.shape }
        for input in inputs {
            guard let shape = inputShapes[input.name] else { throw .missingInput(input: input.name) }
            try checkInputShape(shape, for: input)
            shapes[input.name] = shape
        }
        for node in nodes {
            var operandShapes: [[Int]] = []
            for input in node.inputs {
                guard let shape = shapes[input] else { throw .undefinedValue(node: node.name, value: input) }
                operandShapes.append(shape)
            }
            guard shapes[node.output] == nil else { throw .duplicateValue(node: node.name, value: node.output) }
            let shape: [Int]
            do {
                shape = try node.operation.outputShape(inputs: operandShapes)
            } catch {
                throw .invalidNode(node: node.name, opType: node.operation.opType, reason: error.reason)
            }
            var elements = 1
            for extent in shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: extent)
                guard !overflow, product <= Self.maximumElementCount else {
                    throw .invalidNode(node: node.name, opType: node.operation.opType,
                                       reason: "its output \(shape) would exceed \(Self.maximumElementCount) elements")
                }
                elements = product
            }
            shapes[node.output] = shape
        }
        for output in outputs where shapes[output.name] == nil {
            throw .undefinedOutput(output: output.name)
        }
        return shapes
    }
}

/// A problem with a model graph: a reference to nothing, or shapes that do not fit.
public enum ModelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A node reads a value that no input, parameter or earlier node defines.
    case undefinedValue(node: String, value: String)
    /// Two definitions of one value name.
    case duplicateValue(node: String, value: String)
    /// A node's inputs do not fit its operation.
    case invalidNode(node: String, opType: String, reason: String)
    /// A graph output that nothing produces.
    case undefinedOutput(output: String)
    /// No data was given for a graph input.
    case missingInput(input: String)
    /// A graph input's declared shape has unknown extents other than the batch axis.
    case unknownInputShape(input: String)
    /// Data given for an input has the wrong shape.
    case inputShapeMismatch(input: String, expected: String, actual: [Int])

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .undefinedValue(let node, let value):
            "node '\(node)' reads '\(value)', which no graph input, initializer or earlier node defines"
        case .duplicateValue(let node, let value):
            "node '\(node)' writes '\(value)', which is already defined; value names must be unique"
        case .invalidNode(let node, let opType, let reason):
            "node '\(node)' (\(opType)): \(reason)"
        case .undefinedOutput(let output):
            "graph output '\(output)' is not produced by any node"
        case .missingInput(let input):
            "no data was given for graph input '\(input)'"
        case .unknownInputShape(let input):
            "graph input '\(input)' has unknown extents besides the batch axis; give the input shape explicitly"
        case .inputShapeMismatch(let input, let expected, let actual):
            "input '\(input)' has shape \(actual), but the model expects \(expected)"
        }
    }
}

extension LayoutChange {
    /// The permuted shape (before any final reshape).
    public var permutedShape: [Int] { permutation.map { sourceShape[$0] } }

    /// Applies the change to a source array in row-major order.
    public func apply(to source: [Float]) -> [Float] {
        Self.permute(source, shape: sourceShape, permutation: permutation)
    }

    /// Undoes the change: from canonical elements back to the source array's order.
    public func invert(_ canonical: [Float]) -> [Float] {
        var inverse = [Int](repeating: 0, count: permutation.count)
        for (axis, source) in permutation.enumerated() { inverse[source] = axis }
        return Self.permute(canonical, shape: permutedShape, permutation: inverse)
    }

    static func permute(_ values: [Float], shape: [Int], permutation: [Int]) -> [Float] {
        let rank = shape.count
        var strides = [Int](repeating: 1, count: rank)
        for axis in stride(from: rank - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * shape[axis + 1] }
        let outputShape = permutation.map { shape[$0] }
        let outputStrides = permutation.map { strides[$0] }
        var result = [Float](repeating: 0, count: values.count)
        var index = [Int](repeating: 0, count: rank)
        var source = 0
        for position in 0..<values.count {
            result[position] = values[source]
            var axis = rank - 1
            while axis >= 0 {
                index[axis] += 1
                source += outputStrides[axis]
                if index[axis] < outputShape[axis] { break }
                source -= outputStrides[axis] * outputShape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
        return result
    }
}
