/// How raw samples become model inputs. Recorded in the container so that calibration, training,
/// evaluation and export agree.
public struct Preprocessing: Sendable, Equatable, Codable {
    /// How images are brought to `size`.
    public enum Resize: String, Sendable, Codable, CaseIterable {
        /// Scale so the short side is `resizeShortSide` (bilinear), then crop the centre to `size`.
        case shortSideThenCenterCrop = "short-side-crop"
        /// Scale directly to `size` (bilinear), ignoring the aspect ratio.
        case direct
        /// No resizing: samples must already have `size`.
        case none
    }

    /// Output `[height, width]`; `nil` keeps the source size.
    public var size: [Int]?
    /// The resize rule.
    public var resize: Resize
    /// The short side before the centre crop (`shortSideThenCenterCrop` only); `nil`: `size`'s
    /// short side (no crop margin).
    public var resizeShortSide: Int?
    /// Pixels are multiplied by this first (e.g. `1/255` to map bytes to [0, 1]).
    public var scale: Float
    /// Per-channel mean subtracted after scaling (one value, or one per channel).
    public var mean: [Float]
    /// Per-channel standard deviation divided by after the mean (one value, or one per channel).
    public var standardDeviation: [Float]
    /// Channels the model takes: grey images are repeated to 3 when this is 3.
    public var channels: Int

    /// Creates a preprocessing description.
    public init(size: [Int]? = nil, resize: Resize = .none, resizeShortSide: Int? = nil, scale: Float = 1,
                mean: [Float] = [0], standardDeviation: [Float] = [1], channels: Int = 3) {
        self.size = size
        self.resize = resize
        self.resizeShortSide = resizeShortSide
        self.scale = scale
        self.mean = mean
        self.standardDeviation = standardDeviation
        self.channels = channels
    }

    /// ImageNet preprocessing at 224×224 (resize short side to 256, centre crop, /255, mean/std).
    public static let imageNet = Preprocessing(size: [224, 224], resize: .shortSideThenCenterCrop, resizeShortSide: 256,
                                               scale: 1 / 255, mean: [0.485, 0.456, 0.406],
                                               standardDeviation: [0.229, 0.224, 0.225], channels: 3)
}
