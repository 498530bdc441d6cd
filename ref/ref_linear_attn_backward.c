/* ref_linear_attn_backward.c - float64 gradients of linear_attn (SPEC.md section 4), by hand
 * from the recurrence of section 1, one reverse step per token.
 *
 * Forward (per sequence and head; row c of S has the decay d_t[c] = exp(a_t[c]),
 * a_t[c] = g_t + g_gamma + gk_t[c]):
 *   S_t = d_t (.) S_{t-1} + k_t v_t^T,   z_t = d_t (.) z_{t-1} + k_t
 *   n_t = scale S_t^T q_t,  den_t = scale q_t . z_t + eps (normalize, else 1),  o_t = n_t / den_t
 * Reverse, with dS = dL/dS_t and dz = dL/dz_t (dS starts at dht, dz at 0):
 *   dn_t = do_t / den_t,  dden_t = -(do_t . o_t) / den_t (normalize only)
 *   dS += scale q_t dn_t^T,  dz += scale dden_t q_t
 *   dq_t = scale (S_t dn_t + dden_t z_t)
 *   dk_t = dS v_t + dz,  dv_t = dS^T k_t
 *   da_t[c] = d_t[c] (sum_j dS[c,j] S_{t-1}[c,j] + dz[c] z_{t-1}[c])
 *   dS <- d_t (.) dS,  dz <- d_t (.) dz         (now dL/dS_{t-1})
 * and at the start of the sequence dh0 = dS. dgk = da, dg_t = sum_c da_t[c], dg_gamma[h] is
 * the sum of dg over every token of every sequence.
 */
#include "vkla_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int vkla_ref_linear_attn_backward(const vkla_ref_linear_attn_backward_args *a)
{
  if (!a || !a->fwd || !a->dout)
    return -1;
  const vkla_ref_linear_attn_args *f = a->fwd;
  int nseq;
  if (f->H < 1 || f->K < 1 || f->V < 1 || !f->q || !f->k || !f->v)
    return -1;
  if (vkla_ref_seq_check(f->B, f->T, f->cu_seqlens, f->N, &nseq))
    return -1;
  if ((a->dg && !f->g) || (a->dg_gamma && !f->g_gamma) || (a->dgk && !f->gk) ||
      (a->dh0 && !f->h0))
    return -1;

  const size_t H = (size_t)f->H, K = (size_t)f->K, V = (size_t)f->V, T = (size_t)f->T;
  const int norm = f->normalize != 0;
  size_t maxlen = 0;
  for (int n = 0; n < nseq; n++) {
    int b, t0, t1;
    vkla_ref_seq_range(f->T, f->cu_seqlens, n, &b, &t0, &t1);
    if ((size_t)(t1 - t0) > maxlen)
      maxlen = (size_t)(t1 - t0);
  }
  /* states S_0..S_len and z_0..z_len of one (sequence, head), and the per-token decays */
  double *S = malloc((maxlen + 1) * K * V * sizeof *S);
  double *z = malloc((maxlen + 1) * K * sizeof *z);
  double *dec = malloc((maxlen + 1) * K * sizeof *dec);
  double *dS = malloc(K * V * sizeof *dS);
  double *dz = malloc(K * sizeof *dz);
  double *dn = malloc(V * sizeof *dn);
  if (!S || !z || !dec || !dS || !dz || !dn) {
    free(S); free(z); free(dec); free(dS); free(dz); free(dn);
    return -1;
  }
  if (a->dg_gamma)
    memset(a->dg_gamma, 0, H * sizeof(double));

  for (int n = 0; n < nseq; n++) {
    int b, t0, t1;
    vkla_ref_seq_range(f->T, f->cu_seqlens, n, &b, &t0, &t1);
    const size_t len = (size_t)(t1 - t0);
    for (size_t h = 0; h < H; h++) {
      const size_t sh = (size_t)n * H + h;
      if (f->h0)
        memcpy(S, f->h0 + sh * K * V, K * V * sizeof *S);
      else
        memset(S, 0, K * V * sizeof *S);
      for (size_t c = 0; c < K; c++)
        z[c] = (norm && f->z0) ? f->z0[sh * K + c] : 0.0;

      /* forward, keeping every state */
      for (size_t u = 0; u < len; u++) {
        const size_t th = ((size_t)b * T + (size_t)t0 + u) * H + h;
        const double *kt = f->k + th * K, *vt = f->v + th * V;
        double lg = (f->g ? f->g[th] : 0.0) + (f->g_gamma ? f->g_gamma[h] : 0.0);
        double *Sp = S + u * K * V, *Sn = Sp + K * V;
        for (size_t c = 0; c < K; c++) {
          const double d = exp(f->gk ? lg + f->gk[th * K + c] : lg);
          dec[u * K + c] = d;
          for (size_t j = 0; j < V; j++)
            Sn[c * V + j] = d * Sp[c * V + j] + kt[c] * vt[j];
          z[(u + 1) * K + c] = d * z[u * K + c] + kt[c];
        }
      }

      /* reverse */
      if (a->dht)
        memcpy(dS, a->dht + sh * K * V, K * V * sizeof *dS);
      else
        memset(dS, 0, K * V * sizeof *dS);
      memset(dz, 0, K * sizeof *dz);
      for (size_t u = len; u-- > 0;) {
        const size_t th = ((size_t)b * T + (size_t)t0 + u) * H + h;
        const double *qt = f->q + th * K, *kt = f->k + th * K, *vt = f->v + th * V;
        const double *dot = a->dout + th * V;
        const double *St = S + (u + 1) * K * V, *Sp = S + u * K * V;
        const double *zt = z + (u + 1) * K, *zp = z + u * K;
        double den = 1.0, dden = 0.0;
        if (norm) {
          double qz = 0.0;
          for (size_t c = 0; c < K; c++)
            qz += qt[c] * zt[c];
          den = f->scale * qz + f->eps;
        }
        double doo = 0.0; /* do_t . o_t */
        for (size_t j = 0; j < V; j++) {
          double acc = 0.0;
          for (size_t c = 0; c < K; c++)
            acc += qt[c] * St[c * V + j];
          doo += dot[j] * f->scale * acc / den;
          dn[j] = dot[j] / den;
        }
        if (norm)
          dden = -doo / den;
        for (size_t c = 0; c < K; c++) {
          for (size_t j = 0; j < V; j++)
            dS[c * V + j] += f->scale * qt[c] * dn[j];
          dz[c] += f->scale * dden * qt[c];
        }
        if (a->dq)
          for (size_t c = 0; c < K; c++) {
            double acc = 0.0;
            for (size_t j = 0; j < V; j++)
              acc += St[c * V + j] * dn[j];
            a->dq[th * K + c] = f->scale * (acc + dden * zt[c]);
          }
        if (a->dk)
          for (size_t c = 0; c < K; c++) {
            double acc = dz[c];
            for (size_t j = 0; j < V; j++)
              acc += dS[c * V + j] * vt[j];
            a->dk[th * K + c] = acc;
          }
        if (a->dv)
          for (size_t j = 0; j < V; j++) {
            double acc = 0.0;
            for (size_t c = 0; c < K; c++)
              acc += dS[c * V + j] * kt[c];
            a->dv[th * V + j] = acc;
          }
        double dgt = 0.0;
        for (size_t c = 0; c < K; c++) {
          const double d = dec[u * K + c];
          double acc = dz[c] * zp[c];
          for (size_t j = 0; j < V; j++)
            acc += dS[c * V + j] * Sp[c * V + j];
          const double da = d * acc;
          if (a->dgk)
            a->dgk[th * K + c] = da;
          dgt += da;
          for (size_t j = 0; j < V; j++)
            dS[c * V + j] *= d;
          dz[c] *= d;
        }
        if (a->dg)
          a->dg[th] = dgt;
        if (a->dg_gamma)
          a->dg_gamma[h] += dgt;
      }
      if (a->dh0)
        memcpy(a->dh0 + sh * K * V, dS, K * V * sizeof *dS);
    }
  }
  free(S); free(z); free(dec); free(dS); free(dz); free(dn);
  return 0;
}
