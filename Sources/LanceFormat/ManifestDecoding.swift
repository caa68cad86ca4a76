import CLanceProto
import LanceCore
import LanceModel

/// One validated blob table entry.
struct BlobEntry {
    var name: String
    var offset: Int
    var byteLength: Int
    var elementType: BlobElementType
    var shape: [Int]
    var checksum: UInt32
}

/// Reads the C manifest back into Swift values, checking every field it relies on.
///
/// `tensorForBlob` supplies the tensor of a blob index (already checksum-verified); it is `nil`
/// when only the manifest is read, and tensor fields are then not materialised.
struct ManifestDecoder {
    let path: String
    let blobs: [BlobEntry]
    var tensors: [Tensor] = []

    init(path: String, blobs: [BlobEntry]) {
        self.path = path
        self.blobs = blobs
    }

    func malformed(_ field: String, _ reason: String) -> ContainerError {
        .malformedManifest(path: path, field: field, reason: reason)
    }

    // MARK: Blob table

    /// Validates the blob table against the file: required fields, element types, shapes, lengths,
    /// alignment and bounds.
    static func blobTable(_ manifest: Lance__Manifest, dataStart: Int, fileLength: Int, path: String) throws(ContainerError) -> [BlobEntry] {
        var entries: [BlobEntry] = []
        entries.reserveCapacity(manifest.n_blobs)
        for index in 0..<manifest.n_blobs {
            guard let blob = manifest.blobs[index]?.pointee else {
                throw .malformedManifest(path: path, field: "blobs[\(index)]", reason: "the entry is missing")
            }
            let name = string(blob.name)
            let field = "blobs[\(index)] ('\(name)')"
            func malformed(_ reason: String) -> ContainerError { .malformedManifest(path: path, field: field, reason: reason) }
            guard blob.has_offset != 0, blob.has_byte_length != 0, blob.has_element_type != 0, blob.has_crc32c != 0 else {
                throw malformed("offset, byte_length, element_type and crc32c are all required")
            }
            let elementType: BlobElementType
            switch blob.element_type {
            case LANCE__ELEMENT_TYPE__FLOAT32: elementType = .float32
            case LANCE__ELEMENT_TYPE__FLOAT16: elementType = .float16
            default: throw malformed("element type \(blob.element_type.rawValue) is not float32 (1) or float16 (2)")
            }
            var shape: [Int] = []
            var elements = 1
            for axis in 0..<blob.n_shape {
                let extent = blob.shape[axis]
                guard extent >= 0, let extentInt = Int(exactly: extent) else { throw malformed("shape has a negative extent \(extent)") }
                let (product, overflow) = elements.multipliedReportingOverflow(by: extentInt)
                guard !overflow, product <= Graph.maximumElementCount else { throw malformed("shape \(shape + [extentInt]) has too many elements") }
                elements = product
                shape.append(extentInt)
            }
            let expectedBytes = elements * elementType.byteCount
            guard blob.byte_length == UInt64(expectedBytes) else {
                throw malformed("byte_length \(blob.byte_length) does not match \(elements) \(elementType) elements (\(expectedBytes) bytes)")
            }
            guard let offset = Int(exactly: blob.offset), offset % ContainerLayout.blobAlignment == 0, offset >= dataStart else {
                throw malformed("offset \(blob.offset) is not a multiple of 64 at or after the end of the manifest (\(dataStart))")
            }
            guard offset <= fileLength, expectedBytes <= fileLength - offset else {
                throw malformed("bytes \(offset)..<\(offset + expectedBytes) lie beyond the end of the file (\(fileLength) bytes)")
            }
            entries.append(BlobEntry(name: name, offset: offset, byteLength: expectedBytes, elementType: elementType,
                                     shape: shape, checksum: blob.crc32c))
        }
        return entries
    }

    /// Checks a blob's checksum and widens it into a tensor.
    static func tensor(_ entry: BlobEntry, file: UnsafeRawBufferPointer, path: String) throws(ContainerError) -> Tensor {
        let bytes = UnsafeRawBufferPointer(rebasing: file[entry.offset..<(entry.offset + entry.byteLength)])
        guard CRC32C.checksum(bytes) == entry.checksum else {
            throw .blobChecksumMismatch(path: path, tensor: "'\(entry.name)'")
        }
        let count = entry.byteLength / entry.elementType.byteCount
        return Tensor(shape: entry.shape) { buffer in
            switch entry.elementType {
            case .float32:
                if count > 0 { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes) }
            case .float16:
                for index in 0..<count {
                    let bits = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self))
                    buffer[index] = HalfPrecision.float(fromHalfBits: bits)
                }
            }
        }
    }

    // MARK: Scalars and lists

    static func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
        guard let pointer else { return "" }
        return String(cString: pointer)
    }

    func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String { Self.string(pointer) }

    func integers(_ count: Int, _ pointer: UnsafeMutablePointer<Int64>?) -> [Int] {
        guard let pointer, count > 0 else { return [] }
        return (0..<count).map { Int(truncatingIfNeeded: pointer[$0]) }
    }

    func floats(_ count: Int, _ pointer: UnsafeMutablePointer<Float>?) -> [Float] {
        guard let pointer, count > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: pointer, count: count))
    }

    func intList(_ list: UnsafeMutablePointer<Lance__IntList>?) -> [Int]? {
        guard let list = list?.pointee else { return nil }
        return integers(list.n_values, list.values)
    }

    func elements<Message>(_ count: Int, _ pointer: UnsafeMutablePointer<UnsafeMutablePointer<Message>?>?, field: String) throws(ContainerError) -> [Message] {
        guard count > 0 else { return [] }
        guard let pointer else { throw malformed(field, "the list of \(count) entries is missing") }
        var result: [Message] = []
        result.reserveCapacity(count)
        for index in 0..<count {
            guard let element = pointer[index]?.pointee else { throw malformed("\(field)[\(index)]", "the entry is missing") }
            result.append(element)
        }
        return result
    }

    func tensor(_ hasBlob: protobuf_c_boolean, _ index: UInt32, field: String) throws(ContainerError) -> Tensor {
        guard hasBlob != 0 else { throw malformed(field, "the blob reference is missing") }
        guard Int(index) < tensors.count else {
            throw malformed(field, "blob \(index) does not exist (the blob table has \(blobs.count) entries)")
        }
        return tensors[Int(index)]
    }

    func blobEntry(_ hasBlob: protobuf_c_boolean, _ index: UInt32, field: String) throws(ContainerError) -> BlobEntry {
        guard hasBlob != 0 else { throw malformed(field, "the blob reference is missing") }
        guard Int(index) < blobs.count else {
            throw malformed(field, "blob \(index) does not exist (the blob table has \(blobs.count) entries)")
        }
        return blobs[Int(index)]
    }

    // MARK: Container

    func container(_ manifest: Lance__Manifest) throws(ContainerError) -> Container {
        guard let graphMessage = manifest.graph?.pointee else { throw malformed("graph", "the manifest has no graph") }
        var parameters: [Parameter] = []
        for (index, parameter) in try elements(graphMessage.n_parameters, graphMessage.parameters, field: "graph.parameters").enumerated() {
            parameters.append(try self.parameter(parameter, field: "graph.parameters[\(index)]"))
        }
        let skeleton = try graphSkeleton(graphMessage)
        let graph = Graph(name: skeleton.name, inputs: skeleton.inputs, outputs: skeleton.outputs, nodes: skeleton.nodes,
                          parameters: parameters, provenance: skeleton.provenance)
        var tasks: [TaskRecord] = []
        for (index, task) in try elements(manifest.n_tasks, manifest.tasks, field: "tasks").enumerated() {
            tasks.append(try self.task(task, field: "tasks[\(index)]"))
        }
        return Container(graph: graph, sourceSHA256: string(manifest.source_sha256),
                         preprocessing: try manifest.preprocessing.map { p throws(ContainerError) in try preprocessing(p.pointee) },
                         calibration: try manifest.calibration.map { c throws(ContainerError) in try calibration(c.pointee) },
                         tasks: tasks,
                         optimizerState: try manifest.optimizer_state.map { o throws(ContainerError) in try optimizerState(o.pointee) },
                         metrics: try metrics(manifest))
    }

    struct GraphSkeleton {
        var name: String
        var inputs: [ValueInfo]
        var outputs: [ValueInfo]
        var nodes: [Node]
        var provenance: Provenance
    }

    /// Everything of the graph except its parameters.
    func graphSkeleton(_ graph: Lance__Graph) throws(ContainerError) -> GraphSkeleton {
        var inputs: [ValueInfo] = []
        for (index, input) in try elements(graph.n_inputs, graph.inputs, field: "graph.inputs").enumerated() {
            inputs.append(try valueInfo(input, field: "graph.inputs[\(index)]"))
        }
        var outputs: [ValueInfo] = []
        for (index, output) in try elements(graph.n_outputs, graph.outputs, field: "graph.outputs").enumerated() {
            outputs.append(try valueInfo(output, field: "graph.outputs[\(index)]"))
        }
        var nodes: [Node] = []
        for (index, node) in try elements(graph.n_nodes, graph.nodes, field: "graph.nodes").enumerated() {
            nodes.append(try self.node(node, field: "graph.nodes[\(index)]"))
        }
        var provenance = Provenance(sourceFormat: "", producer: "", formatVersion: "")
        if let message = graph.provenance?.pointee {
            provenance = Provenance(sourceFormat: string(message.source_format), producer: string(message.producer),
                                    formatVersion: string(message.format_version))
            for detail in try elements(message.n_details, message.details, field: "graph.provenance.details") {
                provenance.details.append((key: string(detail.key), value: string(detail.value)))
            }
        }
        return GraphSkeleton(name: string(graph.name), inputs: inputs, outputs: outputs, nodes: nodes, provenance: provenance)
    }

    func metrics(_ manifest: Lance__Manifest) throws(ContainerError) -> [Metric] {
        try elements(manifest.n_metrics, manifest.metrics, field: "metrics").map {
            Metric(name: string($0.name), scope: string($0.scope), value: $0.has_value != 0 ? $0.value : .nan)
        }
    }

    private func valueInfo(_ info: Lance__ValueInfo, field: String) throws(ContainerError) -> ValueInfo {
        var dimensions: [ShapeDimension]?
        if let shape = info.shape?.pointee {
            dimensions = []
            for (axis, dimension) in try elements(shape.n_dimensions, shape.dimensions, field: "\(field).shape").enumerated() {
                switch dimension.extent_case {
                case LANCE__DIMENSION__EXTENT_FIXED: dimensions?.append(.fixed(Int(truncatingIfNeeded: dimension.fixed)))
                case LANCE__DIMENSION__EXTENT_SYMBOLIC: dimensions?.append(.symbolic(string(dimension.symbolic)))
                default: throw malformed("\(field).shape[\(axis)]", "the dimension is neither fixed nor symbolic")
                }
            }
        }
        return ValueInfo(name: string(info.name), dimensions: dimensions)
    }

    func layoutChange(_ message: UnsafeMutablePointer<Lance__LayoutChange>?) -> LayoutChange? {
        guard let change = message?.pointee else { return nil }
        return LayoutChange(sourceShape: integers(change.n_source_shape, change.source_shape),
                            permutation: integers(change.n_permutation, change.permutation))
    }

    private func parameter(_ parameter: Lance__Parameter, field: String) throws(ContainerError) -> Parameter {
        Parameter(name: string(parameter.name), tensor: try tensor(parameter.has_blob, parameter.blob, field: "\(field).blob"),
                  trainable: parameter.trainable != 0, layoutChange: layoutChange(parameter.layout_change),
                  synthesized: parameter.synthesized != 0)
    }

    // MARK: Operators

    private func window(_ pointer: UnsafeMutablePointer<Lance__Window>?, field: String) throws(ContainerError) -> WindowGeometry {
        guard let window = pointer?.pointee else { throw malformed(field, "the window is missing") }
        let kernel = integers(window.n_kernel_size, window.kernel_size)
        let strides = integers(window.n_strides, window.strides)
        let dilations = integers(window.n_dilations, window.dilations)
        for (name, values) in [("kernel_size", kernel), ("strides", strides), ("dilations", dilations)] {
            guard values.count == 2, values.allSatisfy({ $0 >= 1 }) else {
                throw malformed("\(field).\(name)", "\(values) is not two positive extents (height, width)")
            }
        }
        let padding: AutoPad
        switch window.padding {
        case LANCE__PADDING_KIND__PADDING_EXPLICIT:
            let pads = integers(window.n_pads, window.pads)
            guard pads.count == 4, pads.allSatisfy({ $0 >= 0 }) else {
                throw malformed("\(field).pads", "\(pads) is not four non-negative pads (top, left, bottom, right)")
            }
            padding = .explicit(top: pads[0], left: pads[1], bottom: pads[2], right: pads[3])
        case LANCE__PADDING_KIND__PADDING_SAME_UPPER: padding = .sameUpper
        case LANCE__PADDING_KIND__PADDING_SAME_LOWER: padding = .sameLower
        default: throw malformed("\(field).padding", "padding kind \(window.padding.rawValue) is unknown")
        }
        return WindowGeometry(kernelSize: kernel, strides: strides, dilations: dilations, padding: padding)
    }

    private func pooling(_ pointer: UnsafeMutablePointer<Lance__Pooling>?, field: String) throws(ContainerError) -> Pooling {
        guard let pooling = pointer?.pointee else { throw malformed(field, "the pooling parameters are missing") }
        return Pooling(window: try window(pooling.window, field: "\(field).window"), ceilMode: pooling.ceil_mode != 0)
    }

    private func activation(_ pointer: UnsafeMutablePointer<Lance__Activation>?, field: String) throws(ContainerError) -> Activation {
        guard let activation = pointer?.pointee else { throw malformed(field, "the activation is missing") }
        switch activation.kind {
        case LANCE__ACTIVATION_KIND__RELU: return .relu
        case LANCE__ACTIVATION_KIND__CLIP:
            return .clip(minimum: activation.has_minimum != 0 ? activation.minimum : -.infinity,
                         maximum: activation.has_maximum != 0 ? activation.maximum : .infinity)
        case LANCE__ACTIVATION_KIND__LEAKY_RELU: return .leakyRelu(alpha: activation.has_alpha != 0 ? activation.alpha : 0.01)
        case LANCE__ACTIVATION_KIND__SIGMOID: return .sigmoid
        case LANCE__ACTIVATION_KIND__HARD_SIGMOID:
            return .hardSigmoid(alpha: activation.has_alpha != 0 ? activation.alpha : 0.2,
                                beta: activation.has_beta != 0 ? activation.beta : 0.5)
        case LANCE__ACTIVATION_KIND__HARD_SWISH: return .hardSwish
        case LANCE__ACTIVATION_KIND__TANH: return .tanh
        case LANCE__ACTIVATION_KIND__THRESHOLDED_RELU:
            return .thresholdedReLU(threshold: activation.threshold, negativeSlope: activation.negative_slope,
                                    maximum: activation.has_maximum != 0 ? activation.maximum : .infinity)
        default: throw malformed("\(field).kind", "activation kind \(activation.kind.rawValue) is unknown to this build")
        }
    }

    func node(_ node: Lance__Node, field: String) throws(ContainerError) -> Node {
        let name = string(node.name)
        let field = "\(field) ('\(name)')"
        var inputs: [String] = []
        if node.n_inputs > 0 {
            guard let pointer = node.inputs else { throw malformed("\(field).inputs", "the list is missing") }
            inputs = (0..<node.n_inputs).map { string(pointer[$0]) }
        }
        func missing(_ what: String) -> ContainerError { malformed(field, "the \(what) parameters are missing") }
        let operation: Operator
        switch node.operation_case {
        case LANCE__NODE__OPERATION_CONVOLUTION:
            guard let convolution = node.convolution?.pointee else { throw missing("convolution") }
            let groups = convolution.has_groups != 0 ? Int(truncatingIfNeeded: convolution.groups) : 1
            guard groups >= 1 else { throw malformed("\(field).convolution.groups", "\(groups) is not a positive group count") }
            operation = .convolution(Convolution(window: try window(convolution.window, field: "\(field).convolution.window"),
                                                 groups: groups))
        case LANCE__NODE__OPERATION_BATCH_NORMALIZATION:
            guard let batchNormalization = node.batch_normalization?.pointee else { throw missing("batch normalization") }
            operation = .batchNormalization(epsilon: batchNormalization.has_epsilon != 0 ? batchNormalization.epsilon : 1e-5)
        case LANCE__NODE__OPERATION_ACTIVATION:
            operation = .activation(try activation(node.activation, field: "\(field).activation"))
        case LANCE__NODE__OPERATION_BINARY:
            guard let binary = node.binary?.pointee else { throw missing("binary") }
            switch binary.kind {
            case LANCE__BINARY_KIND__ADD: operation = .binary(.add)
            case LANCE__BINARY_KIND__SUBTRACT: operation = .binary(.subtract)
            case LANCE__BINARY_KIND__MULTIPLY: operation = .binary(.multiply)
            case LANCE__BINARY_KIND__DIVIDE: operation = .binary(.divide)
            default: throw malformed("\(field).binary.kind", "binary operator kind \(binary.kind.rawValue) is unknown to this build")
            }
        case LANCE__NODE__OPERATION_CONCAT:
            guard let concat = node.concat?.pointee else { throw missing("concat") }
            operation = .concat(axis: Int(truncatingIfNeeded: concat.axis))
        case LANCE__NODE__OPERATION_MAX_POOL:
            operation = .maxPool(try pooling(node.max_pool, field: "\(field).max_pool"))
        case LANCE__NODE__OPERATION_AVERAGE_POOL:
            guard let average = node.average_pool?.pointee else { throw missing("average pool") }
            operation = .averagePool(try pooling(average.pooling, field: "\(field).average_pool.pooling"),
                                     countIncludePad: average.count_include_pad != 0)
        case LANCE__NODE__OPERATION_GLOBAL_AVERAGE_POOL: operation = .globalAveragePool
        case LANCE__NODE__OPERATION_GLOBAL_MAX_POOL: operation = .globalMaxPool
        case LANCE__NODE__OPERATION_FLATTEN:
            guard let flatten = node.flatten?.pointee else { throw missing("flatten") }
            operation = .flatten(axis: flatten.has_axis != 0 ? Int(truncatingIfNeeded: flatten.axis) : 1)
        case LANCE__NODE__OPERATION_RESHAPE:
            guard let reshape = node.reshape?.pointee else { throw missing("reshape") }
            operation = .reshape(shape: integers(reshape.n_shape, reshape.shape), allowZero: reshape.allow_zero != 0)
        case LANCE__NODE__OPERATION_TRANSPOSE:
            guard let transpose = node.transpose?.pointee else { throw missing("transpose") }
            operation = .transpose(permutation: intList(transpose.permutation))
        case LANCE__NODE__OPERATION_GEMM:
            guard let gemm = node.gemm?.pointee else { throw missing("gemm") }
            operation = .gemm(Gemm(alpha: gemm.has_alpha != 0 ? gemm.alpha : 1, beta: gemm.has_beta != 0 ? gemm.beta : 1,
                                   transposeA: gemm.transpose_a != 0, transposeB: gemm.transpose_b != 0))
        case LANCE__NODE__OPERATION_MAT_MUL: operation = .matMul
        case LANCE__NODE__OPERATION_SOFTMAX:
            guard let softmax = node.softmax?.pointee else { throw missing("softmax") }
            operation = .softmax(axis: softmax.has_axis != 0 ? Int(truncatingIfNeeded: softmax.axis) : -1,
                                 coercedTo2D: softmax.coerced_to_2d != 0)
        case LANCE__NODE__OPERATION_IDENTITY: operation = .identity
        case LANCE__NODE__OPERATION_PAD:
            guard let pad = node.pad?.pointee else { throw missing("pad") }
            let mode: PadMode
            switch pad.mode {
            case LANCE__PAD_MODE__PAD_CONSTANT: mode = .constant
            case LANCE__PAD_MODE__PAD_REFLECT: mode = .reflect
            case LANCE__PAD_MODE__PAD_EDGE: mode = .edge
            default: throw malformed("\(field).pad.mode", "pad mode \(pad.mode.rawValue) is unknown to this build")
            }
            operation = .pad(pads: integers(pad.n_pads, pad.pads), mode: mode, value: pad.value)
        case LANCE__NODE__OPERATION_SQUEEZE:
            guard let squeeze = node.squeeze?.pointee else { throw missing("squeeze") }
            operation = .squeeze(axes: intList(squeeze.axes))
        case LANCE__NODE__OPERATION_UNSQUEEZE:
            guard let unsqueeze = node.unsqueeze?.pointee else { throw missing("unsqueeze") }
            operation = .unsqueeze(axes: integers(unsqueeze.n_axes, unsqueeze.axes))
        case LANCE__NODE__OPERATION_REDUCE_MEAN:
            guard let reduceMean = node.reduce_mean?.pointee else { throw missing("reduce mean") }
            operation = .reduceMean(axes: intList(reduceMean.axes), keepDimensions: reduceMean.keep_dimensions != 0)
        default:
            throw malformed("\(field).operation", "the node has no operator this build knows (operation field \(node.operation_case.rawValue)); it may need a newer LANCE")
        }
        return Node(name: name, operation: operation, inputs: inputs, output: string(node.output))
    }

    // MARK: Preprocessing, calibration, tasks, optimizer

    func preprocessing(_ message: Lance__Preprocessing) throws(ContainerError) -> Preprocessing {
        let resize: Preprocessing.Resize
        switch message.resize {
        case LANCE__RESIZE_RULE__RESIZE_NONE: resize = .none
        case LANCE__RESIZE_RULE__RESIZE_DIRECT: resize = .direct
        case LANCE__RESIZE_RULE__RESIZE_SHORT_SIDE_THEN_CENTER_CROP: resize = .shortSideThenCenterCrop
        default: throw malformed("preprocessing.resize", "resize rule \(message.resize.rawValue) is unknown to this build")
        }
        return Preprocessing(size: intList(message.size), resize: resize,
                             resizeShortSide: message.has_resize_short_side != 0 ? Int(truncatingIfNeeded: message.resize_short_side) : nil,
                             scale: message.has_scale != 0 ? message.scale : 1,
                             mean: floats(message.n_mean, message.mean),
                             standardDeviation: floats(message.n_standard_deviation, message.standard_deviation),
                             channels: message.has_channels != 0 ? Int(truncatingIfNeeded: message.channels) : 3)
    }

    private func calibration(_ message: Lance__Calibration) throws(ContainerError) -> CalibrationRecord {
        var layers: [LayerBases] = []
        for (layerIndex, layer) in try elements(message.n_layers, message.layers, field: "calibration.layers").enumerated() {
            let field = "calibration.layers[\(layerIndex)]"
            var modes: [ModeBasis] = []
            for (modeIndex, mode) in try elements(layer.n_modes, layer.modes, field: "\(field).modes").enumerated() {
                modes.append(ModeBasis(mode: string(mode.mode), dimension: Int(truncatingIfNeeded: mode.dimension),
                                       rank: Int(truncatingIfNeeded: mode.rank),
                                       factor: try tensor(mode.has_factor_blob, mode.factor_blob, field: "\(field).modes[\(modeIndex)].factor_blob"),
                                       spectrum: floats(mode.n_spectrum, mode.spectrum)))
            }
            layers.append(LayerBases(layer: string(layer.layer), inputShape: integers(layer.n_input_shape, layer.input_shape), modes: modes))
        }
        return CalibrationRecord(energy: message.energy, batchSize: Int(truncatingIfNeeded: message.batch_size),
                                 batches: Int(truncatingIfNeeded: message.batches), accumulation: string(message.accumulation),
                                 layerRule: string(message.layer_rule), dataDescription: string(message.data_description),
                                 dataFingerprint: string(message.data_fingerprint), layers: layers,
                                 protection: message.has_protect_energy != 0
                                     ? ProtectionSettings(energy: message.protect_energy,
                                                          energyStep: message.has_protect_energy_step != 0 ? message.protect_energy_step : 0)
                                     : nil)
    }

    func namedValues(_ count: Int, _ pointer: UnsafeMutablePointer<UnsafeMutablePointer<Lance__NamedValue>?>?, field: String) throws(ContainerError) -> [String: Double] {
        var values: [String: Double] = [:]
        for entry in try elements(count, pointer, field: field) {
            let name = string(entry.name)
            guard values.updateValue(entry.has_value != 0 ? entry.value : .nan, forKey: name) == nil else {
                throw malformed(field, "'\(name)' appears twice")
            }
        }
        return values
    }

    private func namedTensors(_ count: Int, _ pointer: UnsafeMutablePointer<UnsafeMutablePointer<Lance__NamedBlob>?>?, field: String) throws(ContainerError) -> [String: Tensor] {
        var tensors: [String: Tensor] = [:]
        for (index, entry) in try elements(count, pointer, field: field).enumerated() {
            let name = string(entry.name)
            guard tensors.updateValue(try tensor(entry.has_blob, entry.blob, field: "\(field)[\(index)].blob"), forKey: name) == nil else {
                throw malformed(field, "'\(name)' appears twice")
            }
        }
        return tensors
    }

    private func task(_ message: Lance__Task, field: String) throws(ContainerError) -> TaskRecord {
        var head: [Parameter] = []
        for (index, parameter) in try elements(message.n_head, message.head, field: "\(field).head").enumerated() {
            head.append(try self.parameter(parameter, field: "\(field).head[\(index)]"))
        }
        var classNames: [String] = []
        if message.n_class_names > 0 {
            guard let pointer = message.class_names else { throw malformed("\(field).class_names", "the list is missing") }
            classNames = (0..<message.n_class_names).map { string(pointer[$0]) }
        }
        return TaskRecord(name: string(message.name), classes: Int(truncatingIfNeeded: message.classes), classNames: classNames,
                          head: head,
                          protectedBases: try namedTensors(message.n_protected_bases, message.protected_bases, field: "\(field).protected_bases"),
                          metrics: try namedValues(message.n_metrics, message.metrics, field: "\(field).metrics"))
    }

    private func optimizerState(_ message: Lance__OptimizerState) throws(ContainerError) -> OptimizerState {
        OptimizerState(kind: string(message.kind), step: Int(truncatingIfNeeded: message.step),
                       epoch: Int(truncatingIfNeeded: message.epoch),
                       hyperparameters: try namedValues(message.n_hyperparameters, message.hyperparameters, field: "optimizer_state.hyperparameters"),
                       slots: try namedTensors(message.n_slots, message.slots, field: "optimizer_state.slots"))
    }
}
