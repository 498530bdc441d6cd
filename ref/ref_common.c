/* ref_common.c - shared helpers of the float64 reference (see vkla_ref.h). */
#include "vkla_ref.h"

#include <math.h>

int vkla_ref_seq_check(int B, int T, const int32_t *cu_seqlens, int N, int *nseq)
{
  if (B < 1 || T < 1 || !nseq)
    return -1;
  if (!cu_seqlens) {
    *nseq = B;
    return 0;
  }
  /* packed variable-length layout: one batch row holding N sequences */
  if (B != 1 || N < 1)
    return -1;
  if (cu_seqlens[0] != 0 || cu_seqlens[N] != T)
    return -1;
  for (int n = 0; n < N; n++)
    if (cu_seqlens[n + 1] < cu_seqlens[n])
      return -1;
  *nseq = N;
  return 0;
}

void vkla_ref_seq_range(int T, const int32_t *cu_seqlens, int n,
                        int *b, int *t0, int *t1)
{
  if (cu_seqlens) {
    *b = 0;
    *t0 = cu_seqlens[n];
    *t1 = cu_seqlens[n + 1];
  } else {
    *b = n;
    *t0 = 0;
    *t1 = T;
  }
}

double vkla_ref_l2_row(double *dst, const double *src, size_t n, int l2norm)
{
  double inv = 1.0;
  if (l2norm) {
    double ss = 0.0;
    for (size_t c = 0; c < n; c++)
      ss += src[c] * src[c];
    inv = 1.0 / sqrt(ss + 1e-6);
  }
  for (size_t c = 0; c < n; c++)
    dst[c] = src[c] * inv;
  return inv;
}

double vkla_ref_nmse(const double *ref, const float *out, size_t n)
{
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    double d = ref[i] - (double)out[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den == 0.0 ? num : num / den;
}

int vkla_ref_all_finite(const float *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return 0;
  return 1;
}
