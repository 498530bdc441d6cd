/* ref_lion.c - float64 reference of LION bidirectional linear attention
 * (SPEC.md section 3), in the T x T attention form:
 *
 *   A_ij = scale (q_i . k_j) M_ij
 *   o_i  = sum_j A_ij v_j                       (or / (sum_j A_ij + eps) with normalize)
 *
 *   log M_ij = a_j + ... + a_(i-1)   for i > j
 *            = a_(i+1) + ... + a_j   for i < j
 *            = 0                     for i = j
 *
 * with the per-token log decay a_t = g[t] (LION-S) + g_gamma[h] (LION-D); an absent
 * gate contributes 0, so with neither M is all ones (LION-LIT).
 *
 * log M_ij is accumulated as a running (prefix) sum anchored at i, walking
 * outwards: for j = i-1, i-2, ... log M_ij = log M_i(j+1) + a_j, and for
 * j = i+1, i+2, ... log M_ij = log M_i(j-1) + a_j. This is exact term-by-term
 * (no difference of two large global prefix sums, so no cancellation), and a
 * -inf or very negative decay simply makes exp() underflow to 0 for every j
 * beyond it; -inf - -inf (NaN) never occurs. Only O(T) memory is used.
 */
#include "vkla_ref.h"

#include <math.h>
#include <stdlib.h>

int vkla_ref_lion(const vkla_ref_lion_args *a)
{
  int nseq;
  if (!a || a->H < 1 || a->K < 1 || a->V < 1)
    return -1;
  if (!a->q || !a->k || !a->v || !a->o)
    return -1;
  if (vkla_ref_seq_check(a->B, a->T, a->cu_seqlens, a->N, &nseq))
    return -1;

  const size_t H = (size_t)a->H, K = (size_t)a->K, V = (size_t)a->V;
  const size_t T = (size_t)a->T;
  double *lg = malloc(T * sizeof *lg);   /* a_t of the current sequence/head */
  double *acc = malloc(V * sizeof *acc);
  if (!lg || !acc) {
    free(lg);
    free(acc);
    return -1;
  }

  for (int n = 0; n < nseq; n++) {
    int b, t0, t1;
    vkla_ref_seq_range(a->T, a->cu_seqlens, n, &b, &t0, &t1);
    const size_t base = (size_t)b * T; /* row of token 0 of batch row b */
    for (size_t h = 0; h < H; h++) {
      for (int t = t0; t < t1; t++) {
        double x = 0.0;
        if (a->g)
          x += a->g[(base + (size_t)t) * H + h];
        if (a->g_gamma)
          x += a->g_gamma[h];
        lg[t] = x;
      }

      for (int i = t0; i < t1; i++) {
        const size_t ti = (base + (size_t)i) * H + h;
        const double *qi = a->q + ti * K;
        double den = 0.0;   /* sum_j A_ij */
        for (size_t c = 0; c < V; c++)
          acc[c] = 0.0;

        /* three passes over j: the diagonal, the past (j < i), the future (j > i) */
        for (int pass = 0; pass < 3; pass++) {
          const int step = pass == 1 ? -1 : 1;
          int j = pass == 0 ? i : i + step;
          const int jend = pass == 0 ? i + 1 : (pass == 1 ? t0 - 1 : t1);
          double logm = 0.0;
          for (; j != jend; j += step) {
            if (pass != 0)
              logm += lg[j];
            const double m = exp(logm);   /* underflows to 0, never NaN for g <= 0 */
            const size_t tj = (base + (size_t)j) * H + h;
            const double *kj = a->k + tj * K;
            const double *vj = a->v + tj * V;
            double qk = 0.0;
            for (size_t c = 0; c < K; c++)
              qk += qi[c] * kj[c];
            const double w = a->scale * qk * m;
            den += w;
            for (size_t c = 0; c < V; c++)
              acc[c] += w * vj[c];
          }
        }

        double *oi = a->o + ti * V;
        for (size_t c = 0; c < V; c++)
          oi[c] = a->normalize ? acc[c] / (den + a->eps) : acc[c];
      }
    }
  }
  free(lg);
  free(acc);
  return 0;
}
