import CHDF5
import Foundation

extension HDF5File {
    /// Creates an empty HDF5 file at `path`, replacing a file that is already there. Wraps
    /// `H5Fcreate`. The file is complete on disk once this object and every group and dataset
    /// taken from it are gone (or after `flush()`).
    ///
    /// - Throws: `HDF5Error.cannotCreate` when the folder is missing or not writable.
    public static func create(path: String) throws(HDF5Error) -> HDF5File {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
            throw .cannotCreate(path: path, reason: "the folder \(folder) does not exist")
        }
        let id = withHDF5 { H5Fcreate(path, lance_h5f_acc_trunc(), lance_h5p_default(), lance_h5p_default()) }
        guard id >= 0 else { throw .cannotCreate(path: path, reason: "HDF5 cannot create it (no permission, or not a regular file)") }
        return HDF5File(path: path, handle: Handle(id, close: H5Fclose))
    }

    /// Writes everything buffered so far to disk. Wraps `H5Fflush`.
    public func flush() throws(HDF5Error) {
        let status = withHDF5 { H5Fflush(handle.id, H5F_SCOPE_GLOBAL) }
        guard status >= 0 else { throw .writeFailed(path: path, object: "/", reason: "flushing to disk failed") }
    }
}

extension HDF5Group {
    /// Creates a group at `path` (relative, may contain `/`; missing parent groups are created).
    /// Wraps `H5Gcreate2`.
    ///
    /// - Throws: `HDF5Error.writeFailed` when something already has that name or the file is
    ///   read-only.
    public func createGroup(_ path: String) throws(HDF5Error) -> HDF5Group {
        let full = childPath(path)
        let id: hid_t = withHDF5 {
            let links = lance_h5_intermediate_groups_properties()
            guard links >= 0 else { return -1 }
            defer { H5Pclose(links) }
            return H5Gcreate2(handle.id, path, links, lance_h5p_default(), lance_h5p_default())
        }
        guard id >= 0 else { throw .writeFailed(path: file.path, object: full, reason: "the group cannot be created (the name exists, or the file is read-only)") }
        return HDF5Group(file: file, handle: Handle(id, close: H5Gclose), name: full)
    }

    /// Creates a little-endian float32 dataset at `path` (relative, may contain `/`; missing
    /// parent groups are created) holding `values` in row-major order. An empty `shape` makes a
    /// scalar dataset. Wraps `H5Dcreate2` and `H5Dwrite`.
    ///
    /// - Throws: `HDF5Error.writeFailed` when `values` does not fill `shape`, the name exists, or
    ///   writing fails.
    @discardableResult
    public func createDataset(_ path: String, shape: [Int], values: [Float]) throws(HDF5Error) -> HDF5Dataset {
        let full = childPath(path)
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == values.count else {
            throw .writeFailed(path: file.path, object: full, reason: "\(values.count) values do not fill the shape \(shape)")
        }
        let result: Result<hid_t, HDF5Error> = withHDF5 {
            let dims = shape.map { hsize_t($0) }
            let space = shape.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(dims.count), dims, nil)
            guard space >= 0 else { return .failure(.writeFailed(path: file.path, object: full, reason: "cannot describe the shape \(shape)")) }
            defer { H5Sclose(space) }
            let links = lance_h5_intermediate_groups_properties()
            guard links >= 0 else { return .failure(.writeFailed(path: file.path, object: full, reason: "cannot create the parent groups")) }
            defer { H5Pclose(links) }
            let id = H5Dcreate2(handle.id, path, lance_h5t_ieee_f32le(), space, links, lance_h5p_default(), lance_h5p_default())
            guard id >= 0 else {
                return .failure(.writeFailed(path: file.path, object: full, reason: "the dataset cannot be created (the name exists, or the file is read-only)"))
            }
            let status = values.withUnsafeBytes {
                H5Dwrite(id, lance_h5t_native_float(), lance_h5s_all(), lance_h5s_all(), lance_h5p_default(), $0.baseAddress)
            }
            guard status >= 0 || values.isEmpty else {
                H5Dclose(id)
                return .failure(.writeFailed(path: file.path, object: full, reason: "writing the values failed (is the disk full?)"))
            }
            return .success(id)
        }
        return HDF5Dataset(file: file, handle: Handle(try result.get(), close: H5Dclose), name: full)
    }
}

extension HDF5Object {
    /// Attaches a scalar variable-length UTF-8 string attribute (what h5py writes for a Python
    /// `str`), replacing one of the same name. Wraps `H5Acreate2` and `H5Awrite`.
    ///
    /// - Throws: `HDF5Error.writeFailed` when HDF5 cannot write it.
    public func setStringAttribute(_ attribute: String, _ value: String) throws(HDF5Error) {
        try writeStrings(attribute, [value], scalar: true)
    }

    /// Attaches a one-dimensional attribute of variable-length UTF-8 strings (an empty list is an
    /// array of extent 0), replacing one of the same name. Wraps `H5Acreate2` and `H5Awrite`.
    ///
    /// - Throws: `HDF5Error.writeFailed` when HDF5 cannot write it.
    public func setStringArrayAttribute(_ attribute: String, _ values: [String]) throws(HDF5Error) {
        try writeStrings(attribute, values, scalar: false)
    }

    private func writeStrings(_ attribute: String, _ values: [String], scalar: Bool) throws(HDF5Error) {
        let object = "\(name)@\(attribute)"
        let failure = HDF5Error.writeFailed(path: file.path, object: object, reason: "HDF5 cannot write the attribute")
        let written: Bool = withHDF5 {
            if H5Aexists(objectID, attribute) > 0 { _ = H5Adelete(objectID, attribute) }
            let type = H5Tcopy(lance_h5t_c_s1())
            guard type >= 0 else { return false }
            defer { H5Tclose(type) }
            guard H5Tset_size(type, lance_h5t_variable()) >= 0, H5Tset_cset(type, H5T_CSET_UTF8) >= 0 else { return false }
            var dims = [hsize_t(values.count)]
            let space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dims, nil)
            guard space >= 0 else { return false }
            defer { H5Sclose(space) }
            let id = H5Acreate2(objectID, attribute, type, space, lance_h5p_default(), lance_h5p_default())
            guard id >= 0 else { return false }
            defer { H5Aclose(id) }
            // HDF5 copies the strings during the call; the C strings only need to live until then.
            let copies = values.map { strdup($0) }
            defer { copies.forEach { free($0) } }
            var pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
            if pointers.isEmpty { return true }
            return H5Awrite(id, type, &pointers) >= 0
        }
        guard written else { throw failure }
    }
}
