#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <png.h>

/*
 * A PNG decoder entry point that never aborts or prints.
 *
 * libpng reports errors by calling the error function and then longjmp-ing to png_jmpbuf; with no
 * setjmp in place it aborts. Here the error and warning functions record the message, and the
 * setjmp lives in lance_png_decode (a C frame, so no Swift frame is ever skipped), which frees
 * everything and returns 0 with the message in image->message.
 *
 * Output is 8-bit grey (1 channel) or RGB (3 channels), the way Pillow's convert("L"/"RGB")
 * sees them: palettes are expanded, 1/2/4-bit grey is scaled to 8 bits, 16-bit samples keep
 * their high byte, and alpha (an alpha channel, or a palette's tRNS transparency) is dropped, not
 * composited.
 */

/// A decoded 8-bit image: `height` rows of `width` pixels of `channels` interleaved bytes, allocated
/// with malloc (free it with lance_png_free). On failure `pixels` is NULL and `message` says why.
typedef struct {
    unsigned char *pixels;
    int width;
    int height;
    int channels;
    char message[256];
} lance_png_image;

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t offset;
    char message[200];
} lance_png_reader;

static void lance_png_read_data(png_structp png, png_bytep out, png_size_t length) {
    lance_png_reader *reader = (lance_png_reader *)png_get_io_ptr(png);
    if (length > reader->size - reader->offset) {
        png_error(png, "the data ends early (truncated file)");
    }
    memcpy(out, reader->data + reader->offset, length);
    reader->offset += length;
}

static void lance_png_error(png_structp png, png_const_charp message) {
    lance_png_reader *reader = (lance_png_reader *)png_get_error_ptr(png);
    snprintf(reader->message, sizeof reader->message, "%s", message);
    png_longjmp(png, 1);
}

static void lance_png_warning(png_structp png, png_const_charp message) {
    (void)png; (void)message; /* never print */
}

/// The largest width × height accepted (about 200 megapixels).
#define LANCE_PNG_MAX_PIXELS (200LL * 1000 * 1000)

/// Decodes a whole PNG held in memory. Returns 1 on success, 0 on failure (image->message says
/// why; nothing to free).
static inline int lance_png_decode(const unsigned char *data, size_t size, lance_png_image *image) {
    lance_png_reader reader;
    png_structp png;
    png_infop info;
    /* Written after setjmp and read after longjmp: must live in memory. */
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;

    image->pixels = NULL;
    image->width = image->height = image->channels = 0;
    image->message[0] = 0;
    memset(&reader, 0, sizeof reader);
    reader.data = data;
    reader.size = size;

    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        snprintf(image->message, sizeof image->message, "missing the PNG signature");
        return 0;
    }
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, lance_png_error, lance_png_warning);
    if (png == NULL) {
        snprintf(image->message, sizeof image->message, "libpng could not start");
        return 0;
    }
    info = png_create_info_struct(png);
    if (info == NULL) {
        snprintf(image->message, sizeof image->message, "libpng could not allocate its info structure");
        png_destroy_read_struct(&png, NULL, NULL);
        return 0;
    }
    png_set_read_fn(png, &reader, lance_png_read_data);
    /* png and info are not changed below this point, so they are intact after a longjmp. */
    if (setjmp(png_jmpbuf(png))) {
        snprintf(image->message, sizeof image->message, "%s", reader.message);
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        free(pixels);
        return 0;
    }
    png_set_user_limits(png, 1000000, 1000000);
    png_read_info(png, info);

    png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    int color_type = png_get_color_type(png, info), bit_depth = png_get_bit_depth(png, info);
    if ((long long)width * (long long)height > LANCE_PNG_MAX_PIXELS) {
        png_error(png, "the image has more than 200 megapixels");
    }
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bit_depth == 16) png_set_strip_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    /* 1 grey, 2 grey + alpha, 3 RGB, 4 RGB + alpha (an alpha channel, or a palette's tRNS
       transparency expanded to alpha); the alpha is dropped below. */
    int channels = png_get_channels(png, info);
    size_t stride = png_get_rowbytes(png, info);
    if (png_get_bit_depth(png, info) != 8 || channels < 1 || channels > 4 ||
        stride != (size_t)width * (size_t)channels) {
        png_error(png, "unexpected pixel layout after conversion to 8 bits per sample");
    }
    pixels = (unsigned char *)malloc(stride * height);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * height);
    if (pixels == NULL || rows == NULL) png_error(png, "out of memory for the pixels");
    for (png_uint_32 row = 0; row < height; row++) rows[row] = pixels + stride * row;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    if (channels == 2 || channels == 4) {
        /* Drop the alpha sample of every pixel, in place (the write position never passes the read one). */
        int kept = channels - 1;
        size_t count = (size_t)width * (size_t)height;
        for (size_t pixel = 0; pixel < count; pixel++) {
            for (int channel = 0; channel < kept; channel++) {
                pixels[pixel * kept + channel] = pixels[pixel * channels + channel];
            }
        }
        channels = kept;
    }

    image->width = (int)width;
    image->height = (int)height;
    image->channels = channels;
    image->pixels = pixels;
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return 1;
}

/// Frees pixels returned by lance_png_decode.
static inline void lance_png_free(unsigned char *pixels) { free(pixels); }
