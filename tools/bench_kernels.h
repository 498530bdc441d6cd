/* vkla-bench --kernels: the per-kernel breakdown of one case (vkla_context_profile), grouped by
 * kernel, as a console table and as the "kernels" array of a JSON line (docs/bench.md). */
#ifndef VKLA_BENCH_KERNELS_H_
#define VKLA_BENCH_KERNELS_H_

#include <stdio.h>

#include "common.h"

#define BENCH_MAX_KERNELS 32

/* One kernel of an op call: every launch of that pipeline summed. */
typedef struct bench_kernel {
  char name[64];
  uint32_t launches;   /* launches of it per op call */
  uint32_t dispatches; /* vkCmdDispatch calls of those launches */
  uint32_t groups[3];  /* workgroups of its first dispatch */
  double time_us;      /* sum of the launches' median times */
  double flops, bytes; /* sum of the launches' models */
} bench_kernel;

typedef struct bench_kernels {
  int n;
  bench_kernel k[BENCH_MAX_KERNELS];
  uint32_t launches;   /* launches per op call */
  double total_us;     /* median time of the profiled op calls */
  double sum_us;       /* sum of every launch's median */
} bench_kernels;

/* Runs exec (warmup, reps) with the context's profile on and groups the launches by kernel,
 * in order of first launch. Returns the library's result (the profile is off again after). */
vkla_result bench_kernels_measure(vkla_context *ctx, tool_exec_fn exec, const tool_dev *d,
                                  const tool_opts *o, uint32_t warmup, uint32_t reps,
                                  bench_kernels *out);
/* The table under a case's row: kernel, launches, GPU ms, share of the op's time, GFLOP/s,
 * GB/s. */
void bench_kernels_print(FILE *f, const bench_kernels *k);
/* ", \"kernels\": [...], \"kernels_total_us\": ..." for a JSON line. */
void bench_kernels_json(FILE *f, const bench_kernels *k);

#endif
