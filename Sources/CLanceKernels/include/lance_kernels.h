// Kernels of LanceNN written in C for runtime CPU-feature dispatch: compiled for the
// baseline target like the rest of the package, with AVX-512 versions selected at run time
// when the CPU has AVX-512 (x86-64 only). Callers check `lance_kernels_avx512()` first and use
// their portable Swift kernels otherwise. Not a GEMM: matrix products stay `cblas_sgemm`.
#ifndef LANCE_KERNELS_H
#define LANCE_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the AVX-512 kernels below may be called (x86-64 with AVX-512 F/BW/DQ/VL), else 0.
int lance_kernels_avx512(void);

/// One output plane of a depthwise 3x3 convolution with dilation 1 and equal strides 1 or 2:
///
///     y[oh, ow] = clamp(bias + sum_{i, j} w[i*3 + j] * x[oh*stride - padTop + i, ow*stride - padLeft + j])
///
/// with zero outside the input plane `x` (`height x width`); `y` is `outputHeight x outputWidth`.
/// With `clamp` non-zero the result is clamped to `[low, high]`.
void lance_depthwise3x3_avx512(const float *x, int height, int width, const float *w, float bias, float *y,
                               int outputHeight, int outputWidth, int stride, int padTop, int padLeft,
                               int clamp, float low, float high);

/// Output rows `firstRow ..< endRow` of `outputs` (at most 16) consecutive output channels of a
/// dense 3x3 convolution (dilation 1, equal strides 1 or 2) over `channels` (at most 12) input
/// planes, `planeStride` floats apart:
///
///     y[q, oh, ow] = clamp(bias[q] + sum_{c, i, j} w[q*channels*9 + c*9 + i*3 + j] * x[c, oh*stride - padTop + i, ow*stride - padLeft + j])
///
/// Output planes are `outputPlane` floats apart, rows `outputWidth`. `bias` may be NULL.
void lance_conv3x3_dense_avx512(const float *x, ptrdiff_t planeStride, int channels, int height, int width,
                                 const float *w, const float *bias, int outputs, float *y,
                                 ptrdiff_t outputPlane, int outputWidth, int firstRow, int endRow,
                                 int stride, int padTop, int padLeft, int clamp, float low, float high);

/// `rows` rows of `columns` floats, `ld` apart: y[r, k] = shift[r] (+ residual[r * residualLd + k]).
/// `shift` may be NULL (zero); `residual` may be NULL.
void lance_fill_rows_avx512(float *y, ptrdiff_t ld, int rows, int columns, const float *shift,
                            const float *residual, ptrdiff_t residualLd);

/// In place over `rows` rows of `columns` floats, `ld` apart: y = min(max(y + shift[r], low), high)
/// (`shift` may be NULL: zero).
void lance_shift_clamp_rows_avx512(float *y, ptrdiff_t ld, int rows, int columns, const float *shift,
                                   float low, float high);

/// Activation masks: bit k of `words` (64 per word, bit k % 64 of word k / 64) is set when
/// `lower < values[k]` and, unless `unboundedAbove`, `values[k] < upper` (false for NaN); bits at
/// and past `count` in the last word are clear.
void lance_interval_bits_avx512(const float *values, long count, float lower, float upper, int unboundedAbove,
                                unsigned long long *words);

/// In place: values[k] = values[k] * (bit k of `words` ? set : clear), for k < count.
void lance_scale_by_bits_avx512(float *values, long count, const unsigned long long *words, float clear, float set);

#ifdef __cplusplus
}
#endif

#endif
