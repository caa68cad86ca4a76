/// A dense float32 tensor: a shape and its elements in row-major (C) order.
///
/// `Tensor` has value semantics: copies share storage until one of them is mutated (copy on
/// write, inherited from `Array`). Layout is always contiguous row-major; for images the
/// canonical layout of the whole toolkit is NCHW `[batch, channels, height, width]`.
///
/// ```
/// index(i0, i1, ..., ik) = ((i0 * d1 + i1) * d2 + i2) ... * dk + ik
/// ```
public struct Tensor: Sendable, Equatable, CustomStringConvertible {
    /// The extent of each axis; `[]` is a scalar with one element.
    public private(set) var shape: [Int]
    /// The elements in row-major order; `scalars.count == shape.reduce(1, *)`.
    public private(set) var scalars: [Float]

    /// Creates a tensor from a shape and its row-major elements.
    ///
    /// - Precondition: every extent is non-negative and `scalars.count` equals their product.
    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative extent in shape \(shape)")
        precondition(shape.reduce(1, *) == scalars.count,
                     "shape \(shape) needs \(shape.reduce(1, *)) elements, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    /// Creates a tensor of the given shape filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative extent in shape \(shape)")
        self.shape = shape
        self.scalars = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// Creates a tensor of the given shape whose elements are written by `initializer`, which
    /// receives an uninitialised buffer of `shape.reduce(1, *)` floats and must fill all of it.
    public init(shape: [Int], unsafeUninitializedCapacity initializer: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative extent in shape \(shape)")
        let count = shape.reduce(1, *)
        self.shape = shape
        self.scalars = try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try initializer(buffer)
            initialized = count
        }
    }

    /// A rank-0 tensor holding one value.
    public init(scalar: Float) {
        self.init(shape: [], scalars: [scalar])
    }

    /// The number of elements.
    public var count: Int { scalars.count }

    /// The number of axes.
    public var rank: Int { shape.count }

    /// The same elements viewed with another shape of equal element count.
    public func reshaped(to newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, scalars: scalars)
    }

    /// Calls `body` with the elements in row-major order.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeBufferPointer(body)
    }

    /// Calls `body` with mutable access to the elements (the shape cannot change).
    public mutating func withUnsafeMutableBufferPointer<R>(_ body: (inout UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeMutableBufferPointer(body)
    }

    /// The element at a multi-index (one index per axis). Slow; for tests and small tensors.
    public subscript(indices: Int...) -> Float {
        get { scalars[offset(of: indices)] }
        set { scalars[offset(of: indices)] = newValue }
    }

    private func offset(of indices: [Int]) -> Int {
        precondition(indices.count == shape.count, "expected \(shape.count) indices, got \(indices.count)")
        var offset = 0
        for (index, extent) in zip(indices, shape) {
            precondition(index >= 0 && index < extent, "index \(indices) out of range for shape \(shape)")
            offset = offset * extent + index
        }
        return offset
    }

    /// A short description: the shape and, for small tensors, the values.
    public var description: String {
        let shown = scalars.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "Tensor\(shape)[\(shown)\(scalars.count > 8 ? ", ..." : "")]"
    }
}

extension Tensor {
    /// The largest absolute element-wise difference to `other`, which must have the same shape.
    public func maxAbsoluteDifference(to other: Tensor) -> Float {
        precondition(shape == other.shape, "shapes differ: \(shape) vs \(other.shape)")
        var largest: Float = 0
        for (a, b) in zip(scalars, other.scalars) {
            let difference = abs(a - b)
            if difference > largest || difference.isNaN { largest = difference.isNaN ? .infinity : difference }
        }
        return largest
    }

    /// For a tensor of shape `[rows, columns]`: the column of the largest value in each row.
    public func argmaxPerRow() -> [Int] {
        precondition(rank == 2, "argmaxPerRow needs a rank-2 tensor, got shape \(shape)")
        let columns = shape[1]
        return (0..<shape[0]).map { row in
            var best = 0
            for column in 1..<max(columns, 1) where scalars[row * columns + column] > scalars[row * columns + best] {
                best = column
            }
            return best
        }
    }

    /// Rows `range` along the first axis, as a new tensor (the tensor itself, sharing its storage,
    /// when `range` covers every row).
    public func slice(batch range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0])
        if range == 0..<shape[0] { return self }
        let rowSize = shape.dropFirst().reduce(1, *)
        var newShape = shape
        newShape[0] = range.count
        return Tensor(shape: newShape,
                      scalars: Array(scalars[(range.lowerBound * rowSize)..<(range.upperBound * rowSize)]))
    }

    /// Joins tensors along the first axis; all must agree on the other axes.
    public static func concatenate(batches parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty)
        if parts.count == 1 { return parts[0] }
        let tail = Array(parts[0].shape.dropFirst())
        precondition(parts.allSatisfy { Array($0.shape.dropFirst()) == tail }, "batch parts disagree in shape")
        var scalars: [Float] = []
        scalars.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for part in parts { scalars.append(contentsOf: part.scalars) }
        return Tensor(shape: [parts.reduce(0) { $0 + $1.shape[0] }] + tail, scalars: scalars)
    }
}
