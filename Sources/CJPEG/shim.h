#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>

/*
 * A JPEG decoder entry point that never exits the process.
 *
 * libjpeg's default error manager prints and calls exit() on any error. Here the error manager
 * records the message and longjmps back into lance_jpeg_decode (a C frame, so no Swift frame is
 * ever skipped), which frees everything and returns 0 with the message in image->message.
 * Warnings are recorded instead of printed; the one that means "the data ended early"
 * (JWRN_JPEG_EOF) is turned into an error, since libjpeg would otherwise fill the rest of the
 * image with grey.
 */

/// A decoded 8-bit image: `height` rows of `width` pixels of `channels` interleaved bytes (1 grey,
/// 3 RGB), allocated with malloc (free it with lance_image_free). On failure `pixels` is NULL and
/// `message` says why.
typedef struct {
    unsigned char *pixels;
    int width;
    int height;
    int channels;
    char message[JMSG_LENGTH_MAX + 64];
} lance_jpeg_image;

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int data_ended_early;
} lance_jpeg_error_manager;

static void lance_jpeg_error_exit(j_common_ptr info) {
    lance_jpeg_error_manager *manager = (lance_jpeg_error_manager *)info->err;
    (*info->err->format_message)(info, manager->message);
    longjmp(manager->jump, 1);
}

static void lance_jpeg_output_message(j_common_ptr info) {
    (void)info; /* never print */
}

static void lance_jpeg_emit_message(j_common_ptr info, int level) {
    lance_jpeg_error_manager *manager = (lance_jpeg_error_manager *)info->err;
    if (level < 0) {
        info->err->num_warnings++;
        if (info->err->msg_code == JWRN_JPEG_EOF && !manager->data_ended_early) {
            manager->data_ended_early = 1;
            (*info->err->format_message)(info, manager->message);
        }
    }
}

/// The largest width × height accepted (about 200 megapixels), so a damaged header cannot ask
/// for gigabytes.
#define LANCE_JPEG_MAX_PIXELS (200LL * 1000 * 1000)

/// Decodes a whole JPEG held in memory to 8-bit grey (1 channel) or RGB (3 channels).
/// Returns 1 on success, 0 on failure (image->message says why; nothing to free).
static inline int lance_jpeg_decode(const unsigned char *data, unsigned long size, lance_jpeg_image *image) {
    struct jpeg_decompress_struct info;
    lance_jpeg_error_manager manager;
    /* Written after setjmp and read after longjmp: must live in memory. */
    unsigned char *volatile pixels = NULL;
    volatile int created = 0;

    image->pixels = NULL;
    image->width = image->height = image->channels = 0;
    image->message[0] = 0;
    memset(&manager, 0, sizeof manager);
    info.err = jpeg_std_error(&manager.base);
    manager.base.error_exit = lance_jpeg_error_exit;
    manager.base.output_message = lance_jpeg_output_message;
    manager.base.emit_message = lance_jpeg_emit_message;

    if (setjmp(manager.jump)) {
        snprintf(image->message, sizeof image->message, "%s", manager.message);
        if (created) jpeg_destroy_decompress(&info);
        free(pixels);
        return 0;
    }
    jpeg_create_decompress(&info);
    created = 1;
    jpeg_mem_src(&info, data, size);
    jpeg_read_header(&info, TRUE);
    if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
        snprintf(image->message, sizeof image->message,
                 "CMYK JPEGs are not supported; convert the image to RGB");
        jpeg_destroy_decompress(&info);
        return 0;
    }
    info.out_color_space = info.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    if ((long long)info.image_width * (long long)info.image_height > LANCE_JPEG_MAX_PIXELS) {
        snprintf(image->message, sizeof image->message,
                 "the image is %ux%u pixels, more than the %lld accepted",
                 info.image_width, info.image_height, LANCE_JPEG_MAX_PIXELS);
        jpeg_destroy_decompress(&info);
        return 0;
    }
    jpeg_start_decompress(&info);
    size_t stride = (size_t)info.output_width * (size_t)info.output_components;
    pixels = (unsigned char *)malloc(stride * info.output_height);
    if (pixels == NULL) {
        snprintf(image->message, sizeof image->message, "out of memory for %ux%u pixels",
                 info.output_width, info.output_height);
        jpeg_destroy_decompress(&info);
        return 0;
    }
    while (info.output_scanline < info.output_height) {
        JSAMPROW row = pixels + stride * info.output_scanline;
        jpeg_read_scanlines(&info, &row, 1);
        if (manager.data_ended_early) break;
    }
    if (manager.data_ended_early) {
        snprintf(image->message, sizeof image->message, "the data ends early (%s)", manager.message);
        jpeg_destroy_decompress(&info);
        free(pixels);
        return 0;
    }
    jpeg_finish_decompress(&info);
    image->width = (int)info.output_width;
    image->height = (int)info.output_height;
    image->channels = info.output_components;
    image->pixels = pixels;
    jpeg_destroy_decompress(&info);
    return 1;
}

/// Frees pixels returned by lance_jpeg_decode.
static inline void lance_jpeg_free(unsigned char *pixels) { free(pixels); }
