#include <hdf5.h>

// HDF5's H5F_ACC_*, H5T_NATIVE_* and H5P_DEFAULT are macros that Swift cannot import (they call
// H5open() or are bare literals); these getters expose them with their real types.
static inline hid_t lance_h5p_default(void) { return (hid_t)H5P_DEFAULT; }
static inline unsigned lance_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline hid_t lance_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }

/// Turns off HDF5's automatic error printing to stderr; errors are reported as typed Swift errors.
static inline void lance_h5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
