import CLanceProto
import LanceCore
import LanceModel

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Owns the C memory of a manifest under construction; everything is freed with the arena.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for allocation in allocations { free(allocation) }
    }

    private func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        guard let pointer = malloc(max(bytes, 1)) else { fatalError("out of memory allocating \(bytes) bytes") }
        allocations.append(pointer)
        return pointer
    }

    /// A new message, initialised by its protobuf-c `__init` function.
    func message<Message>(_ initialize: (UnsafeMutablePointer<Message>?) -> Void) -> UnsafeMutablePointer<Message> {
        let pointer = allocate(bytes: MemoryLayout<Message>.stride).bindMemory(to: Message.self, capacity: 1)
        initialize(pointer)
        return pointer
    }

    /// A NUL-terminated copy of `string`.
    func string(_ string: String) -> UnsafeMutablePointer<CChar> {
        let utf8 = Array(string.utf8)
        let pointer = allocate(bytes: utf8.count + 1).bindMemory(to: CChar.self, capacity: utf8.count + 1)
        for (index, byte) in utf8.enumerated() { pointer[index] = CChar(bitPattern: byte) }
        pointer[utf8.count] = 0
        return pointer
    }

    /// A C array holding `values` (`nil` when empty).
    func array<Element>(_ values: [Element]) -> UnsafeMutablePointer<Element>? {
        guard !values.isEmpty else { return nil }
        let pointer = allocate(bytes: MemoryLayout<Element>.stride * values.count)
            .bindMemory(to: Element.self, capacity: values.count)
        pointer.initialize(from: values, count: values.count)
        return pointer
    }
}

/// A tensor payload to be stored, with its blob table entry.
struct PlannedBlob {
    /// The stored bytes: float32 elements (shared with the tensor) or narrowed float16 bits.
    enum Payload {
        case float32([Float])
        case float16([UInt16])
    }

    var name: String
    var shape: [Int]
    var payload: Payload
    var checksum: UInt32
    var offset = 0

    var byteLength: Int {
        switch payload {
        case .float32(let values): values.count * 4
        case .float16(let values): values.count * 2
        }
    }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch payload {
        case .float32(let values): try values.withUnsafeBytes(body)
        case .float16(let values): try values.withUnsafeBytes(body)
        }
    }
}

/// Translates a `Container` into a protobuf-c `Lance__Manifest` and the list of blobs it references.
struct ManifestEncoder {
    let arena = CArena()
    let path: String
    let halfPrecision: Bool
    private(set) var blobs: [PlannedBlob] = []
    private var blobNames: Set<String> = []

    init(path: String, halfPrecision: Bool) {
        self.path = path
        self.halfPrecision = halfPrecision
    }

    // MARK: Blobs

    /// Registers a tensor payload; `narrow` stores it as float16 when the writer asked for it.
    mutating func blob(_ name: String, _ tensor: Tensor, narrow: Bool) throws(ContainerError) -> UInt32 {
        guard blobNames.insert(name).inserted else {
            throw .invalidContainer(path: path, reason: "two tensors would both be stored as blob '\(name)'; names must be unique")
        }
        let planned: PlannedBlob
        if narrow && halfPrecision {
            let bits = tensor.withUnsafeBufferPointer { HalfPrecision.halfBits(from: $0) }
            planned = PlannedBlob(name: name, shape: tensor.shape, payload: .float16(bits),
                                  checksum: bits.withUnsafeBytes { CRC32C.checksum($0) })
        } else {
            planned = PlannedBlob(name: name, shape: tensor.shape, payload: .float32(tensor.scalars),
                                  checksum: tensor.withUnsafeBufferPointer { CRC32C.checksum(UnsafeRawBufferPointer($0)) })
        }
        blobs.append(planned)
        return UInt32(blobs.count - 1)
    }

    /// Places every blob at the next multiple of 64 after the previous one, starting at
    /// `dataStart`; returns the file length (the end of the last blob, or of the manifest).
    mutating func assignOffsets(dataStart: Int, manifestEnd: Int) -> Int {
        var end = manifestEnd
        var next = dataStart
        for index in blobs.indices {
            blobs[index].offset = next
            end = next + blobs[index].byteLength
            next = ContainerLayout.aligned(end)
        }
        return end
    }

    /// Fills the blob table with the blobs' offsets (call after the layout is known).
    func blobTable(into manifest: UnsafeMutablePointer<Lance__Manifest>) {
        let entries = blobs.map { blob -> UnsafeMutablePointer<Lance__Blob>? in
            let entry: UnsafeMutablePointer<Lance__Blob> = arena.message(lance__blob__init)
            entry.pointee.name = arena.string(blob.name)
            entry.pointee.has_offset = 1
            entry.pointee.offset = UInt64(blob.offset)
            entry.pointee.has_byte_length = 1
            entry.pointee.byte_length = UInt64(blob.byteLength)
            entry.pointee.has_element_type = 1
            if case .float16 = blob.payload {
                entry.pointee.element_type = LANCE__ELEMENT_TYPE__FLOAT16
            } else {
                entry.pointee.element_type = LANCE__ELEMENT_TYPE__FLOAT32
            }
            entry.pointee.n_shape = blob.shape.count
            entry.pointee.shape = arena.array(blob.shape.map(Int64.init))
            entry.pointee.has_crc32c = 1
            entry.pointee.crc32c = blob.checksum
            return entry
        }
        manifest.pointee.n_blobs = entries.count
        manifest.pointee.blobs = arena.array(entries)
    }

    // MARK: Strings and lists

    private func string(_ value: String, field: @autoclosure () -> String) throws(ContainerError) -> UnsafeMutablePointer<CChar> {
        if value.utf8.contains(0) {
            throw .invalidContainer(path: path, reason: "\(field()) contains a NUL character, which the manifest cannot store")
        }
        return arena.string(value)
    }

    private func strings(_ values: [String], field: @autoclosure () -> String) throws(ContainerError) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
        var pointers: [UnsafeMutablePointer<CChar>?] = []
        for value in values { pointers.append(try string(value, field: field())) }
        return arena.array(pointers)
    }

    private func integers(_ values: [Int]) -> UnsafeMutablePointer<Int64>? {
        arena.array(values.map(Int64.init))
    }

    private func intList(_ values: [Int]?) -> UnsafeMutablePointer<Lance__IntList>? {
        guard let values else { return nil }
        let list: UnsafeMutablePointer<Lance__IntList> = arena.message(lance__int_list__init)
        list.pointee.n_values = values.count
        list.pointee.values = integers(values)
        return list
    }

    private func namedValues(_ values: [String: Double], field: String) throws(ContainerError) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Lance__NamedValue>?>?) {
        var entries: [UnsafeMutablePointer<Lance__NamedValue>?] = []
        for (name, value) in values.sorted(by: { $0.key < $1.key }) {
            let entry: UnsafeMutablePointer<Lance__NamedValue> = arena.message(lance__named_value__init)
            entry.pointee.name = try string(name, field: field)
            entry.pointee.has_value = 1
            entry.pointee.value = value
            entries.append(entry)
        }
        return (entries.count, arena.array(entries))
    }

    private mutating func namedBlobs(_ tensors: [String: Tensor], prefix: String, narrow: Bool) throws(ContainerError) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Lance__NamedBlob>?>?) {
        var entries: [UnsafeMutablePointer<Lance__NamedBlob>?] = []
        for (name, tensor) in tensors.sorted(by: { $0.key < $1.key }) {
            let entry: UnsafeMutablePointer<Lance__NamedBlob> = arena.message(lance__named_blob__init)
            entry.pointee.name = try string(name, field: "\(prefix)\(name)")
            entry.pointee.has_blob = 1
            entry.pointee.blob = try blob(prefix + name, tensor, narrow: narrow)
            entries.append(entry)
        }
        return (entries.count, arena.array(entries))
    }

    // MARK: Container

    /// The manifest of `container` without its blob table (see `blobTable(into:)`).
    mutating func manifest(_ container: Container) throws(ContainerError) -> UnsafeMutablePointer<Lance__Manifest> {
        let manifest: UnsafeMutablePointer<Lance__Manifest> = arena.message(lance__manifest__init)
        manifest.pointee.graph = try graph(container.graph)
        manifest.pointee.source_sha256 = try string(container.sourceSHA256, field: "source SHA-256")
        if let preprocessing = container.preprocessing { manifest.pointee.preprocessing = self.preprocessing(preprocessing) }
        if let calibration = container.calibration { manifest.pointee.calibration = try self.calibration(calibration) }
        var tasks: [UnsafeMutablePointer<Lance__Task>?] = []
        for task in container.tasks { tasks.append(try self.task(task)) }
        manifest.pointee.n_tasks = tasks.count
        manifest.pointee.tasks = arena.array(tasks)
        if let state = container.optimizerState { manifest.pointee.optimizer_state = try optimizerState(state) }
        var metrics: [UnsafeMutablePointer<Lance__Metric>?] = []
        for metric in container.metrics {
            let entry: UnsafeMutablePointer<Lance__Metric> = arena.message(lance__metric__init)
            entry.pointee.name = try string(metric.name, field: "metric name")
            entry.pointee.scope = try string(metric.scope, field: "scope of metric '\(metric.name)'")
            entry.pointee.has_value = 1
            entry.pointee.value = metric.value
            metrics.append(entry)
        }
        manifest.pointee.n_metrics = metrics.count
        manifest.pointee.metrics = arena.array(metrics)
        manifest.pointee.writer = arena.string("LanceFormat \(ContainerLayout.majorVersion).\(ContainerLayout.minorVersion)")
        return manifest
    }

    private mutating func graph(_ graph: Graph) throws(ContainerError) -> UnsafeMutablePointer<Lance__Graph> {
        let message: UnsafeMutablePointer<Lance__Graph> = arena.message(lance__graph__init)
        message.pointee.name = try string(graph.name, field: "graph name")
        var inputs: [UnsafeMutablePointer<Lance__ValueInfo>?] = []
        for input in graph.inputs { inputs.append(try valueInfo(input)) }
        message.pointee.n_inputs = inputs.count
        message.pointee.inputs = arena.array(inputs)
        var outputs: [UnsafeMutablePointer<Lance__ValueInfo>?] = []
        for output in graph.outputs { outputs.append(try valueInfo(output)) }
        message.pointee.n_outputs = outputs.count
        message.pointee.outputs = arena.array(outputs)
        var nodes: [UnsafeMutablePointer<Lance__Node>?] = []
        for node in graph.nodes { nodes.append(try self.node(node)) }
        message.pointee.n_nodes = nodes.count
        message.pointee.nodes = arena.array(nodes)
        var parameters: [UnsafeMutablePointer<Lance__Parameter>?] = []
        for parameter in graph.parameters { parameters.append(try self.parameter(parameter, blobPrefix: "parameter/")) }
        message.pointee.n_parameters = parameters.count
        message.pointee.parameters = arena.array(parameters)
        message.pointee.provenance = try provenance(graph.provenance)
        return message
    }

    private func valueInfo(_ info: ValueInfo) throws(ContainerError) -> UnsafeMutablePointer<Lance__ValueInfo> {
        let message: UnsafeMutablePointer<Lance__ValueInfo> = arena.message(lance__value_info__init)
        message.pointee.name = try string(info.name, field: "graph value name")
        if let dimensions = info.dimensions {
            let shape: UnsafeMutablePointer<Lance__Shape> = arena.message(lance__shape__init)
            var entries: [UnsafeMutablePointer<Lance__Dimension>?] = []
            for dimension in dimensions {
                let entry: UnsafeMutablePointer<Lance__Dimension> = arena.message(lance__dimension__init)
                switch dimension {
                case .fixed(let extent):
                    entry.pointee.extent_case = LANCE__DIMENSION__EXTENT_FIXED
                    entry.pointee.fixed = Int64(extent)
                case .symbolic(let name):
                    entry.pointee.extent_case = LANCE__DIMENSION__EXTENT_SYMBOLIC
                    entry.pointee.symbolic = try string(name, field: "a symbolic extent of '\(info.name)'")
                }
                entries.append(entry)
            }
            shape.pointee.n_dimensions = entries.count
            shape.pointee.dimensions = arena.array(entries)
            message.pointee.shape = shape
        }
        return message
    }

    /// A parameter entry; non-trainable (frozen) weights may be narrowed to float16.
    private mutating func parameter(_ parameter: Parameter, blobPrefix: String) throws(ContainerError) -> UnsafeMutablePointer<Lance__Parameter> {
        let message: UnsafeMutablePointer<Lance__Parameter> = arena.message(lance__parameter__init)
        message.pointee.name = try string(parameter.name, field: "parameter name")
        message.pointee.has_blob = 1
        message.pointee.blob = try blob(blobPrefix + parameter.name, parameter.tensor, narrow: !parameter.trainable)
        message.pointee.has_trainable = 1
        message.pointee.trainable = parameter.trainable ? 1 : 0
        message.pointee.has_synthesized = 1
        message.pointee.synthesized = parameter.synthesized ? 1 : 0
        if let change = parameter.layoutChange {
            let layout: UnsafeMutablePointer<Lance__LayoutChange> = arena.message(lance__layout_change__init)
            layout.pointee.n_source_shape = change.sourceShape.count
            layout.pointee.source_shape = integers(change.sourceShape)
            layout.pointee.n_permutation = change.permutation.count
            layout.pointee.permutation = integers(change.permutation)
            message.pointee.layout_change = layout
        }
        return message
    }

    private func provenance(_ provenance: Provenance) throws(ContainerError) -> UnsafeMutablePointer<Lance__Provenance> {
        let message: UnsafeMutablePointer<Lance__Provenance> = arena.message(lance__provenance__init)
        message.pointee.source_format = try string(provenance.sourceFormat, field: "provenance source format")
        message.pointee.producer = try string(provenance.producer, field: "provenance producer")
        message.pointee.format_version = try string(provenance.formatVersion, field: "provenance format version")
        var details: [UnsafeMutablePointer<Lance__KeyValue>?] = []
        for (key, value) in provenance.details {
            let entry: UnsafeMutablePointer<Lance__KeyValue> = arena.message(lance__key_value__init)
            entry.pointee.key = try string(key, field: "provenance detail key")
            entry.pointee.value = try string(value, field: "provenance detail '\(key)'")
            details.append(entry)
        }
        message.pointee.n_details = details.count
        message.pointee.details = arena.array(details)
        return message
    }

    // MARK: Operators

    private func window(_ geometry: WindowGeometry) -> UnsafeMutablePointer<Lance__Window> {
        let message: UnsafeMutablePointer<Lance__Window> = arena.message(lance__window__init)
        message.pointee.n_kernel_size = geometry.kernelSize.count
        message.pointee.kernel_size = integers(geometry.kernelSize)
        message.pointee.n_strides = geometry.strides.count
        message.pointee.strides = integers(geometry.strides)
        message.pointee.n_dilations = geometry.dilations.count
        message.pointee.dilations = integers(geometry.dilations)
        message.pointee.has_padding = 1
        switch geometry.padding {
        case .explicit(let top, let left, let bottom, let right):
            message.pointee.padding = LANCE__PADDING_KIND__PADDING_EXPLICIT
            message.pointee.n_pads = 4
            message.pointee.pads = integers([top, left, bottom, right])
        case .sameUpper:
            message.pointee.padding = LANCE__PADDING_KIND__PADDING_SAME_UPPER
        case .sameLower:
            message.pointee.padding = LANCE__PADDING_KIND__PADDING_SAME_LOWER
        }
        return message
    }

    private func pooling(_ pooling: Pooling) -> UnsafeMutablePointer<Lance__Pooling> {
        let message: UnsafeMutablePointer<Lance__Pooling> = arena.message(lance__pooling__init)
        message.pointee.window = window(pooling.window)
        message.pointee.has_ceil_mode = 1
        message.pointee.ceil_mode = pooling.ceilMode ? 1 : 0
        return message
    }

    private func empty() -> UnsafeMutablePointer<Lance__Empty> {
        arena.message(lance__empty__init)
    }

    private func activation(_ activation: Activation) -> UnsafeMutablePointer<Lance__Activation> {
        let message: UnsafeMutablePointer<Lance__Activation> = arena.message(lance__activation__init)
        message.pointee.has_kind = 1
        switch activation {
        case .relu:
            message.pointee.kind = LANCE__ACTIVATION_KIND__RELU
        case .clip(let minimum, let maximum):
            message.pointee.kind = LANCE__ACTIVATION_KIND__CLIP
            message.pointee.has_minimum = 1
            message.pointee.minimum = minimum
            message.pointee.has_maximum = 1
            message.pointee.maximum = maximum
        case .leakyRelu(let alpha):
            message.pointee.kind = LANCE__ACTIVATION_KIND__LEAKY_RELU
            message.pointee.has_alpha = 1
            message.pointee.alpha = alpha
        case .sigmoid:
            message.pointee.kind = LANCE__ACTIVATION_KIND__SIGMOID
        case .hardSigmoid(let alpha, let beta):
            message.pointee.kind = LANCE__ACTIVATION_KIND__HARD_SIGMOID
            message.pointee.has_alpha = 1
            message.pointee.alpha = alpha
            message.pointee.has_beta = 1
            message.pointee.beta = beta
        case .hardSwish:
            message.pointee.kind = LANCE__ACTIVATION_KIND__HARD_SWISH
        case .tanh:
            message.pointee.kind = LANCE__ACTIVATION_KIND__TANH
        case .thresholdedReLU(let threshold, let negativeSlope, let maximum):
            message.pointee.kind = LANCE__ACTIVATION_KIND__THRESHOLDED_RELU
            message.pointee.has_threshold = 1
            message.pointee.threshold = threshold
            message.pointee.has_negative_slope = 1
            message.pointee.negative_slope = negativeSlope
            message.pointee.has_maximum = 1
            message.pointee.maximum = maximum
        }
        return message
    }

    private func node(_ node: Node) throws(ContainerError) -> UnsafeMutablePointer<Lance__Node> {
        let message: UnsafeMutablePointer<Lance__Node> = arena.message(lance__node__init)
        message.pointee.name = try string(node.name, field: "node name")
        message.pointee.n_inputs = node.inputs.count
        message.pointee.inputs = try strings(node.inputs, field: "an input name of node '\(node.name)'")
        message.pointee.output = try string(node.output, field: "the output name of node '\(node.name)'")
        switch node.operation {
        case .convolution(let convolution):
            let operation: UnsafeMutablePointer<Lance__Convolution> = arena.message(lance__convolution__init)
            operation.pointee.window = window(convolution.window)
            operation.pointee.has_groups = 1
            operation.pointee.groups = Int64(convolution.groups)
            message.pointee.operation_case = LANCE__NODE__OPERATION_CONVOLUTION
            message.pointee.convolution = operation
        case .batchNormalization(let epsilon):
            let operation: UnsafeMutablePointer<Lance__BatchNormalization> = arena.message(lance__batch_normalization__init)
            operation.pointee.has_epsilon = 1
            operation.pointee.epsilon = epsilon
            message.pointee.operation_case = LANCE__NODE__OPERATION_BATCH_NORMALIZATION
            message.pointee.batch_normalization = operation
        case .activation(let function):
            message.pointee.operation_case = LANCE__NODE__OPERATION_ACTIVATION
            message.pointee.activation = activation(function)
        case .binary(let op):
            let operation: UnsafeMutablePointer<Lance__Binary> = arena.message(lance__binary__init)
            operation.pointee.has_kind = 1
            switch op {
            case .add: operation.pointee.kind = LANCE__BINARY_KIND__ADD
            case .subtract: operation.pointee.kind = LANCE__BINARY_KIND__SUBTRACT
            case .multiply: operation.pointee.kind = LANCE__BINARY_KIND__MULTIPLY
            case .divide: operation.pointee.kind = LANCE__BINARY_KIND__DIVIDE
            }
            message.pointee.operation_case = LANCE__NODE__OPERATION_BINARY
            message.pointee.binary = operation
        case .concat(let axis):
            let operation: UnsafeMutablePointer<Lance__Concat> = arena.message(lance__concat__init)
            operation.pointee.has_axis = 1
            operation.pointee.axis = Int64(axis)
            message.pointee.operation_case = LANCE__NODE__OPERATION_CONCAT
            message.pointee.concat = operation
        case .maxPool(let parameters):
            message.pointee.operation_case = LANCE__NODE__OPERATION_MAX_POOL
            message.pointee.max_pool = pooling(parameters)
        case .averagePool(let parameters, let countIncludePad):
            let operation: UnsafeMutablePointer<Lance__AveragePool> = arena.message(lance__average_pool__init)
            operation.pointee.pooling = pooling(parameters)
            operation.pointee.has_count_include_pad = 1
            operation.pointee.count_include_pad = countIncludePad ? 1 : 0
            message.pointee.operation_case = LANCE__NODE__OPERATION_AVERAGE_POOL
            message.pointee.average_pool = operation
        case .globalAveragePool:
            message.pointee.operation_case = LANCE__NODE__OPERATION_GLOBAL_AVERAGE_POOL
            message.pointee.global_average_pool = empty()
        case .globalMaxPool:
            message.pointee.operation_case = LANCE__NODE__OPERATION_GLOBAL_MAX_POOL
            message.pointee.global_max_pool = empty()
        case .flatten(let axis):
            let operation: UnsafeMutablePointer<Lance__Flatten> = arena.message(lance__flatten__init)
            operation.pointee.has_axis = 1
            operation.pointee.axis = Int64(axis)
            message.pointee.operation_case = LANCE__NODE__OPERATION_FLATTEN
            message.pointee.flatten = operation
        case .reshape(let shape, let allowZero):
            let operation: UnsafeMutablePointer<Lance__Reshape> = arena.message(lance__reshape__init)
            operation.pointee.n_shape = shape.count
            operation.pointee.shape = integers(shape)
            operation.pointee.has_allow_zero = 1
            operation.pointee.allow_zero = allowZero ? 1 : 0
            message.pointee.operation_case = LANCE__NODE__OPERATION_RESHAPE
            message.pointee.reshape = operation
        case .transpose(let permutation):
            let operation: UnsafeMutablePointer<Lance__Transpose> = arena.message(lance__transpose__init)
            operation.pointee.permutation = intList(permutation)
            message.pointee.operation_case = LANCE__NODE__OPERATION_TRANSPOSE
            message.pointee.transpose = operation
        case .gemm(let gemm):
            let operation: UnsafeMutablePointer<Lance__Gemm> = arena.message(lance__gemm__init)
            operation.pointee.has_alpha = 1
            operation.pointee.alpha = gemm.alpha
            operation.pointee.has_beta = 1
            operation.pointee.beta = gemm.beta
            operation.pointee.has_transpose_a = 1
            operation.pointee.transpose_a = gemm.transposeA ? 1 : 0
            operation.pointee.has_transpose_b = 1
            operation.pointee.transpose_b = gemm.transposeB ? 1 : 0
            message.pointee.operation_case = LANCE__NODE__OPERATION_GEMM
            message.pointee.gemm = operation
        case .matMul:
            message.pointee.operation_case = LANCE__NODE__OPERATION_MAT_MUL
            message.pointee.mat_mul = empty()
        case .softmax(let axis, let coercedTo2D):
            let operation: UnsafeMutablePointer<Lance__Softmax> = arena.message(lance__softmax__init)
            operation.pointee.has_axis = 1
            operation.pointee.axis = Int64(axis)
            operation.pointee.has_coerced_to_2d = 1
            operation.pointee.coerced_to_2d = coercedTo2D ? 1 : 0
            message.pointee.operation_case = LANCE__NODE__OPERATION_SOFTMAX
            message.pointee.softmax = operation
        case .identity:
            message.pointee.operation_case = LANCE__NODE__OPERATION_IDENTITY
            message.pointee.identity = empty()
        case .pad(let pads, let mode, let value):
            let operation: UnsafeMutablePointer<Lance__Pad> = arena.message(lance__pad__init)
            operation.pointee.n_pads = pads.count
            operation.pointee.pads = integers(pads)
            operation.pointee.has_mode = 1
            switch mode {
            case .constant: operation.pointee.mode = LANCE__PAD_MODE__PAD_CONSTANT
            case .reflect: operation.pointee.mode = LANCE__PAD_MODE__PAD_REFLECT
            case .edge: operation.pointee.mode = LANCE__PAD_MODE__PAD_EDGE
            }
            operation.pointee.has_value = 1
            operation.pointee.value = value
            message.pointee.operation_case = LANCE__NODE__OPERATION_PAD
            message.pointee.pad = operation
        case .squeeze(let axes):
            let operation: UnsafeMutablePointer<Lance__Squeeze> = arena.message(lance__squeeze__init)
            operation.pointee.axes = intList(axes)
            message.pointee.operation_case = LANCE__NODE__OPERATION_SQUEEZE
            message.pointee.squeeze = operation
        case .unsqueeze(let axes):
            let operation: UnsafeMutablePointer<Lance__Unsqueeze> = arena.message(lance__unsqueeze__init)
            operation.pointee.n_axes = axes.count
            operation.pointee.axes = integers(axes)
            message.pointee.operation_case = LANCE__NODE__OPERATION_UNSQUEEZE
            message.pointee.unsqueeze = operation
        case .reduceMean(let axes, let keepDimensions):
            let operation: UnsafeMutablePointer<Lance__ReduceMean> = arena.message(lance__reduce_mean__init)
            operation.pointee.axes = intList(axes)
            operation.pointee.has_keep_dimensions = 1
            operation.pointee.keep_dimensions = keepDimensions ? 1 : 0
            message.pointee.operation_case = LANCE__NODE__OPERATION_REDUCE_MEAN
            message.pointee.reduce_mean = operation
        }
        return message
    }

    // MARK: Preprocessing, calibration, tasks, optimizer

    private func preprocessing(_ preprocessing: Preprocessing) -> UnsafeMutablePointer<Lance__Preprocessing> {
        let message: UnsafeMutablePointer<Lance__Preprocessing> = arena.message(lance__preprocessing__init)
        message.pointee.size = intList(preprocessing.size)
        message.pointee.has_resize = 1
        switch preprocessing.resize {
        case .none: message.pointee.resize = LANCE__RESIZE_RULE__RESIZE_NONE
        case .direct: message.pointee.resize = LANCE__RESIZE_RULE__RESIZE_DIRECT
        case .shortSideThenCenterCrop: message.pointee.resize = LANCE__RESIZE_RULE__RESIZE_SHORT_SIDE_THEN_CENTER_CROP
        }
        if let side = preprocessing.resizeShortSide {
            message.pointee.has_resize_short_side = 1
            message.pointee.resize_short_side = Int64(side)
        }
        message.pointee.has_scale = 1
        message.pointee.scale = preprocessing.scale
        message.pointee.n_mean = preprocessing.mean.count
        message.pointee.mean = arena.array(preprocessing.mean)
        message.pointee.n_standard_deviation = preprocessing.standardDeviation.count
        message.pointee.standard_deviation = arena.array(preprocessing.standardDeviation)
        message.pointee.has_channels = 1
        message.pointee.channels = Int64(preprocessing.channels)
        return message
    }

    private mutating func calibration(_ record: CalibrationRecord) throws(ContainerError) -> UnsafeMutablePointer<Lance__Calibration> {
        let message: UnsafeMutablePointer<Lance__Calibration> = arena.message(lance__calibration__init)
        message.pointee.has_energy = 1
        message.pointee.energy = record.energy
        message.pointee.has_batch_size = 1
        message.pointee.batch_size = Int64(record.batchSize)
        message.pointee.has_batches = 1
        message.pointee.batches = Int64(record.batches)
        message.pointee.accumulation = try string(record.accumulation, field: "calibration accumulation")
        message.pointee.layer_rule = try string(record.layerRule, field: "calibration layer rule")
        message.pointee.data_description = try string(record.dataDescription, field: "calibration data description")
        message.pointee.data_fingerprint = try string(record.dataFingerprint, field: "calibration data fingerprint")
        var layers: [UnsafeMutablePointer<Lance__LayerBases>?] = []
        for layer in record.layers {
            let entry: UnsafeMutablePointer<Lance__LayerBases> = arena.message(lance__layer_bases__init)
            entry.pointee.layer = try string(layer.layer, field: "calibrated layer name")
            entry.pointee.n_input_shape = layer.inputShape.count
            entry.pointee.input_shape = integers(layer.inputShape)
            var modes: [UnsafeMutablePointer<Lance__ModeBasis>?] = []
            for mode in layer.modes {
                let basis: UnsafeMutablePointer<Lance__ModeBasis> = arena.message(lance__mode_basis__init)
                basis.pointee.mode = try string(mode.mode, field: "a mode name of layer '\(layer.layer)'")
                basis.pointee.has_dimension = 1
                basis.pointee.dimension = Int64(mode.dimension)
                basis.pointee.has_rank = 1
                basis.pointee.rank = Int64(mode.rank)
                basis.pointee.has_factor_blob = 1
                basis.pointee.factor_blob = try blob("calibration/\(layer.layer)/\(mode.mode)", mode.factor, narrow: true)
                basis.pointee.n_spectrum = mode.spectrum.count
                basis.pointee.spectrum = arena.array(mode.spectrum)
                modes.append(basis)
            }
            entry.pointee.n_modes = modes.count
            entry.pointee.modes = arena.array(modes)
            layers.append(entry)
        }
        message.pointee.n_layers = layers.count
        message.pointee.layers = arena.array(layers)
        if let protection = record.protection {
            message.pointee.has_protect_energy = 1
            message.pointee.protect_energy = protection.energy
            message.pointee.has_protect_energy_step = 1
            message.pointee.protect_energy_step = protection.energyStep
        }
        return message
    }

    private mutating func task(_ task: TaskRecord) throws(ContainerError) -> UnsafeMutablePointer<Lance__Task> {
        let message: UnsafeMutablePointer<Lance__Task> = arena.message(lance__task__init)
        message.pointee.name = try string(task.name, field: "task name")
        message.pointee.has_classes = 1
        message.pointee.classes = Int64(task.classes)
        message.pointee.n_class_names = task.classNames.count
        message.pointee.class_names = try strings(task.classNames, field: "a class name of task '\(task.name)'")
        var head: [UnsafeMutablePointer<Lance__Parameter>?] = []
        for parameter in task.head { head.append(try self.parameter(parameter, blobPrefix: "task/\(task.name)/head/")) }
        message.pointee.n_head = head.count
        message.pointee.head = arena.array(head)
        (message.pointee.n_protected_bases, message.pointee.protected_bases) =
            try namedBlobs(task.protectedBases, prefix: "task/\(task.name)/protected/", narrow: true)
        (message.pointee.n_metrics, message.pointee.metrics) = try namedValues(task.metrics, field: "a metric name of task '\(task.name)'")
        return message
    }

    private mutating func optimizerState(_ state: OptimizerState) throws(ContainerError) -> UnsafeMutablePointer<Lance__OptimizerState> {
        let message: UnsafeMutablePointer<Lance__OptimizerState> = arena.message(lance__optimizer_state__init)
        message.pointee.kind = try string(state.kind, field: "optimizer kind")
        message.pointee.has_step = 1
        message.pointee.step = Int64(state.step)
        message.pointee.has_epoch = 1
        message.pointee.epoch = Int64(state.epoch)
        (message.pointee.n_hyperparameters, message.pointee.hyperparameters) =
            try namedValues(state.hyperparameters, field: "an optimizer hyperparameter name")
        (message.pointee.n_slots, message.pointee.slots) = try namedBlobs(state.slots, prefix: "optimizer/", narrow: false)
        return message
    }
}
