/*
 * bench_report.c - JSON lines reader, --compare and the SVG plot of vkla-bench (see
 * bench_report.h). Plain C, no dependencies.
 */
#include "bench_report.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * A small JSON reader for the flat objects vkla-bench writes (nested values are skipped)
 * ---------------------------------------------------------------------------------------- */
static void skip_ws(const char **p)
{
  while (**p == ' ' || **p == '\t' || **p == '\r' || **p == '\n')
    (*p)++;
}

static int hexval(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* *p at the opening quote; out may be NULL (skip). Non-ASCII \u escapes become UTF-8. */
static int parse_string(const char **p, char *out, size_t n)
{
  const char *s = *p;
  size_t len = 0;
  if (*s != '"')
    return -1;
  s++;
  for (;;) {
    unsigned char c = (unsigned char)*s;
    char buf[4];
    size_t m = 1;
    if (c == 0)
      return -1;
    if (c == '"') {
      s++;
      break;
    }
    if (c == '\\') {
      s++;
      switch (*s) {
      case '"': buf[0] = '"'; break;
      case '\\': buf[0] = '\\'; break;
      case '/': buf[0] = '/'; break;
      case 'b': buf[0] = '\b'; break;
      case 'f': buf[0] = '\f'; break;
      case 'n': buf[0] = '\n'; break;
      case 'r': buf[0] = '\r'; break;
      case 't': buf[0] = '\t'; break;
      case 'u': {
        unsigned cp = 0;
        for (int i = 1; i <= 4; i++) {
          int h = hexval(s[i]);
          if (h < 0)
            return -1;
          cp = cp * 16 + (unsigned)h;
        }
        s += 4;
        if (cp < 0x80) {
          buf[0] = (char)cp;
        } else if (cp < 0x800) {
          buf[0] = (char)(0xc0 | (cp >> 6));
          buf[1] = (char)(0x80 | (cp & 0x3f));
          m = 2;
        } else if (cp >= 0xd800 && cp < 0xe000) {
          buf[0] = '?'; /* surrogate halves: not worth decoding here */
        } else {
          buf[0] = (char)(0xe0 | (cp >> 12));
          buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
          buf[2] = (char)(0x80 | (cp & 0x3f));
          m = 3;
        }
        break;
      }
      default:
        return -1;
      }
      s++;
    } else {
      buf[0] = (char)c;
      s++;
    }
    for (size_t i = 0; i < m; i++) {
      if (out && len + 1 < n)
        out[len] = buf[i];
      len++;
    }
  }
  if (out && n)
    out[len < n ? len : n - 1] = 0;
  *p = s;
  return 0;
}

static int skip_value(const char **p, int depth);

static int skip_container(const char **p, char close, int depth)
{
  (*p)++;
  skip_ws(p);
  if (**p == close) {
    (*p)++;
    return 0;
  }
  for (;;) {
    skip_ws(p);
    if (close == '}') {
      if (parse_string(p, NULL, 0) != 0)
        return -1;
      skip_ws(p);
      if (**p != ':')
        return -1;
      (*p)++;
    }
    if (skip_value(p, depth + 1) != 0)
      return -1;
    skip_ws(p);
    if (**p == ',') {
      (*p)++;
      continue;
    }
    if (**p == close) {
      (*p)++;
      return 0;
    }
    return -1;
  }
}

static int skip_value(const char **p, int depth)
{
  if (depth > 32)
    return -1;
  skip_ws(p);
  char c = **p;
  if (c == '"')
    return parse_string(p, NULL, 0);
  if (c == '{')
    return skip_container(p, '}', depth);
  if (c == '[')
    return skip_container(p, ']', depth);
  if (strncmp(*p, "true", 4) == 0 || strncmp(*p, "null", 4) == 0) {
    *p += 4;
    return 0;
  }
  if (strncmp(*p, "false", 5) == 0) {
    *p += 5;
    return 0;
  }
  char *end;
  errno = 0;
  (void)strtod(*p, &end);
  if (end == *p)
    return -1;
  *p = end;
  return 0;
}

static void rec_init(bench_rec *r)
{
  memset(r, 0, sizeof *r);
  r->B = r->T = r->H = r->K = r->V = -1;
  r->median_us = r->min_us = r->max_us = r->tokens_per_s = NAN;
  r->gflops = r->gbs = r->frac_flops = r->frac_bw = NAN;
}

static void set_field(bench_rec *r, const char *key, const char *sval, int is_str, double num)
{
  static const struct { const char *k; size_t off, n; } strs[] = {
      {"op", offsetof(bench_rec, op), sizeof(((bench_rec *)0)->op)},
      {"form", offsetof(bench_rec, form), sizeof(((bench_rec *)0)->form)},
      {"pass", offsetof(bench_rec, pass), sizeof(((bench_rec *)0)->pass)},
      {"dtype", offsetof(bench_rec, dtype), sizeof(((bench_rec *)0)->dtype)},
      {"gate", offsetof(bench_rec, gate), sizeof(((bench_rec *)0)->gate)},
      {"status", offsetof(bench_rec, status), sizeof(((bench_rec *)0)->status)},
      {"device_name", offsetof(bench_rec, device_name), sizeof(((bench_rec *)0)->device_name)},
      {"driver_info", offsetof(bench_rec, driver_info), sizeof(((bench_rec *)0)->driver_info)},
      {"commit", offsetof(bench_rec, commit), sizeof(((bench_rec *)0)->commit)},
  };
  static const struct { const char *k; size_t off; } ints[] = {
      {"B", offsetof(bench_rec, B)}, {"T", offsetof(bench_rec, T)}, {"H", offsetof(bench_rec, H)},
      {"K", offsetof(bench_rec, K)}, {"V", offsetof(bench_rec, V)},
  };
  static const struct { const char *k; size_t off; } dbls[] = {
      {"time_us_median", offsetof(bench_rec, median_us)},
      {"time_us_min", offsetof(bench_rec, min_us)},
      {"time_us_max", offsetof(bench_rec, max_us)},
      {"tokens_per_s", offsetof(bench_rec, tokens_per_s)},
      {"gflops", offsetof(bench_rec, gflops)},
      {"gbs", offsetof(bench_rec, gbs)},
      {"frac_flops", offsetof(bench_rec, frac_flops)},
      {"frac_bw", offsetof(bench_rec, frac_bw)},
  };
  char *base = (char *)r;
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
    if (is_str && strcmp(key, strs[i].k) == 0) {
      snprintf(base + strs[i].off, strs[i].n, "%s", sval);
      return;
    }
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    if (!is_str && strcmp(key, ints[i].k) == 0) {
      *(int64_t *)(void *)(base + ints[i].off) = isfinite(num) ? (int64_t)num : -1;
      return;
    }
  for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++)
    if (!is_str && strcmp(key, dbls[i].k) == 0) {
      *(double *)(void *)(base + dbls[i].off) = num;
      return;
    }
}

/* One line = one object. 0 ok, -1 malformed (msg says where). */
static int parse_line(const char *line, bench_rec *r, const char **msg)
{
  const char *p = line;
  rec_init(r);
  skip_ws(&p);
  if (*p != '{') {
    *msg = "expected a JSON object";
    return -1;
  }
  p++;
  skip_ws(&p);
  if (*p == '}') {
    p++;
  } else {
    for (;;) {
      char key[64], sval[512];
      skip_ws(&p);
      if (parse_string(&p, key, sizeof key) != 0) {
        *msg = "bad key";
        return -1;
      }
      skip_ws(&p);
      if (*p != ':') {
        *msg = "expected ':'";
        return -1;
      }
      p++;
      skip_ws(&p);
      if (*p == '"') {
        if (parse_string(&p, sval, sizeof sval) != 0) {
          *msg = "bad string value";
          return -1;
        }
        set_field(r, key, sval, 1, 0);
      } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
        char *end;
        double v = strtod(p, &end);
        if (end == p) {
          *msg = "bad number";
          return -1;
        }
        p = end;
        set_field(r, key, NULL, 0, v);
      } else if (strncmp(p, "null", 4) == 0) {
        p += 4;
        set_field(r, key, NULL, 0, NAN);
      } else if (skip_value(&p, 0) != 0) {
        *msg = "bad value";
        return -1;
      }
      skip_ws(&p);
      if (*p == ',') {
        p++;
        continue;
      }
      if (*p == '}') {
        p++;
        break;
      }
      *msg = "expected ',' or '}'";
      return -1;
    }
  }
  skip_ws(&p);
  if (*p) {
    *msg = "text after the object";
    return -1;
  }
  if (!r->op[0] || !r->form[0] || !r->dtype[0] || r->B < 0 || r->T < 0 || r->H < 0 ||
      r->K < 0 || r->V < 0) {
    *msg = "not a vkla-bench case (needs op form dtype B T H K V)";
    return -1;
  }
  if (!r->status[0]) /* older files: a median means it ran */
    snprintf(r->status, sizeof r->status, "%s", isfinite(r->median_us) ? "ok" : "unknown");
  return 0;
}

int bench_read_jsonl(const char *path, bench_rec **recs, int *n, char *err, size_t errn)
{
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errn, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  long lineno = 0;
  int rc = 0, cap_recs = *n;
  while ((len = getline(&line, &cap, f)) >= 0) {
    lineno++;
    const char *p = line;
    skip_ws(&p);
    if (!*p)
      continue;
    bench_rec r;
    const char *msg = "";
    if (parse_line(line, &r, &msg) != 0) {
      snprintf(err, errn, "%s:%ld: %s", path, lineno, msg);
      rc = -1;
      break;
    }
    if (*n >= cap_recs) {
      cap_recs = cap_recs ? cap_recs * 2 : 64;
      bench_rec *nr = realloc(*recs, (size_t)cap_recs * sizeof **recs);
      if (!nr) {
        snprintf(err, errn, "%s: out of memory", path);
        rc = -1;
        break;
      }
      *recs = nr;
    }
    (*recs)[(*n)++] = r;
  }
  if (rc == 0 && ferror(f)) {
    snprintf(err, errn, "%s: read error", path);
    rc = -1;
  }
  free(line);
  fclose(f);
  return rc;
}

/* ------------------------------------------------------------------------------------------
 * --compare
 * ---------------------------------------------------------------------------------------- */
void bench_case_key(const bench_rec *r, char *buf, size_t n)
{
  snprintf(buf, n, "%s %s %s %s %lld %lld %lld %lld %lld %s", r->op, r->form,
           r->pass[0] ? r->pass : "fwd", r->dtype,
           (long long)r->B, (long long)r->T, (long long)r->H, (long long)r->K, (long long)r->V,
           r->gate[0] ? r->gate : "none");
}

static int rec_ok(const bench_rec *r)
{
  return strcmp(r->status, "ok") == 0 && isfinite(r->median_us) && r->median_us > 0;
}

static void describe_run(FILE *out, const char *tag, const char *name, const bench_rec *r, int n)
{
  const bench_rec *first = NULL;
  for (int i = 0; i < n && !first; i++)
    if (rec_ok(&r[i]))
      first = &r[i];
  fprintf(out, "# %s: %s", tag, name);
  if (first)
    fprintf(out, " -- %s | %s | commit %s", first->device_name, first->driver_info,
            first->commit[0] ? first->commit : "?");
  fprintf(out, " (%d case%s)\n", n, n == 1 ? "" : "s");
}

int bench_compare(FILE *out, const char *name_a, const bench_rec *a, int na, const char *name_b,
                  const bench_rec *b, int nb)
{
  describe_run(out, "A", name_a, a, na);
  describe_run(out, "B", name_b, b, nb);
  fprintf(out, "%-11s %-9s %-4s %-5s %4s %7s %4s %4s %4s %-7s %12s %12s %8s\n", "op", "form",
          "pass", "dtype", "B", "T", "H", "K", "V", "gate", "A_median_us", "B_median_us", "B/A");
  char *used = calloc((size_t)(nb ? nb : 1), 1);
  if (!used)
    return 0;
  int matched = 0, only_a = 0;
  double log_sum = 0, lo = INFINITY, hi = 0;
  char ka[256], kb[256];
  for (int i = 0; i < na; i++) {
    if (!rec_ok(&a[i]))
      continue;
    bench_case_key(&a[i], ka, sizeof ka);
    int dup = 0;
    for (int k = 0; k < i && !dup; k++) {
      char kk[256];
      bench_case_key(&a[k], kk, sizeof kk);
      dup = rec_ok(&a[k]) && strcmp(kk, ka) == 0;
    }
    if (dup) /* pooled files: the first occurrence of a case counts */
      continue;
    int j;
    for (j = 0; j < nb; j++) {
      if (used[j] || !rec_ok(&b[j]))
        continue;
      bench_case_key(&b[j], kb, sizeof kb);
      if (strcmp(ka, kb) == 0)
        break;
    }
    if (j == nb) {
      only_a++;
      continue;
    }
    used[j] = 1;
    double ratio = b[j].median_us / a[i].median_us;
    fprintf(out, "%-11s %-9s %-4s %-5s %4lld %7lld %4lld %4lld %4lld %-7s %12.1f %12.1f %8.3f\n",
            a[i].op, a[i].form, a[i].pass[0] ? a[i].pass : "fwd", a[i].dtype, (long long)a[i].B, (long long)a[i].T,
            (long long)a[i].H, (long long)a[i].K, (long long)a[i].V,
            a[i].gate[0] ? a[i].gate : "none", a[i].median_us, b[j].median_us, ratio);
    log_sum += log(ratio);
    if (ratio < lo)
      lo = ratio;
    if (ratio > hi)
      hi = ratio;
    matched++;
  }
  int only_b = 0;
  for (int j = 0; j < nb; j++)
    if (!used[j] && rec_ok(&b[j])) {
      int dup = 0;
      bench_case_key(&b[j], kb, sizeof kb);
      for (int k = 0; k < j && !dup; k++) {
        char kk[256];
        bench_case_key(&b[k], kk, sizeof kk);
        dup = rec_ok(&b[k]) && strcmp(kk, kb) == 0;
      }
      only_b += !dup;
    }
  free(used);
  if (matched) {
    double g = exp(log_sum / matched);
    fprintf(out, "geomean B/A (time) over %d case%s: %.3f (range %.3f .. %.3f): ", matched,
            matched == 1 ? "" : "s", g, lo, hi);
    if (fabs(g - 1) < 0.005)
      fprintf(out, "the same speed\n");
    else
      fprintf(out, "B is %.2fx %s\n", g < 1 ? 1 / g : g, g < 1 ? "faster" : "slower");
  } else {
    fprintf(out, "no case ran in both runs\n");
  }
  if (only_a || only_b)
    fprintf(out, "not compared: %d case%s only in A, %d only in B\n", only_a,
            only_a == 1 ? "" : "s", only_b);
  return matched;
}

/* ------------------------------------------------------------------------------------------
 * SVG
 * ---------------------------------------------------------------------------------------- */
static void xml_text(FILE *f, const char *s)
{
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    switch (*c) {
    case '&': fputs("&amp;", f); break;
    case '<': fputs("&lt;", f); break;
    case '>': fputs("&gt;", f); break;
    case '"': fputs("&quot;", f); break;
    case '\'': fputs("&apos;", f); break;
    default:
      if (*c >= 0x20 || *c == '\t')
        fputc(*c, f);
      else
        fputc(' ', f);
    }
  }
}

/* 1234 -> "1.2k", 2e6 -> "2M" */
static void fmt_si(char *buf, size_t n, double v)
{
  static const char *suf[] = {"", "k", "M", "G", "T", "P"};
  int i = 0;
  while (fabs(v) >= 1000 && i < 5) {
    v /= 1000;
    i++;
  }
  if (i == 0 && fabs(v) < 1 && v != 0)
    snprintf(buf, n, "%.2g", v);
  else if (fabs(v - floor(v + 0.5)) < 1e-9)
    snprintf(buf, n, "%.0f%s", v, suf[i]);
  else
    snprintf(buf, n, "%.1f%s", v, suf[i]);
}

static void fmt_count(char *buf, size_t n, long long x)
{
  if (x >= 1024 && x % 1024 == 0)
    snprintf(buf, n, "%lldk", x / 1024);
  else
    snprintf(buf, n, "%lld", x);
}

typedef struct svg_series {
  char form[16], dtype[8];
  int *idx;   /* records, sorted by x */
  int n;
} svg_series;

typedef struct svg_panel {
  char key[192], title[256];
  int decode;
  svg_series *s;
  int ns;
} svg_panel;

static const char *form_color(const char *form)
{
  if (strcmp(form, "chunk") == 0) return "#1f77b4";
  if (strcmp(form, "recurrent") == 0) return "#d62728";
  if (strcmp(form, "attn") == 0) return "#2ca02c";
  if (strcmp(form, "rnn") == 0) return "#9467bd";
  return "#7f7f7f";
}

static const char *dtype_dash(const char *dtype)
{
  if (strcmp(dtype, "f16") == 0) return "7,4";
  if (strcmp(dtype, "bf16") == 0) return "2,3";
  return "none";
}

static const bench_rec *g_sort_recs;
static int g_sort_decode;

static double rec_x(const bench_rec *r, int decode) { return (double)(decode ? r->B : r->T); }

static int cmp_by_x(const void *a, const void *b)
{
  double x = rec_x(&g_sort_recs[*(const int *)a], g_sort_decode);
  double y = rec_x(&g_sort_recs[*(const int *)b], g_sort_decode);
  return (x > y) - (x < y);
}

static int plottable(const bench_rec *r)
{
  return rec_ok(r) && isfinite(r->tokens_per_s) && r->tokens_per_s > 0 && r->T >= 1 && r->B >= 1;
}

#define PANEL_W 660
#define PANEL_H 360
#define PLOT_L 78
#define PLOT_R 190
#define PLOT_T 44
#define PLOT_B 56

static void draw_panel(FILE *f, const svg_panel *pn, const bench_rec *r, double ox, double oy)
{
  double xmin = INFINITY, xmax = 0, ymin = INFINITY, ymax = 0;
  for (int s = 0; s < pn->ns; s++)
    for (int i = 0; i < pn->s[s].n; i++) {
      const bench_rec *q = &r[pn->s[s].idx[i]];
      double x = rec_x(q, pn->decode), y = q->tokens_per_s;
      xmin = x < xmin ? x : xmin;
      xmax = x > xmax ? x : xmax;
      ymin = y < ymin ? y : ymin;
      ymax = y > ymax ? y : ymax;
    }
  double lx0 = log2(xmin), lx1 = log2(xmax);
  if (lx1 - lx0 < 1e-9) {
    lx0 -= 1;
    lx1 += 1;
  }
  double padx = 0.06 * (lx1 - lx0);
  lx0 -= padx;
  lx1 += padx;
  double ly0 = floor(log10(ymin)), ly1 = ceil(log10(ymax));
  if (ly1 - ly0 < 1)
    ly1 = ly0 + 1;
  const double px0 = ox + PLOT_L, px1 = ox + PANEL_W - PLOT_R, py0 = oy + PLOT_T,
               py1 = oy + PANEL_H - PLOT_B;
#define SX(x) (px0 + (log2(x) - lx0) / (lx1 - lx0) * (px1 - px0))
#define SY(y) (py1 - (log10(y) - ly0) / (ly1 - ly0) * (py1 - py0))

  fprintf(f, "<g>\n<text x=\"%.1f\" y=\"%.1f\" class=\"pt\">", ox + PLOT_L, oy + 26);
  xml_text(f, pn->title);
  fprintf(f, "</text>\n");
  fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n", px0,
          py0, px1 - px0, py1 - py0);
  /* y grid and ticks: decades, plus 2 and 5 when the range is short */
  int dec = (int)(ly1 - ly0);
  for (int e = (int)ly0; e <= (int)ly1; e++) {
    static const double mult[] = {1, 2, 5};
    for (int m = 0; m < 3; m++) {
      if (m > 0 && dec > 3)
        break;
      double v = mult[m] * pow(10.0, e);
      double lv = log10(v);
      if (lv < ly0 - 1e-9 || lv > ly1 + 1e-9)
        continue;
      double y = SY(v);
      char lab[32];
      fmt_si(lab, sizeof lab, v);
      fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"%s\"/>\n", px0, y,
              px1, y, m == 0 ? "grid" : "grid2");
      fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"tick\"/>\n",
              px0 - 5, y, px0, y);
      fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"yl\">%s</text>\n", px0 - 8, y + 4, lab);
    }
  }
  /* x ticks at the values measured (thinned when crowded) */
  double xs[64];
  int nx = 0;
  for (int s = 0; s < pn->ns; s++)
    for (int i = 0; i < pn->s[s].n && nx < 64; i++) {
      double x = rec_x(&r[pn->s[s].idx[i]], pn->decode);
      int seen = 0;
      for (int k = 0; k < nx; k++)
        seen |= xs[k] == x;
      if (!seen)
        xs[nx++] = x;
    }
  for (int a = 1; a < nx; a++) /* insertion sort */
    for (int b = a; b > 0 && xs[b - 1] > xs[b]; b--) {
      double t = xs[b];
      xs[b] = xs[b - 1];
      xs[b - 1] = t;
    }
  int every = nx > 12 ? (nx + 11) / 12 : 1;
  for (int k = 0; k < nx; k += every) {
    double x = SX(xs[k]);
    char lab[32];
    fmt_count(lab, sizeof lab, (long long)xs[k]);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid2\"/>\n", x, py0,
            x, py1);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"tick\"/>\n", x, py1,
            x, py1 + 5);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">%s</text>\n", x, py1 + 18, lab);
  }
  fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"at\">%s</text>\n", (px0 + px1) / 2, py1 + 40,
          pn->decode ? "batch size (decode step, T = 1)" : "T (tokens per sequence)");
  fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" class=\"at\">tokens/s</text>\n",
          ox + 18, (py0 + py1) / 2);
  /* series */
  for (int s = 0; s < pn->ns; s++) {
    const svg_series *se = &pn->s[s];
    const char *col = form_color(se->form), *dash = dtype_dash(se->dtype);
    fprintf(f, "<polyline class=\"ser\" stroke=\"%s\" stroke-dasharray=\"%s\" points=\"", col,
            dash);
    for (int i = 0; i < se->n; i++) {
      const bench_rec *q = &r[se->idx[i]];
      fprintf(f, "%s%.1f,%.1f", i ? " " : "", SX(rec_x(q, pn->decode)), SY(q->tokens_per_s));
    }
    fprintf(f, "\"/>\n");
    for (int i = 0; i < se->n; i++) {
      const bench_rec *q = &r[se->idx[i]];
      char tok[32];
      fmt_si(tok, sizeof tok, q->tokens_per_s);
      fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s %s B=%lld T=%lld: "
                 "%s tokens/s, %.1f us</title></circle>\n",
              SX(rec_x(q, pn->decode)), SY(q->tokens_per_s), col, se->form, se->dtype,
              (long long)q->B, (long long)q->T, tok, q->median_us);
    }
    /* legend entry */
    double ly = py0 + 8 + 18.0 * s, lx = px1 + 14;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"ser\" stroke=\"%s\" "
               "stroke-dasharray=\"%s\"/>\n",
            lx, ly, lx + 30, ly, col, dash);
    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", lx + 15, ly, col);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"lg\">", lx + 38, ly + 4);
    xml_text(f, se->form);
    fputc(' ', f);
    xml_text(f, se->dtype);
    fprintf(f, "</text>\n");
  }
  fprintf(f, "</g>\n");
#undef SX
#undef SY
}

int bench_write_svg(const char *path, const bench_rec *r, int n, const char *subtitle, char *err,
                    size_t errn)
{
  svg_panel *pn = NULL;
  int np = 0, rc = -1;
  for (int i = 0; i < n; i++) {
    if (!plottable(&r[i]))
      continue;
    int decode = r[i].T == 1;
    char key[192], title[256], shape[128], opname[48];
    snprintf(opname, sizeof opname, "%s%s", r[i].op, strcmp(r[i].pass, "bwd") == 0 ? " backward" : "");
    const char *gate = r[i].gate[0] ? r[i].gate : "none";
    if (r[i].K == r[i].V)
      snprintf(shape, sizeof shape, "H=%lld K=V=%lld gate=%s", (long long)r[i].H,
               (long long)r[i].K, gate);
    else
      snprintf(shape, sizeof shape, "H=%lld K=%lld V=%lld gate=%s", (long long)r[i].H,
               (long long)r[i].K, (long long)r[i].V, gate);
    if (decode) {
      snprintf(key, sizeof key, "%s|decode|%s", opname, shape);
      snprintf(title, sizeof title, "%s decode step (T = 1, h0), %s", opname, shape);
    } else {
      snprintf(key, sizeof key, "%s|%lld|%s", opname, (long long)r[i].B, shape);
      snprintf(title, sizeof title, "%s  B=%lld %s", opname, (long long)r[i].B, shape);
    }
    int p;
    for (p = 0; p < np && strcmp(pn[p].key, key) != 0; p++)
      ;
    if (p == np) {
      svg_panel *npn = realloc(pn, (size_t)(np + 1) * sizeof *pn);
      if (!npn)
        goto oom;
      pn = npn;
      memset(&pn[np], 0, sizeof pn[np]);
      snprintf(pn[np].key, sizeof pn[np].key, "%s", key);
      snprintf(pn[np].title, sizeof pn[np].title, "%s", title);
      pn[np].decode = decode;
      np++;
    }
    svg_panel *P = &pn[p];
    int s;
    for (s = 0; s < P->ns && !(strcmp(P->s[s].form, r[i].form) == 0 &&
                               strcmp(P->s[s].dtype, r[i].dtype) == 0); s++)
      ;
    if (s == P->ns) {
      svg_series *ns = realloc(P->s, (size_t)(P->ns + 1) * sizeof *P->s);
      if (!ns)
        goto oom;
      P->s = ns;
      memset(&P->s[P->ns], 0, sizeof P->s[0]);
      snprintf(P->s[P->ns].form, sizeof P->s[0].form, "%s", r[i].form);
      snprintf(P->s[P->ns].dtype, sizeof P->s[0].dtype, "%s", r[i].dtype);
      P->ns++;
    }
    int *ni = realloc(P->s[s].idx, (size_t)(P->s[s].n + 1) * sizeof(int));
    if (!ni)
      goto oom;
    P->s[s].idx = ni;
    P->s[s].idx[P->s[s].n++] = i;
  }
  if (np == 0) {
    snprintf(err, errn, "%s: no case with a measured time to plot", path);
    goto done;
  }
  g_sort_recs = r;
  for (int p = 0; p < np; p++) {
    g_sort_decode = pn[p].decode;
    for (int s = 0; s < pn[p].ns; s++)
      qsort(pn[p].s[s].idx, (size_t)pn[p].s[s].n, sizeof(int), cmp_by_x);
  }
  FILE *f = fopen(path, "w");
  if (!f) {
    snprintf(err, errn, "%s: cannot open: %s", path, strerror(errno));
    goto done;
  }
  int cols = np > 1 ? 2 : 1, rows = (np + cols - 1) / cols;
  double head = subtitle && *subtitle ? 64 : 44;
  double W = cols * PANEL_W + 20, Hh = head + rows * PANEL_H + 10;
  fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
             "viewBox=\"0 0 %.0f %.0f\"\n     font-family=\"DejaVu Sans, Helvetica, Arial, "
             "sans-serif\">\n",
          W, Hh, W, Hh);
  fprintf(f, "<style>\n"
             ".frame{fill:none;stroke:#333;stroke-width:1}\n"
             ".grid{stroke:#d0d0d0;stroke-width:1}\n"
             ".grid2{stroke:#ececec;stroke-width:1}\n"
             ".tick{stroke:#333;stroke-width:1}\n"
             ".ser{fill:none;stroke-width:2}\n"
             ".yl{font-size:11px;text-anchor:end;fill:#222}\n"
             ".xl{font-size:11px;text-anchor:middle;fill:#222}\n"
             ".at{font-size:12px;text-anchor:middle;fill:#222}\n"
             ".lg{font-size:12px;fill:#222}\n"
             ".pt{font-size:13px;font-weight:bold;fill:#111}\n"
             ".tt{font-size:16px;font-weight:bold;fill:#111}\n"
             ".st{font-size:12px;fill:#444}\n"
             "</style>\n");
  fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  fprintf(f, "<text x=\"20\" y=\"26\" class=\"tt\">vkla-bench: tokens/s against T (log-log), per "
             "op, form (colour) and dtype (dash: f32 solid, f16 dashed, bf16 dotted)</text>\n");
  if (subtitle && *subtitle) {
    fprintf(f, "<text x=\"20\" y=\"46\" class=\"st\">");
    xml_text(f, subtitle);
    fprintf(f, "</text>\n");
  }
  for (int p = 0; p < np; p++)
    draw_panel(f, &pn[p], r, 10 + (p % cols) * PANEL_W, head + (p / cols) * PANEL_H);
  fprintf(f, "</svg>\n");
  if (fclose(f) != 0) {
    snprintf(err, errn, "%s: write error", path);
    goto done;
  }
  rc = 0;
  goto done;
oom:
  snprintf(err, errn, "out of memory");
done:
  for (int p = 0; p < np; p++) {
    for (int s = 0; s < pn[p].ns; s++)
      free(pn[p].s[s].idx);
    free(pn[p].s);
  }
  free(pn);
  return rc;
}
