/* vkla-bench --kernels: the per-kernel breakdown of a case (docs/bench.md, "Per-kernel
 * breakdown"). */
#include "bench_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAUNCHES 1024

vkla_result bench_kernels_measure(vkla_context *ctx, tool_exec_fn exec, const tool_dev *d,
                                  const tool_opts *o, uint32_t warmup, uint32_t reps,
                                  bench_kernels *out)
{
  memset(out, 0, sizeof *out);
  vkla_kernel_time *kt = calloc(MAX_LAUNCHES, sizeof *kt);
  double *times = calloc(reps ? reps : 1, sizeof *times);
  if (!kt || !times) {
    free(kt);
    free(times);
    return VKLA_ERROR_OUT_OF_MEMORY;
  }
  vkla_profile prof = {kt, MAX_LAUNCHES, 0, 0, 0};
  vkla_result r = vkla_context_profile(ctx, &prof);
  if (r == VKLA_SUCCESS)
    r = exec(ctx, d, o, warmup, reps, times);
  vkla_context_profile(ctx, NULL);
  if (r == VKLA_SUCCESS) {
    out->launches = prof.count;
    out->total_us = prof.total_us;
    uint32_t n = prof.count < MAX_LAUNCHES ? prof.count : MAX_LAUNCHES;
    for (uint32_t i = 0; i < n; i++) {
      const vkla_kernel_time *t = &kt[i];
      int j = 0;
      while (j < out->n && strcmp(out->k[j].name, t->name) != 0)
        j++;
      if (j == out->n) {
        if (out->n == BENCH_MAX_KERNELS)
          j = out->n - 1; /* more kernels than rows: the last row takes the rest */
        else {
          out->n++;
          snprintf(out->k[j].name, sizeof out->k[j].name, "%s", t->name);
          memcpy(out->k[j].groups, t->groups, sizeof t->groups);
        }
      }
      bench_kernel *b = &out->k[j];
      b->launches++;
      b->dispatches += t->dispatches;
      b->time_us += t->time_us;
      b->flops += t->flops;
      b->bytes += t->bytes;
      out->sum_us += t->time_us;
    }
  }
  free(kt);
  free(times);
  return r;
}

static double rate(double amount, double us)
{
  return us > 0 ? amount / (us * 1e-6) * 1e-9 : 0;
}

void bench_kernels_print(FILE *f, const bench_kernels *k)
{
  fprintf(f, "    %-34s %8s %10s %6s %9s %8s  %s\n", "kernel", "launches", "GPU_ms", "share",
          "GFLOP/s", "GB/s", "groups (first dispatch)");
  for (int i = 0; i < k->n; i++) {
    const bench_kernel *b = &k->k[i];
    double share = k->total_us > 0 ? b->time_us / k->total_us : 0;
    fprintf(f, "    %-34s %8u %10.3f %5.1f%% %9.2f %8.2f  %ux%ux%u\n", b->name, b->launches,
            b->time_us * 1e-3, 100 * share, rate(b->flops, b->time_us),
            rate(b->bytes, b->time_us), b->groups[0], b->groups[1], b->groups[2]);
  }
  fprintf(f, "    %-34s %8u %10.3f %5.1f%%   (op %.3f ms; the rest: barriers, table uploads)\n",
          "sum of launches", k->launches, k->sum_us * 1e-3,
          k->total_us > 0 ? 100 * k->sum_us / k->total_us : 0, k->total_us * 1e-3);
}

static void num(FILE *f, const char *key, double v)
{
  if (isfinite(v))
    fprintf(f, "\"%s\": %.6g", key, v);
  else
    fprintf(f, "\"%s\": null", key);
}

void bench_kernels_json(FILE *f, const bench_kernels *k)
{
  fprintf(f, ", \"kernels\": [");
  for (int i = 0; i < k->n; i++) {
    const bench_kernel *b = &k->k[i];
    fprintf(f, "%s{\"name\": ", i ? ", " : "");
    tool_json_string(f, b->name);
    fprintf(f, ", \"launches\": %u, \"dispatches\": %u, \"groups\": [%u, %u, %u], ", b->launches,
            b->dispatches, b->groups[0], b->groups[1], b->groups[2]);
    num(f, "time_us", b->time_us);
    fprintf(f, ", ");
    num(f, "share", k->total_us > 0 ? b->time_us / k->total_us : NAN);
    fprintf(f, ", ");
    num(f, "flops", b->flops);
    fprintf(f, ", ");
    num(f, "bytes", b->bytes);
    fprintf(f, ", ");
    num(f, "gflops", rate(b->flops, b->time_us));
    fprintf(f, ", ");
    num(f, "gbs", rate(b->bytes, b->time_us));
    fprintf(f, "}");
  }
  fprintf(f, "], ");
  num(f, "kernels_total_us", k->total_us);
  fprintf(f, ", ");
  num(f, "kernels_sum_us", k->sum_us);
}
