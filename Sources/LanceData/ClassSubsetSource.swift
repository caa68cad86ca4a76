import LanceCore
import LanceModel

/// The samples of some classes of a labelled source, relabelled `0..<classes.count` in the order
/// the classes are given (for task splits such as Split Fashion-MNIST: classes 2 and 3 become
/// labels 0 and 1). Sample order follows the base source.
public struct ClassSubsetSource: DataSource {
    /// The source the samples come from.
    public let base: any DataSource
    /// The base's labels that are kept, in their new label order.
    public let classes: [Int]
    /// For each sample of the subset, its index in the base.
    public let baseIndices: [Int]
    private let newLabel: [Int: Int]

    /// Selects the samples whose label is in `classes` (one pass over the base's labels).
    ///
    /// - Throws: `DataError.invalidOption` when the base has no labels, a class is repeated or
    ///   outside the base's classes, or no sample has one of the classes; the base's reading errors.
    public init(base: any DataSource, classes: [Int]) throws(DataError) {
        guard base.hasLabels else {
            throw .invalidOption(name: "class selection", reason: "\(base.path) has no labels to select classes by")
        }
        guard !classes.isEmpty, Set(classes).count == classes.count else {
            throw .invalidOption(name: "class selection", reason: "give each class once, at least one: \(classes)")
        }
        if let bad = classes.first(where: { $0 < 0 || $0 >= base.classNames.count }) {
            throw .invalidOption(name: "class selection", reason: "class \(bad) is not one of the \(base.classNames.count) classes (0..<\(base.classNames.count)) of \(base.path)")
        }
        let newLabel = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var indices: [Int] = []
        var seen = Set<Int>()
        for index in 0..<base.count {
            let label = try base.label(at: index)
            if newLabel[label] != nil {
                indices.append(index)
                seen.insert(label)
            }
        }
        if let missing = classes.first(where: { !seen.contains($0) }) {
            throw .invalidOption(name: "class selection", reason: "\(base.path) has no sample of class \(missing)")
        }
        self.base = base
        self.classes = classes
        self.baseIndices = indices
        self.newLabel = newLabel
    }

    public var path: String { base.path }
    public var count: Int { baseIndices.count }
    public var hasLabels: Bool { true }
    public var classNames: [String] { classes.map { base.classNames[$0] } }
    public var preprocessor: Preprocessor { base.preprocessor }

    public var sampleDescription: String {
        "\(base.sampleDescription); classes \(classes.map(String.init).joined(separator: ",")) (\(count) samples, relabelled 0..<\(classes.count))"
    }

    public func rawSample(at index: Int) throws(DataError) -> (image: RawImage, label: Int) {
        let (image, label) = try base.rawSample(at: baseIndices[index])
        return (image, newLabel[label] ?? -1)
    }

    public func samplePath(at index: Int) -> String { base.samplePath(at: baseIndices[index]) }
}

extension DataSource {
    /// The label of sample `index` (`-1` without labels); by default read with the sample.
    public func label(at index: Int) throws(DataError) -> Int {
        try rawSample(at: index).label
    }
}
