#if os(Linux)
/// glibc's `int mallopt(int param, int value)` (`<malloc.h>`, which the Glibc module leaves out).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
/// `M_MMAP_THRESHOLD` of `<malloc.h>`.
private let mmapThresholdParameter: Int32 = -3
#endif

/// Blocks of at least this many bytes are mapped for each allocation and unmapped when freed.
let mappedBlockBytes = 2 << 20

/// Makes glibc map every block of `mappedBlockBytes` or more afresh and unmap it when freed, for a
/// training run that executes the frozen part on every step.
///
/// By default glibc raises this threshold as large blocks are freed (up to 32 MiB), so that a
/// step's batch-sized tensors (the frozen features, a late layer's output and output gradient:
/// 6–8 MiB each for MobileNetV2 at 224×224, batch 32) come from the heaps and stay resident when
/// freed. The process's peak then depends on how those heaps fragment (between the threads'
/// arenas, from step to step) and varied by 8 MiB between identical LANCE runs, more than the
/// activation memory LANCE saves over full backpropagation. With the blocks mapped, the peak is
/// what a step holds; the page faults cost a few percent of a step that runs the frozen part.
/// `--cache-features` runs keep glibc's default: their cached steps are 7–8 times shorter, and the
/// same faults would cost a third of them.
func mapLargeBlocks() {
    #if os(Linux)
    _ = glibcMallopt(mmapThresholdParameter, Int32(mappedBlockBytes))
    #endif
}
