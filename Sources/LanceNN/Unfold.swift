import LanceCore
import LanceModel

/// The im2col ("unfold") tensor of a convolution's input, as PyTorch's `F.unfold` gives it:
///
/// ```
/// X_unf[b, (c·kH + i)·kW + j, oh·W' + ow] = X[b, c, oh·sH − padTop + i·dH, ow·sW − padLeft + j·dW]
/// ```
///
/// (zero outside the input). The feature axis is ordered `(c, i, j)`, the order of the weight
/// `W [C', C, kH, kW]` viewed as `[C', C·kH·kW]`, so that the convolution is `Y[b] = W · X_unf[b]`
/// (`groups == 1`). A 1×1 convolution with stride 1 and no padding unfolds to X itself, reshaped.
///
/// - Parameters:
///   - input: X `[B, C, H, W]`.
///   - convolution: the window (kernel, strides, dilations, padding); `groups` is ignored.
/// - Returns: `[B, C·kH·kW, H'·W']`.
public func unfoldedInput(_ input: Tensor, convolution: Convolution) -> Tensor {
    precondition(input.rank == 4, "unfolding needs a [B, C, H, W] input, got \(input.shape)")
    let (batch, channels, height, width) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
    let window = convolution.window
    let (kernelHeight, kernelWidth) = (window.kernelSize[0], window.kernelSize[1])
    let (strideHeight, strideWidth) = (window.strides[0], window.strides[1])
    let (dilationHeight, dilationWidth) = (window.dilations[0], window.dilations[1])
    let pads = window.resolvedPadding(height: height, width: width)
    let output = window.outputSize(height: height, width: width)
    let positions = output.height * output.width
    let features = channels * kernelHeight * kernelWidth
    if kernelHeight == 1 && kernelWidth == 1 && strideHeight == 1 && strideWidth == 1 && pads == (0, 0, 0, 0) {
        return input.reshaped(to: [batch, channels, height * width])
    }
    return Tensor(shape: [batch, features, positions]) { out in
        input.withUnsafeBufferPointer { x in
            for b in 0..<batch {
                for c in 0..<channels {
                    let plane = (b * channels + c) * height * width
                    for i in 0..<kernelHeight {
                        for j in 0..<kernelWidth {
                            let row = ((b * features) + (c * kernelHeight + i) * kernelWidth + j) * positions
                            for oh in 0..<output.height {
                                let ih = oh * strideHeight - pads.top + i * dilationHeight
                                for ow in 0..<output.width {
                                    let iw = ow * strideWidth - pads.left + j * dilationWidth
                                    out[row + oh * output.width + ow] = ih >= 0 && ih < height && iw >= 0 && iw < width
                                        ? x[plane + ih * width + iw] : 0
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
