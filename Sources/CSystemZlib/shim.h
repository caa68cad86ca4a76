#include <zlib.h>

/// inflateInit2 is a macro Swift cannot call: starts `stream` for gzip data only (windowBits
/// 16 + MAX_WBITS). Returns Z_OK or a zlib error code.
static inline int lance_inflate_init_gzip(z_stream *stream) {
    return inflateInit2(stream, 16 + MAX_WBITS);
}
