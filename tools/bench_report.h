/*
 * bench_report.h - the output side of vkla-bench that needs no device: reading its JSON lines
 * back, --compare of two runs, and the SVG plot (tokens/s against T per op, form and dtype).
 */
#ifndef VKLA_BENCH_REPORT_H
#define VKLA_BENCH_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One case of a run: the fields of a JSON line that the reports use. Numbers that were null
 * (or absent) are NaN. */
typedef struct bench_rec {
  char op[32], form[16], pass[8], dtype[8], gate[16], status[16]; /* pass: "fwd" if absent */
  int64_t B, T, H, K, V;
  double median_us, min_us, max_us, tokens_per_s, gflops, gbs, frac_flops, frac_bw;
  char device_name[256], driver_info[256], commit[64];
} bench_rec;

/* Reads a JSON lines file of vkla-bench (one object per line; blank lines are skipped).
 * Appends to *recs / *n (realloc'ed; free() it). 0, or -1 with a message naming the line. */
int bench_read_jsonl(const char *path, bench_rec **recs, int *n, char *err, size_t errn);

/* "op form pass dtype B T H K V gate": the key that matches the same case across runs. */
void bench_case_key(const bench_rec *r, char *buf, size_t n);

/* Prints, for every case that ran in both runs, the two medians and the ratio B/A of the times,
 * then the geometric mean of the ratios. Returns the number of matched cases. */
int bench_compare(FILE *out, const char *name_a, const bench_rec *a, int na, const char *name_b,
                  const bench_rec *b, int nb);

/* Writes an SVG (no dependencies) of tokens/s (log scale) against T (log scale), one panel per
 * op and shape (B, H, K, V, gate), one line per form and dtype; decode cases (T = 1) are
 * plotted against the batch size instead. Only cases with status "ok" are drawn.
 * 0, or -1 with a message. */
int bench_write_svg(const char *path, const bench_rec *r, int n, const char *subtitle, char *err,
                    size_t errn);

#ifdef __cplusplus
}
#endif

#endif
