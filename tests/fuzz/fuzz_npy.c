/*
 * fuzz_npy.c - libFuzzer target over the .npy reader (tools/npy.c).
 *
 * Each input is one .npy file, read every way the reader can take it; all
 * must agree exactly:
 *  - npy_parse on the bytes in memory;
 *  - npy_read_stream on a seekable stream (what npy_read does with the file
 *    it opens) and on one that cannot seek and gives at most 61 bytes per read
 *    (a pipe); the latter once more failing half way, which must report a
 *    read error and allocate nothing;
 *  - npy_read on a path (an in-memory file), as vkla-run calls it, for one
 *    input size in 16 (opening a path costs several times the rest).
 * An accepted array then goes through the conversions vkla-run applies to its
 * inputs (npy_to_f32 for float inputs, npy_to_i64 for cu_seqlens) and
 * npy_to_f64, checked element by element against the raw data. Any
 * disagreement or broken invariant aborts (a crash for libFuzzer); every path
 * frees what it allocated (LeakSanitizer checks).
 *
 * Build: see tests/fuzz/CMakeLists.txt and docs/fuzzing.md.
 */
#define _GNU_SOURCE /* fopencookie, memfd_create */
#include "npy.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "fuzz_npy: check failed at line %d: %s\n", __LINE__, #cond);  \
      abort();                                                                        \
    }                                                                                 \
  } while (0)

/* An error message: non-empty, one line, NUL-terminated within the buffer. */
static void check_message(const char *err, size_t errlen)
{
  const size_t n = strnlen(err, errlen);
  CHECK(n > 0 && n < errlen);
  CHECK(strchr(err, '\n') == NULL);
}

static void check_array(const npy_array *a)
{
  CHECK(a->data != NULL);
  CHECK(a->ndim >= 0 && a->ndim <= NPY_MAX_NDIM);
  CHECK(npy_dtype_size(a->dtype) > 0);
  int64_t count = 1;
  for (int d = 0; d < NPY_MAX_NDIM; d++) {
    if (d < a->ndim) {
      CHECK(a->shape[d] >= 0);
      count *= a->shape[d];
    } else {
      CHECK(a->shape[d] == 0);
    }
  }
  CHECK(count == a->count);
}

/* Element i of the raw data as a double (what the conversions must give). */
static double raw_elem(const npy_array *a, size_t i)
{
  switch (a->dtype) {
  case NPY_F32: { float x; memcpy(&x, (const char *)a->data + 4 * i, 4); return x; }
  case NPY_F64: { double x; memcpy(&x, (const char *)a->data + 8 * i, 8); return x; }
  case NPY_I32: { int32_t x; memcpy(&x, (const char *)a->data + 4 * i, 4); return x; }
  case NPY_I64: { int64_t x; memcpy(&x, (const char *)a->data + 8 * i, 8); return (double)x; }
  case NPY_F16: {
    uint16_t h;
    memcpy(&h, (const char *)a->data + 2 * i, 2);
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m | 0x400, e - 25);
    return (h >> 15) ? -v : v;
  }
  }
  abort();
}

static int same_double(double x, double y)
{
  return (isnan(x) && isnan(y)) || x == y;
}

/* The conversions vkla-run uses (float inputs to float32, cu_seqlens to
 * int64), and npy_to_f64, each checked element by element. */
static void check_conversions(const npy_array *a)
{
  const size_t n = (size_t)a->count;
  double *f64 = NULL;
  float *f32 = NULL;
  int64_t *i64 = NULL;

  CHECK(npy_to_f64(a, &f64) == 0 && f64 != NULL);
  for (size_t i = 0; i < n; i++)
    CHECK(same_double(f64[i], raw_elem(a, i)));

  CHECK(npy_to_f32(a, &f32) == 0 && f32 != NULL);
  for (size_t i = 0; i < n; i++)
    CHECK(same_double(f32[i], (float)f64[i]));

  const int is_int = a->dtype == NPY_I32 || a->dtype == NPY_I64;
  int integral = 1;
  for (size_t i = 0; i < n && integral; i++)
    integral = f64[i] >= -9223372036854775808.0 && f64[i] < 9223372036854775808.0 &&
               f64[i] == floor(f64[i]);
  const int rc = npy_to_i64(a, &i64);
  if (is_int || integral) {
    CHECK(rc == 0 && i64 != NULL);
    for (size_t i = 0; i < n; i++) {
      if (a->dtype == NPY_I64)
        CHECK(memcmp(&i64[i], (const char *)a->data + 8 * i, 8) == 0);
      else
        CHECK((double)i64[i] == f64[i]);
    }
  } else {
    CHECK(rc == -1 && i64 == NULL);
  }

  free(f64);
  free(f32);
  free(i64);
}

/* A read-only stream over bytes that cannot seek and gives at most 61 bytes
 * per read (and optionally fails part way). */
typedef struct {
  const uint8_t *data;
  size_t size, pos;
  size_t fail_at; /* a read error once this many bytes were given (SIZE_MAX: never) */
} pipe_cookie;

static ssize_t pipe_read(void *c, char *buf, size_t n)
{
  pipe_cookie *p = c;
  if (p->pos >= p->fail_at)
    return -1;
  size_t k = p->size - p->pos;
  if (k > n)
    k = n;
  if (k > 61)
    k = 61;
  memcpy(buf, p->data + p->pos, k);
  p->pos += k;
  return (ssize_t)k;
}

/* An in-memory file holding the input, reached by path (/proc/self/fd/N). */
static const char *file_of(const uint8_t *data, size_t size)
{
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("fuzz_npy", 0);
    CHECK(fd >= 0);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  CHECK(ftruncate(fd, 0) == 0);
  CHECK(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size);
  return path;
}

/* b (read another way, with message err2) is the same result as a (err). */
static void check_same(int rc, const npy_array *a, const char *err, int rc2, npy_array *b,
                       const char *err2)
{
  CHECK(rc2 == rc);
  if (rc2 == 0) {
    CHECK(b->dtype == a->dtype && b->ndim == a->ndim && b->count == a->count);
    CHECK(memcmp(b->shape, a->shape, sizeof a->shape) == 0);
    CHECK(memcmp(b->data, a->data, (size_t)a->count * npy_dtype_size(a->dtype)) == 0);
    npy_free(b);
  } else {
    CHECK(b->data == NULL);
    CHECK(strcmp(err, err2) == 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char err[256], err2[256];
  npy_array a, b;

  /* in memory */
  memset(err, 0, sizeof err);
  const int rc = npy_parse(data, size, &a, err, sizeof err);
  if (rc == 0) {
    check_array(&a);
  } else {
    CHECK(rc == -1 && a.data == NULL);
    check_message(err, sizeof err);
  }

  /* from a seekable stream: what npy_read does with the file it opens */
  FILE *f = size ? fmemopen((void *)data, size, "rb") : NULL;
  if (f) {
    memset(err2, 0, sizeof err2);
    const int rc2 = npy_read_stream(f, &b, err2, sizeof err2);
    fclose(f);
    check_same(rc, &a, err, rc2, &b, err2);
  }

  /* from a stream that cannot seek, in short reads (a pipe) */
  pipe_cookie pc = {data, size, 0, SIZE_MAX};
  f = fopencookie(&pc, "rb", (cookie_io_functions_t){.read = pipe_read});
  CHECK(f != NULL);
  memset(err2, 0, sizeof err2);
  const int rc3 = npy_read_stream(f, &b, err2, sizeof err2);
  fclose(f);
  check_same(rc, &a, err, rc3, &b, err2);

  /* the same stream failing half way: a read error, nothing allocated */
  pipe_cookie pf = {data, size, 0, size / 2};
  f = fopencookie(&pf, "rb", (cookie_io_functions_t){.read = pipe_read});
  CHECK(f != NULL);
  memset(err2, 0, sizeof err2);
  CHECK(npy_read_stream(f, &b, err2, sizeof err2) == -1 && b.data == NULL);
  fclose(f);
  CHECK(strcmp(err2, "read error") == 0);

  /* by path, as vkla-run calls it (one input size in 16) */
  if (size % 16 == 0) {
    memset(err2, 0, sizeof err2);
    const int rc4 = npy_read(file_of(data, size), &b, err2, sizeof err2);
    check_same(rc, &a, err, rc4, &b, err2);
  }

  if (rc == 0) {
    check_conversions(&a);
    npy_free(&a);
    CHECK(a.data == NULL);
  }
  return 0;
}
