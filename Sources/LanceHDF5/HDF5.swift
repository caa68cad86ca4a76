import CHDF5
import Foundation

/// Why an HDF5 file or object could not be read. Every case names the file and the object path.
public enum HDF5Error: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file does not exist or cannot be opened as HDF5.
    case cannotOpen(path: String, reason: String)
    /// No object at this path in the file.
    case missingObject(path: String, object: String)
    /// The object exists but is of another kind or type than needed.
    case wrongType(path: String, object: String, expected: String)
    /// HDF5 failed while reading the object (a damaged or truncated file).
    case readFailed(path: String, object: String)
    /// The file cannot be created (a missing folder, no permission).
    case cannotCreate(path: String, reason: String)
    /// HDF5 failed while writing the object (a full disk, an existing name).
    case writeFailed(path: String, object: String, reason: String)

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason): "\(path): cannot open as HDF5: \(reason)"
        case .missingObject(let path, let object): "\(path): no '\(object)' in the file"
        case .wrongType(let path, let object, let expected): "\(path): '\(object)' is not \(expected)"
        case .readFailed(let path, let object): "\(path): reading '\(object)' failed; the file may be truncated or damaged"
        case .cannotCreate(let path, let reason): "\(path): cannot create the HDF5 file: \(reason)"
        case .writeFailed(let path, let object, let reason): "\(path): writing '\(object)' failed: \(reason)"
        }
    }
}

/// Serialises every HDF5 call: the Debian build of libhdf5 is not thread-safe.
private let hdf5Lock = NSLock()

/// Runs `body` holding the HDF5 lock, with HDF5's stderr error dumps turned off (a per-thread
/// setting in thread-safe builds, so it is set on every call).
func withHDF5<T>(_ body: () throws -> T) rethrows -> T {
    hdf5Lock.lock()
    defer { hdf5Lock.unlock() }
    lance_h5_silence_errors()
    return try body()
}

/// An open HDF5 identifier, closed exactly once when the last reference goes away.
final class Handle: @unchecked Sendable {
    let id: hid_t
    private let close: (hid_t) -> herr_t

    init(_ id: hid_t, close: @escaping (hid_t) -> herr_t) {
        self.id = id
        self.close = close
    }

    deinit { withHDF5 { _ = close(id) } }
}

/// An HDF5 file opened for reading (`init(path:)`, wraps `H5Fopen`) or created for writing
/// (`create(path:)`, wraps `H5Fcreate`).
public final class HDF5File: @unchecked Sendable {
    /// The file's path (used in errors).
    public let path: String
    let handle: Handle

    /// Opens `path` read-only.
    ///
    /// - Throws: `HDF5Error.cannotOpen` when the file is missing or not HDF5.
    public init(path: String) throws(HDF5Error) {
        guard FileManager.default.fileExists(atPath: path) else { throw .cannotOpen(path: path, reason: "no such file") }
        let id = withHDF5 { H5Fopen(path, lance_h5f_acc_rdonly(), lance_h5p_default()) }
        guard id >= 0 else { throw .cannotOpen(path: path, reason: "not an HDF5 file, or truncated") }
        self.path = path
        self.handle = Handle(id, close: H5Fclose)
    }

    init(path: String, handle: Handle) {
        self.path = path
        self.handle = handle
    }

    /// The root group `/`. Wraps `H5Gopen2`.
    public var root: HDF5Group {
        // Opening "/" in a file that opened cannot fail; the file handle serves if it ever did.
        let id = withHDF5 { H5Gopen2(handle.id, "/", lance_h5p_default()) }
        return HDF5Group(file: self, handle: id >= 0 ? Handle(id, close: H5Gclose) : handle, name: "/")
    }
}

/// Something in a file that can carry attributes: a group or a dataset.
public protocol HDF5Object {
    /// The file it belongs to.
    var file: HDF5File { get }
    /// Its absolute path in the file.
    var name: String { get }
}

/// A group (folder) in an HDF5 file.
public struct HDF5Group: HDF5Object, @unchecked Sendable {
    /// The file it belongs to.
    public let file: HDF5File
    let handle: Handle
    /// Its absolute path in the file.
    public let name: String

    func childPath(_ path: String) -> String {
        name == "/" ? "/" + path : name + "/" + path
    }

    /// Whether an object exists at `path` relative to this group.
    public func contains(_ path: String) -> Bool {
        withHDF5 { lance_h5_exists(handle.id, path) > 0 }
    }

    /// The subgroup at `path` (relative, may contain `/`). Wraps `H5Gopen2`.
    public func group(_ path: String) throws(HDF5Error) -> HDF5Group {
        let full = childPath(path)
        guard contains(path) else { throw .missingObject(path: file.path, object: full) }
        let id = withHDF5 { H5Gopen2(handle.id, path, lance_h5p_default()) }
        guard id >= 0 else { throw .wrongType(path: file.path, object: full, expected: "a group") }
        return HDF5Group(file: file, handle: Handle(id, close: H5Gclose), name: full)
    }

    /// The dataset at `path` (relative, may contain `/`). Wraps `H5Dopen2`.
    public func dataset(_ path: String) throws(HDF5Error) -> HDF5Dataset {
        let full = childPath(path)
        guard contains(path) else { throw .missingObject(path: file.path, object: full) }
        let id = withHDF5 { H5Dopen2(handle.id, path, lance_h5p_default()) }
        guard id >= 0 else { throw .wrongType(path: file.path, object: full, expected: "a dataset") }
        return HDF5Dataset(file: file, handle: Handle(id, close: H5Dclose), name: full)
    }

    /// The names of the links in this group, sorted by name. Wraps `H5Literate`.
    public func childNames() throws(HDF5Error) -> [String] {
        final class Names { var values: [String] = [] }
        let names = Names()
        let status = withHDF5 {
            lance_h5_list_links(handle.id, { name, context in
                guard let name, let context else { return }
                Unmanaged<Names>.fromOpaque(context).takeUnretainedValue().values.append(String(cString: name))
            }, Unmanaged.passUnretained(names).toOpaque())
        }
        guard status >= 0 else { throw .readFailed(path: file.path, object: name) }
        return names.values
    }
}

/// A dataset (an n-dimensional array) in an HDF5 file.
public struct HDF5Dataset: HDF5Object, @unchecked Sendable {
    /// The file it belongs to.
    public let file: HDF5File
    let handle: Handle
    /// Its absolute path in the file.
    public let name: String

    /// The dataset's extents. Wraps `H5Sget_simple_extent_dims`.
    public func shape() throws(HDF5Error) -> [Int] {
        let result: [Int]? = withHDF5 {
            let space = H5Dget_space(handle.id)
            guard space >= 0 else { return nil }
            defer { H5Sclose(space) }
            let rank = Int(H5Sget_simple_extent_ndims(space))
            guard rank >= 0 else { return nil }
            var dims = [hsize_t](repeating: 0, count: rank)
            guard H5Sget_simple_extent_dims(space, &dims, nil) >= 0 else { return nil }
            return dims.map { Int($0) }
        }
        guard let result else { throw .readFailed(path: file.path, object: name) }
        return result
    }

    /// Whether the stored elements are floating-point numbers.
    public func isFloatingPoint() -> Bool {
        withHDF5 {
            let type = H5Dget_type(handle.id)
            defer { H5Tclose(type) }
            return H5Tget_class(type) == H5T_FLOAT
        }
    }

    /// Checks, before anything is read, that the dataset stores plain numbers (float or integer
    /// of at most 8 bytes) and that the file holds the bytes its extents claim. A damaged header
    /// can otherwise make `H5Dread` allocate gigabytes for type conversion, or read past the data.
    ///
    /// - Returns: the dataset's extents.
    /// - Throws: `HDF5Error.wrongType` for another element type; `.readFailed` when the stored
    ///   bytes cannot hold the elements (uncompressed: fewer bytes than elements × size;
    ///   compressed: more than 1100× expansion, beyond what deflate can produce).
    private func checkedShape() throws(HDF5Error) -> [Int] {
        let extents = try shape()
        let count = extents.reduce(1, *)
        enum Problem { case type, storage }
        let problem: Problem? = withHDF5 {
            let type = H5Dget_type(handle.id)
            guard type >= 0 else { return .type }
            defer { H5Tclose(type) }
            let typeClass = H5Tget_class(type)
            let elementSize = H5Tget_size(type)
            guard typeClass == H5T_FLOAT || typeClass == H5T_INTEGER, (1...8).contains(elementSize) else { return .type }
            let properties = H5Dget_create_plist(handle.id)
            guard properties >= 0 else { return .storage }
            defer { H5Pclose(properties) }
            let filtered = H5Pget_nfilters(properties) > 0
            let (needed, overflow) = count.multipliedReportingOverflow(by: elementSize)
            let stored = Int(clamping: H5Dget_storage_size(handle.id))
            guard !overflow else { return .storage }
            if filtered { return needed / 1100 > stored + (1 << 20) ? .storage : nil }
            return needed > stored ? .storage : nil
        }
        switch problem {
        case .type: throw .wrongType(path: file.path, object: name, expected: "an array of numbers (float or integer, at most 8 bytes each)")
        case .storage: throw .readFailed(path: file.path, object: name)
        case nil: return extents
        }
    }

    /// All elements converted to float32 by HDF5, in row-major order. Wraps `H5Dread`.
    public func readFloats() throws(HDF5Error) -> [Float] {
        let count = try checkedShape().reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        let status = withHDF5 {
            values.withUnsafeMutableBytes { H5Dread(handle.id, lance_h5t_native_float(), lance_h5s_all(), lance_h5s_all(), lance_h5p_default(), $0.baseAddress) }
        }
        guard status >= 0 else { throw .readFailed(path: file.path, object: name) }
        return values
    }

    /// The elements of rows `rows` along the first axis (all of every other axis), converted to
    /// float32 by HDF5, in row-major order: `rows.count × shape[1...].product` values. Reads only
    /// those rows from the file. Wraps `H5Sselect_hyperslab` and `H5Dread`.
    ///
    /// - Throws: `HDF5Error.wrongType` for a scalar dataset or rows outside `0..<shape[0]`;
    ///   `HDF5Error.readFailed` when HDF5 cannot read them.
    public func readFloats(rows: Range<Int>) throws(HDF5Error) -> [Float] {
        let extents = try checkedShape()
        guard let rowCount = extents.first, rows.lowerBound >= 0, rows.upperBound <= rowCount else {
            throw .wrongType(path: file.path, object: name, expected: "an array with rows \(rows.lowerBound)..<\(rows.upperBound)")
        }
        let rowSize = extents.dropFirst().reduce(1, *)
        var values = [Float](repeating: 0, count: rows.count * rowSize)
        guard !rows.isEmpty, rowSize > 0 else { return values }
        let status: herr_t = withHDF5 {
            let fileSpace = H5Dget_space(handle.id)
            guard fileSpace >= 0 else { return -1 }
            defer { H5Sclose(fileSpace) }
            var start = [hsize_t](repeating: 0, count: extents.count)
            var count = extents.map { hsize_t($0) }
            start[0] = hsize_t(rows.lowerBound)
            count[0] = hsize_t(rows.count)
            guard H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, start, nil, count, nil) >= 0 else { return -1 }
            let memorySpace = H5Screate_simple(Int32(count.count), count, nil)
            guard memorySpace >= 0 else { return -1 }
            defer { H5Sclose(memorySpace) }
            return values.withUnsafeMutableBytes {
                H5Dread(handle.id, lance_h5t_native_float(), memorySpace, fileSpace, lance_h5p_default(), $0.baseAddress)
            }
        }
        guard status >= 0 else { throw .readFailed(path: file.path, object: name) }
        return values
    }

    /// All elements converted to 64-bit integers by HDF5, in row-major order. Wraps `H5Dread`.
    public func readIntegers() throws(HDF5Error) -> [Int] {
        let count = try checkedShape().reduce(1, *)
        var values = [Int64](repeating: 0, count: count)
        let status = withHDF5 {
            values.withUnsafeMutableBytes { H5Dread(handle.id, lance_h5t_native_int64(), lance_h5s_all(), lance_h5s_all(), lance_h5p_default(), $0.baseAddress) }
        }
        guard status >= 0 else { throw .readFailed(path: file.path, object: name) }
        return values.map { Int($0) }
    }
}

extension HDF5Object {
    var objectID: hid_t {
        switch self {
        case let group as HDF5Group: group.handle.id
        case let dataset as HDF5Dataset: dataset.handle.id
        default: -1
        }
    }

    /// Whether the object has an attribute of this name. Wraps `H5Aexists`.
    public func hasAttribute(_ attribute: String) -> Bool {
        withHDF5 { H5Aexists(objectID, attribute) > 0 }
    }

    /// The names of the object's attributes.
    public func attributeNames() -> [String] {
        withHDF5 {
            let count = H5Aget_num_attrs(objectID)
            guard count > 0 else { return [] }
            return (0..<count).compactMap { index -> String? in
                let attribute = H5Aopen_by_idx(objectID, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(index), lance_h5p_default(), lance_h5p_default())
                guard attribute >= 0 else { return nil }
                defer { H5Aclose(attribute) }
                let length = H5Aget_name(attribute, 0, nil)
                guard length > 0 else { return nil }
                var buffer = [UInt8](repeating: 0, count: length + 1)
                buffer.withUnsafeMutableBytes { _ = H5Aget_name(attribute, length + 1, $0.baseAddress?.assumingMemoryBound(to: CChar.self)) }
                return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
            }
        }
    }

    /// A string attribute's values: one string per element, for fixed- and variable-length
    /// strings alike (trailing NULs removed). Attributes Keras splits into chunks because they
    /// exceed 64 KiB (`layer_names0`, `layer_names1`, ...) are joined when `name` itself is absent.
    /// Wraps `H5Aread`.
    public func stringArrayAttribute(_ attribute: String) throws(HDF5Error) -> [String] {
        if hasAttribute(attribute) { return try readStrings(attribute) }
        var values: [String] = []
        var chunk = 0
        while hasAttribute("\(attribute)\(chunk)") {
            values += try readStrings("\(attribute)\(chunk)")
            chunk += 1
        }
        guard chunk > 0 else { throw .missingObject(path: file.path, object: "\(name)@\(attribute)") }
        return values
    }

    /// A scalar (or one-element) string attribute.
    public func stringAttribute(_ attribute: String) throws(HDF5Error) -> String {
        let values = try stringArrayAttribute(attribute)
        guard values.count == 1 else {
            throw .wrongType(path: file.path, object: "\(name)@\(attribute)", expected: "a single string")
        }
        return values[0]
    }

    private func readStrings(_ attribute: String) throws(HDF5Error) -> [String] {
        let object = "\(name)@\(attribute)"
        let result: Result<[String], HDF5Error> = withHDF5 {
            let id = H5Aopen(objectID, attribute, lance_h5p_default())
            guard id >= 0 else { return .failure(.readFailed(path: file.path, object: object)) }
            defer { H5Aclose(id) }
            let type = H5Aget_type(id), space = H5Aget_space(id)
            defer { H5Tclose(type); H5Sclose(space) }
            guard H5Tget_class(type) == H5T_STRING else {
                return .failure(.wrongType(path: file.path, object: object, expected: "a string attribute"))
            }
            let count = Int(max(0, H5Sget_simple_extent_npoints(space)))
            let memoryType = H5Tcopy(lance_h5t_c_s1())
            defer { H5Tclose(memoryType) }
            // HDF5 does not convert between ASCII and UTF-8: read in the stored character set.
            H5Tset_cset(memoryType, H5Tget_cset(type))
            if H5Tis_variable_str(type) > 0 {
                H5Tset_size(memoryType, lance_h5t_variable())
                var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
                guard H5Aread(id, memoryType, &pointers) >= 0 else { return .failure(.readFailed(path: file.path, object: object)) }
                let strings = pointers.map { $0.map { String(cString: $0) } ?? "" }
                _ = lance_h5_reclaim(memoryType, space, &pointers)
                return .success(strings)
            }
            let size = H5Tget_size(type)
            guard size > 0 else { return .failure(.readFailed(path: file.path, object: object)) }
            H5Tset_size(memoryType, size)
            var bytes = [UInt8](repeating: 0, count: count * size)
            guard H5Aread(id, memoryType, &bytes) >= 0 else { return .failure(.readFailed(path: file.path, object: object)) }
            return .success((0..<count).map { index in
                let slice = bytes[(index * size)..<((index + 1) * size)]
                return String(decoding: slice.prefix { $0 != 0 }, as: UTF8.self)
            })
        }
        return try result.get()
    }
}
