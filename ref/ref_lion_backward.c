/* ref_lion_backward.c - float64 gradients of LION (SPEC.md sections 3 and 4), by hand from the
 * T x T definition (O(T^2) per sequence and head):
 *
 *   A_ij = scale (q_i . k_j) M_ij,   o_i = sum_j A_ij v_j   [/ d_i,  d_i = sum_j A_ij + eps]
 *
 * With normalize the denominator is one more value column of ones: the upstream gradient of
 * the augmented output (n_i, d_i) is do'_i = do_i / d_i and dd_i = -(do_i . o_i) / d_i, and
 * with P_ij = do'_i . v_j + dd_i (P_ij = do_i . v_j without normalize):
 *
 *   dq_i = scale sum_j M_ij P_ij k_j,   dk_j = scale sum_i M_ij P_ij q_i,
 *   dv_j = sum_i A_ij do'_i,
 *   d L / d log M_ij = G_ij = A_ij P_ij,
 *
 * and log M_ij is the sum of a_t over t in [j, i-1] (i > j) or [i+1, j] (i < j), so
 * da_t = sum of G_ij over the pairs whose path holds t (accumulated with a difference array).
 * dg = da where g is given; dg_gamma[h] = sum of da over every token and sequence. */
#include "vkla_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int vkla_ref_lion_backward(const vkla_ref_lion_backward_args *a)
{
  if (!a || !a->fwd || !a->dout)
    return -1;
  const vkla_ref_lion_args *f = a->fwd;
  int nseq;
  if (f->H < 1 || f->K < 1 || f->V < 1 || !f->q || !f->k || !f->v)
    return -1;
  if (vkla_ref_seq_check(f->B, f->T, f->cu_seqlens, f->N, &nseq))
    return -1;
  if ((a->dg && !f->g) || (a->dg_gamma && !f->g_gamma))
    return -1;

  const size_t H = (size_t)f->H, K = (size_t)f->K, V = (size_t)f->V, T = (size_t)f->T;
  const size_t rows = (size_t)f->B * T * H;
  if (a->dq)
    memset(a->dq, 0, rows * K * sizeof(double));
  if (a->dk)
    memset(a->dk, 0, rows * K * sizeof(double));
  if (a->dv)
    memset(a->dv, 0, rows * V * sizeof(double));
  if (a->dg)
    memset(a->dg, 0, (size_t)f->B * T * H * sizeof(double));
  if (a->dg_gamma)
    memset(a->dg_gamma, 0, H * sizeof(double));

  double *lg = malloc(T * sizeof *lg);     /* a_t of the current sequence and head */
  double *m = malloc(T * sizeof *m);       /* row i of M */
  double *den = malloc(T * sizeof *den);   /* d_i (normalize) */
  double *dd = malloc(T * sizeof *dd);     /* dd_i (normalize) */
  double *dif = malloc((T + 1) * sizeof *dif);
  double *acc = malloc(V * sizeof *acc);
  if (!lg || !m || !den || !dd || !dif || !acc) {
    free(lg); free(m); free(den); free(dd); free(dif); free(acc);
    return -1;
  }

  for (int n = 0; n < nseq; n++) {
    int b, t0, t1;
    vkla_ref_seq_range(f->T, f->cu_seqlens, n, &b, &t0, &t1);
    const size_t base = (size_t)b * T;
    for (size_t h = 0; h < H; h++) {
      for (int t = t0; t < t1; t++) {
        double x = 0.0;
        if (f->g)
          x += f->g[(base + (size_t)t) * H + h];
        if (f->g_gamma)
          x += f->g_gamma[h];
        lg[t] = x;
      }
      /* row i of M: walk outwards from the diagonal, as the forward reference does */
#define MASK_ROW(i)                                                                            \
      do {                                                                                     \
        double lm_ = 0.0;                                                                      \
        m[i] = 1.0;                                                                            \
        for (int j_ = (i) - 1; j_ >= t0; j_--) { lm_ += lg[j_]; m[j_] = exp(lm_); }            \
        lm_ = 0.0;                                                                             \
        for (int j_ = (i) + 1; j_ < t1; j_++) { lm_ += lg[j_]; m[j_] = exp(lm_); }             \
      } while (0)
#define ROW(x, t, d) ((x) + ((base + (size_t)(t)) * H + h) * (d))

      /* normalize: the denominators and the gradient of each denominator */
      if (f->normalize) {
        for (int i = t0; i < t1; i++) {
          MASK_ROW(i);
          double s = 0.0;
          for (size_t c = 0; c < V; c++)
            acc[c] = 0.0;
          for (int j = t0; j < t1; j++) {
            double qk = 0.0;
            for (size_t c = 0; c < K; c++)
              qk += ROW(f->q, i, K)[c] * ROW(f->k, j, K)[c];
            const double w = f->scale * qk * m[j];
            s += w;
            for (size_t c = 0; c < V; c++)
              acc[c] += w * ROW(f->v, j, V)[c];
          }
          den[i] = s + f->eps;
          double dot = 0.0;
          for (size_t c = 0; c < V; c++)
            dot += ROW(a->dout, i, V)[c] * acc[c] / den[i];
          dd[i] = -dot / den[i];
        }
      }

      for (int t = t0; t <= t1; t++)
        dif[t - t0] = 0.0;
      for (int i = t0; i < t1; i++) {
        MASK_ROW(i);
        const double *qi = ROW(f->q, i, K), *doi = ROW(a->dout, i, V);
        const double dn = f->normalize ? 1.0 / den[i] : 1.0;
        for (int j = t0; j < t1; j++) {
          const double *kj = ROW(f->k, j, K), *vj = ROW(f->v, j, V);
          double qk = 0.0, p = 0.0;
          for (size_t c = 0; c < K; c++)
            qk += qi[c] * kj[c];
          for (size_t c = 0; c < V; c++)
            p += doi[c] * vj[c];
          p *= dn;
          if (f->normalize)
            p += dd[i];
          const double sm = f->scale * m[j];
          const double aij = sm * qk;
          if (a->dq)
            for (size_t c = 0; c < K; c++)
              ROW(a->dq, i, K)[c] += sm * p * kj[c];
          if (a->dk)
            for (size_t c = 0; c < K; c++)
              ROW(a->dk, j, K)[c] += sm * p * qi[c];
          if (a->dv)
            for (size_t c = 0; c < V; c++)
              ROW(a->dv, j, V)[c] += aij * dn * doi[c];
          /* the path of log M_ij: [j, i-1] for i > j, [i+1, j] for i < j */
          const double gij = aij * p;
          if (i > j) {
            dif[j - t0] += gij;
            dif[i - t0] -= gij;
          } else if (i < j) {
            dif[i + 1 - t0] += gij;
            dif[j + 1 - t0] -= gij;
          }
        }
      }
      double run = 0.0;
      for (int t = t0; t < t1; t++) {
        run += dif[t - t0];
        if (a->dg)
          a->dg[(base + (size_t)t) * H + h] = run;
        if (a->dg_gamma)
          a->dg_gamma[h] += run;
      }
#undef MASK_ROW
#undef ROW
    }
  }
  free(lg); free(m); free(den); free(dd); free(dif); free(acc);
  return 0;
}
