#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a node computes, with all of its hyperparameters resolved at import.
///
/// Every operation takes float32 tensors and produces one float32 tensor. Image tensors are NCHW
/// `[batch, channels, height, width]`; convolution kernels are OIHW `[outputChannels,
/// inputChannels / groups, kernelHeight, kernelWidth]`. The semantics follow the ONNX operator of
/// the same name (see `opType`), so importers map onto these cases and exporters map back.
/// Inputs that ONNX passes as constant tensors (Reshape's shape, Clip's bounds, Pad's pads, ...) are
/// folded into the case's values at import; the node's inputs are then only data tensors and
/// parameters.
public enum Operator: Sendable, Equatable {
    /// 2-D convolution. Inputs `[X, W]` or `[X, W, B]`:
    /// X `[N, C, H, W]`, W `[M, C / groups, kH, kW]`, B `[M]`; output `[N, M, H', W']` with
    /// `H' = (H + padTop + padBottom - dilation·(kH - 1) - 1) / stride + 1` (floor).
    case convolution(Convolution)
    /// Inference-form batch normalization. Inputs `[X, scale, bias, mean, variance]`, each
    /// per-channel parameter `[C]`: `y = scale · (x − mean) / sqrt(variance + epsilon) + bias`.
    case batchNormalization(epsilon: Float)
    /// An element-wise activation; input `[X]`, output of the same shape.
    case activation(Activation)
    /// An element-wise binary operator with numpy (multidirectional) broadcasting; inputs `[A, B]`.
    case binary(BinaryOperator)
    /// Joins all inputs along `axis` (negative counts from the end).
    case concat(axis: Int)
    /// 2-D max pooling of `[N, C, H, W]`.
    case maxPool(Pooling)
    /// 2-D average pooling of `[N, C, H, W]`; `countIncludePad` divides by the full window size.
    case averagePool(Pooling, countIncludePad: Bool)
    /// Mean over all spatial axes: `[N, C, d1, ...]` → `[N, C, 1, ...]`.
    case globalAveragePool
    /// Maximum over all spatial axes: `[N, C, d1, ...]` → `[N, C, 1, ...]`.
    case globalMaxPool
    /// Reshapes to 2-D `[d0 · ... · d(axis-1), d(axis) · ... · d(r-1)]`.
    case flatten(axis: Int)
    /// Reshapes to `shape`, where `-1` is inferred and `0` copies the input extent (unless `allowZero`).
    case reshape(shape: [Int], allowZero: Bool)
    /// Permutes axes: output axis `i` is input axis `permutation[i]` (`nil`: reverse them).
    case transpose(permutation: [Int]?)
    /// `Y = alpha · op(A) · op(B) + beta · C`; inputs `[A, B]` or `[A, B, C]`, A and B 2-D, C
    /// broadcast to `[M, N]`.
    case gemm(Gemm)
    /// numpy `matmul` with batch broadcasting; inputs `[A, B]`.
    case matMul
    /// Softmax along `axis`. With `coercedTo2D` (ONNX opset < 13) the input is viewed as
    /// `[d0 · ... · d(axis-1), d(axis) · ...]` and softmax runs over the second axis.
    case softmax(axis: Int, coercedTo2D: Bool)
    /// Passes the input through (also what inference-mode Dropout is).
    case identity
    /// Pads (or crops, where negative) each axis: `pads = [begin0, begin1, ..., end0, end1, ...]`.
    case pad(pads: [Int], mode: PadMode, value: Float)
    /// Removes the listed axes of extent 1 (`nil`: all axes of extent 1).
    case squeeze(axes: [Int]?)
    /// Inserts axes of extent 1 at `axes`, numbered in the output.
    case unsqueeze(axes: [Int])
    /// Mean over `axes` (`nil`: all axes), keeping them as extent 1 when `keepDimensions`.
    case reduceMean(axes: [Int]?, keepDimensions: Bool)

    /// The ONNX operator type this case corresponds to.
    public var opType: String {
        switch self {
        case .convolution: "Conv"
        case .batchNormalization: "BatchNormalization"
        case .activation(let activation): activation.opType
        case .binary(let op): op.opType
        case .concat: "Concat"
        case .maxPool: "MaxPool"
        case .averagePool: "AveragePool"
        case .globalAveragePool: "GlobalAveragePool"
        case .globalMaxPool: "GlobalMaxPool"
        case .flatten: "Flatten"
        case .reshape: "Reshape"
        case .transpose: "Transpose"
        case .gemm: "Gemm"
        case .matMul: "MatMul"
        case .softmax: "Softmax"
        case .identity: "Identity"
        case .pad: "Pad"
        case .squeeze: "Squeeze"
        case .unsqueeze: "Unsqueeze"
        case .reduceMean: "ReduceMean"
        }
    }
}

/// Spatial padding of a 2-D window operation.
public enum AutoPad: Sendable, Equatable {
    /// Explicit padding in pixels.
    case explicit(top: Int, left: Int, bottom: Int, right: Int)
    /// Output size `ceil(input / stride)`; an odd total pad puts the extra pixel at the end.
    case sameUpper
    /// Output size `ceil(input / stride)`; an odd total pad puts the extra pixel at the beginning.
    case sameLower

    /// No padding.
    public static let valid = AutoPad.explicit(top: 0, left: 0, bottom: 0, right: 0)
}

/// The geometry of a 2-D sliding window: kernel extent, stride, dilation and padding.
public struct WindowGeometry: Sendable, Equatable {
    /// `[kernelHeight, kernelWidth]`.
    public var kernelSize: [Int]
    /// `[strideHeight, strideWidth]`.
    public var strides: [Int]
    /// `[dilationHeight, dilationWidth]`.
    public var dilations: [Int]
    /// How the input is padded.
    public var padding: AutoPad

    /// Creates a window geometry; every list has two entries (height, width).
    public init(kernelSize: [Int], strides: [Int] = [1, 1], dilations: [Int] = [1, 1], padding: AutoPad = .valid) {
        self.kernelSize = kernelSize
        self.strides = strides
        self.dilations = dilations
        self.padding = padding
    }

    /// The explicit padding `(top, left, bottom, right)` for an input of the given spatial size.
    public func resolvedPadding(height: Int, width: Int) -> (top: Int, left: Int, bottom: Int, right: Int) {
        switch padding {
        case .explicit(let top, let left, let bottom, let right):
            return (top, left, bottom, right)
        case .sameUpper, .sameLower:
            func split(_ size: Int, _ axis: Int) -> (Int, Int) {
                let output = (size + strides[axis] - 1) / strides[axis]
                let total = max(0, (output - 1) * strides[axis] + (kernelSize[axis] - 1) * dilations[axis] + 1 - size)
                return padding == .sameUpper ? (total / 2, total - total / 2) : (total - total / 2, total / 2)
            }
            let (top, bottom) = split(height, 0)
            let (left, right) = split(width, 1)
            return (top, left, bottom, right)
        }
    }

    /// The output spatial size for an input of the given size (`ceilMode` as in ONNX pooling: a
    /// last window must start inside the input or its leading padding).
    public func outputSize(height: Int, width: Int, ceilMode: Bool = false) -> (height: Int, width: Int) {
        let pads = resolvedPadding(height: height, width: width)
        func extent(_ size: Int, _ before: Int, _ after: Int, _ axis: Int) -> Int {
            let span = size + before + after - dilations[axis] * (kernelSize[axis] - 1) - 1
            guard span >= 0 else { return 0 }
            if ceilMode {
                var count = (span + strides[axis] - 1) / strides[axis] + 1
                if (count - 1) * strides[axis] >= size + before { count -= 1 }
                return count
            }
            return span / strides[axis] + 1
        }
        return (extent(height, pads.top, pads.bottom, 0), extent(width, pads.left, pads.right, 1))
    }
}

/// A 2-D convolution's hyperparameters.
public struct Convolution: Sendable, Equatable {
    /// Kernel extent, stride, dilation and padding.
    public var window: WindowGeometry
    /// Number of channel groups; `groups == inputChannels` is a depthwise convolution.
    public var groups: Int

    /// Creates convolution hyperparameters.
    public init(window: WindowGeometry, groups: Int = 1) {
        self.window = window
        self.groups = groups
    }

    /// Whether the kernel is 1×1 with stride 1 and no padding: each output pixel reads the same
    /// input pixel, `Y[n, m, p] = B[m] + Σ_c W[m, c] · X[n, c, p]` (one group), so the input
    /// gradient is `dX[n, c, p] = Σ_m W[m, c] · dY[n, m, p]`.
    public var isPointwise: Bool {
        window.kernelSize == [1, 1] && window.strides == [1, 1] && window.resolvedPadding(height: 1, width: 1) == (0, 0, 0, 0)
    }
}

/// A 2-D pooling's hyperparameters.
public struct Pooling: Sendable, Equatable {
    /// Kernel extent, stride, dilation and padding.
    public var window: WindowGeometry
    /// Whether the output size rounds up (a partial last window is kept).
    public var ceilMode: Bool

    /// Creates pooling hyperparameters.
    public init(window: WindowGeometry, ceilMode: Bool = false) {
        self.window = window
        self.ceilMode = ceilMode
    }
}

/// An element-wise activation function.
public enum Activation: Sendable, Equatable {
    /// `max(0, x)`.
    case relu
    /// `min(max(x, minimum), maximum)`; ReLU6 is `clip(0, 6)`.
    case clip(minimum: Float, maximum: Float)
    /// `x` for `x ≥ 0`, else `alpha · x`.
    case leakyRelu(alpha: Float)
    /// `1 / (1 + e^(−x))`.
    case sigmoid
    /// `max(0, min(1, alpha · x + beta))`.
    case hardSigmoid(alpha: Float, beta: Float)
    /// `x · max(0, min(1, x / 6 + 1/2))`.
    case hardSwish
    /// `tanh(x)`.
    case tanh
    /// Keras's general `ReLU` layer: `min(x, maximum)` for `x ≥ threshold`, else
    /// `negativeSlope · (x − threshold)` (no single ONNX operator computes it).
    case thresholdedReLU(threshold: Float, negativeSlope: Float, maximum: Float)

    /// The ONNX operator type of this activation.
    public var opType: String {
        switch self {
        case .relu: "Relu"
        case .clip: "Clip"
        case .leakyRelu: "LeakyRelu"
        case .sigmoid: "Sigmoid"
        case .hardSigmoid: "HardSigmoid"
        case .hardSwish: "HardSwish"
        case .tanh: "Tanh"
        case .thresholdedReLU: "KerasReLU"
        }
    }

    /// Applies the activation to one value.
    @inlinable
    public func callAsFunction(_ x: Float) -> Float {
        switch self {
        case .relu: return max(0, x)
        case .clip(let minimum, let maximum): return min(max(x, minimum), maximum)
        case .leakyRelu(let alpha): return x >= 0 ? x : alpha * x
        case .sigmoid: return 1 / (1 + expf(-x))
        case .hardSigmoid(let alpha, let beta): return max(0, min(1, alpha * x + beta))
        case .hardSwish: return x * max(0, min(1, x / 6 + 0.5))
        case .tanh: return tanhf(x)
        case .thresholdedReLU(let threshold, let negativeSlope, let maximum):
            return x >= threshold ? min(x, maximum) : negativeSlope * (x - threshold)
        }
    }
}

/// An element-wise binary operator.
public enum BinaryOperator: Sendable, Equatable {
    /// `a + b`.
    case add
    /// `a − b`.
    case subtract
    /// `a · b`.
    case multiply
    /// `a / b`.
    case divide

    /// The ONNX operator type of this operator.
    public var opType: String {
        switch self {
        case .add: "Add"
        case .subtract: "Sub"
        case .multiply: "Mul"
        case .divide: "Div"
        }
    }

    /// Applies the operator to two values.
    @inlinable
    public func callAsFunction(_ a: Float, _ b: Float) -> Float {
        switch self {
        case .add: a + b
        case .subtract: a - b
        case .multiply: a * b
        case .divide: a / b
        }
    }
}

/// General matrix multiplication hyperparameters (`Y = alpha · op(A) · op(B) + beta · C`).
public struct Gemm: Sendable, Equatable {
    /// Scale of the product.
    public var alpha: Float
    /// Scale of the added C.
    public var beta: Float
    /// Whether A is stored transposed (`[K, M]`).
    public var transposeA: Bool
    /// Whether B is stored transposed (`[N, K]`, as PyTorch's Linear weight).
    public var transposeB: Bool

    /// Creates Gemm hyperparameters.
    public init(alpha: Float = 1, beta: Float = 1, transposeA: Bool = false, transposeB: Bool = false) {
        self.alpha = alpha
        self.beta = beta
        self.transposeA = transposeA
        self.transposeB = transposeB
    }
}

/// How Pad fills the new border.
public enum PadMode: String, Sendable, Equatable {
    /// With a constant value.
    case constant
    /// Mirrored without repeating the edge.
    case reflect
    /// Repeating the edge value.
    case edge
}
