/* npy.c - minimal reader/writer of NumPy .npy files (see npy.h).
 *
 * File layout: "\x93NUMPY", major, minor, header length (uint16 LE for 1.0,
 * uint32 LE for 2.0/3.0), then an ASCII Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a final '\n', then the raw array data in C order.
 */
#include "npy.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAX_HEADER 65536  /* largest header we accept, in bytes */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
  if (!err || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int host_is_big_endian(void)
{
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b == 0;
}

/* Reverse the bytes of each of count elements of size sz (2, 4 or 8). */
static void swap_bytes(void *data, size_t count, size_t sz)
{
  unsigned char *p = data;
  for (size_t i = 0; i < count; i++, p += sz)
    for (size_t a = 0, b = sz - 1; a < b; a++, b--) {
      unsigned char t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
}

size_t npy_dtype_size(npy_dtype t)
{
  switch (t) {
  case NPY_F16: return 2;
  case NPY_F32: return 4;
  case NPY_I32: return 4;
  case NPY_F64: return 8;
  case NPY_I64: return 8;
  }
  return 0;
}

/* ---------------------------------------------------------------- header */

typedef struct {
  const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static int peek(const cursor *c)
{
  return c->p < c->end ? (unsigned char)*c->p : -1;
}

/* A Python string literal in ' or " quotes (no escapes or control characters
 * needed for our keys and dtypes: a NUL would cut the key short unseen).
 * 0 ok, -1 malformed or longer than buflen-1. */
static int parse_string(cursor *c, char *buf, size_t buflen)
{
  const int q = peek(c);
  if (q != '\'' && q != '"')
    return -1;
  c->p++;
  size_t n = 0;
  while (c->p < c->end && *c->p != q) {
    if (*c->p == '\\' || (unsigned char)*c->p < 0x20 || n + 1 >= buflen)
      return -1;
    buf[n++] = *c->p++;
  }
  if (c->p >= c->end)
    return -1;
  c->p++; /* closing quote */
  buf[n] = '\0';
  return 0;
}

/* Does the cursor start with the identifier word (not followed by more
 * identifier characters)? Consumes it if so. */
static int accept_word(cursor *c, const char *word)
{
  size_t n = strlen(word);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
    return 0;
  if (c->p + n < c->end) {
    char nx = c->p[n];
    if ((nx >= 'a' && nx <= 'z') || (nx >= 'A' && nx <= 'Z') || (nx >= '0' && nx <= '9') || nx == '_')
      return 0;
  }
  c->p += n;
  return 1;
}

/* Shape tuple: "()", "(5,)", "(2, 3)", with an optional Python 2 'L' suffix on
 * each integer. 0 ok, -1 malformed (message in err). */
static int parse_shape(cursor *c, npy_array *a, char *err, size_t errlen)
{
  const int open = peek(c);
  const int close = open == '(' ? ')' : ']';
  if (open != '(' && open != '[') {
    set_err(err, errlen, "malformed header: 'shape' is not a tuple");
    return -1;
  }
  c->p++;
  int nd = 0;
  for (;;) {
    skip_ws(c);
    if (peek(c) == close) {
      c->p++;
      break;
    }
    if (peek(c) < '0' || peek(c) > '9') {
      set_err(err, errlen, peek(c) == '-' ? "malformed header: negative dimension in 'shape'"
                                          : "malformed header: bad 'shape' tuple");
      return -1;
    }
    int64_t d = 0;
    while (peek(c) >= '0' && peek(c) <= '9') {
      int digit = *c->p++ - '0';
      if (d > (INT64_MAX - digit) / 10) {
        set_err(err, errlen, "malformed header: dimension in 'shape' too large");
        return -1;
      }
      d = d * 10 + digit;
    }
    if (peek(c) == 'L')
      c->p++;
    if (nd >= NPY_MAX_NDIM) {
      set_err(err, errlen, "array has more than %d dimensions", NPY_MAX_NDIM);
      return -1;
    }
    a->shape[nd++] = d;
    skip_ws(c);
    if (peek(c) == ',') {
      c->p++;
    } else if (peek(c) != close) {
      set_err(err, errlen, "malformed header: bad 'shape' tuple");
      return -1;
    }
  }
  a->ndim = nd;
  return 0;
}

static int parse_header(const char *hdr, size_t len, npy_array *a, char *err, size_t errlen)
{
  cursor c = {hdr, hdr + len};
  int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
  char descr[64] = "";

  skip_ws(&c);
  if (peek(&c) != '{') {
    set_err(err, errlen, "malformed header: not a dict");
    return -1;
  }
  c.p++;
  for (;;) {
    char key[32];
    skip_ws(&c);
    if (peek(&c) == '}')
      break;
    if (parse_string(&c, key, sizeof key)) {
      set_err(err, errlen, "malformed header: bad dict key");
      return -1;
    }
    skip_ws(&c);
    if (peek(&c) != ':') {
      set_err(err, errlen, "malformed header: missing ':' after '%s'", key);
      return -1;
    }
    c.p++;
    skip_ws(&c);

    if (strcmp(key, "descr") == 0 && !have_descr) {
      have_descr = 1;
      if (peek(&c) == '[' || peek(&c) == '(') {
        set_err(err, errlen, "unsupported dtype (structured array)");
        return -1;
      }
      if (parse_string(&c, descr, sizeof descr)) {
        set_err(err, errlen, "malformed header: bad 'descr'");
        return -1;
      }
    } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
      have_fortran = 1;
      if (accept_word(&c, "True")) {
        fortran = 1;
      } else if (accept_word(&c, "False")) {
        fortran = 0;
      } else {
        set_err(err, errlen, "malformed header: bad 'fortran_order'");
        return -1;
      }
    } else if (strcmp(key, "shape") == 0 && !have_shape) {
      have_shape = 1;
      if (parse_shape(&c, a, err, errlen))
        return -1;
    } else {
      set_err(err, errlen, "malformed header: unexpected or repeated key '%s'", key);
      return -1;
    }

    skip_ws(&c);
    if (peek(&c) == ',') {
      c.p++;
    } else if (peek(&c) != '}') {
      set_err(err, errlen, "malformed header: expected ',' or '}' after '%s'", key);
      return -1;
    }
  }
  c.p++; /* '}' */
  skip_ws(&c);
  if (c.p != c.end) {
    set_err(err, errlen, "malformed header: unexpected text after the dict");
    return -1;
  }
  if (!have_descr || !have_fortran || !have_shape) {
    set_err(err, errlen, "malformed header: missing key '%s'",
            !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    return -1;
  }

  static const struct { const char *descr; npy_dtype t; } types[] = {
    {"<f4", NPY_F32}, {"<f8", NPY_F64}, {"<f2", NPY_F16}, {"<i4", NPY_I32}, {"<i8", NPY_I64},
  };
  size_t i;
  for (i = 0; i < sizeof types / sizeof types[0]; i++)
    if (strcmp(descr, types[i].descr) == 0)
      break;
  if (i == sizeof types / sizeof types[0]) {
    set_err(err, errlen, "unsupported dtype '%s'", descr);
    return -1;
  }
  a->dtype = types[i].t;
  if (fortran) {
    set_err(err, errlen, "fortran order not supported");
    return -1;
  }
  return 0;
}

/* ----------------------------------------------------------------- parse */

/* Validates buf[0, len) as one whole .npy file: magic, version, header dict,
 * and exactly count * dtype-size bytes of data after the header (no more, no
 * less). Fills *a except a->data and sets *data_off to where the data starts.
 * Shared by npy_parse and npy_read_stream. 0, or -1 with err. */
static int parse_file(const unsigned char *buf, size_t len, npy_array *a, size_t *data_off,
                      char *err, size_t errlen)
{
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

  /* magic, version, header length */
  if (len < 6 || memcmp(buf, magic, 6) != 0) {
    set_err(err, errlen, "not an .npy file (bad magic)");
    return -1;
  }
  if (len < 8) {
    set_err(err, errlen, "truncated header");
    return -1;
  }
  const int major = buf[6], minor = buf[7];
  if (major < 1 || major > 3 || minor != 0) {
    set_err(err, errlen, "unsupported .npy format version %d.%d", major, minor);
    return -1;
  }
  const size_t lenbytes = major == 1 ? 2 : 4;
  if (len < 8 + lenbytes) {
    set_err(err, errlen, "truncated header");
    return -1;
  }
  uint32_t hlen = (uint32_t)buf[8] | (uint32_t)buf[9] << 8;
  if (lenbytes == 4)
    hlen |= (uint32_t)buf[10] << 16 | (uint32_t)buf[11] << 24;
  if (hlen > NPY_MAX_HEADER) {
    set_err(err, errlen, "header too large (%lu bytes, limit %d)", (unsigned long)hlen,
            NPY_MAX_HEADER);
    return -1;
  }
  const size_t off = 8 + lenbytes + hlen;
  if (len < off) {
    set_err(err, errlen, "truncated header");
    return -1;
  }
  if (parse_header((const char *)buf + 8 + lenbytes, hlen, a, err, errlen))
    return -1;

  /* element count and byte size, with overflow checks */
  const size_t esz = npy_dtype_size(a->dtype);
  int64_t count = 1;
  for (int d = 0; d < a->ndim; d++) {
    if (a->shape[d] != 0 && count > INT64_MAX / a->shape[d]) {
      set_err(err, errlen, "shape element count overflows");
      return -1;
    }
    count *= a->shape[d];
  }
  if ((uint64_t)count > (uint64_t)(SIZE_MAX / esz) || count > INT64_MAX / (int64_t)esz) {
    set_err(err, errlen, "shape element count overflows");
    return -1;
  }
  a->count = count;
  const size_t bytes = (size_t)count * esz;

  /* the data: exactly bytes, nothing after it */
  const size_t remain = len - off;
  if (remain < bytes) {
    set_err(err, errlen, "truncated data: expected %zu bytes, got %zu", bytes, remain);
    return -1;
  }
  if (remain > bytes) {
    set_err(err, errlen, "trailing data: %zu bytes after the array data", remain - bytes);
    return -1;
  }
  *data_off = off;
  return 0;
}

/* Takes data (count elements, little-endian) into a and a into *out. */
static void finish(npy_array *a, void *data, npy_array *out)
{
  const size_t esz = npy_dtype_size(a->dtype);
  if (host_is_big_endian() && esz > 1)
    swap_bytes(data, (size_t)a->count, esz);
  a->data = data;
  *out = *a;
}

int npy_parse(const void *buf, size_t len, npy_array *out, char *err, size_t errlen)
{
  npy_array a;
  size_t off;

  memset(&a, 0, sizeof a);
  if (out)
    memset(out, 0, sizeof *out);
  if (!out || (!buf && len)) {
    set_err(err, errlen, "invalid arguments");
    return -1;
  }
  if (parse_file(buf, len, &a, &off, err, errlen))
    return -1;
  const size_t bytes = len - off;
  void *data = malloc(bytes ? bytes : 1);
  if (!data) {
    set_err(err, errlen, "out of memory (%zu bytes)", bytes);
    return -1;
  }
  if (bytes)
    memcpy(data, (const unsigned char *)buf + off, bytes);
  finish(&a, data, out);
  return 0;
}

/* ------------------------------------------------------------------ read */

/* Reads the rest of f into a new buffer (*out, *len; never NULL on success).
 * A seekable stream is read with one buffer of its remaining size (plus one
 * byte, to see the end); others grow the buffer as they go. */
static int read_all(FILE *f, unsigned char **out, size_t *len, char *err, size_t errlen)
{
  size_t cap = 4096, n = 0;
  long pos = ftell(f);
  if (pos >= 0 && fseek(f, 0, SEEK_END) == 0) {
    const long end = ftell(f);
    if (fseek(f, pos, SEEK_SET) != 0) {
      set_err(err, errlen, "read error (cannot seek)");
      return -1;
    }
    if (end > pos && (unsigned long)(end - pos) < SIZE_MAX)
      cap = (size_t)(end - pos) + 1;
  }
  unsigned char *buf = malloc(cap);
  if (!buf) {
    set_err(err, errlen, "out of memory (%zu bytes)", cap);
    return -1;
  }
  for (;;) {
    if (n == cap) {
      unsigned char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
      if (!nb) {
        set_err(err, errlen, "out of memory (file larger than %zu bytes)", cap);
        free(buf);
        return -1;
      }
      buf = nb;
      cap *= 2;
    }
    const size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0)
      break;
  }
  if (ferror(f)) {
    set_err(err, errlen, "read error");
    free(buf);
    return -1;
  }
  *out = buf;
  *len = n;
  return 0;
}

int npy_read_stream(FILE *f, npy_array *out, char *err, size_t errlen)
{
  npy_array a;
  unsigned char *buf;
  size_t len, off;

  memset(&a, 0, sizeof a);
  if (out)
    memset(out, 0, sizeof *out);
  if (!f || !out) {
    set_err(err, errlen, "invalid arguments");
    return -1;
  }
  if (read_all(f, &buf, &len, err, errlen))
    return -1;
  if (parse_file(buf, len, &a, &off, err, errlen)) {
    free(buf);
    return -1;
  }
  /* the data moves to the start of the file's buffer, which then shrinks to it */
  const size_t bytes = len - off;
  memmove(buf, buf + off, bytes);
  void *data = realloc(buf, bytes ? bytes : 1);
  finish(&a, data ? data : buf, out);
  return 0;
}

int npy_read(const char *path, npy_array *out, char *err, size_t errlen)
{
  if (out)
    memset(out, 0, sizeof *out);
  if (!path || !out) {
    set_err(err, errlen, "invalid arguments");
    return -1;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    set_err(err, errlen, "cannot open: %s", strerror(errno));
    return -1;
  }
  const int rc = npy_read_stream(f, out, err, errlen);
  fclose(f);
  return rc;
}

void npy_free(npy_array *a)
{
  if (!a)
    return;
  free(a->data);
  memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------ conversion */

/* IEEE 754 binary16 -> double (exact). */
static double half_to_double(uint16_t h)
{
  const int sign = h >> 15;
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  double v;
  if (e == 0)
    v = ldexp((double)m, -24);                 /* zero or subnormal: m * 2^-24 */
  else if (e == 31)
    v = m ? (double)NAN : (double)INFINITY;
  else
    v = ldexp((double)(m | 0x400), e - 25);    /* (1 + m/1024) * 2^(e-15) */
  return sign ? -v : v;
}

/* Element i of a as a double. */
static double elem_f64(const npy_array *a, size_t i)
{
  switch (a->dtype) {
  case NPY_F32: return ((const float *)a->data)[i];
  case NPY_F64: return ((const double *)a->data)[i];
  case NPY_F16: return half_to_double(((const uint16_t *)a->data)[i]);
  case NPY_I32: return ((const int32_t *)a->data)[i];
  case NPY_I64: return (double)((const int64_t *)a->data)[i];
  }
  return 0.0;
}

static int check_src(const npy_array *a)
{
  return a && a->data && a->count >= 0 && (uint64_t)a->count <= SIZE_MAX / 8 ? 0 : -1;
}

int npy_to_f64(const npy_array *a, double **out)
{
  if (!out)
    return -1;
  *out = NULL;
  if (check_src(a))
    return -1;
  const size_t n = (size_t)a->count;
  double *r = malloc(n ? n * sizeof *r : 1);
  if (!r)
    return -1;
  for (size_t i = 0; i < n; i++)
    r[i] = elem_f64(a, i);
  *out = r;
  return 0;
}

int npy_to_f32(const npy_array *a, float **out)
{
  if (!out)
    return -1;
  *out = NULL;
  if (check_src(a))
    return -1;
  const size_t n = (size_t)a->count;
  float *r = malloc(n ? n * sizeof *r : 1);
  if (!r)
    return -1;
  if (a->dtype == NPY_F32)
    memcpy(r, a->data, n * sizeof *r);
  else
    for (size_t i = 0; i < n; i++)
      r[i] = (float)elem_f64(a, i);
  *out = r;
  return 0;
}

int npy_to_i64(const npy_array *a, int64_t **out)
{
  if (!out)
    return -1;
  *out = NULL;
  if (check_src(a))
    return -1;
  const size_t n = (size_t)a->count;
  int64_t *r = malloc(n ? n * sizeof *r : 1);
  if (!r)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (a->dtype == NPY_I64) {
      r[i] = ((const int64_t *)a->data)[i];
    } else if (a->dtype == NPY_I32) {
      r[i] = ((const int32_t *)a->data)[i];
    } else {
      /* floating: only finite integral values in [-2^63, 2^63) convert */
      const double x = elem_f64(a, i);
      if (!(x >= -9223372036854775808.0 && x < 9223372036854775808.0) || x != floor(x)) {
        free(r);
        return -1;
      }
      r[i] = (int64_t)x;
    }
  }
  *out = r;
  return 0;
}

/* ----------------------------------------------------------------- write */

int npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape,
                  char *err, size_t errlen)
{
  char hdr[512];
  char *tmp = NULL;
  FILE *f = NULL;

  if (!path || ndim < 0 || ndim > NPY_MAX_NDIM || (ndim > 0 && !shape)) {
    set_err(err, errlen, "invalid arguments");
    return -1;
  }
  int64_t count = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) {
      set_err(err, errlen, "negative dimension in shape");
      return -1;
    }
    if (shape[d] != 0 && count > INT64_MAX / shape[d]) {
      set_err(err, errlen, "shape element count overflows");
      return -1;
    }
    count *= shape[d];
  }
  if ((uint64_t)count > SIZE_MAX / 4) {
    set_err(err, errlen, "shape element count overflows");
    return -1;
  }
  if (count > 0 && !data) {
    set_err(err, errlen, "invalid arguments (no data)");
    return -1;
  }

  /* header dict, shape formatted as Python's tuple repr */
  int len = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
  for (int d = 0; d < ndim; d++)
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "%s%lld", d ? ", " : "",
                    (long long)shape[d]);
  len += snprintf(hdr + len, sizeof hdr - (size_t)len, "%s), }", ndim == 1 ? "," : "");
  /* pad with spaces and a final '\n' so that 10 + header length is a multiple of 64 */
  size_t total = 10 + (size_t)len + 1;
  size_t pad = (64 - total % 64) % 64;
  memset(hdr + len, ' ', pad);
  len += (int)pad;
  hdr[len++] = '\n';

  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                           (unsigned char)(len & 0xff), (unsigned char)(len >> 8)};

  const size_t plen = strlen(path);
  tmp = malloc(plen + 5);
  if (!tmp) {
    set_err(err, errlen, "out of memory");
    return -1;
  }
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);

  f = fopen(tmp, "wb");
  if (!f) {
    set_err(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    free(tmp);
    return -1;
  }
  if (fwrite(pre, 1, sizeof pre, f) != sizeof pre || fwrite(hdr, 1, (size_t)len, f) != (size_t)len)
    goto write_fail;

  /* data as little-endian bytes, in blocks */
  {
    unsigned char buf[4096];
    size_t fill = 0;
    for (size_t i = 0; i < (size_t)count; i++) {
      uint32_t u;
      memcpy(&u, &data[i], 4);
      buf[fill++] = (unsigned char)(u & 0xff);
      buf[fill++] = (unsigned char)(u >> 8 & 0xff);
      buf[fill++] = (unsigned char)(u >> 16 & 0xff);
      buf[fill++] = (unsigned char)(u >> 24);
      if (fill == sizeof buf) {
        if (fwrite(buf, 1, fill, f) != fill)
          goto write_fail;
        fill = 0;
      }
    }
    if (fill && fwrite(buf, 1, fill, f) != fill)
      goto write_fail;
  }
  if (fflush(f) != 0)
    goto write_fail;
  {
    FILE *tf = f;
    f = NULL;
    if (fclose(tf) != 0)
      goto write_fail;
  }
  if (rename(tmp, path) != 0) {
    set_err(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    remove(tmp);
    free(tmp);
    return -1;
  }
  free(tmp);
  return 0;

write_fail:
  set_err(err, errlen, "write error on %s: %s", tmp, strerror(errno));
  if (f)
    fclose(f);
  remove(tmp);
  free(tmp);
  return -1;
}
