import Foundation
import LanceLinalg

/// Makes OpenBLAS use the kernels this CPU supports when it did not recognise the CPU itself.
///
/// OpenBLAS picks its kernels when it is loaded, from the CPU model; the 0.3.21 release in Debian 12
/// does not know recent Intel and AMD models and falls back to its generic SSE3 kernel
/// (`Prescott`), which runs convolutions several times slower. When that happened, the
/// environment does not already choose a kernel (`OPENBLAS_CORETYPE`), and the CPU reports AVX-512
/// or AVX2+FMA, the tool starts itself again with `OPENBLAS_CORETYPE` set to `SkylakeX` or
/// `Haswell`. Setting `OPENBLAS_CORETYPE` yourself (to any value) turns this off.
public func relaunchWithSupportedBLASKernels() {
    #if os(Linux)
    guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
          BLASThreads.coreName == "Prescott",
          let cpuInfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flagsLine = cpuInfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
    else { return }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    let core: String
    if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512dq", "avx512vl"]) {
        core = "SkylakeX"
    } else if flags.isSuperset(of: ["avx2", "fma"]) {
        core = "Haswell"
    } else {
        return
    }
    setenv("OPENBLAS_CORETYPE", core, 1)
    let arguments = CommandLine.arguments
    var pointers = arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", &pointers)
    // execv returns only on failure: carry on with the generic kernel.
    #endif
}
