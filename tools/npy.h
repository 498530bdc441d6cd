/*
 * npy.h - minimal, dependency-free reader/writer of NumPy .npy files.
 *
 * Reading: format versions 1.0, 2.0 and 3.0; little-endian '<f4', '<f8', '<f2',
 * '<i4', '<i8'; C order only; rank 0 to 8. The data is returned in host
 * byte order in the array's own dtype; the npy_to_* helpers convert.
 * Writing: float32 only, version 1.0 header padded to a multiple of 64 bytes,
 * written atomically (to "path.tmp", then renamed over path).
 *
 * Error messages are one line, without a trailing newline, and do not repeat
 * the path (callers prefix it).
 */
#ifndef VKLA_NPY_H
#define VKLA_NPY_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NPY_MAX_NDIM 8

typedef enum { NPY_F32, NPY_F64, NPY_F16, NPY_I32, NPY_I64 } npy_dtype;

typedef struct npy_array {
  npy_dtype dtype;
  int ndim;                       /* 0 (scalar) to NPY_MAX_NDIM */
  int64_t shape[NPY_MAX_NDIM];    /* unused entries are 0 */
  int64_t count;                  /* product of shape (1 for 0-d) */
  void *data;                     /* count elements of dtype, host byte order; never NULL after success */
} npy_array;

/* Read a whole .npy file from a path, from the rest of an open stream (which
 * stays open), or from the len bytes at buf (copied; buf may be NULL when len
 * is 0). All three validate the same way (npy_read and npy_read_stream parse
 * what they read with the same code as npy_parse): the whole input must be one
 * array, nothing may follow its data. 0, or -1 with a one-line message in err
 * naming the problem; on failure out->data is NULL and nothing needs freeing. */
int npy_read(const char *path, npy_array *out, char *err, size_t errlen);
int npy_read_stream(FILE *f, npy_array *out, char *err, size_t errlen);
int npy_parse(const void *buf, size_t len, npy_array *out, char *err, size_t errlen);
void npy_free(npy_array *a);

/* Convert any numeric array to a newly malloc'ed double / float / int64 array
 * (never NULL on success, even for count 0); 0 or -1. npy_to_i64 fails on
 * floating values that are not finite integers representable in int64. */
int npy_to_f64(const npy_array *a, double **out);
int npy_to_f32(const npy_array *a, float **out);
int npy_to_i64(const npy_array *a, int64_t **out);

/* Bytes per element of a dtype. */
size_t npy_dtype_size(npy_dtype t);

/* Write a float32 array; 0 or -1 with err. shape may be NULL when ndim == 0. */
int npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape,
                  char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* VKLA_NPY_H */
