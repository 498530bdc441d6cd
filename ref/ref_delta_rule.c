/* ref_delta_rule.c - float64 reference of the (gated) delta rule
 * (SPEC.md section 2), one recurrence step per token:
 *
 *   S'_t = exp(g_t) S_{t-1}            (S'_t = S_{t-1} without g)
 *   u_t  = beta_t (v_t - S'_t^T k_t)
 *   S_t  = S'_t + k_t u_t^T
 *   o_t  = scale * S_t^T q_t
 *
 * Value head j (of HV) reads q/k head j / (HV/H); g and beta are per value head.
 * With l2norm, q and k are replaced by x / sqrt(sum x^2 + 1e-6) first.
 */
#include "vkla_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int vkla_ref_delta_rule(const vkla_ref_delta_rule_args *a)
{
  int nseq;
  if (!a || a->H < 1 || a->HV < 1 || a->K < 1 || a->V < 1)
    return -1;
  if (a->HV % a->H != 0)
    return -1;
  if (!a->q || !a->k || !a->v || !a->beta || !a->o)
    return -1;
  if (vkla_ref_seq_check(a->B, a->T, a->cu_seqlens, a->N, &nseq))
    return -1;

  const size_t H = (size_t)a->H, HV = (size_t)a->HV;
  const size_t K = (size_t)a->K, V = (size_t)a->V, T = (size_t)a->T;
  const size_t group = HV / H;
  double *S = malloc(K * V * sizeof *S);
  double *qn = malloc(K * sizeof *qn);
  double *kn = malloc(K * sizeof *kn);
  double *u = malloc(V * sizeof *u);
  if (!S || !qn || !kn || !u) {
    free(S);
    free(qn);
    free(kn);
    free(u);
    return -1;
  }

  for (int n = 0; n < nseq; n++) {
    int b, t0, t1;
    vkla_ref_seq_range(a->T, a->cu_seqlens, n, &b, &t0, &t1);
    for (size_t hv = 0; hv < HV; hv++) {
      const size_t hq = hv / group;      /* q/k head read by this value head */
      const size_t sh = (size_t)n * HV + hv;

      if (a->h0)
        memcpy(S, a->h0 + sh * K * V, K * V * sizeof *S);
      else
        memset(S, 0, K * V * sizeof *S);

      for (int t = t0; t < t1; t++) {
        const size_t row = (size_t)b * T + (size_t)t;
        const size_t tq = row * H + hq;  /* token index into q, k */
        const size_t tv = row * HV + hv; /* token index into v, o, beta, g */
        const double *vt = a->v + tv * V;
        double *ot = a->o + tv * V;
        const double beta = a->beta[tv];

        vkla_ref_l2_row(qn, a->q + tq * K, K, a->l2norm);
        vkla_ref_l2_row(kn, a->k + tq * K, K, a->l2norm);

        /* S' = exp(g) S */
        if (a->g) {
          const double d = exp(a->g[tv]);
          for (size_t i = 0; i < K * V; i++)
            S[i] *= d;
        }
        /* u = beta (v - S'^T k) */
        for (size_t j = 0; j < V; j++) {
          double pred = 0.0;
          for (size_t c = 0; c < K; c++)
            pred += kn[c] * S[c * V + j];
          u[j] = beta * (vt[j] - pred);
        }
        /* S = S' + k u^T */
        for (size_t c = 0; c < K; c++)
          for (size_t j = 0; j < V; j++)
            S[c * V + j] += kn[c] * u[j];
        /* o = scale S^T q */
        for (size_t j = 0; j < V; j++) {
          double acc = 0.0;
          for (size_t c = 0; c < K; c++)
            acc += qn[c] * S[c * V + j];
          ot[j] = a->scale * acc;
        }
      }

      if (a->ht)
        memcpy(a->ht + sh * K * V, S, K * V * sizeof *S);
    }
  }
  free(S);
  free(qn);
  free(kn);
  free(u);
  return 0;
}
