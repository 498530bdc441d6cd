/*
 * common.c - op adapter table and shared helpers of the vkla tools (see common.h).
 */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vkla_ref.h"

/* ------------------------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------------------------- */
int tool_fail(tool_err *e, const char *where, const char *fmt, ...)
{
  if (e) {
    snprintf(e->where, sizeof e->where, "%s", where ? where : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->what, sizeof e->what, fmt, ap);
    va_end(ap);
    /* keep messages to one line */
    for (char *c = e->what; *c; c++)
      if (*c == '\n' || *c == '\r')
        *c = ' ';
  }
  return -1;
}

int tool_lib_fail(vkla_context *ctx, vkla_result r, const char *where, tool_err *e)
{
  const char *msg = ctx ? vkla_last_error(ctx) : "";
  if (!msg || !*msg)
    msg = vkla_result_string(r);
  size_t wl = where ? strlen(where) : 0;
  /* library messages usually start with the op name: don't repeat it */
  if (wl && strncmp(msg, where, wl) == 0 && msg[wl] == ':' && msg[wl + 1] == ' ')
    msg += wl + 2;
  return tool_fail(e, where && *where ? where : "device", "%s", msg);
}

/* ------------------------------------------------------------------------------------------
 * Names
 * ---------------------------------------------------------------------------------------- */
const char *const tool_input_names[TI_COUNT] = {"q",  "k",          "v",  "g",
                                                "g_gamma", "gk", "beta", "h0",
                                                "cu_seqlens", "do", "dht"};

static const char *const input_dims_text[TI_COUNT] = {
    "[B,T,H,K]", "[B,T,H,K]", "[B,T,H,V]", "[B,T,H]",   "[H]",      "[B,T,H,K]",
    "[B,T,H]",   "[N,H,K,V]", "[N+1]",     "[B,T,H,V]", "[N,H,K,V]"};

int tool_parse_form(const char *s, vkla_form *out)
{
  static const struct { const char *n; vkla_form f; } forms[] = {
      {"chunk", VKLA_FORM_CHUNK}, {"recurrent", VKLA_FORM_RECURRENT},
      {"attn", VKLA_FORM_ATTN},   {"rnn", VKLA_FORM_RNN}};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
    if (s && strcmp(s, forms[i].n) == 0) {
      *out = forms[i].f;
      return 0;
    }
  return -1;
}

int tool_parse_dtype(const char *s, vkla_dtype *out)
{
  if (!s)
    return -1;
  if (strcmp(s, "f32") == 0)
    *out = VKLA_DTYPE_F32;
  else if (strcmp(s, "f16") == 0)
    *out = VKLA_DTYPE_F16;
  else if (strcmp(s, "bf16") == 0)
    *out = VKLA_DTYPE_BF16;
  else
    return -1;
  return 0;
}

int tool_parse_u32(const char *s, uint32_t *out)
{
  if (!s || !*s || *s == '-' || *s == '+')
    return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > UINT32_MAX)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

int tool_parse_float(const char *s, float *out)
{
  if (!s || !*s)
    return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v) || fabs(v) > 3.0e38)
    return -1;
  *out = (float)v;
  return 0;
}

void tool_op_forms_text(const tool_op *op, char *buf, size_t n)
{
  static const vkla_form order[] = {VKLA_FORM_CHUNK, VKLA_FORM_RECURRENT, VKLA_FORM_ATTN,
                                    VKLA_FORM_RNN};
  size_t len = 0;
  buf[0] = 0;
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
    if (op->forms & TOOL_FORM_BIT(order[i]) && len < n)
      len += (size_t)snprintf(buf + len, n - len, "%s%s", len ? ", " : "",
                              vkla_form_name(order[i]));
}

void tool_op_names_text(char *buf, size_t n)
{
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < tool_op_count && len < n; i++)
    len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? ", " : "", tool_ops[i].name);
}

const char *tool_device_type_name(uint32_t type)
{
  switch (type) {
  case 1: return "integrated";
  case 2: return "discrete";
  case 3: return "virtual";
  case 4: return "cpu";
  default: return "other";
  }
}

void tool_json_string(FILE *f, const char *s)
{
  fputc('"', f);
  for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
    if (*c == '"' || *c == '\\')
      fprintf(f, "\\%c", *c);
    else if (*c == '\n')
      fputs("\\n", f);
    else if (*c == '\t')
      fputs("\\t", f);
    else if (*c < 0x20 || *c == 0x7f)
      fprintf(f, "\\u%04x", *c);
    else
      fputc(*c, f);
  }
  fputc('"', f);
}

/* ------------------------------------------------------------------------------------------
 * Problems
 * ---------------------------------------------------------------------------------------- */
int tool_input_shape(const tool_problem *p, int i, int64_t s[4])
{
  switch (i) {
  case TI_Q:
  case TI_K:
  case TI_GK:
    s[0] = p->B; s[1] = p->T; s[2] = p->H; s[3] = p->K;
    return 4;
  case TI_V:
  case TI_DO:
    s[0] = p->B; s[1] = p->T; s[2] = p->HV; s[3] = p->V;
    return 4;
  case TI_G:
  case TI_BETA:
    s[0] = p->B; s[1] = p->T; s[2] = p->HV;
    return 3;
  case TI_G_GAMMA:
    s[0] = p->HV;
    return 1;
  case TI_H0:
  case TI_DHT:
    s[0] = p->N; s[1] = p->HV; s[2] = p->K; s[3] = p->V;
    return 4;
  case TI_CU_SEQLENS:
    s[0] = p->N + 1;
    return 1;
  default:
    return 0;
  }
}

size_t tool_input_count(const tool_problem *p, int i)
{
  int64_t s[4];
  int nd = tool_input_shape(p, i, s);
  size_t n = 1;
  for (int d = 0; d < nd; d++)
    n *= (size_t)s[d];
  return n;
}

size_t tool_output_count(const tool_problem *p)
{
  return (size_t)p->B * (size_t)p->T * (size_t)p->HV * (size_t)p->V;
}

size_t tool_state_count(const tool_problem *p)
{
  return (size_t)p->N * (size_t)p->HV * (size_t)p->K * (size_t)p->V;
}

void tool_problem_free(tool_problem *p)
{
  if (!p)
    return;
  if (p->owns) {
    for (int i = 0; i < TI_COUNT; i++)
      free(p->x[i]);
    free(p->cu_seqlens);
  }
  memset(p, 0, sizeof *p);
}

tool_problem tool_problem_prefix(const tool_problem *p, int64_t T)
{
  tool_problem r = *p;
  int64_t len0 = p->cu_seqlens ? (int64_t)p->cu_seqlens[1] - p->cu_seqlens[0] : p->T;
  if (T > len0)
    T = len0;
  if (T < 1)
    T = 1; /* an empty first sequence: take one token of the row */
  r.B = 1;
  r.N = 1;
  r.T = T;
  r.cu_seqlens = NULL;
  r.owns = 0;
  return r;
}

void tool_round_to_dtype(float *x, size_t n, vkla_dtype dtype)
{
  if (dtype == VKLA_DTYPE_F32 || n == 0)
    return;
  uint16_t tmp[1024];
  for (size_t i = 0; i < n; i += 1024) {
    size_t m = n - i < 1024 ? n - i : 1024;
    vkla_convert(tmp, dtype, x + i, VKLA_DTYPE_F32, m);
    vkla_convert(x + i, VKLA_DTYPE_F32, tmp, dtype, m);
  }
}

static void shape_text(char *buf, size_t n, int nd, const int64_t *s)
{
  size_t len = (size_t)snprintf(buf, n, "(");
  for (int d = 0; d < nd && len < n; d++)
    len += (size_t)snprintf(buf + len, n - len, "%s%lld", d ? ", " : "", (long long)s[d]);
  if (len < n)
    snprintf(buf + len, n - len, "%s)", nd == 1 ? "," : "");
}

static const char *npy_dtype_text(npy_dtype t)
{
  switch (t) {
  case NPY_F32: return "float32";
  case NPY_F64: return "float64";
  case NPY_F16: return "float16";
  case NPY_I32: return "int32";
  case NPY_I64: return "int64";
  }
  return "?";
}

static int file_exists(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0;
}

/* Loads <dir>/<name>.npy with npy_read; float arrays become float32. */
static int read_input(const char *dir, int i, npy_array *a, char *fname, size_t fn, tool_err *e)
{
  char path[4096], err[512];
  snprintf(fname, fn, "%s.npy", tool_input_names[i]);
  snprintf(path, sizeof path, "%s/%s", dir, fname);
  if (npy_read(path, a, err, sizeof err) != 0)
    return tool_fail(e, fname, "%s", err);
  if (i == TI_CU_SEQLENS) {
    if (a->dtype != NPY_I32 && a->dtype != NPY_I64) {
      tool_fail(e, fname, "dtype %s; cu_seqlens must be int32 or int64", npy_dtype_text(a->dtype));
      npy_free(a);
      return -1;
    }
  } else if (a->dtype != NPY_F32 && a->dtype != NPY_F64 && a->dtype != NPY_F16) {
    tool_fail(e, fname, "dtype %s; expected float32", npy_dtype_text(a->dtype));
    npy_free(a);
    return -1;
  }
  return 0;
}

static int take_floats(npy_array *a, float **out, const char *fname, tool_err *e)
{
  if (a->dtype == NPY_F32) {
    *out = a->data;
    a->data = NULL;
    return 0;
  }
  if (npy_to_f32(a, out) != 0)
    return tool_fail(e, fname, "out of memory");
  return 0;
}

int tool_load_problem(const tool_op *op, const char *dir, vkla_dtype dtype, int backward,
                      tool_problem *p, tool_err *e)
{
  memset(p, 0, sizeof *p);
  p->owns = 1;
  uint32_t required = op->required, takes = op->required | op->optional;
  if (backward) {
    required |= TI_BIT(TI_DO);
    takes |= TI_BIT(TI_DO) | (op->causal ? TI_BIT(TI_DHT) : 0);
  }
  char path[4096], fname[64];
  int present[TI_COUNT];

  struct stat st;
  if (stat(dir, &st) != 0)
    return tool_fail(e, "--in", "%s: %s", dir, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return tool_fail(e, "--in", "%s is not a directory", dir);

  /* which SPEC files are there, and are they allowed */
  for (int i = 0; i < TI_COUNT; i++) {
    snprintf(fname, sizeof fname, "%s.npy", tool_input_names[i]);
    snprintf(path, sizeof path, "%s/%s", dir, fname);
    present[i] = file_exists(path);
    if ((i == TI_DO || i == TI_DHT) && !backward) {
      present[i] = 0; /* upstream gradients: only read by --backward */
      continue;
    }
    if (present[i] && !(takes & TI_BIT(i)))
      return tool_fail(e, fname, "%s%s takes no %s input (remove the file)", op->name,
                       backward ? " --backward" : "", tool_input_names[i]);
    if (!present[i] && (required & TI_BIT(i)))
      return tool_fail(e, fname, "missing (required by %s%s)", op->name,
                       i == TI_DO ? " --backward" : "");
  }

  npy_array a[TI_COUNT];
  memset(a, 0, sizeof a);
  int rc = -1;
  for (int i = 0; i < TI_COUNT; i++)
    if (present[i] && read_input(dir, i, &a[i], fname, sizeof fname, e) != 0)
      goto done;

  /* dims from q and v */
  {
    npy_array *q = &a[TI_Q];
    static const char dn[4] = {'B', 'T', 'H', 'K'};
    if (q->ndim != 4) {
      char s[128];
      shape_text(s, sizeof s, q->ndim, q->shape);
      tool_fail(e, "q.npy", "expected 4 dims [B,T,H,K], got %d (shape %s)", q->ndim, s);
      goto done;
    }
    for (int d = 0; d < 4; d++) {
      if (q->shape[d] < 1) {
        tool_fail(e, "q.npy", "%c = 0 (empty array)", dn[d]);
        goto done;
      }
      if (q->shape[d] > INT32_MAX) {
        tool_fail(e, "q.npy", "%c = %lld is too large", dn[d], (long long)q->shape[d]);
        goto done;
      }
    }
    p->B = q->shape[0];
    p->T = q->shape[1];
    p->H = q->shape[2];
    p->K = q->shape[3];
    npy_array *v = &a[TI_V];
    char s[128];
    shape_text(s, sizeof s, v->ndim, v->shape);
    if (v->ndim != 4) {
      tool_fail(e, "v.npy", "expected 4 dims [B,T,H,V], got %d (shape %s)", v->ndim, s);
      goto done;
    }
    if (v->shape[0] != p->B || v->shape[1] != p->T) {
      tool_fail(e, "v.npy", "shape %s does not match B = %lld, T = %lld of q.npy", s,
                (long long)p->B, (long long)p->T);
      goto done;
    }
    if (v->shape[2] < 1 || v->shape[3] < 1 || v->shape[3] > INT32_MAX || v->shape[2] > INT32_MAX) {
      tool_fail(e, "v.npy", "shape %s has an empty or too large dimension", s);
      goto done;
    }
    p->HV = v->shape[2];
    p->V = v->shape[3];
    if (!op->grouped_heads && p->HV != p->H) {
      tool_fail(e, "v.npy", "shape %s: H = %lld does not match H = %lld of q.npy", s,
                (long long)p->HV, (long long)p->H);
      goto done;
    }
    if (op->grouped_heads && p->HV % p->H != 0) {
      tool_fail(e, "v.npy", "shape %s: value heads %lld are not a multiple of H = %lld", s,
                (long long)p->HV, (long long)p->H);
      goto done;
    }
  }

  /* cu_seqlens */
  p->N = p->B;
  if (present[TI_CU_SEQLENS]) {
    npy_array *c = &a[TI_CU_SEQLENS];
    if (c->ndim != 1 || c->shape[0] < 2) {
      char s[128];
      shape_text(s, sizeof s, c->ndim, c->shape);
      tool_fail(e, "cu_seqlens.npy", "expected a 1-d array of N+1 >= 2 offsets, got shape %s", s);
      goto done;
    }
    if (p->B != 1) {
      tool_fail(e, "cu_seqlens.npy", "needs B = 1 (q.npy has B = %lld)", (long long)p->B);
      goto done;
    }
    int64_t *c64;
    if (npy_to_i64(c, &c64) != 0) {
      tool_fail(e, "cu_seqlens.npy", "out of memory");
      goto done;
    }
    int64_t n1 = c->shape[0];
    const char *bad = NULL;
    int64_t at = 0;
    if (c64[0] != 0)
      bad = "must start at 0";
    for (int64_t j = 1; !bad && j < n1; j++)
      if (c64[j] < c64[j - 1]) {
        bad = "offsets decrease";
        at = j;
      }
    if (!bad && c64[n1 - 1] != p->T)
      bad = "must end at T";
    if (bad) {
      if (at)
        tool_fail(e, "cu_seqlens.npy", "%s (at index %lld: %lld after %lld)", bad,
                  (long long)at, (long long)c64[at], (long long)c64[at - 1]);
      else
        tool_fail(e, "cu_seqlens.npy", "%s (first %lld, last %lld, T = %lld)", bad,
                  (long long)c64[0], (long long)c64[n1 - 1], (long long)p->T);
      free(c64);
      goto done;
    }
    p->cu_seqlens = malloc((size_t)n1 * sizeof(int32_t));
    if (!p->cu_seqlens) {
      free(c64);
      tool_fail(e, "cu_seqlens.npy", "out of memory");
      goto done;
    }
    for (int64_t j = 0; j < n1; j++)
      p->cu_seqlens[j] = (int32_t)c64[j]; /* <= T <= INT32_MAX */
    free(c64);
    p->N = n1 - 1;
  }

  /* every float input: shape against the dims, then to float32 */
  for (int i = 0; i < TI_COUNT; i++) {
    if (!present[i] || i == TI_CU_SEQLENS)
      continue;
    int64_t want[4];
    int nd = tool_input_shape(p, i, want);
    snprintf(fname, sizeof fname, "%s.npy", tool_input_names[i]);
    int ok = a[i].ndim == nd;
    for (int d = 0; ok && d < nd; d++)
      ok = a[i].shape[d] == want[d];
    if (!ok) {
      char s[128], w[128];
      shape_text(s, sizeof s, a[i].ndim, a[i].shape);
      shape_text(w, sizeof w, nd, want);
      const char *dims = input_dims_text[i];
      if (op->grouped_heads && p->HV != p->H && i != TI_Q && i != TI_K && i != TI_GK)
        dims = i == TI_V ? "[B,T,HV,V]" : i == TI_H0 ? "[N,HV,K,V]" : i == TI_G_GAMMA ? "[HV]" : "[B,T,HV]";
      tool_fail(e, fname, "shape %s does not match %s = %s", s, dims, w);
      goto done;
    }
    if (take_floats(&a[i], &p->x[i], fname, e) != 0)
      goto done;
  }
  tool_round_to_dtype(p->x[TI_Q], tool_input_count(p, TI_Q), dtype);
  tool_round_to_dtype(p->x[TI_K], tool_input_count(p, TI_K), dtype);
  tool_round_to_dtype(p->x[TI_V], tool_input_count(p, TI_V), dtype);
  if (p->x[TI_DO])
    tool_round_to_dtype(p->x[TI_DO], tool_input_count(p, TI_DO), dtype);
  rc = 0;
done:
  for (int i = 0; i < TI_COUNT; i++)
    npy_free(&a[i]);
  if (rc != 0)
    tool_problem_free(p);
  return rc;
}

/* splitmix64 */
static uint64_t rng_next(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) /* [0, 1) */
{
  return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

int tool_random_problem(const tool_op *op, int64_t B, int64_t T, int64_t H, int64_t K,
                        int64_t V, const char *gate, vkla_dtype dtype, uint64_t seed,
                        tool_problem *p, tool_err *e)
{
  memset(p, 0, sizeof *p);
  p->owns = 1;
  p->B = B;
  p->T = T;
  p->H = H;
  p->HV = H;
  p->K = K;
  p->V = V;
  p->N = B;
  int gi = -1;
  if (gate && strcmp(gate, "g") == 0)
    gi = TI_G;
  else if (gate && strcmp(gate, "g_gamma") == 0)
    gi = TI_G_GAMMA;
  else if (gate && strcmp(gate, "gk") == 0)
    gi = TI_GK;
  else if (!gate || strcmp(gate, "none") != 0)
    return tool_fail(e, "--gate", "unknown gate '%s' (none, g, g_gamma, gk)", gate ? gate : "");
  if (gi >= 0 && !((op->required | op->optional) & TI_BIT(gi)))
    return tool_fail(e, "--gate", "%s takes no %s gate", op->name, tool_input_names[gi]);

  uint64_t s = seed;
  int want[TI_COUNT] = {0};
  want[TI_Q] = want[TI_K] = want[TI_V] = 1;
  if (gi >= 0)
    want[gi] = 1;
  if (op->required & TI_BIT(TI_BETA))
    want[TI_BETA] = 1;
  for (int i = 0; i < TI_COUNT; i++) {
    if (!want[i])
      continue;
    size_t n = tool_input_count(p, i);
    float *x = malloc((n ? n : 1) * sizeof(float));
    if (!x) {
      tool_problem_free(p);
      return tool_fail(e, "memory", "cannot allocate %zu floats for %s", n, tool_input_names[i]);
    }
    p->x[i] = x;
    switch (i) {
    case TI_Q:
    case TI_V:
      for (size_t j = 0; j < n; j++)
        x[j] = (float)(2.0 * rng_unit(&s) - 1.0);
      break;
    case TI_K:
      for (size_t r = 0; r < n / (size_t)K; r++) {
        float *row = x + r * (size_t)K;
        double ss = 0;
        for (int64_t c = 0; c < K; c++) {
          row[c] = (float)(2.0 * rng_unit(&s) - 1.0);
          ss += (double)row[c] * row[c];
        }
        double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
        for (int64_t c = 0; c < K; c++)
          row[c] = (float)(row[c] * inv);
      }
      break;
    case TI_G:
    case TI_GK:
      for (size_t j = 0; j < n; j++)
        x[j] = (float)(-0.1 * (1.0 - rng_unit(&s))); /* [-0.1, 0) */
      break;
    case TI_G_GAMMA:
      /* RetNet: gamma_h = 1 - 2^(-5 - h * 7 / (H - 1)) in [1 - 1/32, 1 - 1/4096] */
      for (size_t j = 0; j < n; j++)
        x[j] = (float)log(1.0 - pow(2.0, -5.0 - (n > 1 ? 7.0 * (double)j / (double)(n - 1) : 0.0)));
      break;
    case TI_BETA:
      for (size_t j = 0; j < n; j++)
        x[j] = (float)(0.05 + 0.9 * rng_unit(&s));
      break;
    default:
      break;
    }
  }
  tool_round_to_dtype(p->x[TI_Q], tool_input_count(p, TI_Q), dtype);
  tool_round_to_dtype(p->x[TI_K], tool_input_count(p, TI_K), dtype);
  tool_round_to_dtype(p->x[TI_V], tool_input_count(p, TI_V), dtype);
  return 0;
}

int tool_random_grads(const tool_op *op, tool_problem *p, vkla_dtype dtype, uint64_t seed,
                      tool_err *e)
{
  uint64_t s = seed ^ 0x9e3779b97f4a7c15ull;
  for (int i = TI_DO; i <= TI_DHT; i++) {
    if (i == TI_DHT && !op->causal)
      continue;
    size_t n = tool_input_count(p, i);
    float *x = malloc((n ? n : 1) * sizeof(float));
    if (!x)
      return tool_fail(e, "memory", "cannot allocate %zu floats for %s", n, tool_input_names[i]);
    double amp = i == TI_DO ? 1.0 : 0.5;
    for (size_t j = 0; j < n; j++)
      x[j] = (float)(amp * (2.0 * rng_unit(&s) - 1.0));
    free(p->x[i]);
    p->x[i] = x;
  }
  tool_round_to_dtype(p->x[TI_DO], tool_input_count(p, TI_DO), dtype);
  return 0;
}

/* ------------------------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------------------------- */
int tool_check_opts(const tool_op *op, tool_opts *o, uint32_t given, tool_err *e)
{
  if (o->form == VKLA_FORM_DEFAULT)
    o->form = op->default_form;
  if (!(op->forms & TOOL_FORM_BIT(o->form))) {
    char f[128];
    tool_op_forms_text(op, f, sizeof f);
    return tool_fail(e, "--form", "%s has no form '%s' (%s)", op->name, vkla_form_name(o->form), f);
  }
  static const struct { uint32_t bit; const char *flag; } flags[] = {
      {TOPT_CHUNK, "--chunk"}, {TOPT_SCALE, "--scale"}, {TOPT_NORMALIZE, "--normalize"},
      {TOPT_EPS, "--eps"}, {TOPT_L2NORM, "--l2norm"}};
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if ((given & flags[i].bit) && !(op->options & flags[i].bit))
      return tool_fail(e, flags[i].flag, "not an option of %s", op->name);
  return 0;
}

void tool_resolve_opts(const tool_op *op, const tool_problem *p, tool_opts *o)
{
  if (o->form == VKLA_FORM_DEFAULT)
    o->form = op->default_form;
  if (o->scale == 0.0f)
    o->scale = 1.0f / sqrtf((float)p->K); /* what the library uses for its default */
  if (o->eps == 0.0f)
    o->eps = 1e-6f;
}

/* ------------------------------------------------------------------------------------------
 * Device side
 * ---------------------------------------------------------------------------------------- */
static int upload_tensor(vkla_context *ctx, const float *x, size_t n, vkla_dtype dt, int nd,
                         const int64_t *shape, vkla_buffer **buf, vkla_tensor *t, tool_err *e)
{
  size_t es = vkla_dtype_size(dt);
  uint64_t bytes = (uint64_t)(n ? n : 1) * es;
  vkla_result r = vkla_buffer_create(ctx, bytes, buf);
  if (r != VKLA_SUCCESS)
    return tool_lib_fail(ctx, r, "device", e);
  uint64_t sh[VKLA_MAX_DIMS] = {0};
  for (int d = 0; d < nd; d++)
    sh[d] = (uint64_t)shape[d];
  *t = vkla_tensor_make(*buf, 0, dt, (uint32_t)nd, sh);
  if (!x)
    return 0;
  const void *src = x;
  void *tmp = NULL;
  if (dt != VKLA_DTYPE_F32) {
    tmp = malloc(n * es + 1);
    if (!tmp)
      return tool_fail(e, "memory", "out of host memory");
    vkla_convert(tmp, dt, x, VKLA_DTYPE_F32, n);
    src = tmp;
  }
  r = vkla_buffer_upload(ctx, *buf, 0, src, (uint64_t)n * es);
  free(tmp);
  if (r != VKLA_SUCCESS)
    return tool_lib_fail(ctx, r, "device", e);
  return 0;
}

int tool_dev_create(vkla_context *ctx, const tool_op *op, const tool_problem *p,
                    const tool_opts *o, int want_ht, tool_dev *d, tool_err *e)
{
  memset(d, 0, sizeof *d);
  d->dtype = o->dtype;
  int64_t s[4];
  for (int i = 0; i < TI_COUNT; i++) {
    if (i == TI_CU_SEQLENS || !p->x[i])
      continue;
    int nd = tool_input_shape(p, i, s);
    vkla_dtype dt = (i == TI_Q || i == TI_K || i == TI_V || i == TI_DO) ? o->dtype : VKLA_DTYPE_F32;
    if (upload_tensor(ctx, p->x[i], tool_input_count(p, i), dt, nd, s, &d->buf[i], &d->t[i], e))
      goto fail;
  }
  s[0] = p->B; s[1] = p->T; s[2] = p->HV; s[3] = p->V;
  if (upload_tensor(ctx, NULL, tool_output_count(p), o->dtype, 4, s, &d->obuf, &d->o, e))
    goto fail;
  if (want_ht && op->causal) {
    s[0] = p->N; s[1] = p->HV; s[2] = p->K; s[3] = p->V;
    if (upload_tensor(ctx, NULL, tool_state_count(p), VKLA_DTYPE_F32, 4, s, &d->htbuf, &d->ht, e))
      goto fail;
  }
  d->cu_seqlens = p->cu_seqlens;
  d->num_seqs = p->cu_seqlens ? (uint32_t)p->N : 0;
  return 0;
fail:
  tool_dev_destroy(ctx, d);
  return -1;
}

void tool_dev_destroy(vkla_context *ctx, tool_dev *d)
{
  for (int i = 0; i < TI_COUNT; i++)
    if (d->buf[i])
      vkla_buffer_destroy(ctx, d->buf[i]);
  if (d->obuf)
    vkla_buffer_destroy(ctx, d->obuf);
  if (d->htbuf)
    vkla_buffer_destroy(ctx, d->htbuf);
  for (int i = 0; i < TI_GRADS; i++)
    if (d->gbuf[i])
      vkla_buffer_destroy(ctx, d->gbuf[i]);
  memset(d, 0, sizeof *d);
}

vkla_dtype tool_grad_dtype(int i, vkla_dtype storage)
{
  return (i == TI_Q || i == TI_K || i == TI_V) ? storage : VKLA_DTYPE_F32;
}

int tool_dev_alloc_grads(vkla_context *ctx, const tool_problem *p, const tool_opts *o,
                         tool_dev *d, tool_err *e)
{
  int64_t s[4];
  for (int i = 0; i < TI_GRADS; i++) {
    if (!p->x[i] || d->gbuf[i])
      continue;
    int nd = tool_input_shape(p, i, s);
    if (upload_tensor(ctx, NULL, tool_input_count(p, i), tool_grad_dtype(i, o->dtype), nd, s,
                      &d->gbuf[i], &d->grad[i], e))
      return -1;
  }
  return 0;
}

/* n elements of a buffer in dtype dt, as float32 */
static int download_f32(vkla_context *ctx, vkla_buffer *buf, vkla_dtype dt, size_t n, float *out,
                        tool_err *e)
{
  vkla_result r;
  if (dt == VKLA_DTYPE_F32) {
    r = vkla_buffer_download(ctx, buf, 0, out, (uint64_t)n * 4);
  } else {
    uint16_t *tmp = malloc(n * 2 + 2);
    if (!tmp)
      return tool_fail(e, "memory", "out of host memory");
    r = vkla_buffer_download(ctx, buf, 0, tmp, (uint64_t)n * 2);
    if (r == VKLA_SUCCESS)
      vkla_convert(out, VKLA_DTYPE_F32, tmp, dt, n);
    free(tmp);
  }
  return r == VKLA_SUCCESS ? 0 : tool_lib_fail(ctx, r, "device", e);
}

int tool_dev_download_grads(vkla_context *ctx, const tool_dev *d, const tool_problem *p,
                            float *const *out, tool_err *e)
{
  for (int i = 0; i < TI_GRADS; i++)
    if (d->gbuf[i] && out[i] &&
        download_f32(ctx, d->gbuf[i], d->grad[i].dtype, tool_input_count(p, i), out[i], e) != 0)
      return -1;
  return 0;
}

int tool_dev_download(vkla_context *ctx, const tool_dev *d, float *out, float *ht, tool_err *e)
{
  size_t n = 1;
  for (uint32_t i = 0; i < d->o.ndim; i++)
    n *= (size_t)d->o.shape[i];
  if (download_f32(ctx, d->obuf, d->dtype, n, out, e) != 0)
    return -1;
  if (ht && d->htbuf) {
    size_t m = 1;
    for (uint32_t i = 0; i < d->ht.ndim; i++)
      m *= (size_t)d->ht.shape[i];
    if (download_f32(ctx, d->htbuf, VKLA_DTYPE_F32, m, ht, e) != 0)
      return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------
 * Context
 * ---------------------------------------------------------------------------------------- */
static char g_last_msg[1024];

static void on_message(void *user, vkla_message_severity sev, const char *text)
{
  (void)user;
  if (sev == VKLA_MESSAGE_ERROR)
    snprintf(g_last_msg, sizeof g_last_msg, "%s", text ? text : "");
  else if (sev == VKLA_MESSAGE_VALIDATION)
    fprintf(stderr, "vkla: validation: %s\n", text ? text : "");
}

int tool_context_create(const char *device, vkla_context **ctx, tool_err *e)
{
  vkla_context_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.device = device;
  desc.message_fn = on_message;
  g_last_msg[0] = 0;
  vkla_result r = vkla_context_create(&desc, ctx);
  if (r != VKLA_SUCCESS) {
    *ctx = NULL;
    return tool_fail(e, device ? "--device" : "device", "%s",
                     g_last_msg[0] ? g_last_msg : vkla_result_string(r));
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------
 * Accuracy
 * ---------------------------------------------------------------------------------------- */
/* SPEC "Accuracy": 1e-9 for f32 storage, else ten times the NMSE of rounding the reference
 * once to the dtype. tmp: scratch of n floats. */
static double dtype_target(const double *ref, size_t n, vkla_dtype dt, float *tmp)
{
  if (dt == VKLA_DTYPE_F32)
    return TOOL_TARGET_F32;
  for (size_t i = 0; i < n; i++)
    tmp[i] = (float)ref[i];
  tool_round_to_dtype(tmp, n, dt);
  double t = 10.0 * vkla_ref_nmse(ref, tmp, n);
  return t > TOOL_TARGET_FLOOR ? t : TOOL_TARGET_FLOOR;
}

int tool_check_results(const tool_op *op, const tool_problem *p, const tool_opts *o,
                       const float *out, const float *ht, tool_check *c, tool_err *e)
{
  memset(c, 0, sizeof *c);
  size_t no = tool_output_count(p), ns = tool_state_count(p);
  int want_ht = op->causal && ht;
  double *ro = malloc(no * sizeof(double));
  double *rh = want_ht ? malloc(ns * sizeof(double)) : NULL;
  float *tmp = malloc(no * sizeof(float));
  if (!ro || !tmp || (want_ht && !rh)) {
    free(ro);
    free(rh);
    free(tmp);
    return tool_fail(e, "memory", "cannot allocate the reference outputs");
  }
  if (op->reference(p, o, ro, rh) != 0) {
    free(ro);
    free(rh);
    free(tmp);
    return tool_fail(e, op->name, "the float64 reference rejected the problem");
  }
  c->nmse_o = vkla_ref_nmse(ro, out, no);
  c->finite_o = vkla_ref_all_finite(out, no);
  c->target_o = dtype_target(ro, no, o->dtype, tmp);
  c->pass_o = c->finite_o && c->nmse_o <= c->target_o;
  c->pass = c->pass_o;
  if (want_ht) {
    c->has_ht = 1;
    c->nmse_ht = vkla_ref_nmse(rh, ht, ns);
    c->target_ht = TOOL_TARGET_F32; /* the state is fp32 whatever the storage dtype */
    c->finite_ht = vkla_ref_all_finite(ht, ns);
    c->pass_ht = c->finite_ht && c->nmse_ht <= c->target_ht;
    c->pass = c->pass && c->pass_ht;
  }
  free(ro);
  free(rh);
  free(tmp);
  return 0;
}

int tool_check_grads(const tool_op *op, const tool_problem *p, const tool_opts *o,
                     const float *const *grads, tool_grad_check *c, tool_err *e)
{
  memset(c, 0, sizeof *c);
  double *ref[TI_GRADS] = {0};
  size_t most = 1;
  int rc = -1;
  for (int i = 0; i < TI_GRADS; i++) {
    if (!grads[i] || !p->x[i])
      continue;
    size_t n = tool_input_count(p, i);
    most = n > most ? n : most;
    if (!(ref[i] = malloc((n ? n : 1) * sizeof(double)))) {
      tool_fail(e, "memory", "cannot allocate the reference gradients");
      goto done;
    }
  }
  float *tmp = malloc(most * sizeof(float));
  if (!tmp) {
    tool_fail(e, "memory", "cannot allocate the reference gradients");
    goto done;
  }
  if (!op->ref_bwd || op->ref_bwd(p, o, ref) != 0) {
    free(tmp);
    tool_fail(e, op->name, "the float64 reference rejected the problem");
    goto done;
  }
  c->pass = 1;
  for (int i = 0; i < TI_GRADS; i++) {
    if (!ref[i])
      continue;
    size_t n = tool_input_count(p, i);
    c->has[i] = 1;
    c->nmse[i] = vkla_ref_nmse(ref[i], grads[i], n);
    c->finite[i] = vkla_ref_all_finite(grads[i], n);
    c->target[i] = dtype_target(ref[i], n, tool_grad_dtype(i, o->dtype), tmp);
    /* dg_gamma sums every token's log-decay gradient, and those terms cancel: each term's f32
     * error is amplified by the cancellation, so its inputs are not well-conditioned in the
     * SPEC's sense; it gets ten times the f32 target */
    if (i == TI_G_GAMMA && c->target[i] < TOOL_TARGET_GAMMA)
      c->target[i] = TOOL_TARGET_GAMMA;
    c->pass_one[i] = c->finite[i] && c->nmse[i] <= c->target[i];
    c->pass = c->pass && c->pass_one[i];
  }
  free(tmp);
  rc = 0;
done:
  for (int i = 0; i < TI_GRADS; i++)
    free(ref[i]);
  return rc;
}

/* ------------------------------------------------------------------------------------------
 * Op adapters
 * ---------------------------------------------------------------------------------------- */

/* float32 problem arrays as double (for the reference) */
typedef struct dproblem {
  double *x[TI_COUNT];
} dproblem;

static void dproblem_free(dproblem *d)
{
  for (int i = 0; i < TI_COUNT; i++)
    free(d->x[i]);
}

static int dproblem_make(const tool_problem *p, dproblem *d)
{
  memset(d, 0, sizeof *d);
  for (int i = 0; i < TI_COUNT; i++) {
    if (i == TI_CU_SEQLENS || !p->x[i])
      continue;
    size_t n = tool_input_count(p, i);
    d->x[i] = malloc((n ? n : 1) * sizeof(double));
    if (!d->x[i]) {
      dproblem_free(d);
      return -1;
    }
    for (size_t j = 0; j < n; j++)
      d->x[i][j] = (double)p->x[i][j];
  }
  return 0;
}

/* compulsory traffic: every input read once, o written once, ht written once (bytes) */
static double model_bytes(const tool_problem *p, const tool_opts *o, int writes_ht)
{
  double es = (double)vkla_dtype_size(o->dtype), b = 0;
  for (int i = 0; i < TI_GRADS; i++) {
    if (!p->x[i])
      continue;
    double n = (double)tool_input_count(p, i);
    b += n * ((i == TI_Q || i == TI_K || i == TI_V) ? es : 4.0);
  }
  b += (double)tool_output_count(p) * es;
  if (writes_ht)
    b += (double)tool_state_count(p) * 4.0;
  return b;
}

/* Chunk statistics over all sequences: number of chunks and sums of c, c^2, c^3 over the
 * chunk lengths c (the last chunk of a sequence may be short). */
typedef struct chunk_sums {
  double n, s1, s2, s3;
} chunk_sums;

static chunk_sums chunk_stats(const tool_problem *p, int64_t C)
{
  chunk_sums cs = {0, 0, 0, 0};
  for (int64_t s = 0; s < p->N; s++) {
    int64_t L = p->cu_seqlens ? (int64_t)p->cu_seqlens[s + 1] - p->cu_seqlens[s] : p->T;
    double full = (double)(L / C), r = (double)(L % C), c = (double)C;
    cs.n += full + (r > 0);
    cs.s1 += full * c + r;
    cs.s2 += full * c * c + r * r;
    cs.s3 += full * c * c * c + r * r * r;
  }
  return cs;
}

static double sum_len_sq(const tool_problem *p)
{
  double s = 0;
  for (int64_t n = 0; n < p->N; n++) {
    double L = p->cu_seqlens ? (double)p->cu_seqlens[n + 1] - p->cu_seqlens[n] : (double)p->T;
    s += L * L;
  }
  return s;
}

static double tokens(const tool_problem *p) { return (double)p->B * (double)p->T; }

/* compulsory traffic of a backward pass: every input, do and dht read once, every gradient
 * written once (bytes) */
static double model_bytes_bwd(const tool_problem *p, const tool_opts *o)
{
  double es = (double)vkla_dtype_size(o->dtype);
  double b = 2.0 * (model_bytes(p, o, 0) - (double)tool_output_count(p) * es);
  b += (double)tool_output_count(p) * es;
  if (p->x[TI_DHT])
    b += (double)tool_state_count(p) * 4.0;
  return b;
}

/* ---- linear_attn ---- */
static void linear_attn_args_fill(const tool_dev *d, const tool_opts *o, vkla_linear_attn_args *a);

static vkla_result exec_linear_attn(vkla_context *ctx, const tool_dev *d, const tool_opts *o,
                                    uint32_t warmup, uint32_t reps, double *times_us)
{
  vkla_linear_attn_args a;
  linear_attn_args_fill(d, o, &a);
  return times_us ? vkla_linear_attn_bench(ctx, &a, warmup, reps, times_us)
                  : vkla_linear_attn_run(ctx, &a);
}

static vkla_result exec_linear_attn_bwd(vkla_context *ctx, const tool_dev *d,
                                        const tool_opts *o, uint32_t warmup, uint32_t reps,
                                        double *times_us)
{
  vkla_linear_attn_backward_args a;
  memset(&a, 0, sizeof a);
  linear_attn_args_fill(d, o, &a.fwd);
  a.dout = d->t[TI_DO];
  a.dht = d->t[TI_DHT];
  a.dq = d->grad[TI_Q];
  a.dk = d->grad[TI_K];
  a.dv = d->grad[TI_V];
  a.dg = d->grad[TI_G];
  a.dg_gamma = d->grad[TI_G_GAMMA];
  a.dgk = d->grad[TI_GK];
  a.dh0 = d->grad[TI_H0];
  return times_us ? vkla_linear_attn_backward_bench(ctx, &a, warmup, reps, times_us)
                  : vkla_linear_attn_backward_run(ctx, &a);
}

static void linear_attn_args_fill(const tool_dev *d, const tool_opts *o, vkla_linear_attn_args *a)
{
  memset(a, 0, sizeof *a);
  a->form = o->form;
  a->q = d->t[TI_Q];
  a->k = d->t[TI_K];
  a->v = d->t[TI_V];
  a->o = d->o;
  a->g = d->t[TI_G];
  a->g_gamma = d->t[TI_G_GAMMA];
  a->gk = d->t[TI_GK];
  a->h0 = d->t[TI_H0];
  a->ht = d->ht;
  a->cu_seqlens = d->cu_seqlens;
  a->num_seqs = d->num_seqs;
  a->scale = o->scale;
  a->normalize = o->normalize;
  a->eps = o->eps;
  a->chunk_size = o->chunk;
}

/* the reference's forward args over the double copies in d (outputs left NULL) */
static void ref_linear_attn_args_fill(const tool_problem *p, const tool_opts *o,
                                      const dproblem *d, vkla_ref_linear_attn_args *a);

static int ref_linear_attn(const tool_problem *p, const tool_opts *o, double *out, double *ht)
{
  dproblem d;
  if (dproblem_make(p, &d) != 0)
    return -1;
  vkla_ref_linear_attn_args a;
  ref_linear_attn_args_fill(p, o, &d, &a);
  a.o = out;
  a.ht = ht;
  int r = vkla_ref_linear_attn(&a);
  dproblem_free(&d);
  return r;
}

static int ref_linear_attn_bwd(const tool_problem *p, const tool_opts *o, double *const *g)
{
  dproblem d;
  if (dproblem_make(p, &d) != 0)
    return -1;
  vkla_ref_linear_attn_args f;
  ref_linear_attn_args_fill(p, o, &d, &f);
  vkla_ref_linear_attn_backward_args a = {
      .fwd = &f, .dout = d.x[TI_DO], .dht = d.x[TI_DHT], .dq = g[TI_Q], .dk = g[TI_K],
      .dv = g[TI_V], .dg = g[TI_G], .dg_gamma = g[TI_G_GAMMA], .dgk = g[TI_GK], .dh0 = g[TI_H0]};
  int r = vkla_ref_linear_attn_backward(&a);
  dproblem_free(&d);
  return r;
}

static void ref_linear_attn_args_fill(const tool_problem *p, const tool_opts *o,
                                      const dproblem *dp, vkla_ref_linear_attn_args *a)
{
    memset(a, 0, sizeof *a);
  a->B = (int)p->B;
  a->T = (int)p->T;
  a->H = (int)p->H;
  a->K = (int)p->K;
  a->V = (int)p->V;
  a->cu_seqlens = p->cu_seqlens;
  a->N = (int)p->N;
  a->q = dp->x[TI_Q];
  a->k = dp->x[TI_K];
  a->v = dp->x[TI_V];
  a->g = dp->x[TI_G];
  a->g_gamma = dp->x[TI_G_GAMMA];
  a->gk = dp->x[TI_GK];
  a->h0 = dp->x[TI_H0];
  a->scale = (double)o->scale;
  a->normalize = o->normalize;
  a->eps = (double)o->eps;
}

static void model_linear_attn(const tool_problem *p, const tool_opts *o, int writes_ht,
                              double *flops, double *bytes)
{
  double H = (double)p->H, K = (double)p->K, V = (double)p->V;
  int gated = p->x[TI_G] || p->x[TI_G_GAMMA] || p->x[TI_GK];
  double Vn = V + (o->normalize ? 1 : 0); /* the normalizer rides along as one more column */
  if (o->form == VKLA_FORM_RECURRENT) {
    double per = 4 * K * V + (gated ? K * V : 0) + (o->normalize ? 4 * K + V : 0);
    *flops = tokens(p) * H * per;
  } else {
    chunk_sums cs = chunk_stats(p, o->chunk ? o->chunk : 64);
    double f = (cs.s2 + cs.s1) * (K + Vn)   /* intra: causal (Q K^T) and (.) V */
               + 4 * K * Vn * cs.s1         /* (Q e^G) S and K^T V per token */
               + 2 * K * Vn * cs.n          /* state pass: decay and add per chunk */
               + (o->normalize ? V * cs.s1 : 0);
    *flops = H * f;
  }
  *bytes = model_bytes(p, o, writes_ht);
}

/* the backward of the chunk form (whatever the forward's form): states recomputed, the state
 * gradient's reverse pass, and per chunk the five products of dq, dk and dv */
static void model_linear_attn_bwd(const tool_problem *p, const tool_opts *o, int writes_ht,
                                  double *flops, double *bytes)
{
  (void)writes_ht;
  double H = (double)p->H, K = (double)p->K, V = (double)p->V;
  double Vn = V + (o->normalize ? 1 : 0);
  chunk_sums cs = chunk_stats(p, o->chunk ? o->chunk : 64);
  double f = (cs.s2 + cs.s1) * (3 * K + 2 * Vn)  /* dO V^T, Q K^T (causal) and their 3 uses */
             + 10 * K * Vn * cs.s1             /* K^T V, Q^T dO, dO S^T, V D^T, K D per token */
             + 4 * K * Vn * cs.n;              /* forward and reverse state passes */
  if (o->normalize)                            /* the forward's output pass, for o and q.z */
    f += (cs.s2 + cs.s1) * (K + Vn) + 2 * K * Vn * cs.s1;
  *flops = H * f;
  *bytes = model_bytes_bwd(p, o);
}

static double ref_cost_causal(const tool_problem *p)
{
  return tokens(p) * (double)p->HV * (double)p->K * (double)p->V * 6.0;
}

/* ---- delta_rule ---- */
static void ref_delta_rule_args_fill(const tool_problem *p, const tool_opts *o,
                                     const dproblem *d, vkla_ref_delta_rule_args *a);

static int ref_delta_rule(const tool_problem *p, const tool_opts *o, double *out, double *ht)
{
  dproblem d;
  if (dproblem_make(p, &d) != 0)
    return -1;
  vkla_ref_delta_rule_args a;
  ref_delta_rule_args_fill(p, o, &d, &a);
  a.o = out;
  a.ht = ht;
  int r = vkla_ref_delta_rule(&a);
  dproblem_free(&d);
  return r;
}

static int ref_delta_rule_bwd(const tool_problem *p, const tool_opts *o, double *const *g)
{
  dproblem d;
  if (dproblem_make(p, &d) != 0)
    return -1;
  vkla_ref_delta_rule_args f;
  ref_delta_rule_args_fill(p, o, &d, &f);
  vkla_ref_delta_rule_backward_args a = {
      .fwd = &f, .dout = d.x[TI_DO], .dht = d.x[TI_DHT], .dq = g[TI_Q], .dk = g[TI_K],
      .dv = g[TI_V], .dbeta = g[TI_BETA], .dg = g[TI_G], .dh0 = g[TI_H0]};
  int r = vkla_ref_delta_rule_backward(&a);
  dproblem_free(&d);
  return r;
}

static void ref_delta_rule_args_fill(const tool_problem *p, const tool_opts *o,
                                     const dproblem *dp, vkla_ref_delta_rule_args *a)
{
    memset(a, 0, sizeof *a);
  a->B = (int)p->B;
  a->T = (int)p->T;
  a->H = (int)p->H;
  a->HV = (int)p->HV;
  a->K = (int)p->K;
  a->V = (int)p->V;
  a->cu_seqlens = p->cu_seqlens;
  a->N = (int)p->N;
  a->q = dp->x[TI_Q];
  a->k = dp->x[TI_K];
  a->v = dp->x[TI_V];
  a->beta = dp->x[TI_BETA];
  a->g = dp->x[TI_G];
  a->h0 = dp->x[TI_H0];
  a->scale = (double)o->scale;
  a->l2norm = o->l2norm;
}

static void model_delta_rule(const tool_problem *p, const tool_opts *o, int writes_ht,
                             double *flops, double *bytes)
{
  double HV = (double)p->HV, K = (double)p->K, V = (double)p->V;
  int gated = p->x[TI_G] != NULL;
  if (o->form == VKLA_FORM_RECURRENT) {
    /* S'^T k, k u^T, S^T q: 2KV each; u: 2V; gate: KV */
    double per = 6 * K * V + 2 * V + (gated ? K * V : 0);
    *flops = tokens(p) * HV * per;
  } else {
    chunk_sums cs = chunk_stats(p, o->chunk ? o->chunk : 64);
    double f = (cs.s2 - cs.s1) * K              /* A = strictly_lower(K K^T) */
               + cs.s3 / 3.0                    /* T = (I + A)^-1 */
               + (cs.s2 + cs.s1) * (K + V)      /* W = T (b e^G K), U = T (b V) */
               + (cs.s2 + cs.s1) * (K + V)      /* intra: causal (Q K^T) and (.) V' */
               + 6 * K * V * cs.s1              /* W S, (Q e^G) S, K^T V' per token */
               + 2 * K * V * cs.n;              /* state pass per chunk */
    *flops = HV * f;
  }
  *bytes = model_bytes(p, o, writes_ht);
}

/* the backward of the chunk form: the WY factors and the states recomputed, the reverse state
 * pass, the products of dV', dS, dQ, dK through V' = U - W S, and the gradient through
 * U = T diag(b) V, W = T diag(b e^G) K and T = (I + A)^-1 */
static void model_delta_rule_bwd(const tool_problem *p, const tool_opts *o, int writes_ht,
                                 double *flops, double *bytes)
{
  (void)writes_ht;
  double HV = (double)p->HV, K = (double)p->K, V = (double)p->V;
  chunk_sums cs = chunk_stats(p, o->chunk ? o->chunk : 64);
  double f = (cs.s2 - cs.s1) * K + cs.s3 / 3.0 + (cs.s2 + cs.s1) * (K + V) /* A, T, W, U */
             + 4 * K * V * cs.s1                 /* forward state pass: W S, K^T V' */
             + (cs.s2 + cs.s1) * (4 * K + 2 * V) /* Q K^T, dO V'^T and their uses */
             + 12 * K * V * cs.s1                /* dV', dS, dQ, dK inter-chunk products */
             + 2 * cs.s2 * (2 * K + V)           /* dT, T^T dU, T^T dW */
             + 2.0 * cs.s3 / 3.0                 /* dA = -T^T dT T^T */
             + 2 * cs.s2 * K                     /* dA into K */
             + 4 * K * V * cs.n;                 /* the two state passes */
  *flops = HV * f;
  *bytes = model_bytes_bwd(p, o);
}

static void delta_rule_args_fill(const tool_dev *d, const tool_opts *o, vkla_delta_rule_args *a);

/* vkla-run delta_rule / vkla-bench --op delta_rule */
static vkla_result exec_delta_rule(vkla_context *ctx, const tool_dev *d, const tool_opts *o,
                                   uint32_t warmup, uint32_t reps, double *times_us)
{
  vkla_delta_rule_args a;
  delta_rule_args_fill(d, o, &a);
  return times_us ? vkla_delta_rule_bench(ctx, &a, warmup, reps, times_us)
                  : vkla_delta_rule_run(ctx, &a);
}

static vkla_result exec_delta_rule_bwd(vkla_context *ctx, const tool_dev *d, const tool_opts *o,
                                       uint32_t warmup, uint32_t reps, double *times_us)
{
  vkla_delta_rule_backward_args a;
  memset(&a, 0, sizeof a);
  delta_rule_args_fill(d, o, &a.fwd);
  a.dout = d->t[TI_DO];
  a.dht = d->t[TI_DHT];
  a.dq = d->grad[TI_Q];
  a.dk = d->grad[TI_K];
  a.dv = d->grad[TI_V];
  a.dbeta = d->grad[TI_BETA];
  a.dg = d->grad[TI_G];
  a.dh0 = d->grad[TI_H0];
  return times_us ? vkla_delta_rule_backward_bench(ctx, &a, warmup, reps, times_us)
                  : vkla_delta_rule_backward_run(ctx, &a);
}

static void delta_rule_args_fill(const tool_dev *d, const tool_opts *o, vkla_delta_rule_args *a)
{
  memset(a, 0, sizeof *a);
  a->form = o->form;
  a->q = d->t[TI_Q];
  a->k = d->t[TI_K];
  a->v = d->t[TI_V];
  a->o = d->o;
  a->beta = d->t[TI_BETA];
  a->g = d->t[TI_G];
  a->h0 = d->t[TI_H0];
  a->ht = d->ht;
  a->cu_seqlens = d->cu_seqlens;
  a->num_seqs = d->num_seqs;
  a->scale = o->scale;
  a->l2norm = o->l2norm;
  a->chunk_size = o->chunk;
}

/* ---- lion ---- */
static void ref_lion_args_fill(const tool_problem *p, const tool_opts *o, const dproblem *d,
                               vkla_ref_lion_args *a);

static int ref_lion(const tool_problem *p, const tool_opts *o, double *out, double *ht)
{
  (void)ht;
  dproblem d;
  if (dproblem_make(p, &d) != 0)
    return -1;
  vkla_ref_lion_args a;
  ref_lion_args_fill(p, o, &d, &a);
  a.o = out;
  int r = vkla_ref_lion(&a);
  dproblem_free(&d);
  return r;
}

static int ref_lion_bwd(const tool_problem *p, const tool_opts *o, double *const *g)
{
  dproblem d;
  if (dproblem_make(p, &d) != 0)
    return -1;
  vkla_ref_lion_args f;
  ref_lion_args_fill(p, o, &d, &f);
  vkla_ref_lion_backward_args a = {.fwd = &f, .dout = d.x[TI_DO], .dq = g[TI_Q], .dk = g[TI_K],
                                   .dv = g[TI_V], .dg = g[TI_G], .dg_gamma = g[TI_G_GAMMA]};
  int r = vkla_ref_lion_backward(&a);
  dproblem_free(&d);
  return r;
}

static void ref_lion_args_fill(const tool_problem *p, const tool_opts *o, const dproblem *dp,
                               vkla_ref_lion_args *a)
{
    memset(a, 0, sizeof *a);
  a->B = (int)p->B;
  a->T = (int)p->T;
  a->H = (int)p->H;
  a->K = (int)p->K;
  a->V = (int)p->V;
  a->cu_seqlens = p->cu_seqlens;
  a->N = (int)p->N;
  a->q = dp->x[TI_Q];
  a->k = dp->x[TI_K];
  a->v = dp->x[TI_V];
  a->g = dp->x[TI_G];
  a->g_gamma = dp->x[TI_G_GAMMA];
  a->scale = (double)o->scale;
  a->normalize = o->normalize;
  a->eps = (double)o->eps;
}

static void model_lion(const tool_problem *p, const tool_opts *o, int writes_ht,
                       double *flops, double *bytes)
{
  double H = (double)p->H, K = (double)p->K, V = (double)p->V;
  int gated = p->x[TI_G] || p->x[TI_G_GAMMA];
  double nz = o->normalize ? 1 : 0;
  if (o->form == VKLA_FORM_ATTN) {
    double L2 = sum_len_sq(p);
    *flops = H * (L2 * (2 * K + 2 * V + nz) + nz * tokens(p) * V);
  } else if (o->form == VKLA_FORM_RNN) {
    double Vn = V + nz;
    /* two scans (update 2KV, output 2KV each), gates KV per scan, diagonal fix 2K + 2V */
    double per = 8 * K * Vn + (gated ? 2 * K * Vn : 0) + 2 * K + 2 * Vn + nz * V;
    *flops = tokens(p) * H * per;
  } else {
    double Vn = V + nz;
    chunk_sums cs = chunk_stats(p, o->chunk ? o->chunk : 64);
    double f = 2 * cs.s2 * (K + Vn)     /* intra: full (Q K^T) and (.) V */
               + 8 * K * Vn * cs.s1     /* two directions: K^T V and Q S per token */
               + 4 * K * Vn * cs.n      /* two state passes per chunk */
               + nz * V * cs.s1;
    *flops = H * f;
  }
  *bytes = model_bytes(p, o, writes_ht);
}

static double ref_cost_lion(const tool_problem *p)
{
  return sum_len_sq(p) * (double)p->H * 2.0 * (double)(p->K + p->V);
}

/* the backward of the chunk form: the forward's pass again when normalizing (for o and the
 * denominators), then dq, dk and dv, each a bidirectional chunk product like the forward's */
static void model_lion_bwd(const tool_problem *p, const tool_opts *o, int writes_ht,
                           double *flops, double *bytes)
{
  (void)writes_ht;
  double H = (double)p->H, K = (double)p->K, V = (double)p->V;
  double Vn = V + (o->normalize ? 1 : 0);
  chunk_sums cs = chunk_stats(p, o->chunk ? o->chunk : 64);
  double f = 2 * cs.s2 * (3 * K + 2 * Vn)  /* dO V^T, Q K^T (full) and their 3 uses */
             + 24 * K * Vn * cs.s1         /* three products, two directions, 2 x 2KV each */
             + 12 * K * Vn * cs.n;         /* their state passes */
  if (o->normalize) {
    double fo;
    tool_opts fw = *o;
    fw.form = VKLA_FORM_CHUNK;
    model_lion(p, &fw, 0, &fo, bytes);
    f += fo / H;
  }
  *flops = H * f;
  *bytes = model_bytes_bwd(p, o);
}

static void lion_args_fill(const tool_dev *d, const tool_opts *o, vkla_lion_args *a);

static vkla_result exec_lion(vkla_context *ctx, const tool_dev *d, const tool_opts *o,
                             uint32_t warmup, uint32_t reps, double *times_us)
{
  vkla_lion_args a;
  lion_args_fill(d, o, &a);
  return times_us ? vkla_lion_bench(ctx, &a, warmup, reps, times_us) : vkla_lion_run(ctx, &a);
}

static vkla_result exec_lion_bwd(vkla_context *ctx, const tool_dev *d, const tool_opts *o,
                                 uint32_t warmup, uint32_t reps, double *times_us)
{
  vkla_lion_backward_args a;
  memset(&a, 0, sizeof a);
  lion_args_fill(d, o, &a.fwd);
  a.dout = d->t[TI_DO];
  a.dq = d->grad[TI_Q];
  a.dk = d->grad[TI_K];
  a.dv = d->grad[TI_V];
  a.dg = d->grad[TI_G];
  a.dg_gamma = d->grad[TI_G_GAMMA];
  return times_us ? vkla_lion_backward_bench(ctx, &a, warmup, reps, times_us)
                  : vkla_lion_backward_run(ctx, &a);
}

static void lion_args_fill(const tool_dev *d, const tool_opts *o, vkla_lion_args *a)
{
  memset(a, 0, sizeof *a);
  a->form = o->form;
  a->q = d->t[TI_Q];
  a->k = d->t[TI_K];
  a->v = d->t[TI_V];
  a->o = d->o;
  a->g = d->t[TI_G];
  a->g_gamma = d->t[TI_G_GAMMA];
  a->cu_seqlens = d->cu_seqlens;
  a->num_seqs = d->num_seqs;
  a->scale = o->scale;
  a->normalize = o->normalize;
  a->eps = o->eps;
  a->chunk_size = o->chunk;
}

const tool_op tool_ops[] = {
    {
        .name = "linear_attn",
        .forms = TOOL_FORM_BIT(VKLA_FORM_CHUNK) | TOOL_FORM_BIT(VKLA_FORM_RECURRENT),
        .default_form = VKLA_FORM_CHUNK,
        .required = TI_BIT(TI_Q) | TI_BIT(TI_K) | TI_BIT(TI_V),
        .optional = TI_BIT(TI_G) | TI_BIT(TI_G_GAMMA) | TI_BIT(TI_GK) | TI_BIT(TI_H0) |
                    TI_BIT(TI_CU_SEQLENS),
        .options = TOPT_CHUNK | TOPT_SCALE | TOPT_NORMALIZE | TOPT_EPS,
        .causal = 1,
        .grouped_heads = 0,
        .exec = exec_linear_attn,
        .reference = ref_linear_attn,
        .model = model_linear_attn,
        .ref_cost = ref_cost_causal,
        .exec_bwd = exec_linear_attn_bwd,
        .ref_bwd = ref_linear_attn_bwd,
        .model_bwd = model_linear_attn_bwd,
    },
    {
        .name = "delta_rule",
        .forms = TOOL_FORM_BIT(VKLA_FORM_CHUNK) | TOOL_FORM_BIT(VKLA_FORM_RECURRENT),
        .default_form = VKLA_FORM_CHUNK,
        .required = TI_BIT(TI_Q) | TI_BIT(TI_K) | TI_BIT(TI_V) | TI_BIT(TI_BETA),
        .optional = TI_BIT(TI_G) | TI_BIT(TI_H0) | TI_BIT(TI_CU_SEQLENS),
        .options = TOPT_CHUNK | TOPT_SCALE | TOPT_L2NORM,
        .causal = 1,
        .grouped_heads = 1,
        .exec = exec_delta_rule,
        .reference = ref_delta_rule,
        .model = model_delta_rule,
        .ref_cost = ref_cost_causal,
        .exec_bwd = exec_delta_rule_bwd,
        .ref_bwd = ref_delta_rule_bwd,
        .model_bwd = model_delta_rule_bwd,
    },
    {
        .name = "lion",
        .forms = TOOL_FORM_BIT(VKLA_FORM_CHUNK) | TOOL_FORM_BIT(VKLA_FORM_ATTN) |
                 TOOL_FORM_BIT(VKLA_FORM_RNN),
        .default_form = VKLA_FORM_CHUNK,
        .required = TI_BIT(TI_Q) | TI_BIT(TI_K) | TI_BIT(TI_V),
        .optional = TI_BIT(TI_G) | TI_BIT(TI_G_GAMMA) | TI_BIT(TI_CU_SEQLENS),
        .options = TOPT_CHUNK | TOPT_SCALE | TOPT_NORMALIZE | TOPT_EPS,
        .causal = 0,
        .grouped_heads = 0,
        .exec = exec_lion,
        .reference = ref_lion,
        .model = model_lion,
        .ref_cost = ref_cost_lion,
        .exec_bwd = exec_lion_bwd,
        .ref_bwd = ref_lion_bwd,
        .model_bwd = model_lion_bwd,
    },
};
const int tool_op_count = (int)(sizeof tool_ops / sizeof tool_ops[0]);

const tool_op *tool_find_op(const char *name)
{
  for (int i = 0; i < tool_op_count; i++)
    if (name && strcmp(name, tool_ops[i].name) == 0)
      return &tool_ops[i];
  return NULL;
}
