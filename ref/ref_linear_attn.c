/* ref_linear_attn.c - float64 reference of causal linear attention
 * (SPEC.md section 1), one recurrence step per token:
 *
 *   S_t = exp(g_t + g_gamma + gk_t[c]) S_{t-1}[c,:] + k_t[c] v_t^T   (row c of S)
 *   o_t = scale * S_t^T q_t
 *
 * The three gates are summed in log space before the exp, so the decay of key
 * channel c is exp(g_t + g_gamma + gk_t[c]); an absent gate contributes 0.
 * With normalize, z_t[c] = (same decay) z_{t-1}[c] + k_t[c] and
 * o_t = scale * S_t^T q_t / (scale * q_t . z_t + eps).
 */
#include "vkla_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int vkla_ref_linear_attn(const vkla_ref_linear_attn_args *a)
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
  double *S = malloc(K * V * sizeof *S);
  double *z = malloc(K * sizeof *z);
  if (!S || !z) {
    free(S);
    free(z);
    return -1;
  }

  for (int n = 0; n < nseq; n++) {
    int b, t0, t1;
    vkla_ref_seq_range(a->T, a->cu_seqlens, n, &b, &t0, &t1);
    for (size_t h = 0; h < H; h++) {
      const size_t sh = (size_t)n * H + h; /* state row [n, h] */

      if (a->h0)
        memcpy(S, a->h0 + sh * K * V, K * V * sizeof *S);
      else
        memset(S, 0, K * V * sizeof *S);
      for (size_t c = 0; c < K; c++)
        z[c] = (a->normalize && a->z0) ? a->z0[sh * K + c] : 0.0;

      for (int t = t0; t < t1; t++) {
        const size_t th = ((size_t)b * T + (size_t)t) * H + h; /* token [b, t, h] */
        const double *qt = a->q + th * K;
        const double *kt = a->k + th * K;
        const double *vt = a->v + th * V;
        double *ot = a->o + th * V;

        double lg = 0.0;                /* scalar part of the log decay */
        if (a->g)
          lg += a->g[th];
        if (a->g_gamma)
          lg += a->g_gamma[h];

        for (size_t c = 0; c < K; c++) {
          const double d = exp(a->gk ? lg + a->gk[th * K + c] : lg);
          double *Sc = S + c * V;
          for (size_t j = 0; j < V; j++)
            Sc[j] = d * Sc[j] + kt[c] * vt[j];
          z[c] = d * z[c] + kt[c];
        }

        double den = 1.0;
        if (a->normalize) {
          double qz = 0.0;
          for (size_t c = 0; c < K; c++)
            qz += qt[c] * z[c];
          den = a->scale * qz + a->eps;
        }
        for (size_t j = 0; j < V; j++) {
          double acc = 0.0;
          for (size_t c = 0; c < K; c++)
            acc += qt[c] * S[c * V + j];
          ot[j] = a->scale * acc / den;
        }
      }

      if (a->ht)
        memcpy(a->ht + sh * K * V, S, K * V * sizeof *S);
      if (a->normalize && a->zt)
        memcpy(a->zt + sh * K, z, K * sizeof *z);
    }
  }
  free(S);
  free(z);
  return 0;
}
