// See include/lance_kernels.h.
#include "lance_kernels.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define LANCE_X86 1
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma,avx2")))
#endif

#ifdef LANCE_X86

int lance_kernels_avx512(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    }
    return cached;
}

/// Lanes l of a 16-float load at column `b` whose column b + l lies in [0, width).
AVX512 static inline __mmask16 columns_mask(long b, long width) {
    long lo = b < 0 ? -b : 0;
    long hi = width - b;
    if (hi > 16) hi = 16;
    if (lo >= 16 || hi <= lo) return 0;
    unsigned upper = (1u << hi) - 1u;
    unsigned lower = (1u << lo) - 1u;
    return (__mmask16)(upper & ~lower);
}

/// Lane masks of the loads of one 16-column block: for stride 1 one per tap column j (loads at
/// b + j), for stride 2 two per tap column (loads at b + j and b + j + 16).
typedef struct { __mmask16 first[3], second[3]; } BlockMasks;

AVX512 static inline BlockMasks block_masks(long b, long width) {
    BlockMasks m;
    for (int j = 0; j < 3; j++) {
        m.first[j] = columns_mask(b + j, width);
        m.second[j] = columns_mask(b + j + 16, width);
    }
    return m;
}

/// x[b + j + stride*t] for t in 0..<16 from one input row, zero outside the row.
#define LANCE_TAP(stride, row, b, j, masks, evens)                                                    \
    ((stride) == 1 ? _mm512_maskz_loadu_ps((masks).first[j], (row) + (b) + (j))                       \
                   : _mm512_permutex2var_ps(_mm512_maskz_loadu_ps((masks).first[j], (row) + (b) + (j)), \
                                            (evens),                                                  \
                                            _mm512_maskz_loadu_ps((masks).second[j], (row) + (b) + (j) + 16)))

/// Depthwise (one input plane): four output rows oh0 ..< oh0 + 4 (rows past the plane computed
/// but not stored), one block of 16 columns at ow0.
#define LANCE_ACC(S, q, acc)                                                                             \
    {                                                                                                  \
        const int i = r - (q) * S;                                                                     \
        if (i >= 0 && i < 3) {                                                                         \
            acc = _mm512_fmadd_ps(v0, _mm512_set1_ps(k[i * 3 + 0]), acc);                              \
            acc = _mm512_fmadd_ps(v1, _mm512_set1_ps(k[i * 3 + 1]), acc);                              \
            acc = _mm512_fmadd_ps(v2, _mm512_set1_ps(k[i * 3 + 2]), acc);                              \
        }                                                                                              \
    }
#define LANCE_STORE(q, acc)                                                                            \
    if ((q) < rows) {                                                                                  \
        __m512 value = acc;                                                                            \
        if (clamp) value = _mm512_min_ps(_mm512_max_ps(value, lowVector), highVector);                 \
        _mm512_mask_storeu_ps(y + (ptrdiff_t)(oh0 + (q)) * outputWidth + ow0, store, value);           \
    }

/// Depthwise (one input plane): four output rows oh0 ..< oh0 + 4 (rows past the plane computed
/// but not stored), one block of 16 columns at ow0.
#define LANCE_DEPTHWISE_BLOCK(S)                                                                       \
AVX512 static inline __attribute__((always_inline)) void depthwise_block_s##S(const float *x,          \
        int height, int width, const float *k,                                                         \
        float bias, float *y, int outputHeight, int outputWidth, int padTop, int padLeft, int clamp,   \
        __m512 lowVector, __m512 highVector, int oh0, int ow0, __m512i evens) {                        \
    __m512 acc0 = _mm512_set1_ps(bias), acc1 = acc0, acc2 = acc0, acc3 = acc0;                         \
    const long b = (long)ow0 * S - padLeft;                                                            \
    const BlockMasks masks = block_masks(b, width);                                                    \
    _Pragma("clang loop unroll(full)")                                                                 \
    for (int r = 0; r < 3 * S + 3; r++) {                                                              \
        const int ih = oh0 * S - padTop + r;                                                           \
        if (ih < 0 || ih >= height) continue;                                                          \
        const float *row = x + (ptrdiff_t)ih * width;                                                  \
        const __m512 v0 = LANCE_TAP(S, row, b, 0, masks, evens);                                       \
        const __m512 v1 = LANCE_TAP(S, row, b, 1, masks, evens);                                       \
        const __m512 v2 = LANCE_TAP(S, row, b, 2, masks, evens);                                       \
        LANCE_ACC(S, 0, acc0) LANCE_ACC(S, 1, acc1) LANCE_ACC(S, 2, acc2) LANCE_ACC(S, 3, acc3)                    \
    }                                                                                                  \
    const int lanes = outputWidth - ow0 < 16 ? outputWidth - ow0 : 16;                                 \
    const __mmask16 store = (__mmask16)((1u << lanes) - 1u);                                           \
    const int rows = outputHeight - oh0 < 4 ? outputHeight - oh0 : 4;                                  \
    LANCE_STORE(0, acc0) LANCE_STORE(1, acc1) LANCE_STORE(2, acc2) LANCE_STORE(3, acc3)                \
}                                                                                                      \
AVX512 static void depthwise_s##S(const float *x, int height, int width, const float *k, float bias,    \
        float *y, int outputHeight, int outputWidth, int padTop, int padLeft, int clamp, float low,     \
        float high) {                                                                                  \
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);  \
    const __m512 lowVector = _mm512_set1_ps(low), highVector = _mm512_set1_ps(high);                   \
    for (int oh0 = 0; oh0 < outputHeight; oh0 += 4)                                                    \
        for (int ow0 = 0; ow0 < outputWidth; ow0 += 16)                                                \
            depthwise_block_s##S(x, height, width, k, bias, y, outputHeight, outputWidth, padTop,      \
                                 padLeft, clamp, lowVector, highVector, oh0, ow0, evens);              \
}

LANCE_DEPTHWISE_BLOCK(1)
LANCE_DEPTHWISE_BLOCK(2)

AVX512 void lance_depthwise3x3_avx512(const float *x, int height, int width, const float *w, float bias, float *y,
                                      int outputHeight, int outputWidth, int stride, int padTop, int padLeft,
                                      int clamp, float low, float high) {
    if (stride == 1) {
        depthwise_s1(x, height, width, w, bias, y, outputHeight, outputWidth, padTop, padLeft, clamp, low, high);
    } else {
        depthwise_s2(x, height, width, w, bias, y, outputHeight, outputWidth, padTop, padLeft, clamp, low, high);
    }
}

/// Dense 3x3 over `channels` input planes: sixteen output channels (those past `outputs` computed
/// but not stored), one output row, one block of 16 columns; every tap vector is loaded once for
/// all sixteen.
#define LANCE_R16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define LANCE_DECL(q) __m512 a##q = _mm512_set1_ps(q < outputs && bias ? bias[q] : 0.0f);
#define LANCE_FMA(q) a##q = _mm512_fmadd_ps(v, _mm512_set1_ps(k[q * taps + j]), a##q);
#define LANCE_PUT(q)                                                                                   \
    if (q < outputs) {                                                                                 \
        __m512 value = a##q;                                                                           \
        if (clamp) value = _mm512_min_ps(_mm512_max_ps(value, lowVector), highVector);                 \
        _mm512_mask_storeu_ps(y + q * outputPlane + (ptrdiff_t)oh * outputWidth + ow0, store, value);  \
    }
#define LANCE_DENSE_ROWS(S)                                                                            \
AVX512 static void dense_s##S(const float *x, ptrdiff_t planeStride, int channels, int height,         \
        int width, const float *w, const float *bias, int outputs, float *y, ptrdiff_t outputPlane,     \
        int outputWidth, int firstRow, int endRow, int padTop, int padLeft, int clamp, float low,       \
        float high) {                                                                                  \
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);  \
    const __m512 lowVector = _mm512_set1_ps(low), highVector = _mm512_set1_ps(high);                   \
    const int taps = channels * 9;                                                                     \
    for (int oh = firstRow; oh < endRow; oh++) {                                                       \
        for (int ow0 = 0; ow0 < outputWidth; ow0 += 16) {                                              \
            LANCE_R16(LANCE_DECL)                                                                      \
            const long b = (long)ow0 * S - padLeft;                                                    \
            const BlockMasks masks = block_masks(b, width);                                            \
            for (int c = 0; c < channels; c++) {                                                       \
                for (int i = 0; i < 3; i++) {                                                          \
                    const int ih = oh * S - padTop + i;                                                \
                    if (ih < 0 || ih >= height) continue;                                              \
                    const float *row = x + c * planeStride + (ptrdiff_t)ih * width;                    \
                    const float *k = w + c * 9 + i * 3;                                                \
                    { const int j = 0; const __m512 v = LANCE_TAP(S, row, b, 0, masks, evens);         \
                      LANCE_R16(LANCE_FMA) }                                                           \
                    { const int j = 1; const __m512 v = LANCE_TAP(S, row, b, 1, masks, evens);         \
                      LANCE_R16(LANCE_FMA) }                                                           \
                    { const int j = 2; const __m512 v = LANCE_TAP(S, row, b, 2, masks, evens);         \
                      LANCE_R16(LANCE_FMA) }                                                           \
                }                                                                                      \
            }                                                                                          \
            const int lanes = outputWidth - ow0 < 16 ? outputWidth - ow0 : 16;                         \
            const __mmask16 store = (__mmask16)((1u << lanes) - 1u);                                   \
            LANCE_R16(LANCE_PUT)                                                                       \
        }                                                                                              \
    }                                                                                                  \
}

LANCE_DENSE_ROWS(1)
LANCE_DENSE_ROWS(2)

AVX512 void lance_conv3x3_dense_avx512(const float *x, ptrdiff_t planeStride, int channels, int height, int width,
                                        const float *w, const float *bias, int outputs, float *y,
                                        ptrdiff_t outputPlane, int outputWidth, int firstRow, int endRow,
                                        int stride, int padTop, int padLeft, int clamp, float low, float high) {
    // Weights of the missing output channels (outputs < 16) are never read past the tensor:
    // clamp the channel index instead.
    if (outputs < 16) {
        // Rare (output channels not a multiple of 16): one channel at a time through the same code
        // with the other accumulators reading channel 0's weights.
        for (int q = 0; q < outputs; q++) {
            float weights[16 * 27 * 4];
            const int taps = channels * 9;
            if (taps > 27 * 4) __builtin_trap();
            for (int p = 0; p < 16; p++)
                for (int t = 0; t < taps; t++) weights[p * taps + t] = w[q * taps + t];
            if (stride == 1)
                dense_s1(x, planeStride, channels, height, width, weights, bias ? bias + q : NULL, 1, y + q * outputPlane,
                         outputPlane, outputWidth, firstRow, endRow, padTop, padLeft, clamp, low, high);
            else
                dense_s2(x, planeStride, channels, height, width, weights, bias ? bias + q : NULL, 1, y + q * outputPlane,
                         outputPlane, outputWidth, firstRow, endRow, padTop, padLeft, clamp, low, high);
        }
        return;
    }
    if (stride == 1)
        dense_s1(x, planeStride, channels, height, width, w, bias, 16, y, outputPlane, outputWidth, firstRow, endRow,
                 padTop, padLeft, clamp, low, high);
    else
        dense_s2(x, planeStride, channels, height, width, w, bias, 16, y, outputPlane, outputWidth, firstRow, endRow,
                 padTop, padLeft, clamp, low, high);
}

AVX512 void lance_fill_rows_avx512(float *y, ptrdiff_t ld, int rows, int columns, const float *shift,
                                   const float *residual, ptrdiff_t residualLd) {
    for (int r = 0; r < rows; r++) {
        float *out = y + r * ld;
        const __m512 s = _mm512_set1_ps(shift ? shift[r] : 0.0f);
        int k = 0;
        if (residual) {
            const float *in = residual + r * residualLd;
            for (; k + 16 <= columns; k += 16) _mm512_storeu_ps(out + k, _mm512_add_ps(_mm512_loadu_ps(in + k), s));
            if (k < columns) {
                const __mmask16 m = (__mmask16)((1u << (columns - k)) - 1u);
                _mm512_mask_storeu_ps(out + k, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, in + k), s));
            }
        } else {
            for (; k + 16 <= columns; k += 16) _mm512_storeu_ps(out + k, s);
            if (k < columns) _mm512_mask_storeu_ps(out + k, (__mmask16)((1u << (columns - k)) - 1u), s);
        }
    }
}

AVX512 void lance_shift_clamp_rows_avx512(float *y, ptrdiff_t ld, int rows, int columns, const float *shift,
                                          float low, float high) {
    const __m512 lowVector = _mm512_set1_ps(low), highVector = _mm512_set1_ps(high);
    for (int r = 0; r < rows; r++) {
        float *out = y + r * ld;
        const __m512 s = _mm512_set1_ps(shift ? shift[r] : 0.0f);
        int k = 0;
        for (; k + 16 <= columns; k += 16) {
            const __m512 v = _mm512_add_ps(_mm512_loadu_ps(out + k), s);
            _mm512_storeu_ps(out + k, _mm512_min_ps(_mm512_max_ps(v, lowVector), highVector));
        }
        if (k < columns) {
            const __mmask16 m = (__mmask16)((1u << (columns - k)) - 1u);
            const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, out + k), s);
            _mm512_mask_storeu_ps(out + k, m, _mm512_min_ps(_mm512_max_ps(v, lowVector), highVector));
        }
    }
}

AVX512 void lance_interval_bits_avx512(const float *values, long count, float lower, float upper, int unboundedAbove,
                                       unsigned long long *words) {
    const __m512 lowerVector = _mm512_set1_ps(lower), upperVector = _mm512_set1_ps(upper);
    long words64 = (count + 63) / 64;
    for (long word = 0; word < words64; word++) {
        unsigned long long bits = 0;
        for (int part = 0; part < 4; part++) {
            long start = word * 64 + part * 16;
            if (start >= count) break;
            long left = count - start;
            __mmask16 loaded = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
            __m512 v = _mm512_maskz_loadu_ps(loaded, values + start);
            __mmask16 inside = _mm512_mask_cmp_ps_mask(loaded, v, lowerVector, _CMP_GT_OQ);
            if (!unboundedAbove) inside = _mm512_mask_cmp_ps_mask(inside, v, upperVector, _CMP_LT_OQ);
            bits |= (unsigned long long)inside << (part * 16);
        }
        words[word] = bits;
    }
}

AVX512 void lance_scale_by_bits_avx512(float *values, long count, const unsigned long long *words, float clear, float set) {
    const __m512 clearVector = _mm512_set1_ps(clear), setVector = _mm512_set1_ps(set);
    for (long start = 0; start < count; start += 16) {
        long left = count - start;
        __mmask16 loaded = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        __mmask16 bits = (__mmask16)(words[start / 64] >> (start % 64));
        __m512 factor = _mm512_mask_blend_ps(bits, clearVector, setVector);
        __m512 v = _mm512_maskz_loadu_ps(loaded, values + start);
        _mm512_mask_storeu_ps(values + start, loaded, _mm512_mul_ps(v, factor));
    }
}

#else

int lance_kernels_avx512(void) { return 0; }

// Never called when lance_kernels_avx512() is 0.
void lance_depthwise3x3_avx512(const float *x, int height, int width, const float *w, float bias, float *y,
                               int outputHeight, int outputWidth, int stride, int padTop, int padLeft,
                               int clamp, float low, float high) {
    (void)x; (void)height; (void)width; (void)w; (void)bias; (void)y; (void)outputHeight; (void)outputWidth;
    (void)stride; (void)padTop; (void)padLeft; (void)clamp; (void)low; (void)high;
    __builtin_trap();
}

void lance_conv3x3_dense_avx512(const float *x, ptrdiff_t planeStride, int channels, int height, int width,
                                 const float *w, const float *bias, int outputs, float *y,
                                 ptrdiff_t outputPlane, int outputWidth, int firstRow, int endRow,
                                 int stride, int padTop, int padLeft, int clamp, float low, float high) {
    (void)x; (void)planeStride; (void)channels; (void)height; (void)width; (void)w; (void)bias; (void)outputs;
    (void)y; (void)outputPlane; (void)outputWidth; (void)firstRow; (void)endRow; (void)stride; (void)padTop;
    (void)padLeft; (void)clamp; (void)low; (void)high;
    __builtin_trap();
}

void lance_fill_rows_avx512(float *y, ptrdiff_t ld, int rows, int columns, const float *shift,
                            const float *residual, ptrdiff_t residualLd) {
    (void)y; (void)ld; (void)rows; (void)columns; (void)shift; (void)residual; (void)residualLd;
    __builtin_trap();
}

void lance_shift_clamp_rows_avx512(float *y, ptrdiff_t ld, int rows, int columns, const float *shift,
                                   float low, float high) {
    (void)y; (void)ld; (void)rows; (void)columns; (void)shift; (void)low; (void)high;
    __builtin_trap();
}

void lance_interval_bits_avx512(const float *values, long count, float lower, float upper, int unboundedAbove,
                                unsigned long long *words) {
    (void)values; (void)count; (void)lower; (void)upper; (void)unboundedAbove; (void)words;
    __builtin_trap();
}

void lance_scale_by_bits_avx512(float *values, long count, const unsigned long long *words, float clear, float set) {
    (void)values; (void)count; (void)words; (void)clear; (void)set;
    __builtin_trap();
}

#endif
