import CHDF5
import CLAPACKE
import CONNXProto
import COpenBLAS
import Testing

/// Proves that each system C library links and answers (the only tests that touch C directly).
@Suite("C libraries")
struct CShimTests {
    @Test("OpenBLAS sgemm multiplies 2x2 matrices")
    func sgemm() {
        let a: [Float] = [1, 2, 3, 4], b: [Float] = [5, 6, 7, 8]
        var c = [Float](repeating: 0, count: 4)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1, a, 2, b, 2, 0, &c, 2)
        #expect(c == [19, 22, 43, 50])
    }

    @Test("LAPACKE sgesdd returns singular values in descending order")
    func sgesdd() {
        var matrix: [Float] = [3, 0, 0, 4]
        var singular = [Float](repeating: 0, count: 2)
        var u = [Float](repeating: 0, count: 4), vt = [Float](repeating: 0, count: 4)
        let info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "S")), 2, 2, &matrix, 2, &singular, &u, 2, &vt, 2)
        #expect(info == 0)
        #expect(singular == [4, 3])
    }

    @Test("HDF5 reports version 1.10 or newer")
    func hdf5Version() {
        var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
        #expect(H5get_libversion(&major, &minor, &release) >= 0)
        #expect(major > 1 || (major == 1 && minor >= 10))
    }

    @Test("protobuf-c packs and unpacks an ONNX OperatorSetIdProto")
    func protobufRoundTrip() {
        var message = Onnx__OperatorSetIdProto()
        onnx__operator_set_id_proto__init(&message)
        message.has_version = 1
        message.version = 13
        let size = onnx__operator_set_id_proto__get_packed_size(&message)
        var buffer = [UInt8](repeating: 0, count: size)
        #expect(onnx__operator_set_id_proto__pack(&message, &buffer) == size)
        let decoded = buffer.withUnsafeBufferPointer { onnx__operator_set_id_proto__unpack(nil, size, $0.baseAddress) }
        #expect(decoded?.pointee.version == 13)
        onnx__operator_set_id_proto__free_unpacked(decoded, nil)
    }
}
