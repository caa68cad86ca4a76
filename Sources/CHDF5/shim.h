#include <hdf5.h>
#include <string.h>

// HDF5's H5F_ACC_*, H5T_NATIVE_*, H5T_C_S1 and H5P_DEFAULT are macros that Swift cannot import
// (they call H5open() or are bare literals); these getters expose them with their real types.
static inline hid_t lance_h5p_default(void) { return (hid_t)H5P_DEFAULT; }
static inline hid_t lance_h5s_all(void) { return (hid_t)H5S_ALL; }
static inline unsigned lance_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned lance_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline hid_t lance_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t lance_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t lance_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t lance_h5t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline size_t lance_h5t_variable(void) { return H5T_VARIABLE; }

/// A link-creation property list that creates missing intermediate groups (close with H5Pclose).
static inline hid_t lance_h5_intermediate_groups_properties(void) {
    hid_t properties = H5Pcreate(H5P_LINK_CREATE);
    if (properties >= 0 && H5Pset_create_intermediate_group(properties, 1) < 0) {
        H5Pclose(properties);
        return -1;
    }
    return properties;
}

/// Turns off HDF5's automatic error printing to stderr; errors are reported as typed Swift errors.
static inline void lance_h5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef void (*lance_h5_link_visitor)(const char *name, void *context);

static inline herr_t lance_h5_link_callback(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group; (void)info;
    void **pair = (void **)data;
    ((lance_h5_link_visitor)pair[0])(name, pair[1]);
    return 0;
}

/// Calls `visit(name, context)` for every link in `group`, in name order. Version-neutral over
/// H5Literate (1.10) and H5Literate2 (1.12 and later).
static inline herr_t lance_h5_list_links(hid_t group, lance_h5_link_visitor visit, void *context) {
    void *pair[2] = { (void *)visit, context };
    hsize_t index = 0;
#if H5_VERSION_GE(1, 12, 0)
    return H5Literate2(group, H5_INDEX_NAME, H5_ITER_INC, &index,
                       (H5L_iterate2_t)lance_h5_link_callback, pair);
#else
    return H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &index, lance_h5_link_callback, pair);
#endif
}

/// Frees the strings HDF5 allocated when reading variable-length string data.
static inline herr_t lance_h5_reclaim(hid_t type, hid_t space, void *buffer) {
#if H5_VERSION_GE(1, 12, 0)
    return H5Treclaim(type, space, H5P_DEFAULT, buffer);
#else
    return H5Dvlen_reclaim(type, space, H5P_DEFAULT, buffer);
#endif
}

/// Whether `path` (relative to `location`) names an existing object; every intermediate link is
/// checked, so a missing parent gives 0 instead of an error.
static inline int lance_h5_exists(hid_t location, const char *path) {
    char buffer[4096];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof buffer) return 0;
    memcpy(buffer, path, length + 1);
    for (size_t i = 1; i <= length; i++) {
        if (buffer[i] == '/' || buffer[i] == '\0') {
            char saved = buffer[i];
            buffer[i] = '\0';
            if (H5Lexists(location, buffer, H5P_DEFAULT) <= 0) return 0;
            buffer[i] = saved;
        }
    }
    return 1;
}
